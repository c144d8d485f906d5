//! Issue 12, the room side: what one client (a viewer with a read-only
//! token, say) can no longer do to a room or to the rooms beside it.

use std::time::{Duration, Instant};

use quire_client::NativeClient;
use quire_protocol::lib0::write_var_uint;
use quire_protocol::session::SAVES_STALLED;
use quire_protocol::{Connection, Message, SessionConfig, SessionEvent, close};
use quire_server::auth::{Claims, Permission, TokenKey};
use quire_tests::{Client, TestServer, WAIT};
use tokio::sync::broadcast;
use yrs::{Doc, Text, Transact};

const KEY: &str = "abuse-room-secret";

fn token(doc: &str, perm: Permission) -> String {
    let exp = quire_server::auth::now_secs() + 600;
    TokenKey::new(KEY).sign(&Claims::doc(doc, perm, exp))
}

fn url(server: &TestServer, doc: &str, perm: Permission) -> String {
    format!("{}?token={}", server.ws_url(doc), token(doc, perm))
}

/// A delete set of `ranges` one-clock ranges of client 1: clocks 0, 2, 4...
fn every_other_clock(ranges: u64) -> Vec<u8> {
    let mut set = Vec::new();
    write_var_uint(&mut set, 1);
    write_var_uint(&mut set, 1);
    write_var_uint(&mut set, ranges);
    for k in 0..ranges {
        write_var_uint(&mut set, 2 * k);
        write_var_uint(&mut set, 1);
    }
    set
}

/// Finding 4: a viewer resending an update that lists 100,000 deleted
/// ranges the document already has. Each one was checked against a delete
/// set rebuilt and re-sorted per range (quadratic in the document), on
/// the tokio worker other rooms need. Prints how long another room's
/// edits took to reach a second member meanwhile (the figure of the note;
/// run with `--nocapture`); asserts only that they all arrive and that
/// the viewer changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resending_100k_deletions_does_not_hold_up_another_room() {
    const RANGES: u64 = 100_000;
    let server = TestServer::start_with(|c| c.auth_key = Some(TokenKey::new(KEY))).await;
    // The document: 200,000 letters, every other one deleted.
    let written = {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, &"a".repeat(2 * RANGES as usize));
        let mut update = txn.encode_update_v1();
        assert_eq!(update.pop(), Some(0), "an empty delete set");
        update.extend(every_other_clock(RANGES));
        update
    };
    server.state.store.append("big", &written).unwrap();
    let stored = server.state.store.load("big").unwrap().unwrap().updates;
    let mut viewer = Client::connect_synced(url(&server, "big", Permission::Read)).await;
    assert_eq!(viewer.text().len(), RANGES as usize);
    // Nothing but the deletions the document has: 100,000 ranges.
    let mut known = vec![0];
    known.extend(every_other_clock(RANGES));

    let mut watcher = Client::connect_synced(url(&server, "big", Permission::Read)).await;

    let mut a = Client::connect_synced(url(&server, "other", Permission::Write)).await;
    let mut b = Client::connect_synced(url(&server, "other", Permission::Write)).await;
    let mut expected = String::new();
    // One edit in the other room every 5 ms until `until` says stop:
    // how long each took from one member to the other, sorted.
    let mut measure = async |until: &dyn Fn() -> bool| {
        let mut delays = Vec::new();
        while !until() {
            let started = Instant::now();
            a.push("x");
            expected.push('x');
            b.wait_text(&expected).await;
            delays.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        delays.sort();
        delays
    };
    let quiet_until = Instant::now() + Duration::from_millis(500);
    let quiet = measure(&|| Instant::now() > quiet_until).await;

    // The viewer sends its 20 copies back to back (its byte rate limit
    // spaces them), then its presence: once the watcher sees that, the
    // room has checked every copy.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spam = tokio::spawn({
        let sent = sent.clone();
        async move {
            for _ in 0..20 {
                viewer.send_update(&known);
            }
            viewer.set_awareness(r#"{"user":{"name":"viewer"}}"#);
            let viewer_id = viewer.client_id;
            watcher
                .wait_until("the room checked every copy", |c| {
                    c.awareness_of(viewer_id).is_some()
                })
                .await;
            sent.store(true, std::sync::atomic::Ordering::SeqCst);
            viewer
        }
    });
    let spam_started = Instant::now();
    let busy = measure(&|| sent.load(std::sync::atomic::Ordering::SeqCst)).await;
    let spam_took = spam_started.elapsed();
    let viewer = spam.await.unwrap();

    let median = |d: &[Duration]| d[d.len() / 2];
    eprintln!(
        "another room's edit, send to arrival: quiet ({} edits) median {:?} max {:?}; \
         while a viewer's 20 copies of {RANGES} known deletions were checked ({spam_took:?}, \
         {} edits): median {:?} max {:?}",
        quiet.len(),
        median(&quiet),
        quiet.last().unwrap(),
        busy.len(),
        median(&busy),
        busy.last().unwrap(),
    );
    assert!(viewer.is_connected(), "sending nothing new is no offence");
    let after = server.state.store.load("big").unwrap().unwrap().updates;
    assert_eq!(after, stored, "the viewer changed nothing");
    let mut server = server;
    server.stop().await;
}

