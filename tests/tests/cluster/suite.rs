//! The `DocStore` contract as one set of test bodies, run against both
//! stores: `sled::*` on a temporary folder, `postgres::*` on a private
//! PostgreSQL. The bodies are the sled store's own tests
//! (storage/src/sled_store/tests.rs) written against the trait; what only
//! sled has (folder locks, its two-step compaction) stays there.
//!
//! One difference is part of the contract: `compact` may only queue the
//! rewrite (PostgreSQL does, so that a room never waits on the database);
//! its effect is visible once `flush` returned. Tests that look at the log
//! right after a compaction flush first.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use quire_storage::{Committed, DocStore, PgOptions, PgStore, SledOptions, SledStore};
use quire_tests::services::Postgres;

/// Opens stores of one kind on one set of data, again and again.
pub trait Backend {
    /// For figures printed by the tests.
    fn name(&self) -> &'static str;
    /// Opens (or reopens, after the previous store was dropped) the store.
    fn open(&self) -> Box<dyn DocStore> {
        self.open_with_window(Duration::from_millis(2))
    }
    /// Opens the store with this group-commit window.
    fn open_with_window(&self, window: Duration) -> Box<dyn DocStore>;
}

pub struct SledBackend {
    dir: tempfile::TempDir,
}

impl SledBackend {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Backend for SledBackend {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn open_with_window(&self, commit_window: Duration) -> Box<dyn DocStore> {
        let options = SledOptions {
            commit_window,
            ..SledOptions::default()
        };
        Box::new(SledStore::open(self.dir.path(), options).expect("open sled"))
    }
}

pub struct PgBackend {
    pub server: Postgres,
}

impl PgBackend {
    pub fn new() -> Self {
        Self {
            server: Postgres::start().expect("start postgres"),
        }
    }
}

impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn open(&self) -> Box<dyn DocStore> {
        // No window: batches form while a transaction is in flight.
        self.open_with_window(Duration::ZERO)
    }

    fn open_with_window(&self, commit_window: Duration) -> Box<dyn DocStore> {
        let options = PgOptions {
            commit_window,
            ..PgOptions::default()
        };
        Box::new(PgStore::open(&self.server.url(), options).expect("open postgres store"))
    }
}

/// Polls the watch (the trait is synchronous) until `ticket` is durable.
pub fn wait_durable(store: &dyn DocStore, ticket: u64) -> Committed {
    let rx = store.durability();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = *rx.borrow();
        if committed.ticket >= ticket {
            return committed;
        }
        assert!(
            Instant::now() < deadline,
            "ticket {ticket} not durable; last {committed:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

pub fn updates(store: &dyn DocStore, doc: &str) -> Vec<Vec<u8>> {
    store.load(doc).unwrap().expect("document exists").updates
}

macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(#[test]
            fn $name() {
                super::$name(&super::SledBackend::new());
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&super::PgBackend::new());
            })*
        }
    };
}

for_each_store!(
    append_then_load_keeps_order,
    load_unknown_document_is_none_and_creates_nothing,
    compact_replaces_prefix_and_keeps_later_appends,
    compact_of_missing_document_creates_nothing,
    reopen_keeps_data_and_seqs_keep_increasing,
    durability_advances_past_an_append,
    group_commit_batches_appends_within_a_window,
    a_write_someone_waits_for_is_durable_without_waiting_out_the_window,
    flush_makes_everything_durable_concurrently_with_the_flusher,
    list_info_and_delete,
    chat_keeps_the_newest_messages_across_reopen_and_goes_with_the_document,
    trim_chat_keeps_the_newest_within_count_and_bytes,
    a_flushed_store_reopens_with_everything,
    measure_ten_thousand_appends,
);

fn append_then_load_keeps_order(backend: &impl Backend) {
    let store = backend.open();
    let mut last = 0;
    for i in 0..50u8 {
        let appended = store.append("a", &[i, i]).unwrap();
        assert!(appended.seq > last || i == 0, "seqs increase");
        last = appended.seq;
    }
    store.append("b", b"other").unwrap();
    let doc = store.load("a").unwrap().unwrap();
    let expected: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i, i]).collect();
    assert_eq!(doc.updates, expected);
    assert_eq!(doc.last_seq, last);
    assert_eq!(updates(&*store, "b"), vec![b"other".to_vec()]);
}

fn load_unknown_document_is_none_and_creates_nothing(backend: &impl Backend) {
    let store = backend.open();
    assert!(store.load("nope").unwrap().is_none());
    assert!(store.info("nope").unwrap().is_none());
    assert!(store.recent_chat("nope", 5).unwrap().is_empty());
    assert!(store.list().unwrap().is_empty(), "reads create no document");
}

