//! The client side of a Quire connection, without any I/O: a state machine
//! that the browser, the native client and the tests all drive the same way.
//!
//! The session owns the client's yrs document. The driver (whatever owns a
//! socket and a clock) feeds it inputs and carries out its outputs:
//!
//! ```text
//! inputs                                   outputs
//! start(now) / stop()                      poll_action(): Connect | Disconnect
//! on_open(now)                             poll_transmit(): frames to send
//! on_message(frame, now)                   poll_event(): status, remote changes,
//! on_close(code, now)                        presence, events, saves, errors
//! tick(now)             at next_deadline() next_deadline(): when to call tick
//! network_online(now)
//! edits to doc(), then flush(now)
//! set_awareness, emit
//! ```
//!
//! What it guarantees:
//! - **Offline edits are never queued as messages.** They live in the
//!   document; on reconnect the sync handshake sends exactly what the server
//!   lacks, as one update, however long the outage (memory is the document).
//! - **"Saved" means on the server's disk**: the unsaved count drops only on
//!   the server's `Saved` acknowledgement, which follows its group commit.
//! - **A dead link is noticed**: with the extensions on, the server pings
//!   every interval, so silence longer than interval + timeout means the
//!   link is gone; the session drops it and reconnects.
//! - **Reconnection** uses exponential backoff with jitter (1 s, ×2, 30 s
//!   ceiling, ±50 %), immediately when the platform reports the network back,
//!   and gives up only on closes that retrying cannot fix
//!   ([`close::is_fatal`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, TransactionMut, Update};

use crate::awareness::{AwarenessTable, ClientId};
use crate::close;
use crate::ext::{Ext, Reassembly};
use crate::lib0::{write_var_string, write_var_uint};
use crate::message::{Message, SyncMessage};

/// Origin of transactions that apply what the server sent; local edits
/// have any other origin and are captured for sending.
const REMOTE_ORIGIN: &str = "quire-remote";
/// Key of the session's update observer on the document.
const OBSERVER_KEY: &str = "quire-session";
/// y-protocols clients renew their presence this often (half the 30 s timeout).
const AWARENESS_RENEW_MS: u64 = 15_000;

/// Tunables; the defaults are the documented ones.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub backoff_first_ms: u64,
    pub backoff_factor: f64,
    pub backoff_max_ms: u64,
    /// Each delay is multiplied by a random factor in `1 ± jitter`.
    pub backoff_jitter: f64,
    /// Used until the server's Welcome says otherwise.
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// Largest frame accepted from the server (also bounds reassembly).
    pub max_frame_bytes: usize,
    /// Seed of the jitter; give each client its own entropy.
    pub seed: u64,
    /// Access token, sent in-band as the first message of every connection
    /// (servers without `--auth-key` ignore it).
    pub token: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            backoff_first_ms: 1_000,
            backoff_factor: 2.0,
            backoff_max_ms: 30_000,
            backoff_jitter: 0.5,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_frame_bytes: 256 << 20,
            seed: 0x9e37_79b9_7f4a_7c15,
            token: None,
        }
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Not started.
    Idle,
    /// Waiting for the socket to open.
    Connecting { attempt: u32 },
    /// Open; the initial exchange is under way.
    Syncing,
    /// Open and caught up with the server.
    Synced,
    /// Disconnected; the next attempt is due at `retry_at_ms`.
    Offline { retry_at_ms: u64, attempt: u32 },
    /// Given up: closed by the user or by a close that retrying cannot fix.
    Stopped { code: u16, reason: String },
}

/// What a status badge shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub connection: Connection,
    /// Local edits the server has not confirmed on disk.
    pub unsaved: u64,
    /// Whether the server speaks Quire's extensions (acks, heartbeat, events).
    pub extensions: bool,
}

impl Status {
    /// True only when the server confirmed every local edit durable.
    pub fn all_saved(&self) -> bool {
        self.unsaved == 0
    }
}

/// The code of the server's `Error` frame saying saving has stalled: its
/// storage stopped confirming writes, so no `Saved` comes until it
/// resumes (the first `Saved` after it says so). The connection stays.
/// See [`SyncSession::saves_stalled`].
pub const SAVES_STALLED: u16 = 4503;

/// What the driver must do with the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a socket to the document's URL (offering [`crate::ext::SUBPROTOCOL`]).
    Connect,
    /// Drop the socket (no need to call `on_close` afterwards).
    Disconnect { reason: String },
}

