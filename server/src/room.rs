//! The tokio shell around one live document's [`RoomCore`]: a task (actor)
//! that owns the core, reads its mailbox, and carries out what the core
//! hands back. It is the only code that appends to the document's log.
//!
//! Connections and the HTTP API talk to it through a [`RoomHandle`] over a
//! bounded channel, so a room processes one command at a time and needs no
//! lock around its document. What the shell adds to the core:
//!
//! - **loading**: the stored log is read and merged off the async threads
//!   before the mailbox is read, so no sync message is answered from an
//!   empty document while the real one is still on disk;
//! - **member queues**: each member's [`MemberChannels`] become the core's
//!   [`MemberQueue`] (a full queue cuts that member off with 4408);
//! - **storage**: [`Output::Append`] is carried out at once, on the room's
//!   task (see ARCHITECTURE.md, "Rooms", for why and what it costs);
//!   compaction runs on a blocking thread (in cluster mode, where it may
//!   merge other nodes' entries, on a document thread); the store's
//!   durability watch is turned into [`RoomCore::durable`];
//! - **time**: every input carries a [`Now`] read from tokio's clock
//!   (monotonic, since the room started) and the wall clock; the core says
//!   when it next needs [`RoomCore::tick`];
//! - **leaving**: on eviction, shutdown or deletion it finishes storage
//!   (publishing what became durable meanwhile) and leaves the registry
//!   through [`RoomContext::registry`];
//! - **other nodes** (cluster mode): the room follows its document on the
//!   [`Fanout`] *before* loading, hands the core's [`Output::Publish`] to
//!   it, feeds what other nodes publish to [`RoomCore::remote`], and on a
//!   [`Incoming::Resync`] reads the store past the last seq it read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quire_protocol::DocName;
use quire_storage::{Committed, DocStore, Seq, StoredDoc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, error, info, warn};

use crate::config::Config;
use crate::document::Document;
use crate::fanout::{Fanout, Feed, Incoming, NodeKey, NodeMessage};
use crate::limits::RoomTime;
use crate::memory::DocumentThreads;
use crate::metrics::Metrics;
use crate::outbox::{CloseSender, OutboxSender};
use crate::room_core::pop_settled;
pub use crate::room_core::{
    Answer, Close, ConnId, Inbound, Joining, MemberQueue, Now, Output, Pushed, Restored, RoomCore,
    RoomError,
};
use crate::unix_ms;

/// Commands a room accepts. Capacity of the channel bounds how far a busy
/// room can fall behind before senders wait.
pub const ROOM_CHANNEL_CAPACITY: usize = 256;

/// An input whose work grows with this many bytes (an update this large,
/// a diff or snapshot of a document this large) runs under
/// `block_in_place`: see [`Room::heavy`].
const HEAVY_BYTES: u64 = 64 * 1024;

/// How long a leaving room waits for its last writes to reach the disk.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a room waits before retrying a resync the store refused.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// The room's one timer, moved only when the core's deadline moves.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The core deadline it is set for ([`RoomCore::deadline`]).
    at: u64,
}

/// What a room needs from the server: handed over by the registry when it
/// opens the room, so the room knows nothing of the registry itself.
#[derive(Clone)]
pub struct RoomContext {
    /// Where the document's log and chat are read and appended.
    pub store: Arc<dyn DocStore>,
    /// The limits and timings the core applies.
    pub config: Arc<Config>,
    /// Counters the core and the member queues update.
    pub metrics: Arc<Metrics>,
    /// How the room takes itself out of the registry.
    pub registry: Arc<dyn Departure>,
    /// The other nodes serving documents (a no-op on a single node).
    pub fanout: Arc<dyn Fanout>,
    /// Where the document is loaded: a thread that ends with the load.
    pub documents: DocumentThreads,
}

/// The registry's side of a room leaving it (`rooms.rs` implements it).
pub trait Departure: Send + Sync {
    /// Under the registry's lock: removes `name` if `still_idle` (called
    /// under that lock) says so. Returns whether it was removed.
    fn leave_if(&self, name: &DocName, still_idle: &mut dyn FnMut() -> bool) -> bool;
}

