//! Tests against real sled databases in temporary folders.

use std::time::{Duration, Instant};

use super::*;

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, SledOptions::default()).expect("open store")
}

fn with_window(dir: &Path, commit_window: Duration) -> SledStore {
    let options = SledOptions {
        commit_window,
        ..SledOptions::default()
    };
    SledStore::open(dir, options).expect("open store")
}

/// Polls the watch (no async runtime in this crate) until `ticket` is durable.
fn wait_durable(store: &SledStore, ticket: u64) -> Committed {
    let rx = store.durability();
    let deadline = Instant::now() + Duration::from_secs(20);
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

/// The log tree of a document that has one.
fn log_tree(store: &SledStore, doc: &str) -> sled::Tree {
    let shared = &store.shared;
    shared
        .logs
        .open(&shared.db, doc)
        .unwrap()
        .expect("a log tree")
}

fn updates(store: &SledStore, doc: &str) -> Vec<Vec<u8>> {
    store.load(doc).unwrap().expect("document exists").updates
}

#[test]
fn append_then_load_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(updates(&store, "b"), vec![b"other".to_vec()]);
}

#[test]
fn load_unknown_document_is_none_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.load("nope").unwrap().is_none());
    assert!(store.info("nope").unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
    assert!(
        !store
            .shared
            .db
            .tree_names()
            .iter()
            .any(|n| n.starts_with(b"doc:")),
        "load must not create a tree"
    );
}

#[test]
fn compact_replaces_prefix_and_keeps_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..5u8 {
        store.append("d", &[i]).unwrap();
    }
    let upto = store.load("d").unwrap().unwrap().last_seq;
    let later = store.append("d", b"later").unwrap();
    store.compact("d", upto, b"STATE").unwrap();

    let doc = store.load("d").unwrap().unwrap();
    assert_eq!(doc.updates, vec![b"STATE".to_vec(), b"later".to_vec()]);
    assert_eq!(doc.last_seq, later.seq);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, 10));

    // Compacting again up to the newest seq leaves a single entry.
    store.compact("d", later.seq, b"ALL").unwrap();
    assert_eq!(updates(&store, "d"), vec![b"ALL".to_vec()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (1, 3));
}

#[test]
fn compact_of_missing_document_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.compact("ghost", 7, b"state").unwrap();
    assert!(store.load("ghost").unwrap().is_none());
}

#[test]
fn crash_mid_compaction_still_loads_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (upto, later) = {
        let store = open(dir.path());
        for i in 0..4u8 {
            store.append("d", &[i]).unwrap();
        }
        let upto = store.load("d").unwrap().unwrap().last_seq;
        let later = store.append("d", b"later").unwrap();
        // Step 1 of compaction only; the removals never happen.
        let tree = log_tree(&store, "d");
        store.write_state_over("d", &tree, upto, b"STATE").unwrap();
        store.flush().unwrap();
        (upto, later)
    };
    let store = open(dir.path());
    let doc = store.load("d").unwrap().unwrap();
    assert_eq!(
        doc.updates,
        vec![
            vec![0],
            vec![1],
            vec![2],
            vec![3],
            b"STATE".to_vec(),
            b"later".to_vec()
        ],
        "old updates, the state after the last of them, and later appends"
    );
    assert_eq!(doc.last_seq, later.seq);
    // Finishing the compaction after the restart works as usual.
    store.compact("d", upto, b"STATE").unwrap();
    assert_eq!(
        updates(&store, "d"),
        vec![b"STATE".to_vec(), b"later".to_vec()]
    );
}

/// A state bigger than one entry is a value file and loads back byte for
/// byte; a second compaction at the same seq with a smaller state replaces
/// the file.
#[test]
fn big_compacted_state_loads_back_identical_and_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let small: Vec<u8> = big[..value_bytes_for(SledOptions::default().segment_bytes) + 1].to_vec();
    let upto = {
        let store = open(dir.path());
        for i in 0..50u8 {
            store.append("d", &[i; 30]).unwrap();
        }
        let upto = store.load("d").unwrap().unwrap().last_seq;
        store.compact("d", upto, &big).unwrap();
        store.append("d", b"later").unwrap();
        assert_eq!(updates(&store, "d"), vec![big.clone(), b"later".to_vec()]);
        let info = store.info("d").unwrap().unwrap();
        assert_eq!((info.updates, info.bytes), (2, big.len() as u64 + 5));
        upto
    };
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), vec![big.clone(), b"later".to_vec()]);
    store.compact("d", upto, &small).unwrap();
    let doc = store.load("d").unwrap().unwrap();
    assert_eq!(doc.updates, vec![small.clone(), b"later".to_vec()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, small.len() as u64 + 5));
    // Compacting everything, the later update included.
    store.compact("d", doc.last_seq, &big).unwrap();
    assert_eq!(updates(&store, "d"), vec![big.clone()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (1, big.len() as u64));
}

