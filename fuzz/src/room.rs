//! Target `room_sequence`: the real room core (`quire_server::room_core`,
//! through its synchronous harness, on an in-memory store), driven by a
//! sequence of client messages decoded as a connection decodes them
//! (`quire_server::connection::decode`).
//!
//! # Input
//!
//! ```text
//! header  one byte: compaction threshold, outbound queue size, size limit
//! op*     one byte: bits 0-1 = connection (0..4), bits 2.. = kind (mod 14),
//!         then the kind's argument bytes (see `Kind`)
//! ```
//!
//! Connections 0 and 1 start as Quire clients (extensions), 2 and 3 as stock
//! y-websocket clients. Each connection owns a yrs replica: its edits become
//! valid updates (sent at once, or held back and sent later, out of order);
//! what the room sends it is applied to it, and a sync step 1 is answered
//! with the step 2 the replica computes, as a real client would.
//!
//! # Invariants
//!
//! - no panic escapes, and the room keeps answering (every barrier and the
//!   final snapshot succeed; the room never fails on a store that cannot fail);
//! - every frame the room queues decodes; stock clients never get extension
//!   frames; a client can apply every update the room relays (unless forged blocks
//!   reused its own IDs, below);
//! - `Saved { through }` never exceeds the update messages sent, never goes
//!   back, and everything those messages carried is in the stored log;
//! - the stored log always merges (`Document::from_updates`) and holds the
//!   same document as the room's snapshot: mid-way (op `Check`), at the end,
//!   after the shutdown compaction, and in a fresh room loading it again.
//!   "Same" is the same blocks and, unless the input sent a forged update
//!   (`Raw`, `Mutate`), the same deletions and rendered content. A forged
//!   item can name neighbours that contradict each other (its right origin
//!   left of its left one), reuse the ID of an item the document has with
//!   other content, or name an item as its parent; yrs resolves these
//!   depending on how the blocks around happen to be split and in which
//!   order they came, so what it shows may differ after a reload.
//!   `quire_protocol::update` refuses the contradictions it can see without
//!   the document; the rest is a documented limit (ARCHITECTURE.md,
//!   threat model): after a forged update only the blocks are compared,
//!   and a replica whose own blocks were forged (same IDs, other content)
//!   may fail to apply what the room relays, or panic editing (it then
//!   stops editing).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use bytes::Bytes;
use quire_protocol::ext::Ext;
use quire_protocol::lib0::{write_var_string, write_var_uint};
use quire_protocol::{AwarenessTable, Message, SyncMessage, close};
use quire_server::Config;
use quire_server::connection::{self, Decoded};
use quire_server::document::Document;
use quire_server::room_core::harness::Harness;
use quire_server::room_core::{ConnId, Inbound, RoomError};
use quire_server::snapshot;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update};

const CONNS: usize = 4;

/// Op kinds (the byte's bits 2.., modulo `KINDS`).
pub mod kind {
    /// `len, bytes`: a raw frame, decoded as the connection task would.
    pub const RAW: u8 = 0;
    /// `e, a, b`: an edit on the replica; `e & 0x80` holds it back.
    pub const EDIT: u8 = 1;
    /// `i`: send update number `i` (of all made so far) again.
    pub const RESEND: u8 = 2;
    /// `i, pos, value, mode`: send a corrupted copy of update `i`.
    pub const MUTATE: u8 = 3;
    /// `m` (then `len, bytes` if `m % 3 == 2`): sync step 1.
    pub const STEP1: u8 = 4;
    /// `n`, then per entry `who, clock, state`: an awareness update.
    pub const AWARENESS: u8 = 5;
    pub const QUERY: u8 = 6;
    /// `name, payload, ack`: an Emit (a stock client's connection refuses it).
    pub const EMIT: u8 = 7;
    pub const LEAVE: u8 = 8;
    /// Wait for the room, then read what it sent this connection.
    pub const PUMP: u8 = 9;
    /// `i`: import update `i` through the HTTP path.
    pub const IMPORT: u8 = 10;
    /// Check the stored log against the snapshot now.
    pub const CHECK: u8 = 11;
    /// `m`: reconnect as another kind of client: `m & 1` Quire (else
    /// stock), `m & 2` read-only.
    pub const TOGGLE: u8 = 12;
    /// Nothing (the room once ran as a task that this let run a little;
    /// kept so that saved inputs keep their meaning).
    pub const YIELD: u8 = 13;
    /// `w`: the connection's token was refreshed: writable iff `w & 1`.
    pub const SET_WRITABLE: u8 = 14;
    pub const KINDS: u8 = 15;
}

