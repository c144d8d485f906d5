//! Rooms: sync, relay, awareness, isolation, eviction.

use std::time::Duration;

use quire_tests::{Client, TestServer, eventually};

#[tokio::test]
async fn clients_converge_on_concurrent_edits() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect_synced(server.ws_url("shared")).await);
    }
    // Everyone types at once, at both ends of the text, without waiting.
    for round in 0..20 {
        for (i, client) in clients.iter_mut().enumerate() {
            client.insert(0, &format!("<{i}.{round}>"));
            client.push(&format!("[{i}.{round}]"));
        }
    }
    let reference = {
        // All clients must reach the same text, holding all 120 pieces once.
        let first = &mut clients[0];
        first
            .wait_until("all 120 pieces arrived", |c| count_pieces(&c.text()) == 120)
            .await;
        first.text()
    };
    for client in &mut clients {
        client.wait_text(&reference).await;
    }
    for i in 0..3 {
        for round in 0..20 {
            assert_eq!(reference.matches(&format!("<{i}.{round}>")).count(), 1);
            assert_eq!(reference.matches(&format!("[{i}.{round}]")).count(), 1);
        }
    }
}

fn count_pieces(text: &str) -> usize {
    text.matches('<').count() + text.matches('[').count()
}

#[tokio::test]
async fn newcomer_receives_the_existing_document() {
    let server = TestServer::start().await;
    let mut writer = Client::connect_synced(server.ws_url("memo")).await;
    writer.push("written before you came");
    let mut reader = Client::connect_synced(server.ws_url("memo")).await;
    reader.wait_text("written before you came").await;
    // And a brand-new client is synced with it by the initial handshake alone.
    let late = Client::connect_synced(server.ws_url("memo")).await;
    assert_eq!(late.text(), "written before you came");
}

