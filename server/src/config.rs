//! Server settings: one definition for the `quire serve` flags (clap's
//! `Args`, with their environment variables) and for [`Config::new`],
//! which tests and tools call. Both take their defaults from [`defaults`],
//! so the binary and the tests cannot drift apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quire_storage::PgOptions;

use crate::auth::TokenKey;

/// The default of every setting. Durations are written as `quire serve`
/// takes them (humantime).
pub mod defaults {
    pub const ADDR: &str = "127.0.0.1:8080";
    pub const DATA: &str = "./quire-data";
    pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
    pub const ROOM_GRACE: &str = "5s";
    pub const COMMIT_WINDOW: &str = "10ms";
    pub const AWARENESS_TIMEOUT: &str = "30s";
    pub const OUTBOX_CAPACITY: usize = 4096;
    pub const COMPACT_AFTER: u64 = 1000;
    pub const PING_INTERVAL: &str = "25s";
    pub const PING_TIMEOUT: &str = "20s";
    pub const MAX_DOCUMENT_BYTES: u64 = 128 * 1024 * 1024;
    pub const FRAGMENT_BYTES: usize = 256 * 1024;
    pub const CHAT_HISTORY: usize = 50;
    pub const MAX_CONNECTIONS: usize = 20_000;
    pub const MAX_CONNECTIONS_PER_IP: usize = 1_000;
    pub const MAX_ROOMS: usize = 10_000;
    pub const MAX_MESSAGES_PER_SEC: u32 = 100_000;
    pub const MAX_BYTES_PER_SEC: u64 = 8 * 1024 * 1024;
    pub const MAX_ROOM_MS_PER_SEC: u32 = 500;
    pub const RATE_BURST: &str = "10s";

    // ----- room limits (issue 12, room side) -----
    pub const SAVE_STALL_TIMEOUT: &str = "5s";
    pub const MAX_PRESENCE_PER_CONNECTION: usize = 16;
    pub const MAX_PRESENCE_PER_ROOM: usize = 10_000;
    pub const MAX_PRESENCE_STATE_BYTES: usize = 64 * 1024;
    pub const MAX_CHAT_MESSAGE_BYTES: usize = 4 * 1024;
    pub const CHAT_HISTORY_BYTES: u64 = 64 * 1024;

    // ----- cluster mode (issue 15) -----
    pub const DATABASE_POOL_SIZE: u32 = 8;
}

/// Defaults of the abuse-resistance settings (issue 12, connection side).
pub mod edge_defaults {
    pub const OUTBOX_BYTES: usize = 8 * 1024 * 1024;
    pub const HEADER_TIMEOUT: &str = "10s";
    pub const AUTH_TIMEOUT: &str = "3s";
    pub const MESSAGE_TIMEOUT: &str = "60s";
    pub const MAX_COLD_EXPORTS: usize = 4;
}

/// Shortest ping interval and timeout `quire serve` accepts.
const MIN_PING: Duration = Duration::from_millis(10);