/// Presence changes, derived from awareness updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Joined { client: ClientId, state: String },
    Updated { client: ClientId, state: String },
    Left { client: ClientId },
}

/// Things the application may want to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Status(Status),
    /// The document changed because of someone else.
    RemoteChange,
    Presence(Presence),
    /// A named event from the room.
    Event {
        name: String,
        payload: String,
        sender: u64,
        sender_name: String,
        at_ms: u64,
    },
    EmitAcked {
        ack: u64,
        delivered: u64,
    },
    EmitTimedOut {
        ack: u64,
    },
    /// A typed error from the server (usually followed by a close).
    ServerError {
        code: u16,
        message: String,
    },
}

/// Why an emit was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("not connected to a Quire server")]
    NotConnected,
}

/// Counters, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Update messages (sync step 2 and update) sent, over all connections.
    pub update_messages_sent: u64,
    /// Bytes of frames handed to the driver.
    pub bytes_sent: u64,
    /// Connections opened.
    pub connections: u64,
}

pub struct SyncSession {
    config: SessionConfig,
    doc: Doc,
    /// Updates of local transactions, filled by the document observer.
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    connection: Connection,
    /// Failed attempts since the last successful sync (drives the backoff).
    attempt: u32,
    rng: u64,
    extensions: bool,
    transmit: VecDeque<Vec<u8>>,
    actions: VecDeque<Action>,
    events: VecDeque<SessionEvent>,
    // Heartbeat.
    last_received_ms: u64,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    // Saves.
    /// Local transactions made so far.
    local_edits: u64,
    /// Local transactions the server confirmed durable.
    saved_edits: u64,
    /// Update messages sent on this connection.
    messages_on_connection: u64,
    /// (message number, local edits it covers), oldest first.
    unacked: VecDeque<(u64, u64)>,
    /// On this connection, every local edit up to this one has been sent.
    sent_through: u64,
    reassembly: Reassembly,
    /// Set by the server's [`SAVES_STALLED`] error, cleared by the next
    /// `Saved` or a new connection (whose room says so again if needed).
    saves_stalled: bool,
    // Presence.
    remote: AwarenessTable,
    local_state: Option<String>,
    local_clock: u64,
    last_awareness_sent_ms: u64,
    // Events.
    next_ack: u64,
    /// (ack id, deadline) of emits awaiting their acknowledgement.
    pending_emits: Vec<(u64, Option<u64>)>,
    stats: SessionStats,
    last_status: Option<Status>,
}

impl SyncSession {
    /// A session over a fresh document.
    pub fn new(config: SessionConfig) -> Self {
        Self::with_doc(Doc::new(), config)
    }

    /// A session over an existing document (e.g. restored from local storage).
    pub fn with_doc(doc: Doc, config: SessionConfig) -> Self {
        let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = captured.clone();
        doc.observe_update_v1(OBSERVER_KEY, move |txn, event| {
            let remote = txn
                .origin()
                .is_some_and(|o| o.as_ref() == REMOTE_ORIGIN.as_bytes());
            if !remote {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(event.update.clone());
            }
        })
        .expect("a new session's document has no transaction open");
        Self {
            rng: config.seed | 1,
            ping_interval_ms: config.ping_interval_ms,
            ping_timeout_ms: config.ping_timeout_ms,
            config,
            doc,
            captured,
            connection: Connection::Idle,
            attempt: 0,
            extensions: false,
            transmit: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            last_received_ms: 0,
            local_edits: 0,
            saved_edits: 0,
            messages_on_connection: 0,
            unacked: VecDeque::new(),
            sent_through: 0,
            reassembly: Reassembly::default(),
            saves_stalled: false,
            remote: AwarenessTable::new(),
            local_state: None,
            local_clock: 0,
            last_awareness_sent_ms: 0,
            next_ack: 1,
            pending_emits: Vec::new(),
            stats: SessionStats::default(),
            last_status: None,
        }
    }

    /// The shared document. Edit it in any transaction, then call
    /// [`Self::flush`] so the change is sent.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// Edits the document in one transaction and sends the change.
    pub fn edit<R>(&mut self, now_ms: u64, f: impl FnOnce(&mut TransactionMut) -> R) -> R {
        let result = {
            let mut txn = self.doc.transact_mut();
            f(&mut txn)
        };
        self.flush(now_ms);
        result
    }

