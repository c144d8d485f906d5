//! [`Fanout`] on Redis Streams.
//!
//! # Keys
//!
//! - `quire:doc:{name}`: the document's stream: updates (after their
//!   durable store), named events, chat, deletion, presence queries and
//!   "resync" markers, trimmed with `MAXLEN ~ 10000`
//!   ([`RedisOptions::doc_stream_len`]).
//! - `quire:aw:{name}`: the document's presence stream, `MAXLEN ~ 64`:
//!   presence is refreshed by every client every 15 s, so only the latest
//!   entries matter, and it can never grow without bound.
//! - Both expire an hour after their last entry (`EXPIRE` in the same
//!   pipeline as the `XADD`s): Redis keeps the streams of recently edited
//!   documents, not of every document ever edited. A room that follows an
//!   expired stream reads the new one from its old position (stream ids
//!   are times, so the new entries come after it).
//! - `quire:node:{id}`: this node's wake-up stream (`MAXLEN 1`, expiring):
//!   a room that starts following adds an entry so the blocked reader
//!   re-issues its `XREAD` with the new room's streams.
//!
//! Every entry has the fields `node` (the publisher's random id: a node
//! skips its own entries), `kind` and `data`.
//!
//! # Tasks
//!
//! - **The reader**: one dedicated connection, one blocking `XREAD` over
//!   the streams of every followed document (and the wake-up stream). It
//!   hands each entry to its room's bounded feed with `try_send` and never
//!   waits for a room: a full feed raises the room's [`Lag`], and the room
//!   resyncs from the database. When the connection breaks it reconnects;
//!   every room then notes its positions again and resyncs (what was
//!   published meanwhile is in the database, see the parent module). A
//!   document stream trimmed past the position the reader read it from
//!   (a node paused or starved for longer than `MAXLEN` entries take to
//!   arrive) is noticed the same way a full feed is: the room resyncs
//!   ([`trimmed_past`]). Presence streams are not checked: presence is
//!   renewed by its clients.
//! - **The publisher**: one task with its own connection, pipelining the
//!   queued `XADD`s. A message it could not send (queue full, Redis down)
//!   marks its document; once Redis answers again the publisher adds a
//!   resync marker to that document's stream, and the other nodes' rooms
//!   read the database.
//!
//! `follow` notes the streams' last ids (`XREVRANGE … COUNT 1`) on the
//! command connection *before* it returns, i.e. before the room loads.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use quire_protocol::DocName;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisResult, Value};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::{Fanout, Feed, Lag, NodeKey, NodeMessage, RemoteEvent};

/// Approximate length a document's stream is trimmed to, by default
/// ([`RedisOptions::doc_stream_len`]).
pub const DOC_STREAM_LEN: usize = 10_000;
/// Approximate length a document's presence stream is trimmed to.
const AWARENESS_STREAM_LEN: usize = 64;
/// How long a stream nobody writes to is kept: a node that falls this far
/// behind has lost its connection long before (and resyncs from the
/// database anyway), so Redis holds the streams of recently edited
/// documents only, not of every document ever edited.
const STREAM_TTL: Duration = Duration::from_secs(3600);
/// Messages from other nodes queued for one room before it must resync.
const FEED_CAPACITY: usize = 1024;
/// Messages queued for the publisher before documents are marked for resync.
const PUBLISH_CAPACITY: usize = 8192;
/// Most `XADD`s in one pipeline.
const PUBLISH_BATCH: usize = 256;
/// Most entries one `XREAD` returns per stream.
const READ_COUNT: usize = 512;
/// How long one `XREAD` blocks (the wake-up stream cuts it short).
const READ_BLOCK: Duration = Duration::from_secs(10);
/// How long any other command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How the fan-out uses Redis; every node of a cluster must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisOptions {
    /// Approximate length (`MAXLEN ~`) each document's stream is trimmed
    /// to. A node that falls further behind than this on a document
    /// notices and reads the database instead (see [`trimmed_past`]); the
    /// reader relies on every node trimming to the same length.
    pub doc_stream_len: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            doc_stream_len: DOC_STREAM_LEN,
        }
    }
}

