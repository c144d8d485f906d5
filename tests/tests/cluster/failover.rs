//! A node of a cluster killed with -9 (the real `quire` binary, started
//! with `--database-url` and `--redis-url`), while clients type through it.

use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::session::Presence;
use quire_protocol::{SessionConfig, SessionEvent};
use quire_tests::services::{Postgres, Redis};
use quire_tests::{ServerProcess, WAIT};
use tokio::task::spawn_blocking;

use crate::node::Node;

const CYCLES: usize = 10;
const TYPISTS: usize = 4;

async fn start_node(data: &std::path::Path, port: u16, pg: &str, redis: &str) -> ServerProcess {
    ServerProcess::start(
        data,
        port,
        &[
            "--database-url",
            pg,
            "--redis-url",
            redis,
            "--room-grace",
            "200ms",
        ],
    )
    .await
}

/// Reconnects quickly after the node comes back.
fn eager() -> SessionConfig {
    SessionConfig {
        backoff_first_ms: 50,
        backoff_max_ms: 300,
        ..SessionConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_four_clients_type_through_it_loses_no_acknowledged_edit() {
    let (pg, redis) = spawn_blocking(|| {
        (
            Postgres::start().expect("start postgres"),
            Redis::start().expect("start redis"),
        )
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    // Node B stays up; its presence timeout is short so that a dead
    // node's clients go from it quickly.
    let b = Node::start_with(pg.url(), Some(redis.url()), |c| {
        c.awareness_timeout = Duration::from_secs(2)
    })
    .await;
    let mut a = start_node(data.path(), 0, &pg.url(), &redis.url()).await;
    let port = a.addr.port();

    let typists: Vec<NativeClient> = (0..TYPISTS)
        .map(|_| NativeClient::start(a.ws_url("typing"), eager()))
        .collect();
    for typist in &typists {
        typist.wait_synced(WAIT).await.expect("typist synced");
    }
    let observer = NativeClient::start(b.url("typing"), SessionConfig::default());
    let mut observed = observer.events();
    observer.wait_synced(WAIT).await.expect("observer synced");
    typists[0].set_awareness(Some(r#"{"user":{"name":"typist"}}"#.into()));

    let mut expected = Vec::new();
    let mut acked_text = String::new();
    for cycle in 0..CYCLES {
        // Each typist types a few chunks; the node dies in the middle.
        for round in 0..6 {
            for (t, typist) in typists.iter().enumerate() {
                let chunk = format!("[{cycle}.{t}.{round}]");
                typist.push(&chunk);
                expected.push(chunk);
            }
            if round == 2 {
                // What is acknowledged now must survive the kill.
                typists[0]
                    .wait_saved(WAIT)
                    .await
                    .expect("acked before the kill");
                acked_text = typists[0].text();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        a.kill_9().await;
        if cycle == 0 {
            // Nobody said goodbye for the typist: node B drops its
            // presence once it is no longer refreshed.
            let left = tokio::time::timeout(WAIT, async {
                loop {
                    if let Ok(SessionEvent::Presence(Presence::Left { .. })) = observed.recv().await
                    {
                        return;
                    }
                }
            })
            .await;
            assert!(left.is_ok(), "the dead node's presence stayed on node B");
        }
        a = start_node(data.path(), port, &pg.url(), &redis.url()).await;
        for typist in &typists {
            typist.network_online();
        }
        for typist in &typists {
            typist.wait_saved(WAIT).await.unwrap_or_else(|e| {
                panic!("cycle {cycle}: typist not saved after reconnecting: {e}")
            });
        }
        // The acknowledged state is on node B (through PostgreSQL and the
        // stream) and in the restarted node.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = observer.text();
            let missing: Vec<&String> = expected
                .iter()
                .filter(|c| !text.contains(c.as_str()))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cycle {cycle}: node B lacks {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let observed_text = observer.text();
        for chunk in acked_text.split_inclusive(']') {
            assert!(observed_text.contains(chunk), "acknowledged {chunk} lost");
        }
    }

    // The database holds everything: a node started afresh serves it all.
    for typist in typists {
        typist.stop().await;
    }
    observer.stop().await;
    a.terminate().await;
    let fresh = Node::start(pg.url(), None).await;
    let late = NativeClient::start(fresh.url("typing"), SessionConfig::default());
    late.wait_synced(WAIT).await.expect("late synced");
    let text = late.text();
    for chunk in &expected {
        assert!(text.contains(chunk.as_str()), "{chunk} not in PostgreSQL");
    }
    late.stop().await;
    fresh.stop().await;
    b.stop().await;
    let _ = spawn_blocking(move || drop((pg, redis))).await;
}

#[tokio::test]
async fn redis_without_a_database_is_refused_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let (status, _, stderr) = quire_tests::process::run_cli(
        data.path(),
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--redis-url",
            "redis://127.0.0.1:1",
        ],
    )
    .await;
    assert!(!status.success(), "started anyway");
    assert!(
        stderr.contains("--redis-url needs --database-url"),
        "{stderr}"
    );
}