/// A big update (a paste, an import, a seeded document) is chunked as a
/// state is, and loads back whole between its neighbours.
#[test]
fn big_update_loads_back_whole_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    {
        let store = open(dir.path());
        store.append("d", b"before").unwrap();
        store.append("d", &big).unwrap();
        store.append("d", b"after").unwrap();
    }
    let store = open(dir.path());
    let expected = vec![b"before".to_vec(), big.clone(), b"after".to_vec()];
    assert_eq!(updates(&store, "d"), expected);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (3, big.len() as u64 + 11));
    let upto = store.load("d").unwrap().unwrap().last_seq;
    store.compact("d", upto, &big).unwrap();
    assert_eq!(updates(&store, "d"), vec![big]);
    assert_eq!(store.info("d").unwrap().unwrap().updates, 1);
}

#[test]
fn reopen_keeps_data_and_seqs_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = open(dir.path());
        store.append("d", b"one").unwrap();
        store.append("d", b"two").unwrap()
    };
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), vec![b"one".to_vec(), b"two".to_vec()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, 6));
    let next = store.append("d", b"three").unwrap();
    assert!(next.seq > first.seq, "seq after reopen must be larger");
    assert_eq!(updates(&store, "d").last().unwrap(), b"three");
}

/// Folders made before the segment size went down keep opening: sled
/// refuses a segment size other than the one a folder was created with.
#[test]
fn folder_made_with_another_segment_size_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let old = SledOptions {
        segment_bytes: 512 * 1024,
        ..SledOptions::default()
    };
    assert_ne!(old.segment_bytes, SledOptions::default().segment_bytes);
    {
        let store = SledStore::open(dir.path(), old).unwrap();
        store.append("d", b"made before").unwrap();
    }
    assert_eq!(segment_bytes_of(dir.path()), Some(512 * 1024));
    let store = open(dir.path());
    store.append("d", b"and after").unwrap();
    assert_eq!(
        updates(&store, "d"),
        vec![b"made before".to_vec(), b"and after".to_vec()]
    );
}

/// A new folder gets the small segments that keep its size near what it
/// stores (issue 14, target 4: it was a multiple of 512 KiB segments).
#[test]
fn new_folder_uses_the_configured_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    assert_eq!(
        segment_bytes_of(dir.path()),
        Some(SledOptions::default().segment_bytes)
    );
}

#[test]
fn durability_advances_past_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let rx = store.durability();
    assert_eq!(rx.borrow().ticket, 0);
    let appended = store.append("d", b"x").unwrap();
    assert!(appended.ticket >= 1);
    let committed = wait_durable(&store, appended.ticket);
    assert!(committed.batch >= 1);
    assert!(rx.has_changed().unwrap(), "subscribers see the change");
}

/// Issue 12, finding 6: the default `last_ticket` is the durable one, so
/// a room reloaded during a long commit window acknowledged too early.
#[test]
fn last_ticket_counts_writes_not_yet_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_window(dir.path(), Duration::from_secs(2));
    let appended = store.append("d", b"x").unwrap();
    assert_eq!(store.last_ticket(), appended.ticket);
    assert!(store.durability().borrow().ticket < appended.ticket);
    store.flush().unwrap();
    assert_eq!(store.durability().borrow().ticket, store.last_ticket());
}

/// Issue 14, target 5: a lone writer waited out the whole commit window on
/// every acknowledgement.
#[test]
fn a_write_someone_waits_for_after_a_quiet_spell_is_flushed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(5);
    let store = with_window(dir.path(), window);
    for i in 0..3u32 {
        let started = Instant::now();
        let ticket = store.append("d", &i.to_le_bytes()).unwrap().ticket;
        store.hurry();
        let committed = wait_durable(&store, ticket);
        assert!(
            started.elapsed() < window / 2,
            "write {i} waited for the window: {committed:?}"
        );
    }
}

