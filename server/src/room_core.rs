//! How a room behaves: the rules of one live document, with no I/O, no
//! tasks, no channels and no clock.
//!
//! [`RoomCore`] owns the document, the presence table, the recent chat and
//! what it knows of each member, and is driven by inputs:
//!
//! | input | when |
//! |---|---|
//! | [`RoomCore::loaded`], [`RoomCore::reloaded`] | the stored log was read (or could not be) |
//! | [`RoomCore::join`], [`RoomCore::leave`] | a connection enters or leaves |
//! | [`RoomCore::receive`] | a member sent a message ([`Inbound`]) |
//! | [`RoomCore::import`], [`RoomCore::snapshot`], [`RoomCore::delete`] | the HTTP API |
//! | [`RoomCore::appended`], [`RoomCore::storage_failed`] | storage took write *n*, or failed |
//! | [`RoomCore::durable`] | writes up to *n* are on disk |
//! | [`RoomCore::tick`] | time passed (every input carries its [`Now`]) |
//! | [`RoomCore::shutdown`], [`RoomCore::prepare_to_close`] | the server stops, the room leaves |
//! | [`RoomCore::remote`] | another node's room of this document said something (`remote.rs`) |
//!
//! It answers in two ways. Frames and closes go straight into each member's
//! [`MemberQueue`], which never waits: a full queue cuts that member off
//! with 4408 (it resyncs on reconnect, so nothing is dropped silently), and
//! the rules that depend on delivery (how many received an event) see the
//! answer at once. Storage work comes out of [`RoomCore::poll_output`] as
//! [`Output`]s, in order, for the caller to carry out and report back.
//!
//! The path of one update through the core: [`Document::apply`] merges it
//! and yields what was new; that is handed out as [`Output::Append`] (write
//! number *n*); once storage reports [`RoomCore::appended`] it is relayed
//! to every other member and the compaction rule runs; the sender gets
//! `Saved` once [`RoomCore::durable`] reaches *n*.
//!
//! `room.rs` is the tokio shell that feeds this core; `harness` (feature
//! `harness`) drives it synchronously for tests, the property simulator and
//! the fuzzer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quire_protocol::awareness::{AwarenessError, Bounds, NO_OWNER, Owner};
use quire_protocol::ext::{CHAT_EVENT, CHAT_HISTORY_EVENT, Ext};
use quire_protocol::session::SAVES_STALLED;
use quire_protocol::update::Footprint;
use quire_protocol::{AwarenessTable, ClientId, Message, SyncMessage, close};
use tracing::{debug, error, warn};

use crate::config::Config;
use crate::document::{Document, DocumentError};
use crate::fanout::{NodeKey, NodeMessage};
use crate::metrics::Metrics;

#[cfg(any(test, feature = "harness"))]
pub mod harness;
mod remote;
#[cfg(test)]
mod tests;

/// Identifies one WebSocket connection for the lifetime of the process.
pub type ConnId = u64;

/// When an input happens, read from the caller's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds since the room started: presence timeouts,
    /// the eviction grace period.
    pub ms: u64,
    /// Unix milliseconds, for the timestamps people see (chat, events).
    pub unix_ms: u64,
}

/// How much a member's dropped incomplete updates may carry, in clients
/// plus deleted ranges, before it is cut off (see `Member::ahead`).
const MAX_AHEAD_ENTRIES: usize = 65_536;

/// The first wait between two sync step 1 a member's incomplete updates
/// ask for; it doubles up to [`STEP1_BACKOFF_MAX_MS`] while they keep
/// coming, and starts again once the document has what they referred to.
const STEP1_BACKOFF_MIN_MS: u64 = 100;
const STEP1_BACKOFF_MAX_MS: u64 = 10_000;

/// Shortest period between two sweeps of stale presence.
const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(50);

/// A live room compacts a log of this many times `compact_after` entries
/// even when they are small next to the document (see
/// [`RoomCore::compact_if_grown`]): loading replays every entry.
const COMPACT_CAP_FACTOR: u64 = 16;

/// A WebSocket close the room asks a connection to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// A decoded client message, payloads sharing the frame's buffer.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// Sync step 1: the client's state vector.
    StateVector(Bytes),
    /// Sync step 2 or update: changes to merge.
    Update(Bytes),
    /// An awareness update.
    Awareness(Bytes),
    /// "Send me everyone's awareness."
    QueryAwareness,
    /// The connection's token was refreshed with another permission.
    SetWritable(bool),
    /// A named event for the room (Quire clients only).
    Emit {
        name: String,
        payload: String,
        ack: u64,
    },
}

/// Why a room could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomError {
    /// The room was evicted between lookup and use; look it up again.
    #[error("room closed")]
    Gone,
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The document could not be loaded or stored.
    #[error("document unavailable: {0}")]
    Unavailable(String),
    /// The update was rejected; nothing changed.
    #[error("{0}")]
    InvalidUpdate(String),
    /// The document is, or would become, larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The update refers to blocks the document does not have; nothing
    /// changed. `carries`: what it holds.
    #[error("{reason}")]
    Incomplete { carries: Footprint, reason: String },
    /// The server holds its maximum of documents in memory.
    #[error("the server has too many documents open; try again later")]
    Busy,
}

impl RoomError {
    /// How a WebSocket connection is closed for this error.
    pub fn close(&self) -> Close {
        match self {
            RoomError::Gone | RoomError::Unavailable(_) => {
                Close::new(close::INTERNAL_ERROR, self.to_string())
            }
            RoomError::ShuttingDown => Close::new(close::GOING_AWAY, self.to_string()),
            RoomError::InvalidUpdate(_) | RoomError::Incomplete { .. } => {
                Close::new(close::INVALID_PAYLOAD, self.to_string())
            }
            RoomError::TooLarge(_) => Close::new(close::DOCUMENT_TOO_LARGE, self.to_string()),
            RoomError::Busy => Close::new(close::TRY_AGAIN_LATER, self.to_string()),
        }
    }
}

/// What a member's outbound queue said to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the connection to write.
    Queued,
    /// The queue is full: the member cannot keep up.
    Full,
    /// The connection is ending; its `leave` is on the way.
    Closed,
}

/// A request whose answer depends only on the request and the room's
/// state: while one answer to it waits unwritten in a member's queue, the
/// same request again needs no new one (what changes meanwhile reaches the
/// member after it, as relays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Sync step 2 for this state vector (as the member sent it).
    SyncStep2(Bytes),
    /// The whole presence table (query-awareness).
    Awareness,
}