fn native(url: String) -> NativeClient {
    NativeClient::start(url, SessionConfig::default())
}

/// The next `ServerError` a Quire client reports.
async fn next_error(events: &mut broadcast::Receiver<SessionEvent>) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(SessionEvent::ServerError { code, message }) => return (code, message),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("an error arrives")
}

/// Findings 7 and 3, as a Quire client sees them: a viewer's event and an
/// oversized chat message are refused with typed errors, acknowledged as
/// delivered to nobody, and the connection stays.
#[tokio::test]
async fn refused_events_are_typed_errors_and_reach_nobody() {
    let server = TestServer::start_with(|c| c.auth_key = Some(TokenKey::new(KEY))).await;
    let writer = native(url(&server, "talk", Permission::Write));
    let viewer = native(url(&server, "talk", Permission::Read));
    writer.wait_synced(WAIT).await.unwrap();
    viewer.wait_synced(WAIT).await.unwrap();
    let mut viewer_events = viewer.take_all_events().unwrap();
    let delivered = viewer
        .emit_with_ack("cursor", r#"{"at":1}"#, WAIT)
        .await
        .unwrap();
    assert_eq!(delivered, 0);
    assert_eq!(next_error(&mut viewer_events).await.0, close::FORBIDDEN);

    let mut writer_events = writer.take_all_events().unwrap();
    let long = serde_json::json!({ "text": "x".repeat(4 * 1024 + 1) }).to_string();
    assert_eq!(writer.emit_with_ack("chat", &long, WAIT).await.unwrap(), 0);
    let (code, message) = next_error(&mut writer_events).await;
    assert_eq!(code, close::MESSAGE_TOO_BIG, "{message}");
    let fits = serde_json::json!({ "text": "x".repeat(4 * 1024) }).to_string();
    // Chat goes back to its sender too: two members.
    assert_eq!(writer.emit_with_ack("chat", &fits, WAIT).await.unwrap(), 2);
    assert!(matches!(
        writer.status().await.connection,
        Connection::Synced
    ));
    assert!(matches!(
        viewer.status().await.connection,
        Connection::Synced
    ));
}

/// Finding 2 over a socket: a stock client naming another client's
/// awareness id can neither rewrite nor erase it.
#[tokio::test]
async fn nobody_erases_or_impersonates_anothers_presence() {
    let server = TestServer::start().await;
    let doc_url = server.ws_url("faces");
    let mut ann = Client::connect_synced(doc_url.clone()).await;
    let eve = Client::connect_synced(doc_url.clone()).await;
    let mut watcher = Client::connect_synced(doc_url).await;
    ann.set_awareness(r#"{"user":{"name":"ann"}}"#);
    let ann_id = ann.client_id;
    watcher
        .wait_until("ann is present", |c| c.awareness_of(ann_id).is_some())
        .await;
    for (clock, state) in [(50, r#"{"user":{"name":"eve"}}"#), (60, "null")] {
        let mut update = Vec::new();
        write_var_uint(&mut update, 1);
        write_var_uint(&mut update, ann_id);
        write_var_uint(&mut update, clock);
        quire_protocol::lib0::write_var_string(&mut update, state);
        eve.send_raw(Message::Awareness(&update).encode());
    }
    // A barrier: eve's own presence arrives after her forgeries.
    let mut eve = eve;
    eve.set_awareness(r#"{"user":{"name":"eve"}}"#);
    let eve_id = eve.client_id;
    watcher
        .wait_until("eve is present", |c| c.awareness_of(eve_id).is_some())
        .await;
    assert_eq!(
        watcher.awareness_of(ann_id).as_deref(),
        Some(r#"{"user":{"name":"ann"}}"#)
    );
    assert!(eve.is_connected());
}

/// Finding 6 over a socket: while the store confirms nothing (durability
/// held back longer than the stall timeout, as by a stalled disk), a Quire
/// client is told its changes are not being saved, and `Saved` follows
/// once they are.
#[tokio::test]
async fn a_save_stall_is_told_to_quire_clients_then_saved() {
    let (server, held) =
        TestServer::start_held(|c| c.save_stall_timeout = Duration::from_millis(300)).await;
    held.release();
    let client = native(server.ws_url("slow"));
    client.wait_synced(WAIT).await.unwrap();
    let mut events = client.take_all_events().unwrap();
    held.hold();
    client.push("typed");
    let (code, message) = next_error(&mut events).await;
    assert_eq!(code, SAVES_STALLED, "{message}");
    assert!(client.status().await.unsaved > 0, "not saved meanwhile");
    held.release();
    client.wait_saved(WAIT).await.unwrap();
}