/// The two queues a connection hands to the room when it joins.
#[derive(Debug, Clone)]
pub struct MemberChannels {
    /// Encoded frames to write to the socket, in order (bounded in bytes).
    pub frames: OutboxSender,
    /// A close to perform (the queue's close slot: the first one wins).
    pub close: CloseSender,
    /// Whether the client negotiated Quire's extensions (acks, events, ...).
    pub extensions: bool,
    /// Whether its token allows changing the document (read-only otherwise).
    pub can_write: bool,
}

/// A member's queues as the core sees them.
pub struct Outbound {
    /// The connection's frame queue, bounded in bytes: full means too slow
    /// (it counts what it queues in the metrics).
    frames: OutboxSender,
    /// Where a close goes (the connection's writer sends it first).
    close: CloseSender,
    /// The room's [`Room::write_here`].
    write_here: Arc<AtomicBool>,
}

impl MemberQueue for Outbound {
    fn push(&mut self, frame: Bytes) -> Pushed {
        if self.write_here.load(Ordering::Relaxed) {
            self.frames.push(frame)
        } else {
            self.frames.push_for_connection(frame)
        }
    }

    fn push_answer(&mut self, answer: Answer, frame: Bytes) -> Pushed {
        self.frames.push_answer(answer, frame)
    }

    fn answer_pending(&self, answer: &Answer) -> bool {
        self.frames.answer_pending(answer)
    }

