//! [`DocStore`] on PostgreSQL: the source of truth when several Quire nodes
//! serve the same documents.
//!
//! # Layout
//!
//! - `schema`: tables and migrations (applied at [`PgStore::open`]).
//! - `queue`: the writes this instance accepted and has not committed,
//!   tickets, provisional seqs, how reads see queued appends.
//! - `writer`: the group-commit task that commits the queue's front.
//! - this file: the store's public face, its reads, and the bridge from the
//!   synchronous [`DocStore`] calls to its own tokio runtime.
//!
//! # Threads and calls
//!
//! The store owns a small tokio runtime (two `quire-pg` threads) running the
//! writer task and every database round trip, with a connection pool
//! (deadpool) for reads and one dedicated connection for the writer.
//! `append`, `append_chat` and `compact` only queue (a mutex and a
//! notification: safe on a room's task); `load`, `info`, `list`,
//! `recent_chat`, `load_after`, `delete` and `flush` hand a future to the
//! runtime and block the *calling* thread on a channel until it answers or
//! [`PgOptions::wait_timeout`] passes, so they belong on blocking threads
//! (`spawn_blocking`), as the server already calls them. Connections are
//! plain TCP without TLS: meant for a database on a trusted network.
//!
//! # Acknowledgement
//!
//! A ticket is published on [`DocStore::durability`] only after the COMMIT
//! of the transaction that holds the write returned. While the database is
//! unreachable, writes stay queued (up to [`PgOptions::max_pending_bytes`];
//! beyond that `append` fails), the ticket stands still, [`DocStore::health`]
//! says why, and the writer retries until they commit.
//!
//! A write someone waits for ([`DocStore::hurry`]) does not sit out
//! [`PgOptions::commit_window`]: the writer commits what is queued as soon
//! as no transaction is in flight, and what arrives meanwhile joins the
//! next one. Writes nobody waits for (stock clients) still gather for the
//! window.
//!
//! # Seqs
//!
//! Database seqs come from one sequence shared by every document and node,
//! taken under the document's row lock, so a document's seq order is its
//! commit order ([`DocStore::load_after`] relies on it). An append returns
//! a *provisional* seq (above every database seq) since its real one only
//! exists once it commits; `compact` accepts either kind.
//!
//! **Compaction bound in cluster mode.** `compact(doc, upto, state)`
//! replaces every committed entry with seq <= upto, from any node. With
//! several nodes writing, a provisional bound (this instance's own append)
//! can cover other nodes' entries committed meanwhile that the caller has
//! not merged yet; cluster-mode callers must compact only up to a seq they
//! read ([`DocStore::load`] / [`DocStore::load_after`]) and merged. On a
//! single node any bound is safe. `compact` queues like an append (a room
//! never waits on the database for it); its effect shows once `flush`
//! returned.

mod queue;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, watch};
use tokio_postgres::{IsolationLevel, NoTls};

use crate::{Appended, Committed, DocInfo, DocStore, Seq, StoreError, StoreHealth, StoredDoc};
use queue::{CANCELLED, Op, QUEUED, Queue, Write, provisional};

/// Class id (first key) of Quire's advisory locks: "QUIR".
const LOCK_CLASS: i32 = 0x5155_4952;
/// Longest document name this store accepts (a B-tree key must fit in a
/// page; the server's own limit is far lower).
const MAX_NAME_BYTES: usize = 1024;

/// Tuning knobs for [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections for reads (the writer has its own). Default 8.
    pub pool_size: usize,
    /// How long the writer waits before taking a batch, so more appends
    /// join it; cut short when someone waits for the queued writes
    /// ([`DocStore::hurry`]). Default zero: batches form from what arrives
    /// while the previous transaction is in flight (with any window, too).
    pub commit_window: Duration,
    /// At most this many appends per transaction. Default 2,048.
    pub max_batch_rows: usize,
    /// At most this many bytes per transaction (one larger write still
    /// goes alone). Default 8 MiB.
    pub max_batch_bytes: u64,
    /// Bytes of writes that may wait for the database; past it `append`
    /// fails with [`StoreError::Unavailable`]. Default 64 MiB.
    pub max_pending_bytes: u64,
    /// How long a blocking call (read, `delete`, `flush`) or one attempt of
    /// the writer may take, and how long dropping the store keeps trying to
    /// commit what is queued. Default 30 s.
    pub wait_timeout: Duration,
    /// How long opening one connection may take. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            commit_window: Duration::ZERO,
            max_batch_rows: 2048,
            max_batch_bytes: 8 * 1024 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of the writer's trouble, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Attempts that failed and were retried.
    pub failed_attempts: u64,
    /// Retries that found their batch already committed (the COMMIT's
    /// reply had been lost), and so inserted nothing twice.
    pub confirmed_on_retry: u64,
}