const AWARENESS_STATES: [&str; 7] = [
    "null",
    "{}",
    r#"{"user":{"name":"ann"}}"#,
    r##"{"user":{"name":"bo","color":"#f00"}}"##,
    "{broken",
    " null ",
    "[1,2,3]",
];
const EMIT_NAMES: [&str; 4] = ["chat", "chat.history", "cursor", ""];
const EMIT_PAYLOADS: [&str; 5] = [
    r#"{"text":"hi"}"#,
    "{}",
    "not json",
    r#"{"text":"  "}"#,
    "[]",
];
const ALPHABET: [&str; 6] = ["a", "b", "c", " ", "é", "😀"];

thread_local! {
    /// Panics inside yrs seen by the hook (contained ones included).
    pub static YRS_PANICS: Cell<u64> = const { Cell::new(0) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Whether this input sent a forged update (a raw frame or a corrupted
    /// copy): see "Invariants" for what is then not compared. Never set
    /// with `QUIRE_FUZZ_STRICT_FORGED`, which compares everything anyway
    /// (to study the known limit).
    static FORGED: Cell<bool> = const { Cell::new(false) };
}

/// Replaces libFuzzer's abort-on-any-panic hook: yrs panics on malformed
/// updates and Quire contains them with `catch_unwind` (that is the
/// behaviour under test), so they must not abort. Other panics are printed;
/// one that escapes the target (the room's own included: it runs on the
/// target's thread) still aborts, as libfuzzer-sys catches the unwind and
/// aborts.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if location.contains("/yrs-") && !debug() {
            YRS_PANICS.with(|c| c.set(c.get() + 1));
        } else {
            eprintln!("panic at {location}: {message}");
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{location}: {message}")));
    }));
}

/// Known bugs to look past, from `QUIRE_FUZZ_TOLERATE` (comma-separated),
/// so that a long run finds the others instead of the same one again:
/// - `content`: skip every comparison of content (stored log vs snapshot,
///   `Saved` coverage); still check that the room answers, its frames
///   decode and its log merges. For hunting panics and hangs only.
pub fn tolerate(bug: &str) -> bool {
    static TOLERATED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOLERATED
        .get_or_init(|| std::env::var("QUIRE_FUZZ_TOLERATE").unwrap_or_default())
        .split(',')
        .any(|b| b.trim() == bug)
}

fn strict_forged() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("QUIRE_FUZZ_STRICT_FORGED").is_some())
}

fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("QUIRE_FUZZ_DEBUG").is_some())
}

fn last_panic() -> String {
    LAST_PANIC
        .with(|p| p.borrow().clone())
        .unwrap_or_else(|| "none recorded".into())
}

/// Runs one input.
pub fn room_sequence(data: &[u8]) {
    let mut reader = Reader { data };
    let Some(header) = reader.byte() else { return };
    FORGED.with(|f| f.set(false));
    let (config, outbox) = config_for(header);
    let mut run = Run {
        room: Harness::new(config),
        conns: (0..CONNS)
            .map(|i| Conn {
                extensions: i < 2,
                can_write: true,
                live: None,
                replica: Doc::with_client_id(100 + i as u64),
                sent: Vec::new(),
                saved: 0,
                broken: false,
            })
            .collect(),
        next_id: 1,
        history: Vec::new(),
        outbox,
    };
    while let Some(op) = reader.byte() {
        let conn = usize::from(op & 3);
        run.op(conn, (op >> 2) % kind::KINDS, &mut reader);
    }
    run.finish();
}

