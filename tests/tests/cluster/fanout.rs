//! Cluster mode: several nodes on one PostgreSQL, fan-out through one
//! Redis, real WebSocket clients on each node. Every wait is bounded.

use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::SessionConfig;
use quire_protocol::SessionEvent;
use quire_protocol::session::Presence;
use quire_tests::services::{Postgres, Redis};
use quire_tests::{Client, WAIT, http};
use tokio::sync::broadcast;
use tokio::task::spawn_blocking;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Text, Transact, WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim};

use crate::node::Node;

/// Private PostgreSQL and Redis, started off the async threads.
pub(crate) async fn services() -> (Postgres, Redis) {
    spawn_blocking(|| {
        let pg = Postgres::start().expect("start postgres");
        let redis = Redis::start().expect("start redis");
        (pg, redis)
    })
    .await
    .unwrap()
}

/// Two nodes of one cluster.
async fn two_nodes(pg: &Postgres, redis: &Redis) -> (Node, Node) {
    let a = Node::start(pg.url(), Some(redis.url())).await;
    let b = Node::start(pg.url(), Some(redis.url())).await;
    (a, b)
}

/// Stops the services off the async threads (their `Drop` waits).
async fn stop_services(pg: Postgres, redis: Redis) {
    let _ = spawn_blocking(move || drop((pg, redis))).await;
}

async fn synced(url: String) -> NativeClient {
    let client = NativeClient::start(url, SessionConfig::default());
    client.wait_synced(WAIT).await.expect("synced");
    client
}

