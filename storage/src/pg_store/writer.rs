//! The group-commit writer: one task per store instance, with a database
//! connection of its own, turning the front of the queue into transactions.
//!
//! A *job* is either a run of consecutive appends and chat messages (up to
//! the batch limits: one transaction, one COMMIT, however many documents),
//! or one compaction, or one deletion. Whatever arrives while a transaction
//! is in flight waits for the next one, so batches grow with the load
//! without any timer. An optional commit window adds one, for writes
//! nobody waits for: a write someone waits for ([`crate::DocStore::hurry`],
//! a client's `Saved`) is committed as soon as no transaction is in
//! flight, with whatever else is queued.
//!
//! **Retries.** A job that fails (database down, connection lost, timeout)
//! is retried, the same job with the same batch number, until it succeeds:
//! a write is never dropped and nothing after it is acknowledged before it.
//! The first statement of an append batch claims its number in
//! `quire_batches`; when a COMMIT's reply was lost and the batch did
//! commit, the retry's claim finds the number taken (waiting on the row
//! lock if the old transaction is still finishing), rolls back, and counts
//! the batch as committed, so no row is inserted twice. Compactions and
//! deletions are idempotent and simply run again.
//!
//! **Ordering.** A batch first upserts the `quire_docs` row of each of its
//! documents (sorted by name, so concurrent batches on several nodes lock
//! in one order and cannot deadlock), then takes its seqs from
//! `quire_seq`. Writers of one document therefore take seqs one
//! transaction after another, and a document's seq order is its commit
//! order: what `load_after` relies on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::queue::{Bound, CANCELLED, Op, QUEUED, RUNNING, Write, now_ms};
use super::{LOCK_CLASS, Shared, describe, lock_key};

/// Retry delays grow from this...
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// ...up to this.
const LAST_RETRY: Duration = Duration::from_secs(1);

/// What the writer takes from the front of the queue.
enum Job {
    /// Appends and chat messages, committed together as batch `batch`.
    Entries {
        writes: Vec<Arc<Write>>,
        batch: i64,
    },
    Compact(Arc<Write>),
    Delete(Arc<Write>),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Entries { writes, .. } => writes.len(),
            Job::Compact(_) | Job::Delete(_) => 1,
        }
    }
}

/// How a job ended.
enum Outcome {
    /// Appends committed with these seqs, in the order of the job.
    Committed(Vec<i64>),
    /// A retry found the batch committed by an attempt whose reply was lost.
    AlreadyCommitted,
    /// A compaction or deletion ran, or had nothing to do.
    Done,
}

/// The writer's connection and its prepared statements.
struct Connection {
    client: Client,
    statements: Statements,
}

/// Prepared once per connection.
struct Statements {
    claim: Statement,
    upsert_docs: Statement,
    next_seqs: Statement,
    insert_updates: Statement,
    insert_chat: Statement,
    lock: Statement,
    lock_doc: Statement,
    delete_upto: Statement,
    insert_state: Statement,
    adjust_doc: Statement,
    delete_doc: Statement,
}

impl Connection {
    async fn open(config: &tokio_postgres::Config) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // next statement then fails and the job is retried.
            let _ = connection.await;
        });
        let (claim, upsert_docs, next_seqs, insert_updates, insert_chat) = tokio::try_join!(
            client.prepare(
                "INSERT INTO quire_batches AS b (writer, batch) VALUES ($1, $2)
                 ON CONFLICT (writer) DO UPDATE SET batch = excluded.batch, at = now()
                 WHERE b.batch < excluded.batch
                 RETURNING batch"
            ),
            client.prepare(
                "INSERT INTO quire_docs AS d (name, bytes, updates, modified_ms)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])
                 ON CONFLICT (name) DO UPDATE SET
                     bytes = d.bytes + excluded.bytes,
                     updates = d.updates + excluded.updates,
                     modified_ms = greatest(d.modified_ms, excluded.modified_ms)"
            ),
            client.prepare("SELECT nextval('quire_seq') FROM generate_series(1, $1::int8)"),
            client.prepare(
                "INSERT INTO quire_updates (doc, seq, data)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[])"
            ),
            client.prepare(
                "INSERT INTO quire_chat (doc, seq, data)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[])"
            ),
        )?;
        let (lock, lock_doc, delete_upto, insert_state, adjust_doc, delete_doc) = tokio::try_join!(
            client.prepare("SELECT pg_advisory_xact_lock($1::int4, $2::int4)"),
            client.prepare("SELECT 1 FROM quire_docs WHERE name = $1 FOR UPDATE"),
            client.prepare(
                "WITH gone AS (
                     DELETE FROM quire_updates WHERE doc = $1 AND seq <= $2
                     RETURNING octet_length(data) AS n
                 )
                 SELECT count(*), coalesce(sum(n), 0)::int8 FROM gone"
            ),
            client.prepare("INSERT INTO quire_updates (doc, seq, data) VALUES ($1, $2, $3)"),
            client.prepare(
                "UPDATE quire_docs SET bytes = bytes + $2, updates = updates + $3,
                     modified_ms = greatest(modified_ms, $4)
                 WHERE name = $1"
            ),
            client.prepare("DELETE FROM quire_docs WHERE name = $1"),
        )?;
        let statements = Statements {
            claim,
            upsert_docs,
            next_seqs,
            insert_updates,
            insert_chat,
            lock,
            lock_doc,
            delete_upto,
            insert_state,
            adjust_doc,
            delete_doc,
        };
        Ok(Self { client, statements })
    }
}