/// Everything `quire serve` can be told.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "QUIRE_ADDR", default_value = defaults::ADDR)]
    pub addr: SocketAddr,
    /// Folder of the embedded sled store (the command's global `--data`).
    #[arg(skip = PathBuf::from(defaults::DATA))]
    pub data: PathBuf,
    /// Largest WebSocket message or upload, in bytes (1009 / 413 beyond).
    #[arg(long, env = "QUIRE_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// How long an empty room stays loaded before it is flushed and evicted (e.g. 5s, 500ms).
    #[arg(long, env = "QUIRE_ROOM_GRACE", default_value = defaults::ROOM_GRACE, value_parser = humantime::parse_duration)]
    pub room_grace: Duration,
    /// How long stored updates wait to be flushed to disk together; an
    /// update a Quire client waits to see `Saved` is flushed at once when
    /// the store was idle.
    #[arg(long, env = "QUIRE_COMMIT_WINDOW", default_value = defaults::COMMIT_WINDOW, value_parser = humantime::parse_duration)]
    pub commit_window: Duration,
    /// Presence not renewed for this long is removed (y-protocols uses 30 s).
    #[arg(long, env = "QUIRE_AWARENESS_TIMEOUT", default_value = defaults::AWARENESS_TIMEOUT, value_parser = humantime::parse_duration)]
    pub awareness_timeout: Duration,
    /// Frames queued for one client before it is cut off as too slow (4408).
    #[arg(long, env = "QUIRE_OUTBOX_CAPACITY", default_value_t = defaults::OUTBOX_CAPACITY)]
    pub outbox_capacity: usize,
    /// Rewrite a document's log as one update once it holds this many
    /// entries and those after the last rewrite hold as many bytes as it
    /// (or once it holds 16 times this many, whatever their size).
    #[arg(long, env = "QUIRE_COMPACT_AFTER", default_value_t = defaults::COMPACT_AFTER)]
    pub compact_after: u64,
    /// How often each connection is checked for life (e.g. 25s, 500ms).
    #[arg(long, env = "QUIRE_PING_INTERVAL", default_value = defaults::PING_INTERVAL, value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    #[arg(long, env = "QUIRE_PING_TIMEOUT", default_value = defaults::PING_TIMEOUT, value_parser = humantime::parse_duration)]
    pub ping_timeout: Duration,
    /// Largest document served or grown to, in bytes (4413 beyond).
    #[arg(long, env = "QUIRE_MAX_DOCUMENT_BYTES", default_value_t = defaults::MAX_DOCUMENT_BYTES)]
    pub max_document_bytes: u64,
    /// Frames larger than this go to Quire clients in fragments, so that
    /// pings keep flowing during a large initial sync (not a flag).
    #[arg(skip = defaults::FRAGMENT_BYTES)]
    pub fragment_bytes: usize,
    /// Chat messages sent to a Quire client when it joins (not a flag).
    #[arg(skip = defaults::CHAT_HISTORY)]
    pub chat_history: usize,
    /// The built web app to serve at / (`cargo xtask serve` passes it).
    #[arg(long, env = "QUIRE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Secret that signs access tokens; with it, every request needs one.
    #[arg(long, env = "QUIRE_AUTH_KEY", hide_env_values = true, value_parser = token_key)]
    pub auth_key: Option<TokenKey>,
    /// An origin allowed to open WebSockets besides this server's own
    /// (repeatable; e.g. `https://docs.example.com`). Requests without an
    /// Origin (native clients) are allowed.
    #[arg(
        long = "allowed-origin",
        env = "QUIRE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Open connections in total (HTTP 503 beyond).
    #[arg(long, env = "QUIRE_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Open connections from one IP address (HTTP 429 beyond).
    #[arg(long, env = "QUIRE_MAX_CONNECTIONS_PER_IP", default_value_t = defaults::MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Documents held in memory at once (1013, try again later, beyond).
    #[arg(long, env = "QUIRE_MAX_ROOMS", default_value_t = defaults::MAX_ROOMS)]
    pub max_rooms: usize,
    /// Messages per second one connection may send (slowed down beyond,
    /// never cut off; bursts up to `--rate-burst` worth). A backstop above
    /// what one room applies: `--max-room-ms-per-sec` is the limit that
    /// follows what messages cost.
    #[arg(long, env = "QUIRE_MAX_MESSAGES_PER_SEC", default_value_t = defaults::MAX_MESSAGES_PER_SEC)]
    pub max_messages_per_sec: u32,
    /// Bytes per second one connection may send, likewise.
    #[arg(long, env = "QUIRE_MAX_BYTES_PER_SEC", default_value_t = defaults::MAX_BYTES_PER_SEC)]
    pub max_bytes_per_sec: u64,
    /// Milliseconds per second of its room's time one connection's messages
    /// may take (merging, storing, relaying them), likewise: a client that
    /// sends many cheap updates fast is not slowed, one whose messages keep
    /// the room busy beyond this share is.
    #[arg(long, env = "QUIRE_MAX_ROOM_MS_PER_SEC", default_value_t = defaults::MAX_ROOM_MS_PER_SEC)]
    pub max_room_ms_per_sec: u32,
    /// How many seconds' worth of each per-connection rate a connection may
    /// spend at once before it is slowed (a paste, an import, a replay).
    #[arg(long, env = "QUIRE_RATE_BURST", default_value = defaults::RATE_BURST, value_parser = humantime::parse_duration)]
    pub rate_burst: Duration,

    // ----- connection-side limits (issue 12) -----
    /// Bytes queued for one client before it is cut off as too slow (4408);
    /// one larger frame (a big initial sync) may wait beyond it at a time.
    #[arg(long, env = "QUIRE_OUTBOX_BYTES", default_value_t = edge_defaults::OUTBOX_BYTES)]
    pub outbox_bytes: usize,
    /// How long a client may take to send a request's headers (HTTP and
    /// WebSocket upgrades alike); the connection is dropped after it.
    #[arg(long, env = "QUIRE_HEADER_TIMEOUT", default_value = edge_defaults::HEADER_TIMEOUT, value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a Quire client without a token in its URL has to send it
    /// in-band (4401 after).
    #[arg(long, env = "QUIRE_AUTH_TIMEOUT", default_value = edge_defaults::AUTH_TIMEOUT, value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,
    /// How long one WebSocket message may take to arrive once it started
    /// (4408 after), however alive the heartbeat keeps the link; also how
    /// long an HTTP request body may take (408 after).
    #[arg(long, env = "QUIRE_MESSAGE_TIMEOUT", default_value = edge_defaults::MESSAGE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub message_timeout: Duration,
    /// Host names this server answers to besides IP addresses and
    /// `localhost` (repeatable; e.g. `docs.example.com`). Any other Host
    /// header is refused (421), which defeats DNS rebinding.
    #[arg(
        long = "public-host",
        env = "QUIRE_PUBLIC_HOSTS",
        value_delimiter = ','
    )]
    pub public_hosts: Vec<String>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the real
    /// client for the per-address limit (repeatable). From anyone else the
    /// header is ignored.
    #[arg(long = "trust-proxy", env = "QUIRE_TRUST_PROXY", value_delimiter = ',')]
    pub trust_proxy: Vec<std::net::IpAddr>,
    /// Exports of documents not in memory built at once (503 with
    /// Retry-After beyond).
    #[arg(long, env = "QUIRE_MAX_COLD_EXPORTS", default_value_t = edge_defaults::MAX_COLD_EXPORTS)]
    pub max_cold_exports: usize,

    // ----- room limits (issue 12, room side) -----
    /// How long written changes may wait for the disk before Quire clients
    /// are told saving has stalled (no `Saved` is sent meanwhile).
    #[arg(long, env = "QUIRE_SAVE_STALL_TIMEOUT", default_value = defaults::SAVE_STALL_TIMEOUT, value_parser = humantime::parse_duration)]
    pub save_stall_timeout: Duration,
    /// Awareness clients one connection may introduce, counting removed
    /// ones until it leaves (1007 beyond).
    #[arg(long, env = "QUIRE_MAX_PRESENCE_PER_CONNECTION", default_value_t = defaults::MAX_PRESENCE_PER_CONNECTION)]
    pub max_presence_per_connection: usize,
    /// Awareness clients one document lists (1013 for the connection that
    /// would pass it).
    #[arg(long, env = "QUIRE_MAX_PRESENCE_PER_ROOM", default_value_t = defaults::MAX_PRESENCE_PER_ROOM)]
    pub max_presence_per_room: usize,
    /// Bytes of one awareness state (1009 beyond).
    #[arg(long, env = "QUIRE_MAX_PRESENCE_STATE_BYTES", default_value_t = defaults::MAX_PRESENCE_STATE_BYTES)]
    pub max_presence_state_bytes: usize,
    /// Bytes of text in one chat message (refused beyond, Error 1009).
    #[arg(long, env = "QUIRE_MAX_CHAT_MESSAGE_BYTES", default_value_t = defaults::MAX_CHAT_MESSAGE_BYTES)]
    pub max_chat_message_bytes: usize,
    /// Bytes of chat a document keeps (oldest dropped beyond; at most the
    /// last 50 messages too), sent in one frame to a joining Quire client.
    #[arg(long, env = "QUIRE_CHAT_HISTORY_BYTES", default_value_t = defaults::CHAT_HISTORY_BYTES, value_parser = clap::value_parser!(u64).range(..=MAX_CHAT_HISTORY_BYTES))]
    pub chat_history_bytes: u64,

    // ----- cluster mode (issue 15) -----
    /// Store documents in this PostgreSQL database instead of the sled
    /// folder (`postgres://user:password@host:port/db`); several nodes may
    /// share it.
    #[arg(long, env = "QUIRE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections this node opens to PostgreSQL at most: one for the
    /// writer that commits updates, the rest for reads (at least 2).
    #[arg(long, env = "QUIRE_DATABASE_POOL_SIZE", value_name = "N", default_value_t = defaults::DATABASE_POOL_SIZE, value_parser = clap::value_parser!(u32).range(MIN_DATABASE_POOL_SIZE as i64..))]
    pub database_pool_size: u32,
    /// Fan updates, presence, events and chat out to the other nodes
    /// through this Redis 7 server (`redis://host:port`); needs
    /// --database-url.
    #[arg(long, env = "QUIRE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// The store's own writer connection plus one for reads.