/// Issue 14 (cluster bench, sled row): six writers at 25 updates/s each
/// saw a save-ack p50 of 11 ms, since a write arriving during a flush
/// waited the whole commit window. A handful of writers, each waiting
/// for its own save, never put more than a few writes in flight: each is
/// flushed right after the flush it arrived during, back to back.
#[test]
fn a_handful_of_writers_waiting_for_their_saves_never_wait_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(5);
    let store = Arc::new(with_window(dir.path(), window));
    let writers = 3;
    assert!(writers < LOAD_WRITES as usize);
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..20u32 {
                    let ticket = store.append(&format!("d{w}"), &i.to_le_bytes()).unwrap();
                    store.hurry();
                    wait_durable(&store, ticket.ticket);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // 60 saves one after another's flush; one window would be 5 s.
    assert!(
        started.elapsed() < window,
        "a save waited for the window: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_write_nobody_waits_for_waits_the_window_for_others_to_join() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(300);
    let store = with_window(dir.path(), window);
    let started = Instant::now();
    let first = store.append("d", b"a").unwrap().ticket;
    let second = store.append("e", b"b").unwrap().ticket;
    let committed = wait_durable(&store, first);
    // A lower bound, so this cannot flake.
    assert!(
        started.elapsed() >= window,
        "flushed before the window ended"
    );
    assert_eq!(committed.ticket, second, "one flush for both");
}

/// CI (loaded machine): with a first write of four bytes, its flush took
/// 0.24 ms, the writer thread was off the CPU for longer, and its second
/// write was flushed alone (correctly: a hurried write after a quiet
/// flush), so two flushes followed the first. A first write of 4 MiB makes
/// its flush last milliseconds, so the other writes arrive during it.
#[test]
fn group_commit_batches_appends_that_arrive_during_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(300);
    let store = Arc::new(with_window(dir.path(), window));
    let started = Instant::now();
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            let mut last = 0;
            for i in 0..200u32 {
                let entry = if i == 0 {
                    vec![7; 4 << 20]
                } else {
                    i.to_le_bytes().to_vec()
                };
                // Each write waited for, as by a Quire client's `Saved`.
                last = store.append("d", &entry).unwrap().ticket;
                store.hurry();
            }
            last
        })
    };
    // The first append is flushed at once (seen here long before the next
    // flush, a window later).
    let first = wait_durable(&store, 1);
    let last = writer.join().unwrap();
    assert_eq!(last, 200);
    let committed = wait_durable(&store, last);
    if first.ticket < 200 {
        // The rest arrived during or after that flush: the flusher waited
        // out the window (a lower bound, so this cannot flake), and by then
        // the writer was long done, so one flush covered them all.
        assert!(
            started.elapsed() >= window,
            "flushed under load before the window ended: {committed:?}"
        );
        assert_eq!(
            first.ticket + committed.batch,
            200,
            "one flush after the first: {first:?} then {committed:?}"
        );
    }
}

#[test]
fn flush_makes_everything_durable_concurrently_with_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(with_window(dir.path(), Duration::ZERO));
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
}

#[test]
fn list_info_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(updates(&store, "alpha"), vec![b"new".to_vec()]);
}

#[test]
fn interrupted_delete_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append("gone", b"x").unwrap();
        store.append("kept", b"y").unwrap();
        store.flush().unwrap();
        // Step 1 of delete only: the meta record goes, the tree stays.
        store.shared.meta.remove("gone").unwrap();
        store.flush().unwrap();
        assert!(store.load("gone").unwrap().is_none());
    }
    let store = open(dir.path());
    assert!(store.load("gone").unwrap().is_none());
    assert!(
        !store
            .shared
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"doc:gone")
    );
    assert_eq!(updates(&store, "kept"), vec![b"y".to_vec()]);
}

#[test]
fn second_open_of_a_live_folder_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    match SledStore::open(dir.path(), SledOptions::default()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second store"),
    }
    let message = StoreError::Locked {
        path: dir.path().to_path_buf(),
    }
    .to_string();
    assert!(message.contains("in use by another Quire process"));
}

#[test]
fn open_creates_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/data");
    let store = open(&nested);
    store.append("d", b"x").unwrap();
    assert!(nested.is_dir());
}

#[test]
fn meta_record_round_trips() {
    let record = MetaRecord {
        bytes: 1 << 40,
        updates: 3,
        modified_ms: u64::MAX,
    };
    assert_eq!(MetaRecord::decode(&record.encode()), Some(record));
    assert_eq!(MetaRecord::decode(&[0; 23]), None);
}

