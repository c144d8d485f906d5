//! Presence across nodes: a client's presence shows on every node while it
//! is there and goes from every node when it leaves or its node dies; what
//! other nodes said about clients that are gone is not kept.
//!
//! Presence is sent by hand (raw awareness frames with chosen client ids
//! and clocks), as y-websocket sends it: a client keeps its id and its
//! clock when it reconnects, to the same node or through another.

use std::time::Duration;

use quire_protocol::Message;
use quire_protocol::lib0::{write_var_string, write_var_uint};
use quire_tests::{Client, ServerProcess, WAIT};
use tokio::task::spawn_blocking;

use crate::fanout::services;
use crate::node::Node;

/// An awareness frame announcing `client` at `clock` with `state` (JSON).
fn presence(client: u64, clock: u64, state: &str) -> Vec<u8> {
    let mut update = Vec::new();
    write_var_uint(&mut update, 1);
    write_var_uint(&mut update, client);
    write_var_uint(&mut update, clock);
    write_var_string(&mut update, state);
    Message::Awareness(&update).encode()
}

async fn sees(observer: &mut Client, client: u64, state: &str, what: &str) {
    observer
        .wait_until(what, |c| c.awareness_of(client).as_deref() == Some(state))
        .await;
}

async fn sees_gone(observer: &mut Client, client: u64, what: &str) {
    observer
        .wait_until(what, |c| c.awareness_of(client).is_none())
        .await;
}

/// Before: a node kept every remote client that left as a `null` entry
/// until the room ended, and those entries counted against the room's
/// presence bound: after `max_presence_per_room` remote clients had come
/// and gone, nobody's presence (local or remote) was taken any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_clients_that_come_and_go_leave_no_presence_behind() {
    let (pg, redis) = services().await;
    let a = Node::start(pg.url(), Some(redis.url())).await;
    let b = Node::start_with(pg.url(), Some(redis.url()), |c| c.max_presence_per_room = 3).await;
    let mut observer = Client::connect_synced(b.url("visits")).await;
    for visit in 0..8u64 {
        let client = 1_000 + visit;
        let mut visitor = Client::connect_synced(a.url("visits")).await;
        let state = format!(r#"{{"visit":{visit}}}"#);
        visitor.send_raw(presence(client, 1, &state));
        sees(
            &mut observer,
            client,
            &state,
            &format!("visitor {visit} on node B"),
        )
        .await;
        visitor.close().await;
        sees_gone(
            &mut observer,
            client,
            &format!("visitor {visit} gone on node B"),
        )
        .await;
    }
    // The room on B still takes presence, local and remote.
    let local = Client::connect_synced(b.url("visits")).await;
    local.send_raw(presence(7, 1, r#"{"local":true}"#));
    sees(&mut observer, 7, r#"{"local":true}"#, "a local client on B").await;
    let remote = Client::connect_synced(a.url("visits")).await;
    remote.send_raw(presence(8, 1, r#"{"remote":true}"#));
    sees(
        &mut observer,
        8,
        r#"{"remote":true}"#,
        "one more remote client",
    )
    .await;
    assert!(
        local.closed().is_none(),
        "B refused presence: {:?}",
        local.closed()
    );

    drop((local, remote, observer));
    a.stop().await;
    b.stop().await;
    let _ = spawn_blocking(move || drop((pg, redis))).await;
}

async fn start_node(data: &std::path::Path, port: u16, pg: &str, redis: &str) -> ServerProcess {
    ServerProcess::start(data, port, &["--database-url", pg, "--redis-url", redis]).await
}

/// Node A is killed with -9. Its clients' presence goes from node B within
/// B's awareness timeout. One of them reconnects through B at once, with
/// its id and clock (before: B ignored it as presence another owner had
/// introduced, then swept it, so it stayed invisible everywhere until B's
/// room ended); the other comes back through A once A is restarted (before:
/// B ignored it, its `null` entry being at the same clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_a_dead_nodes_clients_goes_and_comes_back_wherever_they_reconnect() {
    let (pg, redis) = services().await;
    let timeout = Duration::from_secs(1);
    let b = Node::start_with(pg.url(), Some(redis.url()), |c| {
        c.awareness_timeout = timeout
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let a = start_node(data.path(), 0, &pg.url(), &redis.url()).await;
    let port = a.addr.port();
    let mut observer = Client::connect_synced(b.url("moving")).await;

    let (mover, stayer) = (77, 78);
    let mut on_a = Vec::new();
    for (client, name) in [(mover, "mover"), (stayer, "stayer")] {
        let c = Client::connect_synced(a.ws_url("moving")).await;
        c.send_raw(presence(client, 1, &format!(r#"{{"name":"{name}"}}"#)));
        sees(
            &mut observer,
            client,
            &format!(r#"{{"name":"{name}"}}"#),
            &format!("{name} on node B"),
        )
        .await;
        on_a.push(c);
    }

    a.kill_9().await;
    drop(on_a);
    // The mover is back at once, through node B, with the clock it had,
    // and renews its presence as clients do.
    let moved = Client::connect_synced(b.url("moving")).await;
    moved.send_raw(presence(mover, 1, r#"{"name":"mover"}"#));
    moved.send_raw(presence(mover, 2, r#"{"name":"mover, moved"}"#));
    sees(
        &mut observer,
        mover,
        r#"{"name":"mover, moved"}"#,
        "the mover's presence through node B",
    )
    .await;
    // Nobody renews the stayer: it goes within the timeout (and a sweep).
    let started = tokio::time::Instant::now();
    sees_gone(&mut observer, stayer, "the dead node's client gone on B").await;
    assert!(
        started.elapsed() < timeout * 3,
        "the dead node's presence took {:?} to go",
        started.elapsed()
    );
    // The mover renews for three timeouts: it stays.
    for clock in 3..=3 + 3 * 5 {
        moved.send_raw(presence(mover, clock, r#"{"name":"mover, moved"}"#));
        tokio::time::sleep(timeout / 5).await;
        assert_eq!(
            observer.awareness_of(mover).as_deref(),
            Some(r#"{"name":"mover, moved"}"#),
            "the mover's presence went although it renews it"
        );
    }
    let newcomer = Client::connect_synced(b.url("moving")).await;
    assert_eq!(
        newcomer.awareness_of(mover).as_deref(),
        Some(r#"{"name":"mover, moved"}"#)
    );

    // The stayer comes back through the restarted node A, at its clock.
    // (A client that saw it leave ignores it until it renews, as stock
    // y-protocols clients do: a newcomer on B must see it at once.)
    let a = start_node(data.path(), port, &pg.url(), &redis.url()).await;
    let back = Client::connect_synced(a.ws_url("moving")).await;
    back.send_raw(presence(stayer, 1, r#"{"name":"stayer"}"#));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let newcomer = Client::connect_synced(b.url("moving")).await;
        if newcomer.awareness_of(stayer).as_deref() == Some(r#"{"name":"stayer"}"#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never took the stayer back through the restarted node A"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    back.send_raw(presence(stayer, 2, r#"{"name":"stayer, back"}"#));
    sees(
        &mut observer,
        stayer,
        r#"{"name":"stayer, back"}"#,
        "the stayer's renewal on B",
    )
    .await;

    drop((back, moved, newcomer, observer));
    let _ = tokio::time::timeout(WAIT, a.terminate()).await;
    b.stop().await;
    let _ = spawn_blocking(move || drop((pg, redis))).await;
}
