//! One live document: a task (actor) that owns the yrs document, the
//! presence table and the list of connections, and is the only code that
//! changes the document or appends to its log.
//!
//! Connections and the HTTP API talk to it through a [`RoomHandle`] over a
//! bounded channel, so a room processes one message at a time and needs no
//! lock. The path of one update:
//!
//! 1. a connection decodes a frame into an [`Inbound`] and sends it here;
//! 2. [`Document::apply`] integrates it and yields the part that was new;
//! 3. that delta is appended to the store (visible at once, durable after the
//!    next group commit);
//! 4. the delta is encoded once and queued to every other member.
//!
//! A member whose outbound queue is full is cut off with
//! [`close::TOO_SLOW`]: it reconnects and resyncs by state vector, so no
//! update is ever silently dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::VecDeque;

use bytes::Bytes;
use quire_protocol::ext::{CHAT_EVENT, CHAT_HISTORY_EVENT, Ext};
use quire_protocol::{AwarenessTable, ClientId, DocName, Message, SyncMessage, close};
use quire_storage::{Committed, DocStore, Seq, StoreError, StoredDoc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tracing::{debug, error, info, warn};

use crate::document::{Applied, Document, DocumentError};
use crate::items::Footprint;
use crate::rooms::Rooms;
use crate::unix_ms;

/// Identifies one WebSocket connection for the lifetime of the process.
pub type ConnId = u64;

/// Commands a room accepts. Capacity of the channel bounds how far a busy
/// room can fall behind before senders wait.
pub const ROOM_CHANNEL_CAPACITY: usize = 256;

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

/// The two queues a connection hands to the room when it joins.
#[derive(Debug, Clone)]
pub struct MemberChannels {
    /// Encoded frames to write to the socket, in order.
    pub frames: mpsc::Sender<Bytes>,
    /// A close to perform; capacity 1, and one close is all that matters.
    pub close: mpsc::Sender<Close>,
    /// Whether the client negotiated Quire's extensions (acks, events, ...).
    pub extensions: bool,
    /// Whether its token allows changing the document (read-only otherwise).
    pub can_write: bool,
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

enum Command {
    Join {
        conn: ConnId,
        member: MemberChannels,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    Leave {
        conn: ConnId,
    },
    Message {
        conn: ConnId,
        message: Inbound,
    },
    Snapshot {
        reply: oneshot::Sender<Result<Vec<u8>, RoomError>>,
    },
    Import {
        update: Bytes,
        reply: oneshot::Sender<Result<bool, RoomError>>,
    },
    Delete {
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
}

/// A cheap, cloneable way to reach a room.
#[derive(Clone)]
pub struct RoomHandle {
    /// The room's mailbox.
    tx: mpsc::Sender<Command>,
    /// Connections in the room, kept by the room, read by `GET /api/docs`.
    members: Arc<AtomicUsize>,
}

impl RoomHandle {
    pub fn members(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RoomError>>) -> Command,
    ) -> Result<T, RoomError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| RoomError::Gone)?;
        answer.await.map_err(|_| RoomError::Gone)?
    }

    /// Adds a connection; the room then sends it sync step 1 and awareness.
    pub async fn join(&self, conn: ConnId, member: MemberChannels) -> Result<(), RoomError> {
        self.request(|reply| Command::Join {
            conn,
            member,
            reply,
        })
        .await
    }

    /// Removes a connection (idempotent).
    pub async fn leave(&self, conn: ConnId) {
        let _ = self.tx.send(Command::Leave { conn }).await;
    }

    /// Delivers a client message. Waits while the room is busy: a fast
    /// writer is slowed down instead of queueing without bound.
    pub async fn deliver(&self, conn: ConnId, message: Inbound) -> Result<(), RoomError> {
        self.tx
            .send(Command::Message { conn, message })
            .await
            .map_err(|_| RoomError::Gone)
    }

    /// The whole document as one Yjs update.
    pub async fn snapshot(&self) -> Result<Vec<u8>, RoomError> {
        self.request(|reply| Command::Snapshot { reply }).await
    }

    /// Merges an update; `Ok(false)` if it held nothing new.
    pub async fn import(&self, update: Bytes) -> Result<bool, RoomError> {
        self.request(|reply| Command::Import { update, reply })
            .await
    }

    /// Closes every connection with 4404 and deletes the stored document.
    pub async fn delete(&self) -> Result<(), RoomError> {
        self.request(|reply| Command::Delete { reply }).await
    }
}

/// How much a member's dropped incomplete updates may carry, in clients
/// plus deleted ranges, before it is cut off (see `Member::ahead`).
const MAX_AHEAD_ENTRIES: usize = 65_536;

/// One member of the room.
struct Member {
    channels: MemberChannels,
    /// Awareness client ids this connection announced, removed when it leaves.
    clients: HashSet<ClientId>,
    /// Update messages (step 2 and update) received, numbered from 1: the
    /// numbers `Saved` acknowledgements refer to.
    update_messages: u64,
    /// (message number, storage ticket that makes it durable), oldest first.
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
}

/// Where the room's document stands.
enum State {
    /// Loaded and in sync with storage.
    Ready {
        document: Document,
        /// Entries in the stored log (compaction leaves one).
        log_len: u64,
        /// Key of the newest stored entry; the compaction boundary.
        last_seq: Seq,
        /// Ticket of the newest append, for the flush on eviction.
        last_ticket: u64,
        /// Estimated encoded size (stored log bytes), for the size limit.
        bytes: u64,
    },
    /// Loading or storing failed. The room serves nobody and writes nothing
    /// until it is evicted; the next join loads again.
    Failed(String),
}

/// Who receives a frame.
#[derive(Clone, Copy)]
enum Target {
    One(ConnId),
    AllBut(Option<ConnId>),
    /// Members that negotiated the extensions, but one.
    ExtensionsBut(Option<ConnId>),
}

pub(crate) struct Room {
    name: DocName,
    rooms: Rooms,
    store: Arc<dyn DocStore>,
    rx: mpsc::Receiver<Command>,
    members: HashMap<ConnId, Member>,
    /// Mirror of `members.len()` for readers outside the task.
    member_count: Arc<AtomicUsize>,
    awareness: AwarenessTable,
    state: State,
    /// Group-commit progress, to acknowledge saves.
    durability: watch::Receiver<Committed>,
    /// Recent chat messages (JSON), oldest first, sent to joining clients.
    chat: VecDeque<String>,
    /// The log rewrite in progress, if any (one at a time).
    compaction: Option<tokio::task::JoinHandle<()>>,
    /// When the last member left; the room is evicted a grace period later.
    empty_since: Option<Instant>,
    /// Origin of the room's millisecond clock for awareness timestamps.
    epoch: Instant,
    /// Set once the room has left the registry (document deleted): the task ends.
    closed: bool,
}

impl Room {
    /// Creates the room and its handle; the caller spawns [`Room::run`].
    pub(crate) fn new(name: DocName, rooms: Rooms) -> (Room, RoomHandle) {
        let (tx, rx) = mpsc::channel(ROOM_CHANNEL_CAPACITY);
        let member_count = Arc::new(AtomicUsize::new(0));
        let handle = RoomHandle {
            tx,
            members: member_count.clone(),
        };
        let room = Room {
            durability: rooms.store().durability(),
            chat: VecDeque::new(),
            compaction: None,
            name,
            store: rooms.store().clone(),
            rooms,
            rx,
            members: HashMap::new(),
            member_count,
            awareness: AwarenessTable::new(),
            state: State::Failed("not loaded yet".into()),
            empty_since: Some(Instant::now()),
            epoch: Instant::now(),
            closed: false,
        };
        (room, handle)
    }

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Load before reading the mailbox: no sync message is answered from
        // an empty document while the real one is still on disk.
        self.state = load(&self.store, &self.name).await;
        self.chat = load_chat(&self.store, &self.name, self.rooms.config().chat_history).await;
        let config = self.rooms.config().clone();
        let mut sweep =
            interval((config.awareness_timeout / 6).max(std::time::Duration::from_millis(50)));
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let evict_at = self.empty_since.map(|t| t + config.room_grace);
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(command) => {
                        self.handle(command).await;
                        if self.closed {
                            break;
                        }
                    }
                    None => break,
                },
                _ = sweep.tick() => self.sweep_awareness(config.awareness_timeout.as_millis() as u64),
                Ok(()) = self.durability.changed(), if self.saves_pending() => self.send_saves(),
                _ = sleep_until(evict_at.unwrap_or_else(Instant::now)), if evict_at.is_some() => {
                    self.finish_storage().await;
                    if self.rooms.evict_if_idle(&self.name, &mut self.rx, self.members.is_empty()) {
                        break;
                    }
                    // A command arrived meanwhile: serve it, try again later.
                    self.empty_since = self.members.is_empty().then(Instant::now);
                }
                Ok(()) = shutdown.changed() => {
                    self.close_all(Close::new(close::GOING_AWAY, "server is shutting down"));
                    self.finish_storage().await;
                    self.rooms.evict(&self.name, &mut self.rx);
                    break;
                }
            }
        }
        // Whatever was still queued is answered with `Gone` as it drops.
        while self.rx.try_recv().is_ok() {}
        debug!("room closed");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join {
                conn,
                member,
                reply,
            } => {
                let _ = reply.send(self.join(conn, member));
            }
            Command::Leave { conn } => self.leave(conn),
            Command::Message { conn, message } => {
                if self.members.contains_key(&conn) {
                    self.on_message(conn, message).await;
                }
            }
            Command::Snapshot { reply } => {
                let state = match &self.state {
                    State::Ready { document, .. } => document.encode_state(),
                    State::Failed(reason) => {
                        let _ = reply.send(Err(RoomError::Unavailable(reason.clone())));
                        return;
                    }
                };
                if state.is_err() {
                    error!("encoding the document failed; reloading it from storage");
                    self.reload().await;
                }
                let _ = reply.send(state.map_err(|e| RoomError::Unavailable(e.to_string())));
            }
            Command::Import { update, reply } => {
                let result = self.apply_update(None, &update).await;
                let _ = reply.send(result);
            }
            Command::Delete { reply } => {
                let result = self.delete().await;
                if result.is_ok() {
                    // A deleted document starts afresh in a new room.
                    self.rooms.evict(&self.name, &mut self.rx);
                    self.closed = true;
                }
                let _ = reply.send(result);
            }
        }
    }

    fn join(&mut self, conn: ConnId, channels: MemberChannels) -> Result<(), RoomError> {
        let State::Ready {
            document, bytes, ..
        } = &self.state
        else {
            let State::Failed(reason) = &self.state else {
                unreachable!()
            };
            return Err(RoomError::Unavailable(reason.clone()));
        };
        let limit = self.rooms.config().max_document_bytes;
        if *bytes > limit {
            return Err(RoomError::TooLarge(format!(
                "the document is {bytes} bytes, over this server's limit of {limit}"
            )));
        }
        let extensions = channels.extensions;
        let step1 =
            Bytes::from(Message::Sync(SyncMessage::Step1(&document.state_vector())).encode());
        self.members.insert(
            conn,
            Member {
                channels,
                clients: HashSet::new(),
                update_messages: 0,
                pending_saves: VecDeque::new(),
                told_read_only: false,
                refused_from: None,
                ahead: None,
            },
        );
        self.member_count
            .store(self.members.len(), Ordering::Relaxed);
        self.empty_since = None;
        self.send(Target::One(conn), step1);
        if !self.awareness.is_empty() {
            let states = Bytes::from(Message::Awareness(&self.awareness.encode_all()).encode());
            self.send(Target::One(conn), states);
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
                at_ms: unix_ms(),
            }
            .encode();
            self.send(Target::One(conn), frame.into());
        }
        debug!(conn, members = self.members.len(), "joined");
        Ok(())
    }

    fn leave(&mut self, conn: ConnId) {
        let Some(member) = self.members.remove(&conn) else {
            return;
        };
        self.member_count
            .store(self.members.len(), Ordering::Relaxed);
        let removed = self.awareness.remove(member.clients, self.now_ms());
        self.announce_awareness(None, &removed);
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        debug!(conn, members = self.members.len(), "left");
    }

    async fn on_message(&mut self, conn: ConnId, message: Inbound) {
        match message {
            Inbound::StateVector(sv) => {
                let State::Ready { document, .. } = &self.state else {
                    return;
                };
                match document.diff(&sv) {
                    Ok(diff) => {
                        let frame = Message::Sync(SyncMessage::Step2(&diff)).encode();
                        self.send(Target::One(conn), frame.into());
                    }
                    Err(err) => self.reject(conn, close::INVALID_PAYLOAD, err.to_string()),
                }
            }
            Inbound::Update(update) if !self.can_write(conn) => {
                self.refuse_read_only(conn, &update)
            }
            Inbound::SetWritable(can_write) => {
                if let Some(member) = self.members.get_mut(&conn) {
                    member.channels.can_write = can_write;
                }
            }
            Inbound::Update(update) => match self.apply_update(Some(conn), &update).await {
                Ok(_) => self.acknowledge(conn),
                Err(RoomError::Incomplete { carries, reason }) => {
                    self.ask_for_missing(conn, carries, &reason)
                }
                Err(err @ (RoomError::InvalidUpdate(_) | RoomError::TooLarge(_))) => {
                    let Close { code, reason } = err.close();
                    self.reject(conn, code, reason);
                }
                // A storage failure already closed everyone.
                Err(_) => {}
            },
            Inbound::Emit { name, payload, ack } => self.on_emit(conn, &name, &payload, ack),
            Inbound::Awareness(update) => {
                let now = self.now_ms();
                match self.awareness.apply(&update, now) {
                    Ok(change) => {
                        if let Some(member) = self.members.get_mut(&conn) {
                            member.clients.extend(
                                change
                                    .added
                                    .iter()
                                    .chain(&change.updated)
                                    .chain(&change.renewed),
                            );
                            for id in &change.removed {
                                member.clients.remove(id);
                            }
                        }
                        let accepted: Vec<ClientId> = change.accepted().collect();
                        self.announce_awareness(Some(conn), &accepted);
                    }
                    Err(err) => self.reject(
                        conn,
                        close::INVALID_PAYLOAD,
                        format!("invalid awareness update: {err}"),
                    ),
                }
            }
            Inbound::QueryAwareness => {
                let states = Message::Awareness(&self.awareness.encode_all()).encode();
                self.send(Target::One(conn), states.into());
            }
        }
    }

    /// Applies, stores and relays one update. `origin` is the connection it
    /// came from (not echoed back), `None` for an import.
    async fn apply_update(
        &mut self,
        origin: Option<ConnId>,
        update: &[u8],
    ) -> Result<bool, RoomError> {
        let limit = self.rooms.config().max_document_bytes;
        let State::Ready {
            document, bytes, ..
        } = &mut self.state
        else {
            let State::Failed(reason) = &self.state else {
                unreachable!()
            };
            return Err(RoomError::Unavailable(reason.clone()));
        };
        // The raw size bounds what is new (sync sends differences, so the
        // two are close); an update holding nothing new never counts.
        if *bytes + update.len() as u64 > limit && !document.is_known(update) {
            return Err(RoomError::TooLarge(format!(
                "this update would take the document past this server's limit of {limit} bytes"
            )));
        }
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
        let Applied { delta, held_back } = match applied {
            Ok(applied) => applied,
            Err(DocumentError::Poisoned) => {
                // yrs failed half-way: the in-memory document is suspect.
                // Storage only holds what applied cleanly, so rebuild from it.
                error!("an update left the document half-changed; reloading it from storage");
                self.reload().await;
                return Err(RoomError::InvalidUpdate(
                    DocumentError::Poisoned.to_string(),
                ));
            }
            Err(DocumentError::Incomplete { carries, reason }) => {
                return Err(RoomError::Incomplete { carries, reason });
            }
            Err(err) => return Err(RoomError::InvalidUpdate(err.to_string())),
        };
        // What yrs holds back is in no delta; store the update as it came
        // so that an acknowledged update is on disk whole.
        if delta.is_none() && !held_back {
            return Ok(false);
        }
        for entry in delta
            .iter()
            .map(Vec::as_slice)
            .chain(held_back.then_some(update))
        {
            self.store_entry(entry)?;
        }
        let Some(delta) = delta else {
            return Ok(true);
        };
        self.rooms.metrics().updates_in.inc();
        let frame = Bytes::from(Message::Sync(SyncMessage::Update(&delta)).encode());
        self.send(Target::AllBut(origin), frame);
        self.compact_if_long(self.rooms.config().compact_after)
            .await;
        Ok(true)
    }

    /// Appends one entry to the document's log and accounts for it. A
    /// storage failure puts the room out of service (the document would
    /// otherwise run ahead of disk).
    fn store_entry(&mut self, entry: &[u8]) -> Result<(), RoomError> {
        match self.store.append(self.name.as_str(), entry) {
            Ok(appended) => {
                let State::Ready {
                    log_len,
                    last_seq,
                    last_ticket,
                    bytes,
                    ..
                } = &mut self.state
                else {
                    unreachable!("only a ready room stores")
                };
                *bytes += entry.len() as u64;
                *log_len += 1;
                *last_seq = appended.seq;
                *last_ticket = appended.ticket;
                Ok(())
            }
            Err(err) => {
                // Clients keep their copy and resync after reconnecting.
                let reason = format!("could not store an update: {err}");
                self.fail(reason.clone());
                Err(RoomError::Unavailable(reason))
            }
        }
    }

    /// Rebuilds the document from storage after yrs failed on it.
    async fn reload(&mut self) {
        self.state = load(&self.store, &self.name).await;
        if let State::Failed(reason) = &self.state {
            self.fail(reason.clone());
        }
    }

    async fn delete(&mut self) -> Result<(), RoomError> {
        self.close_all(Close::new(
            close::DOCUMENT_DELETED,
            "the document was deleted",
        ));
        let store = self.store.clone();
        let name = self.name.to_string();
        tokio::task::spawn_blocking(move || store.delete(&name))
            .await
            .map_err(|e| RoomError::Unavailable(e.to_string()))?
            .map_err(|e| RoomError::Unavailable(e.to_string()))?;
        info!("document deleted");
        Ok(())
    }

    /// Rewrites the stored log as one state update once it is `threshold` long.
    async fn compact_if_long(&mut self, threshold: u64) {
        let State::Ready {
            document,
            log_len,
            last_seq,
            bytes,
            ..
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
        // One rewrite at a time: the previous one almost always finished
        // long ago; if not, wait for it rather than let the log grow.
        if let Some(running) = self.compaction.take() {
            let _ = running.await;
        }
        // The rewrite runs off the room's task, so members do not wait for
        // it: it only touches entries up to `last_seq`, while new appends
        // land after it, and every step of it leaves a log that merges to the
        // same document.
        debug!(entries = *log_len, bytes = state.len(), "compacting");
        *log_len = 1;
        *bytes = state.len() as u64;
        let store = self.store.clone();
        let name = self.name.to_string();
        let upto = *last_seq;
        self.compaction = Some(tokio::task::spawn_blocking(move || {
            if let Err(err) = store.compact(&name, upto, &state) {
                // An optimisation only: the log is still whole.
                warn!(%err, "compaction failed");
            }
        }));
    }

    /// Before the room goes away: compact a log that grew, and wait until
    /// every update it stored is on disk.
    async fn finish_storage(&mut self) {
        if let Some(running) = self.compaction.take() {
            let _ = running.await;
        }
        self.compact_if_long(2).await;
        if let Some(running) = self.compaction.take() {
            let _ = running.await;
        }
        let State::Ready { last_ticket, .. } = self.state else {
            return;
        };
        let mut durability = self.store.durability();
        let flushed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            durability.wait_for(|c| c.ticket >= last_ticket),
        )
        .await;
        if !matches!(flushed, Ok(Ok(_))) {
            warn!("updates were not confirmed on disk in time");
        }
    }

    fn sweep_awareness(&mut self, timeout_ms: u64) {
        let removed = self.awareness.sweep(self.now_ms(), timeout_ms);
        if removed.is_empty() {
            return;
        }
        for member in self.members.values_mut() {
            for id in &removed {
                member.clients.remove(id);
            }
        }
        debug!(?removed, "awareness timed out");
        self.announce_awareness(None, &removed);
    }

    /// Relays the current entries of `clients` to everyone but `origin`.
    fn announce_awareness(&mut self, origin: Option<ConnId>, clients: &[ClientId]) {
        if clients.is_empty() {
            return;
        }
        let update = self.awareness.encode(clients.iter().copied());
        let frame = Bytes::from(Message::Awareness(&update).encode());
        self.send(Target::AllBut(origin), frame);
    }

    /// Queues a frame; members whose queue is full are cut off. Returns
    /// how many members it was queued for.
    fn send(&mut self, target: Target, frame: Bytes) -> u64 {
        let mut too_slow = Vec::new();
        let mut delivered = 0;
        let metrics = self.rooms.metrics().clone();
        let recipients = self.members.iter().filter(|&(&conn, member)| match target {
            Target::One(one) => conn == one,
            Target::AllBut(origin) => Some(conn) != origin,
            Target::ExtensionsBut(origin) => Some(conn) != origin && member.channels.extensions,
        });
        for (&conn, member) in recipients {
            match member.channels.frames.try_send(frame.clone()) {
                Ok(()) => {
                    metrics.record_out(frame.len());
                    delivered += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => too_slow.push(conn),
                // The connection is ending; its Leave is on the way.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        for conn in too_slow {
            warn!(conn, "outbound queue full; cutting the connection off");
            self.rooms.metrics().slow_consumers_cut.inc();
            self.remove(
                conn,
                Close::new(
                    close::TOO_SLOW,
                    "connection too slow to keep up; reconnect to resync",
                ),
            );
        }
        delivered
    }

    /// Closes one connection for bad input.
    fn reject(&mut self, conn: ConnId, code: u16, reason: String) {
        warn!(conn, code, %reason, "rejecting input");
        self.rooms.metrics().rejected_inputs.inc();
        self.remove(conn, Close::new(code, reason));
    }

    /// Removes a member and tells its connection to close.
    fn remove(&mut self, conn: ConnId, close: Close) {
        if let Some(member) = self.members.get(&conn) {
            let _ = member.channels.close.try_send(close);
        }
        self.leave(conn);
    }

    fn close_all(&mut self, close: Close) {
        for member in self.members.values() {
            let _ = member.channels.close.try_send(close.clone());
        }
        let conns: Vec<ConnId> = self.members.keys().copied().collect();
        for conn in conns {
            self.leave(conn);
        }
    }

    /// Puts the room out of service after a storage failure.
    fn fail(&mut self, reason: String) {
        error!(%reason, "document unavailable");
        self.close_all(Close::new(
            close::INTERNAL_ERROR,
            "document unavailable; reconnect later",
        ));
        self.state = State::Failed(reason);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// After an update message from `conn` was merged (or found to hold
    /// nothing new): acknowledge it once everything the room stored so far
    /// is on disk, which covers whatever the message carried.
    fn acknowledge(&mut self, conn: ConnId) {
        let (required, document) = match &self.state {
            State::Ready {
                last_ticket,
                document,
                ..
            } => (*last_ticket, document),
            State::Failed(_) => return,
        };
        let durable = self.durability.borrow().ticket;
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        member.update_messages += 1;
        if !member.channels.extensions || member.refused_from.is_some() {
            return;
        }
        if let Some((_, carried)) = &member.ahead {
            if !document.holds(carried) {
                return;
            }
            member.ahead = None;
        }
        let number = member.update_messages;
        if required <= durable && member.pending_saves.is_empty() {
            let frame = Ext::Saved { through: number }.encode();
            self.send(Target::One(conn), frame.into());
        } else {
            member.pending_saves.push_back((number, required));
        }
    }

    /// An update message from `conn` referred to blocks the document does
    /// not have: count it, hold back `Saved` until the document has them,
    /// and ask the client for everything the room lacks. Its answer (sync
    /// step 2) carries the dropped message's content along with what it
    /// referred to.
    fn ask_for_missing(&mut self, conn: ConnId, carries: Footprint, reason: &str) {
        let State::Ready { document, .. } = &self.state else {
            return;
        };
        let step1 = Message::Sync(SyncMessage::Step1(&document.state_vector())).encode();
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
            );
            return;
        }
        self.send(Target::One(conn), step1.into());
    }

    fn saves_pending(&self) -> bool {
        self.members.values().any(|m| !m.pending_saves.is_empty())
    }

    /// Sends `Saved` for every message the last flush made durable.
    fn send_saves(&mut self) {
        let durable = self.durability.borrow_and_update().ticket;
        let mut acks = Vec::new();
        for (&conn, member) in &mut self.members {
            let mut through = None;
            while let Some(&(number, ticket)) = member.pending_saves.front() {
                if ticket > durable {
                    break;
                }
                through = Some(number);
                member.pending_saves.pop_front();
            }
            if let Some(through) = through {
                acks.push((conn, through));
            }
        }
        for (conn, through) in acks {
            self.send(Target::One(conn), Ext::Saved { through }.encode().into());
        }
    }

    /// A named event: relayed to the other Quire clients; `chat` is also
    /// stamped with the sender's name and the server time, stored, and sent
    /// back to the sender so everyone shows the same message.
    fn on_emit(&mut self, conn: ConnId, name: &str, payload: &str, ack: u64) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
            self.reject(
                conn,
                close::INVALID_PAYLOAD,
                format!("payload of event {name:?} is not JSON"),
            );
            return;
        };
        if name == CHAT_EVENT && !self.can_write(conn) {
            let error = Ext::Error {
                code: u64::from(close::FORBIDDEN),
                message: "read-only access: chat messages are not sent",
            };
            self.send(Target::One(conn), error.encode().into());
            return;
        }
        if name == CHAT_HISTORY_EVENT {
            self.reject(
                conn,
                close::INVALID_PAYLOAD,
                format!("{CHAT_HISTORY_EVENT:?} is reserved for the server"),
            );
            return;
        }
        let sender_name = self.display_name(conn);
        let at_ms = unix_ms();
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
                );
                return;
            };
            let record = serde_json::json!({ "user": sender_name, "text": text, "at_ms": at_ms, "sender": conn }).to_string();
            if let Err(err) = self
                .store
                .append_chat(self.name.as_str(), record.as_bytes())
            {
                warn!(%err, "could not store a chat message");
            }
            self.chat.push_back(record.clone());
            while self.chat.len() > self.rooms.config().chat_history {
                self.chat.pop_front();
            }
            let frame = Ext::Event {
                name,
                payload: &record,
                sender: conn,
                sender_name: &sender_name,
                at_ms,
            }
            .encode();
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
            (frame, Target::ExtensionsBut(Some(conn)))
        };
        let delivered = self.send(target, frame.into());
        if ack != 0 {
            self.send(
                Target::One(conn),
                Ext::EmitAck { ack, delivered }.encode().into(),
            );
        }
    }

    fn can_write(&self, conn: ConnId) -> bool {
        self.members
            .get(&conn)
            .is_some_and(|m| m.channels.can_write)
    }

    /// An update from a read-only connection: never applied, relayed or
    /// stored. The connection stays open (it may watch and set its own
    /// presence); it is told once, as a typed error or, for stock clients,
    /// y-protocols' permission-denied message. An update that holds nothing
    /// new (the sync step 2 every client sends on connect) is not an attempt.
    fn refuse_read_only(&mut self, conn: ConnId, update: &[u8]) {
        let State::Ready { document, .. } = &self.state else {
            return;
        };
        if document.is_known(update) {
            // Nothing new: an ordinary message, acknowledged like any other.
            self.acknowledge(conn);
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
        self.rooms.metrics().rejected_inputs.inc();
        if std::mem::replace(&mut member.told_read_only, true) {
            return;
        }
        let reason = "read-only access: your changes are not saved";
        warn!(conn, "refusing an update from a read-only connection");
        let frame = if member.channels.extensions {
            Ext::Error {
                code: u64::from(close::FORBIDDEN),
                message: reason,
            }
            .encode()
        } else {
            Message::PermissionDenied(reason).encode()
        };
        self.send(Target::One(conn), frame.into());
    }

    /// A connection's user name, from its presence (`user.name`, the
    /// y-protocols convention), or "anonymous".
    fn display_name(&self, conn: ConnId) -> String {
        self.members
            .get(&conn)
            .into_iter()
            .flat_map(|m| m.clients.iter())
            .filter_map(|&client| self.awareness.state(client))
            .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .find_map(|v| {
                v.pointer("/user/name")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "anonymous".to_owned())
    }
}

/// Recent chat messages of a document, oldest first.
async fn load_chat(store: &Arc<dyn DocStore>, name: &DocName, limit: usize) -> VecDeque<String> {
    let store = store.clone();
    let name = name.to_string();
    let records = tokio::task::spawn_blocking(move || store.recent_chat(&name, limit)).await;
    match records {
        Ok(Ok(records)) => records
            .into_iter()
            .filter_map(|r| String::from_utf8(r).ok())
            .collect(),
        Ok(Err(err)) => {
            warn!(%err, "could not load the chat history");
            VecDeque::new()
        }
        Err(_) => VecDeque::new(),
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.rooms.metrics().rooms.dec();
    }
}

/// Reads the document from storage and merges its log, off the async threads.
async fn load(store: &Arc<dyn DocStore>, name: &DocName) -> State {
    let store = store.clone();
    let name = name.to_string();
    let loaded = tokio::task::spawn_blocking(move || -> Result<State, String> {
        let stored = store.load(&name).map_err(|e: StoreError| e.to_string())?;
        let StoredDoc { updates, last_seq } = stored.unwrap_or_default();
        let document = Document::from_updates(updates.iter().map(Vec::as_slice))
            .map_err(|e| format!("stored log does not merge: {e}"))?;
        Ok(State::Ready {
            document,
            log_len: updates.len() as u64,
            last_seq,
            last_ticket: 0,
            bytes: updates.iter().map(|u| u.len() as u64).sum(),
        })
    })
    .await;
    match loaded {
        Ok(Ok(state)) => state,
        Ok(Err(reason)) => {
            error!(%reason, "could not load document");
            State::Failed(reason)
        }
        Err(join) => {
            error!(%join, "document load panicked");
            State::Failed("loading the document failed".into())
        }
    }
}