/// The [`DocStore`] on a PostgreSQL database shared by any number of
/// instances (nodes). See the module docs.
pub struct PgStore {
    /// What the writer task shares with the store.
    shared: Arc<Shared>,
    /// Connections for reads.
    pool: Pool,
    /// Runs the writer and every round trip; `Option` so `Drop` can shut
    /// it down without blocking (a runtime must not be dropped on another
    /// runtime's thread).
    runtime: Option<Runtime>,
    /// Disconnected when the writer task ends; `Drop` waits for that.
    writer_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// State of the store that the writer task uses too.
struct Shared {
    /// Where the writer connects.
    config: tokio_postgres::Config,
    /// This instance's id in `quire_batches` and provisional seqs.
    writer_id: i64,
    /// The uncommitted writes, in ticket order.
    queue: Mutex<Queue>,
    /// Wakes the writer when a write is queued, someone hurries it, or the
    /// store stops.
    wake: Notify,
    /// Set by [`DocStore::hurry`]: someone waits for the queued writes, so
    /// the writer skips its commit window; cleared as it takes a job.
    hurry: AtomicBool,
    /// The last ticket committed, for acknowledgements.
    committed: watch::Sender<Committed>,
    /// Why writes are stalled, and counters.
    trouble: Mutex<Trouble>,
    /// Set when the store is dropped: the writer drains the queue, trying
    /// until this instant if the database is unreachable.
    stop_deadline: OnceLock<Instant>,
    options: PgOptions,
}

#[derive(Default)]
struct Trouble {
    stalled: Option<String>,
    stats: CommitStats,
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_trouble(&self) -> MutexGuard<'_, Trouble> {
        self.trouble.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop_deadline.get().is_some()
    }

    fn past_stop_deadline(&self) -> bool {
        self.stop_deadline
            .get()
            .is_some_and(|deadline| Instant::now() >= *deadline)
    }

    fn record_failure(&self, reason: &str) {
        let mut trouble = self.lock_trouble();
        trouble.stalled = Some(reason.to_owned());
        trouble.stats.failed_attempts += 1;
    }

    fn record_recovered(&self) {
        self.lock_trouble().stats.confirmed_on_retry += 1;
    }

    fn record_success(&self) {
        self.lock_trouble().stalled = None;
    }

    /// Queues a write and wakes the writer; `None` if the pending bound
    /// refuses it.
    fn push(&self, doc: &str, op: Op, max_bytes: u64) -> Option<Arc<Write>> {
        let write = self.lock_queue().push(doc, op, max_bytes)?;
        self.wake.notify_one();
        Some(write)
    }
}

/// The advisory lock key (second key) of a document: FNV-1a of its name.
/// A collision only makes two documents' compactions wait for each other.
fn lock_key(doc: &str) -> i32 {
    let hash = doc.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash as i32
}

/// A database error in words: SQLSTATE and message from the server, or
/// the client's own error (connection refused, closed, ...).
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Maps a database error to [`StoreError`]: connection trouble and a
/// server going away are [`StoreError::Unavailable`], the rest
/// [`StoreError::Io`] naming the operation.
fn db_error(what: impl std::fmt::Display) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        let transient = match e.code() {
            None => true,
            Some(code) => {
                let code = code.code();
                code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
            }
        };
        if transient {
            StoreError::Unavailable(format!("{what}: {}", describe(&e)))
        } else {
            StoreError::Io(format!("{what}: {}", describe(&e)))
        }
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_error("connecting to the database")(e),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Refuses names PostgreSQL cannot store as a key, so that no queued write
/// can fail for good (a queued write is retried until it commits).
fn check_name(doc: &str) -> Result<(), StoreError> {
    if doc.contains('\0') {
        return Err(StoreError::Io(format!(
            "document name {doc:?} contains a NUL character, which PostgreSQL cannot store"
        )));
    }
    if doc.len() > MAX_NAME_BYTES {
        return Err(StoreError::Io(format!(
            "document name is {} bytes long; this store keeps names up to {MAX_NAME_BYTES}",
            doc.len()
        )));
    }
    Ok(())
}