/// Cross-node fan-out through one Redis server.
pub struct RedisFanout {
    shared: Arc<Shared>,
    /// Messages for the publisher task.
    publish: mpsc::Sender<(DocName, NodeMessage)>,
}

/// What the reader, the publisher and the rooms share.
struct Shared {
    client: Client,
    /// This node's id in every entry it adds.
    node: String,
    /// The command connection (positions, wake-ups), made again after a failure.
    commands: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Followed documents; the reader reads their streams.
    rooms: Mutex<HashMap<DocName, Followed>>,
    /// Documents whose messages could not be published: the next
    /// successful pipeline carries a resync marker for each.
    unsent: Mutex<HashSet<DocName>>,
    /// Numbers `Followed::id`.
    next_id: AtomicU64,
    /// Whether the reader is connected (readiness).
    reader_up: AtomicBool,
    /// Wakes a reader with nothing to read when a room starts following.
    followed: Notify,
    /// `MAXLEN ~` of document streams, and what the reader infers from it.
    doc_stream_len: usize,
}

/// One followed document, as the reader sees it.
struct Followed {
    /// Which `follow` call this is (a new room of the same document may
    /// start following before the old one's feed is dropped).
    id: u64,
    /// Last entry ids read (or noted) of the document's and the presence
    /// stream; `None` until noted (Redis was unreachable at `follow`).
    positions: Option<(String, String)>,
    /// The room's feed.
    feed: mpsc::Sender<(NodeKey, NodeMessage)>,
    lag: Arc<Lag>,
}

/// Removes a room from the reader's set when its feed is dropped.
struct Following {
    shared: Arc<Shared>,
    doc: DocName,
    id: u64,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut rooms = self.shared.rooms();
        if rooms.get(&self.doc).is_some_and(|f| f.id == self.id) {
            rooms.remove(&self.doc);
        }
    }
}

fn doc_key(doc: &DocName) -> String {
    format!("quire:doc:{doc}")
}

fn awareness_key(doc: &DocName) -> String {
    format!("quire:aw:{doc}")
}

impl Shared {
    fn rooms(&self) -> MutexGuard<'_, HashMap<DocName, Followed>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unsent(&self) -> MutexGuard<'_, HashSet<DocName>> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_key(&self) -> String {
        format!("quire:node:{}", self.node)
    }

    async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Runs `command` on the command connection, connecting first if
    /// needed and dropping the connection after a failure.
    async fn command<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        let mut slot = self.commands.lock().await;
        let mut conn = match slot.as_ref() {
            Some(conn) => conn.clone(),
            None => {
                let conn = self.connect(Some(COMMAND_TIMEOUT)).await?;
                *slot = Some(conn.clone());
                conn
            }
        };
        drop(slot);
        let answer = command.query_async(&mut conn).await;
        if answer.is_err() {
            *self.commands.lock().await = None;
        }
        answer
    }

    /// The last ids of `doc`'s two streams ("0-0" for an empty one), read
    /// on `conn` (the reader's) or on the command connection.
    async fn note_positions(
        &self,
        conn: Option<&MultiplexedConnection>,
        doc: &DocName,
    ) -> RedisResult<(String, String)> {
        let last = |key: String| {
            let mut command = redis::cmd("XREVRANGE");
            command.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
            let conn = conn.cloned();
            async move {
                let reply: redis::streams::StreamRangeReply = match conn {
                    Some(mut conn) => command.query_async(&mut conn).await?,
                    None => self.command(&command).await?,
                };
                Ok::<_, redis::RedisError>(
                    reply
                        .ids
                        .first()
                        .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
                )
            }
        };
        let doc_id = last(doc_key(doc)).await?;
        let aw_id = last(awareness_key(doc)).await?;
        Ok((doc_id, aw_id))
    }

    /// Makes the reader re-issue its `XREAD` with the current rooms.
    async fn wake_reader(&self) {
        let mut command = redis::cmd("XADD");
        command
            .arg(self.wake_key())
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("node")
            .arg(&self.node);
        if let Err(err) = self.command::<Value>(&command).await {
            debug!(%err, "could not wake the stream reader");
        }
        let mut expire = redis::cmd("EXPIRE");
        expire.arg(self.wake_key()).arg(3600);
        let _ = self.command::<Value>(&expire).await;
        self.followed.notify_one();
    }
}