/// One member's way out: its connection's outbound queue. Never waits.
pub trait MemberQueue {
    /// Queues one frame.
    fn push(&mut self, frame: Bytes) -> Pushed;
    /// Queues the answer to `answer`'s request.
    fn push_answer(&mut self, answer: Answer, frame: Bytes) -> Pushed {
        let _ = answer;
        self.push(frame)
    }
    /// Whether an answer to this request still waits unwritten (then the
    /// core builds and queues none).
    fn answer_pending(&self, answer: &Answer) -> bool {
        let _ = answer;
        false
    }
    /// Asks the connection to close (best effort: one close is all that
    /// matters). The core drops the queue right after.
    fn close(&mut self, close: Close);
}

/// A connection entering the room.
pub struct Joining<Q> {
    pub queue: Q,
    /// Whether the client negotiated Quire's extensions (acks, events, ...).
    pub extensions: bool,
    /// Whether its token allows changing the document (read-only otherwise).
    pub can_write: bool,
}

/// Storage work the core hands out, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Append `entry` to the document's log; report [`RoomCore::appended`]
    /// with `write` (write numbers count up from 1 and must be reported in
    /// order) or [`RoomCore::storage_failed`].
    Append { write: u64, entry: Vec<u8> },
    /// Append one chat record to the document's chat log, then trim the
    /// log to the room's history (`DocStore::trim_chat` with
    /// `chat_history` and `chat_history_bytes`); a failure only costs the
    /// record, so it is logged and not reported.
    AppendChat { record: String },
    /// Replace every entry appended so far by `state`, which holds them all.
    Compact { state: Vec<u8> },
    /// The in-memory document is suspect: read the stored log again and
    /// report [`RoomCore::reloaded`] before any other input.
    Reload,
    /// The room has had no member for the grace period: finish storage and
    /// leave the registry (or, if something arrived meanwhile, carry on; the
    /// core asks again a grace period later).
    Evict,
    /// Hand this to the other nodes' rooms of the document (cluster mode
    /// only): updates once durable, presence, events and chat at once.
    Publish(NodeMessage),
    /// An update from another node did not fit the document (it refers to
    /// what the room lacks): read the store past the last seq read and
    /// hand each entry to [`RoomCore::remote`].
    Resync,
}

/// A document rebuilt from its stored log, ready for the room.
pub struct Restored {
    document: Document,
    /// Entries in the stored log (compaction leaves one).
    log_len: u64,
    /// Bytes of the stored log, for the size limit.
    bytes: u64,
    /// Bytes of its first entry: the state of the last compaction, if any.
    state_bytes: u64,
}

impl Restored {
    /// Merges a stored log (oldest first) as the room keeps it. CPU-heavy
    /// for a long log: callers run it off the async threads.
    pub fn from_log(updates: &[Vec<u8>]) -> Result<Self, String> {
        let document = Document::from_updates(updates.iter().map(Vec::as_slice))
            .map_err(|e| format!("stored log does not merge: {e}"))?;
        Ok(Self {
            document,
            log_len: updates.len() as u64,
            bytes: updates.iter().map(|u| u.len() as u64).sum(),
            state_bytes: updates.first().map_or(0, |u| u.len() as u64),
        })
    }
}

/// Who receives a frame.
#[derive(Clone, Copy)]
enum Target {
    One(ConnId),
    /// Every member but one (`None`: every member).
    AllBut(Option<ConnId>),
    /// Members that negotiated the extensions, but one.
    ExtensionsBut(Option<ConnId>),
}

/// One member of the room.
struct Member<Q> {
    queue: Q,
    extensions: bool,
    can_write: bool,
    /// Update messages (step 2 and update) received, numbered from 1: the
    /// numbers `Saved` acknowledgements refer to.
    update_messages: u64,
    /// (message number, write that makes it durable), oldest first.
    pending_saves: VecDeque<(u64, u64)>,
    /// Whether a read-only connection was already told its changes are refused.
    told_read_only: bool,
    /// The first update message refused as read-only: no `Saved` reaches it
    /// or any later message on this connection (the client resends all on
    /// its next connection, where its token's permission applies afresh).
    refused_from: Option<u64>,
    /// Set when an update message referred to blocks the document does not
    /// have (`RoomError::Incomplete`): that message's number and what it
    /// carried (merged with later such messages). The message was dropped
    /// and the client asked for what the room lacks (sync step 1); until
    /// the document has all that, no `Saved` is sent, as it would claim the
    /// dropped message too.
    ahead: Option<(u64, Footprint)>,
    /// No sync step 1 for incomplete updates before this time (ms): one
    /// was sent and its answer is on the way. See [`STEP1_BACKOFF_MIN_MS`].
    step1_not_before: u64,
    /// The current wait between two such step 1 (0: none sent yet).
    step1_backoff: u64,
    /// An incomplete update arrived while step 1 waited: one is owed, sent
    /// when the wait is over ([`RoomCore::tick`]) or as soon as this member
    /// sends something that changes the document (the answer to the last
    /// one, likely) and the document still lacks what was dropped, so that
    /// nothing dropped is left unasked for.
    step1_owed: bool,
}

/// Where the room's document stands.
enum State {
    /// Loaded, and storage has taken everything handed out.
    Ready {
        document: Document,
        /// Entries in the stored log, counting appends handed out.
        log_len: u64,
        /// Estimated encoded size (stored log bytes), for the size limit.
        bytes: u64,
        /// Size of the state the last compaction wrote (or of the loaded
        /// log's first entry): the live room compacts once the entries after
        /// it hold as many bytes, see [`RoomCore::compact_if_grown`].
        state_bytes: u64,
    },
    /// Loading or storing failed. The room serves nobody and writes nothing
    /// until it is evicted; the next join loads again.
    Failed(String),
}

/// A stored update not yet relayed: relaying waits until storage took it,
/// so that members never see what a storage failure then loses.
struct Unstored {
    /// The update's last write.
    write: u64,
    /// The `sync update` frame for everyone but `origin`, if it had a delta.
    relay: Option<Bytes>,
    /// The member it came from (`None`: an import).
    origin: Option<ConnId>,
}

