//! The real server on `PgStore` (one node, no fan-out; see `node.rs`): edits
//! are saved, acknowledged only once PostgreSQL committed them, and still
//! there for a server started afresh on the same database.

use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::SessionConfig;
use quire_tests::WAIT;
use quire_tests::services::Postgres;
use tokio::task::spawn_blocking;

use crate::node::Node as PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_on_postgres_are_acknowledged_only_after_commit_and_survive_a_new_server() {
    let mut pg = spawn_blocking(|| Postgres::start().expect("start postgres"))
        .await
        .unwrap();
    let server = PgServer::start(pg.url(), None).await;

    let client = NativeClient::start(server.url("notes"), SessionConfig::default());
    client.wait_synced(WAIT).await.expect("synced");
    client.push("hello");
    client.wait_saved(WAIT).await.expect("saved once committed");

    // The database goes away: the edit is relayed and kept, not acknowledged.
    pg = spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    client.push(" world");
    let unsaved = client.wait_saved(Duration::from_secs(2)).await;
    assert!(unsaved.is_err(), "acknowledged while PostgreSQL was down");
    assert!(client.status().await.unsaved > 0);
    let reader = NativeClient::start(server.url("notes"), SessionConfig::default());
    reader
        .wait_synced(WAIT)
        .await
        .expect("a second client joins");
    assert_eq!(reader.text(), "hello world", "still relayed");

    pg = spawn_blocking(move || {
        pg.start_again().expect("start postgres again");
        pg
    })
    .await
    .unwrap();
    client
        .wait_saved(WAIT)
        .await
        .expect("saved once PostgreSQL is back");

    client.stop().await;
    reader.stop().await;
    server.stop().await;

    let second = PgServer::start(pg.url(), None).await;
    let late = NativeClient::start(second.url("notes"), SessionConfig::default());
    late.wait_synced(WAIT)
        .await
        .expect("synced with the new server");
    assert_eq!(
        late.text(),
        "hello world",
        "everything acknowledged is stored"
    );
    late.stop().await;
    second.stop().await;
    drop(spawn_blocking(move || drop(pg)).await);
}

/// Issue 15 follow-up: on PostgreSQL every `Saved` waited out the commit
/// window, since `PgStore` had no `hurry`. With a window far longer than
/// the test may wait, each edit is acknowledged by its own commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_on_postgres_does_not_wait_out_a_long_commit_window() {
    let pg = spawn_blocking(|| Postgres::start().expect("start postgres"))
        .await
        .unwrap();
    let window = Duration::from_secs(30);
    let server = PgServer::start_with(pg.url(), None, |config| {
        config.commit_window = window;
    })
    .await;
    let client = NativeClient::start(server.url("notes"), SessionConfig::default());
    client.wait_synced(WAIT).await.expect("synced");
    for word in ["one ", "two ", "three"] {
        client.push(word);
        client
            .wait_saved(window / 3)
            .await
            .expect("saved without waiting out the window");
    }
    let stored = pg
        .psql("postgres", "SELECT count(*) FROM quire_updates")
        .expect("psql");
    assert!(stored.parse::<u32>().unwrap() >= 3, "committed: {stored}");
    client.stop().await;
    server.stop().await;
    drop(spawn_blocking(move || drop(pg)).await);
}