const MIN_DATABASE_POOL_SIZE: u32 = 2;

/// Most chat history a document may keep: its one join frame stays far
/// below what Quire clients reassemble (256 MiB by default).
const MAX_CHAT_HISTORY_BYTES: u64 = 16 * 1024 * 1024;

fn token_key(secret: &str) -> Result<TokenKey, String> {
    Ok(TokenKey::new(secret))
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).expect("the defaults parse")
}

impl Config {
    /// The defaults for everything but where to listen and store.
    pub fn new(addr: SocketAddr, data: PathBuf) -> Self {
        Self {
            addr,
            data,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            room_grace: duration(defaults::ROOM_GRACE),
            commit_window: duration(defaults::COMMIT_WINDOW),
            awareness_timeout: duration(defaults::AWARENESS_TIMEOUT),
            outbox_capacity: defaults::OUTBOX_CAPACITY,
            compact_after: defaults::COMPACT_AFTER,
            ping_interval: duration(defaults::PING_INTERVAL),
            ping_timeout: duration(defaults::PING_TIMEOUT),
            max_document_bytes: defaults::MAX_DOCUMENT_BYTES,
            fragment_bytes: defaults::FRAGMENT_BYTES,
            chat_history: defaults::CHAT_HISTORY,
            static_dir: None,
            auth_key: None,
            allowed_origins: Vec::new(),
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            max_rooms: defaults::MAX_ROOMS,
            max_messages_per_sec: defaults::MAX_MESSAGES_PER_SEC,
            max_bytes_per_sec: defaults::MAX_BYTES_PER_SEC,
            max_room_ms_per_sec: defaults::MAX_ROOM_MS_PER_SEC,
            rate_burst: duration(defaults::RATE_BURST),
            outbox_bytes: edge_defaults::OUTBOX_BYTES,
            header_timeout: duration(edge_defaults::HEADER_TIMEOUT),
            auth_timeout: duration(edge_defaults::AUTH_TIMEOUT),
            message_timeout: duration(edge_defaults::MESSAGE_TIMEOUT),
            public_hosts: Vec::new(),
            trust_proxy: Vec::new(),
            max_cold_exports: edge_defaults::MAX_COLD_EXPORTS,
            // room limits (issue 12, room side)
            save_stall_timeout: duration(defaults::SAVE_STALL_TIMEOUT),
            max_presence_per_connection: defaults::MAX_PRESENCE_PER_CONNECTION,
            max_presence_per_room: defaults::MAX_PRESENCE_PER_ROOM,
            max_presence_state_bytes: defaults::MAX_PRESENCE_STATE_BYTES,
            max_chat_message_bytes: defaults::MAX_CHAT_MESSAGE_BYTES,
            chat_history_bytes: defaults::CHAT_HISTORY_BYTES,
            database_url: None,
            database_pool_size: defaults::DATABASE_POOL_SIZE,
            redis_url: None,
        }
    }

