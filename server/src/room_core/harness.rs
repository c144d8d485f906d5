//! A room without sockets, tasks or storage engine: the real [`RoomCore`]
//! driven synchronously. Storage is an in-memory log that is durable as
//! soon as it is written (or when told, see [`Harness::hold_durability`]);
//! each member's queue is a bounded list the caller reads.
//!
//! Everything an input causes has happened when the call returns: a
//! caller that finds nothing in a member's queue knows nothing is coming,
//! with no timed wait. Unit tests of the core, the property simulator
//! (`tests/tests/properties/sim.rs`), the room regressions and the fuzz
//! target `room_sequence` all drive rooms through this one type.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{
    Close, ConnId, Inbound, Joining, MemberQueue, Now, Output, Pushed, Restored, RoomCore,
    RoomError,
};
use crate::config::Config;
use crate::connection::{self, Decoded};
use crate::document::Document;
use crate::metrics::Metrics;

/// What one member's connection holds: frames the room queued, in order,
/// and the close it asked for.
#[derive(Debug)]
struct Inbox {
    frames: VecDeque<Bytes>,
    capacity: usize,
    close: Option<Close>,
    /// Set once the room let go of the member (it dropped the queue).
    released: bool,
}

/// The [`MemberQueue`] of a harness member.
pub struct TestQueue(Rc<RefCell<Inbox>>);

impl MemberQueue for TestQueue {
    fn push(&mut self, frame: Bytes) -> Pushed {
        let mut inbox = self.0.borrow_mut();
        if inbox.close.is_some() {
            Pushed::Closed
        } else if inbox.frames.len() >= inbox.capacity {
            Pushed::Full
        } else {
            inbox.frames.push_back(frame);
            Pushed::Queued
        }
    }

    fn close(&mut self, close: Close) {
        self.0.borrow_mut().close.get_or_insert(close);
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        self.0.borrow_mut().released = true;
    }
}

/// What a connection does with one frame from its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// Handed to the room.
    Delivered,
    /// An application ping: the connection answers it with this pong.
    Ping(u64),
    /// Nothing for the room (a pong, a permission-denied, an in-band token).
    Ignored,
    /// The connection closes for bad input and leaves the room.
    Refused(Close),
}

/// A room on an in-memory store, driven by hand. See the module docs.
pub struct Harness {
    core: RoomCore<TestQueue>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// The stored log, oldest first.
    log: Vec<Vec<u8>>,
    /// The stored chat records, oldest first.
    chat: Vec<String>,
    inboxes: HashMap<ConnId, Rc<RefCell<Inbox>>>,
    /// Milliseconds since the room started ([`Harness::advance`]).
    ms: u64,
    /// While set, appended writes wait for [`Harness::flush`] to be durable.
    hold: bool,
    /// The last write storage took.
    appended: u64,
    /// Whether some stored write is not durable yet (held back, see
    /// [`Harness::hold_durability`]); a room reopened on the log then
    /// waits for [`Harness::flush`] too.
    unflushed: bool,
    /// Set by [`Harness::fail_next_append`].
    fail_next: Option<String>,
    /// How often the core asked to be evicted.
    evictions: u64,
    /// What the core published to other nodes (cluster mode), in order.
    published: Vec<crate::fanout::NodeMessage>,
    /// How often the core asked to resync from the store.
    resyncs: u64,
}