/// Runs `future` on `runtime` and blocks the calling thread (any thread
/// but the runtime's own) until it finishes or `timeout` passes.
fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    timeout: Duration,
    future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = sync_channel(1);
    runtime.spawn(async move {
        let result = match tokio::time::timeout(timeout, future).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {timeout:?}"
            ))),
        };
        let _ = tx.send(result);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(StoreError::Io("the store's runtime has stopped".into())))
}

/// A pooled connection.
async fn connection(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(pool_error)
}

/// Starts a read-only transaction whose statements share one snapshot.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error("starting a read"))
}

/// The number of this writer's last batch that `tx`'s snapshot holds.
async fn visible_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    writer_id: i64,
) -> Result<i64, StoreError> {
    let statement = tx
        .prepare_cached("SELECT batch FROM quire_batches WHERE writer = $1")
        .await
        .map_err(db_error("preparing a read"))?;
    let row = tx
        .query_opt(&statement, &[&writer_id])
        .await
        .map_err(db_error("reading the commit record"))?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// What the database holds of one document's log.
struct LogRead {
    exists: bool,
    /// (seq, data), seq order.
    rows: Vec<(i64, Vec<u8>)>,
    visible_batch: i64,
}

async fn read_log(
    pool: Pool,
    writer_id: i64,
    doc: String,
    after: i64,
) -> Result<LogRead, StoreError> {
    let mut client = connection(&pool).await?;
    let tx = snapshot(&mut client).await?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM quire_docs WHERE name = $1")
        .await
        .map_err(db_error("preparing a read"))?;
    let log = tx
        .prepare_cached(
            "SELECT seq, data FROM quire_updates WHERE doc = $1 AND seq > $2 ORDER BY seq",
        )
        .await
        .map_err(db_error("preparing a read"))?;
    let exists = tx
        .query_opt(&exists, &[&doc])
        .await
        .map_err(db_error(format_args!("reading document {doc:?}")))?
        .is_some();
    let rows = tx
        .query(&log, &[&doc, &after])
        .await
        .map_err(db_error(format_args!("loading {doc:?}")))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let visible_batch = visible_batch(&tx, writer_id).await?;
    tx.commit().await.map_err(db_error("ending a read"))?;
    Ok(LogRead {
        exists,
        rows,
        visible_batch,
    })
}

/// Adds the queued writes the snapshot does not hold to a document's
/// summary (creating it if only queued writes exist).
fn add_pending(
    name: &str,
    mut info: Option<DocInfo>,
    pending: &[Arc<Write>],
    visible_batch: i64,
) -> Option<DocInfo> {
    for write in pending.iter().filter(|w| !w.visible_in(visible_batch)) {
        let entry = info.get_or_insert_with(|| DocInfo {
            name: name.to_owned(),
            bytes: 0,
            updates: 0,
            modified_ms: 0,
        });
        if let Op::Update(data) = &write.op {
            entry.bytes += data.len() as u64;
            entry.updates += 1;
        }
        entry.modified_ms = entry.modified_ms.max(write.at_ms as u64);
    }
    info
}

fn doc_info(name: String, bytes: i64, updates: i64, modified_ms: i64) -> DocInfo {
    DocInfo {
        name,
        bytes: bytes.max(0) as u64,
        updates: updates.max(0) as u64,
        modified_ms: modified_ms.max(0) as u64,
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// applies the schema migrations and starts the writer. Fails with
    /// [`StoreError::Unavailable`] if the database cannot be reached.
    pub fn open(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Io(format!("invalid database URL: {e}")))?;
        config
            .connect_timeout(options.connect_timeout)
            .application_name("quire");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quire-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the database threads: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Io(format!("cannot set up the connection pool: {e}")))?;

        let setup = pool.clone();
        let writer_id = run_on(runtime.handle(), options.wait_timeout, async move {
            let mut client = connection(&setup).await?;
            let applied = schema::migrate(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied database schema migrations");
            }
            let id: i64 = client
                .query_one("SELECT nextval('quire_writers')", &[])
                .await
                .map_err(db_error("taking a writer id"))?
                .get(0);
            // Commit records of instances gone for long: nothing retries them.
            client
                .execute(
                    "DELETE FROM quire_batches WHERE at < now() - interval '7 days'",
                    &[],
                )
                .await
                .map_err(db_error("pruning old commit records"))?;
            Ok(id)
        })?;

        let shared = Arc::new(Shared {
            config,
            writer_id,
            queue: Mutex::new(Queue::new()),
            wake: Notify::new(),
            hurry: AtomicBool::new(false),
            committed: watch::Sender::new(Committed::default()),
            trouble: Mutex::new(Trouble::default()),
            stop_deadline: OnceLock::new(),
            options,
        });
        let (done_tx, done_rx) = sync_channel::<()>(0);
        let writer_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            writer::run(writer_shared).await;
            drop(done_tx);
        });
        Ok(Self {
            shared,
            pool,
            runtime: Some(runtime),
            writer_done: Mutex::new(Some(done_rx)),
        })
    }

    /// This instance's writer id (unique per open, cluster-wide).
    pub fn writer_id(&self) -> i64 {
        self.shared.writer_id
    }

    /// One round trip to the database through the pool: for readiness
    /// checks (nothing else tells that an idle store's database is down).
    pub fn ping(&self) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        self.block_on(async move {
            let client = connection(&pool).await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(db_error("pinging the database"))?;
            Ok(())
        })
    }

    /// The writer's retry counters.
    pub fn commit_stats(&self) -> CommitStats {
        self.shared.lock_trouble().stats
    }

    fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        run_on(runtime.handle(), self.shared.options.wait_timeout, future)
    }

    fn queue_entry(&self, doc: &str, op: Op) -> Result<Appended, StoreError> {
        check_name(doc)?;
        let max = self.shared.options.max_pending_bytes;
        let write = self.shared.push(doc, op, max).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "more than {max} bytes of writes are waiting for the database{}",
                self.shared
                    .lock_trouble()
                    .stalled
                    .as_deref()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default()
            ))
        })?;
        Ok(Appended {
            seq: provisional(self.shared.writer_id, write.ticket),
            ticket: write.ticket,
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let _ = self
            .shared
            .stop_deadline
            .set(Instant::now() + self.shared.options.wait_timeout);
        self.shared.wake.notify_one();
        let done = self
            .writer_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            // Disconnects when the writer ends (it bounds its own drain).
            let _ = done.recv_timeout(self.shared.options.wait_timeout + Duration::from_secs(5));
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl DocStore for PgStore {
    fn append(&self, doc: &str, update: &[u8]) -> Result<Appended, StoreError> {
        self.queue_entry(doc, Op::Update(update.to_vec()))
    }

    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError> {
        // Queued appends first: each is either in the snapshot read after
        // this (its batch is visible) or still to be added from here.
        let pending = self.shared.lock_queue().pending_of(doc, false);
        let read = self.block_on(read_log(
            self.pool.clone(),
            self.shared.writer_id,
            doc.to_owned(),
            0,
        ))?;
        let mut stored = StoredDoc::default();
        for (seq, data) in read.rows {
            stored.last_seq = seq as Seq;
            stored.updates.push(data);
        }
        let mut exists = read.exists;
        for write in pending.iter().filter(|w| !w.visible_in(read.visible_batch)) {
            if let Op::Update(data) = &write.op {
                stored.updates.push(data.clone());
                stored.last_seq = provisional(self.shared.writer_id, write.ticket);
                exists = true;
            }
        }
        Ok(exists.then_some(stored))
    }

    fn load_after(&self, doc: &str, after: Seq) -> Result<Option<StoredDoc>, StoreError> {
        let after = self
            .shared
            .lock_queue()
            .resolve(after, self.shared.writer_id);
        let read = self.block_on(read_log(
            self.pool.clone(),
            self.shared.writer_id,
            doc.to_owned(),
            after,
        ))?;
        if !read.exists {
            return Ok(None);
        }
        let mut stored = StoredDoc {
            updates: Vec::with_capacity(read.rows.len()),
            last_seq: after.max(0) as Seq,
        };
        for (seq, data) in read.rows {
            stored.last_seq = seq as Seq;
            stored.updates.push(data);
        }
        Ok(Some(stored))
    }

    fn compact(&self, doc: &str, upto: Seq, state: &[u8]) -> Result<(), StoreError> {
        check_name(doc)?;
        let mut queue = self.shared.lock_queue();
        let Some(upto) = queue.bound(upto, self.shared.writer_id) else {
            tracing::debug!(doc, "compaction skipped: its bound's seq is unknown");
            return Ok(());
        };
        let op = Op::Compact {
            upto,
            state: state.to_vec(),
        };
        // An optimisation only: refused (not an error) when writes pile up.
        let queued = queue.push(doc, op, self.shared.options.max_pending_bytes);
        drop(queue);
        if queued.is_some() {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    fn info(&self, doc: &str) -> Result<Option<DocInfo>, StoreError> {
        let pending = {
            let queue = self.shared.lock_queue();
            let mut pending = queue.pending_of(doc, false);
            pending.extend(queue.pending_of(doc, true));
            pending
        };
        let pool = self.pool.clone();
        let writer_id = self.shared.writer_id;
        let name = doc.to_owned();
        let (info, visible) = self.block_on(async move {
            let mut client = connection(&pool).await?;
            let tx = snapshot(&mut client).await?;
            let row = tx
                .query_opt(
                    "SELECT bytes, updates, modified_ms FROM quire_docs WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(db_error(format_args!("reading document {name:?}")))?;
            let visible = visible_batch(&tx, writer_id).await?;
            tx.commit().await.map_err(db_error("ending a read"))?;
            Ok((
                row.map(|r| doc_info(name, r.get(0), r.get(1), r.get(2))),
                visible,
            ))
        })?;
        Ok(add_pending(doc, info, &pending, visible))
    }

    fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        let pending = self.shared.lock_queue().pending_entries();
        let pool = self.pool.clone();
        let writer_id = self.shared.writer_id;
        let (docs, visible) = self.block_on(async move {
            let mut client = connection(&pool).await?;
            let tx = snapshot(&mut client).await?;
            let rows = tx
                .query(
                    "SELECT name, bytes, updates, modified_ms FROM quire_docs",
                    &[],
                )
                .await
                .map_err(db_error("listing documents"))?;
            let visible = visible_batch(&tx, writer_id).await?;
            tx.commit().await.map_err(db_error("ending a read"))?;
            let docs: Vec<DocInfo> = rows
                .iter()
                .map(|r| doc_info(r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            Ok((docs, visible))
        })?;
        let mut by_name: BTreeMap<String, Option<DocInfo>> = docs
            .into_iter()
            .map(|info| (info.name.clone(), Some(info)))
            .collect();
        let mut pending_by_doc: BTreeMap<String, Vec<Arc<Write>>> = BTreeMap::new();
        for write in pending {
            pending_by_doc
                .entry(write.doc.clone())
                .or_default()
                .push(write);
        }
        for (name, writes) in pending_by_doc {
            let slot = by_name.entry(name.clone()).or_default();
            *slot = add_pending(&name, slot.take(), &writes, visible);
        }
        // BTreeMap order is byte order, which is `str` order.
        Ok(by_name.into_values().flatten().collect())
    }

    fn append_chat(&self, doc: &str, record: &[u8]) -> Result<Appended, StoreError> {
        self.queue_entry(doc, Op::Chat(record.to_vec()))
    }

    fn recent_chat(&self, doc: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let pending = self.shared.lock_queue().pending_of(doc, true);
        let pool = self.pool.clone();
        let writer_id = self.shared.writer_id;
        let name = doc.to_owned();
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let (mut records, visible) = self.block_on(async move {
            let mut client = connection(&pool).await?;
            let tx = snapshot(&mut client).await?;
            let rows = tx
                .query(
                    "SELECT data FROM (
                         SELECT seq, data FROM quire_chat WHERE doc = $1
                         ORDER BY seq DESC LIMIT $2
                     ) newest ORDER BY seq",
                    &[&name, &count],
                )
                .await
                .map_err(db_error(format_args!("reading the chat of {name:?}")))?;
            let visible = visible_batch(&tx, writer_id).await?;
            tx.commit().await.map_err(db_error("ending a read"))?;
            let records: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
            Ok((records, visible))
        })?;
        for write in pending.iter().filter(|w| !w.visible_in(visible)) {
            if let Op::Chat(data) = &write.op {
                records.push(data.clone());
            }
        }
        let skip = records.len().saturating_sub(limit);
        records.drain(..skip);
        Ok(records)
    }

    fn trim_chat(&self, doc: &str, keep: usize, max_bytes: u64) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let name = doc.to_owned();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self.block_on(async move {
            let client = connection(&pool).await?;
            // Newest first, the running count and size of what is kept;
            // everything older than the oldest kept message goes.
            client
                .execute(
                    "DELETE FROM quire_chat WHERE doc = $1 AND seq < COALESCE((
                         SELECT min(seq) FROM (
                             SELECT seq,
                                    row_number() OVER (ORDER BY seq DESC) AS n,
                                    sum(length(data)) OVER (ORDER BY seq DESC) AS total
                             FROM quire_chat WHERE doc = $1
                         ) newest WHERE n <= $2 AND total <= $3
                     ), 9223372036854775807)",
                    &[&name, &keep, &max_bytes],
                )
                .await
                .map_err(db_error(format_args!("trimming the chat of {name:?}")))?;
            Ok(())
        })
    }

    fn delete(&self, doc: &str) -> Result<bool, StoreError> {
        check_name(doc)?;
        let wait = self.shared.options.wait_timeout;
        let (reply, answer) = sync_channel(1);
        let op = Op::Delete {
            reply,
            deadline: Instant::now() + wait,
        };
        let write = self
            .shared
            .push(doc, op, u64::MAX)
            .expect("an unbounded push always succeeds");
        match answer.recv_timeout(wait) {
            Ok(result) => return result,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StoreError::Io("the store stopped during a deletion".into()));
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Still queued behind writes the database does not take: withdraw.
        let cancelled =
            write
                .state
                .compare_exchange(QUEUED, CANCELLED, Ordering::SeqCst, Ordering::SeqCst);
        if cancelled.is_ok() {
            return Err(StoreError::Unavailable(format!(
                "the database did not take the deletion of {doc:?} within {wait:?}; nothing was deleted"
            )));
        }
        // Started: the writer answers by its deadline plus one attempt.
        answer.recv_timeout(wait * 2).unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the deletion of {doc:?} is not confirmed; it may complete when the database answers"
            )))
        })
    }

    fn durability(&self) -> watch::Receiver<Committed> {
        self.shared.committed.subscribe()
    }

    fn flush(&self) -> Result<(), StoreError> {
        let target = self.shared.lock_queue().last_ticket;
        let mut committed = self.shared.committed.subscribe();
        self.block_on(async move {
            committed
                .wait_for(|c| c.ticket >= target)
                .await
                .map(|_| ())
                .map_err(|_| StoreError::Io("the store's writer has stopped".into()))
        })
    }

    fn last_ticket(&self) -> u64 {
        self.shared.lock_queue().last_ticket
    }

    /// Cuts the writer's commit window: the next transaction starts once
    /// none is in flight (the acknowledgement still waits for its COMMIT).
    fn hurry(&self) {
        // One notification per hurry the writer has not taken yet.
        if !self.shared.hurry.swap(true, Ordering::SeqCst) {
            self.shared.wake.notify_one();
        }
    }

    fn health(&self) -> StoreHealth {
        let (pending_writes, pending_bytes) = {
            let queue = self.shared.lock_queue();
            (queue.items.len() as u64, queue.pending_bytes)
        };
        StoreHealth {
            pending_writes,
            pending_bytes,
            stalled: self.shared.lock_trouble().stalled.clone(),
        }
    }
}
