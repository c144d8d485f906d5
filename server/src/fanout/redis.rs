//! [`Fanout`] on Redis Streams.
//!
//! # Keys
//!
//! - `quire:doc:{name}`: the document's stream: updates (after their
//!   durable store), named events, chat, deletion, presence queries and
//!   "resync" markers, trimmed with `MAXLEN ~ 10000`.
//! - `quire:aw:{name}`: the document's presence stream, `MAXLEN ~ 64`:
//!   presence is refreshed by every client every 15 s, so only the latest
//!   entries matter, and it can never grow without bound.
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
//!   published meanwhile is in the database, see the parent module).
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
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, RedisResult, Value};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::{Fanout, Feed, Lag, NodeMessage, RemoteEvent};

/// Approximate length a document's stream is trimmed to.
const DOC_STREAM_LEN: usize = 10_000;
/// Approximate length a document's presence stream is trimmed to.
const AWARENESS_STREAM_LEN: usize = 64;
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
    feed: mpsc::Sender<NodeMessage>,
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
        let client = Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
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
                .arg(DOC_STREAM_LEN)
                .arg("*")
                .arg("node")
                .arg(&shared.node)
                .arg("kind")
                .arg("r")
                .arg("data")
                .arg("")
                .ignore();
        }
        for (doc, message) in &batch {
            let (kind, data) = encode(message);
            let (key, len) = match message {
                NodeMessage::Awareness(_) => (awareness_key(doc), AWARENESS_STREAM_LEN),
                _ => (doc_key(doc), DOC_STREAM_LEN),
            };
            pipe.cmd("XADD")
                .arg(key)
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
        for stream in reply.keys {
            if stream.key == wake_key {
                if let Some(last) = stream.ids.last() {
                    wake_position = last.id.clone();
                }
                continue;
            }
            deliver(shared, stream);
        }
    }
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
        if field(&mut entry.map, "node") == shared.node.as_bytes() {
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
        match followed.feed.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The room is behind: it reads the database instead.
                followed.lag.raise();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
