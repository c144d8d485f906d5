//! What only a networked, shared store has to get right: acknowledgements
//! only after COMMIT while the database goes away and comes back, lost
//! COMMIT replies, `kill -9` of PostgreSQL, two nodes writing and
//! compacting one document, catching up by seq, migrations.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use quire_storage::{DocStore, PgOptions, PgStore, StoreError};
use quire_tests::proxy::FaultProxy;
use quire_tests::services::Postgres;

use crate::suite::wait_durable;

/// Options for fault tests: short waits so a down database shows quickly.
fn impatient() -> PgOptions {
    PgOptions {
        wait_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    }
}

fn open(url: &str, options: PgOptions) -> PgStore {
    PgStore::open(url, options).expect("open the postgres store")
}

/// A store whose writer waits `window` before each batch nobody hurries.
fn with_window(url: &str, window: Duration) -> PgStore {
    open(
        url,
        PgOptions {
            commit_window: window,
            ..PgOptions::default()
        },
    )
}

/// `SELECT ...` through psql, as one number.
fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.psql("postgres", sql)
        .expect("psql")
        .parse()
        .expect("a number")
}

/// How often each payload is stored in `doc`'s log, read with psql (so
/// the store's own reads are not what is tested).
fn stored_payloads(pg: &Postgres, doc: &str) -> BTreeMap<String, usize> {
    let out = pg
        .psql(
            "postgres",
            &format!("SELECT convert_from(data, 'UTF8') FROM quire_updates WHERE doc = '{doc}'"),
        )
        .expect("psql");
    let mut counts = BTreeMap::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Makes every COMMIT of an append batch take 200 ms inside the server (a
/// deferred trigger on the commit record). Needs the schema: open a store
/// first.
fn slow_commits(pg: &Postgres) {
    pg.psql(
        "postgres",
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE ON quire_batches
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )
    .unwrap();
}

/// How many append batches `store` committed: its commit record's number.
fn batches_committed(pg: &Postgres, store: &PgStore) -> i64 {
    count(
        pg,
        &format!(
            "SELECT batch FROM quire_batches WHERE writer = {}",
            store.writer_id()
        ),
    )
}

/// Appends `"{prefix}{i}"` to `doc` from a thread until told to stop;
/// returns every payload with its ticket.
fn spawn_appender(
    store: Arc<PgStore>,
    doc: &'static str,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<(String, u64)>> {
    thread::spawn(move || {
        let mut written = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let payload = format!("{prefix}{i}");
            let appended = store
                .append(doc, payload.as_bytes())
                .expect("append queues");
            written.push((payload, appended.ticket));
            i += 1;
            thread::sleep(Duration::from_micros(500));
        }
        written
    })
}

#[test]
fn acks_stop_while_postgres_is_down_and_resume_with_every_row_once() {
    let mut pg = Postgres::start().expect("start postgres");
    let store = open(&pg.url(), impatient());
    for i in 0..10 {
        store.append("d", format!("before{i}").as_bytes()).unwrap();
    }
    store.flush().unwrap();
    let acked_before = store.durability().borrow().ticket;
    assert_eq!(acked_before, 10);

    assert!(store.ping().is_ok());
    pg.stop();
    assert!(
        matches!(store.ping(), Err(StoreError::Unavailable(_))),
        "an idle store can still tell that its database is down"
    );
    let mut last = 0;
    for i in 0..10 {
        last = store
            .append("d", format!("during{i}").as_bytes())
            .expect("appends keep queueing while the database is down")
            .ticket;
    }
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        store.durability().borrow().ticket,
        acked_before,
        "nothing is acknowledged while the database is down"
    );
    let health = store.health();
    assert_eq!(health.pending_writes, 10);
    assert!(
        health.stalled.is_some(),
        "the stall is reported: {health:?}"
    );
    assert_eq!(store.last_ticket(), last);
    assert!(matches!(store.load("d"), Err(StoreError::Unavailable(_))));
    assert!(
        matches!(store.flush(), Err(StoreError::Unavailable(_))),
        "flush gives up after the wait timeout"
    );

    pg.start_again().expect("start postgres again");
    wait_durable(&store, last);
    assert_eq!(store.health().stalled, None);
    assert_eq!(store.health().pending_writes, 0);

    let stored = stored_payloads(&pg, "d");
    assert_eq!(stored.len(), 20, "{stored:?}");
    assert!(
        stored.values().all(|&n| n == 1),
        "every row exactly once: {stored:?}"
    );
    let info = store.info("d").unwrap().unwrap();
    assert_eq!(info.updates, 20);
    assert_eq!(updates_of(&store, "d").len(), 20);
}

