//! The seam between a room and the other nodes serving the same document.
//!
//! A room of a node that is one of several follows its document on the
//! [`Fanout`] and publishes there what other nodes' rooms must see; the
//! room core knows only [`NodeMessage`]s (one input, one output kind), not
//! where they travel. Two implementations:
//!
//! - [`SingleNode`]: one Quire process; nothing is published, no feed ever
//!   yields. The default.
//! - [`redis::RedisFanout`]: Redis Streams, one stream per document plus a
//!   small one for presence, one blocking reader per node (see its docs).
//!
//! **What a node publishes, and when.** A document update is published
//! once the store made it durable (for PostgreSQL: after the COMMIT that
//! holds it), never before: every update on a stream is then in the
//! database, so a room that notes the stream position *before* loading
//! from the database and reads from that position misses nothing, and any
//! gap (a full feed, Redis down, a lost publish) is closed by reading the
//! database after the seq the room last read ([`Incoming::Resync`]).
//! Presence, named events and chat are published at once (they are not
//! part of the document; chat is stored by the node that stamped it).

pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use quire_protocol::DocName;
use tokio::sync::{Notify, mpsc};

/// What one node's room tells the other nodes' rooms of the same document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMessage {
    /// A document update (a delta) the origin node stored durably: apply it
    /// and relay it to the local members; never stored again.
    Update(Bytes),
    /// A presence (awareness) update from the origin node's members.
    Awareness(Bytes),
    /// A named event from one of the origin node's members.
    Event(RemoteEvent),
    /// A chat message, stamped and stored by the origin node; `payload` is
    /// the stored record.
    Chat(RemoteEvent),
    /// A room opened on the origin node: send it your members' presence,
    /// and read the store past your last seq. (What a node killed between
    /// its COMMIT and its publish stored reaches the others this way: its
    /// clients resend it, unacknowledged, to the room that opens for them;
    /// that room loaded it already and publishes nothing.)
    RoomOpened,
    /// The document was deleted through the origin node: close every
    /// connection to it.
    Deleted,
}

/// Which node a message came from: a hash of the id the node stamps on
/// what it publishes. Rooms use it to tell apart the presence that
/// different nodes relay (a client that moved between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeKey(pub u64);

impl NodeKey {
    /// Stands for the store in what a room's resync read from it (updates
    /// and deletions; presence never comes that way).
    pub const STORE: NodeKey = NodeKey(0);

    /// The key of the node whose id is `id`.
    pub fn of(id: &[u8]) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// A named event or chat message as it crosses nodes: what the local
/// members' frame is built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteEvent {
    pub name: String,
    pub payload: String,
    /// The sender's connection id on its own node.
    pub sender: u64,
    pub sender_name: String,
    pub at_ms: u64,
}

/// What a room's [`Feed`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message from another node's room.
    Message { from: NodeKey, message: NodeMessage },
    /// Something from other nodes may have been missed (the feed was full,
    /// the connection to the other nodes was lost, another node could not
    /// publish): read what the store holds past the last seq read.
    Resync,
}

/// Cross-node fan-out, as a node's rooms use it.
pub trait Fanout: Send + Sync + 'static {
    /// Starts following `doc` for a room that is about to load it. The
    /// position on the other nodes' messages is noted *before* this
    /// returns, so everything published after the caller's load began is
    /// yielded (or a [`Incoming::Resync`] says to read it from the store).
    fn follow<'a>(&'a self, doc: &'a DocName) -> Pin<Box<dyn Future<Output = Feed> + Send + 'a>>;
    /// Hands `message` to the other nodes; never waits. A message that
    /// cannot be sent makes the other nodes' rooms resync later.
    fn publish(&self, doc: &DocName, message: NodeMessage);
    /// Whether there are other nodes at all (rooms then publish).
    fn is_clustered(&self) -> bool;
    /// Whether the fan-out is connected (readiness); a single node always is.
    fn is_ready(&self) -> bool;
}

/// One node: nothing to tell anyone.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleNode;

impl Fanout for SingleNode {
    fn follow<'a>(&'a self, _doc: &'a DocName) -> Pin<Box<dyn Future<Output = Feed> + Send + 'a>> {
        Box::pin(async { Feed::idle() })
    }

    fn publish(&self, _doc: &DocName, _message: NodeMessage) {}

    fn is_clustered(&self) -> bool {
        false
    }

    fn is_ready(&self) -> bool {
        true
    }
}

/// Raised by whoever fills a feed when it had to leave something out.
#[derive(Debug, Default)]
pub struct Lag {
    /// Set until the room has taken the resync it asks for.
    raised: AtomicBool,
    /// Wakes the room when the flag is raised while its queue is empty.
    wake: Notify,
}

impl Lag {
    /// Asks the feed's room to resync from the store.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn take(&self) -> bool {
        self.raised.swap(false, Ordering::AcqRel)
    }
}

/// A room's view of the other nodes: a bounded queue of their messages and
/// a flag for "you missed some". Dropping it stops following.
pub struct Feed {
    /// Messages from other nodes, in stream order; `None`: nothing comes.
    messages: Option<mpsc::Receiver<(NodeKey, NodeMessage)>>,
    /// Raised when a message could not be queued (or may have been lost).
    lag: Arc<Lag>,
    /// Unregisters the room from the fan-out when dropped.
    _following: Option<Box<dyn Send + Sync>>,
}

impl Feed {
    /// A feed that never yields (one node).
    pub fn idle() -> Self {
        Self {
            messages: None,
            lag: Arc::default(),
            _following: None,
        }
    }

    /// A feed over `messages`, flagged by `lag`, that runs `following`'s
    /// `Drop` when the room stops.
    pub fn new(
        messages: mpsc::Receiver<(NodeKey, NodeMessage)>,
        lag: Arc<Lag>,
        following: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            messages: Some(messages),
            lag,
            _following: Some(following),
        }
    }

    /// Whether no message from the other nodes waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.messages.as_ref().is_none_or(|m| m.is_empty())
    }

    /// The next thing to act on; waits forever on an idle feed.
    pub async fn recv(&mut self) -> Incoming {
        let Some(messages) = self.messages.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            if self.lag.take() {
                return Incoming::Resync;
            }
            tokio::select! {
                biased;
                _ = self.lag.wake.notified() => {}
                message = messages.recv() => match message {
                    Some((from, message)) => return Incoming::Message { from, message },
                    None => return std::future::pending().await,
                },
            }
        }
    }
}

/// The fan-out a server without `--redis-url` uses.
pub fn single_node() -> Arc<dyn Fanout> {
    Arc::new(SingleNode)
}