/// The rules of one live document. See the module docs.
pub struct RoomCore<Q> {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    members: HashMap<ConnId, Member<Q>>,
    awareness: AwarenessTable,
    state: State,
    /// Recent chat messages (JSON), oldest first, sent to joining clients:
    /// at most `chat_history` of them and `chat_history_bytes` together,
    /// as the store keeps them ([`Output::AppendChat`] trims it).
    chat: VecDeque<String>,
    /// Bytes of `chat`: counted with the document's for the size limit.
    chat_bytes: u64,
    /// The number of the last write handed out.
    last_write: u64,
    /// Every write up to this one is on disk.
    durable: u64,
    /// Since when (monotonic ms) some handed-out write has waited for the
    /// disk without any progress; `None` while everything is durable.
    undurable_since: Option<u64>,
    /// Whether the Quire members were told saving has stalled (and not
    /// yet that it resumed).
    stall_told: bool,
    /// Stored updates waiting for [`RoomCore::appended`] to be relayed.
    unstored: VecDeque<Unstored>,
    /// Storage work not yet taken by [`RoomCore::poll_output`].
    outputs: VecDeque<Output>,
    /// Set between handing out [`Output::Reload`] and [`RoomCore::reloaded`].
    reloading: bool,
    /// Members to close for bad input once the reload is done (a failed
    /// reload closes everyone with 1011 instead).
    after_reload: Vec<(ConnId, u16, String)>,
    /// When the last member left; the room is evicted a grace period later.
    empty_since: Option<u64>,
    /// When stale presence is next swept.
    next_sweep: u64,
    /// Whether other nodes serve this document too: then updates, presence,
    /// events and chat are also handed out as [`Output::Publish`].
    clustered: bool,
    /// (write, delta) of stored updates to publish once that write is durable.
    unpublished: VecDeque<(u64, Bytes)>,
    /// The presence owner of each other node that relayed presence here:
    /// one owner per node, so a removal from the node a client left cannot
    /// erase what the node it moved to announced (see `remote`).
    node_owners: HashMap<NodeKey, Owner>,
    /// The owner the next node seen gets; counts down from below
    /// `NO_OWNER`, as connection ids count up from 1.
    next_node_owner: Owner,
}

