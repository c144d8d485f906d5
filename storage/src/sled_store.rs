//! [`DocStore`] on sled, with group commit.
//!
//! Existence rule: a document exists iff it has a `meta` record. Appends write
//! the log entry before the record, deletes remove the record before dropping
//! the tree, so a crash between the two steps leaves at worst a log tree
//! without a record, which [`SledStore::open`] drops (it was either being
//! deleted, or is the unacknowledged first append of a new document).
//!
//! Write-behind: an append is queued in memory ([`pending`]) and written
//! to sled by the group commit right before the flush that makes it
//! durable, packed with the document's other queued updates. Everything
//! that reads the log or the meta records (`load`, `compact`, `info`,
//! `list`) first writes what is queued, so it reads every append made so
//! far; `delete` drops the document's queue.
//!
//! Log keys (in the document's tree, sorted by seq): 8 bytes, one update;
//! 9 bytes (`seq ++ 0`), a pack of updates whose newest has that seq;
//! 12 bytes (`seq ++ index`), one chunk of a value stored in chunks (a
//! compacted state that fits one entry, as chunk 0; bigger values in folders
//! written before value files, still read).
//!
//! Value files ([`values`]): a value too big for one entry (a compacted
//! state, a big update) is a file of its own, referred to by an entry of the
//! `values` tree, and merged into the log by seq when it is loaded; so
//! loading a document leaves none of its big values in sled's page cache.
//! A document has a log tree only once something was written to it in
//! sled: loading one whose log is all in files opens (creates) no tree.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sled::Transactional;
use tokio::sync::watch;

use crate::{Appended, Committed, DocInfo, DocStore, Seq, StoreError, StoreHealth, StoredDoc};

mod pending;
#[cfg(test)]
mod tests;
mod values;

use pending::{Pending, PendingDoc};
use values::ValueFiles;

/// Prefix of the per-document log trees; keeps them apart from `meta` and
/// sled's own default tree.
const DOC_TREE_PREFIX: &str = "doc:";
/// Name of the tree with the per-document summary records.
const META_TREE: &str = "meta";
/// Name of the tree referring to the value files ([`values`]).
const VALUES_TREE: &str = "values";
/// How long the flusher waits before retrying a failed flush, so a broken
/// disk produces a log line every so often rather than a busy loop.
const FLUSH_RETRY_DELAY: Duration = Duration::from_millis(500);

/// The flusher is parked with nothing to flush: the next write wakes it.
const IDLE: u8 = 0;
/// The flusher waits out the commit window for a write that came after a
/// quiet spell: [`DocStore::hurry`] wakes it.
const QUIET_WINDOW: u8 = 1;
/// The flusher flushes, or waits out the window under load: nothing wakes it.
const BUSY: u8 = 2;

/// Writes arriving during one flush that make it load: the next flush
/// then waits the commit window, hurried or not, so that batches grow.
/// Fewer (a handful of writers at a human pace) count as a quiet spell.
const LOAD_WRITES: u64 = 8;

/// Tuning knobs for [`SledStore`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// How long the flusher gathers appends before one flush: longer windows
    /// mean fewer fsyncs under load but later acknowledgements. A write
    /// after a quiet spell that someone waits for ([`DocStore::hurry`]) is
    /// flushed at once. Default 10 ms.
    pub commit_window: Duration,
    /// sled's page cache size in bytes. Default 64 MiB.
    pub cache_bytes: u64,
    /// sled's segment size in bytes (a power of two, 256 B to 16 MiB): the
    /// unit its log file grows and shrinks by, so the floor of a data
    /// folder's size. Fixed when a folder is created: an existing folder
    /// keeps the size it was made with (see [`segment_bytes_of`]).
    pub segment_bytes: usize,
    /// How many bytes of appends may wait in memory for the group commit
    /// (see the module docs); past it, `append` refuses with
    /// [`StoreError::Unavailable`] until the disk takes them. Reached only
    /// while flushes fail. Default 64 MiB, as [`crate::PgOptions`].
    pub max_pending_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            commit_window: Duration::from_millis(10),
            cache_bytes: 64 * 1024 * 1024,
            segment_bytes: 64 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The production [`DocStore`]: one sled database in a data folder, which it
/// locks for as long as it is open.
pub struct SledStore {
    /// State shared with the flusher thread.
    shared: Arc<Shared>,
    /// The flusher thread: unparked by writers, joined on drop. `Option` only
    /// so `Drop` can take it.
    flusher: Option<JoinHandle<()>>,
}

/// What the store and its flusher thread both use.
struct Shared {
    /// The database; sled handles its own internal concurrency.
    db: sled::Db,
    /// The `meta` tree (name -> summary record), opened once.
    meta: sled::Tree,
    /// The `values` tree (document and seq -> length of its value file),
    /// opened once.
    values: sled::Tree,
    /// The value files themselves (`<data>/values`).
    files: ValueFiles,
    /// Value files no entry refers to any more (replaced by a compaction,
    /// or of a deleted document), with the ticket of the write that
    /// dropped their entries: removed once that ticket is durable, since
    /// until then a crash brings the entries back.
    doomed: Mutex<Vec<(u64, PathBuf)>>,
    /// Number of writes made so far; a write takes its ticket by incrementing
    /// this *after* its sled operations, so a flush that starts after reading
    /// value N covers every write with ticket <= N.
    tickets: AtomicU64,
    /// Publishes the last completed flush to everyone awaiting durability.
    committed: watch::Sender<Committed>,
    /// Serialises flushes (flusher thread vs `flush()` callers) so published
    /// tickets only ever grow.
    flush_lock: Mutex<()>,
    /// Writers (append/compact/load) take it shared, `delete` exclusively:
    /// sled must not drop a tree while another thread writes to its handle.
    trees: RwLock<()>,
    /// Set by `Drop` to make the flusher do a final flush and exit.
    stopping: AtomicBool,
    /// Set by [`DocStore::hurry`]: someone waits for the pending writes.
    hurry: AtomicBool,
    /// What the flusher is doing ([`IDLE`], [`QUIET_WINDOW`], [`BUSY`]), so
    /// writers wake it only when it sleeps on their behalf.
    flusher_state: AtomicU8,
    /// Copied from the options for the flusher.
    commit_window: Duration,
    /// Appends not yet written to sled (see the module docs). Held only to
    /// push or take, never across a sled write.
    pending: Mutex<Pending>,
    /// Serialises writing the queue to sled, so that whoever returns from
    /// [`Shared::write_pending`] knows everything queued before it is in sled.
    pending_writer: Mutex<()>,
    /// The biggest value written as one log entry (a pack, an update, a
    /// chunk), from the segment size: see [`value_bytes_for`].
    value_bytes: usize,
    /// Why the last group commit failed, until one succeeds: reported by
    /// [`DocStore::health`], since appends only queue.
    stalled: Mutex<Option<String>>,
    /// Copied from the options for `append`.
    max_pending_bytes: u64,
    /// Documents that have a chat tree. Reading a chat consults this
    /// instead of `open_tree`, which would create an empty tree: sled keeps
    /// every tree ever opened in its tree table for the life of the
    /// process (≈ 18 KiB each), so loading a document without a chat must
    /// open none.
    chats: KnownTrees,
    /// Documents that have a log tree, for the same reason: a document
    /// whose log is all in value files has none, and loading it opens none.
    logs: KnownTrees,
}

