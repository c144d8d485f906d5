//! Durability: clean restarts, `kill -9`, compaction, large documents.

use std::time::Duration;

use quire_tests::http;
use quire_tests::{Client, ServerProcess, TestServer, eventually};

#[tokio::test]
async fn documents_survive_a_clean_restart_and_load_before_the_first_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    let mut writer = Client::connect_synced(server.ws_url("diary")).await;
    let mut watcher = Client::connect_synced(server.ws_url("diary")).await;
    writer.push("dear diary, ");
    writer.push("today I restarted a server");
    watcher
        .wait_text("dear diary, today I restarted a server")
        .await;

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM is a clean exit, got {status}");
    for client in [&mut writer, &mut watcher] {
        let (code, reason) = client.wait_closed().await;
        assert_eq!(
            code, 1001,
            "clients are told the server is going away: {reason}"
        );
    }

    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    // No waiting for later updates: the first sync must already carry the
    // stored document, because the room loads before it answers.
    let reader = Client::connect_synced(server.ws_url("diary")).await;
    assert_eq!(reader.text(), "dear diary, today I restarted a server");
}

#[tokio::test]
async fn relayed_updates_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = String::new();
    for cycle in 0..3 {
        let server = ServerProcess::start(dir.path(), 0, &[]).await;
        let mut writer = Client::connect_synced(server.ws_url("ledger")).await;
        assert_eq!(
            writer.text(),
            expected,
            "cycle {cycle} starts from everything relayed before"
        );
        let mut observer = Client::connect_synced(server.ws_url("ledger")).await;
        for i in 0..100 {
            let entry = format!("{cycle}:{i};");
            writer.push(&entry);
            expected.push_str(&entry);
        }
        // The observer seeing an update means the server applied, stored and
        // relayed it; the group commit puts it on disk within the commit
        // window (2 ms by default). Wait well past that window, then kill.
        observer.wait_text(&expected).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill_9().await;
    }
    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    let reader = Client::connect_synced(server.ws_url("ledger")).await;
    assert_eq!(reader.text(), expected);
}

#[tokio::test]
async fn compaction_keeps_the_document_byte_identical() {
    let server = TestServer::start_with(|c| c.compact_after = 25).await;
    let mut writer = Client::connect_synced(server.ws_url("churn")).await;
    for i in 0..120 {
        writer.push(&format!("line {i}\n"));
        if i % 3 == 0 {
            writer.remove(0, 2);
        }
    }
    let expected_text = writer.text();
    let mut watcher = Client::connect_synced(server.ws_url("churn")).await;
    watcher.wait_text(&expected_text).await;
    let before = http::get(server.addr, "/api/docs/churn/snapshot?format=yjs").await;
    assert_eq!(before.status, 200);

    // The live room compacts once the log holds 25 entries and those after
    // its state hold as many bytes as the state (off its task, so the last
    // rewrite may still be finishing): of the 160 updates written, the log
    // keeps fewer than 25 entries or fewer bytes after the state than in it.
    let log = || server.state.store.load("churn").unwrap().unwrap().updates;
    let short = |log: &[Vec<u8>]| {
        let after_state: usize = log.iter().skip(1).map(Vec::len).sum();
        log.len() < 25 || after_state < log[0].len()
    };
    assert!(
        eventually(|| short(&log())).await,
        "log has {} entries",
        log().len()
    );
    assert!(log().len() < 100, "compacted while live");

    writer.close().await;
    watcher.close().await;
    assert!(eventually(|| server.live_rooms() == 0).await);
    // Eviction compacts what is left into one state update.
    assert_eq!(log().len(), 1);

    let server = server.restart().await;
    let after = http::get(server.addr, "/api/docs/churn/snapshot?format=yjs").await;
    assert_eq!(after.body, before.body, "the same document, byte for byte");
    let reader = Client::connect_synced(server.ws_url("churn")).await;
    assert_eq!(reader.text(), expected_text);
}

#[tokio::test]
async fn a_ten_megabyte_document_loads_and_syncs() {
    let server = TestServer::start().await;
    let mut big = String::new();
    for i in 0.. {
        if big.len() >= 10 * 1024 * 1024 {
            break;
        }
        big.push_str(&format!(
            "{i:>10} the quick brown fox jumps over the lazy dog\n"
        ));
    }
    let mut writer = Client::connect_synced(server.ws_url("tome")).await;
    writer.push(&big);
    let mut reader = Client::connect_synced(server.ws_url("tome")).await;
    reader
        .wait_until("the whole tome arrives", |c| c.text().len() == big.len())
        .await;
    assert!(reader.text() == big);
    drop(writer);
    drop(reader);

    let server = server.restart().await;
    let fresh = Client::connect_synced(server.ws_url("tome")).await;
    assert!(fresh.text() == big, "reloaded from disk in full");
}
