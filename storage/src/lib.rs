//! Persistent storage for Quire documents.
//!
//! Storage knows nothing about the CRDT: a document is an append-only log of
//! opaque update byte strings, which the server merges when it loads the
//! document. Periodically the server replaces a prefix of the log by one
//! merged state update ([`DocStore::compact`]).
//!
//! # Layout (sled)
//!
//! - Tree `doc:<name>` holds one document's log: key = the update's [`Seq`]
//!   (from `Db::generate_id`, 8 bytes big-endian, so key order is append
//!   order), value = the update bytes; or a pack of consecutive updates
//!   keyed by its newest one's seq plus a zero byte; or a small compacted
//!   state keyed by its seq plus a 4-byte index (0; folders written before
//!   value files also hold bigger values there in chunks; see `sled_store`).
//! - A value too big for one entry (a compacted state, a big update) is a
//!   file `values/<hash of the name>/<seq>` in the data folder, which tree
//!   `values` refers to (key: the name's length, the name, the seq; value:
//!   the file's length); `load` merges the files into the log by seq.
//! - Tree `chat:<name>` holds the document's chat messages, keyed like the
//!   log; deleting the document deletes them too.
//! - Tree `meta` maps a document name to a fixed 24-byte record
//!   `{bytes, updates, modified_ms}` (three little-endian `u64`s). The
//!   figures are advisory statistics for `list`/`info`; the *presence* of the
//!   record is what makes a document exist (see `sled_store`).
//!
//! # Durability
//!
//! sled runs without its own periodic flush. An append is queued in memory;
//! a `quire-flusher` thread writes every append made within a short commit
//! window to sled and makes them durable with one `flush` (group commit),
//! then publishes the progress as a [`Committed`] ticket on a
//! `tokio::sync::watch` channel; see [`Appended`].
//!
//! # PostgreSQL
//!
//! [`PgStore`] keeps the same model in PostgreSQL for cluster mode: several
//! Quire nodes share one database; appends are queued and committed in
//! batches by a writer task, tickets published after each COMMIT. See the
//! `pg_store` module docs and ARCHITECTURE.md, "Storage on PostgreSQL".

use std::path::PathBuf;
use std::time::Duration;

mod pg_store;
mod sled_store;

pub use pg_store::{CommitStats, PgOptions, PgStore};
pub use sled_store::{SledOptions, SledStore};

/// Position of an update in a document's log. Increasing in append order,
/// also across restarts (sled's `generate_id`), so it can serve as the
/// compaction boundary for [`DocStore::compact`].
pub type Seq = u64;

/// Everything that can go wrong in storage, phrased for an operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually a second Quire server) holds the data folder;
    /// reported separately so the CLI can explain it instead of dumping I/O noise.
    #[error("the data folder {path} is in use by another Quire process")]
    Locked {
        /// The data folder that could not be locked.
        path: PathBuf,
    },
    /// The storage engine or the file system failed; the text names the operation.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The database server cannot be reached or did not answer in time; the
    /// operation may succeed later (writes stay queued, see [`StoreHealth`]).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Bytes on disk do not have the shape this crate writes.
    #[error("stored data for document {doc:?} is corrupt: {detail}")]
    Corrupt {
        /// The affected document (empty if it could not be determined).
        doc: String,
        /// What exactly was wrong.
        detail: String,
    },
}

/// Summary of one document, as shown by `list`/`info` (admin API and CLI).
/// Read from the advisory `meta` records, so it never touches the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocInfo {
    /// Document name.
    pub name: String,
    /// Total size of the stored updates in bytes.
    pub bytes: u64,
    /// Number of stored updates (after compaction, usually small).
    pub updates: u64,
    /// Unix time in milliseconds of the last append or compaction.
    pub modified_ms: u64,
}

/// A document's stored log, as returned by [`DocStore::load`].
#[derive(Debug, Clone, Default)]
pub struct StoredDoc {
    /// The updates, oldest first; merging all of them gives the document.
    pub updates: Vec<Vec<u8>>,
    /// Seq of the newest update, i.e. the `upto` to pass to
    /// [`DocStore::compact`] with a state built from `updates` (0 if empty).
    pub last_seq: Seq,
}

/// Returned by append: the update is visible to `load` at once and durable once
/// `durability().borrow().ticket >= receipt.ticket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the update landed in the document's log.
    pub seq: Seq,
    /// Group-commit ticket to compare with [`Committed::ticket`]; tickets are
    /// per store instance (they restart at 1 after reopening).
    pub ticket: u64,
}

