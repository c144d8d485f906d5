//! A sans-IO network: N `SyncSession`s and the server's real room core
//! (`quire_server::room_core`, through its synchronous harness), joined by
//! message queues the test schedules by hand (deliver, deliver twice,
//! deliver out of order, drop a link, reconnect, let time pass).
//!
//! The server side is what a connection and its room do: the connection
//! sends the Welcome, answers application pings and decodes frames; the
//! room core does everything else (step 1 on join, sync answers, updates,
//! relays, presence, `Saved`). Its store is in memory and durable as soon
//! as it is written, so `Saved` follows a stored update at once.

use std::collections::VecDeque;

use bytes::Bytes;
use quire_protocol::ext::{Ext, Welcome};
use quire_protocol::session::{Action, Connection, SessionConfig, SyncSession};
use quire_server::document::Document;
use quire_server::room_core::harness::{Framed, Harness};
use yrs::{GetString, ReadTxn, StateVector, Text, Transact};

/// The root text every client edits.
pub const TEXT: &str = "content";
/// What the server's Welcome announces: short, so that letting time pass
/// can make a session give up on a silent link.
pub const PING_INTERVAL_MS: u64 = 1_000;
pub const PING_TIMEOUT_MS: u64 = 500;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// One client: its session and the frames in flight on its current link.
pub struct Peer {
    pub session: SyncSession,
    /// Server-side connection id of the open link, if any.
    pub link: Option<u64>,
    pub up: VecDeque<Vec<u8>>,
    pub down: VecDeque<Vec<u8>>,
    /// The update of every local edit, in order.
    pub edits: Vec<Vec<u8>>,
}

pub struct Sim {
    /// The room, with its members' outbound queues.
    room: Harness,
    pub peers: Vec<Peer>,
    next_conn: u64,
    pub now: u64,
}

impl Sim {
    pub fn new(clients: usize, seed: u64) -> Self {
        let peers = (0..clients)
            .map(|i| {
                let config = SessionConfig {
                    seed: seed.wrapping_mul(31).wrapping_add(i as u64 + 1),
                    ..SessionConfig::default()
                };
                let doc = yrs::Doc::with_client_id(1 + i as u64);
                let mut session = SyncSession::with_doc(doc, config);
                session.start(0);
                Peer {
                    session,
                    link: None,
                    up: VecDeque::new(),
                    down: VecDeque::new(),
                    edits: Vec::new(),
                }
            })
            .collect();
        let mut config = Harness::config();
        // Every frame fits: the simulated network never cuts a slow reader.
        config.outbox_capacity = usize::MAX;
        let mut sim = Self {
            room: Harness::new(config),
            peers,
            next_conn: 1,
            now: 0,
        };
        for i in 0..clients {
            sim.settle(i);
        }
        sim
    }

    /// Carries out what the session asked for and queues what it sends.
    pub fn settle(&mut self, i: usize) {
        loop {
            let mut acted = false;
            while let Some(action) = self.peers[i].session.poll_action() {
                acted = true;
                match action {
                    Action::Connect => self.open(i),
                    Action::Disconnect { .. } => self.cut(i),
                }
            }
            while let Some(frame) = self.peers[i].session.poll_transmit() {
                if self.peers[i].link.is_some() {
                    self.peers[i].up.push_back(frame);
                }
            }
            while self.peers[i].session.poll_event().is_some() {}
            if !acted {
                break;
            }
        }
    }

    /// The server's live document.
    pub fn server(&self) -> &Document {
        self.room
            .document()
            .expect("the room never fails in memory")
    }

    /// The socket opens: the server joins the connection, the session
    /// sends its step 1; Welcome and the server's step 1 are on their way.
    fn open(&mut self, i: usize) {
        self.cut_link(i);
        let conn = self.next_conn;
        self.next_conn += 1;
        let peer = &mut self.peers[i];
        peer.link = Some(conn);
        peer.session.on_open(self.now);
        let welcome = Ext::Welcome(Welcome {
            conn_id: conn,
            server_time_ms: self.now,
            ping_interval_ms: PING_INTERVAL_MS,
            ping_timeout_ms: PING_TIMEOUT_MS,
            max_message_bytes: 1 << 20,
            max_document_bytes: 1 << 30,
        });
        peer.down.push_back(welcome.encode());
        self.room
            .join(conn, true, true)
            .expect("the room takes every connection");
        self.collect();
    }

    /// Moves what the room queued for each connection onto its link.
    fn collect(&mut self) {
        for peer in &mut self.peers {
            if let Some(conn) = peer.link {
                peer.down
                    .extend(self.room.frames(conn).into_iter().map(Vec::from));
            }
        }
    }

    /// The link is gone: the server forgets the connection, frames in
    /// flight are lost.
    fn cut_link(&mut self, i: usize) {
        if let Some(conn) = self.peers[i].link.take() {
            self.room.leave(conn);
            self.room.forget(conn);
            self.collect();
        }
        self.peers[i].up.clear();
        self.peers[i].down.clear();
    }