/// Polls until every client shows the same text and `done` holds for it.
async fn converge(clients: &[&NativeClient], what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let texts: Vec<String> = clients.iter().map(|c| c.text()).collect();
        if texts.windows(2).all(|w| w[0] == w[1]) && done(&texts[0]) {
            return texts[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: clients did not converge: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rich-text fragment (`default`) as XML.
fn rich(client: &NativeClient) -> String {
    let fragment = client.doc().get_or_insert_xml_fragment("default");
    fragment.get_string(&client.doc().transact())
}

/// Waits for the first event `pick` accepts.
async fn next_event<T>(
    events: &mut broadcast::Receiver<SessionEvent>,
    what: &str,
    mut pick: impl FnMut(&SessionEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("{what}: client stopped"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: not seen in time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_converge_and_see_presence_chat_and_events() {
    let (pg, redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;

    let ann = synced(a.url("shared")).await;
    ann.set_awareness(Some(r#"{"user":{"name":"ann"}}"#.into()));
    // Ann's presence was set before Bob's room opened on node B: B asks
    // the other nodes for theirs when it opens.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bob = NativeClient::start(b.url("shared"), SessionConfig::default());
    let mut bob_events = bob.events();
    bob.wait_synced(WAIT).await.expect("bob synced");
    let mut ann_events = ann.events();
    next_event(&mut bob_events, "ann's presence on node B", |e| match e {
        SessionEvent::Presence(Presence::Joined { state, .. }) if state.contains("ann") => Some(()),
        _ => None,
    })
    .await;
    bob.set_awareness(Some(r#"{"user":{"name":"bob"}}"#.into()));
    next_event(&mut ann_events, "bob's presence on node A", |e| match e {
        SessionEvent::Presence(Presence::Joined { state, .. }) if state.contains("bob") => Some(()),
        _ => None,
    })
    .await;

    // Text, typed on both nodes at once.
    for i in 0..20 {
        ann.push(&format!("a{i} "));
        bob.push(&format!("b{i} "));
    }
    let text = converge(&[&ann, &bob], "text", |t| t.matches(' ').count() == 40).await;
    for i in 0..20 {
        assert!(text.contains(&format!("a{i} ")) && text.contains(&format!("b{i} ")));
    }

    // Rich content (the Tiptap fragment).
    ann.edit(|txn| {
        let fragment = txn.get_or_insert_xml_fragment("default");
        let paragraph = fragment.push_back(txn, XmlElementPrelim::empty("paragraph"));
        paragraph.push_back(txn, XmlTextPrelim::new("rich from A"));
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while rich(&bob) != rich(&ann) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rich content: {:?} vs {:?}",
            rich(&bob),
            rich(&ann)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rich(&bob).contains("rich from A"));

    // Chat (stamped and stored by node B) and a named event (from A).
    bob.emit("chat", r#"{"text":"hello from B"}"#)
        .await
        .expect("chat sent");
    let chat = next_event(&mut ann_events, "bob's chat on node A", |e| match e {
        SessionEvent::Event {
            name,
            payload,
            sender_name,
            ..
        } if name == "chat" => Some((payload.clone(), sender_name.clone())),
        _ => None,
    })
    .await;
    assert!(chat.0.contains("hello from B"), "{chat:?}");
    assert_eq!(chat.1, "bob");
    ann.emit("cursor", r#"{"at":3}"#).await.expect("event sent");
    let payload = next_event(&mut bob_events, "ann's event on node B", |e| match e {
        SessionEvent::Event { name, payload, .. } if name == "cursor" => Some(payload.clone()),
        _ => None,
    })
    .await;
    assert_eq!(payload, r#"{"at":3}"#);

    // Everything is acknowledged, and a client joining either node later
    // gets the whole document and the chat.
    ann.wait_saved(WAIT).await.expect("ann saved");
    bob.wait_saved(WAIT).await.expect("bob saved");
    let late = synced(a.url("shared")).await;
    assert_eq!(late.text(), text);
    assert_eq!(rich(&late), rich(&ann));

    // Ann leaves: her presence goes on node B too.
    ann.stop().await;
    next_event(
        &mut bob_events,
        "ann's presence removed on node B",
        |e| match e {
            SessionEvent::Presence(Presence::Left { .. }) => Some(()),
            _ => None,
        },
    )
    .await;

    for client in [bob, late] {
        client.stop().await;
    }
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

/// One update from a client of its own (a fresh yrs document): it depends
/// on nothing else, so a node that missed it could never learn of it from
/// a later update (no "incomplete update" would make it resync).
pub(crate) fn independent_insert(marker: &str) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, marker);
    txn.encode_update_v1()
}

/// Waits until `client`'s text holds the markers `<0>` to `<writes - 1>`
/// of [`independent_insert`]s, failing with the missing ones.
pub(crate) async fn wait_for_markers(client: &NativeClient, writes: usize, who: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = client.text();
        let missing: Vec<usize> = (0..writes)
            .filter(|i| !text.contains(&format!("<{i}>")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} lacks {} updates: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_opening_on_node_b_while_node_a_writes_misses_nothing() {
    let (pg, redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    // Each round opens the document's room on B for the first time while
    // independent updates stream into A: whatever falls between B's load
    // from PostgreSQL and its first read of the stream would be lost for
    // good without the position noted before the load.
    for round in 0..5 {
        let doc = format!("race-{round}");
        let mut writer = Client::new_quire(a.url(&doc));
        writer.connect().await;
        writer.wait_synced().await;
        let writes = 60;
        let mut reader = None;
        for i in 0..writes {
            writer.send_update(&independent_insert(&format!("<{i}>")));
            if i == 15 + round * 5 {
                reader = Some(NativeClient::start(b.url(&doc), SessionConfig::default()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let reader = reader.expect("reader started");
        reader.wait_synced(WAIT).await.expect("reader synced");
        wait_for_markers(&reader, writes, &format!("round {round}: node B's client")).await;
        reader.stop().await;
        writer.close().await;
    }
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

/// Compaction on a node whose log other nodes also write merges the
/// entries the store holds past what the room read into the state it
/// writes (`compact_shared`, on a document thread). Here node B's writes
/// reach the database while Redis is away, so node A has not seen them
/// when its own writes make it compact: a compaction that wrote A's state
/// alone would erase them. A node started afterwards loads every write.
/// (Regression test for the merge: it fails when `compact_shared` writes
/// the room's state alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_keeps_the_writes_of_other_nodes_it_has_not_seen() {
    let (pg, mut redis) = services().await;
    let compacting = |c: &mut quire_server::Config| c.compact_after = 4;
    let a = Node::start_with(pg.url(), Some(redis.url()), compacting).await;
    // B compacts rarely (the default), so its stored writes can be counted.
    let b = Node::start(pg.url(), Some(redis.url())).await;
    let mut on_a = Client::connect_synced(a.url("shared-log")).await;
    let mut on_b = Client::connect_synced(b.url("shared-log")).await;
    on_a.send_update(&independent_insert("<0>"));
    on_b.wait_until("node A's first write", |c| c.text().contains("<0>"))
        .await;

    redis = spawn_blocking(move || {
        redis.kill();
        redis
    })
    .await
    .unwrap();
    let store_url = pg.url();
    let store = spawn_blocking(move || {
        quire_storage::PgStore::open(&store_url, quire_storage::PgOptions::default())
            .expect("open the postgres store")
    })
    .await
    .unwrap();
    let store = std::sync::Arc::new(store);
    // The stored log: how many entries it has, and the text it merges to.
    let stored = |store: std::sync::Arc<quire_storage::PgStore>| async move {
        spawn_blocking(move || {
            use quire_storage::DocStore;
            let entries = store
                .info("shared-log")
                .expect("info")
                .map_or(0, |info| info.updates);
            let doc = yrs::Doc::new();
            let text = doc.get_or_insert_text("content");
            let log = store.load("shared-log").expect("load").unwrap_or_default();
            for entry in &log.updates {
                let update = yrs::Update::decode_v1(entry).expect("a stored entry decodes");
                doc.transact_mut()
                    .apply_update(update)
                    .expect("a stored entry applies");
            }
            let merged = text.get_string(&doc.transact());
            (entries, merged)
        })
        .await
        .unwrap()
    };
    let (before, _) = stored(store.clone()).await;
    let on_each = 20;
    for i in 1..=on_each {
        on_b.send_update(&independent_insert(&format!("<{i}>")));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored(store.clone()).await.0 < before + on_each as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B's writes were not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in on_each + 1..=2 * on_each {
        on_a.send_update(&independent_insert(&format!("<{i}>")));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Node A compacted while Redis was away: once every write of A is in
    // the stored log, it has fewer entries than writes (node B, on the
    // default threshold, compacts only when it closes). Counting alone
    // would also pass while A's last writes were still uncommitted.
    let on_a_markers: Vec<String> = (on_each + 1..=2 * on_each)
        .map(|i| format!("<{i}>"))
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (entries, text) = stored(store.clone()).await;
        let all_of_a = on_a_markers.iter().all(|m| text.contains(m.as_str()));
        if all_of_a && entries < before + 2 * on_each as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node A did not compact while Redis was away: {entries} entries for \
             {before} + {} writes, all of A's writes stored: {all_of_a}",
            2 * on_each
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writes = 2 * on_each + 1;
    let reader = synced(a.url("shared-log")).await;
    // Node A has its own writes; B's come with the resync once Redis is back.
    redis = spawn_blocking(move || {
        redis.start_again().expect("redis back");
        redis
    })
    .await
    .unwrap();
    wait_for_markers(&reader, writes, "node A's reader").await;
    reader.stop().await;
    on_a.close().await;
    on_b.close().await;
    a.stop().await;
    b.stop().await;
    let c = Node::start(pg.url(), None).await;
    let fresh = synced(c.url("shared-log")).await;
    wait_for_markers(&fresh, writes, "a node started after the compactions").await;
    fresh.stop().await;
    c.stop().await;
    stop_services(pg, redis).await;
}

/// Before: a node published a durable update only at its room's next
/// event (the client's next message, or the presence sweep): a lone edit
/// reached the other nodes seconds late — here never within the wait, the
/// sweep on node A coming every 100 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_edit_reaches_other_nodes_without_waiting_for_the_rooms_next_event() {
    let (pg, redis) = services().await;
    let a = Node::start_with(pg.url(), Some(redis.url()), |c| {
        c.awareness_timeout = Duration::from_secs(600)
    })
    .await;
    let b = Node::start(pg.url(), Some(redis.url())).await;
    let reader = synced(b.url("lone")).await;
    let mut writer = Client::new_quire(a.url("lone"));
    writer.connect().await;
    writer.wait_synced().await;
    writer.send_update(&independent_insert("<0>"));
    wait_for_markers(&reader, 1, "node B's client").await;
    reader.stop().await;
    writer.close().await;
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

/// Before: a room that went away (its grace period over) before the
/// COMMIT of its last writes waited for that COMMIT, then left without
/// publishing them: the other nodes' rooms never heard of them until
/// something made them read the database. CI hit it with a stock npm
/// client that wrote and quit on a loaded machine; here a commit window
/// longer than the grace period makes it certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_leaves_before_its_last_commit_still_publishes_it() {
    let (pg, redis) = services().await;
    let a = Node::start_with(pg.url(), Some(redis.url()), |c| {
        // Stock clients' writes wait out the window; the grace is 200 ms.
        c.commit_window = Duration::from_secs(2);
    })
    .await;
    let b = Node::start(pg.url(), Some(redis.url())).await;
    let reader = synced(b.url("quitter")).await;
    let mut writer = Client::connect_synced(a.url("quitter")).await;
    writer.push("written just before quitting");
    writer.close().await;
    converge(&[&reader], "node B's client", |t| {
        t == "written just before quitting"
    })
    .await;
    reader.stop().await;
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

/// Deletes `doc` through the node at `addr`, which must accept.
async fn delete_doc(addr: std::net::SocketAddr, doc: &str) {
    let deleted = http::request(addr, "DELETE", &format!("/api/docs/{doc}"), b"").await;
    assert!(
        deleted.status < 300,
        "delete: {} {}",
        deleted.status,
        deleted.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_deleted_through_one_node_closes_its_connections_on_every_node() {
    let (pg, redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    let mut on_a = Client::connect_synced(a.url("doomed")).await;
    let mut on_b = Client::connect_synced(b.url("doomed")).await;
    on_a.push("soon gone");
    on_b.wait_text("soon gone").await;

    delete_doc(a.addr, "doomed").await;
    let (code_a, _) = on_a.wait_closed().await;
    let (code_b, reason) = on_b.wait_closed().await;
    assert_eq!(code_a, 4404);
    assert_eq!(code_b, 4404, "closed on node B too: {reason}");

    // The document is gone for both nodes.
    let listed = http::get(b.addr, "/api/docs").await.text();
    assert!(!listed.contains("doomed"), "{listed}");
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

/// Found in review: a deletion whose `Deleted` could not be published
/// (Redis away) left the document's rooms open on the other nodes; their
/// resync found the document gone and did nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_deleted_while_redis_is_away_closes_its_connections_on_every_node_once_it_returns()
 {
    let (pg, mut redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    let mut on_a = Client::connect_synced(a.url("doomed")).await;
    let mut on_b = Client::connect_synced(b.url("doomed")).await;
    on_a.push("soon gone");
    on_b.wait_text("soon gone").await;

    redis = spawn_blocking(move || {
        redis.kill();
        redis
    })
    .await
    .unwrap();
    delete_doc(a.addr, "doomed").await;
    let (code_a, _) = on_a.wait_closed().await;
    assert_eq!(code_a, 4404);

    redis = spawn_blocking(move || {
        redis.start_again().expect("redis back");
        redis
    })
    .await
    .unwrap();
    let (code_b, reason) = on_b.wait_closed().await;
    assert_eq!(
        code_b, 4404,
        "closed on node B once Redis returned: {reason}"
    );
    let listed = http::get(b.addr, "/api/docs").await.text();
    assert!(!listed.contains("doomed"), "{listed}");
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_serving_and_acking_while_redis_restarts_and_converge_after() {
    let (pg, mut redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    let ann = synced(a.url("weather")).await;
    let bob = synced(b.url("weather")).await;
    ann.push("before ");
    converge(&[&ann, &bob], "before the outage", |t| t == "before ").await;

    redis = spawn_blocking(move || {
        redis.kill();
        redis
    })
    .await
    .unwrap();
    // Each node keeps serving its own clients and acking from PostgreSQL.
    for i in 0..10 {
        ann.push(&format!("a{i} "));
        bob.push(&format!("b{i} "));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ann.wait_saved(WAIT)
        .await
        .expect("node A acks with Redis down");
    bob.wait_saved(WAIT)
        .await
        .expect("node B acks with Redis down");
    let late_a = synced(a.url("weather")).await;
    assert!(
        late_a.text().contains("a9 "),
        "node A serves: {}",
        late_a.text()
    );

    redis = spawn_blocking(move || {
        redis.start_again().expect("redis back");
        redis
    })
    .await
    .unwrap();
    // Once Redis is back every node reads what it missed from PostgreSQL.
    let text = converge(&[&ann, &bob, &late_a], "after Redis returned", |t| {
        t.matches(' ').count() == 21
    })
    .await;
    // And the fan-out works again.
    bob.push("after");
    converge(
        &[&ann, &bob, &late_a],
        "fan-out after Redis returned",
        |t| t.len() == text.len() + 5,
    )
    .await;
    bob.wait_saved(WAIT).await.expect("saved");

    for client in [ann, bob, late_a] {
        client.stop().await;
    }
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_restarts_nothing_is_acked_and_everything_is_stored_once_back() {
    let (mut pg, redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    let ann = synced(a.url("ledger")).await;
    let watcher = synced(a.url("ledger")).await;
    let bob = synced(b.url("ledger")).await;
    ann.push("committed ");
    ann.wait_saved(WAIT).await.expect("saved");
    converge(&[&ann, &bob, &watcher], "before", |t| t == "committed ").await;

    pg = spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    ann.push("pending");
    assert!(
        ann.wait_saved(Duration::from_secs(2)).await.is_err(),
        "acknowledged while PostgreSQL was down"
    );
    assert!(
        ann.status().await.unsaved > 0,
        "the client shows unsaved changes"
    );
    // Relayed on its own node meanwhile.
    converge(&[&ann, &watcher], "relayed on node A", |t| {
        t.ends_with("pending")
    })
    .await;

    pg = spawn_blocking(move || {
        pg.start_again().expect("postgres back");
        pg
    })
    .await
    .unwrap();
    ann.wait_saved(WAIT)
        .await
        .expect("saved once PostgreSQL is back");
    converge(&[&ann, &bob, &watcher], "on node B once stored", |t| {
        t == "committed pending"
    })
    .await;

    // What was acknowledged is in PostgreSQL: a node started afresh has it.
    for client in [ann, bob, watcher] {
        client.stop().await;
    }
    a.stop().await;
    b.stop().await;
    let fresh = Node::start(pg.url(), Some(redis.url())).await;
    let late = synced(fresh.url("ledger")).await;
    assert_eq!(late.text(), "committed pending");
    late.stop().await;
    fresh.stop().await;
    stop_services(pg, redis).await;
}

/// The stock npm client's `scenario` (`tests/compat/compat.mjs`) on
/// `node`, in the room `npm-cluster`, with `text`.
async fn stock(node: &Node, scenario: &str, text: &str) -> serde_json::Value {
    let url = format!("ws://{}/ws", node.addr);
    quire_tests::npm_script("compat.mjs", &[&url, scenario, "npm-cluster", text]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_npm_yjs_client_on_one_node_is_read_by_the_stock_client_on_another() {
    let (pg, redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    let text = "typed by stock Yjs on node A";
    // A Quire client on node B is in the room while the stock client
    // writes through node A, so B's room takes it from the stream.
    let watcher = synced(b.url("npm-cluster")).await;
    assert_eq!(stock(&a, "write", text).await["text"], text);
    converge(&[&watcher], "on node B", |t| t == text).await;
    assert_eq!(stock(&b, "catchup", text).await["text"], text);
    watcher.stop().await;
    a.stop().await;
    b.stop().await;
    stop_services(pg, redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_node_a_and_readers_on_nodes_b_and_c_converge() {
    let (pg, redis) = services().await;
    let (a, b) = two_nodes(&pg, &redis).await;
    let c = Node::start(pg.url(), Some(redis.url())).await;
    let writers = [synced(a.url("three")).await, synced(a.url("three")).await];
    let readers = [synced(b.url("three")).await, synced(c.url("three")).await];
    for i in 0..30 {
        writers[i % 2].push(&format!("w{i} "));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all: Vec<&NativeClient> = writers.iter().chain(&readers).collect();
    let text = converge(&all, "three nodes", |t| t.matches(' ').count() == 30).await;
    for writer in &writers {
        writer.wait_saved(WAIT).await.expect("saved");
    }
    let snapshot = http::get(c.addr, "/api/docs/three/snapshot?format=text").await;
    assert_eq!(snapshot.text(), text, "node C's snapshot");
    for client in writers.into_iter().chain(readers) {
        client.stop().await;
    }
    for node in [a, b, c] {
        node.stop().await;
    }
    stop_services(pg, redis).await;
}