/// Published by the group-commit flusher after every flush.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Committed {
    /// Every write whose ticket is <= this one is on disk.
    pub ticket: u64,
    /// Writes covered by this flush (appends, plus one per compaction or
    /// deletion); a metric for how well group commit batches.
    pub batch: u64,
    /// How long the flush itself took (without the commit window); a metric.
    pub flush_time: Duration,
}

/// How a store's writes are doing right now, from [`DocStore::health`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Writes accepted (ticket issued) but not yet durable.
    pub pending_writes: u64,
    /// Their size in bytes.
    pub pending_bytes: u64,
    /// Set while writes are not becoming durable: why the last attempt
    /// failed (e.g. the database is down). Nothing pending is acknowledged
    /// meanwhile; the store keeps retrying.
    pub stalled: Option<String>,
}

/// The storage interface the server is written against, so tests and
/// alternative engines can stand in for sled.
pub trait DocStore: Send + Sync + 'static {
    /// Append one update to a document's log, creating the document if new.
    fn append(&self, doc: &str, update: &[u8]) -> Result<Appended, StoreError>;
    /// The document's whole log; `None` means there is no such document.
    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError>;
    /// Replace every update with seq <= upto by `state` (which the caller guarantees contains them all).
    /// Crash-safe without transactions: write `state` over the entry at key `upto`, then remove the keys < upto;
    /// at every instant the log still merges to the same content. Updates appended after `upto` stay.
    fn compact(&self, doc: &str, upto: Seq, state: &[u8]) -> Result<(), StoreError>;
    /// Summary of one document; `None` if it does not exist.
    fn info(&self, doc: &str) -> Result<Option<DocInfo>, StoreError>;
    /// Summaries of all documents, sorted by name.
    fn list(&self) -> Result<Vec<DocInfo>, StoreError>;
    /// Append one chat message (opaque bytes) to a document's chat log,
    /// creating the document if new. Durable like an update, by its ticket.
    fn append_chat(&self, doc: &str, record: &[u8]) -> Result<Appended, StoreError>;
    /// The newest `limit` chat messages of a document, oldest first.
    fn recent_chat(&self, doc: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Drops a document's oldest chat messages until at most `keep`
    /// remain and they hold at most `max_bytes` together: the chat log is
    /// bounded like the history a room keeps. Messages appended meanwhile
    /// may be left for the next trim.
    fn trim_chat(&self, doc: &str, keep: usize, max_bytes: u64) -> Result<(), StoreError>;
    /// Delete a document (its log and its chat); `false` if it did not exist.
    fn delete(&self, doc: &str) -> Result<bool, StoreError>;
    /// Watch the group-commit progress, to acknowledge updates once durable.
    fn durability(&self) -> tokio::sync::watch::Receiver<Committed>;
    /// Flush everything appended so far and wait until it is on disk (used at shutdown and by the CLI).
    fn flush(&self) -> Result<(), StoreError>;
    /// Someone waits for what was appended so far (a client's `Saved`): a
    /// store with group commit that is otherwise idle commits it at once
    /// instead of waiting out its commit window. Under load it batches as
    /// usual. Without waiting: durability is reported as always.
    fn hurry(&self) {}

    /// The durable entries of a document's log with a seq greater than
    /// `after` (a seq this store returned), oldest first; `last_seq` is the
    /// newest seq read, or `after` if there is none. For catching up with
    /// what other nodes stored: a store shared by several writers
    /// ([`PgStore`]) guarantees that once an entry with seq S was returned,
    /// no entry of that document with a seq <= S becomes visible later
    /// whose content is not in those already returned. `None` if there is
    /// no such document.
    ///
    /// The default returns the whole log ([`DocStore::load`]), a superset
    /// that merges to the same document; right for a single-writer store.
    fn load_after(&self, doc: &str, after: Seq) -> Result<Option<StoredDoc>, StoreError> {
        let _ = after;
        self.load(doc)
    }

    /// The ticket of the newest write made so far, durable or not: what a
    /// (re)loaded room must wait for before acknowledging anything, since
    /// earlier writes to its document may still be pending.
    ///
    /// The default is the durable ticket, which is right only for a store
    /// whose writes are durable when they return; stores with group commit
    /// should return their last issued ticket.
    fn last_ticket(&self) -> u64 {
        self.durability().borrow().ticket
    }

    /// Whether writes are becoming durable; for readiness checks and for
    /// telling clients their changes are not saved. The default reports
    /// nothing pending and no stall.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }
}