/// Rough throughput figure; run with `--nocapture` to see it. Never asserts
/// on time.
#[test]
fn measure_ten_thousand_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let update = [7u8; 100];
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..10_000 {
        last = store.append("bench", &update).unwrap().ticket;
    }
    let appended = started.elapsed();
    let committed = wait_durable(&store, last);
    eprintln!(
        "10,000 appends of 100 bytes: {appended:?} to append, {:?} until durable \
         (last flush: batch {}, {:?})",
        started.elapsed(),
        committed.batch,
        committed.flush_time
    );
    assert_eq!(updates(&store, "bench").len(), 10_000);
}

#[test]
fn chat_keeps_the_newest_messages_across_reopen_and_goes_with_the_document() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert!(store.recent_chat("talk", 10).unwrap().is_empty());
        let mut last = 0;
        for i in 0..30 {
            last = store
                .append_chat("talk", format!("m{i}").as_bytes())
                .unwrap()
                .ticket;
        }
        wait_durable(&store, last);
        assert!(
            store.info("talk").unwrap().is_some(),
            "a chat alone makes the document exist"
        );
    }
    let store = open(dir.path());
    let recent = store.recent_chat("talk", 3).unwrap();
    assert_eq!(recent, [b"m27".to_vec(), b"m28".to_vec(), b"m29".to_vec()]);
    assert!(store.delete("talk").unwrap());
    assert!(store.recent_chat("talk", 3).unwrap().is_empty());
    store.append_chat("talk", b"fresh").unwrap();
    assert_eq!(store.recent_chat("talk", 3).unwrap(), [b"fresh".to_vec()]);
}

/// Issue 12, finding 3: the chat log was kept forever.
#[test]
fn trim_chat_keeps_the_newest_within_count_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..10 {
        store
            .append_chat("talk", format!("m{i}").as_bytes())
            .unwrap();
    }
    store.trim_chat("talk", 5, 1_000).unwrap();
    let all = store.recent_chat("talk", 100).unwrap();
    assert_eq!(
        all,
        ["m5", "m6", "m7", "m8", "m9"].map(|m| m.as_bytes().to_vec())
    );
    store.trim_chat("talk", 5, 4).unwrap();
    assert_eq!(
        store.recent_chat("talk", 100).unwrap().len(),
        2,
        "2 bytes each"
    );
    store.trim_chat("nope", 5, 4).unwrap();
    assert!(store.load("nope").unwrap().is_none(), "creates nothing");
}

/// The keys of a document's log tree as sled holds them.
fn log_keys(store: &SledStore, doc: &str) -> Vec<Vec<u8>> {
    let tree = store.shared.db.open_tree(tree_name(doc)).unwrap();
    tree.iter().keys().map(|k| k.unwrap().to_vec()).collect()
}

/// Issue 14, target 2: every update was its own sled insert plus a
/// read-modify-write of the meta record, on the room's task. Queued
/// appends are written as packs, in order, between bigger updates, and
/// loaded back one by one.
#[test]
fn queued_appends_are_packed_and_load_back_one_by_one_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let value_bytes = value_bytes_for(SledOptions::default().segment_bytes);
    let big: Vec<u8> = (0..3 * value_bytes).map(|i| (i % 249) as u8).collect();
    let mut expected = Vec::new();
    {
        let store = with_window(dir.path(), Duration::from_secs(5));
        for i in 0..1_000u32 {
            let update = if i == 500 {
                big.clone()
            } else {
                format!("update {i}").into_bytes()
            };
            store.append("d", &update).unwrap();
            expected.push(update);
        }
        assert!(
            store.health().pending_bytes > 0,
            "queued, not yet written: {:?}",
            store.health()
        );
        assert_eq!(updates(&store, "d"), expected, "load sees the queue");
        let keys = log_keys(&store, "d");
        assert!(
            keys.len() < 100,
            "1,000 updates in {} entries (packs)",
            keys.len()
        );
        assert!(keys.iter().any(|k| k.len() == 9), "packs");
        assert_eq!(keys.iter().filter(|k| k.len() == 12).count(), 0, "chunks");
        assert_eq!(value_files(dir.path()).len(), 1, "the big one's file");
    }
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), expected);
}