impl RedisFanout {
    /// Connects to `url` (checking that Redis answers) and starts the
    /// reader and the publisher on the current tokio runtime.
    pub async fn connect(url: &str) -> Result<Arc<Self>, String> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// [`Self::connect`] with other options (tests: a tiny stream length).
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Arc<Self>, String> {
        // Nagle's algorithm off: a pipelined publish or a re-issued XREAD
        // must not wait for the acknowledgement of the previous segment.
        let info = url
            .into_connection_info()
            .map_err(|e| format!("invalid Redis URL: {e}"))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let node = format!("{:016x}", fastrand::u64(..));
        let shared = Arc::new(Shared {
            client,
            node,
            commands: tokio::sync::Mutex::new(None),
            rooms: Mutex::new(HashMap::new()),
            unsent: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            reader_up: AtomicBool::new(false),
            followed: Notify::new(),
            doc_stream_len: options.doc_stream_len.max(1),
        });
        shared
            .command::<String>(&redis::cmd("PING"))
            .await
            .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        let (publish, queue) = mpsc::channel(PUBLISH_CAPACITY);
        tokio::spawn(read_loop(shared.clone()));
        tokio::spawn(publish_loop(shared.clone(), queue));
        info!(node = %shared.node, "fan-out on Redis Streams");
        Ok(Arc::new(Self { shared, publish }))
    }

    /// This node's id in the entries it adds.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }
}

impl Fanout for RedisFanout {
    fn follow<'a>(&'a self, doc: &'a DocName) -> Pin<Box<dyn Future<Output = Feed> + Send + 'a>> {
        Box::pin(async move {
            let shared = &self.shared;
            let (feed, messages) = mpsc::channel(FEED_CAPACITY);
            let lag = Arc::new(Lag::default());
            // Noted before the room loads: what is published from here on
            // is read from the stream, what was before is in the database.
            let positions = match shared.note_positions(None, doc).await {
                Ok(positions) => Some(positions),
                Err(err) => {
                    // The reader notes them once Redis answers, and the
                    // room then resyncs from the database.
                    warn!(%err, %doc, "Redis unreachable; following once it is back");
                    None
                }
            };
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            shared.rooms().insert(
                doc.clone(),
                Followed {
                    id,
                    positions,
                    feed,
                    lag: lag.clone(),
                },
            );
            shared.wake_reader().await;
            // The other nodes' rooms answer with their members' presence
            // and read the store (see `NodeMessage::RoomOpened`).
            self.publish(doc, NodeMessage::RoomOpened);
            let following = Following {
                shared: shared.clone(),
                doc: doc.clone(),
                id,
            };
            Feed::new(messages, lag, Box::new(following))
        })
    }

    fn publish(&self, doc: &DocName, message: NodeMessage) {
        if let Err(mpsc::error::TrySendError::Full((doc, _))) =
            self.publish.try_send((doc.clone(), message))
        {
            warn!(%doc, "fan-out queue full; the other nodes will resync this document");
            self.shared.unsent().insert(doc);
        }
    }

    fn is_clustered(&self) -> bool {
        true
    }

    fn is_ready(&self) -> bool {
        self.shared.reader_up.load(Ordering::Relaxed)
    }
}

