//! A node that falls behind a document's stream by more than the stream
//! keeps (`MAXLEN ~`): Redis trims the entries it has not read yet, and
//! the node must notice and read them from PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::SessionConfig;
use quire_server::fanout::redis::{RedisFanout, RedisOptions};
use quire_tests::proxy::FaultProxy;
use quire_tests::{Client, WAIT};
use tokio::task::spawn_blocking;

use crate::fanout::{independent_insert, services, wait_for_markers};
use crate::node::Node;

/// A tiny stream, so that a short stall is enough to be trimmed past.
const STREAM_LEN: usize = 8;

async fn fanout(url: &str) -> Arc<RedisFanout> {
    let options = RedisOptions {
        doc_stream_len: STREAM_LEN,
    };
    RedisFanout::connect_with(url, options)
        .await
        .expect("connect to redis")
}

/// Before: node B read on from the oldest entry left and never learnt of
/// the ones trimmed away, so its clients lacked them for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_past_a_slow_nodes_position_is_caught_up_from_postgres() {
    let (pg, redis) = services().await;
    // Trim in small steps (`MAXLEN ~` trims whole nodes of this many).
    redis
        .command(&["CONFIG", "SET", "stream-node-max-entries", "4"])
        .expect("configure redis");
    let redis_addr: SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    // Node B reaches Redis through a proxy that can slow it down.
    let link = FaultProxy::start(redis_addr).await;
    let a = Node::start_on(pg.url(), fanout(&redis.url()).await, |_| {}).await;
    let b = Node::start_on(
        pg.url(),
        fanout(&format!("redis://{}", link.addr())).await,
        |_| {},
    )
    .await;

    let doc = "trimmed";
    let reader = NativeClient::start(b.url(doc), SessionConfig::default());
    reader.wait_synced(WAIT).await.expect("reader synced");
    let mut writer = Client::new_quire(a.url(doc));
    writer.connect().await;
    writer.wait_synced().await;
    writer.send_update(&independent_insert("<warm>"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !reader.text().contains("<warm>") {
        assert!(tokio::time::Instant::now() < deadline, "B never followed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // B's reader now takes 0.8 s per read: far more than the stream keeps
    // arrives in between.
    link.delay(Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writes = 300;
    for i in 0..writes {
        writer.send_update(&independent_insert(&format!("<{i}>")));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    link.heal();

    wait_for_markers(&reader, writes, "node B's client (the stream was trimmed)").await;

    // Every client's document equals the PostgreSQL snapshot.
    let on_a = NativeClient::start(a.url(doc), SessionConfig::default());
    on_a.wait_synced(WAIT).await.expect("a client on A synced");
    writer.close().await;
    let fresh = Node::start(pg.url(), None).await;
    let snapshot = NativeClient::start(fresh.url(doc), SessionConfig::default());
    snapshot.wait_synced(WAIT).await.expect("snapshot synced");
    let stored = snapshot.text();
    assert_eq!(stored.matches('<').count(), writes + 1, "{stored}");
    assert_eq!(reader.text(), stored, "node B's client");
    assert_eq!(on_a.text(), stored, "node A's client");

    // The stream goes once nobody writes to it for a while.
    let ttl = redis
        .command(&["TTL", &format!("quire:doc:{doc}")])
        .expect("TTL");
    let ttl: i64 = ttl
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("an integer reply");
    assert!(
        (1..=3600).contains(&ttl),
        "the document's stream expires in {ttl} s"
    );

    for client in [reader, on_a, snapshot] {
        client.stop().await;
    }
    fresh.stop().await;
    a.stop().await;
    b.stop().await;
    drop(link);
    let _ = spawn_blocking(move || drop((pg, redis))).await;
}