/// The counts of `info` are those of what is stored, queued or written,
/// before and after a compaction, and after reopening.
#[test]
fn counts_after_reopen_equal_the_counts_before() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = vec![7; 5_000];
    let before = {
        let store = open(dir.path());
        for i in 0..300u32 {
            store.append("d", &i.to_le_bytes()).unwrap();
        }
        store.append("d", &big).unwrap();
        let info = store.info("d").unwrap().unwrap();
        assert_eq!((info.updates, info.bytes), (301, 1_200 + 5_000));
        let upto = store.load("d").unwrap().unwrap().last_seq;
        for i in 0..7u32 {
            store.append("d", &i.to_le_bytes()).unwrap();
        }
        store.compact("d", upto, b"STATE").unwrap();
        let info = store.info("d").unwrap().unwrap();
        assert_eq!((info.updates, info.bytes), (8, 5 + 28));
        for i in 0..40u32 {
            store.append("d", &i.to_le_bytes()).unwrap();
        }
        store.info("d").unwrap().unwrap()
    };
    let store = open(dir.path());
    let after = store.info("d").unwrap().unwrap();
    assert_eq!((after.updates, after.bytes), (48, 5 + 28 + 160));
    assert_eq!(after, before);
    assert_eq!(updates(&store, "d").len(), 48);
}

/// The room compacts up to its newest append off its task while it keeps
/// appending: the queue written first then holds updates on both sides of
/// the boundary, and none after it may go.
#[test]
fn compaction_keeps_what_was_appended_after_its_boundary_in_the_same_pack() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_window(dir.path(), Duration::from_secs(5));
    let mut upto = 0;
    for i in 0..10u8 {
        upto = store.append("d", &[i]).unwrap().seq;
    }
    let later: Vec<Vec<u8>> = (10..15u8).map(|i| vec![i]).collect();
    for update in &later {
        store.append("d", update).unwrap();
    }
    store.compact("d", upto, b"STATE").unwrap();
    let mut expected = vec![b"STATE".to_vec()];
    // The pack holding 0..15 is keyed by its newest, past the boundary:
    // it keeps only what follows the boundary.
    expected.extend(later.iter().cloned());
    assert_eq!(updates(&store, "d"), expected);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (6, 5 + 5));
    // So does a boundary that leaves a single update of a pack.
    let last = store.load("d").unwrap().unwrap().last_seq;
    let tail = store.append("d", b"tail").unwrap().seq;
    store.append("d", b"end").unwrap();
    store.compact("d", tail, b"MOST").unwrap();
    assert_eq!(
        updates(&store, "d"),
        vec![b"MOST".to_vec(), b"end".to_vec()]
    );
    assert!(tail > last);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, 4 + 3));
    // The next compaction takes it.
    let last = store.load("d").unwrap().unwrap().last_seq;
    store.compact("d", last, b"ALL").unwrap();
    assert_eq!(updates(&store, "d"), vec![b"ALL".to_vec()]);
}

/// A deleted document's queued appends are dropped, not written after it.
#[test]
fn delete_drops_appends_still_queued() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = with_window(dir.path(), Duration::from_secs(5));
        store.append("d", b"queued").unwrap();
        assert!(store.delete("d").unwrap(), "a queued document exists");
        store.flush().unwrap();
        assert!(store.load("d").unwrap().is_none());
        assert!(store.list().unwrap().is_empty());
    }
    let store = open(dir.path());
    assert!(store.load("d").unwrap().is_none());
}

/// Issue 14, target 2: states were stored in 8 KiB chunks, so any leaf
/// holding two was over sled's blob threshold and written as a new file
/// in `blobs/` on every rewrite (5 % of a trace replay's CPU creating files).
#[test]
fn a_big_state_and_big_updates_make_no_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let state: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let store = open(dir.path());
    for round in 0..5u32 {
        for i in 0..200u32 {
            store
                .append("d", &(round * 1_000 + i).to_le_bytes())
                .unwrap();
        }
        store.append("d", &state[..20_000]).unwrap();
        let upto = store.load("d").unwrap().unwrap().last_seq;
        store.compact("d", upto, &state).unwrap();
        store.flush().unwrap();
    }
    assert_eq!(updates(&store, "d"), vec![state]);
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "files in blobs/");
}