    pub fn status(&self) -> Status {
        Status {
            connection: self.connection.clone(),
            unsaved: self.local_edits - self.saved_edits,
            extensions: self.extensions,
        }
    }

    /// Whether the server said it cannot save right now ([`SAVES_STALLED`]):
    /// a badge must then say the changes are not saved, even with nothing
    /// unsaved locally (others' changes are not on disk either).
    pub fn saves_stalled(&self) -> bool {
        self.saves_stalled
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Remote presence as last heard.
    pub fn presence(&self) -> &AwarenessTable {
        &self.remote
    }

    /// This client's awareness id (the document's client id).
    pub fn client_id(&self) -> ClientId {
        self.doc.client_id().get()
    }

    /// Bytes queued for sending (nothing is queued while offline).
    pub fn queued_bytes(&self) -> usize {
        self.transmit.iter().map(Vec::len).sum()
    }

    // ----- inputs -----

    /// Begins connecting.
    pub fn start(&mut self, _now_ms: u64) {
        if matches!(
            self.connection,
            Connection::Idle | Connection::Offline { .. }
        ) {
            self.begin_attempt();
        }
    }

    /// Closes for good (the user closed the document).
    pub fn stop(&mut self) {
        if self.is_open() || matches!(self.connection, Connection::Connecting { .. }) {
            self.actions.push_back(Action::Disconnect {
                reason: "closed by the user".into(),
            });
        }
        self.drop_connection_state();
        self.connection = Connection::Stopped {
            code: 1000,
            reason: "closed by the user".into(),
        };
        self.publish_status();
    }

    /// The socket opened.
    pub fn on_open(&mut self, now_ms: u64) {
        if !matches!(self.connection, Connection::Connecting { .. }) {
            return;
        }
        self.flush_captured();
        self.connection = Connection::Syncing;
        self.stats.connections += 1;
        self.last_received_ms = now_ms;
        self.messages_on_connection = 0;
        self.unacked.clear();
        // A new connection starts from what the server confirmed.
        self.sent_through = self.saved_edits;
        if let Some(token) = &self.config.token {
            let auth = Ext::Auth { token }.encode();
            self.send(auth);
        }
        let sv = self.doc.transact().state_vector().encode_v1();
        self.send(Message::Sync(SyncMessage::Step1(&sv)).encode());
        if self.local_state.is_some() {
            self.send_awareness(now_ms);
        }
        self.publish_status();
    }

    /// A frame arrived.
    pub fn on_message(&mut self, frame: &[u8], now_ms: u64) {
        if !self.is_open() {
            return;
        }
        self.last_received_ms = now_ms;
        if Ext::is_ext(frame) {
            self.on_ext(frame, now_ms);
        } else {
            self.on_y_message(frame, now_ms);
        }
        self.publish_status();
    }

    /// The socket closed or failed to open; `code` is the close code if a
    /// close frame arrived.
    pub fn on_close(&mut self, code: Option<u16>, reason: &str, now_ms: u64) {
        if !(self.is_open() || matches!(self.connection, Connection::Connecting { .. })) {
            return;
        }
        self.drop_connection_state();
        match code {
            Some(code) if close::is_fatal(code) => {
                self.connection = Connection::Stopped {
                    code,
                    reason: reason.to_owned(),
                };
            }
            _ => self.schedule_retry(now_ms),
        }
        self.publish_status();
    }

    /// Timers: retry when due, notice a dead link, expire emit acks, renew
    /// presence.
    pub fn tick(&mut self, now_ms: u64) {
        self.flush_captured();
        if let Connection::Offline { retry_at_ms, .. } = self.connection
            && now_ms >= retry_at_ms
        {
            self.begin_attempt();
        }
        if self.is_open() {
            let silent_for = now_ms.saturating_sub(self.last_received_ms);
            if self.extensions && silent_for >= self.ping_interval_ms + self.ping_timeout_ms {
                self.actions.push_back(Action::Disconnect {
                    reason: format!("no sign of life from the server for {silent_for} ms"),
                });
                self.drop_connection_state();
                self.schedule_retry(now_ms);
            } else if self.local_state.is_some()
                && now_ms.saturating_sub(self.last_awareness_sent_ms) >= AWARENESS_RENEW_MS
            {
                self.send_awareness(now_ms);
            }
        }
        let mut expired = Vec::new();
        self.pending_emits.retain(|&(ack, deadline)| {
            let keep = deadline.is_none_or(|d| now_ms < d);
            if !keep {
                expired.push(ack);
            }
            keep
        });
        for ack in expired {
            self.events.push_back(SessionEvent::EmitTimedOut { ack });
        }
        self.publish_status();
    }

    /// The platform says the network is back: try now, not at the backoff time.
    pub fn network_online(&mut self, _now_ms: u64) {
        if matches!(self.connection, Connection::Offline { .. }) {
            self.attempt = 0;
            self.begin_attempt();
            self.publish_status();
        }
    }

    /// Sends local changes made to [`Self::doc`] since the last call.
    pub fn flush(&mut self, _now_ms: u64) {
        self.flush_captured();
        self.publish_status();
    }

    /// Replaces the access token (e.g. before it expires); an open
    /// connection sends it at once, later connections use it.
    pub fn set_token(&mut self, token: String) {
        if self.is_open() {
            self.send(Ext::Auth { token: &token }.encode());
        }
        self.config.token = Some(token);
    }

    /// Sets (or clears, with `None`) this client's presence, as JSON.
    pub fn set_awareness(&mut self, state: Option<String>, now_ms: u64) {
        self.local_state = state;
        if self.is_open() {
            self.send_awareness(now_ms);
        }
    }

    /// Emits a named event to the room. With `ack_timeout_ms`, an
    /// [`SessionEvent::EmitAcked`] or [`SessionEvent::EmitTimedOut`] follows.
    pub fn emit(
        &mut self,
        name: &str,
        payload_json: &str,
        ack_timeout_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<u64, EmitError> {
        if !(self.is_open() && self.extensions) {
            return Err(EmitError::NotConnected);
        }
        let ack = match ack_timeout_ms {
            Some(timeout) => {
                let ack = self.next_ack;
                self.next_ack += 1;
                self.pending_emits.push((ack, Some(now_ms + timeout)));
                ack
            }
            None => 0,
        };
        self.send(
            Ext::Emit {
                name,
                payload: payload_json,
                ack,
            }
            .encode(),
        );
        Ok(ack)
    }

    // ----- outputs -----

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Self::tick`] must be called next, if at all.
    pub fn next_deadline(&self) -> Option<u64> {
        let mut deadline: Option<u64> = None;
        let mut consider = |t: u64| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if let Connection::Offline { retry_at_ms, .. } = self.connection {
            consider(retry_at_ms);
        }
        if self.is_open() {
            if self.extensions {
                consider(self.last_received_ms + self.ping_interval_ms + self.ping_timeout_ms);
            }
            if self.local_state.is_some() {
                consider(self.last_awareness_sent_ms + AWARENESS_RENEW_MS);
            }
        }
        for &(_, emit_deadline) in &self.pending_emits {
            if let Some(d) = emit_deadline {
                consider(d);
            }
        }
        deadline
    }

    // ----- internals -----

    fn is_open(&self) -> bool {
        matches!(self.connection, Connection::Syncing | Connection::Synced)
    }

    fn begin_attempt(&mut self) {
        self.connection = Connection::Connecting {
            attempt: self.attempt,
        };
        self.actions.push_back(Action::Connect);
    }

    fn schedule_retry(&mut self, now_ms: u64) {
        let delay = self.backoff_delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.connection = Connection::Offline {
            retry_at_ms: now_ms + delay,
            attempt: self.attempt,
        };
    }

    /// Delay before attempt number `attempt` (0-based) is retried.
    pub fn backoff_delay(&mut self, attempt: u32) -> u64 {
        let random = self.random();
        let c = &self.config;
        let base = c.backoff_first_ms as f64 * c.backoff_factor.powi(attempt.min(64) as i32);
        let spread = 1.0 - c.backoff_jitter + 2.0 * c.backoff_jitter * random;
        (base * spread).min(c.backoff_max_ms as f64).max(0.0) as u64
    }

    /// xorshift64*: a uniform number in [0, 1).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Forgets everything tied to the current socket.
    fn drop_connection_state(&mut self) {
        self.transmit.clear();
        self.unacked.clear();
        self.reassembly.clear();
        self.saves_stalled = false;
        self.extensions = false;
        let left: Vec<ClientId> = self.remote.clients().collect();
        self.remote = AwarenessTable::new();
        for client in left {
            self.events
                .push_back(SessionEvent::Presence(Presence::Left { client }));
        }
        for (ack, _) in self.pending_emits.drain(..) {
            self.events.push_back(SessionEvent::EmitTimedOut { ack });
        }
    }

    fn flush_captured(&mut self) {
        let updates = std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        for update in updates {
            self.local_edits += 1;
            // While offline (or before the socket opens) nothing is queued:
            // the next handshake carries it.
            if self.is_open() {
                let frame = Message::Sync(SyncMessage::Update(&update)).encode();
                self.send_update_message(frame, false);
            }
        }
    }

    fn send(&mut self, frame: Vec<u8>) {
        self.stats.bytes_sent += frame.len() as u64;
        self.transmit.push_back(frame);
    }

    /// Sends a step 2 (`whole`: it carries every local edit so far) or one
    /// edit's update, remembering up to which edit the server then has all
    /// of them. An update sent while earlier edits have not crossed yet
    /// (typed during the handshake, before the step 2) advances nothing:
    /// acknowledging it must not mark those earlier edits saved.
    fn send_update_message(&mut self, frame: Vec<u8>, whole: bool) {
        self.messages_on_connection += 1;
        self.stats.update_messages_sent += 1;
        if whole || self.sent_through + 1 == self.local_edits {
            self.sent_through = self.local_edits;
        }
        self.unacked
            .push_back((self.messages_on_connection, self.sent_through));
        self.send(frame);
    }

    fn send_awareness(&mut self, now_ms: u64) {
        self.local_clock += 1;
        let mut update = Vec::new();
        write_var_uint(&mut update, 1);
        write_var_uint(&mut update, self.client_id());
        write_var_uint(&mut update, self.local_clock);
        write_var_string(&mut update, self.local_state.as_deref().unwrap_or("null"));
        self.send(Message::Awareness(&update).encode());
        self.last_awareness_sent_ms = now_ms;
    }

    fn apply_remote(&mut self, update: &[u8]) -> bool {
        let Ok(update) = Update::decode_v1(update) else {
            return false;
        };
        let mut txn = self.doc.transact_mut_with(REMOTE_ORIGIN);
        if txn.apply_update(update).is_err() {
            return false;
        }
        let changed = !txn.delete_set().is_empty() || txn.before_state() != txn.after_state();
        drop(txn);
        if changed {
            self.events.push_back(SessionEvent::RemoteChange);
        }
        true
    }

    fn on_y_message(&mut self, frame: &[u8], now_ms: u64) {
        let Ok(message) = Message::decode(frame) else {
            return;
        };
        match message {
            Message::Sync(SyncMessage::Step1(sv)) => {
                // Everything the server lacks, offline edits included, in one update.
                self.flush_captured();
                let Ok(sv) = StateVector::decode_v1(sv) else {
                    return;
                };
                let diff = self.doc.transact().encode_diff_v1(&sv);
                let frame = Message::Sync(SyncMessage::Step2(&diff)).encode();
                self.send_update_message(frame, true);
            }
            Message::Sync(SyncMessage::Step2(update)) => {
                self.apply_remote(update);
                if self.connection == Connection::Syncing {
                    self.connection = Connection::Synced;
                    self.attempt = 0;
                }
            }
            Message::Sync(SyncMessage::Update(update)) => {
                self.apply_remote(update);
            }
            Message::Awareness(update) => {
                if let Ok(change) = self.remote.apply(update, now_ms) {
                    let own = self.client_id();
                    for client in change.added {
                        if client != own {
                            let state = self.remote.state(client).unwrap_or("null").to_owned();
                            self.events
                                .push_back(SessionEvent::Presence(Presence::Joined {
                                    client,
                                    state,
                                }));
                        }
                    }
                    for client in change.updated {
                        if client != own {
                            let state = self.remote.state(client).unwrap_or("null").to_owned();
                            self.events
                                .push_back(SessionEvent::Presence(Presence::Updated {
                                    client,
                                    state,
                                }));
                        }
                    }
                    for client in change.removed {
                        if client != own {
                            self.events
                                .push_back(SessionEvent::Presence(Presence::Left { client }));
                        }
                    }
                }
            }
            Message::PermissionDenied(reason) => {
                self.actions.push_back(Action::Disconnect {
                    reason: format!("permission denied: {reason}"),
                });
                self.drop_connection_state();
                self.connection = Connection::Stopped {
                    code: close::UNAUTHORIZED,
                    reason: format!("permission denied: {reason}"),
                };
            }
            Message::QueryAwareness => {
                if self.local_state.is_some() {
                    self.send_awareness(now_ms);
                }
            }
        }
    }

    fn on_ext(&mut self, frame: &[u8], now_ms: u64) {
        let Ok(ext) = Ext::decode(frame) else { return };
        match ext {
            Ext::Welcome(welcome) => {
                self.extensions = true;
                self.ping_interval_ms = welcome.ping_interval_ms.max(1);
                self.ping_timeout_ms = welcome.ping_timeout_ms.max(1);
            }
            Ext::Ping(nonce) => self.send(Ext::Pong(nonce).encode()),
            Ext::Pong(_) => {}
            Ext::Saved { through } => {
                self.saves_stalled = false;
                while let Some(&(number, covered)) = self.unacked.front() {
                    if number > through {
                        break;
                    }
                    self.saved_edits = self.saved_edits.max(covered);
                    self.unacked.pop_front();
                }
            }
            Ext::Event {
                name,
                payload,
                sender,
                sender_name,
                at_ms,
            } => self.events.push_back(SessionEvent::Event {
                name: name.to_owned(),
                payload: payload.to_owned(),
                sender,
                sender_name: sender_name.to_owned(),
                at_ms,
            }),
            Ext::EmitAck { ack, delivered } => {
                let before = self.pending_emits.len();
                self.pending_emits.retain(|&(a, _)| a != ack);
                if self.pending_emits.len() < before {
                    self.events
                        .push_back(SessionEvent::EmitAcked { ack, delivered });
                }
            }
            Ext::Error { code, message } => {
                if code == u64::from(SAVES_STALLED) {
                    self.saves_stalled = true;
                }
                self.events.push_back(SessionEvent::ServerError {
                    code: u16::try_from(code).unwrap_or(close::INTERNAL_ERROR),
                    message: message.to_owned(),
                });
            }
            Ext::Fragment { total, data } => {
                match self
                    .reassembly
                    .push(total, data, self.config.max_frame_bytes)
                {
                    Ok(Some(whole)) => {
                        if Ext::is_ext(&whole) {
                            self.on_ext(&whole, now_ms);
                        } else {
                            self.on_y_message(&whole, now_ms);
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        self.actions.push_back(Action::Disconnect {
                            reason: format!("bad fragment from the server: {err}"),
                        });
                        self.drop_connection_state();
                        self.schedule_retry(now_ms);
                    }
                }
            }
            Ext::Emit { .. } | Ext::Auth { .. } => {}
        }
    }

    fn publish_status(&mut self) {
        let status = self.status();
        if self.last_status.as_ref() != Some(&status) {
            self.last_status = Some(status.clone());
            self.events.push_back(SessionEvent::Status(status));
        }
    }
}

impl Drop for SyncSession {
    fn drop(&mut self) {
        let _ = self.doc.unobserve_update_v1(OBSERVER_KEY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::Welcome;
    use yrs::{GetString, Text};

    fn welcome() -> Vec<u8> {
        Ext::Welcome(Welcome {
            conn_id: 1,
            server_time_ms: 0,
            ping_interval_ms: 1_000,
            ping_timeout_ms: 500,
            max_message_bytes: 1 << 20,
            max_document_bytes: 1 << 20,
        })
        .encode()
    }

    fn drain(session: &mut SyncSession) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| session.poll_transmit()).collect()
    }

    fn type_text(session: &mut SyncSession, text: &str, now: u64) {
        let content = session.doc().get_or_insert_text("content");
        session.edit(now, |txn| {
            let len = content.len(txn);
            content.insert(txn, len, text);
        });
    }

    /// A session that has opened a socket and received Welcome and step 2.
    fn synced() -> SyncSession {
        let mut s = SyncSession::new(SessionConfig::default());
        s.start(0);
        assert_eq!(s.poll_action(), Some(Action::Connect));
        s.on_open(0);
        s.on_message(&welcome(), 0);
        s.on_message(&Message::Sync(SyncMessage::Step2(&[0, 0])).encode(), 0);
        assert_eq!(s.status().connection, Connection::Synced);
        drain(&mut s);
        s
    }

    #[test]
    fn opening_sends_step1_and_synced_follows_step2() {
        let mut s = SyncSession::new(SessionConfig::default());
        s.start(0);
        s.on_open(0);
        let frames = drain(&mut s);
        assert!(matches!(
            Message::decode(&frames[0]),
            Ok(Message::Sync(SyncMessage::Step1(_)))
        ));
        assert_eq!(s.status().connection, Connection::Syncing);
        s.on_message(&Message::Sync(SyncMessage::Step2(&[0, 0])).encode(), 1);
        assert_eq!(s.status().connection, Connection::Synced);
    }

    #[test]
    fn local_edits_are_sent_and_saved_only_on_acknowledgement() {
        let mut s = synced();
        type_text(&mut s, "a", 1);
        type_text(&mut s, "b", 2);
        assert_eq!(drain(&mut s).len(), 2);
        assert_eq!(s.status().unsaved, 2);
        s.on_message(&Ext::Saved { through: 1 }.encode(), 3);
        assert_eq!(s.status().unsaved, 1);
        s.on_message(&Ext::Saved { through: 2 }.encode(), 4);
        assert!(s.status().all_saved());
    }

    #[test]
    fn offline_edits_queue_nothing_and_cross_as_one_update_on_reconnect() {
        let mut s = synced();
        s.on_close(Some(1006), "gone", 10);
        assert!(matches!(s.status().connection, Connection::Offline { .. }));
        for i in 0..10_000 {
            type_text(&mut s, &format!("{i} "), 11);
        }
        assert_eq!(
            s.queued_bytes(),
            0,
            "offline edits are not queued as messages"
        );
        assert_eq!(s.status().unsaved, 10_000);

        s.network_online(12);
        assert_eq!(s.poll_action(), Some(Action::Connect));
        s.on_open(12);
        drain(&mut s);
        let sent_before = s.stats().update_messages_sent;
        // The server announces its (empty) state vector; the reply carries everything.
        s.on_message(&Message::Sync(SyncMessage::Step1(&[0])).encode(), 13);
        let frames = drain(&mut s);
        assert_eq!(frames.len(), 1);
        assert_eq!(s.stats().update_messages_sent, sent_before + 1);
        let Ok(Message::Sync(SyncMessage::Step2(update))) = Message::decode(&frames[0]) else {
            panic!("expected one step 2");
        };
        let server = Doc::new();
        server
            .transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        let text = server
            .get_or_insert_text("content")
            .get_string(&server.transact());
        assert!(text.starts_with("0 1 2 ") && text.ends_with("9999 "));

        s.on_message(&welcome(), 14);
        s.on_message(&Ext::Saved { through: 1 }.encode(), 15);
        assert!(s.status().all_saved());
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_the_ceiling() {
        let mut s = SyncSession::new(SessionConfig::default());
        for attempt in 0..12 {
            let base = (1_000f64 * 2f64.powi(attempt as i32)).min(30_000.0);
            for _ in 0..50 {
                let d = s.backoff_delay(attempt) as f64;
                assert!(d <= 30_000.0, "ceiling: {d}");
                assert!(
                    d >= (base * 0.5).min(30_000.0) - 1.0,
                    "attempt {attempt}: {d} < half of {base}"
                );
                if base < 30_000.0 {
                    assert!(d <= base * 1.5 + 1.0, "attempt {attempt}: {d}");
                }
            }
        }
    }

    #[test]
    fn repeated_failures_back_off_and_retry_when_due() {
        let mut s = SyncSession::new(SessionConfig::default());
        s.start(0);
        assert_eq!(s.poll_action(), Some(Action::Connect));
        s.on_close(None, "refused", 0);
        let Connection::Offline {
            retry_at_ms,
            attempt,
        } = s.status().connection
        else {
            panic!("offline")
        };
        assert_eq!(attempt, 1);
        assert!((500..=1_500).contains(&retry_at_ms));
        assert_eq!(s.next_deadline(), Some(retry_at_ms));
        s.tick(retry_at_ms - 1);
        assert_eq!(s.poll_action(), None);
        s.tick(retry_at_ms);
        assert_eq!(s.poll_action(), Some(Action::Connect));
    }

    #[test]
    fn silence_past_interval_plus_timeout_drops_the_link() {
        let mut s = synced();
        // Welcome said 1000 ms interval + 500 ms timeout.
        assert_eq!(s.next_deadline(), Some(1_500));
        s.on_message(&Ext::Ping(1).encode(), 1_000);
        assert_eq!(Ext::decode(&drain(&mut s)[0]).unwrap(), Ext::Pong(1));
        s.tick(2_499);
        assert_eq!(s.poll_action(), None);
        s.tick(2_500);
        assert!(matches!(s.poll_action(), Some(Action::Disconnect { .. })));
        assert!(matches!(s.status().connection, Connection::Offline { .. }));
    }

    #[test]
    fn a_stalled_save_is_remembered_until_the_next_saved() {
        let mut s = synced();
        assert!(!s.saves_stalled());
        let stalled = Ext::Error {
            code: u64::from(SAVES_STALLED),
            message: "stalled",
        };
        s.on_message(&stalled.encode(), 10);
        assert!(s.saves_stalled());
        assert!(
            s.status().connection == Connection::Synced,
            "the link stays"
        );
        s.on_message(&Ext::Saved { through: 0 }.encode(), 20);
        assert!(!s.saves_stalled());
    }

    #[test]
    fn fatal_closes_stop_retrying() {
        let mut s = synced();
        s.on_close(Some(close::DOCUMENT_TOO_LARGE), "too large", 5);
        assert_eq!(
            s.status().connection,
            Connection::Stopped {
                code: close::DOCUMENT_TOO_LARGE,
                reason: "too large".into()
            }
        );
        s.tick(1_000_000);
        assert_eq!(s.poll_action(), None);
    }

    #[test]
    fn fragmented_step2_is_reassembled() {
        let source = Doc::new();
        let text = source.get_or_insert_text("content");
        text.insert(&mut source.transact_mut(), 0, &"x".repeat(50_000));
        let update = source
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let frame = Message::Sync(SyncMessage::Step2(&update)).encode();

        let mut s = SyncSession::new(SessionConfig::default());
        s.start(0);
        s.on_open(0);
        for piece in crate::ext::fragment(&frame, 4096) {
            assert_eq!(s.status().connection, Connection::Syncing);
            s.on_message(&piece, 1);
        }
        assert_eq!(s.status().connection, Connection::Synced);
        let got = s
            .doc()
            .get_or_insert_text("content")
            .get_string(&s.doc().transact());
        assert_eq!(got.len(), 50_000);
    }

    #[test]
    fn presence_joins_and_leaves_and_is_forgotten_offline() {
        let mut s = synced();
        let mut update = Vec::new();
        write_var_uint(&mut update, 1);
        write_var_uint(&mut update, 77);
        write_var_uint(&mut update, 1);
        write_var_string(&mut update, r#"{"user":{"name":"bo"}}"#);
        s.on_message(&Message::Awareness(&update).encode(), 1);
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events.contains(&SessionEvent::Presence(Presence::Joined {
            client: 77,
            state: r#"{"user":{"name":"bo"}}"#.into()
        })));
        s.on_close(None, "", 2);
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events.contains(&SessionEvent::Presence(Presence::Left { client: 77 })));
    }

    #[test]
    fn emits_need_the_extensions_and_time_out_without_ack() {
        let mut s = SyncSession::new(SessionConfig::default());
        assert_eq!(s.emit("x", "{}", None, 0), Err(EmitError::NotConnected));
        let mut s = synced();
        let ack = s.emit("ping", "{}", Some(100), 0).unwrap();
        assert_ne!(ack, 0);
        s.tick(100);
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events.contains(&SessionEvent::EmitTimedOut { ack }));

        let ack = s.emit("ping", "{}", Some(100), 200).unwrap();
        s.on_message(&Ext::EmitAck { ack, delivered: 3 }.encode(), 250);
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events.contains(&SessionEvent::EmitAcked { ack, delivered: 3 }));
    }

    #[test]
    fn remote_updates_are_not_echoed_back() {
        let mut s = synced();
        let other = Doc::new();
        let text = other.get_or_insert_text("content");
        let update = {
            let mut txn = other.transact_mut();
            text.insert(&mut txn, 0, "from afar");
            txn.encode_update_v1()
        };
        s.on_message(&Message::Sync(SyncMessage::Update(&update)).encode(), 1);
        s.flush(2);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.status().unsaved, 0);
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events.contains(&SessionEvent::RemoteChange));
    }
}
