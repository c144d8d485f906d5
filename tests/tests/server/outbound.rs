//! Outbound queues are bounded in bytes (issue 12, finding 1): a client
//! that asks for the document again and again and never reads costs the
//! server one answer, not one per request, and a client that falls behind
//! by more than `--outbox-bytes` is cut off with 4408.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::lib0::write_var_uint;
use quire_protocol::{Message, SyncMessage};
use quire_tests::{Client, TestServer, WAIT, eventually};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Size of the document the requests ask for.
const DOC_BYTES: usize = 64 * 1024;
/// Requests the flooding client sends.
const REQUESTS: usize = 3_000;

/// The resident set size of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A server with a document of [`DOC_BYTES`] and no message rate limit (so
/// the flood arrives at once).
async fn server_with_document(tune: impl FnOnce(&mut quire_server::Config)) -> TestServer {
    let server = TestServer::start_with(|c| {
        c.max_messages_per_sec = 1_000_000;
        c.max_bytes_per_sec = 1 << 40;
        tune(c);
    })
    .await;
    let mut writer = Client::connect_synced(server.ws_url("big")).await;
    writer.push(&"x".repeat(DOC_BYTES));
    let mut reader = Client::connect_synced(server.ws_url("big")).await;
    reader
        .wait_until("the document is stored", |c| c.text().len() == DOC_BYTES)
        .await;
    writer.close().await;
    reader.close().await;
    server
}

/// Sends `frames` on a raw connection that never reads; returns it.
async fn flood(
    server: &TestServer,
    frames: impl Iterator<Item = Vec<u8>>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url("big"))
        .await
        .expect("connect");
    tokio::time::timeout(WAIT, async {
        for frame in frames {
            if socket.feed(WsMessage::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        let _ = socket.flush().await;
    })
    .await
    .expect("the flood is sent in time");
    socket
}

/// Reads until the server's close frame; returns its code.
async fn close_code(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<u16> {
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let WsMessage::Close(Some(frame)) = message {
                return Some(u16::from(frame.code));
            }
        }
        None
    })
    .await
    .expect("closed in time")
}

#[tokio::test]
async fn repeated_sync_requests_from_a_client_that_never_reads_queue_one_answer() {
    let server = server_with_document(|_| {}).await;
    let rss_before = rss_kib();
    let received_before = server.state.metrics.bytes_in.get();
    // 4-byte sync step 1 messages with an empty state vector, never read.
    let step1 = Message::Sync(SyncMessage::Step1(&[0])).encode();
    assert_eq!(step1.len(), 4);
    let mut socket = flood(&server, std::iter::repeat_n(step1.clone(), REQUESTS)).await;
    let metrics = server.state.metrics.clone();
    let all = (REQUESTS * step1.len()) as u64;
    assert!(
        eventually(|| metrics.bytes_in.get() - received_before >= all).await,
        "the server read every request"
    );
    // Let the room answer what it read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak = server.state.metrics.outbound_queue_peak_bytes.get();
    let rss_after = rss_kib();
    println!(
        "{REQUESTS} identical sync step 1 requests for a {DOC_BYTES}-byte document: \
         peak queued {peak} bytes, RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        peak <= 2 * (DOC_BYTES as i64 + 1024),
        "at most one answer waits in the queue (peak {peak} bytes)"
    );
    assert_eq!(
        server.state.metrics.slow_consumers_cut.get(),
        0,
        "a repeated request is not a slow reader"
    );
    // The client then reads and finds its answer.
    let answered = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let WsMessage::Binary(frame) = message
                && let Ok(Message::Sync(SyncMessage::Step2(update))) = Message::decode(&frame)
                && update.len() > DOC_BYTES
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("answered in time");
    assert!(answered);
}

/// Sync step 1 naming one unknown client: a distinct request each time,
/// each answered with the whole document.
fn distinct_step1(client: u64) -> Vec<u8> {
    let mut sv = Vec::new();
    write_var_uint(&mut sv, 1);
    write_var_uint(&mut sv, client);
    write_var_uint(&mut sv, 0);
    Message::Sync(SyncMessage::Step1(&sv)).encode()
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_by_bytes_queued() {
    const OUTBOX_BYTES: usize = 1024 * 1024;
    let server = server_with_document(|c| c.outbox_bytes = OUTBOX_BYTES).await;
    let rss_before = rss_kib();
    let mut socket = flood(&server, (1..=REQUESTS as u64).map(distinct_step1)).await;
    assert_eq!(close_code(&mut socket).await, Some(4408));
    let peak = server.state.metrics.outbound_queue_peak_bytes.get();
    let rss_after = rss_kib();
    println!(
        "distinct sync step 1 requests for a {DOC_BYTES}-byte document, --outbox-bytes \
         {OUTBOX_BYTES}: cut with 4408, peak queued {peak} bytes, RSS {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(server.state.metrics.slow_consumers_cut.get(), 1);
    assert!(
        peak <= (OUTBOX_BYTES + DOC_BYTES + 1024) as i64,
        "the queue holds at most its bound and one frame (peak {peak} bytes)"
    );
    assert!(
        eventually(|| server.state.metrics.outbound_queued_bytes.get() == 0).await,
        "the cut connection's queue is freed"
    );
    // The room goes on for everyone else.
    let reader = Client::connect_synced(server.ws_url("big")).await;
    assert_eq!(reader.text().len(), DOC_BYTES);
}