    fn close(&mut self, close: Close) {
        let _ = self.close.try_send(close);
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
        /// Where the room adds the time it spent on this message.
        cost: Arc<RoomTime>,
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

    /// Delivers a client message; the room adds the time it spends on it
    /// to `cost`. Waits while the room is busy: a fast writer is slowed
    /// down instead of queueing without bound.
    pub async fn deliver(
        &self,
        conn: ConnId,
        message: Inbound,
        cost: &Arc<RoomTime>,
    ) -> Result<(), RoomError> {
        let cost = cost.clone();
        self.tx
            .send(Command::Message {
                conn,
                message,
                cost,
            })
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

/// The room task's state around its core.
pub(crate) struct Room {
    name: DocName,
    ctx: RoomContext,
    core: RoomCore<Outbound>,
    rx: mpsc::Receiver<Command>,
    /// Mirror of the core's member count for readers outside the task.
    member_count: Arc<AtomicUsize>,
    /// Whether a frame for an idle member is written to its socket by this
    /// task at once (nothing else waits: neither the mailbox nor the other
    /// nodes' feed holds more) or left to the member's task (more waits: a
    /// fast stream's frames then go out gathered, a vectored write per
    /// wakeup of the member instead of a system call per frame). Shared
    /// with every member's [`Outbound`]; only this task touches it.
    write_here: Arc<AtomicBool>,
    /// Origin of `now` for the core.
    epoch: Instant,
    /// Group-commit progress of the store.
    durability: watch::Receiver<Committed>,
    /// (write number, store ticket) of appends not yet known durable.
    tickets: VecDeque<(u64, u64)>,
    /// Ticket of the newest append, for the flush before leaving.
    last_ticket: u64,
    /// Key of the newest stored entry; the compaction boundary.
    last_seq: Seq,
    /// The log rewrite in progress, if any (one at a time).
    compaction: Option<tokio::task::JoinHandle<()>>,
    /// The chat log's trim in progress, if any: one at a time (each keeps
    /// the newest records, so one that is skipped loses nothing), and
    /// waited for before the room goes, so no store work outlives it.
    chat_trim: Option<tokio::task::JoinHandle<()>>,
    /// Set once the room has left the registry: the task ends.
    closed: bool,
    /// The newest seq read from the store (load, resync): where a resync
    /// reads from, and the compaction bound in cluster mode.
    read_seq: Seq,
    /// Whether the document is known to be in the shared store: read from
    /// it, or an update arrived from another node (which publishes only
    /// what it committed). A resync that then finds no document means it
    /// was deleted elsewhere; without this a new document whose first
    /// writes are not committed yet would look deleted.
    known_stored: bool,
    /// When a resync the store refused is tried again.
    resync_at: Option<Instant>,
    /// The store read of a resync under way, off the room's task (a
    /// database that does not answer must not stop the room serving).
    resyncing: Option<tokio::task::JoinHandle<ResyncRead>>,
    /// Another resync was asked for while one was under way.
    resync_again: bool,
}

impl Room {
    /// Creates the room and its handle; the caller spawns [`Room::run`].
    pub(crate) fn new(name: DocName, ctx: RoomContext) -> (Room, RoomHandle) {
        let (tx, rx) = mpsc::channel(ROOM_CHANNEL_CAPACITY);
        let member_count = Arc::new(AtomicUsize::new(0));
        let handle = RoomHandle {
            tx,
            members: member_count.clone(),
        };
        let room = Room {
            core: RoomCore::new(ctx.config.clone(), ctx.metrics.clone()),
            durability: ctx.store.durability(),
            name,
            ctx,
            rx,
            member_count,
            write_here: Arc::new(AtomicBool::new(true)),
            epoch: Instant::now(),
            tickets: VecDeque::new(),
            last_ticket: 0,
            last_seq: 0,
            compaction: None,
            chat_trim: None,
            closed: false,
            read_seq: 0,
            known_stored: false,
            resync_at: None,
            resyncing: None,
            resync_again: false,
        };
        (room, handle)
    }

    /// The room's task: loads the document, then serves its mailbox, the
    /// other nodes' feed and its timers until it is evicted or shut down.
    /// Returns the document as the room ends, for the registry to drop
    /// where its memory goes back to the system.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Option<Document> {
        // Follow the other nodes before loading: what they publish from
        // here on comes through the feed, what came before is in the store.
        let mut feed = self.ctx.fanout.follow(&self.name).await;
        self.core.set_clustered(self.ctx.fanout.is_clustered());
        // Load before reading the mailbox: no sync message is answered from
        // an empty document while the real one is still on disk.
        let restored = self.load().await;
        let chat = load_chat(&self.ctx.store, &self.name, self.ctx.config.chat_history).await;
        let stored_before = self.core.loaded(restored, chat);
        self.await_ticket(stored_before);
        // Re-arming a timer takes the timer driver's lock; a busy room's
        // deadline moves only once per presence sweep.
        let mut timer = Timer {
            sleep: Box::pin(sleep_until(self.epoch)),
            at: 0,
        };
        loop {
            let deadline = self.core.deadline();
            if deadline != timer.at || timer.sleep.is_elapsed() {
                timer.at = deadline;
                let at = self.epoch + Duration::from_millis(deadline);
                timer.sleep.as_mut().reset(at);
            }
            self.write_here.store(true, Ordering::Relaxed);
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(command) => {
                        self.note_backlog(&feed);
                        self.handle(command).await
                    }
                    None => break,
                },
                _ = &mut timer.sleep => {
                    self.core.tick(self.now());
                    if self.carry_out().await {
                        self.try_to_leave().await;
                    }
                }
                Ok(()) = self.durability.changed(), if self.core.waits_for_disk() || self.core.publishes_pending() => self.feed_durability(),
                incoming = feed.recv() => {
                    self.note_backlog(&feed);
                    self.on_incoming(incoming).await
                }
                _ = sleep_until(self.resync_at.unwrap_or_else(Instant::now)), if self.resync_at.is_some() => self.resync(),
                read = async { self.resyncing.as_mut().expect("guarded").await }, if self.resyncing.is_some() => {
                    self.resyncing = None;
                    let deleted = self.resynced(read);
                    self.carry_out().await;
                    if deleted {
                        self.leave_deleted();
                    }
                }
                Ok(()) = shutdown.changed() => {
                    let now = self.now();
                    self.core.shutdown(now);
                    self.finish_storage().await;
                    let rx = &mut self.rx;
                    self.ctx.registry.leave_if(&self.name, &mut || {
                        rx.close();
                        true
                    });
                    break;
                }
            }
            self.member_count
                .store(self.core.member_count(), Ordering::Relaxed);
            if self.closed {
                break;
            }
        }
        // Whatever was still queued is answered with `Gone` as it drops.
        while self.rx.try_recv().is_ok() {}
        debug!("room closed");
        self.core.take_document()
    }

