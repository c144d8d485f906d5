//! `/healthz` as a load balancer's readiness check: a node of a cluster is
//! not ready until its Redis reader is connected, then stays in the
//! rotation through a Redis outage (saying it is degraded).

use std::sync::Arc;
use std::time::Duration;

use quire_server::fanout::Fanout;
use quire_server::fanout::redis::RedisFanout;
use quire_tests::services::{Postgres, Redis};
use quire_tests::{TestServer, WAIT, http};
use tokio::task::spawn_blocking;

use crate::node::Node;

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_not_ready_until_its_redis_reader_is_up_and_then_stays_in_rotation() {
    let (pg, mut redis) = spawn_blocking(|| {
        (
            Postgres::start().expect("start postgres"),
            Redis::start().expect("start redis"),
        )
    })
    .await
    .unwrap();
    let fanout = RedisFanout::connect(&redis.url()).await.expect("connect");
    // Redis goes away before the node starts: its reader cannot connect.
    redis = spawn_blocking(move || {
        redis.stop();
        redis
    })
    .await
    .unwrap();
    let reader = fanout.clone();
    wait_for("the reader to notice Redis is gone", async || {
        !reader.is_ready()
    })
    .await;
    let node = Node::start_on(pg.url(), fanout.clone() as Arc<dyn Fanout>, |_| {}).await;

    let health = http::get(node.addr, "/healthz").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("Redis"), "{}", health.text());

    redis = spawn_blocking(move || {
        redis.start_again().expect("redis back");
        redis
    })
    .await
    .unwrap();
    wait_for("the node to become ready", async || {
        http::get(node.addr, "/healthz").await.status == 200
    })
    .await;

    // Once ready, a Redis outage leaves it in the proxy's rotation: every
    // node shares that Redis, and each still serves its own clients.
    redis = spawn_blocking(move || {
        redis.stop();
        redis
    })
    .await
    .unwrap();
    wait_for("the reader to notice Redis is gone again", async || {
        !fanout.is_ready()
    })
    .await;
    let health = http::get(node.addr, "/healthz").await;
    assert_eq!(health.status, 200);
    assert!(
        health.text().starts_with("ok, degraded"),
        "{}",
        health.text()
    );

    node.stop().await;
    let _ = spawn_blocking(move || drop((pg, redis))).await;
}

#[tokio::test]
async fn one_node_on_sled_is_ready_at_once() {
    let server = TestServer::start().await;
    let health = http::get(server.addr, "/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
}