impl<Q: MemberQueue> RoomCore<Q> {
    /// A room not loaded yet (it refuses joins until [`Self::loaded`]);
    /// its monotonic clock ([`Now::ms`]) starts at 0 now.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            members: HashMap::new(),
            awareness: AwarenessTable::new(),
            state: State::Failed("not loaded yet".into()),
            chat: VecDeque::new(),
            chat_bytes: 0,
            last_write: 0,
            durable: 0,
            undurable_since: None,
            stall_told: false,
            unstored: VecDeque::new(),
            outputs: VecDeque::new(),
            reloading: false,
            after_reload: Vec::new(),
            empty_since: Some(0),
            next_sweep: 0,
            clustered: false,
            unpublished: VecDeque::new(),
            node_owners: HashMap::new(),
            next_node_owner: NO_OWNER - 1,
        }
    }

    // ----- inputs -------------------------------------------------------

    /// The stored log was read: `restored` is the document, or why it could
    /// not be had (the room then serves nobody). `chat`: the recent chat
    /// records, oldest first.
    ///
    /// Returns the write number that stands for everything stored before
    /// the room loaded: earlier writes to the document (an evicted room's,
    /// say) may not be on disk yet, so nothing is acknowledged until the
    /// caller reports this write to [`Self::durable`], once the store's
    /// ticket at load time (`DocStore::last_ticket`) is durable.
    pub fn loaded(&mut self, restored: Result<Restored, String>, chat: Vec<String>) -> u64 {
        self.last_write += 1;
        self.state = match restored {
            Ok(restored) => Self::ready(restored),
            Err(reason) => {
                error!(%reason, "could not load document");
                State::Failed(reason)
            }
        };
        self.chat = VecDeque::new();
        self.chat_bytes = 0;
        for record in chat {
            self.keep_chat(record);
        }
        self.last_write
    }

    /// The answer to [`Output::Reload`]. Returns the write number standing
    /// for what was stored before, as [`Self::loaded`] does.
    pub fn reloaded(&mut self, restored: Result<Restored, String>, now: Now) -> u64 {
        self.reloading = false;
        self.last_write += 1;
        match restored {
            Ok(restored) => self.state = Self::ready(restored),
            Err(reason) => {
                error!(%reason, "could not load document");
                self.fail(reason, now);
            }
        }
        for (conn, code, reason) in std::mem::take(&mut self.after_reload) {
            self.reject(conn, code, reason, now);
        }
        self.last_write
    }

    /// Adds a connection and sends it sync step 1, everyone's presence and
    /// (Quire clients) the recent chat. Refused when the document is
    /// unavailable (never for its size: only writes are refused past it).
    pub fn join(&mut self, conn: ConnId, joining: Joining<Q>, now: Now) -> Result<(), RoomError> {
        // A document past the size limit is still served (its writes are
        // refused): what yrs stores can outgrow what was checked.
        let document = match &self.state {
            State::Ready { document, .. } => document,
            State::Failed(reason) => return Err(RoomError::Unavailable(reason.clone())),
        };
        let extensions = joining.extensions;
        let step1 =
            Bytes::from(Message::Sync(SyncMessage::Step1(&document.state_vector())).encode());
        self.members.insert(
            conn,
            Member {
                queue: joining.queue,
                extensions,
                can_write: joining.can_write,
                update_messages: 0,
                pending_saves: VecDeque::new(),
                told_read_only: false,
                refused_from: None,
                ahead: None,
                step1_not_before: 0,
                step1_backoff: 0,
                step1_owed: false,
            },
        );
        self.empty_since = None;
        self.send(Target::One(conn), &step1, now);
        if extensions && self.stall_told {
            self.send(Target::One(conn), &stalled_frame(), now);
        }
        if !self.awareness.is_empty() {
            let states = Bytes::from(Message::Awareness(&self.awareness.encode_all()).encode());
            self.send(Target::One(conn), &states, now);
        }
        if extensions && !self.chat.is_empty() {
            let history = format!(
                "[{}]",
                self.chat
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let frame = Ext::Event {
                name: CHAT_HISTORY_EVENT,
                payload: &history,
                sender: 0,
                sender_name: "",
                at_ms: now.unix_ms,
            }
            .encode();
            self.send(Target::One(conn), &frame.into(), now);
        }
        debug!(conn, members = self.members.len(), "joined");
        Ok(())
    }

    /// Removes a connection (idempotent) and announces that its presence
    /// is gone.
    pub fn leave(&mut self, conn: ConnId, now: Now) {
        let Some(member) = self.members.remove(&conn) else {
            return;
        };
        drop(member);
        // Exactly the presence this connection introduced goes with it.
        if let Some(gone) = self.awareness.remove_owner(conn) {
            let frame = Bytes::from(Message::Awareness(&gone).encode());
            self.send(Target::AllBut(None), &frame, now);
            self.publish_presence(gone);
        }
        if self.members.is_empty() {
            self.empty_since = Some(now.ms);
        }
        debug!(conn, members = self.members.len(), "left");
    }

    /// A message from member `conn` (ignored if it is not a member).
    pub fn receive(&mut self, conn: ConnId, message: Inbound, now: Now) {
        if !self.members.contains_key(&conn) {
            return;
        }
        match message {
            Inbound::StateVector(sv) => {
                let State::Ready { document, .. } = &self.state else {
                    return;
                };
                if self.answer_pending(conn, &Answer::SyncStep2(sv.clone())) {
                    return;
                }
                match document.diff(&sv) {
                    Ok(diff) => {
                        let frame = Message::Sync(SyncMessage::Step2(&diff)).encode();
                        self.send_answer(conn, Answer::SyncStep2(sv), frame.into(), now);
                    }
                    Err(err) => self.reject(conn, close::INVALID_PAYLOAD, err.to_string(), now),
                }
            }
            Inbound::Update(update) if !self.can_write(conn) => {
                self.refuse_read_only(conn, &update, now)
            }
            Inbound::SetWritable(can_write) => {
                if let Some(member) = self.members.get_mut(&conn) {
                    member.can_write = can_write;
                }
            }
            Inbound::Update(update) => match self.apply_update(Some(conn), &update) {
                Ok(changed) => {
                    self.acknowledge(conn, now);
                    if changed {
                        self.pay_owed_step1(Some(conn), now);
                    }
                }
                Err(RoomError::Incomplete { carries, reason }) => {
                    self.ask_for_missing(conn, carries, &reason, now)
                }
                Err(err @ (RoomError::InvalidUpdate(_) | RoomError::TooLarge(_))) => {
                    let Close { code, reason } = err.close();
                    if self.reloading {
                        self.after_reload.push((conn, code, reason));
                    } else {
                        self.reject(conn, code, reason, now);
                    }
                }
                // The room is unavailable; its members were closed.
                Err(_) => {}
            },
            Inbound::Emit { name, payload, ack } => self.on_emit(conn, &name, &payload, ack, now),
            Inbound::Awareness(update) => {
                let bounds = Bounds {
                    per_owner: self.config.max_presence_per_connection,
                    total: self.config.max_presence_per_room,
                    state_bytes: self.config.max_presence_state_bytes,
                };
                match self.apply_presence_as(conn, &update, bounds, now) {
                    Ok((accepted, foreign)) => {
                        if !foreign.is_empty() {
                            debug!(
                                conn,
                                ?foreign,
                                "ignoring presence of clients another connection introduced"
                            );
                        }
                        // A stock y-websocket client closes a socket that
                        // brought no message for 30 s, and browsers hide
                        // ping frames from scripts: its own renewals,
                        // echoed (as the Yjs reference server does), keep
                        // a client alone in a quiet room connected. Quire
                        // clients get application pings instead.
                        let echo = self.members.get(&conn).is_some_and(|m| !m.extensions);
                        self.announce_awareness((!echo).then_some(conn), &accepted, now);
                        self.publish_awareness(&accepted);
                    }
                    Err(err) => {
                        let code = match err {
                            AwarenessError::Decode(_) | AwarenessError::TooManyForOwner(_) => {
                                close::INVALID_PAYLOAD
                            }
                            AwarenessError::TooManyInTable(_) => close::TRY_AGAIN_LATER,
                            AwarenessError::StateTooLarge { .. } => close::MESSAGE_TOO_BIG,
                        };
                        self.reject(conn, code, format!("awareness update refused: {err}"), now)
                    }
                }
            }
            Inbound::QueryAwareness => {
                if self.answer_pending(conn, &Answer::Awareness) {
                    return;
                }
                let states = Message::Awareness(&self.awareness.encode_all()).encode();
                self.send_answer(conn, Answer::Awareness, states.into(), now);
            }
        }
    }

    /// Merges an update from the HTTP API; `Ok(false)` if it held nothing
    /// new. What it added is relayed once storage took it.
    pub fn import(&mut self, update: &[u8]) -> Result<bool, RoomError> {
        self.apply_update(None, update)
    }

    /// The whole document as one Yjs update. If yrs cannot encode it, the
    /// document is rebuilt from storage ([`Output::Reload`]).
    pub fn snapshot(&mut self) -> Result<Vec<u8>, RoomError> {
        let state = match &self.state {
            State::Ready { document, .. } => document.encode_state(),
            State::Failed(reason) => return Err(RoomError::Unavailable(reason.clone())),
        };
        state.map_err(|err| {
            error!("encoding the document failed; reloading it from storage");
            self.request_reload();
            RoomError::Unavailable(err.to_string())
        })
    }

    /// The document is being deleted: every member is closed with 4404.
    pub fn delete(&mut self, now: Now) {
        self.close_all(
            Close::new(close::DOCUMENT_DELETED, "the document was deleted"),
            now,
        );
    }

    /// The server is shutting down: every member is closed with 1001.
    pub fn shutdown(&mut self, now: Now) {
        self.close_all(
            Close::new(close::GOING_AWAY, "server is shutting down"),
            now,
        );
    }

    /// Before the room goes away: compact a log that grew.
    pub fn prepare_to_close(&mut self) {
        self.compact_if_long(2);
    }

    /// Storage took every write up to `write` (reported in order): relay
    /// what those updates added.
    pub fn appended(&mut self, write: u64, now: Now) {
        if write > self.durable {
            self.undurable_since.get_or_insert(now.ms);
        }
        while self.unstored.front().is_some_and(|u| u.write <= write) {
            let Some(Unstored { relay, origin, .. }) = self.unstored.pop_front() else {
                break;
            };
            let Some(frame) = relay else { continue };
            self.metrics.updates_in.inc();
            self.relay(origin, &frame, now);
            self.compact_if_grown();
        }
    }

    /// Storage failed on a write: the room is put out of service (the
    /// document would otherwise run ahead of disk) and every member closed
    /// with 1011. Clients keep their copy and resync after reconnecting.
    /// Storage work not yet taken is dropped.
    pub fn storage_failed(&mut self, reason: String, now: Now) {
        self.fail(reason, now);
    }

    /// Every write up to `write` is on disk: send the `Saved` that waited
    /// for it.
    pub fn durable(&mut self, write: u64, now: Now) {
        if write <= self.durable {
            return;
        }
        self.durable = write;
        // Progress restarts the stall clock; a stall ends once all is on disk.
        let resumed = write >= self.last_write && self.stall_told;
        if write >= self.last_write {
            self.undurable_since = None;
            self.stall_told = false;
        } else {
            self.undurable_since = Some(now.ms);
        }
        self.publish_durable();
        let mut acks = Vec::new();
        if resumed {
            // Members told of the stall with nothing waiting learn it is
            // over from a `Saved` for what they already had acknowledged.
            for (&conn, member) in &self.members {
                if member.extensions
                    && member.pending_saves.is_empty()
                    && member.refused_from.is_none()
                    && member.ahead.is_none()
                {
                    acks.push((conn, member.update_messages));
                }
            }
            warn!("the store confirms writes again; saving resumed");
        }
        for (&conn, member) in &mut self.members {
            if let Some(through) = pop_settled(&mut member.pending_saves, write) {
                acks.push((conn, through));
            }
        }
        for (conn, through) in acks {
            self.send(
                Target::One(conn),
                &Ext::Saved { through }.encode().into(),
                now,
            );
        }
    }

    /// Time passed: sweep presence not renewed within the awareness
    /// timeout, and ask for eviction once the room was empty for the grace
    /// period.
    pub fn tick(&mut self, now: Now) {
        self.pay_owed_step1(None, now);
        if self.durable < self.last_write {
            // The write standing for the stored log has no `appended`.
            self.undurable_since.get_or_insert(now.ms);
        }
        if now.ms >= self.next_sweep {
            let timeout = self.config.awareness_timeout.as_millis() as u64;
            self.sweep_awareness(now, timeout);
            self.next_sweep = now.ms + self.sweep_period();
        }
        if self.stall_at().is_some_and(|at| now.ms >= at) {
            self.stall_told = true;
            error!(
                waiting_since_ms = self.undurable_since,
                "the store has not confirmed writes in time; saves stalled"
            );
            self.send(Target::ExtensionsBut(None), &stalled_frame(), now);
        }
        if self.evict_at().is_some_and(|at| now.ms >= at) {
            self.outputs.push_back(Output::Evict);
            self.empty_since = Some(now.ms);
        }
    }

    // ----- what the caller reads ------------------------------------------

    /// The next storage work to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::tick`] has something to do next ([`Now::ms`]): at once
    /// while outputs wait, since an input such as [`Self::durable`] may
    /// hand some out (a durable write's publish to the other nodes) where
    /// the shell carries out nothing until its next step.
    pub fn deadline(&self) -> u64 {
        if !self.outputs.is_empty() {
            return 0;
        }
        let owed = self
            .members
            .values()
            .filter(|m| m.step1_owed)
            .map(|m| m.step1_not_before)
            .min();
        [self.evict_at(), self.stall_at(), owed]
            .into_iter()
            .flatten()
            .fold(self.next_sweep, u64::min)
    }

    /// Whether some `Saved` waits for [`Self::durable`].
    pub fn saves_pending(&self) -> bool {
        self.members.values().any(|m| !m.pending_saves.is_empty())
    }

    /// Whether some write handed out (or the stored log the room loaded)
    /// is not known to be on disk: the caller reports [`Self::durable`].
    pub fn waits_for_disk(&self) -> bool {
        self.durable < self.last_write
    }

    /// Connections in the room.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether the room has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Why the room is out of service, if it is.
    pub fn unavailable(&self) -> Option<&str> {
        match &self.state {
            State::Ready { .. } => None,
            State::Failed(reason) => Some(reason),
        }
    }

    /// Estimated encoded size of the document (its stored log), 0 while
    /// the room is out of service: how heavy a diff or snapshot is.
    pub fn stored_bytes(&self) -> u64 {
        match &self.state {
            State::Ready { bytes, .. } => *bytes,
            State::Failed(_) => 0,
        }
    }

    /// Bytes of the chat history the room keeps.
    pub fn chat_bytes(&self) -> u64 {
        self.chat_bytes
    }

    /// The presence table.
    pub fn presence(&self) -> &AwarenessTable {
        &self.awareness
    }

    /// The live document, unless the room is out of service.
    pub fn document(&self) -> Option<&Document> {
        match &self.state {
            State::Ready { document, .. } => Some(document),
            State::Failed(_) => None,
        }
    }

    /// The document, taken out as the room ends (the room is out of
    /// service after): whoever drops it decides on which thread its memory
    /// is freed (see `memory`).
    pub fn take_document(&mut self) -> Option<Document> {
        match std::mem::replace(&mut self.state, State::Failed("closed".into())) {
            State::Ready { document, .. } => Some(document),
            State::Failed(_) => None,
        }
    }

    // ----- the rules ------------------------------------------------------

    fn ready(restored: Restored) -> State {
        State::Ready {
            document: restored.document,
            log_len: restored.log_len,
            bytes: restored.bytes,
            state_bytes: restored.state_bytes,
        }
    }

    fn sweep_period(&self) -> u64 {
        (self.config.awareness_timeout / 6)
            .max(MIN_SWEEP_PERIOD)
            .as_millis() as u64
    }

    fn evict_at(&self) -> Option<u64> {
        let grace = self.config.room_grace.as_millis() as u64;
        self.empty_since.map(|since| since + grace)
    }

    /// When saving counts as stalled, unless the store confirms writes first.
    fn stall_at(&self) -> Option<u64> {
        if self.stall_told {
            return None;
        }
        let timeout = self.config.save_stall_timeout.as_millis() as u64;
        self.undurable_since.map(|since| since + timeout)
    }

    fn request_reload(&mut self) {
        self.reloading = true;
        self.outputs.push_back(Output::Reload);
    }

    /// Applies and stores one update; its relay waits for storage.
    /// `origin` is the member it came from (not echoed back), `None` for an
    /// import. `Ok(false)`: it held nothing new.
    fn apply_update(&mut self, origin: Option<ConnId>, update: &[u8]) -> Result<bool, RoomError> {
        if let State::Failed(reason) = &self.state {
            return Err(RoomError::Unavailable(reason.clone()));
        }
        // The raw size bounds what is new (sync sends differences, so the
        // two are close; the delta stored can be a little larger, so a
        // document may end past the limit, still served, its writes
        // refused); an update holding nothing new never counts.
        if let Some(refusal) = self.over_size_limit(update.len() as u64)
            && !self.document().is_some_and(|d| d.is_known(update))
        {
            return Err(RoomError::TooLarge(refusal));
        }
        let State::Ready { document, .. } = &mut self.state else {
            unreachable!("checked above")
        };
        let applied = match document.apply(update) {
            // Whatever yrs holds back must still merge into the whole
            // document, or the log could never be compacted again (yrs
            // panics merging some pending parts): such an update is refused
            // like one that failed half-way.
            Ok(applied) if applied.held_back && document.encode_whole().is_none() => {
                Err(DocumentError::Poisoned)
            }
            other => other,
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(DocumentError::Poisoned) => {
                // yrs failed half-way: the in-memory document is suspect.
                // Storage only holds what applied cleanly, so rebuild from it.
                error!("an update left the document half-changed; reloading it from storage");
                self.request_reload();
                return Err(RoomError::InvalidUpdate(
                    DocumentError::Poisoned.to_string(),
                ));
            }
            Err(DocumentError::Incomplete { carries, reason }) => {
                return Err(RoomError::Incomplete { carries, reason });
            }
            Err(err) => return Err(RoomError::InvalidUpdate(err.to_string())),
        };
        if !applied.changed() {
            return Ok(false);
        }
        let relay = (applied.delta.as_deref())
            .map(|delta| Bytes::from(Message::Sync(SyncMessage::Update(delta)).encode()));
        if let (true, Some(delta)) = (self.clustered, &applied.delta) {
            self.unpublished
                .push_back((self.last_write + 1, Bytes::copy_from_slice(delta)));
        }
        for entry in applied.into_log_entries(update) {
            self.store(entry);
        }
        self.unstored.push_back(Unstored {
            write: self.last_write,
            relay,
            origin,
        });
        Ok(true)
    }

    /// Why writing `more` bytes is refused, if it is: the stored log and
    /// the chat history together may not pass `max_document_bytes`.
    fn over_size_limit(&self, more: u64) -> Option<String> {
        let State::Ready { bytes, .. } = &self.state else {
            return None;
        };
        let limit = self.config.max_document_bytes;
        let stored = *bytes + self.chat_bytes;
        (stored + more > limit).then(|| {
            format!(
                "this document holds {stored} bytes (with its chat); \
                 writing {more} more would pass this server's limit of {limit}"
            )
        })
    }

    /// Hands one entry to storage and accounts for it.
    fn store(&mut self, entry: Vec<u8>) {
        let State::Ready { log_len, bytes, .. } = &mut self.state else {
            unreachable!("only a ready room stores")
        };
        *bytes += entry.len() as u64;
        *log_len += 1;
        self.last_write += 1;
        self.outputs.push_back(Output::Append {
            write: self.last_write,
            entry,
        });
    }

    /// Sends a document change to every member but `origin`. The one place
    /// an update leaves the room: fan-out to other nodes belongs here.
    fn relay(&mut self, origin: Option<ConnId>, frame: &Bytes, now: Now) {
        self.send(Target::AllBut(origin), frame, now);
    }

    /// The live room's rule: compact once the log holds `compact_after`
    /// entries *and* the entries after the last state hold at least as many
    /// bytes as that state, or once it holds [`COMPACT_CAP_FACTOR`] times
    /// `compact_after` entries whatever their size. A compaction encodes
    /// and writes the whole document, so compacting by count alone made a
    /// growing document cost O(n²) over its life (automerge-paper's trace
    /// compacted 260 times, a third of the server's CPU); by bytes, every
    /// byte compaction writes was preceded by a byte appended, and the log
    /// on disk stays under twice the state. The cap bounds how many entries
    /// a load replays when edits are tiny next to the document.
    fn compact_if_grown(&mut self) {
        let State::Ready {
            log_len,
            bytes,
            state_bytes,
            ..
        } = &self.state
        else {
            return;
        };
        let threshold = self.config.compact_after;
        let grown = *log_len >= threshold && bytes.saturating_sub(*state_bytes) >= *state_bytes;
        if grown || *log_len >= threshold.saturating_mul(COMPACT_CAP_FACTOR) {
            self.compact_if_long(threshold);
        }
    }

    /// Rewrites the stored log as one state update once it is `threshold` long.
    fn compact_if_long(&mut self, threshold: u64) {
        let State::Ready {
            document,
            log_len,
            bytes,
            state_bytes,
        } = &mut self.state
        else {
            return;
        };
        if *log_len < threshold.max(2) {
            return;
        }
        // Pending parts included: the rewritten log loads back into this
        // very document.
        let Some(state) = document.encode_whole() else {
            // Leave the log as it is; a snapshot request or the next load
            // rebuilds the document from it.
            warn!("could not encode the document for compaction");
            return;
        };
        debug!(entries = *log_len, bytes = state.len(), "compacting");
        *log_len = 1;
        *bytes = state.len() as u64;
        *state_bytes = *bytes;
        self.outputs.push_back(Output::Compact { state });
    }

    fn sweep_awareness(&mut self, now: Now, timeout_ms: u64) {
        let removed = self.awareness.sweep(now.ms, timeout_ms);
        if removed.is_empty() {
            return;
        }
        debug!(?removed, "awareness timed out");
        self.announce_awareness(None, &removed, now);
        self.forget_remote_removed();
    }

    /// Relays the current entries of `clients` to everyone but `origin`.
    fn announce_awareness(&mut self, origin: Option<ConnId>, clients: &[ClientId], now: Now) {
        if clients.is_empty() {
            return;
        }
        let update = self.awareness.encode(clients.iter().copied());
        let frame = Bytes::from(Message::Awareness(&update).encode());
        self.send(Target::AllBut(origin), &frame, now);
    }

    /// Queues a frame; members whose queue is full are cut off. Returns
    /// how many members it was queued for.
    fn send(&mut self, target: Target, frame: &Bytes, now: Now) -> u64 {
        let mut too_slow = Vec::new();
        let mut delivered = 0;
        let recipients = self
            .members
            .iter_mut()
            .filter(|(conn, member)| match target {
                Target::One(one) => **conn == one,
                Target::AllBut(origin) => Some(**conn) != origin,
                Target::ExtensionsBut(origin) => Some(**conn) != origin && member.extensions,
            });
        for (&conn, member) in recipients {
            match member.queue.push(frame.clone()) {
                Pushed::Queued => delivered += 1,
                Pushed::Full => too_slow.push(conn),
                Pushed::Closed => {}
            }
        }
        for conn in too_slow {
            self.cut_too_slow(conn, now);
        }
        delivered
    }

    /// Whether member `conn` still has an answer to this request queued.
    fn answer_pending(&self, conn: ConnId, answer: &Answer) -> bool {
        self.members
            .get(&conn)
            .is_some_and(|member| member.queue.answer_pending(answer))
    }

    /// Queues the answer to one request of member `conn` (cut off if full).
    fn send_answer(&mut self, conn: ConnId, answer: Answer, frame: Bytes, now: Now) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        if member.queue.push_answer(answer, frame) == Pushed::Full {
            self.cut_too_slow(conn, now);
        }
    }

    /// Cuts off a member whose queue is full (4408; it resyncs on reconnect).
    fn cut_too_slow(&mut self, conn: ConnId, now: Now) {
        warn!(conn, "outbound queue full; cutting the connection off");
        self.metrics.slow_consumers_cut.inc();
        self.remove(
            conn,
            Close::new(
                close::TOO_SLOW,
                "connection too slow to keep up; reconnect to resync",
            ),
            now,
        );
    }

    /// Closes one connection for bad input.
    fn reject(&mut self, conn: ConnId, code: u16, reason: String, now: Now) {
        warn!(conn, code, %reason, "rejecting input");
        self.metrics.rejected_inputs.inc();
        self.remove(conn, Close::new(code, reason), now);
    }

    /// Removes a member and tells its connection to close.
    fn remove(&mut self, conn: ConnId, close: Close, now: Now) {
        if let Some(member) = self.members.get_mut(&conn) {
            member.queue.close(close);
        }
        self.leave(conn, now);
    }

    fn close_all(&mut self, close: Close, now: Now) {
        for member in self.members.values_mut() {
            member.queue.close(close.clone());
        }
        let conns: Vec<ConnId> = self.members.keys().copied().collect();
        for conn in conns {
            self.leave(conn, now);
        }
    }

    /// Puts the room out of service after a storage failure.
    fn fail(&mut self, reason: String, now: Now) {
        error!(%reason, "document unavailable");
        self.outputs.clear();
        self.unstored.clear();
        self.unpublished.clear();
        self.close_all(
            Close::new(
                close::INTERNAL_ERROR,
                "document unavailable; reconnect later",
            ),
            now,
        );
        self.state = State::Failed(reason);
    }

    /// After an update message from `conn` was merged (or found to hold
    /// nothing new): acknowledge it once everything the room stored so far
    /// is on disk, which covers whatever the message carried.
    fn acknowledge(&mut self, conn: ConnId, now: Now) {
        let State::Ready { document, .. } = &self.state else {
            return;
        };
        let required = self.last_write;
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        member.update_messages += 1;
        if !member.extensions || member.refused_from.is_some() {
            return;
        }
        if let Some((_, carried)) = &member.ahead {
            if !document.holds(carried) {
                return;
            }
            member.ahead = None;
            member.step1_backoff = 0;
            member.step1_not_before = 0;
            member.step1_owed = false;
        }
        let number = member.update_messages;
        if required <= self.durable && member.pending_saves.is_empty() {
            let frame = Ext::Saved { through: number }.encode();
            self.send(Target::One(conn), &frame.into(), now);
        } else {
            member.pending_saves.push_back((number, required));
        }
    }

    /// An update message from `conn` referred to blocks the document does
    /// not have: count it, hold back `Saved` until the document has them,
    /// and ask the client for everything the room lacks. Its answer (sync
    /// step 2) carries the dropped message's content along with what it
    /// referred to.
    fn ask_for_missing(&mut self, conn: ConnId, carries: Footprint, reason: &str, now: Now) {
        if !matches!(self.state, State::Ready { .. }) {
            return;
        }
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        member.update_messages += 1;
        debug!(
            conn,
            reason, "update refers to what the document lacks; asking for it"
        );
        let carried = match &mut member.ahead {
            None => &mut member.ahead.insert((member.update_messages, carries)).1,
            Some((_, carried)) => {
                carried.merge(carries);
                carried
            }
        };
        // An honest client sends one or two before its answer arrives; a
        // client that keeps sending them would grow this without bound.
        if carried.reach.len() + carried.deleted.len() > MAX_AHEAD_ENTRIES {
            self.reject(
                conn,
                close::INVALID_PAYLOAD,
                "too many updates referring to what this document lacks".into(),
                now,
            );
            return;
        }
        // A client that keeps sending them gets step 1 with backoff: its
        // answer to the last one most likely carries what these lack too,
        // and if not, the step 1 owed goes out later.
        if now.ms < member.step1_not_before {
            member.step1_owed = true;
            return;
        }
        self.ask_with_step1(conn, now);
    }

    /// Sends `conn` sync step 1 for its dropped incomplete updates and
    /// doubles the wait before the next.
    fn ask_with_step1(&mut self, conn: ConnId, now: Now) {
        let State::Ready { document, .. } = &self.state else {
            return;
        };
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        member.step1_owed = false;
        member.step1_backoff =
            (member.step1_backoff * 2).clamp(STEP1_BACKOFF_MIN_MS, STEP1_BACKOFF_MAX_MS);
        member.step1_not_before = now.ms + member.step1_backoff;
        let step1 = Message::Sync(SyncMessage::Step1(&document.state_vector())).encode();
        self.send(Target::One(conn), &step1.into(), now);
    }

    /// The members owed a step 1 whose wait is over (`changed`: also
    /// `conn`, whose last message changed the document), sent it.
    fn pay_owed_step1(&mut self, changed: Option<ConnId>, now: Now) {
        let due: Vec<ConnId> = self
            .members
            .iter()
            .filter(|(conn, m)| {
                m.step1_owed && (Some(**conn) == changed || now.ms >= m.step1_not_before)
            })
            .map(|(conn, _)| *conn)
            .collect();
        for conn in due {
            self.ask_with_step1(conn, now);
        }
    }

    /// A named event: relayed to the other Quire clients; `chat` is also
    /// stamped with the sender's name and the server time, stored, and sent
    /// back to the sender so everyone shows the same message.
    fn on_emit(&mut self, conn: ConnId, name: &str, payload: &str, ack: u64, now: Now) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
            self.reject(
                conn,
                close::INVALID_PAYLOAD,
                format!("payload of event {name:?} is not JSON"),
                now,
            );
            return;
        };
        if !self.can_write(conn) {
            // The read permission covers watching and one's own presence;
            // events (chat included) need write.
            let message = "read-only access: events are not sent";
            self.refuse_event(conn, close::FORBIDDEN, message, ack, now);
            return;
        }
        if name == CHAT_HISTORY_EVENT {
            self.reject(
                conn,
                close::INVALID_PAYLOAD,
                format!("{CHAT_HISTORY_EVENT:?} is reserved for the server"),
                now,
            );
            return;
        }
        let sender_name = self.display_name(conn);
        let at_ms = now.unix_ms;
        let (frame, target) = if name == CHAT_EVENT {
            let Some(text) = value
                .get("text")
                .and_then(|t| t.as_str())
                .filter(|t| !t.trim().is_empty())
            else {
                self.reject(
                    conn,
                    close::INVALID_PAYLOAD,
                    "a chat message needs a non-empty \"text\"".into(),
                    now,
                );
                return;
            };
            let limit = self.config.max_chat_message_bytes;
            if text.len() > limit {
                let message = format!("a chat message holds at most {limit} bytes of text");
                self.refuse_event(conn, close::MESSAGE_TOO_BIG, &message, ack, now);
                return;
            }
            let record = serde_json::json!({ "user": sender_name, "text": text, "at_ms": at_ms, "sender": conn }).to_string();
            if let Some(refusal) = self.over_size_limit(record.len() as u64) {
                self.refuse_event(conn, close::DOCUMENT_TOO_LARGE, &refusal, ack, now);
                return;
            }
            self.outputs.push_back(Output::AppendChat {
                record: record.clone(),
            });
            let frame = Ext::Event {
                name,
                payload: &record,
                sender: conn,
                sender_name: &sender_name,
                at_ms,
            }
            .encode();
            self.publish_event(name, &record, conn, &sender_name, at_ms);
            self.keep_chat(record);
            (frame, Target::ExtensionsBut(None))
        } else {
            let frame = Ext::Event {
                name,
                payload,
                sender: conn,
                sender_name: &sender_name,
                at_ms,
            }
            .encode();
            self.publish_event(name, payload, conn, &sender_name, at_ms);
            (frame, Target::ExtensionsBut(Some(conn)))
        };
        let delivered = self.send(target, &frame.into(), now);
        if ack != 0 {
            let frame = Ext::EmitAck { ack, delivered }.encode();
            self.send(Target::One(conn), &frame.into(), now);
        }
    }

    /// Adds a chat record to the recent history, dropping the oldest past
    /// its count or bytes.
    fn keep_chat(&mut self, record: String) {
        self.chat_bytes += record.len() as u64;
        self.chat.push_back(record);
        while self.chat.len() > self.config.chat_history
            || self.chat_bytes > self.config.chat_history_bytes
        {
            let Some(oldest) = self.chat.pop_front() else {
                break;
            };
            self.chat_bytes -= oldest.len() as u64;
        }
    }

    /// Refuses an event to its sender with a typed error (the member
    /// stays); an ack it asked for says nobody received it.
    fn refuse_event(&mut self, conn: ConnId, code: u16, message: &str, ack: u64, now: Now) {
        let error = Ext::Error {
            code: u64::from(code),
            message,
        };
        self.send(Target::One(conn), &error.encode().into(), now);
        if ack != 0 {
            let frame = Ext::EmitAck { ack, delivered: 0 }.encode();
            self.send(Target::One(conn), &frame.into(), now);
        }
    }

    fn can_write(&self, conn: ConnId) -> bool {
        self.members.get(&conn).is_some_and(|m| m.can_write)
    }

    /// An update from a read-only connection: never applied, relayed or
    /// stored. The connection stays open (it may watch and set its own
    /// presence); it is told once, as a typed error or, for stock clients,
    /// y-protocols' permission-denied message. An update that holds nothing
    /// new (the sync step 2 every client sends on connect) is not an attempt.
    fn refuse_read_only(&mut self, conn: ConnId, update: &[u8], now: Now) {
        let State::Ready { document, .. } = &self.state else {
            return;
        };
        if document.is_known(update) {
            // Nothing new: an ordinary message, acknowledged like any other.
            self.acknowledge(conn, now);
            return;
        }
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        // Counted like every update message (the client numbers them all),
        // and nothing from it on is ever acknowledged on this connection:
        // a later `Saved` would claim the refused edits too.
        member.update_messages += 1;
        member.refused_from.get_or_insert(member.update_messages);
        self.metrics.rejected_inputs.inc();
        if std::mem::replace(&mut member.told_read_only, true) {
            return;
        }
        let reason = "read-only access: your changes are not saved";
        warn!(conn, "refusing an update from a read-only connection");
        let frame = if member.extensions {
            Ext::Error {
                code: u64::from(close::FORBIDDEN),
                message: reason,
            }
            .encode()
        } else {
            Message::PermissionDenied(reason).encode()
        };
        self.send(Target::One(conn), &frame.into(), now);
    }

    /// A connection's user name, from its presence (`user.name`, the
    /// y-protocols convention), or "anonymous".
    fn display_name(&self, conn: ConnId) -> String {
        self.awareness
            .clients_of(conn)
            .filter_map(|client| self.awareness.state(client))
            .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .find_map(|v| {
                v.pointer("/user/name")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "anonymous".to_owned())
    }
}

/// What Quire members are told when the store stops confirming writes:
/// their edits are kept (in the room and in their tab) but not on disk, so
/// no `Saved` comes until it resumes.
fn stalled_frame() -> Bytes {
    Ext::Error {
        code: u64::from(SAVES_STALLED),
        message: "the server cannot save changes right now: its storage is not confirming writes; \
                  your edits are kept, keep this tab open",
    }
    .encode()
    .into()
}

/// Pops the `(number, needed)` pairs at the front of `queue` whose
/// `needed` is at most `reached`; returns the last number popped.
pub(crate) fn pop_settled(queue: &mut VecDeque<(u64, u64)>, reached: u64) -> Option<u64> {
    let mut last = None;
    while let Some(&(number, needed)) = queue.front() {
        if needed > reached {
            break;
        }
        last = Some(number);
        queue.pop_front();
    }
    last
}