fn compact_replaces_prefix_and_keeps_later_appends(backend: &impl Backend) {
    let store = backend.open();
    for i in 0..5u8 {
        store.append("d", &[i]).unwrap();
    }
    let upto = store.load("d").unwrap().unwrap().last_seq;
    let later = store.append("d", b"later").unwrap();
    store.compact("d", upto, b"STATE").unwrap();
    store.flush().unwrap();

    let doc = store.load("d").unwrap().unwrap();
    assert_eq!(doc.updates, vec![b"STATE".to_vec(), b"later".to_vec()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, 10));

    // Compacting again up to the newest seq leaves a single entry.
    store.compact("d", later.seq, b"ALL").unwrap();
    store.flush().unwrap();
    assert_eq!(updates(&*store, "d"), vec![b"ALL".to_vec()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (1, 3));
}

fn compact_of_missing_document_creates_nothing(backend: &impl Backend) {
    let store = backend.open();
    store.compact("ghost", 7, b"state").unwrap();
    store.flush().unwrap();
    assert!(store.load("ghost").unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
}

fn reopen_keeps_data_and_seqs_keep_increasing(backend: &impl Backend) {
    let first = {
        let store = backend.open();
        store.append("d", b"one").unwrap();
        store.append("d", b"two").unwrap()
    };
    let store = backend.open();
    assert_eq!(
        updates(&*store, "d"),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, 6));
    let next = store.append("d", b"three").unwrap();
    assert!(next.seq > first.seq, "seq after reopen must be larger");
    assert_eq!(updates(&*store, "d").last().unwrap(), b"three");
}

fn durability_advances_past_an_append(backend: &impl Backend) {
    let store = backend.open();
    let rx = store.durability();
    assert_eq!(rx.borrow().ticket, 0);
    let appended = store.append("d", b"x").unwrap();
    assert!(appended.ticket >= 1);
    let committed = wait_durable(&*store, appended.ticket);
    assert!(committed.batch >= 1);
    assert!(rx.has_changed().unwrap(), "subscribers see the change");
}

fn group_commit_batches_appends_within_a_window(backend: &impl Backend) {
    // A long window so 100 appends surely fall into the first one.
    let window = Duration::from_millis(500);
    let store: Arc<dyn DocStore> = backend.open_with_window(window).into();
    let started = Instant::now();
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            let mut last = 0;
            for i in 0..100u32 {
                last = store.append("d", &i.to_le_bytes()).unwrap().ticket;
            }
            last
        })
    };
    let last = writer.join().unwrap();
    assert_eq!(last, 100);
    let committed = wait_durable(&*store, last);
    assert!(
        started.elapsed() >= window,
        "committed before the window ended"
    );
    assert!(
        committed.batch > 50,
        "one commit should cover many appends: {committed:?}"
    );
}

/// Issue 15 follow-up: `PgStore` had no `hurry`, so on PostgreSQL a lone
/// writer's every save-ack sat out the commit window (13 ms against
/// 1.25 ms on sled). A window far longer than any commit shows the rule
/// without timing guesswork.
fn a_write_someone_waits_for_is_durable_without_waiting_out_the_window(backend: &impl Backend) {
    let window = Duration::from_secs(10);
    let store = backend.open_with_window(window);
    for i in 0..3u32 {
        let started = Instant::now();
        let ticket = store.append("d", &i.to_le_bytes()).unwrap().ticket;
        store.hurry();
        let committed = wait_durable(&*store, ticket);
        assert!(
            started.elapsed() < window / 2,
            "write {i} waited for the window: {committed:?}"
        );
    }
    assert_eq!(updates(&*store, "d").len(), 3);
}

fn flush_makes_everything_durable_concurrently_with_the_flusher(backend: &impl Backend) {
    let store: Arc<dyn DocStore> = backend.open_with_window(Duration::ZERO).into();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..200u32 {
                    let ticket = store.append(&format!("d{w}"), &i.to_le_bytes()).unwrap();
                    if i % 50 == 0 {
                        store.flush().unwrap();
                        assert!(store.durability().borrow().ticket >= ticket.ticket);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.durability().borrow().ticket, 400);
    assert_eq!(updates(&*store, "d0").len(), 200);
    assert_eq!(updates(&*store, "d1").len(), 200);
}

fn list_info_and_delete(backend: &impl Backend) {
    let store = backend.open();
    store.append("zeta", b"123").unwrap();
    store.append("alpha", b"1").unwrap();
    store.append("alpha", b"22").unwrap();
    store.append("mid", b"").unwrap();

    let names: Vec<_> = store.list().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    let alpha = store.info("alpha").unwrap().unwrap();
    assert_eq!(alpha.name, "alpha");
    assert_eq!((alpha.bytes, alpha.updates), (3, 2));
    assert!(alpha.modified_ms > 1_600_000_000_000, "unix ms");

    assert!(store.delete("alpha").unwrap());
    assert!(!store.delete("alpha").unwrap());
    assert!(!store.delete("never").unwrap());
    assert!(store.load("alpha").unwrap().is_none());
    assert!(store.info("alpha").unwrap().is_none());
    let names: Vec<_> = store.list().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["mid", "zeta"]);

    // A re-created document starts empty.
    store.append("alpha", b"new").unwrap();
    assert_eq!(updates(&*store, "alpha"), vec![b"new".to_vec()]);
}