/// Appends only queue, so while the disk does not take them they must
/// not pile up without bound: past `max_pending_bytes` they are refused.
#[test]
fn appends_past_the_queue_bound_are_refused_until_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let options = SledOptions {
        commit_window: Duration::from_secs(60),
        max_pending_bytes: 1_000,
        ..SledOptions::default()
    };
    let store = SledStore::open(dir.path(), options).unwrap();
    for _ in 0..10 {
        store.append("d", &[1; 100]).unwrap();
    }
    match store.append("d", &[2; 100]) {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("1000 bytes"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(store.health().pending_bytes, 1_000);
    store.flush().unwrap();
    assert_eq!(store.health(), StoreHealth::default());
    store.append("d", &[3; 100]).unwrap();
    assert_eq!(updates(&store, "d").len(), 11);
}

/// Found measuring memory after eviction (bench/results/alloc-84a7421.md):
/// loading a document and reading its (absent) chat opened, and so
/// created, an empty `chat:` tree, which sled keeps in its tree table for
/// the life of the process (≈ 18 KiB per document ever loaded).
#[test]
fn reading_the_chat_of_a_document_without_one_creates_no_chat_tree() {
    let dir = tempfile::tempdir().unwrap();
    let chat_trees = |store: &SledStore| {
        store
            .shared
            .db
            .tree_names()
            .iter()
            .filter(|n| n.starts_with(CHAT_TREE_PREFIX.as_bytes()))
            .count()
    };
    {
        let store = open(dir.path());
        let ticket = store.append("quiet", b"update").unwrap().ticket;
        wait_durable(&store, ticket);
        assert!(store.load("quiet").unwrap().is_some());
        assert!(store.recent_chat("quiet", 10).unwrap().is_empty());
        store.trim_chat("quiet", 5, 1_000).unwrap();
        assert_eq!(chat_trees(&store), 0, "reading a chat must not create one");
        let ticket = store.append_chat("talk", b"hello").unwrap().ticket;
        wait_durable(&store, ticket);
    }
    // A chat written before a restart is still found after it.
    let store = open(dir.path());
    assert_eq!(store.recent_chat("talk", 3).unwrap(), [b"hello".to_vec()]);
    assert!(store.recent_chat("quiet", 3).unwrap().is_empty());
    assert_eq!(chat_trees(&store), 1);
}

/// The value files under a data folder, sorted.
fn value_files(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(data.join("values")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files.sort();
    files
}

fn doc_trees(store: &SledStore) -> usize {
    store
        .shared
        .db
        .tree_names()
        .iter()
        .filter(|n| n.starts_with(DOC_TREE_PREFIX.as_bytes()))
        .count()
}

fn big_value(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32).map(|i| ((i + salt) % 251) as u8).collect()
}

/// Issue 14, target 4: a loaded document's big values stayed in sled's
/// page cache after it closed (bench/results/alloc-84a7421.md). A big
/// update is a file of its own, and a document whose log is all in files
/// is loaded without opening (creating) a log tree.
#[test]
fn a_big_update_is_a_value_file_and_loading_it_opens_no_log_tree() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_value(223_417, 0);
    {
        let store = open(dir.path());
        store.append("d", &big).unwrap();
        store.flush().unwrap();
        assert_eq!(doc_trees(&store), 0, "nothing of it in a log tree");
    }
    let files = value_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0]).unwrap(), big);
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), vec![big.clone()]);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (1, big.len() as u64));
    assert_eq!(doc_trees(&store), 0, "loading created no tree");
    // Small updates after it go to a log tree, and load after it.
    store.append("d", b"small").unwrap();
    store.flush().unwrap();
    assert_eq!(updates(&store, "d"), vec![big, b"small".to_vec()]);
    assert_eq!(doc_trees(&store), 1);
}

/// A crash after a value file was written (or while it was) and before
/// the entry referring to it was committed leaves an orphan, which
/// opening removes; the documents are as they were.
#[test]
fn value_files_nothing_refers_to_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_value(5_000, 1);
    let orphans = {
        let store = open(dir.path());
        store.append("d", &big).unwrap();
        store.append("d", b"small").unwrap();
        store.flush().unwrap();
        // An update whose write a crash interrupted, of a known document
        // and of one that never came to exist, and a stray file.
        let files = &store.shared.files;
        files.write("d", 1 << 60, b"unacknowledged").unwrap();
        files.write("new", (1 << 60) + 1, b"never created").unwrap();
        let stray = files.dir("d").join("stray.tmp");
        std::fs::write(&stray, b"half").unwrap();
        vec![
            files.path("d", 1 << 60),
            files.path("new", (1 << 60) + 1),
            stray,
        ]
    };
    assert_eq!(value_files(dir.path()).len(), 4);
    let store = open(dir.path());
    for orphan in &orphans {
        assert!(!orphan.exists(), "{} left", orphan.display());
    }
    assert!(!store.shared.files.dir("new").exists(), "its folder too");
    assert_eq!(value_files(dir.path()).len(), 1);
    assert_eq!(updates(&store, "d"), vec![big, b"small".to_vec()]);
}