struct Conn {
    extensions: bool,
    can_write: bool,
    /// The connection id while it is in the room.
    live: Option<ConnId>,
    replica: Doc,
    /// Update messages (step 2 and update) sent on the current connection.
    sent: Vec<Bytes>,
    /// Highest `Saved` received on the current connection.
    saved: u64,
    /// Its replica's yrs panicked editing, after forged blocks reused its
    /// IDs (the documented limit); it makes no more edits.
    broken: bool,
}

/// One input's run: the room and the four clients' sides.
struct Run {
    room: Harness,
    conns: Vec<Conn>,
    next_id: ConnId,
    /// Every update a replica made, for resending, corrupting and importing.
    history: Vec<Vec<u8>>,
    outbox: usize,
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn arg(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    fn bytes(&mut self) -> &[u8] {
        let len = usize::from(self.arg()).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }
}

pub fn config_for(header: u8) -> (Config, usize) {
    let mut config = Harness::config();
    config.room_grace = Duration::from_secs(3600);
    config.compact_after = [2, 3, 5, 1000][usize::from(header & 3)];
    config.max_document_bytes = if header & 0x10 != 0 { 700 } else { 1 << 20 };
    config.chat_history = 2;
    let outbox = [1, 3, 16, 256][usize::from((header >> 2) & 3)];
    (config, outbox)
}

impl Run {
    fn op(&mut self, i: usize, kind: u8, r: &mut Reader<'_>) {
        match kind {
            kind::RAW => {
                FORGED.with(|f| f.set(!strict_forged()));
                let frame = Bytes::copy_from_slice(r.bytes());
                self.send_frame(i, frame);
            }
            kind::EDIT => {
                let (e, a, b) = (r.arg(), r.arg(), r.arg());
                if self.conns[i].broken {
                    return;
                }
                let edited =
                    catch_unwind(AssertUnwindSafe(|| edit(&self.conns[i].replica, e, a, b)));
                let update = match edited {
                    Ok(Some(update)) => update,
                    Ok(None) => return,
                    // Forged blocks that reused this replica's IDs with
                    // other content can leave its yrs unable to edit
                    // (`known-limit-forged-replica-cannot-edit`): the
                    // client's problem, not the room's, which must cope.
                    Err(_) if FORGED.with(Cell::get) => {
                        self.conns[i].broken = true;
                        return;
                    }
                    Err(_) => panic!("a client's own edit made its yrs panic: {}", last_panic()),
                };
                self.history.push(update.clone());
                if e & 0x80 == 0 {
                    self.send_update(i, update, e & 0x40 != 0);
                }
            }
            kind::RESEND => {
                let idx = usize::from(r.arg());
                if let Some(update) = pick(&self.history, idx) {
                    self.send_update(i, update, idx & 1 == 1);
                }
            }
            kind::MUTATE => {
                FORGED.with(|f| f.set(!strict_forged()));
                let (idx, pos, value, mode) = (r.arg(), r.arg(), r.arg(), r.arg());
                if let Some(mut update) = pick(&self.history, usize::from(idx)) {
                    mutate(&mut update, pos, value, mode);
                    self.send_update(i, update, false);
                }
            }
            kind::STEP1 => {
                let sv = match r.arg() % 3 {
                    0 => self.conns[i].replica.transact().state_vector().encode_v1(),
                    1 => StateVector::default().encode_v1(),
                    _ => r.bytes().to_vec(),
                };
                self.send_frame(i, Message::Sync(SyncMessage::Step1(&sv)).encode().into());
            }
            kind::AWARENESS => {
                let n = r.arg() % 3;
                let own = self.conns[i].replica.client_id().get();
                let mut update = Vec::new();
                write_var_uint(&mut update, u64::from(n));
                for _ in 0..n {
                    let (who, clock, state) = (r.arg(), r.arg(), r.arg());
                    let client = [own, 1, 2, own + 1][usize::from(who % 4)];
                    write_var_uint(&mut update, client);
                    write_var_uint(&mut update, u64::from(clock % 8));
                    write_var_string(
                        &mut update,
                        AWARENESS_STATES[usize::from(state) % AWARENESS_STATES.len()],
                    );
                }
                self.send_frame(i, Message::Awareness(&update).encode().into());
            }
            kind::QUERY => self.send_frame(i, Message::QueryAwareness.encode().into()),
            kind::EMIT => {
                let (name, payload, ack) = (r.arg(), r.arg(), r.arg());
                let frame = Ext::Emit {
                    name: EMIT_NAMES[usize::from(name) % EMIT_NAMES.len()],
                    payload: EMIT_PAYLOADS[usize::from(payload) % EMIT_PAYLOADS.len()],
                    ack: u64::from(ack % 4),
                }
                .encode();
                self.send_frame(i, frame.into());
            }
            kind::LEAVE => self.disconnect(i),
            kind::PUMP => {
                self.barrier();
                self.pump(i);
            }
            kind::IMPORT => {
                let idx = usize::from(r.arg());
                if let Some(update) = pick(&self.history, idx) {
                    match self.room.import(&update) {
                        Ok(_)
                        | Err(
                            RoomError::InvalidUpdate(_)
                            | RoomError::TooLarge(_)
                            | RoomError::Incomplete { .. },
                        ) => {}
                        Err(err) => panic!("import failed: {err} (last panic: {})", last_panic()),
                    }
                }
            }
            kind::CHECK => {
                let snapshot = self.barrier();
                self.check_store(&snapshot, "mid-way");
            }
            kind::TOGGLE => {
                let m = r.arg();
                self.disconnect(i);
                self.conns[i].extensions = m & 1 != 0;
                self.conns[i].can_write = m & 2 == 0;
            }
            kind::SET_WRITABLE => {
                let writable = r.arg() & 1 != 0;
                if self.ensure_joined(i) {
                    self.conns[i].can_write = writable;
                    self.deliver(i, Inbound::SetWritable(writable));
                }
            }
            _ => {}
        }
    }