fn updates_of(store: &dyn DocStore, doc: &str) -> Vec<Vec<u8>> {
    store.load(doc).unwrap().expect("document exists").updates
}

#[test]
fn kill_9_of_postgres_mid_batch_loses_no_acknowledged_row() {
    let mut pg = Postgres::start().expect("start postgres");
    let store = Arc::new(open(&pg.url(), impatient()));
    let stop = Arc::new(AtomicBool::new(false));
    let appender = spawn_appender(Arc::clone(&store), "k", "p", Arc::clone(&stop));
    let mut acked_at_kill = Vec::new();
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(300));
        // Everything acknowledged before the kill must survive it.
        acked_at_kill.push(store.durability().borrow().ticket);
        pg.kill();
        thread::sleep(Duration::from_millis(300));
        pg.start_again().expect("start after kill -9");
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let written = appender.join().unwrap();
    let last = written.last().expect("appended something").1;
    wait_durable(&*store, last);

    let stored = stored_payloads(&pg, "k");
    let acked = *acked_at_kill.last().unwrap();
    assert!(acked > 0, "some rows were acknowledged before the kills");
    for (payload, ticket) in &written {
        let copies = stored.get(payload).copied().unwrap_or(0);
        assert_eq!(
            copies,
            1,
            "{payload} (ticket {ticket}, acked before a kill: {}) stored {copies} times",
            *ticket <= acked
        );
    }
    assert_eq!(stored.len(), written.len(), "no row that was never written");
    eprintln!(
        "kill -9 x3 during {} appends: acked at the kills {acked_at_kill:?}; {:?}",
        written.len(),
        store.commit_stats()
    );
}

#[test]
fn lost_commit_replies_are_confirmed_on_retry_never_inserted_twice() {
    let pg = Postgres::start().expect("start postgres");
    drop(open(&pg.url(), PgOptions::default()));
    // A cut connection most likely loses the reply of a COMMIT that then
    // completes.
    slow_commits(&pg);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = format!("127.0.0.1:{}", pg.port()).parse().unwrap();
    let proxy = runtime.block_on(FaultProxy::start(upstream));
    let url = format!("postgres://postgres@{}/postgres", proxy.addr());
    let store = Arc::new(open(&url, impatient()));
    let stop = Arc::new(AtomicBool::new(false));
    let appender = spawn_appender(Arc::clone(&store), "c", "q", Arc::clone(&stop));

    let started = Instant::now();
    let mut cuts = 0;
    while (cuts < 10 || store.commit_stats().confirmed_on_retry == 0)
        && started.elapsed() < Duration::from_secs(60)
    {
        thread::sleep(Duration::from_millis(spread_ms(cuts)));
        proxy.cut();
        cuts += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let written = appender.join().unwrap();
    wait_durable(&*store, written.last().unwrap().1);
    let stats = store.commit_stats();
    eprintln!(
        "{cuts} connection cuts during {} appends: {stats:?}",
        written.len()
    );
    assert!(
        stats.confirmed_on_retry >= 1,
        "a cut between COMMIT and its reply happened and was recognised ({cuts} cuts)"
    );
    let stored = stored_payloads(&pg, "c");
    assert_eq!(stored.len(), written.len());
    assert!(stored.values().all(|&n| n == 1), "no row twice");
    let info = store.info("c").unwrap().unwrap();
    assert_eq!(info.updates as usize, written.len(), "the count is exact");
}

/// A spread of waits between cuts, 100..500 ms (deterministic).
fn spread_ms(n: u32) -> u64 {
    u64::from(n.wrapping_mul(2_654_435_761) % 400) + 100
}

/// A set-union "CRDT" for tests: an update is a set of ids (LE u32s);
/// merging is union, so a compacted state is the union of what it covers.
fn ids(update: &[u8]) -> impl Iterator<Item = u32> + '_ {
    update
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
}

fn encode(set: &BTreeSet<u32>) -> Vec<u8> {
    set.iter().flat_map(|id| id.to_le_bytes()).collect()
}

