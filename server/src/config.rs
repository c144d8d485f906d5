//! Server settings. `main.rs` fills them from flags and environment
//! variables; tests build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::TokenKey;

/// Everything `quire serve` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Folder of the embedded sled store.
    pub data: PathBuf,
    /// Largest WebSocket message accepted; larger ones close the connection (1009).
    pub max_message_bytes: usize,
    /// How long an empty room stays in memory before it is flushed and evicted.
    pub room_grace: Duration,
    /// Longest delay between storing an update and flushing it to disk.
    pub commit_window: Duration,
    /// Awareness states not renewed for this long are removed (y-protocols uses 30 s).
    pub awareness_timeout: Duration,
    /// Frames that may wait for one slow client before it is cut off (4408).
    pub outbox_capacity: usize,
    /// A room rewrites its log as one state update once it holds this many updates.
    pub compact_after: u64,
    /// How often the server checks each connection for life.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub ping_timeout: Duration,
    /// Largest document a room serves or grows to (4413 beyond).
    pub max_document_bytes: u64,
    /// Frames larger than this go to Quire clients in fragments, so that
    /// pings keep flowing during a large initial sync.
    pub fragment_bytes: usize,
    /// Chat messages sent to a Quire client when it joins.
    pub chat_history: usize,
    /// The built web app (`cargo xtask web`), served at `/` when set.
    pub static_dir: Option<PathBuf>,
    /// With a key, every WebSocket and API request needs a signed token.
    pub auth_key: Option<TokenKey>,
    /// Origins (e.g. `https://docs.example.com`) allowed to open WebSockets
    /// besides the server's own; requests without an Origin (native clients)
    /// are allowed.
    pub allowed_origins: Vec<String>,
    /// Open connections, in total (beyond: HTTP 503).
    pub max_connections: usize,
    /// Open connections from one IP address (beyond: HTTP 429).
    pub max_connections_per_ip: usize,
    /// Documents held in memory at once (beyond: 1013, try again later).
    pub max_rooms: usize,
    /// Sustained messages per second one connection may send (it is slowed
    /// down beyond, never cut off); bursts up to one second's worth.
    pub max_messages_per_sec: u32,
    /// Sustained bytes per second one connection may send, likewise.
    pub max_bytes_per_sec: u64,
}

impl Config {
    /// Defaults for everything but where to listen and store.
    pub fn new(addr: SocketAddr, data: PathBuf) -> Self {
        Self {
            addr,
            data,
            max_message_bytes: 32 * 1024 * 1024,
            room_grace: Duration::from_secs(5),
            commit_window: Duration::from_millis(2),
            awareness_timeout: Duration::from_secs(30),
            outbox_capacity: 4096,
            compact_after: 1000,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_document_bytes: 128 * 1024 * 1024,
            fragment_bytes: 256 * 1024,
            chat_history: 50,
            static_dir: None,
            auth_key: None,
            allowed_origins: Vec::new(),
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            max_rooms: 10_000,
            max_messages_per_sec: 500,
            max_bytes_per_sec: 8 * 1024 * 1024,
        }
    }
}