impl Harness {
    /// Settings for a harness: the defaults, nothing bound to a folder.
    pub fn config() -> Config {
        Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), "unused".into())
    }

    /// A room on an empty store.
    pub fn new(config: Config) -> Self {
        Self::on_log(config, Vec::new(), Vec::new())
    }

    /// A room whose store holds `log` and `chat` (oldest first), as a room
    /// that opens on an existing document.
    pub fn on_log(config: Config, log: Vec<Vec<u8>>, chat: Vec<String>) -> Self {
        let mut harness = Self::empty(config, log, chat);
        harness.load();
        harness
    }

    /// A harness whose core is not loaded yet.
    fn empty(config: Config, log: Vec<Vec<u8>>, chat: Vec<String>) -> Self {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        Self {
            core: RoomCore::new(config.clone(), metrics.clone()),
            config,
            metrics,
            log,
            chat,
            inboxes: HashMap::new(),
            ms: 0,
            hold: false,
            appended: 0,
            unflushed: false,
            fail_next: None,
            evictions: 0,
            published: Vec::new(),
            resyncs: 0,
        }
    }

    /// A fresh room on what this one stored (as after an eviction). Writes
    /// not durable yet stay so: the new room waits for [`Self::flush`]
    /// (and keeps holding durability) as the old one did.
    pub fn reopen(&self) -> Self {
        let config = (*self.config).clone();
        if !self.unflushed {
            return Self::on_log(config, self.log.clone(), self.chat.clone());
        }
        let mut reopened = Self::empty(config, self.log.clone(), self.chat.clone());
        reopened.hold = true;
        reopened.unflushed = true;
        reopened.load();
        reopened
    }

    fn load(&mut self) {
        let recent = self.chat.len().saturating_sub(self.config.chat_history);
        let chat = self.chat[recent..].to_vec();
        let stored_before = self.core.loaded(Restored::from_log(&self.log), chat);
        self.stored_before(stored_before);
    }

    /// The write standing for what the store held at a (re)load is durable
    /// at once, unless writes were held back.
    fn stored_before(&mut self, write: u64) {
        self.appended = write;
        if !self.unflushed {
            self.core.durable(write, self.now());
        }
    }

    // ----- members -----------------------------------------------------

    /// Joins connection `conn` with a queue of the configured outbox capacity.
    pub fn join(
        &mut self,
        conn: ConnId,
        extensions: bool,
        can_write: bool,
    ) -> Result<(), RoomError> {
        let capacity = self.config.outbox_capacity;
        self.join_with_capacity(conn, extensions, can_write, capacity)
    }

    /// Joins connection `conn` with a queue of `capacity` frames.
    pub fn join_with_capacity(
        &mut self,
        conn: ConnId,
        extensions: bool,
        can_write: bool,
        capacity: usize,
    ) -> Result<(), RoomError> {
        let inbox = Rc::new(RefCell::new(Inbox {
            frames: VecDeque::new(),
            capacity,
            close: None,
            released: false,
        }));
        let joining = Joining {
            queue: TestQueue(inbox.clone()),
            extensions,
            can_write,
        };
        let joined = self.core.join(conn, joining, self.now());
        if joined.is_ok() {
            self.inboxes.insert(conn, inbox);
        }
        self.settle();
        joined
    }

    /// The connection ends (its client went away).
    pub fn leave(&mut self, conn: ConnId) {
        self.core.leave(conn, self.now());
        self.settle();
    }

    /// Delivers one decoded message from member `conn`.
    pub fn deliver(&mut self, conn: ConnId, message: Inbound) {
        self.core.receive(conn, message, self.now());
        self.settle();
    }

    /// Delivers an update message (sync step 2 or update) from `conn`.
    pub fn send_update(&mut self, conn: ConnId, update: &[u8]) {
        self.deliver(conn, Inbound::Update(Bytes::copy_from_slice(update)));
    }

    /// One binary frame from `conn`'s client, handled as its connection
    /// does: decoded (`connection::decode`), then handed to the room,
    /// answered, ignored, or refused (the connection closes with the code
    /// and leaves the room).
    pub fn send_frame(&mut self, conn: ConnId, frame: &Bytes, extensions: bool) -> Framed {
        match connection::decode(frame, extensions) {
            Ok(Decoded::Room(message)) => {
                self.deliver(conn, message);
                Framed::Delivered
            }
            Ok(Decoded::Ping(nonce)) => Framed::Ping(nonce),
            Ok(Decoded::Nothing | Decoded::Auth(_)) => Framed::Ignored,
            Err(err) => {
                let close = crate::connection::Ending::from(err).close();
                if let Some(inbox) = self.inboxes.get(&conn) {
                    inbox.borrow_mut().close.get_or_insert(close.clone());
                }
                self.leave(conn);
                Framed::Refused(close)
            }
        }
    }

    /// Takes every frame the room queued for `conn` so far.
    pub fn frames(&mut self, conn: ConnId) -> Vec<Bytes> {
        self.inboxes
            .get(&conn)
            .map(|inbox| inbox.borrow_mut().frames.drain(..).collect())
            .unwrap_or_default()
    }

    /// The close the room (or the connection) asked for on `conn`, if any.
    pub fn close_of(&self, conn: ConnId) -> Option<Close> {
        self.inboxes.get(&conn)?.borrow().close.clone()
    }

    /// Whether `conn` is in the room.
    pub fn is_member(&self, conn: ConnId) -> bool {
        self.inboxes
            .get(&conn)
            .is_some_and(|inbox| !inbox.borrow().released)
    }

    /// Forgets a connection's inbox (its frames and close), once read.
    pub fn forget(&mut self, conn: ConnId) {
        self.inboxes.remove(&conn);
    }

    // ----- the HTTP API and time --------------------------------------

    /// Merges an update as `PUT /api/docs/{doc}/snapshot` does.
    pub fn import(&mut self, update: &[u8]) -> Result<bool, RoomError> {
        let result = self.core.import(update);
        self.settle();
        match (result, self.core.unavailable()) {
            (Ok(_), Some(reason)) => Err(RoomError::Unavailable(reason.to_owned())),
            (result, _) => result,
        }
    }

    /// The whole document as one update, as `GET .../snapshot` reads it.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, RoomError> {
        let result = self.core.snapshot();
        self.settle();
        result
    }

    /// Deletes the document: members are closed with 4404, the store
    /// forgets it, and a fresh room serves the name from now on.
    pub fn delete(&mut self) {
        self.core.delete(self.now());
        self.settle();
        self.log.clear();
        self.chat.clear();
        self.core = RoomCore::new(self.config.clone(), self.metrics.clone());
        self.load();
    }

    /// The server stops: members are closed with 1001 and the log is
    /// compacted if it grew.
    pub fn shutdown(&mut self) {
        self.core.shutdown(self.now());
        self.core.prepare_to_close();
        self.settle();
    }

    /// The time now: `ms` on both clocks (the wall clock starts at the
    /// Unix epoch, so timestamps are easy to read).
    pub fn now(&self) -> Now {
        Now {
            ms: self.ms,
            unix_ms: self.ms,
        }
    }

    /// Lets `ms` milliseconds pass.
    pub fn advance(&mut self, ms: u64) {
        self.ms += ms;
        self.core.tick(self.now());
        self.settle();
    }

    // ----- storage ------------------------------------------------------

    /// While `hold` is set, writes are stored but not durable: `Saved`
    /// waits for [`Self::flush`].
    pub fn hold_durability(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Makes every stored write durable.
    pub fn flush(&mut self) {
        self.unflushed = false;
        self.core.durable(self.appended, self.now());
        self.settle();
    }

    /// Makes every stored write durable as [`Self::flush`] does, but
    /// leaves what the core hands out for the shell's next step.
    pub fn flush_unsettled(&mut self) {
        self.unflushed = false;
        self.core.durable(self.appended, self.now());
    }

    /// The next append fails with `reason`.
    pub fn fail_next_append(&mut self, reason: &str) {
        self.fail_next = Some(reason.to_owned());
    }

    /// The stored log, oldest first.
    pub fn log(&self) -> &[Vec<u8>] {
        &self.log
    }

    /// The stored chat records, oldest first.
    pub fn chat(&self) -> &[String] {
        &self.chat
    }

    /// The stored log merged, as a room loading it would.
    pub fn stored(&self) -> Document {
        Document::from_updates(self.log.iter().map(Vec::as_slice)).expect("the stored log merges")
    }

    /// How often the room asked to be evicted.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    // ----- cluster mode ------------------------------------------------

    /// Makes the room one of several nodes' rooms of its document.
    pub fn cluster(&mut self) {
        self.core.set_clustered(true);
    }

    /// A message from another node's room (always the same other node).
    pub fn remote(&mut self, message: crate::fanout::NodeMessage) {
        self.remote_from(crate::fanout::NodeKey(1), message);
    }

    /// A message from the room of node `from`.
    pub fn remote_from(
        &mut self,
        from: crate::fanout::NodeKey,
        message: crate::fanout::NodeMessage,
    ) {
        self.core.remote(from, message, self.now());
        self.settle();
    }

    /// What the room published to other nodes since the last call.
    pub fn published(&mut self) -> Vec<crate::fanout::NodeMessage> {
        std::mem::take(&mut self.published)
    }

    /// How often the room asked to resync from the store.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// The core itself, to read what it holds.
    pub fn core(&self) -> &RoomCore<TestQueue> {
        &self.core
    }

    /// The live document (`None` while the room is out of service).
    pub fn document(&self) -> Option<&Document> {
        self.core.document()
    }

    /// The counters the room updated.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Drops the oldest stored chat records past the history's count or
    /// bytes, as `DocStore::trim_chat` does.
    fn trim_chat(&mut self) {
        let (mut kept, mut bytes) = (0, 0u64);
        let keep = self
            .chat
            .iter()
            .rev()
            .take_while(|record| {
                bytes += record.len() as u64;
                kept += 1;
                kept <= self.config.chat_history && bytes <= self.config.chat_history_bytes
            })
            .count();
        self.chat.drain(..self.chat.len() - keep);
    }

    /// Carries out what the core handed out, in order, as the shell does.
    fn settle(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Append { write, entry } => {
                    if let Some(reason) = self.fail_next.take() {
                        let reason = format!("could not store an update: {reason}");
                        self.core.storage_failed(reason, self.now());
                        continue;
                    }
                    self.log.push(entry);
                    self.appended = write;
                    self.core.appended(write, self.now());
                    if self.hold {
                        self.unflushed = true;
                    } else {
                        self.core.durable(write, self.now());
                    }
                }
                Output::AppendChat { record } => {
                    self.chat.push(record);
                    self.trim_chat();
                }
                Output::Compact { state } => self.log = vec![state],
                Output::Reload => {
                    let restored = Restored::from_log(&self.log);
                    let stored_before = self.core.reloaded(restored, self.now());
                    self.stored_before(stored_before);
                }
                Output::Evict => self.evictions += 1,
                // Cluster mode (`clustered`): what would go to the other
                // nodes, and resyncs asked for (the store is this one log).
                Output::Publish(message) => self.published.push(message),
                Output::Resync => self.resyncs += 1,
            }
        }
    }
}