/// Body of the writer task: until the store stops and the queue is empty
/// (or the stop deadline passes with the database still unreachable).
pub(super) async fn run(shared: Arc<Shared>) {
    let mut connection: Option<Connection> = None;
    loop {
        let empty = shared.lock_queue().items.is_empty();
        if empty {
            if shared.stopping() {
                break;
            }
            shared.wake.notified().await;
            continue;
        }
        wait_commit_window(&shared).await;
        // Before the job is taken: a hurry from now on asks for writes the
        // job may not hold, so it counts for the next one.
        shared.hurry.store(false, Ordering::SeqCst);
        let Some(job) = next_job(&shared) else {
            continue;
        };
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            match attempt_job(&mut connection, &shared, &job).await {
                Ok(outcome) => {
                    finish(&shared, &job, outcome, started.elapsed());
                    break;
                }
                Err(reason) => {
                    connection = None;
                    attempt += 1;
                    shared.record_failure(&reason);
                    if give_up_deletion(&job, &reason) {
                        finish(&shared, &job, Outcome::Done, started.elapsed());
                        break;
                    }
                    if attempt == 1 || attempt.is_multiple_of(20) {
                        tracing::warn!(%reason, attempt, "database write failed; retrying");
                    }
                    if shared.past_stop_deadline() {
                        let lost = shared.lock_queue().items.len();
                        tracing::error!(
                            lost,
                            "giving up at shutdown: the database stayed unreachable; \
                             these writes were never acknowledged"
                        );
                        return;
                    }
                    let delay = FIRST_RETRY
                        .saturating_mul(1u32 << attempt.min(5))
                        .min(LAST_RETRY);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    if let Some(connection) = connection {
        // Best effort: a clean stop needs no commit record any more.
        let _ = connection
            .client
            .execute(
                "DELETE FROM quire_batches WHERE writer = $1",
                &[&shared.writer_id],
            )
            .await;
    }
}

/// Waits out the commit window (if any) so more writes join the next
/// transaction, unless someone waits for what is queued
/// ([`crate::DocStore::hurry`]), before or during the wait, or the store
/// stops. What arrived while the previous transaction was in flight is
/// queued already, so a hurried commit still takes it all in one batch.
async fn wait_commit_window(shared: &Shared) {
    let window = shared.options.commit_window;
    if window.is_zero() {
        return;
    }
    let sleep = tokio::time::sleep(window);
    tokio::pin!(sleep);
    // `hurry` sets the flag before it notifies: a notification either
    // finds this loop waiting or leaves a permit for its next wait.
    while !shared.hurry.load(Ordering::SeqCst) && !shared.stopping() {
        tokio::select! {
            () = &mut sleep => return,
            () = shared.wake.notified() => {}
        }
    }
}

/// Takes the next job from the front of the queue (leaving the writes in
/// the queue until they committed), numbering an append batch.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut queue = shared.lock_queue();
    let front = Arc::clone(queue.items.front()?);
    match front.op {
        Op::Compact { .. } => return Some(Job::Compact(front)),
        Op::Delete { .. } => return Some(Job::Delete(front)),
        Op::Update(_) | Op::Chat(_) => {}
    }
    let (max_rows, max_bytes) = (
        shared.options.max_batch_rows,
        shared.options.max_batch_bytes,
    );
    let mut writes = Vec::new();
    let mut bytes = 0u64;
    for write in &queue.items {
        if !matches!(write.op, Op::Update(_) | Op::Chat(_)) {
            break;
        }
        if !writes.is_empty() && (writes.len() >= max_rows || bytes + write.size() > max_bytes) {
            break;
        }
        bytes += write.size();
        writes.push(Arc::clone(write));
    }
    queue.last_batch += 1;
    let batch = queue.last_batch;
    for write in &writes {
        write.batch.store(batch, Ordering::SeqCst);
    }
    Some(Job::Entries { writes, batch })
}

/// One attempt at a job, on the writer's connection (opened if needed),
/// bounded by the options' wait timeout.
async fn attempt_job(
    connection: &mut Option<Connection>,
    shared: &Shared,
    job: &Job,
) -> Result<Outcome, String> {
    let timeout = shared.options.wait_timeout;
    let attempt = async {
        if connection.is_none() {
            *connection = Some(Connection::open(&shared.config).await?);
        }
        let connection = connection.as_mut().expect("opened above");
        match job {
            Job::Entries { writes, batch } => {
                commit_entries(connection, shared.writer_id, writes, *batch).await
            }
            Job::Compact(write) => compact(connection, write).await,
            Job::Delete(write) => delete(connection, write).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer from the database within {timeout:?}")),
    }
}

/// One append batch in one transaction; see the module docs.
async fn commit_entries(
    connection: &mut Connection,
    writer_id: i64,
    writes: &[Arc<Write>],
    batch: i64,
) -> Result<Outcome, tokio_postgres::Error> {
    // Per document: (bytes, updates, newest time); sorted by name.
    let mut docs: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for write in writes {
        let entry = docs.entry(write.doc.as_str()).or_insert((0, 0, 0));
        if let Op::Update(data) = &write.op {
            entry.0 += data.len() as i64;
            entry.1 += 1;
        }
        entry.2 = entry.2.max(write.at_ms);
    }
    let names: Vec<&str> = docs.keys().copied().collect();
    let bytes: Vec<i64> = docs.values().map(|d| d.0).collect();
    let updates: Vec<i64> = docs.values().map(|d| d.1).collect();
    let times: Vec<i64> = docs.values().map(|d| d.2).collect();
    let count = writes.len() as i64;

    let Connection {
        client,
        statements: c,
    } = connection;
    let tx = client.transaction().await?;
    let claim: [&(dyn ToSql + Sync); 2] = [&writer_id, &batch];
    let upsert: [&(dyn ToSql + Sync); 4] = [&names, &bytes, &updates, &times];
    let take: [&(dyn ToSql + Sync); 1] = [&count];
    let (claimed, _, seq_rows) = tokio::try_join!(
        tx.query_opt(&c.claim, &claim),
        tx.execute(&c.upsert_docs, &upsert),
        tx.query(&c.next_seqs, &take),
    )?;
    if claimed.is_none() {
        tx.rollback().await?;
        return Ok(Outcome::AlreadyCommitted);
    }
    let mut seqs: Vec<i64> = seq_rows.iter().map(|row| row.get(0)).collect();
    seqs.sort_unstable();

    let mut update_rows: (Vec<&str>, Vec<i64>, Vec<&[u8]>) = Default::default();
    let mut chat_rows: (Vec<&str>, Vec<i64>, Vec<&[u8]>) = Default::default();
    for (write, &seq) in writes.iter().zip(&seqs) {
        let (rows, data) = match &write.op {
            Op::Update(data) => (&mut update_rows, data),
            Op::Chat(data) => (&mut chat_rows, data),
            Op::Compact { .. } | Op::Delete { .. } => unreachable!("batches hold entries only"),
        };
        rows.0.push(&write.doc);
        rows.1.push(seq);
        rows.2.push(data);
    }
    let updates: [&(dyn ToSql + Sync); 3] = [&update_rows.0, &update_rows.1, &update_rows.2];
    let chat: [&(dyn ToSql + Sync); 3] = [&chat_rows.0, &chat_rows.1, &chat_rows.2];
    tokio::try_join!(
        tx.execute(&c.insert_updates, &updates),
        tx.execute(&c.insert_chat, &chat),
    )?;
    tx.commit().await?;
    Ok(Outcome::Committed(seqs))
}

/// Replaces the document's entries with seq <= the bound by the state, in
/// one transaction under the document's advisory lock. Skipped when the
/// document is gone or nothing is at or below the bound (a compaction up
/// to a bound another node already compacted past must not add a stale
/// state).
async fn compact(
    connection: &mut Connection,
    write: &Write,
) -> Result<Outcome, tokio_postgres::Error> {
    let Op::Compact { upto, state } = &write.op else {
        unreachable!("a compaction job");
    };
    let upto = match upto {
        Bound::Seq(seq) => *seq,
        Bound::After(append) => match append.seq.load(Ordering::SeqCst) {
            // Committed by a retry that could not learn its seq.
            0 => return Ok(Outcome::Done),
            seq => seq,
        },
    };
    let doc = write.doc.as_str();
    let Connection {
        client,
        statements: c,
    } = connection;
    let tx = client.transaction().await?;
    let key = lock_key(doc);
    let lock: [&(dyn ToSql + Sync); 2] = [&LOCK_CLASS, &key];
    let name: [&(dyn ToSql + Sync); 1] = [&doc];
    let (_, exists) =
        tokio::try_join!(tx.execute(&c.lock, &lock), tx.query_opt(&c.lock_doc, &name),)?;
    if exists.is_none() {
        tx.rollback().await?;
        return Ok(Outcome::Done);
    }
    let gone = tx.query_one(&c.delete_upto, &[&doc, &upto]).await?;
    let (count, bytes): (i64, i64) = (gone.get(0), gone.get(1));
    if count == 0 {
        tx.rollback().await?;
        return Ok(Outcome::Done);
    }
    let (bytes_delta, updates_delta, now) = (state.len() as i64 - bytes, 1 - count, now_ms());
    let insert: [&(dyn ToSql + Sync); 3] = [&doc, &upto, state];
    let adjust: [&(dyn ToSql + Sync); 4] = [&doc, &bytes_delta, &updates_delta, &now];
    tokio::try_join!(
        tx.execute(&c.insert_state, &insert),
        tx.execute(&c.adjust_doc, &adjust),
    )?;
    tx.commit().await?;
    Ok(Outcome::Done)
}

/// Deletes the document (its log and chat go by cascade) unless the caller
/// cancelled the deletion before it started.
async fn delete(
    connection: &mut Connection,
    write: &Write,
) -> Result<Outcome, tokio_postgres::Error> {
    let started = write
        .state
        .compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst);
    if started == Err(CANCELLED) {
        return Ok(Outcome::Done);
    }
    let Op::Delete { reply, .. } = &write.op else {
        unreachable!("a deletion job");
    };
    let deleted = connection
        .client
        .execute(&connection.statements.delete_doc, &[&write.doc])
        .await?;
    let _ = reply.try_send(Ok(deleted > 0));
    Ok(Outcome::Done)
}

/// A deletion past its deadline answers its caller with the failure and
/// leaves the queue (nothing was deleted unless the last attempt's reply was
/// lost); every other job is retried.
fn give_up_deletion(job: &Job, reason: &str) -> bool {
    let Job::Delete(write) = job else {
        return false;
    };
    let Op::Delete { reply, deadline } = &write.op else {
        unreachable!("a deletion job");
    };
    if Instant::now() < *deadline {
        return false;
    }
    let _ = reply.try_send(Err(crate::StoreError::Unavailable(format!(
        "the document was not deleted: {reason}"
    ))));
    true
}

/// Records a finished job: the appends' seqs, removal from the queue, and
/// the new durable ticket for everyone waiting on it.
fn finish(shared: &Shared, job: &Job, outcome: Outcome, took: Duration) {
    match (&outcome, job) {
        (Outcome::Committed(seqs), Job::Entries { writes, .. }) => {
            for (write, &seq) in writes.iter().zip(seqs) {
                write.seq.store(seq, Ordering::SeqCst);
            }
        }
        (Outcome::AlreadyCommitted, _) => shared.record_recovered(),
        _ => {}
    }
    let ticket = shared.lock_queue().complete(job.len());
    shared.record_success();
    shared.committed.send_replace(crate::Committed {
        ticket,
        batch: job.len() as u64,
        flush_time: took,
    });
}