#[test]
fn two_nodes_append_and_compact_one_document_and_lose_or_double_count_nothing() {
    const PER_NODE: u32 = 600;
    let pg = Postgres::start().expect("start postgres");
    let nodes: Vec<Arc<PgStore>> = (0..2)
        .map(|_| Arc::new(open(&pg.url(), PgOptions::default())))
        .collect();
    let done = Arc::new(AtomicBool::new(false));

    // A reader catching up by seq only, as a node whose Redis was down.
    let reader = {
        let store = Arc::new(open(&pg.url(), PgOptions::default()));
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let (mut seen, mut after) = (BTreeSet::new(), 0);
            loop {
                let finished = done.load(Ordering::SeqCst);
                if let Some(part) = store.load_after("shared", after).unwrap() {
                    assert!(part.last_seq >= after, "catch-up never goes back");
                    after = part.last_seq;
                    part.updates.iter().for_each(|u| seen.extend(ids(u)));
                }
                if finished {
                    return seen;
                }
                thread::sleep(Duration::from_millis(3));
            }
        })
    };

    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let store = Arc::clone(store);
            thread::spawn(move || {
                // What this node has merged: its own ids and what it read.
                let (mut known, mut after) = (BTreeSet::new(), 0);
                for i in 0..PER_NODE {
                    let id = n as u32 * PER_NODE + i;
                    store.append("shared", &id.to_le_bytes()).unwrap();
                    known.insert(id);
                    // Typing speed, so batches commit between catch-ups.
                    thread::sleep(Duration::from_millis(1));
                    if i % 40 == 39 {
                        // Catch up, then compact up to what was read: the
                        // cluster-mode rule for a compaction bound.
                        // (None until the first batch committed.)
                        if let Some(part) = store.load_after("shared", after).unwrap() {
                            part.updates.iter().for_each(|u| known.extend(ids(u)));
                            after = part.last_seq;
                            store.compact("shared", after, &encode(&known)).unwrap();
                        }
                    }
                }
                store.flush().unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen_by_reader = reader.join().unwrap();

    let all: BTreeSet<u32> = (0..2 * PER_NODE).collect();
    let fresh = open(&pg.url(), PgOptions::default());
    let log = fresh.load("shared").unwrap().unwrap();
    let merged: BTreeSet<u32> = log.updates.iter().flat_map(|u| ids(u)).collect();
    assert_eq!(merged, all, "the stored log merges to every id");
    assert_eq!(seen_by_reader, all, "catching up by seq missed nothing");

    let rows = count(
        &pg,
        "SELECT count(*) FROM quire_updates WHERE doc = 'shared'",
    );
    let bytes = count(
        &pg,
        "SELECT coalesce(sum(octet_length(data)), 0) FROM quire_updates WHERE doc = 'shared'",
    );
    let info = fresh.info("shared").unwrap().unwrap();
    assert_eq!(
        (info.updates as i64, info.bytes as i64),
        (rows, bytes),
        "the summary counts each row once"
    );
    assert!(
        rows < i64::from(2 * PER_NODE),
        "compactions replaced rows ({rows} left)"
    );
    eprintln!(
        "two nodes, {} appends: {rows} rows left, {bytes} bytes",
        2 * PER_NODE
    );
}

#[test]
fn load_after_returns_the_committed_entries_past_a_seq_from_any_node() {
    let pg = Postgres::start().expect("start postgres");
    let a = open(&pg.url(), PgOptions::default());
    let b = open(&pg.url(), PgOptions::default());
    assert!(a.load_after("d", 0).unwrap().is_none());
    a.append("d", b"a1").unwrap();
    b.append("d", b"b1").unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    let first = a.load_after("d", 0).unwrap().unwrap();
    assert_eq!(first.updates.len(), 2);
    let empty = a.load_after("d", first.last_seq).unwrap().unwrap();
    assert!(empty.updates.is_empty());
    assert_eq!(empty.last_seq, first.last_seq, "nothing new: same position");

    b.append("d", b"b2").unwrap();
    b.flush().unwrap();
    let next = a.load_after("d", first.last_seq).unwrap().unwrap();
    assert_eq!(next.updates, [b"b2".to_vec()], "another node's append");
    assert!(next.last_seq > first.last_seq);
}

#[test]
fn own_queued_appends_are_visible_at_once_and_acknowledged_only_after_commit() {
    let pg = Postgres::start().expect("start postgres");
    let store = with_window(&pg.url(), Duration::from_millis(800));
    let appended = store.append("d", b"x").unwrap();
    store.append_chat("d", b"hello").unwrap();
    assert_eq!(store.last_ticket(), 2, "the newest ticket issued");
    assert!(store.durability().borrow().ticket < appended.ticket);
    assert_eq!(updates_of(&store, "d"), [b"x".to_vec()]);
    assert_eq!(store.recent_chat("d", 5).unwrap(), [b"hello".to_vec()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (1, 1));
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(
        count(&pg, "SELECT count(*) FROM quire_updates"),
        0,
        "not committed yet"
    );

    store.flush().unwrap();
    assert_eq!(count(&pg, "SELECT count(*) FROM quire_updates"), 1);
    assert_eq!(updates_of(&store, "d"), [b"x".to_vec()], "still once");
    assert_eq!(store.recent_chat("d", 5).unwrap(), [b"hello".to_vec()]);
}

#[test]
fn a_delete_the_database_cannot_take_fails_and_deletes_nothing() {
    let mut pg = Postgres::start().expect("start postgres");
    let store = open(&pg.url(), impatient());
    store.append("d", b"x").unwrap();
    store.flush().unwrap();
    pg.stop();
    let refused = store.delete("d");
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    pg.start_again().unwrap();
    store.append("d", b"y").unwrap();
    store.flush().unwrap();
    assert_eq!(
        updates_of(&store, "d").len(),
        2,
        "the document is still there"
    );
    assert!(store.delete("d").unwrap());
}

#[test]
fn migrations_run_once_for_nodes_starting_together_and_again_after_restart() {
    let mut pg = Postgres::start().expect("start postgres");
    let url = pg.url();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || open(&url, PgOptions::default()))
        })
        .collect();
    let stores: Vec<PgStore> = openers.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: BTreeSet<i64> = stores.iter().map(PgStore::writer_id).collect();
    assert_eq!(ids.len(), 4, "every instance has its own writer id");
    stores[0].append("d", b"kept").unwrap();
    stores[0].flush().unwrap();
    drop(stores);
    assert_eq!(count(&pg, "SELECT count(*) FROM quire_schema"), 1);

    pg.restart().unwrap();
    let store = open(&url, PgOptions::default());
    assert_eq!(count(&pg, "SELECT count(*) FROM quire_schema"), 1);
    assert_eq!(updates_of(&store, "d"), [b"kept".to_vec()]);
    assert_eq!(
        count(&pg, "SELECT count(*) FROM quire_batches"),
        0,
        "stopped instances leave no commit record"
    );
}