/// The documents that have a tree of one kind (name prefix), filled from
/// sled's tree names at open and kept up to date as trees are created and
/// dropped.
struct KnownTrees {
    /// The kind's tree name prefix (`doc:`, `chat:`).
    prefix: &'static str,
    /// The documents; taken only to look up, add or remove one.
    docs: Mutex<HashSet<String>>,
}

impl KnownTrees {
    fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            docs: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.docs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the trees of this kind among sled's tree names.
    fn note(&self, db: &sled::Db) {
        let mut docs = self.lock();
        for name in db.tree_names() {
            if let Some(doc) = name.strip_prefix(self.prefix.as_bytes()) {
                docs.insert(String::from_utf8_lossy(doc).into_owned());
            }
        }
    }

    fn contains(&self, doc: &str) -> bool {
        self.lock().contains(doc)
    }

    fn insert(&self, doc: &str) {
        let mut docs = self.lock();
        if !docs.contains(doc) {
            docs.insert(doc.to_owned());
        }
    }

    fn remove(&self, doc: &str) {
        self.lock().remove(doc);
    }

    /// The document's tree of this kind if it has one; never creates one.
    fn open(&self, db: &sled::Db, doc: &str) -> Result<Option<sled::Tree>, StoreError> {
        if !self.contains(doc) {
            return Ok(None);
        }
        let name = format!("{}{doc}", self.prefix);
        db.open_tree(name)
            .map(Some)
            .map_err(io_err(format_args!("opening the tree of {doc:?}")))
    }

    /// The document's tree of this kind, created if it has none.
    fn open_or_create(&self, db: &sled::Db, doc: &str) -> Result<sled::Tree, StoreError> {
        let tree = db
            .open_tree(format!("{}{doc}", self.prefix))
            .map_err(io_err(format_args!("opening the tree of {doc:?}")))?;
        self.insert(doc);
        Ok(tree)
    }
}

/// Fixed-size `meta` record; advisory statistics, see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MetaRecord {
    /// Total size of the stored updates.
    bytes: u64,
    /// Number of stored updates.
    updates: u64,
    /// Unix ms of the last append/compaction.
    modified_ms: u64,
}

impl MetaRecord {
    /// Encoded length: three little-endian u64s.
    const LEN: usize = 24;

    fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[0..8].copy_from_slice(&self.bytes.to_le_bytes());
        out[8..16].copy_from_slice(&self.updates.to_le_bytes());
        out[16..24].copy_from_slice(&self.modified_ms.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; Self::LEN] = raw.try_into().ok()?;
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Some(Self {
            bytes: word(0),
            updates: word(1),
            modified_ms: word(2),
        })
    }

    fn info(self, name: String) -> DocInfo {
        DocInfo {
            name,
            bytes: self.bytes,
            updates: self.updates,
            modified_ms: self.modified_ms,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Prefix of the per-document chat trees.
const CHAT_TREE_PREFIX: &str = "chat:";

fn chat_tree_name(doc: &str) -> String {
    format!("{CHAT_TREE_PREFIX}{doc}")
}

fn tree_name(doc: &str) -> String {
    format!("{DOC_TREE_PREFIX}{doc}")
}

/// Maps a sled error to [`StoreError::Io`] with the operation in the message.
fn io_err(what: impl Display) -> impl FnOnce(sled::Error) -> StoreError {
    move |e| StoreError::Io(format!("{what}: {e}"))
}

/// Length of an update's key: its seq, big-endian, so keys sort by seq.
const SEQ_LEN: usize = 8;

/// The biggest value stored as one log entry with segments of
/// `segment_bytes`: a pack of updates is closed at this size, and a
/// compacted state or an update bigger than this is a value file. sled writes a node
/// over a quarter of a segment (its blob threshold, 16 KiB with 64 KiB
/// segments) as a file of its own, created on every rewrite of the node,
/// deleted only lazily, and counted by the page cache by the size of its
/// pointer. A leaf holds up to 17 entries before it splits, so entries
/// of a twentieth of that threshold keep every leaf inline (with 8 KiB
/// chunks, a leaf holding two was a blob: 5 % of the server's CPU in a
/// trace replay went to creating those files).
fn value_bytes_for(segment_bytes: usize) -> usize {
    (segment_bytes / 4 / 20).max(64)
}

fn chunk_key(seq: Seq, index: u32) -> [u8; SEQ_LEN + 4] {
    let mut key = [0; SEQ_LEN + 4];
    key[..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
    key[SEQ_LEN..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The key of a pack whose newest update has `seq`: sorts after that
/// update's own key would and before any chunk at `seq`.
fn pack_key(seq: Seq) -> [u8; SEQ_LEN + 1] {
    let mut key = [0; SEQ_LEN + 1];
    key[..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
    key
}

/// What a log key holds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// One update.
    Update,
    /// Several updates, packed ([`pending::unpack`]).
    Pack,
    /// One chunk of a value stored in chunks.
    Chunk(u32),
}

/// The seq of a log key and what the entry holds.
fn decode_key(doc: &str, key: &[u8]) -> Result<(Seq, Entry), StoreError> {
    let corrupt = || StoreError::Corrupt {
        doc: doc.to_owned(),
        detail: format!("log key has {} bytes instead of 8, 9 or 12", key.len()),
    };
    let seq: [u8; SEQ_LEN] = key
        .get(..SEQ_LEN)
        .ok_or_else(corrupt)?
        .try_into()
        .map_err(|_| corrupt())?;
    let entry = match key.len() {
        SEQ_LEN => Entry::Update,
        9 => Entry::Pack,
        12 => Entry::Chunk(u32::from_be_bytes(
            key[SEQ_LEN..].try_into().map_err(|_| corrupt())?,
        )),
        _ => return Err(corrupt()),
    };
    Ok((Seq::from_be_bytes(seq), entry))
}

/// The number of updates and their bytes an entry holds; a chunked value
/// counts once, by its first chunk.
fn entry_counts(doc: &str, entry: Entry, value: &[u8]) -> Result<(i128, i128), StoreError> {
    Ok(match entry {
        Entry::Update | Entry::Chunk(0) => (value.len() as i128, 1),
        Entry::Chunk(_) => (value.len() as i128, 0),
        Entry::Pack => {
            let updates = pending::unpack(value).ok_or_else(|| corrupt_pack(doc))?;
            let bytes: usize = updates.iter().map(|(_, u)| u.len()).sum();
            (bytes as i128, updates.len() as i128)
        }
    })
}

/// A value file of a document, as its `values` entry names it.
#[derive(Debug, Clone, Copy)]
struct ValueRef {
    /// Where the value is in the document's log.
    seq: Seq,
    /// The file's length.
    len: u64,
    /// The file's id (its name).
    file: u64,
}

/// The value files a compacted state contains, from [`Shared::files_contained`].
#[derive(Default)]
struct Contained {
    /// Removes the entries of those that go.
    refs: sled::Batch,
    /// The files that go, once that is durable.
    paths: Vec<PathBuf>,
    /// Bytes of all of them, for the meta record.
    bytes: i128,
    /// How many they are, for the meta record.
    updates: i128,
}

/// One atomic batch of log entries: a crash never leaves part of them.
fn log_batch(entries: Vec<(sled::IVec, sled::IVec)>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in entries {
        batch.insert(key, value);
    }
    batch
}

fn corrupt_pack(doc: &str) -> StoreError {
    StoreError::Corrupt {
        doc: doc.to_owned(),
        detail: "a packed log entry does not have the pack layout".into(),
    }
}

/// The pack [`Shared::write_queue`] is filling.
#[derive(Default)]
struct PackBuilder<'a> {
    /// The packed updates so far.
    pack: Vec<u8>,
    /// The newest of them, with its seq.
    newest: Option<(Seq, &'a [u8])>,
    /// How many there are.
    count: usize,
}

impl<'a> PackBuilder<'a> {
    /// The seq the next update's distance is counted from.
    fn previous(&self) -> Seq {
        self.newest.map_or(0, |(seq, _)| seq)
    }

    /// The pack's size once `update` (at `seq`) joins it.
    fn bytes_with(&self, seq: Seq, update: &[u8]) -> usize {
        self.pack.len() + pending::pack_overhead(self.previous(), seq, update) + update.len()
    }

    fn add(&mut self, seq: Seq, update: &'a [u8]) {
        let previous = self.previous();
        pending::pack_into(&mut self.pack, previous, seq, update);
        self.newest = Some((seq, update));
        self.count += 1;
    }

    /// Adds the pack to `entries` under the newest update's seq (a lone
    /// update in the plain layout, without its length) and starts anew.
    fn close_into(&mut self, entries: &mut Vec<(sled::IVec, sled::IVec)>) {
        match (self.count, self.newest) {
            (1, Some((seq, update))) => entries.push((seq.to_be_bytes()[..].into(), update.into())),
            (2.., Some((seq, _))) => entries.push((pack_key(seq)[..].into(), self.pack[..].into())),
            _ => {}
        }
        self.pack.clear();
        self.newest = None;
        self.count = 0;
    }
}

impl SledStore {
    /// Open (creating if needed) the data folder `path`, lock it, finish any
    /// interrupted deletions and start the flusher thread.
    pub fn open(path: &Path, options: SledOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::Io(format!("cannot create data folder {}: {e}", path.display()))
        })?;
        let segment_bytes = segment_bytes_of(path).unwrap_or(options.segment_bytes);
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .segment_size(segment_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(path, e))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(io_err("opening the meta tree"))?;
        let values = db
            .open_tree(VALUES_TREE)
            .map_err(io_err("opening the values tree"))?;
        let files = ValueFiles::open(path).map_err(|e| {
            StoreError::Io(format!(
                "cannot create the value folder in {}: {e}",
                path.display()
            ))
        })?;
        let shared = Arc::new(Shared {
            db,
            meta,
            values,
            files,
            doomed: Mutex::new(Vec::new()),
            tickets: AtomicU64::new(0),
            committed: watch::Sender::new(Committed::default()),
            flush_lock: Mutex::new(()),
            trees: RwLock::new(()),
            stopping: AtomicBool::new(false),
            hurry: AtomicBool::new(false),
            flusher_state: AtomicU8::new(BUSY),
            commit_window: options.commit_window,
            pending: Mutex::new(Pending::default()),
            pending_writer: Mutex::new(()),
            value_bytes: value_bytes_for(segment_bytes),
            stalled: Mutex::new(None),
            max_pending_bytes: options.max_pending_bytes,
            chats: KnownTrees::new(CHAT_TREE_PREFIX),
            logs: KnownTrees::new(DOC_TREE_PREFIX),
        });
        shared.drop_orphan_trees()?;
        shared.sweep_value_files()?;
        shared.chats.note(&shared.db);
        shared.logs.note(&shared.db);
        let flusher = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("quire-flusher".into())
                .spawn(move || shared.run_flusher())
                .map_err(|e| StoreError::Io(format!("cannot start the flusher thread: {e}")))?
        };
        Ok(Self {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Appends a chat record under a fresh id to the document's chat tree,
    /// then creates the document's meta record if it has none (a document
    /// with only a chat exists too), then takes a ticket: the record goes in
    /// after the entry (see the module docs) and before the ticket, so a
    /// durable ticket implies a durable record. Chat is rare: written at
    /// once, not queued.
    fn append_chat_entry(&self, doc: &str, record: &[u8]) -> Result<Appended, StoreError> {
        let _trees = self.read_lock();
        let tree = self.shared.chats.open_or_create(&self.shared.db, doc)?;
        let seq = self
            .shared
            .db
            .generate_id()
            .map_err(io_err("generating an entry id"))?;
        tree.insert(seq.to_be_bytes(), record)
            .map_err(io_err(format_args!("appending to the chat of {doc:?}")))?;
        self.shared.adjust_meta(doc, 0, 0, now_ms())?;
        Ok(Appended {
            seq,
            ticket: self.take_ticket(),
        })
    }

    /// Takes a ticket for a write that is complete in sled and wakes the
    /// flusher (an unpark is one atomic swap when the thread is awake).
    fn take_ticket(&self) -> u64 {
        let ticket = self.shared.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        // After the increment: a flusher going idle either sees this
        // ticket or is seen idle here (both sides are SeqCst).
        if self.shared.flusher_state.load(Ordering::SeqCst) == IDLE {
            self.wake_flusher();
        }
        ticket
    }

    fn wake_flusher(&self) {
        if let Some(flusher) = &self.flusher {
            flusher.thread().unpark();
        }
    }

    /// Whether the document exists (has a meta record); probing unknown
    /// names leaves no trace.
    fn exists(&self, doc: &str) -> Result<bool, StoreError> {
        self.shared
            .meta
            .contains_key(doc)
            .map_err(io_err(format_args!("reading metadata of {doc:?}")))
    }

    /// The chat tree of an existing document that has one; creates none.
    fn existing_chat(&self, doc: &str) -> Result<Option<sled::Tree>, StoreError> {
        if !self.shared.chats.contains(doc) || !self.exists(doc)? {
            return Ok(None);
        }
        self.shared.chats.open(&self.shared.db, doc)
    }

    /// Compaction into a value file: the state is written durably as a new
    /// file, then, in one batch of the `values` tree, referred to at `upto`
    /// while the entries of the files it contains go; then the log's entries up to `upto` go (chunks at
    /// `upto` included, from a folder written before value files). At every
    /// step the log merges to the same content. Returns the (bytes,
    /// updates) change for the meta record and the files to remove once
    /// that is durable.
    fn compact_into_file(
        &self,
        doc: &str,
        upto: Seq,
        state: &[u8],
    ) -> Result<(i128, i128, Vec<PathBuf>), StoreError> {
        let (mut bytes, mut updates) = (state.len() as i128, 1i128);
        let shared = &self.shared;
        // A new file, never one a load may be reading.
        let file = shared
            .db
            .generate_id()
            .map_err(io_err("generating a file id"))?;
        shared
            .files
            .write(doc, file, state)
            .map_err(|e| StoreError::Io(format!("writing the state of {doc:?}: {e}")))?;
        shared.sync_value_dir(doc)?;
        let mut contained = shared.files_contained(doc, upto)?;
        bytes -= contained.bytes;
        updates -= contained.updates;
        // Last in the batch: replaces an entry at `upto` it removed.
        let mut refs = contained.refs;
        refs.insert(
            values::ref_key(doc, upto),
            &values::encode_ref(state.len() as u64, file),
        );
        shared
            .values
            .apply_batch(refs)
            .map_err(io_err(format_args!(
                "writing the compacted state of {doc:?}"
            )))?;
        if let Some(tree) = shared.logs.open(&shared.db, doc)? {
            let (b, u) = self.remove_before(doc, &tree, upto, true)?;
            bytes += b;
            updates += u;
        }
        Ok((bytes, updates, std::mem::take(&mut contained.paths)))
    }

    /// Compaction of a state that fits one entry: written as chunk 0 at
    /// `upto` in the log ([`Self::write_state_over`]), then every value
    /// file up to `upto` and the log's entries before the state go.
    fn compact_into_log(
        &self,
        doc: &str,
        upto: Seq,
        state: &[u8],
    ) -> Result<(i128, i128, Vec<PathBuf>), StoreError> {
        let shared = &self.shared;
        let tree = shared.logs.open_or_create(&shared.db, doc)?;
        let (mut bytes, mut updates) = self.write_state_over(doc, &tree, upto, state)?;
        let contained = shared.files_contained(doc, upto)?;
        if !contained.paths.is_empty() {
            shared
                .values
                .apply_batch(contained.refs)
                .map_err(io_err(format_args!("compacting {doc:?}")))?;
        }
        let (b, u) = self.remove_before(doc, &tree, upto, false)?;
        bytes += b - contained.bytes;
        updates += u - contained.updates;
        Ok((bytes, updates, contained.paths))
    }

    /// Takes the ticket of a write just made that dropped the entries of
    /// `paths`, and has them removed once it is durable.
    fn doom_after_next_ticket(&self, paths: Vec<PathBuf>) {
        // Held across the ticket: a flush that covers it finds the paths.
        let mut doomed = self
            .shared
            .doomed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ticket = self.take_ticket();
        doomed.extend(paths.into_iter().map(|path| (ticket, path)));
    }

    /// Compaction of a small state, step 1, one atomic batch: put `state`
    /// as chunks at keys `upto ++ index` (one chunk, unless a test writes
    /// a folder of the layout before value files; replacing any chunks a
    /// compaction at the same `upto` left). Afterwards the log holds the old updates *and* a state
    /// containing them, which merges to the same content. Returns the
    /// (bytes, updates) change for the meta record.
    fn write_state_over(
        &self,
        doc: &str,
        tree: &sled::Tree,
        upto: Seq,
        state: &[u8],
    ) -> Result<(i128, i128), StoreError> {
        let (mut bytes, mut updates) = (state.len() as i128, 1i128);
        let mut batch = sled::Batch::default();
        for entry in tree.range(chunk_key(upto, 0)..=chunk_key(upto, u32::MAX)) {
            let (key, value) = entry.map_err(io_err(format_args!("compacting {doc:?}")))?;
            bytes -= value.len() as i128;
            if key[SEQ_LEN..] == [0; 4] {
                updates -= 1;
            }
            batch.remove(key);
        }
        for (index, chunk) in (0u32..).zip(state.chunks(self.shared.value_bytes)) {
            batch.insert(&chunk_key(upto, index)[..], chunk);
        }
        if state.is_empty() {
            batch.insert(&chunk_key(upto, 0)[..], state);
        }
        tree.apply_batch(batch).map_err(io_err(format_args!(
            "writing the compacted state of {doc:?}"
        )))?;
        Ok((bytes, updates))
    }

    /// Compaction's last step: remove every log entry before the state at
    /// `upto` (the updates and packs up to and including `upto`, older
    /// states), all of which that state contains, and the chunks at `upto`
    /// too if `chunks_at_upto` (the state is in a file). Returns the
    /// (bytes, updates) change.
    fn remove_before(
        &self,
        doc: &str,
        tree: &sled::Tree,
        upto: Seq,
        chunks_at_upto: bool,
    ) -> Result<(i128, i128), StoreError> {
        use std::ops::Bound;
        let (mut bytes, mut updates) = (0i128, 0i128);
        // One batch instead of a write per entry. The single writer of a
        // document (its room) is the only compactor, so what was read is
        // what the batch removes.
        let mut batch = sled::Batch::default();
        // A pack keyed `upto` sorts before the state's chunks.
        let (state_first, state_last) = (chunk_key(upto, 0), chunk_key(upto, u32::MAX));
        let end = if chunks_at_upto {
            Bound::Included(&state_last[..])
        } else {
            Bound::Excluded(&state_first[..])
        };
        for entry in tree.range::<&[u8], _>((Bound::Unbounded, end)) {
            let (key, value) = entry.map_err(io_err(format_args!("compacting {doc:?}")))?;
            let (_, kind) = decode_key(doc, &key)?;
            let (b, u) = entry_counts(doc, kind, &value)?;
            bytes -= b;
            updates -= u;
            batch.remove(key);
        }
        // The first entry after the state may be a pack the boundary falls
        // inside (written when the room had appended past `upto`): it
        // keeps only its updates after `upto`. Packs are written in seq
        // order, so no later entry holds any update up to `upto`.
        let after_state = (Bound::Excluded(&state_last[..]), Bound::Unbounded);
        if let Some(entry) = tree.range::<&[u8], _>(after_state).next() {
            let (key, value) = entry.map_err(io_err(format_args!("compacting {doc:?}")))?;
            if let (_, Entry::Pack) = decode_key(doc, &key)? {
                let packed = pending::unpack(&value).ok_or_else(|| corrupt_pack(doc))?;
                let (repeated, kept): (Vec<_>, Vec<_>) =
                    packed.into_iter().partition(|&(seq, _)| seq <= upto);
                if !repeated.is_empty() {
                    bytes -= repeated.iter().map(|(_, u)| u.len() as i128).sum::<i128>();
                    updates -= repeated.len() as i128;
                    batch.remove(key);
                    let mut pack = PackBuilder::default();
                    for &(seq, update) in &kept {
                        pack.add(seq, update);
                    }
                    let mut rewritten = Vec::new();
                    pack.close_into(&mut rewritten);
                    for (key, value) in rewritten {
                        batch.insert(key, value);
                    }
                }
            }
        }
        tree.apply_batch(batch)
            .map_err(io_err(format_args!("compacting {doc:?}")))?;
        Ok((bytes, updates))
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.shared
            .trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The segment size an existing data folder was created with, from sled's
/// `conf` file (sled refuses to open a folder with another one); `None`
/// for a new folder or one whose `conf` does not say.
fn segment_bytes_of(path: &Path) -> Option<usize> {
    // Lines of text followed by a binary checksum.
    let conf = std::fs::read(path.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|size| size.trim().parse().ok())
}

/// Turns sled's "could not acquire lock" into [`StoreError::Locked`]. sled
/// 0.34 reports it only as an `io::ErrorKind::Other` with that message text.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::Io(format!("cannot open data folder {}: {e}", path.display())),
    }
}

impl Shared {
    /// Makes the value files just written for `doc` durable in its folder.
    fn sync_value_dir(&self, doc: &str) -> Result<(), StoreError> {
        values::sync_dir(&self.files.dir(doc))
            .map_err(|e| StoreError::Io(format!("syncing the value files of {doc:?}: {e}")))
    }

    /// The document's value files, by seq.
    fn value_refs(&self, doc: &str) -> Result<Vec<ValueRef>, StoreError> {
        let mut refs = Vec::new();
        for entry in self.values.scan_prefix(values::ref_prefix(doc)) {
            let (key, value) =
                entry.map_err(io_err(format_args!("reading the value files of {doc:?}")))?;
            let (Some((_, seq)), Some((len, file))) =
                (values::decode_ref_key(&key), values::decode_ref(&value))
            else {
                return Err(StoreError::Corrupt {
                    doc: doc.to_owned(),
                    detail: "an entry of the values tree does not have its layout".into(),
                });
            };
            refs.push(ValueRef { seq, len, file });
        }
        Ok(refs)
    }

    /// The value files of `doc` that a state at `upto` contains (seq <=
    /// `upto`): what to remove.
    fn files_contained(&self, doc: &str, upto: Seq) -> Result<Contained, StoreError> {
        let mut contained = Contained::default();
        for value in self.value_refs(doc)? {
            if value.seq > upto {
                break;
            }
            contained.bytes += i128::from(value.len);
            contained.updates += 1;
            contained.refs.remove(values::ref_key(doc, value.seq));
            contained.paths.push(self.files.path(doc, value.file));
        }
        Ok(contained)
    }

    /// At open: drops the `values` entries of documents that no longer
    /// exist (a deletion a crash interrupted), then removes every value
    /// file no entry refers to (see [`values`]).
    fn sweep_value_files(&self) -> Result<(), StoreError> {
        let mut expected = HashSet::new();
        let mut gone = sled::Batch::default();
        let mut dropped = false;
        for entry in self.values.iter() {
            let (key, value) = entry.map_err(io_err("reading the values tree"))?;
            let (Some((name, _)), Some((_, file))) =
                (values::decode_ref_key(&key), values::decode_ref(&value))
            else {
                continue;
            };
            let known = self
                .meta
                .contains_key(name)
                .map_err(io_err("checking for orphaned value files"))?;
            match std::str::from_utf8(name) {
                Ok(doc) if known => {
                    expected.insert(self.files.path(doc, file));
                }
                _ => {
                    gone.remove(key);
                    dropped = true;
                }
            }
        }
        if dropped {
            self.values
                .apply_batch(gone)
                .map_err(io_err("dropping the value files of deleted documents"))?;
            self.db
                .flush()
                .map_err(io_err("flushing after value file cleanup"))?;
        }
        self.files
            .sweep(&expected)
            .map_err(|e| StoreError::Io(format!("removing orphaned value files: {e}")))?;
        Ok(())
    }

    /// Removes the doomed files whose ticket `ticket` made durable.
    fn remove_doomed(&self, ticket: u64) {
        let ready: Vec<PathBuf> = {
            let mut doomed = self.doomed.lock().unwrap_or_else(PoisonError::into_inner);
            if doomed.iter().all(|&(t, _)| t > ticket) {
                return;
            }
            let (ready, later) = std::mem::take(&mut *doomed)
                .into_iter()
                .partition(|&(t, _)| t <= ticket);
            *doomed = later;
            ready.into_iter().map(|(_, path)| path).collect()
        };
        // Exclusive: no load is reading one of them meanwhile, and no
        // file is being written into a folder that goes.
        let _trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        self.files.remove(&ready);
    }

    /// Adds the given deltas to a document's meta record (creating it),
    /// atomically with respect to concurrent updates of the same record.
    fn adjust_meta(
        &self,
        doc: &str,
        bytes: i128,
        updates: i128,
        modified_ms: u64,
    ) -> Result<(), StoreError> {
        let mut corrupt = false;
        self.meta
            .fetch_and_update(doc, |old| {
                let old = match old.map(MetaRecord::decode) {
                    None => MetaRecord::default(),
                    Some(Some(record)) => record,
                    Some(None) => {
                        corrupt = true;
                        MetaRecord::default()
                    }
                };
                let apply = |v: u64, d: i128| (i128::from(v) + d).clamp(0, u64::MAX.into()) as u64;
                let new = MetaRecord {
                    bytes: apply(old.bytes, bytes),
                    updates: apply(old.updates, updates),
                    modified_ms: old.modified_ms.max(modified_ms),
                };
                Some(new.encode().to_vec())
            })
            .map_err(io_err(format_args!("updating metadata of {doc:?}")))?;
        if corrupt {
            tracing::warn!(doc, "meta record had the wrong size; statistics were reset");
        }
        Ok(())
    }

    /// Writes every queued append to sled: per document one atomic batch of
    /// packs (each up to [`Self::value_bytes`]; a bigger update is a value
    /// file, referred to in the same atomic write), then its meta record once. When it returns
    /// `Ok`, everything queued before the call is in sled (not yet
    /// flushed). A document that fails goes back to the front of the queue
    /// with every one not yet written, to be tried again.
    fn write_pending(&self) -> Result<(), StoreError> {
        let _serial = self
            .pending_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Shared: `delete` (exclusive) never sees a queue half written.
        let _trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        let taken = self.lock_pending().take();
        let mut docs = taken.into_iter();
        while let Some((doc, queue)) = docs.next() {
            if let Err(e) = self.write_queue(&doc, &queue) {
                self.lock_pending()
                    .put_back(std::iter::once((doc, queue)).chain(docs));
                return Err(e);
            }
        }
        Ok(())
    }

    /// One document's part of [`Self::write_pending`]: its big updates
    /// as value files (durable before anything refers to them), then in
    /// one atomic write the packs and the files' entries.
    fn write_queue(&self, doc: &str, queue: &PendingDoc) -> Result<(), StoreError> {
        let mut entries = Vec::new();
        let mut refs = sled::Batch::default();
        let mut files = 0;
        let mut pack = PackBuilder::default();
        for (seq, update) in queue.iter() {
            if update.len() > self.value_bytes {
                pack.close_into(&mut entries);
                self.files
                    .write(doc, seq, update)
                    .map_err(|e| StoreError::Io(format!("writing a value file of {doc:?}: {e}")))?;
                // An update's file id is its own seq.
                refs.insert(
                    values::ref_key(doc, seq),
                    &values::encode_ref(update.len() as u64, seq),
                );
                files += 1;
                continue;
            }
            if pack.bytes_with(seq, update) > self.value_bytes {
                pack.close_into(&mut entries);
            }
            pack.add(seq, update);
        }
        pack.close_into(&mut entries);
        if files > 0 {
            self.sync_value_dir(doc)?;
        }
        let written = match (entries.len(), files) {
            (0, 0) => Ok(()),
            (0, _) => self.values.apply_batch(refs),
            (1, 0) => {
                // A lone writer's update, flushed at once for its `Saved`: a
                // plain insert costs less than a batch (which takes sled's
                // global write lock and logs a manifest).
                let (key, value) = entries.pop().expect("one entry");
                self.logs
                    .open_or_create(&self.db, doc)?
                    .insert(key, value)
                    .map(drop)
            }
            (_, 0) => self
                .logs
                .open_or_create(&self.db, doc)?
                .apply_batch(log_batch(entries)),
            // Packs and files (rare: big updates among small ones): both
            // trees in one transaction, so a crash never leaves a part.
            _ => {
                let tree = self.logs.open_or_create(&self.db, doc)?;
                let log = log_batch(entries);
                (&tree, &self.values)
                    .transaction(|(tree, values)| {
                        tree.apply_batch(&log)?;
                        values.apply_batch(&refs)?;
                        Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .map_err(|e| match e {
                        sled::transaction::TransactionError::Abort(()) => {
                            unreachable!("the transaction never aborts")
                        }
                        sled::transaction::TransactionError::Storage(e) => e,
                    })
            }
        };
        written.map_err(io_err(format_args!("appending to {doc:?}")))?;
        self.adjust_meta(
            doc,
            queue.bytes() as i128,
            queue.len() as i128,
            queue.modified_ms,
        )
    }

    fn stalled_reason(&self) -> Option<String> {
        self.stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops `doc:` trees without a meta record: leftovers of a deletion or a
    /// first append that a crash interrupted (see the module docs).
    fn drop_orphan_trees(&self) -> Result<(), StoreError> {
        let mut dropped = false;
        for name in self.db.tree_names() {
            let Some(doc) = name
                .strip_prefix(DOC_TREE_PREFIX.as_bytes())
                .or_else(|| name.strip_prefix(CHAT_TREE_PREFIX.as_bytes()))
            else {
                continue;
            };
            let known = self
                .meta
                .contains_key(doc)
                .map_err(io_err("checking for orphaned documents"))?;
            if !known {
                tracing::info!(
                    doc = %String::from_utf8_lossy(doc),
                    "dropping the log of a document whose deletion or creation was interrupted"
                );
                self.db
                    .drop_tree(&name)
                    .map_err(io_err("dropping an orphaned document"))?;
                dropped = true;
            }
        }
        if dropped {
            self.db
                .flush()
                .map_err(io_err("flushing after orphan cleanup"))?;
        }
        Ok(())
    }

    fn committed_ticket(&self) -> u64 {
        self.committed.borrow().ticket
    }

    /// Flushes sled if any write is not yet covered and publishes the result.
    ///
    /// Returns how many writes arrived while it flushed (load, if many), as
    /// opposed to after it published (a lone writer answering its `Saved`).
    fn flush_now(&self) -> Result<u64, StoreError> {
        let _serial = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Read before flushing: every write with a ticket <= this is in sled.
        let ticket = self.tickets.load(Ordering::SeqCst);
        let previous = self.committed_ticket();
        if ticket <= previous {
            return Ok(0);
        }
        let started = Instant::now();
        let written = self.write_pending().and_then(|()| {
            self.db
                .flush()
                .map_err(io_err("flushing to disk"))
                .map(drop)
        });
        *self.stalled.lock().unwrap_or_else(PoisonError::into_inner) =
            written.as_ref().err().map(ToString::to_string);
        written?;
        let arrived_meanwhile = self.tickets.load(Ordering::SeqCst) - ticket;
        self.committed.send_replace(Committed {
            ticket,
            batch: ticket - previous,
            flush_time: started.elapsed(),
        });
        self.remove_doomed(ticket);
        Ok(arrived_meanwhile)
    }

    /// Body of the `quire-flusher` thread: park until a write arrives; wait
    /// the commit window so more writes join, flush once, repeat. Two
    /// things cut the window: a write after a quiet spell that someone
    /// waits for ([`DocStore::hurry`]) is flushed at once, so a lone
    /// writer's `Saved` waits for one flush, not a window, and a few
    /// writers' hurried writes that arrived during a flush are flushed
    /// right after it; [`LOAD_WRITES`] or more arriving while a flush runs
    /// (load) always wait the window, so that under load a flush covers
    /// many writes.
    fn run_flusher(&self) {
        // Whether what is pending came after a quiet spell: the flusher
        // parked (found nothing to flush), or fewer than `LOAD_WRITES`
        // arrived while it last flushed.
        let mut quiet = true;
        loop {
            let stopping = self.stopping.load(Ordering::SeqCst);
            if !self.pending() {
                if stopping {
                    return;
                }
                self.flusher_state.store(IDLE, Ordering::SeqCst);
                // A write that lands before the store above is seen here;
                // one after it sees IDLE and unparks us (an unpark before
                // this park makes it return at once).
                if !self.pending() {
                    thread::park();
                    quiet = true;
                }
                self.flusher_state.store(BUSY, Ordering::SeqCst);
                continue;
            }
            if !stopping && !self.commit_window.is_zero() {
                if !quiet {
                    thread::sleep(self.commit_window);
                } else if !self.hurry.load(Ordering::SeqCst) {
                    self.wait_quiet_window();
                }
            }
            self.hurry.store(false, Ordering::SeqCst);
            match self.flush_now() {
                // What arrived after the flush published answers it (a lone
                // writer's next update): still a quiet spell.
                // A few writes during the flush (moderate load: a handful
                // of writers) are not load either: a hurried one is flushed
                // right after, back to back, instead of a window later.
                Ok(arrived_meanwhile) => quiet = arrived_meanwhile < LOAD_WRITES,
                Err(e) => {
                    tracing::error!(error = %e, "group commit flush failed; will retry");
                    if stopping {
                        return;
                    }
                    quiet = false;
                    thread::sleep(FLUSH_RETRY_DELAY);
                }
            }
        }
    }

    fn pending(&self) -> bool {
        self.tickets.load(Ordering::SeqCst) > self.committed_ticket()
    }

    /// Waits out the commit window after a quiet spell, or less if someone
    /// hurries (or the store stops) meanwhile.
    fn wait_quiet_window(&self) {
        let until = Instant::now() + self.commit_window;
        self.flusher_state.store(QUIET_WINDOW, Ordering::SeqCst);
        loop {
            let now = Instant::now();
            if now >= until
                || self.hurry.load(Ordering::SeqCst)
                || self.stopping.load(Ordering::SeqCst)
            {
                break;
            }
            thread::park_timeout(until - now);
        }
        self.flusher_state.store(BUSY, Ordering::SeqCst);
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            // The flusher does the final flush before it exits.
            if flusher.join().is_err() {
                tracing::error!("the flusher thread panicked");
            }
        }
    }
}

impl DocStore for SledStore {
    /// Queues the update (see the module docs): visible to `load` at once,
    /// written to sled and flushed by the next group commit.
    fn append(&self, doc: &str, update: &[u8]) -> Result<Appended, StoreError> {
        let seq = self
            .shared
            .db
            .generate_id()
            .map_err(io_err("generating an entry id"))?;
        {
            let mut pending = self.shared.lock_pending();
            let max = self.shared.max_pending_bytes;
            if pending.bytes() > 0 && pending.bytes() + update.len() as u64 > max {
                let why = self.shared.stalled_reason();
                return Err(StoreError::Unavailable(format!(
                    "more than {max} bytes of writes are waiting for the disk{}",
                    why.map(|why| format!(" ({why})")).unwrap_or_default()
                )));
            }
            pending.push(doc, seq, update, now_ms());
        }
        Ok(Appended {
            seq,
            ticket: self.take_ticket(),
        })
    }

    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.shared.write_pending()?;
        // Shared: no value file this read refers to is removed meanwhile
        // (removals take it exclusively).
        let _trees = self.read_lock();
        if !self.exists(doc)? {
            return Ok(None);
        }
        // A concurrent compaction can make this read see both old updates and
        // the state that contains them; that still merges to the same content.
        let mut stored = StoredDoc::default();
        // The value files, merged in by seq (before log entries of the
        // same seq: a pack or chunks there come first).
        let mut files = self.shared.value_refs(doc)?.into_iter().peekable();
        // Those before `until`, or all that are left.
        let mut read_files_before = |until: Option<Seq>, stored: &mut StoredDoc| {
            while let Some(file) = files.next_if(|file| until.is_none_or(|until| file.seq < until))
            {
                let value = self
                    .shared
                    .files
                    .read(doc, file.file, file.len)
                    .map_err(|detail| StoreError::Corrupt {
                        doc: doc.to_owned(),
                        detail,
                    })?;
                stored.updates.push(value);
                stored.last_seq = file.seq;
            }
            Ok::<_, StoreError>(())
        };
        let log = self.shared.logs.open(&self.shared.db, doc)?;
        for entry in log.iter().flat_map(sled::Tree::iter) {
            let (key, value) = entry.map_err(io_err(format_args!("loading {doc:?}")))?;
            let (seq, kind) = decode_key(doc, &key)?;
            read_files_before(Some(seq), &mut stored)?;
            match (kind, stored.updates.last_mut()) {
                // The next chunk of the value being read.
                (Entry::Chunk(index), Some(state)) if index > 0 && seq == stored.last_seq => {
                    state.extend_from_slice(&value);
                }
                (Entry::Pack, _) => {
                    let updates = pending::unpack(&value).ok_or_else(|| corrupt_pack(doc))?;
                    stored
                        .updates
                        .extend(updates.into_iter().map(|(_, update)| update.to_vec()));
                }
                _ => stored.updates.push(value.to_vec()),
            }
            stored.last_seq = seq;
        }
        read_files_before(None, &mut stored)?;
        Ok(Some(stored))
    }

    fn compact(&self, doc: &str, upto: Seq, state: &[u8]) -> Result<(), StoreError> {
        // What is queued up to `upto` goes first, to be replaced as well.
        self.shared.write_pending()?;
        let _trees = self.read_lock();
        // A document deleted meanwhile stays deleted.
        if !self.exists(doc)? {
            return Ok(());
        }
        let (bytes, updates, replaced) = if state.len() > self.shared.value_bytes {
            self.compact_into_file(doc, upto, state)?
        } else {
            self.compact_into_log(doc, upto, state)?
        };
        self.shared.adjust_meta(doc, bytes, updates, now_ms())?;
        self.doom_after_next_ticket(replaced);
        Ok(())
    }

    fn append_chat(&self, doc: &str, record: &[u8]) -> Result<Appended, StoreError> {
        self.append_chat_entry(doc, record)
    }

    fn recent_chat(&self, doc: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let _trees = self.read_lock();
        let Some(tree) = self.existing_chat(doc)? else {
            return Ok(Vec::new());
        };
        let mut records = tree
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                entry
                    .map(|(_, value)| value.to_vec())
                    .map_err(io_err(format_args!("reading the chat of {doc:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        records.reverse();
        Ok(records)
    }

    fn trim_chat(&self, doc: &str, keep: usize, max_bytes: u64) -> Result<(), StoreError> {
        let _trees = self.read_lock();
        let Some(tree) = self.existing_chat(doc)? else {
            return Ok(());
        };
        let (mut kept, mut bytes) = (0usize, 0u64);
        let mut dropped = 0;
        for entry in tree.iter().rev() {
            let (key, value) =
                entry.map_err(io_err(format_args!("reading the chat of {doc:?}")))?;
            bytes += value.len() as u64;
            if kept < keep && bytes <= max_bytes {
                kept += 1;
                continue;
            }
            tree.remove(key)
                .map_err(io_err(format_args!("trimming the chat of {doc:?}")))?;
            dropped += 1;
        }
        if dropped > 0 {
            self.take_ticket();
        }
        Ok(())
    }

    fn info(&self, doc: &str) -> Result<Option<DocInfo>, StoreError> {
        // The counts include every append made so far.
        self.shared.write_pending()?;
        let raw = self
            .shared
            .meta
            .get(doc)
            .map_err(io_err(format_args!("reading metadata of {doc:?}")))?;
        raw.map(|raw| {
            MetaRecord::decode(&raw)
                .map(|record| record.info(doc.to_owned()))
                .ok_or_else(|| StoreError::Corrupt {
                    doc: doc.to_owned(),
                    detail: format!("meta record has {} bytes instead of 24", raw.len()),
                })
        })
        .transpose()
    }

    fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        self.shared.write_pending()?;
        // sled iterates in byte order, which is `str` order, so the result is
        // already sorted by name.
        let mut docs = Vec::new();
        for entry in self.shared.meta.iter() {
            let (key, raw) = entry.map_err(io_err("listing documents"))?;
            let name = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
                doc: String::from_utf8_lossy(&key).into_owned(),
                detail: "document name is not UTF-8".into(),
            })?;
            let record = MetaRecord::decode(&raw).ok_or_else(|| StoreError::Corrupt {
                doc: name.clone(),
                detail: format!("meta record has {} bytes instead of 24", raw.len()),
            })?;
            docs.push(record.info(name));
        }
        Ok(docs)
    }

    fn delete(&self, doc: &str) -> Result<bool, StoreError> {
        let _trees = self
            .shared
            .trees
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Its queued appends go first: none may recreate it.
        let queued = self.shared.lock_pending().remove(doc);
        // Record first: from here on the document no longer exists, even if
        // we crash before the tree is gone (open drops it then).
        let existed = self
            .shared
            .meta
            .remove(doc)
            .map_err(io_err(format_args!("deleting metadata of {doc:?}")))?
            .is_some()
            || queued;
        let dropped = self
            .shared
            .db
            .drop_tree(tree_name(doc))
            .map_err(io_err(format_args!("deleting document {doc:?}")))?;
        let dropped_chat = self
            .shared
            .db
            .drop_tree(chat_tree_name(doc))
            .map_err(io_err(format_args!("deleting the chat of {doc:?}")))?;
        self.shared.chats.remove(doc);
        self.shared.logs.remove(doc);
        // The files go once this is durable (a crash before brings the
        // document back whole); `open` removes what a crash left.
        let mut refs = sled::Batch::default();
        let mut files = Vec::new();
        for value in self.shared.value_refs(doc)? {
            refs.remove(values::ref_key(doc, value.seq));
            files.push(self.shared.files.path(doc, value.file));
        }
        if !files.is_empty() {
            self.shared
                .values
                .apply_batch(refs)
                .map_err(io_err(format_args!("deleting the value files of {doc:?}")))?;
        }
        if existed || dropped || dropped_chat || !files.is_empty() {
            self.doom_after_next_ticket(files);
        }
        Ok(existed)
    }

    fn durability(&self) -> watch::Receiver<Committed> {
        self.shared.committed.subscribe()
    }

    /// The newest ticket taken, flushed or not: a room loading a document
    /// an evicted room wrote a moment ago waits for this one.
    fn last_ticket(&self) -> u64 {
        self.shared.tickets.load(Ordering::SeqCst)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush_now().map(drop)
    }

    /// Writes taken but not yet durable, the bytes still queued in memory,
    /// and why the last group commit failed if it did (nothing is
    /// acknowledged meanwhile; the flusher retries).
    fn health(&self) -> StoreHealth {
        let pending_writes = self
            .shared
            .tickets
            .load(Ordering::SeqCst)
            .saturating_sub(self.shared.committed_ticket());
        StoreHealth {
            pending_writes,
            pending_bytes: self.shared.lock_pending().bytes(),
            stalled: self.shared.stalled_reason(),
        }
    }

    fn hurry(&self) {
        self.shared.hurry.store(true, Ordering::SeqCst);
        if self.shared.flusher_state.load(Ordering::SeqCst) != BUSY {
            self.wake_flusher();
        }
    }
}
