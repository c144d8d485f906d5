//! The shipped HAProxy configuration (`server/haproxy.cfg`) in front of
//! three real `quire` nodes on one PostgreSQL and one Redis
//! (`quire_tests::cluster::Cluster`, what `cargo xtask cluster` runs).

use std::net::SocketAddr;
use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::SessionConfig;
use quire_tests::cluster::Cluster;
use quire_tests::process::quire_binary;
use quire_tests::{WAIT, http};
use tokio::task::spawn_blocking;

const TYPISTS: usize = 4;

/// Reconnects quickly once the proxy sends it elsewhere.
fn eager() -> SessionConfig {
    SessionConfig {
        backoff_first_ms: 50,
        backoff_max_ms: 300,
        ..SessionConfig::default()
    }
}

/// Open WebSocket connections on the node at `addr` (`quire_connections`).
async fn connections(addr: &str) -> u64 {
    let addr: SocketAddr = addr.parse().unwrap();
    let metrics = http::get(addr, "/metrics").await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("quire_connections "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until every client's text is the same and holds every chunk.
async fn converged(clients: &[NativeClient], chunks: &[String]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let texts: Vec<String> = clients.iter().map(NativeClient::text).collect();
        let missing: Vec<&String> = chunks.iter().filter(|c| !texts[0].contains(*c)).collect();
        if missing.is_empty() && texts.iter().all(|t| *t == texts[0]) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged: missing {missing:?}; texts {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn type_round(typists: &[NativeClient], round: &str, chunks: &mut Vec<String>) {
    for (t, typist) in typists.iter().enumerate() {
        let chunk = format!("[{round}.{t}]");
        typist.push(&chunk);
        chunks.push(chunk);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_haproxy_converge_and_a_killed_nodes_clients_fail_over_losing_no_acked_edit()
 {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let mut cluster = spawn_blocking(move || {
        Cluster::start_in(&quire_binary(), &root, &["--room-grace", "200ms"])
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("start the cluster: {e}"));
    let url = format!("ws://127.0.0.1:{}/ws/routed", cluster.proxy.port());
    let typists: Vec<NativeClient> = (0..TYPISTS)
        .map(|_| NativeClient::start(url.clone(), eager()))
        .collect();
    for typist in &typists {
        typist
            .wait_synced(WAIT)
            .await
            .expect("synced through the proxy");
    }

    let mut chunks = Vec::new();
    type_round(&typists, "before", &mut chunks).await;
    for typist in &typists {
        typist
            .wait_saved(WAIT)
            .await
            .expect("saved through the proxy");
    }
    converged(&typists, &chunks).await;
    let acked = chunks.clone();

    // `balance uri` with consistent hashing: one document, one node.
    let mut counts = Vec::new();
    for node in &cluster.nodes {
        counts.push(connections(&node.addr()).await);
    }
    let serving = counts
        .iter()
        .position(|&n| n == TYPISTS as u64)
        .unwrap_or_else(|| panic!("the document's clients are spread: {counts:?}"));

    // Typing goes on while its node is killed, and while they reconnect.
    type_round(&typists, "during", &mut chunks).await;
    cluster.nodes[serving].kill();
    type_round(&typists, "after", &mut chunks).await;
    for typist in &typists {
        typist.network_online();
    }
    for typist in &typists {
        typist
            .wait_saved(WAIT)
            .await
            .unwrap_or_else(|e| panic!("not saved through another node: {e}"));
    }
    converged(&typists, &chunks).await;
    let mut moved = 0;
    for (n, node) in cluster.nodes.iter().enumerate() {
        if n != serving {
            moved += connections(&node.addr()).await;
        }
    }
    assert_eq!(moved, TYPISTS as u64, "the proxy sent them to another node");

    // What PostgreSQL holds: a client that joins now gets every edit,
    // the acknowledged ones above all.
    let late = NativeClient::start(url, SessionConfig::default());
    late.wait_synced(WAIT).await.expect("late client synced");
    let text = late.text();
    for chunk in acked.iter().chain(&chunks) {
        assert!(text.contains(chunk.as_str()), "{chunk} lost: {text}");
    }
    late.stop().await;
    for typist in typists {
        typist.stop().await;
    }
    let _ = spawn_blocking(move || drop(cluster)).await;
}