#[test]
fn a_database_newer_than_this_build_is_refused() {
    let pg = Postgres::start().expect("start postgres");
    drop(open(&pg.url(), PgOptions::default()));
    pg.psql(
        "postgres",
        "INSERT INTO quire_schema (version, description) VALUES (999, 'from the future')",
    )
    .unwrap();
    match PgStore::open(&pg.url(), PgOptions::default()) {
        Err(StoreError::Io(message)) => assert!(message.contains("999"), "{message}"),
        Err(other) => panic!("expected a clear refusal, got {other}"),
        Ok(_) => panic!("opened a database with a newer schema"),
    }
}

#[test]
fn an_unreachable_database_is_reported_at_open() {
    // A port nothing listens on: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    match PgStore::open(&url, impatient()) {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("opened a store without a database"),
    }
}

/// Waiting writers cut the window, not the batching: what arrives while a
/// transaction is in flight goes into the next one together.
#[test]
fn writes_someone_waits_for_that_arrive_during_a_commit_batch_into_the_next() {
    let pg = Postgres::start().expect("start postgres");
    drop(open(&pg.url(), PgOptions::default()));
    slow_commits(&pg);
    let window = Duration::from_secs(10);
    let store = Arc::new(with_window(&pg.url(), window));
    let started = Instant::now();
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            let mut last = 0;
            for i in 0..200u32 {
                // Each write waited for, as by a Quire client's `Saved`.
                last = store.append("d", &i.to_le_bytes()).unwrap().ticket;
                store.hurry();
                thread::sleep(Duration::from_millis(5));
            }
            last
        })
    };
    let first = wait_durable(&*store, 1);
    let last = writer.join().unwrap();
    wait_durable(&*store, last);
    let took = started.elapsed();
    let batches = batches_committed(&pg, &store);
    eprintln!("200 writes over {took:?} in {batches} commits; first {first:?}");
    assert!(took < window, "a commit waited for the window: {took:?}");
    // 200 writes over >= 1 s at >= 200 ms per commit: a handful of
    // commits; one per write would be 200.
    assert!(batches <= 20, "{batches} commits for 200 writes");
    assert_eq!(count(&pg, "SELECT count(*) FROM quire_updates"), 200);
}