/// An entry whose file is missing is corruption, reported as such, never
/// an empty (or shorter) document.
#[test]
fn a_missing_or_truncated_value_file_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("d", &big_value(3_000, 2)).unwrap();
    store.flush().unwrap();
    let file = value_files(dir.path()).remove(0);
    std::fs::write(&file, b"short").unwrap();
    match store.load("d") {
        Err(StoreError::Corrupt { doc, detail }) => {
            assert_eq!(doc, "d");
            assert!(detail.contains("5 bytes instead of 3000"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(store.load("d"), Err(StoreError::Corrupt { .. })));
}

/// A compaction into a file replaces the files it contains; they go once
/// the compaction is durable, and the counts survive a reopen.
#[test]
fn compaction_into_a_file_removes_the_files_it_replaces_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let state = big_value(40_000, 3);
    let (before, expected) = {
        let store = with_window(dir.path(), Duration::from_secs(60));
        store.append("d", &big_value(2_000, 4)).unwrap();
        store.append("d", b"small").unwrap();
        store.append("d", &big_value(3_000, 5)).unwrap();
        let upto = store.load("d").unwrap().unwrap().last_seq;
        store.append("d", &big_value(1_500, 6)).unwrap();
        store.append("d", b"later").unwrap();
        store.flush().unwrap();
        assert_eq!(value_files(dir.path()).len(), 3);
        store.compact("d", upto, &state).unwrap();
        // Not durable yet: the replaced files are still there, the one at
        // `upto` too (the state is a new file).
        assert_eq!(value_files(dir.path()).len(), 4);
        store.flush().unwrap();
        let files = value_files(dir.path());
        assert_eq!(files.len(), 2, "the state and the later update: {files:?}");
        assert!(!files.contains(&store.shared.files.path("d", upto)));
        let expected = vec![state.clone(), big_value(1_500, 6), b"later".to_vec()];
        assert_eq!(updates(&store, "d"), expected);
        let info = store.info("d").unwrap().unwrap();
        assert_eq!((info.updates, info.bytes), (3, 40_000 + 1_500 + 5));
        (info, expected)
    };
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), expected);
    assert_eq!(store.info("d").unwrap().unwrap(), before);
    // A small state takes the place of every file it contains.
    let last = store.load("d").unwrap().unwrap().last_seq;
    store.compact("d", last, b"SMALL").unwrap();
    store.flush().unwrap();
    assert_eq!(updates(&store, "d"), vec![b"SMALL".to_vec()]);
    assert!(value_files(dir.path()).is_empty());
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (1, 5));
}

/// Compaction into a file, cut by a crash at each step: after the file
/// (an orphan: the log is as before), and after its entry (the log holds
/// the old entries and the state, which merge to the same content).
#[test]
fn a_compaction_into_a_file_cut_by_a_crash_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = big_value(10_000, 7);
    let old = big_value(2_000, 8);
    let upto = {
        let store = open(dir.path());
        store.append("d", b"one").unwrap();
        store.append("d", &old).unwrap();
        let upto = store.append("d", b"two").unwrap().seq;
        store.flush().unwrap();
        // Crash after the state's file, before its entry.
        store.shared.files.write("d", upto, &state).unwrap();
        upto
    };
    let expected_old = vec![b"one".to_vec(), old.clone(), b"two".to_vec()];
    {
        let store = open(dir.path());
        assert_eq!(updates(&store, "d"), expected_old);
        assert_eq!(value_files(dir.path()).len(), 1, "the orphan went");
        // Crash after the entry, before the log's entries went.
        store.shared.files.write("d", 1 << 60, &state).unwrap();
        store
            .shared
            .values
            .insert(
                values::ref_key("d", upto),
                &values::encode_ref(10_000, 1 << 60),
            )
            .unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let mut expected = expected_old;
    expected.push(state.clone());
    assert_eq!(updates(&store, "d"), expected);
    // Compacting again finishes the job.
    store.compact("d", upto, &state).unwrap();
    store.flush().unwrap();
    assert_eq!(updates(&store, "d"), vec![state]);
    assert_eq!(value_files(dir.path()).len(), 1);
    assert_eq!(doc_trees(&store), 1, "the emptied log tree stays");
}