    /// The session dropped the link itself (`Action::Disconnect`).
    fn cut(&mut self, i: usize) {
        self.cut_link(i);
    }

    /// The network drops the link; the session hears of it.
    pub fn drop_link(&mut self, i: usize) {
        if self.peers[i].link.is_some() {
            self.cut_link(i);
            self.peers[i]
                .session
                .on_close(Some(1006), "link dropped", self.now);
        }
        self.settle(i);
    }

    /// The platform reports the network back: reconnect now.
    pub fn reconnect(&mut self, i: usize) {
        self.peers[i].session.network_online(self.now);
        self.settle(i);
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.peers.len() {
            self.peers[i].session.tick(self.now);
            self.settle(i);
        }
    }

    /// A local edit on client `i`'s text: insert at `pos` (modulo length).
    pub fn insert(&mut self, i: usize, pos: usize, text: &str) {
        let now = self.now;
        let session = &mut self.peers[i].session;
        let content = session.doc().get_or_insert_text(TEXT);
        let update = session.edit(now, |txn| {
            let len = content.len(txn) as usize;
            content.insert(txn, (pos % (len + 1)) as u32, text);
            txn.encode_update_v1()
        });
        self.peers[i].edits.push(update);
        self.settle(i);
    }

    /// A local deletion of up to `len` characters at `pos`; nothing if the
    /// text is empty.
    pub fn delete(&mut self, i: usize, pos: usize, len: usize) {
        let now = self.now;
        let session = &mut self.peers[i].session;
        let content = session.doc().get_or_insert_text(TEXT);
        let size = content.len(&session.doc().transact()) as usize;
        if size == 0 {
            return;
        }
        let start = pos % size;
        let len = len.clamp(1, size - start);
        let update = session.edit(now, |txn| {
            content.remove_range(txn, start as u32, len as u32);
            txn.encode_update_v1()
        });
        self.peers[i].edits.push(update);
        self.settle(i);
    }

    /// Delivers the frame at position `k` (of the first `window`) of one
    /// queue; with `again`, delivers it and leaves it queued (a duplicate).
    /// Returns false if the queue was empty.
    pub fn deliver(&mut self, i: usize, dir: Dir, k: usize, window: usize, again: bool) -> bool {
        let queue = match dir {
            Dir::Up => &mut self.peers[i].up,
            Dir::Down => &mut self.peers[i].down,
        };
        if queue.is_empty() {
            return false;
        }
        let k = k % queue.len().min(window.max(1));
        let frame = if again {
            queue[k].clone()
        } else {
            queue.remove(k).expect("index in range")
        };
        match dir {
            Dir::Up => self.server_receive(i, &frame),
            Dir::Down => {
                self.peers[i].session.on_message(&frame, self.now);
                self.settle(i);
            }
        }
        true
    }

    /// The server handles one frame from client `i`'s connection.
    fn server_receive(&mut self, i: usize, frame: &[u8]) {
        let Some(conn) = self.peers[i].link else {
            return;
        };
        match self
            .room
            .send_frame(conn, &Bytes::copy_from_slice(frame), true)
        {
            Framed::Delivered | Framed::Ignored => {}
            Framed::Ping(nonce) => self.peers[i].down.push_back(Ext::Pong(nonce).encode()),
            Framed::Refused(close) => panic!("sessions send valid frames: {close:?}"),
        }
        self.collect();
    }

    /// Runs the network to rest: every client online, every frame
    /// delivered in order, until nothing moves and everyone is synced.
    pub fn flush(&mut self) {
        for _ in 0..1_000 {
            let mut moved = false;
            for i in 0..self.peers.len() {
                if matches!(
                    self.peers[i].session.status().connection,
                    Connection::Offline { .. }
                ) {
                    self.reconnect(i);
                    moved = true;
                }
                while self.deliver(i, Dir::Up, 0, 1, false) {
                    moved = true;
                }
                while self.deliver(i, Dir::Down, 0, 1, false) {
                    moved = true;
                }
            }
            let synced = self
                .peers
                .iter()
                .all(|p| p.session.status().connection == Connection::Synced);
            if !moved && synced {
                return;
            }
        }
        panic!("the network did not come to rest");
    }

    pub fn server_text(&self) -> String {
        let doc = self.server().doc();
        doc.get_or_insert_text(TEXT).get_string(&doc.transact())
    }

    pub fn text(&self, i: usize) -> String {
        let doc = self.peers[i].session.doc();
        doc.get_or_insert_text(TEXT).get_string(&doc.transact())
    }
}

/// A document's clocks, clients at clock 0 left out, sorted.
pub fn clocks(doc: &yrs::Doc) -> Vec<(u64, u32)> {
    clocks_of(&doc.transact().state_vector())
}

pub fn clocks_of(sv: &StateVector) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = sv
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(id, c)| (id.get(), *c))
        .collect();
    v.sort_unstable();
    v
}

pub fn has_pending(doc: &yrs::Doc) -> bool {
    doc.transact().has_missing_updates()
}