    /// Sets [`Self::write_here`] for what is about to be handled: direct
    /// writes only when nothing else waits for this task.
    fn note_backlog(&self, feed: &Feed) {
        let idle = self.rx.is_empty() && feed.is_empty();
        self.write_here.store(idle, Ordering::Relaxed);
    }

    fn now(&self) -> Now {
        Now {
            ms: self.epoch.elapsed().as_millis() as u64,
            unix_ms: unix_ms(),
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join {
                conn,
                member,
                reply,
            } => {
                let joining = Joining {
                    queue: Outbound {
                        frames: member.frames,
                        close: member.close,
                        write_here: self.write_here.clone(),
                    },
                    extensions: member.extensions,
                    can_write: member.can_write,
                };
                let joined = self.core.join(conn, joining, self.now());
                self.carry_out().await;
                let _ = reply.send(joined);
            }
            Command::Leave { conn } => {
                self.core.leave(conn, self.now());
                self.carry_out().await;
            }
            Command::Message {
                conn,
                message,
                cost,
            } => {
                let started = std::time::Instant::now();
                self.feed_durability();
                let now = self.now();
                let heavy = match &message {
                    Inbound::Update(update) => update.len() as u64 >= HEAVY_BYTES,
                    Inbound::StateVector(_) => self.core.stored_bytes() >= HEAVY_BYTES,
                    _ => false,
                };
                let core = &mut self.core;
                heavily(heavy, || core.receive(conn, message, now));
                self.carry_out().await;
                cost.add(started.elapsed());
            }
            Command::Snapshot { reply } => {
                let heavy = self.core.stored_bytes() >= HEAVY_BYTES;
                let core = &mut self.core;
                let snapshot = heavily(heavy, || core.snapshot());
                self.carry_out().await;
                let _ = reply.send(snapshot);
            }
            Command::Import { update, reply } => {
                self.feed_durability();
                let core = &mut self.core;
                let imported = heavily(update.len() as u64 >= HEAVY_BYTES, || core.import(&update));
                self.carry_out().await;
                let imported = match (imported, self.core.unavailable()) {
                    // Storage failed on what the import added.
                    (Ok(_), Some(reason)) => Err(RoomError::Unavailable(reason.to_owned())),
                    (imported, _) => imported,
                };
                if matches!(imported, Ok(true)) {
                    // Answered once what it added is on disk, without
                    // holding up the room meanwhile.
                    let durable = self.durable_from_here();
                    tokio::spawn(async move {
                        let _ = reply.send(durable.await.map(|()| true));
                    });
                } else {
                    let _ = reply.send(imported);
                }
            }
            Command::Delete { reply } => {
                self.core.delete(self.now());
                self.carry_out().await;
                // A rewrite finishing after the deletion would write the
                // deleted log back (and in cluster mode merge it into a
                // document recreated meanwhile); a chat trim still running
                // would work on the chat being deleted.
                self.settle_store_work().await;
                let deleted = self.delete().await;
                if deleted.is_ok() {
                    self.ctx.fanout.publish(&self.name, NodeMessage::Deleted);
                    self.leave_deleted();
                }
                let _ = reply.send(deleted);
            }
        }
    }