    /// The room answers a request: the snapshot it would export.
    fn barrier(&mut self) -> Vec<u8> {
        match self.room.snapshot() {
            Ok(snapshot) => snapshot,
            Err(err) => panic!(
                "the room stopped answering: {err} (last panic: {})",
                last_panic()
            ),
        }
    }

    /// Joins connection `i` if it is not in the room; false if refused.
    fn ensure_joined(&mut self, i: usize) -> bool {
        self.notice_close(i);
        if self.conns[i].live.is_some() {
            return true;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (extensions, can_write) = (self.conns[i].extensions, self.conns[i].can_write);
        match self
            .room
            .join_with_capacity(id, extensions, can_write, self.outbox)
        {
            Ok(()) => {
                let conn = &mut self.conns[i];
                conn.live = Some(id);
                conn.sent.clear();
                conn.saved = 0;
                true
            }
            // The document outgrew the (tiny) limit: refusing is right.
            Err(RoomError::TooLarge(_)) => false,
            Err(err) => panic!(
                "the room refused a join: {err} (last panic: {})",
                last_panic()
            ),
        }
    }

    /// If the room told connection `i` to close, close it as the connection
    /// task would (after reading what was queued before the close).
    fn notice_close(&mut self, i: usize) {
        let Some(id) = self.conns[i].live else {
            return;
        };
        if let Some(close) = self.room.close_of(id) {
            assert!(
                matches!(
                    close.code,
                    close::INVALID_PAYLOAD | close::TOO_SLOW | close::DOCUMENT_TOO_LARGE
                ),
                "unexpected close {close:?} (last panic: {})",
                last_panic()
            );
            self.read_frames(i);
            self.disconnect(i);
        }
    }

    fn disconnect(&mut self, i: usize) {
        if let Some(id) = self.conns[i].live.take() {
            self.room.leave(id);
            self.room.forget(id);
        }
    }

    /// Sends a frame as the connection task would: decode, then deliver or
    /// close for bad input.
    fn send_frame(&mut self, i: usize, frame: Bytes) {
        if !self.ensure_joined(i) {
            return;
        }
        match connection::decode(&frame, self.conns[i].extensions) {
            Ok(Decoded::Room(inbound)) => self.deliver(i, inbound),
            Ok(Decoded::Ping(_) | Decoded::Nothing | Decoded::Auth(_)) => {}
            Err(_) => self.disconnect(i),
        }
    }

    fn send_update(&mut self, i: usize, update: Vec<u8>, step2: bool) {
        let frame = if step2 {
            Message::Sync(SyncMessage::Step2(&update)).encode()
        } else {
            Message::Sync(SyncMessage::Update(&update)).encode()
        };
        self.send_frame(i, frame.into());
    }

    fn deliver(&mut self, i: usize, inbound: Inbound) {
        let Some(id) = self.conns[i].live else {
            return;
        };
        if debug() {
            eprintln!("conn {i} (id {id}) delivers {inbound:?}");
        }
        if let Inbound::Update(update) = &inbound {
            self.conns[i].sent.push(update.clone());
        }
        self.room.deliver(id, inbound);
    }

    /// Applies what the room queued for connection `i` to its replica;
    /// returns the step 2 replies to send.
    fn read_frames(&mut self, i: usize) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        let mut log_doc: Option<Document> = None;
        let Some(id) = self.conns[i].live else {
            return replies;
        };
        let frames = self.room.frames(id);
        let conn = &mut self.conns[i];
        for frame in frames {
            if Ext::is_ext(&frame) {
                assert!(
                    conn.extensions,
                    "a stock client was sent an extension frame"
                );
                match Ext::decode(&frame).expect("the room's extension frames decode") {
                    Ext::Saved { through } => {
                        assert!(
                            through <= conn.sent.len() as u64,
                            "Saved {{ through: {through} }} after {} update messages",
                            conn.sent.len()
                        );
                        assert!(through >= conn.saved, "Saved went back");
                        let doc = log_doc.get_or_insert_with(|| {
                            merged(self.room.log()).unwrap_or_else(|e| panic!("{e}"))
                        });
                        for (n, update) in conn.sent[conn.saved as usize..through as usize]
                            .iter()
                            .enumerate()
                        {
                            let number = conn.saved as usize + n + 1;
                            if tolerate("content") {
                                break;
                            }
                            if let Err(why) = covered(doc, update) {
                                panic!(
                                    "Saved {{ through: {through} }} to connection {i} covers \
                                     update message {number}, which is not in the stored log: \
                                     {why}"
                                );
                            }
                        }
                        conn.saved = through;
                    }
                    Ext::Event { .. } | Ext::EmitAck { .. } => {}
                    // Refused events (read-only; a chat message too long or
                    // past the size limit) and a save stall: the member stays.
                    Ext::Error { code, .. }
                        if [
                            close::FORBIDDEN,
                            close::MESSAGE_TOO_BIG,
                            close::DOCUMENT_TOO_LARGE,
                            quire_protocol::session::SAVES_STALLED,
                        ]
                        .map(u64::from)
                        .contains(&code) => {}
                    other => panic!("the room queued {other:?}"),
                }
                continue;
            }
            match Message::decode(&frame).expect("the room's frames decode") {
                Message::Sync(SyncMessage::Step1(sv)) => {
                    let sv = StateVector::decode_v1(sv).expect("the room's state vector decodes");
                    replies.push(conn.replica.transact().encode_diff_v1(&sv));
                }
                Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) => {
                    let replica = &conn.replica;
                    let applied = catch_unwind(AssertUnwindSafe(|| {
                        let update = Update::decode_v1(update).map_err(|e| e.to_string())?;
                        replica
                            .transact_mut()
                            .apply_update(update)
                            .map_err(|e| e.to_string())
                    }));
                    match applied {
                        Ok(Ok(())) => {}
                        // A forged update can reuse the IDs of blocks this
                        // replica made, with other content; what the room
                        // then relays may not fit the replica's own copy
                        // (see "Invariants"). The room itself must cope.
                        _ if FORGED.with(Cell::get) => {}
                        Ok(Err(err)) => panic!("a client cannot apply what the room sent: {err}"),
                        Err(_) => panic!(
                            "what the room sent makes a client's yrs panic: {}",
                            last_panic()
                        ),
                    }
                }
                Message::Awareness(update) => {
                    AwarenessTable::new()
                        .apply(update, 0)
                        .expect("the room's awareness frames are valid");
                }
                // A read-only stock client is told with y-protocols' message.
                Message::PermissionDenied(_) => assert!(!conn.extensions),
                other => panic!("the room queued {other:?}"),
            }
        }
        replies
    }