    /// Refuses settings that cannot work together: fan-out between nodes
    /// that do not share a database would let them diverge.
    pub fn check(&self) -> Result<(), String> {
        if self.redis_url.is_some() && self.database_url.is_none() {
            return Err(
                "--redis-url needs --database-url: the nodes of a cluster share their \
                        documents in PostgreSQL (sled is one node's own folder)"
                    .into(),
            );
        }
        if self.database_pool_size < MIN_DATABASE_POOL_SIZE {
            return Err(format!(
                "--database-pool-size must be at least {MIN_DATABASE_POOL_SIZE}: one \
                 connection for the writer, at least one for reads"
            ));
        }
        Ok(())
    }

    /// How `quire serve --database-url` opens its
    /// [`PgStore`](quire_storage::PgStore): the commit
    /// window and the connections the flags ask for, the rest defaults.
    pub fn pg_options(&self) -> PgOptions {
        PgOptions {
            commit_window: self.commit_window,
            // The writer has its own connection, outside the pool.
            pool_size: self.database_pool_size.saturating_sub(1).max(1) as usize,
            ..PgOptions::default()
        }
    }

    /// Raises settings the server cannot work with to the least it can: a
    /// queue of at least one frame, pings at least 10 ms apart.
    pub fn clamped(self) -> Self {
        Self {
            outbox_capacity: self.outbox_capacity.max(1),
            outbox_bytes: self.outbox_bytes.max(1),
            max_cold_exports: self.max_cold_exports.max(1),
            ping_interval: self.ping_interval.max(MIN_PING),
            ping_timeout: self.ping_timeout.max(MIN_PING),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    /// The flags' defaults, ignoring any QUIRE_* variable set around the test.
    fn parsed(args: &[&str]) -> Config {
        let command =
            Config::augment_args(clap::Command::new("quire")).mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("quire").chain(args.iter().copied()))
            .expect("the flags parse");
        Config::from_arg_matches(&matches).expect("a config")
    }

    #[test]
    fn the_flags_and_config_new_share_their_defaults() {
        let flags = parsed(&[]);
        let new = Config::new(defaults::ADDR.parse().unwrap(), defaults::DATA.into());
        assert_eq!(format!("{flags:?}"), format!("{new:?}"));
    }

    #[test]
    fn flags_set_what_they_name() {
        let config = parsed(&[
            "--room-grace",
            "250ms",
            "--allowed-origin",
            "https://a.example,https://b.example",
            "--outbox-capacity",
            "0",
        ])
        .clamped();
        assert_eq!(config.room_grace, Duration::from_millis(250));
        assert_eq!(config.allowed_origins.len(), 2);
        assert_eq!(config.outbox_capacity, 1);
    }

    #[test]
    fn redis_without_a_database_is_refused() {
        let config = parsed(&["--redis-url", "redis://127.0.0.1:1"]);
        let refused = config.check().expect_err("refused");
        assert!(refused.contains("--database-url"), "{refused}");
        let both = parsed(&[
            "--redis-url",
            "redis://127.0.0.1:1",
            "--database-url",
            "postgres://127.0.0.1:1/quire",
        ]);
        assert!(both.check().is_ok());
        assert!(parsed(&[]).check().is_ok());
    }

    #[test]
    fn the_database_pool_size_counts_the_writer_and_is_at_least_two() {
        let eight = parsed(&[]).pg_options();
        assert_eq!(
            eight.pool_size, 7,
            "8 connections: the writer and 7 readers"
        );
        let two = parsed(&["--database-pool-size", "2"]);
        assert!(two.check().is_ok());
        assert_eq!(two.pg_options().pool_size, 1);
        for refused in ["1", "0", "-3", "many"] {
            let command = Config::augment_args(clap::Command::new("quire"))
                .mut_args(|arg| arg.env(None::<&str>));
            let error = command
                .try_get_matches_from(["quire".into(), format!("--database-pool-size={refused}")])
                .expect_err("refused");
            assert!(
                error.to_string().contains("--database-pool-size"),
                "{refused}: {error}"
            );
        }
        let mut config = parsed(&[]);
        config.database_pool_size = 1;
        let refused = config
            .check()
            .expect_err("refused in a Config built by hand");
        assert!(refused.contains("at least 2"), "{refused}");
    }
}