    /// Carries out the storage work the core handed out, in order. Returns
    /// whether the core asked to be evicted.
    async fn carry_out(&mut self) -> bool {
        let mut evict = false;
        let mut appended_any = false;
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Append { write, entry } => {
                    match self.ctx.store.append(self.name.as_str(), &entry) {
                        Ok(appended) => {
                            appended_any = true;
                            self.last_seq = appended.seq;
                            self.last_ticket = appended.ticket;
                            self.tickets.push_back((write, appended.ticket));
                            self.core.appended(write, self.now());
                        }
                        Err(err) => {
                            let reason = format!("could not store an update: {err}");
                            self.core.storage_failed(reason, self.now());
                        }
                    }
                }
                Output::AppendChat { record } => {
                    if let Err(err) = self
                        .ctx
                        .store
                        .append_chat(self.name.as_str(), record.as_bytes())
                    {
                        warn!(%err, "could not store a chat message");
                    }
                    if self.chat_trim.as_ref().is_some_and(|t| !t.is_finished()) {
                        continue;
                    }
                    // Off the room's task: a shared store answers over the network.
                    let store = self.ctx.store.clone();
                    let name = self.name.to_string();
                    let (keep, bytes) = (
                        self.ctx.config.chat_history,
                        self.ctx.config.chat_history_bytes,
                    );
                    self.chat_trim = Some(tokio::task::spawn_blocking(move || {
                        if let Err(err) = store.trim_chat(&name, keep, bytes) {
                            warn!(%err, "could not trim the chat log");
                        }
                    }));
                }
                Output::Compact { state } => self.compact(state).await,
                Output::Reload => {
                    let restored = self.load().await;
                    let stored_before = self.core.reloaded(restored, self.now());
                    self.await_ticket(stored_before);
                }
                Output::Evict => evict = true,
                Output::Publish(message) => self.ctx.fanout.publish(&self.name, message),
                Output::Resync => self.resync(),
            }
        }
        // A client waits for its `Saved`: an idle store need not wait out
        // its commit window (stock clients wait for nothing; their writes
        // batch).
        if appended_any && self.core.saves_pending() {
            self.ctx.store.hurry();
        }
        self.member_count
            .store(self.core.member_count(), Ordering::Relaxed);
        evict
    }

    /// A deleted document starts afresh in a new room: this one leaves.
    fn leave_deleted(&mut self) {
        let rx = &mut self.rx;
        self.ctx.registry.leave_if(&self.name, &mut || {
            rx.close();
            true
        });
        self.closed = true;
    }

    /// Something from another node's room of this document.
    async fn on_incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Message {
                from,
                message: NodeMessage::Deleted,
            } => {
                info!("document deleted through another node");
                self.core.remote(from, NodeMessage::Deleted, self.now());
                self.carry_out().await;
                self.leave_deleted();
            }
            Incoming::Message { from, message } => {
                self.known_stored |= matches!(message, NodeMessage::Update(_));
                self.core.remote(from, message, self.now());
                self.carry_out().await;
            }
            Incoming::Resync => self.resync(),
        }
    }

    /// Starts reading what the store holds past the last seq this room
    /// read, off the room's task; [`Self::resynced`] takes the answer.
    /// Asked again meanwhile, it reads again once this read is done.
    fn resync(&mut self) {
        self.resync_at = None;
        if self.resyncing.is_some() {
            self.resync_again = true;
            return;
        }
        let store = self.ctx.store.clone();
        let name = self.name.to_string();
        let after = self.read_seq;
        self.resyncing = Some(tokio::task::spawn_blocking(move || {
            store.load_after(&name, after)
        }));
    }

    /// Hands what a resync read to the core as if another node had sent it
    /// (what the room already has merges to nothing); the caller carries
    /// out what the core then hands out, and leaves when this returns that
    /// the document was deleted. A refusal is retried shortly.
    fn resynced(&mut self, read: Result<ResyncRead, tokio::task::JoinError>) -> bool {
        let mut deleted = false;
        match read {
            Ok(Ok(Some(StoredDoc { updates, last_seq }))) => {
                debug!(entries = updates.len(), "resynced from the store");
                for update in updates {
                    let update = NodeMessage::Update(update.into());
                    self.core.remote(NodeKey::STORE, update, self.now());
                }
                self.read_seq = self.read_seq.max(last_seq);
                self.known_stored = true;
            }
            // A document known to be in the database is gone from it: deleted through another node whose `Deleted`
            // never reached this one (Redis was away; its resync marker
            // brought us here). A document never read (new, its first
            // writes not yet committed) is not gone, only not there yet.
            Ok(Ok(None)) if self.known_stored => {
                info!("document deleted through another node (found on resync)");
                self.core
                    .remote(NodeKey::STORE, NodeMessage::Deleted, self.now());
                deleted = true;
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                warn!(%err, "could not resync from the store; trying again");
                self.resync_at = Some(Instant::now() + RESYNC_RETRY);
            }
            Err(join) => error!(%join, "resync panicked"),
        }
        if std::mem::take(&mut self.resync_again) && !deleted {
            self.resync();
        }
        deleted
    }

    /// Makes `write` (standing for what the store held when the room
    /// loaded) wait for the store's newest ticket: an evicted room's last
    /// writes may still be on their way to the disk.
    fn await_ticket(&mut self, write: u64) {
        let ticket = self.ctx.store.last_ticket();
        self.last_ticket = self.last_ticket.max(ticket);
        self.tickets.push_back((write, ticket));
        self.feed_durability();
    }

    /// Tells the core which writes the store has made durable.
    fn feed_durability(&mut self) {
        let durable = self.durability.borrow_and_update().ticket;
        if let Some(write) = pop_settled(&mut self.tickets, durable) {
            self.core.durable(write, self.now());
        }
    }

    /// The room was idle for the grace period: finish storage, then leave
    /// the registry unless a command arrived meanwhile (then serve it; the
    /// core asks again later).
    async fn try_to_leave(&mut self) {
        self.finish_storage().await;
        let idle = self.core.is_empty();
        let rx = &mut self.rx;
        self.closed = self.ctx.registry.leave_if(&self.name, &mut || {
            if idle && rx.is_empty() {
                rx.close();
                true
            } else {
                false
            }
        });
    }

    /// Rewrites the stored log as `state`, off the room's task, so members
    /// do not wait for it: it only touches entries up to the newest one
    /// stored now, while new appends land after it, and every step of it
    /// leaves a log that merges to the same document.
    async fn compact(&mut self, state: Vec<u8>) {
        // One rewrite at a time: the previous one almost always finished
        // long ago; if not, wait for it rather than let the log grow (a
        // skipped one leaves it long until the core asks again, a whole
        // threshold later). In cluster mode the wait can include one for a
        // document thread behind loads.
        if let Some(running) = self.compaction.take() {
            let _ = running.await;
        }
        let store = self.ctx.store.clone();
        let name = self.name.to_string();
        let upto = self.last_seq;
        let read_seq = self.ctx.fanout.is_clustered().then_some(self.read_seq);
        let rewrite = move || {
            let compacted = match read_seq {
                None => store.compact(&name, upto, &state),
                Some(read_seq) => compact_shared(&*store, &name, read_seq, state),
            };
            if let Err(err) = compacted {
                // An optimisation only: the log is still whole.
                warn!(%err, "compaction failed");
            }
        };
        self.compaction = Some(if read_seq.is_some() {
            // Merging other nodes' entries builds a whole document: a
            // document thread's work (see `memory`).
            let documents = self.ctx.documents.clone();
            tokio::spawn(
                async move {
                    if let Err(err) = documents.run(rewrite).await {
                        warn!(%err, "compaction did not run");
                    }
                }
                .in_current_span(),
            )
        } else {
            tokio::task::spawn_blocking(rewrite)
        });
    }

    /// Waits for the store work running off the room's task (a compaction,
    /// a chat trim) to end.
    async fn settle_store_work(&mut self) {
        for running in [self.compaction.take(), self.chat_trim.take()]
            .into_iter()
            .flatten()
        {
            let _ = running.await;
        }
    }

    /// Before the room goes away: compact a log that grew, wait until
    /// every update it stored is on disk, and publish what that made
    /// durable.
    async fn finish_storage(&mut self) {
        if let Some(running) = self.compaction.take() {
            let _ = running.await;
        }
        self.core.prepare_to_close();
        self.carry_out().await;
        self.settle_store_work().await;
        if self.core.unavailable().is_some() {
            return;
        }
        let last_ticket = self.last_ticket;
        let mut durability = self.ctx.store.durability();
        let flushed = matches!(
            tokio::time::timeout(
                FLUSH_TIMEOUT,
                durability.wait_for(|c| c.ticket >= last_ticket),
            )
            .await,
            Ok(Ok(_))
        );
        if flushed {
            // What became durable during the wait is published now: the
            // room is about to go, and the other nodes' rooms would hear
            // of those updates from nowhere else.
            self.feed_durability();
            self.carry_out().await;
        } else {
            warn!("updates were not confirmed on disk in time");
        }
    }

    /// A future that completes once everything appended so far is on disk
    /// (an error after [`FLUSH_TIMEOUT`]).
    fn durable_from_here(&self) -> impl Future<Output = Result<(), RoomError>> + Send + 'static {
        let ticket = self.last_ticket;
        let mut durability = self.ctx.store.durability();
        async move {
            match tokio::time::timeout(FLUSH_TIMEOUT, durability.wait_for(|c| c.ticket >= ticket))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                _ => Err(RoomError::Unavailable(
                    "the change was not confirmed on disk in time".into(),
                )),
            }
        }
    }

    /// Deletes the stored document and answers once the deletion is on
    /// disk (the store's flush).
    async fn delete(&mut self) -> Result<(), RoomError> {
        let store = self.ctx.store.clone();
        let name = self.name.to_string();
        tokio::task::spawn_blocking(move || store.delete(&name).and_then(|_| store.flush()))
            .await
            .map_err(|e| RoomError::Unavailable(e.to_string()))?
            .map_err(|e| RoomError::Unavailable(e.to_string()))?;
        info!("document deleted");
        Ok(())
    }

    /// Reads the document from storage and merges its log on a document
    /// thread: off the async threads, and gone with what the merge freed.
    async fn load(&mut self) -> Result<Restored, String> {
        let store = self.ctx.store.clone();
        let name = self.name.to_string();
        let loaded = self
            .ctx
            .documents
            .run(move || {
                let StoredDoc { updates, last_seq } = store
                    .load(&name)
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                Ok::<_, String>((Restored::from_log(&updates)?, last_seq))
            })
            .await;
        match loaded {
            Ok(Ok((restored, last_seq))) => {
                self.last_seq = last_seq;
                self.read_seq = last_seq;
                self.known_stored |= last_seq > 0;
                Ok(restored)
            }
            Ok(Err(reason)) => Err(reason),
            Err(err) => {
                error!(%err, "document load failed");
                Err("loading the document failed".into())
            }
        }
    }
}