    fn pump(&mut self, i: usize) {
        let replies = self.read_frames(i);
        self.notice_close(i);
        for reply in replies {
            if self.conns[i].live.is_none() {
                break;
            }
            self.send_update(i, reply, true);
        }
    }

    fn check_store(&self, snapshot: &[u8], when: &str) {
        if let Err(why) = same_document(self.room.log(), snapshot) {
            panic!("{when}: the stored log and the room's snapshot differ: {why}");
        }
    }

    fn finish(mut self) {
        for i in 0..CONNS {
            self.barrier();
            self.pump(i);
        }
        let snapshot = self.barrier();
        self.check_store(&snapshot, "at the end");
        for i in 0..CONNS {
            self.disconnect(i);
        }
        // Shutdown compacts the log (it grew).
        self.room.shutdown();
        self.check_store(&snapshot, "after the shutdown compaction");
        // A fresh room loads what the old one left.
        match self.room.reopen().snapshot() {
            Ok(reloaded) => {
                if let Err(why) = same_document(&[reloaded], &snapshot) {
                    panic!("a reloaded room differs from the old one: {why}");
                }
            }
            Err(err) => panic!("a fresh room could not load the log: {err}"),
        }
    }
}

fn pick(history: &[Vec<u8>], idx: usize) -> Option<Vec<u8>> {
    (!history.is_empty()).then(|| history[idx % history.len()].clone())
}