#[tokio::test]
async fn awareness_is_relayed_and_removed_when_a_client_leaves() {
    let server = TestServer::start().await;
    let mut ann = Client::connect_synced(server.ws_url("presence")).await;
    let mut bob = Client::connect_synced(server.ws_url("presence")).await;

    ann.set_awareness(r##"{"user":{"name":"ann","color":"#f00"}}"##);
    let ann_id = ann.client_id;
    bob.wait_until("bob sees ann", |c| c.awareness_of(ann_id).is_some())
        .await;
    assert_eq!(
        bob.awareness_of(ann_id).unwrap(),
        r##"{"user":{"name":"ann","color":"#f00"}}"##
    );

    ann.set_awareness(r##"{"user":{"name":"ann","color":"#0f0"}}"##);
    bob.wait_until("bob sees ann's new colour", |c| {
        c.awareness_of(ann_id).is_some_and(|s| s.contains("#0f0"))
    })
    .await;

    // A newcomer receives the presence of everyone already there.
    let mut cat = Client::connect_synced(server.ws_url("presence")).await;
    cat.wait_until("cat sees ann", |c| c.awareness_of(ann_id).is_some())
        .await;

    // Ann's connection drops without a goodbye: the server announces it.
    ann.disconnect();
    bob.wait_until("bob sees ann leave", |c| c.awareness_of(ann_id).is_none())
        .await;
    cat.wait_until("cat sees ann leave", |c| c.awareness_of(ann_id).is_none())
        .await;
}

#[tokio::test]
async fn awareness_not_renewed_in_time_is_swept() {
    let server = TestServer::start_with(|c| c.awareness_timeout = Duration::from_millis(300)).await;
    let mut ann = Client::connect_synced(server.ws_url("sleepy")).await;
    let mut bob = Client::connect_synced(server.ws_url("sleepy")).await;
    ann.set_awareness(r#"{"user":"ann"}"#);
    let ann_id = ann.client_id;
    bob.wait_until("bob sees ann", |c| c.awareness_of(ann_id).is_some())
        .await;
    // Ann stays connected but never renews her state.
    bob.wait_until("ann's stale state is swept", |c| {
        c.awareness_of(ann_id).is_none()
    })
    .await;
    assert!(
        ann.is_connected(),
        "sweeping presence does not drop the connection"
    );
}

#[tokio::test]
async fn offline_edits_merge_both_ways_on_reconnect() {
    let server = TestServer::start().await;
    let mut online = Client::connect_synced(server.ws_url("trip")).await;
    let mut traveller = Client::connect_synced(server.ws_url("trip")).await;
    online.push("start. ");
    traveller.wait_text("start. ").await;

    traveller.disconnect();
    for i in 0..50 {
        traveller.push(&format!("t{i} "));
        online.insert(0, &format!("o{i} "));
    }
    let online_frames_before = online.frames().len();
    traveller.connect().await;
    traveller.wait_synced().await;

    let expected_pieces = 100;
    traveller
        .wait_until("traveller has both sides", |c| {
            c.text().matches(" ").count() > expected_pieces
        })
        .await;
    let merged = traveller.text();
    online.wait_text(&merged).await;
    for i in 0..50 {
        assert_eq!(
            merged.matches(&format!("t{i} ")).count(),
            1,
            "t{i} once in {merged}"
        );
        assert_eq!(
            merged.matches(&format!("o{i} ")).count(),
            1,
            "o{i} once in {merged}"
        );
    }
    // The traveller's offline work reached the online client as relayed updates.
    assert!(online.frames().len() > online_frames_before);
}

#[tokio::test]
async fn rooms_never_leak_into_each_other() {
    let server = TestServer::start().await;
    let mut a1 = Client::connect_synced(server.ws_url("room-a")).await;
    let mut a2 = Client::connect_synced(server.ws_url("room-a")).await;
    let mut b1 = Client::connect_synced(server.ws_url("room-b")).await;
    a1.set_awareness(r#"{"in":"a"}"#);
    a1.push("only in a");
    b1.push("only in b");
    a2.wait_text("only in a").await;
    b1.wait_text("only in b").await;
    let a1_id = a1.client_id;
    a2.wait_until("a2 sees a1's presence", |c| c.awareness_of(a1_id).is_some())
        .await;
    // A round trip in room b after the edits in room a proves nothing from a
    // was queued for b1.
    let mut b2 = Client::connect_synced(server.ws_url("room-b")).await;
    b2.wait_text("only in b").await;
    assert_eq!(b1.text(), "only in b");
    assert!(b1.awareness_of(a1_id).is_none());
}

#[tokio::test]
async fn query_parameters_are_not_part_of_the_document_name() {
    let server = TestServer::start().await;
    let mut plain = Client::connect_synced(server.ws_url("report")).await;
    let mut with_token =
        Client::connect_synced(format!("{}?token=abc&x=1", server.ws_url("report"))).await;
    plain.push("same document");
    with_token.wait_text("same document").await;
}

#[tokio::test]
async fn empty_room_is_evicted_after_its_grace_period_and_reloads() {
    let server = TestServer::start_with(|c| c.room_grace = Duration::from_millis(100)).await;
    let mut client = Client::connect_synced(server.ws_url("brief")).await;
    client.push("kept on disk");
    let mut other = Client::connect_synced(server.ws_url("brief")).await;
    other.wait_text("kept on disk").await;
    assert_eq!(server.live_rooms(), 1);
    client.close().await;
    other.close().await;
    assert!(
        eventually(|| server.live_rooms() == 0).await,
        "the room is evicted"
    );
    assert_eq!(server.state.metrics.rooms.get(), 0);

    let again = Client::connect_synced(server.ws_url("brief")).await;
    assert_eq!(again.text(), "kept on disk");
    assert_eq!(server.live_rooms(), 1);
}

/// An edit made on top of content the server has not seen (it reached the
/// client from another tab) refers to blocks the server lacks. The server
/// does not apply it half-way: it asks the client for what it lacks (sync
/// step 1), the client's answer brings both, and everyone ends up with the
/// whole text, stored.
#[tokio::test]
async fn an_edit_on_top_of_content_the_server_lacks_is_fetched_not_lost() {
    let server = TestServer::start().await;
    let mut alice = Client::connect_synced(server.ws_url("relayed")).await;
    let mut bob = Client::connect_synced(server.ws_url("relayed")).await;
    // Carol, offline, typed "hello"; bob's other tab passed it on.
    let carol = yrs::Doc::new();
    let typed = {
        use yrs::{Text, Transact};
        let text = carol.get_or_insert_text("content");
        let mut txn = carol.transact_mut();
        text.insert(&mut txn, 0, "hello");
        txn.encode_update_v1()
    };
    bob.receive_elsewhere(&typed);
    bob.push(" world"); // refers to carol's "hello"
    alice.wait_text("hello world").await;
    bob.wait_text("hello world").await;
    let response =
        quire_tests::http::get(server.addr, "/api/docs/relayed/snapshot?format=text").await;
    assert_eq!(response.body, b"hello world");
}