/// A message as stream fields: (kind, data).
fn encode(message: &NodeMessage) -> (&'static str, Vec<u8>) {
    match message {
        NodeMessage::Update(update) => ("u", update.to_vec()),
        NodeMessage::Awareness(update) => ("a", update.to_vec()),
        NodeMessage::Event(event) => ("e", serde_json::to_vec(event).unwrap_or_default()),
        NodeMessage::Chat(event) => ("c", serde_json::to_vec(event).unwrap_or_default()),
        NodeMessage::RoomOpened => ("q", Vec::new()),
        NodeMessage::Deleted => ("d", Vec::new()),
    }
}

/// What an entry from another node means: a message, or `None` for a
/// resync marker (`Some(None)`) — `Err` for an entry this build cannot read.
fn decode(kind: &[u8], data: Vec<u8>) -> Result<Option<NodeMessage>, String> {
    let event = |data: &[u8]| {
        serde_json::from_slice::<RemoteEvent>(data).map_err(|e| format!("bad event entry: {e}"))
    };
    Ok(Some(match kind {
        b"u" => NodeMessage::Update(Bytes::from(data)),
        b"a" => NodeMessage::Awareness(Bytes::from(data)),
        b"e" => NodeMessage::Event(event(&data)?),
        b"c" => NodeMessage::Chat(event(&data)?),
        b"q" => NodeMessage::RoomOpened,
        b"d" => NodeMessage::Deleted,
        b"r" => return Ok(None),
        other => {
            return Err(format!(
                "unknown entry kind {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    }))
}

fn field(map: &mut HashMap<String, Value>, name: &str) -> Vec<u8> {
    match map.remove(name) {
        Some(Value::BulkString(bytes)) => bytes,
        Some(Value::SimpleString(text)) => text.into_bytes(),
        _ => Vec::new(),
    }
}

/// The publisher task: pipelines queued messages, then resync markers for
/// documents whose messages were lost.
async fn publish_loop(shared: Arc<Shared>, mut queue: mpsc::Receiver<(DocName, NodeMessage)>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        if batch.is_empty() {
            let markers_waiting = !shared.unsent().is_empty();
            tokio::select! {
                got = queue.recv_many(&mut batch, PUBLISH_BATCH) => if got == 0 {
                    // The fan-out was dropped: the server stopped.
                    return;
                },
                // Markers wait for a working connection; try now and then.
                _ = tokio::time::sleep(MAX_BACKOFF), if markers_waiting => {}
            }
        }
        let unsent: Vec<DocName> = shared.unsent().drain().collect();
        if unsent.is_empty() && batch.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for doc in &unsent {
            pipe.cmd("XADD")
                .arg(doc_key(doc))
                .arg("MAXLEN")
                .arg("~")
                .arg(shared.doc_stream_len)
                .arg("*")
                .arg("node")
                .arg(&shared.node)
                .arg("kind")
                .arg("r")
                .arg("data")
                .arg("")
                .ignore();
        }
        let mut written = HashSet::new();
        for doc in &unsent {
            written.insert(doc_key(doc));
        }
        for (doc, message) in &batch {
            let (kind, data) = encode(message);
            let (key, len) = match message {
                NodeMessage::Awareness(_) => (awareness_key(doc), AWARENESS_STREAM_LEN),
                _ => (doc_key(doc), shared.doc_stream_len),
            };
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(len)
                .arg("*")
                .arg("node")
                .arg(&shared.node)
                .arg("kind")
                .arg(kind)
                .arg("data")
                .arg(data)
                .ignore();
            written.insert(key);
        }
        for key in written {
            pipe.cmd("EXPIRE")
                .arg(key)
                .arg(STREAM_TTL.as_secs())
                .ignore();
        }
        let sent = async {
            if conn.is_none() {
                conn = Some(shared.connect(Some(COMMAND_TIMEOUT)).await?);
            }
            let conn = conn.as_mut().expect("connected above");
            pipe.query_async::<()>(conn).await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, sent).await {
            Ok(Ok(())) => batch.clear(),
            failed => {
                let err = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => "timed out".to_owned(),
                };
                warn!(%err, "could not publish to Redis; the other nodes will resync");
                conn = None;
                {
                    let mut marked = shared.unsent();
                    marked.extend(unsent);
                    marked.extend(batch.drain(..).map(|(doc, _)| doc));
                }
                tokio::time::sleep(MAX_BACKOFF / 4).await;
            }
        }
    }
}

/// The reader task: one blocking `XREAD` at a time over every followed
/// document, reconnecting (and making every room resync) after a failure.
async fn read_loop(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let conn = match shared.connect(None).await {
            Ok(conn) => conn,
            Err(err) => {
                shared.reader_up.store(false, Ordering::Relaxed);
                debug!(%err, "stream reader cannot reach Redis");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        shared.reader_up.store(true, Ordering::Relaxed);
        if let Err(err) = read_until_failure(&shared, conn).await {
            warn!(%err, "stream reader lost Redis; every room resyncs once it is back");
        }
        shared.reader_up.store(false, Ordering::Relaxed);
        // Whatever was published meanwhile may be lost with the
        // connection (or with Redis itself): positions are noted afresh
        // and the rooms read the database.
        for followed in shared.rooms().values_mut() {
            followed.positions = None;
        }
        if stopped(&shared) {
            return;
        }
    }
}

/// Whether the fan-out and every feed are gone (only the reader is left).
fn stopped(shared: &Arc<Shared>) -> bool {
    Arc::strong_count(shared) == 1
}

async fn read_until_failure(
    shared: &Arc<Shared>,
    mut conn: MultiplexedConnection,
) -> RedisResult<()> {
    let wake_key = shared.wake_key();
    // From the start: its one leftover entry is read once, and no wake-up
    // added before the first `XREAD` is missed (`$` would miss it).
    let mut wake_position = "0-0".to_owned();
    loop {
        if stopped(shared) {
            return Ok(());
        }
        // Rooms without positions (new while Redis was away, or every room
        // after a reconnection): note them, then have the room resync.
        let unnoted: Vec<DocName> = shared
            .rooms()
            .iter()
            .filter(|(_, f)| f.positions.is_none())
            .map(|(doc, _)| doc.clone())
            .collect();
        for doc in unnoted {
            let positions =
                tokio::time::timeout(COMMAND_TIMEOUT, shared.note_positions(Some(&conn), &doc))
                    .await
                    .map_err(|_| timed_out())??;
            if let Some(followed) = shared.rooms().get_mut(&doc) {
                followed.positions = Some(positions);
                followed.lag.raise();
            }
        }
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        for (doc, followed) in shared.rooms().iter() {
            if let Some((doc_id, aw_id)) = &followed.positions {
                keys.push(doc_key(doc));
                ids.push(doc_id.clone());
                keys.push(awareness_key(doc));
                ids.push(aw_id.clone());
            }
        }
        if keys.is_empty() {
            // Nothing to read: wait for a room (checking the connection
            // now and then, so readiness stays true to it).
            let woke = shared.followed.notified();
            if tokio::time::timeout(READ_BLOCK, woke).await.is_err() {
                tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    redis::cmd("PING").query_async::<String>(&mut conn),
                )
                .await
                .map_err(|_| timed_out())??;
            }
            continue;
        }
        keys.push(wake_key.clone());
        ids.push(wake_position.clone());
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&keys)
            .arg(&ids);
        let reply: Option<StreamReadReply> =
            tokio::time::timeout(READ_BLOCK + COMMAND_TIMEOUT, command.query_async(&mut conn))
                .await
                .map_err(|_| timed_out())??;
        let Some(reply) = reply else { continue };
        // A document stream that returned this many entries may have been
        // trimmed past the position it was read from (see `trimmed_past`).
        let may_be_trimmed = shared.doc_stream_len.min(READ_COUNT);
        let mut suspects = Vec::new();
        for stream in reply.keys {
            if stream.key == wake_key {
                if let Some(last) = stream.ids.last() {
                    wake_position = last.id.clone();
                }
                continue;
            }
            if stream.ids.len() >= may_be_trimmed
                && stream.key.starts_with("quire:doc:")
                && let Some(at) = keys.iter().position(|k| *k == stream.key)
            {
                suspects.push((stream.key.clone(), ids[at].clone()));
            }
            deliver(shared, stream);
        }
        for (key, read_from) in suspects {
            let trimmed =
                tokio::time::timeout(COMMAND_TIMEOUT, trimmed_past(&mut conn, &key, &read_from))
                    .await
                    .map_err(|_| timed_out())??;
            if trimmed {
                warn!(stream = %key, "the stream was trimmed past this node's position; the room reads the database");
                let doc = key
                    .strip_prefix("quire:doc:")
                    .and_then(|n| DocName::parse(n).ok());
                if let Some(followed) =
                    doc.and_then(|doc| shared.rooms().get(&doc).map(|f| f.lag.clone()))
                {
                    followed.raise();
                }
            }
        }
    }
}

/// Whether entries after `read_from` were trimmed off `key` before this
/// node read them: the stream's first entry is past `read_from` and the
/// stream has lost entries at all (`entries-added` > `length`; Quire never
/// deletes single entries, so every loss is a trim from the front).
///
/// Asked only when a read returned at least `min(MAXLEN, COUNT)` entries
/// of the stream: `MAXLEN ~ N` always keeps at least N entries, all newer
/// than what it trimmed, so a trim past the position leaves at least N
/// entries to read after it. A trim that only took the entry at the
/// position itself is taken for one that took more (one needless resync).
async fn trimmed_past(
    conn: &mut MultiplexedConnection,
    key: &str,
    read_from: &str,
) -> RedisResult<bool> {
    let info: Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(conn)
        .await?;
    let fields = stream_info(info);
    let number = |name: &str| match fields.get(name) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let first = match fields.get("first-entry") {
        Some(Value::Array(entry)) => entry.first().and_then(value_text),
        _ => None,
    };
    let lost = match (number("entries-added"), number("length")) {
        (Some(added), Some(length)) => added > length,
        // Before Redis 7 nothing says whether anything was trimmed.
        _ => true,
    };
    Ok(lost && first.is_some_and(|first| stream_id(&first) > stream_id(read_from)))
}

/// `XINFO STREAM`'s reply as a map (a flat array in RESP2, a map in RESP3).
fn stream_info(info: Value) -> HashMap<String, Value> {
    let pairs: Vec<(Value, Value)> = match info {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(name, value)| Some((value_text(&name)?, value)))
        .collect()
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// A stream entry id (`ms-seq`) as a comparable pair; "0-0" for anything
/// unreadable.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
}

/// Hands one stream's new entries to its room, never waiting for it.
fn deliver(shared: &Shared, stream: redis::streams::StreamKey) {
    let (doc, presence) = if let Some(name) = stream.key.strip_prefix("quire:doc:") {
        (name, false)
    } else if let Some(name) = stream.key.strip_prefix("quire:aw:") {
        (name, true)
    } else {
        return;
    };
    let Ok(doc) = DocName::parse(doc) else { return };
    let mut rooms = shared.rooms();
    let Some(followed) = rooms.get_mut(&doc) else {
        return;
    };
    let Some(positions) = followed.positions.as_mut() else {
        return;
    };
    for mut entry in stream.ids {
        if presence {
            positions.1 = entry.id.clone();
        } else {
            positions.0 = entry.id.clone();
        }
        let node = field(&mut entry.map, "node");
        if node == shared.node.as_bytes() {
            continue;
        }
        let kind = field(&mut entry.map, "kind");
        let message = match decode(&kind, field(&mut entry.map, "data")) {
            Ok(Some(message)) => message,
            Ok(None) => {
                followed.lag.raise();
                continue;
            }
            Err(err) => {
                warn!(%err, %doc, "skipping an unreadable stream entry");
                continue;
            }
        };
        match followed.feed.try_send((NodeKey::of(&node), message)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The room is behind: it reads the database instead.
                followed.lag.raise();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