/// One local transaction on a replica; its update, or `None` if it changed nothing.
fn edit(replica: &Doc, e: u8, a: u8, b: u8) -> Option<Vec<u8>> {
    let text = replica.get_or_insert_text("content");
    let meta = replica.get_or_insert_map("meta");
    let mut txn = replica.transact_mut();
    let current = text.get_string(&txn);
    let boundaries: Vec<usize> = current
        .char_indices()
        .map(|(i, _)| i)
        .chain([current.len()])
        .collect();
    let at = |x: u8| boundaries[usize::from(x) % boundaries.len()];
    match e % 4 {
        0 | 1 => {
            let s: String = (0..=(b % 5))
                .map(|k| ALPHABET[usize::from(a.wrapping_add(k)) % ALPHABET.len()])
                .collect();
            text.insert(&mut txn, at(a) as u32, &s);
        }
        2 => {
            let start = at(a);
            let end = at(a.wrapping_add(b % 6).max(a)).max(start);
            if end == start {
                return None;
            }
            text.remove_range(&mut txn, start as u32, (end - start) as u32);
        }
        _ => {
            meta.insert(&mut txn, format!("k{}", a % 4), i64::from(b));
        }
    }
    Some(txn.encode_update_v1())
}

/// Corrupts an update: flip, insert, remove a byte, or truncate.
fn mutate(update: &mut Vec<u8>, pos: u8, value: u8, mode: u8) {
    if update.is_empty() {
        update.push(value);
        return;
    }
    let i = usize::from(pos) % update.len();
    match mode % 4 {
        0 => update[i] ^= value | 1,
        1 => update.insert(i, value),
        2 => {
            update.remove(i);
        }
        _ => update.truncate(i),
    }
}

/// Merges a stored log as the room does when it loads.
pub fn merged(log: &[Vec<u8>]) -> Result<Document, String> {
    Document::from_updates(log.iter().map(Vec::as_slice))
        .map_err(|e| format!("the stored log does not merge: {e}"))
}