/// Issue 12, finding 3: the chat log is bounded like the room's history.
fn trim_chat_keeps_the_newest_within_count_and_bytes(backend: &impl Backend) {
    let store = backend.open();
    let mut last = 0;
    for i in 0..10 {
        last = store
            .append_chat("talk", format!("m{i}").as_bytes())
            .unwrap()
            .ticket;
    }
    wait_durable(&*store, last);
    store.trim_chat("talk", 5, 1_000).unwrap();
    let kept = ["m5", "m6", "m7", "m8", "m9"].map(|m| m.as_bytes().to_vec());
    assert_eq!(store.recent_chat("talk", 100).unwrap(), kept);
    store.trim_chat("talk", 5, 4).unwrap();
    assert_eq!(
        store.recent_chat("talk", 100).unwrap(),
        kept[3..],
        "2 bytes each"
    );
    store.trim_chat("talk", 5, 1).unwrap();
    assert!(
        store.recent_chat("talk", 100).unwrap().is_empty(),
        "none fits"
    );
    store.trim_chat("nope", 5, 4).unwrap();
    assert!(store.info("nope").unwrap().is_none(), "creates nothing");
}

fn chat_keeps_the_newest_messages_across_reopen_and_goes_with_the_document(backend: &impl Backend) {
    {
        let store = backend.open();
        assert!(store.recent_chat("talk", 10).unwrap().is_empty());
        let mut last = 0;
        for i in 0..30 {
            last = store
                .append_chat("talk", format!("m{i}").as_bytes())
                .unwrap()
                .ticket;
        }
        wait_durable(&*store, last);
        assert!(
            store.info("talk").unwrap().is_some(),
            "a chat alone makes the document exist"
        );
    }
    let store = backend.open();
    let recent = store.recent_chat("talk", 3).unwrap();
    assert_eq!(recent, [b"m27".to_vec(), b"m28".to_vec(), b"m29".to_vec()]);
    assert!(store.delete("talk").unwrap());
    assert!(store.recent_chat("talk", 3).unwrap().is_empty());
    store.append_chat("talk", b"fresh").unwrap();
    assert_eq!(store.recent_chat("talk", 3).unwrap(), [b"fresh".to_vec()]);
}

fn a_flushed_store_reopens_with_everything(backend: &impl Backend) {
    {
        let store = backend.open();
        for i in 0..20u8 {
            store.append(&format!("doc{}", i % 4), &[i]).unwrap();
        }
        store.append_chat("doc0", b"hi").unwrap();
        store.flush().unwrap();
        let durable = store.durability().borrow().ticket;
        assert_eq!(durable, 21, "flush covers every write made before it");
    }
    let store = backend.open();
    let infos = store.list().unwrap();
    assert_eq!(infos.len(), 4);
    assert!(
        infos.iter().all(|i| (i.updates, i.bytes) == (5, 5)),
        "{infos:?}"
    );
    assert_eq!(updates(&*store, "doc1"), [[1], [5], [9], [13], [17]]);
    assert_eq!(store.recent_chat("doc0", 10).unwrap(), [b"hi".to_vec()]);
}

/// Rough throughput figure; run with `--nocapture` to see it. Never asserts
/// on time.
fn measure_ten_thousand_appends(backend: &impl Backend) {
    let store = backend.open();
    let update = [7u8; 100];
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..10_000 {
        last = store.append("bench", &update).unwrap().ticket;
    }
    let appended = started.elapsed();
    let committed = wait_durable(&*store, last);
    eprintln!(
        "{}: 10,000 appends of 100 bytes: {appended:?} to append, {:?} until durable \
         (last commit: batch {}, {:?})",
        backend.name(),
        started.elapsed(),
        committed.batch,
        committed.flush_time
    );
    assert_eq!(updates(&*store, "bench").len(), 10_000);
}