/// What a resync's store read returns.
type ResyncRead = Result<Option<StoredDoc>, quire_storage::StoreError>;

/// Compaction when other nodes write the same log: bounded by what this
/// room *read*, never its own latest append, which other nodes' commits may
/// precede. `state` holds every entry up to `read_seq`; the entries the
/// store holds past it are merged in, so the state written at their last
/// seq holds everything it replaces.
fn compact_shared(
    store: &dyn DocStore,
    name: &str,
    read_seq: Seq,
    state: Vec<u8>,
) -> Result<(), quire_storage::StoreError> {
    let Some(after) = store.load_after(name, read_seq)? else {
        return Ok(());
    };
    let state = if after.updates.is_empty() {
        state
    } else {
        let all = std::iter::once(state.as_slice()).chain(after.updates.iter().map(Vec::as_slice));
        match crate::document::Document::from_updates(all)
            .ok()
            .and_then(|merged| merged.encode_whole())
        {
            Some(merged) => merged,
            None => {
                warn!("could not merge the log for compaction; leaving it");
                return Ok(());
            }
        }
    };
    store.compact(name, after.last_seq, &state)
}

/// Runs `work` on the room's task; if it is `heavy` (it grows with an
/// update or the document, see [`HEAVY_BYTES`]), under `block_in_place`,
/// so that the tokio worker's other tasks (other rooms, connections) move
/// to another worker meanwhile instead of waiting for it. A runtime with
/// one thread has nowhere to move them: there it simply runs.
fn heavily<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let threaded =
        || Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if heavy && threaded() {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Recent chat messages of a document, oldest first.
async fn load_chat(store: &Arc<dyn DocStore>, name: &DocName, limit: usize) -> Vec<String> {
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
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.ctx.metrics.rooms.dec();
    }
}
