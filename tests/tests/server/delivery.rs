//! How frames reach clients (issue 14, target 1): the room writes a frame
//! to an idle connection's socket itself, and hands the rest of a frame the
//! socket did not take to the connection. Whatever path a frame takes,
//! every client gets every frame whole, once and in order, and a client
//! that does not read does not slow the others.

use std::time::Duration;

use futures_util::StreamExt;
use quire_protocol::{Message, SyncMessage};
use quire_tests::{Client, TestServer, WAIT};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Transact, Update};

/// Edits the writer makes, each this many bytes (16 MB in all): more than the
/// kernel's socket buffers hold, so writes to the paused reader's socket
/// become partial and refused on the way.
const EDITS: usize = 400;
const EDIT_BYTES: usize = 40 * 1024;

fn edit(i: usize) -> String {
    format!("{i:05}|").repeat(EDIT_BYTES / 6)
}

#[tokio::test]
async fn a_reader_that_pauses_gets_every_update_whole_and_in_order_and_slows_no_one() {
    let server = TestServer::start_with(|c| {
        c.max_messages_per_sec = 1_000_000;
        c.max_bytes_per_sec = 1 << 40;
        c.outbox_bytes = 256 << 20;
    })
    .await;
    let url = server.ws_url("paused%20reader");
    let mut writer = Client::connect_synced(url.clone()).await;
    let mut prompt = Client::connect_synced(url.clone()).await;
    // A stock client in the room (the room's sync step 1 says it joined),
    // which then stops reading.
    let (mut paused, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(WsMessage::Binary(frame))) = paused.next().await {
            if let Ok(Message::Sync(SyncMessage::Step1(_))) = Message::decode(&frame) {
                return;
            }
        }
        panic!("no sync step 1 from the room");
    })
    .await
    .expect("joined in time");
    let mut expected = String::new();
    for i in 0..EDITS {
        writer.push(&edit(i));
        expected.push_str(&edit(i));
    }
    // The others get everything while the paused reader reads nothing.
    prompt.wait_text(&expected).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Now it reads: every update applies on top of the ones before it.
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut applied = 0;
    tokio::time::timeout(WAIT, async {
        while applied < EDITS {
            let frame = match paused.next().await {
                Some(Ok(WsMessage::Binary(frame))) => frame,
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("after {applied} updates: {other:?}"),
            };
            let update = match Message::decode(&frame).expect("a whole frame") {
                Message::Sync(SyncMessage::Update(update) | SyncMessage::Step2(update)) => update,
                _ => continue,
            };
            let update = Update::decode_v1(update).expect("a whole update");
            doc.transact_mut().apply_update(update).unwrap();
            let got = text.get_string(&doc.transact());
            if got.is_empty() {
                continue;
            }
            assert_eq!(
                got,
                expected[..got.len()],
                "in order: nothing missing before"
            );
            assert_eq!(got.len(), (applied + 1) * edit(0).len(), "each update once");
            applied += 1;
        }
    })
    .await
    .expect("the paused reader catches up");
    assert_eq!(text.get_string(&doc.transact()), expected);
    assert!(writer.closed().is_none() && prompt.closed().is_none());
}

/// Updates in one burst, each this many bytes.
const BURST: usize = 50;
const BURST_BYTES: usize = 200;

/// Regression (a whole-trace replay cost twice the CPU per update once the
/// room wrote every frame to the readers' sockets itself): updates that
/// reach the room faster than it handles them are left to an idle reader's
/// connection, which writes them gathered, several frames per write.
#[tokio::test]
async fn a_burst_of_updates_reaches_an_idle_reader_gathered_not_one_write_each() {
    let server = TestServer::start_with(|c| {
        c.max_messages_per_sec = 1_000_000;
        c.max_bytes_per_sec = 1 << 40;
    })
    .await;
    let url = server.ws_url("burst");
    let mut writer = Client::connect_synced(url.clone()).await;
    let mut reader = Client::connect_synced(url).await;
    let metrics = server.state.metrics.clone();
    let peak_before = metrics.outbound_queue_peak_bytes.get();
    assert!(
        peak_before < BURST_BYTES as i64,
        "only the small sync frames so far"
    );
    // Sent back to back: the room finds each next update already waiting.
    let mut expected = String::new();
    for i in 0..BURST {
        let chunk = format!("{i:03}|").repeat(BURST_BYTES / 4);
        writer.push(&chunk);
        expected.push_str(&chunk);
    }
    reader.wait_text(&expected).await;
    let peak = metrics.outbound_queue_peak_bytes.get();
    assert!(
        peak >= 4 * BURST_BYTES as i64,
        "frames queued together for the reader's own write (peak {peak} bytes)"
    );
    assert!(writer.closed().is_none() && reader.closed().is_none());
}