/// What a document holds, independent of how yrs happens to keep it: every
/// block it holds (integrated, pending, or integrated behind a gap, as merged
/// clock ranges), every deletion (likewise), and what it shows (its roots
/// rendered as JSON after a reload, as a snapshot export does).
///
/// Where yrs keeps a part that waits for others, the "missing" state vector
/// it records for it, and even its state vector depend on the order updates
/// arrived in: two updates applied one after the other leave a different
/// pending record than the same two merged, and a forged update that
/// overlaps blocks the document has can leave a gap marker ("skip") behind
/// that a reload does not. None of these is part of the fingerprint.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    blocks: Vec<(u64, Vec<(u32, u32)>)>,
    deleted: Vec<(u64, Vec<(u32, u32)>)>,
    shows: String,
}

fn ranges(set: &yrs::IdSet) -> Vec<(u64, Vec<(u32, u32)>)> {
    let mut out: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
    for (client, range) in set.iter() {
        let mut rs: Vec<(u32, u32)> = range
            .iter()
            .filter(|r| r.start < r.end)
            .map(|r| (r.start, r.end))
            .collect();
        rs.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (start, end) in rs {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        if !merged.is_empty() {
            out.push((client.get(), merged));
        }
    }
    out.sort_unstable();
    out
}

pub fn fingerprint(document: &Document) -> Fingerprint {
    let txn = document.doc().transact();
    let store = txn.store();
    // The integrated part as yrs writes it for a peer with nothing, plus
    // the pending parts as yrs keeps them; read separately because merging
    // them (what `encode_state` does) is where yrs can panic.
    let integrated = Update::decode_v1(&txn.encode_diff_v1(&StateVector::default()))
        .expect("yrs decodes its own encoding");
    let mut blocks = integrated.insertions(true);
    let mut deleted = integrated.delete_set().clone();
    if let Some(pending) = store.pending_update() {
        blocks.merge_with(pending.update.insertions(true));
        deleted.merge_with(pending.update.delete_set().clone());
    }
    if let Some(pending) = store.pending_ds() {
        deleted.merge_with(pending.clone());
    }
    drop(txn);
    if FORGED.with(Cell::get) {
        return Fingerprint {
            blocks: ranges(&blocks),
            deleted: Vec::new(),
            shows: "(not compared: forged updates)".into(),
        };
    }
    let shows = document
        .encode_state()
        .and_then(|state| snapshot::render(state, snapshot::Format::Json))
        .map(|json| String::from_utf8_lossy(&json).into_owned())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    Fingerprint {
        blocks: ranges(&blocks),
        deleted: ranges(&deleted),
        shows,
    }
}

/// Whether `update` is already wholly inside `doc` (integrated, or pending
/// in it): applying it changes nothing, not even the pending parts.
pub fn covered(doc: &mut Document, update: &[u8]) -> Result<(), String> {
    let before = fingerprint(doc);
    doc.apply(update)
        .map_err(|e| format!("it does not apply: {e}"))?;
    let after = fingerprint(doc);
    if after == before {
        Ok(())
    } else {
        Err(format!("applying it changes {before:?} into {after:?}"))
    }
}

/// Whether a stored log and a snapshot (one update) hold the same document:
/// same fingerprint, and neither adds anything to the other.
pub fn same_document(log: &[Vec<u8>], snapshot: &[u8]) -> Result<(), String> {
    let mut stored = merged(log)?;
    let mut live = Document::from_updates([snapshot])
        .map_err(|e| format!("the snapshot does not load: {e}"))?;
    if tolerate("content") {
        return Ok(());
    }
    let (a, b) = (fingerprint(&stored), fingerprint(&live));
    if debug() {
        eprintln!("log {log:?}\nsnapshot {snapshot:?}\nstored {a:?}\nroom   {b:?}");
    }
    let stored_state = stored
        .encode_state()
        .map_err(|e| format!("encoding the stored log: {e}"))?;
    if a != b {
        return Err(format!("stored {a:?}, room {b:?}"));
    }
    let live_state = live
        .encode_state()
        .map_err(|e| format!("encoding the room's snapshot: {e}"))?;
    covered(&mut stored, &live_state).map_err(|e| format!("room → stored: {e}"))?;
    covered(&mut live, &stored_state).map_err(|e| format!("stored → room: {e}"))?;
    Ok(())
}