/// `delete` removes the value files (once durable) and their folder; a
/// deletion a crash cut after the meta record is finished by `open`.
#[test]
fn delete_removes_the_value_files_and_open_finishes_an_interrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append("gone", &big_value(4_000, 9)).unwrap();
        store.append("cut", &big_value(4_000, 10)).unwrap();
        store.append("kept", &big_value(4_000, 11)).unwrap();
        store.flush().unwrap();
        assert!(store.delete("gone").unwrap());
        store.flush().unwrap();
        assert!(!store.shared.files.dir("gone").exists());
        assert!(store.load("gone").unwrap().is_none());
        // Step 1 of delete only.
        store.shared.meta.remove("cut").unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert!(!store.shared.files.dir("cut").exists());
    assert!(
        store
            .shared
            .values
            .scan_prefix(values::ref_prefix("cut"))
            .next()
            .is_none()
    );
    assert_eq!(value_files(dir.path()).len(), 1);
    assert_eq!(updates(&store, "kept"), vec![big_value(4_000, 11)]);
    // A re-created document starts empty.
    store.append("gone", b"new").unwrap();
    assert_eq!(updates(&store, "gone"), vec![b"new".to_vec()]);
}

/// Writes `value` at a fresh seq as chunks of the log, as folders made
/// before value files hold big updates (the writer of that layout, kept
/// for this test), and counts it in the meta record.
fn append_in_chunks(store: &SledStore, doc: &str, value: &[u8]) -> Seq {
    let shared = &store.shared;
    let seq = shared.db.generate_id().unwrap();
    let tree = shared.logs.open_or_create(&shared.db, doc).unwrap();
    let mut batch = sled::Batch::default();
    for (index, chunk) in (0u32..).zip(value.chunks(shared.value_bytes)) {
        batch.insert(&chunk_key(seq, index)[..], chunk);
    }
    tree.apply_batch(batch).unwrap();
    shared
        .adjust_meta(doc, value.len() as i128, 1, now_ms())
        .unwrap();
    seq
}

/// Folders written before value files hold big updates and compacted
/// states as chunks in the log: they still load, and the next compaction
/// moves them into a file.
#[test]
fn values_stored_in_chunks_by_the_old_layout_load_and_compaction_moves_them_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let old_state = big_value(30_000, 12);
    let old_update = big_value(9_000, 13);
    let (expected, info) = {
        let store = open(dir.path());
        let first = store.append("d", b"first").unwrap().seq;
        store.flush().unwrap();
        // The old compaction wrote its state in chunks at `upto`.
        let tree = log_tree(&store, "d");
        let (b1, u1) = store
            .write_state_over("d", &tree, first, &old_state)
            .unwrap();
        let (b2, u2) = store.remove_before("d", &tree, first, false).unwrap();
        store
            .shared
            .adjust_meta("d", b1 + b2, u1 + u2, now_ms())
            .unwrap();
        append_in_chunks(&store, "d", &old_update);
        store.append("d", b"last").unwrap();
        store.flush().unwrap();
        assert!(value_files(dir.path()).is_empty(), "all in sled");
        let expected = vec![old_state.clone(), old_update.clone(), b"last".to_vec()];
        assert_eq!(updates(&store, "d"), expected);
        (expected, store.info("d").unwrap().unwrap())
    };
    assert_eq!((info.updates, info.bytes), (3, 30_000 + 9_000 + 4));
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), expected);
    assert_eq!(store.info("d").unwrap().unwrap(), info);
    let new_state = big_value(35_000, 14);
    let upto = store.load("d").unwrap().unwrap().last_seq;
    store.append("d", b"after").unwrap();
    store.compact("d", upto, &new_state).unwrap();
    store.flush().unwrap();
    assert!(
        log_keys(&store, "d").iter().all(|k| k.len() != 12),
        "no chunks left: {:?}",
        log_keys(&store, "d")
    );
    assert_eq!(value_files(dir.path()).len(), 1);
    let expected = vec![new_state.clone(), b"after".to_vec()];
    assert_eq!(updates(&store, "d"), expected);
    let info = store.info("d").unwrap().unwrap();
    assert_eq!((info.updates, info.bytes), (2, 35_000 + 5));
    drop(store);
    let store = open(dir.path());
    assert_eq!(updates(&store, "d"), expected);
    assert_eq!(store.info("d").unwrap().unwrap(), info);
}
