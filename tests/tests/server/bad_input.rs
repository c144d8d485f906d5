//! Bad input closes only the offending connection, with a clear code, and
//! changes nothing stored; everyone else carries on.

use quire_protocol::lib0::{write_var_bytes, write_var_string, write_var_uint};
use quire_protocol::{Message, SyncMessage};
use quire_tests::http;
use quire_tests::{Client, TestServer};

use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A room with two well-behaved clients and some content.
struct Scene {
    server: TestServer,
    alice: Client,
    bob: Client,
}

impl Scene {
    async fn new(tune: impl FnOnce(&mut quire_server::Config)) -> Self {
        let server = TestServer::start_with(tune).await;
        let mut alice = Client::connect_synced(server.ws_url("target")).await;
        let mut bob = Client::connect_synced(server.ws_url("target")).await;
        alice.push("precious");
        bob.wait_text("precious").await;
        Self { server, alice, bob }
    }

    async fn stored(&self) -> Vec<u8> {
        let response = http::get(self.server.addr, "/api/docs/target/snapshot?format=yjs").await;
        assert_eq!(response.status, 200);
        response.body
    }

    /// Sends `attack` from a third client and expects it closed with `code`;
    /// then proves the others are unaffected and nothing stored changed.
    async fn expect_refused(mut self, attack: impl FnOnce(&Client), code: u16) -> String {
        let stored_before = self.stored().await;
        let mut mallory = Client::connect_synced(self.server.ws_url("target")).await;
        attack(&mallory);
        let (got, reason) = mallory.wait_closed().await;
        assert_eq!(got, code, "close code (reason: {reason})");
        assert!(!reason.is_empty(), "a close reason is given");
        assert_eq!(
            self.stored().await,
            stored_before,
            "the stored document is unchanged"
        );

        self.alice.push(" and still editable");
        self.bob.wait_text("precious and still editable").await;
        assert!(self.alice.is_connected() && self.bob.is_connected());
        reason
    }
}

#[tokio::test]
async fn a_frame_that_does_not_decode_closes_with_1007() {
    let scene = Scene::new(|_| {}).await;
    let reason = scene
        .expect_refused(|c| c.send_raw(vec![0xff, 0xff, 0xff]), 1007)
        .await;
    assert!(reason.contains("malformed"), "{reason}");
}

#[tokio::test]
async fn a_truncated_sync_frame_closes_with_1007() {
    let scene = Scene::new(|_| {}).await;
    // Sync update claiming 50 bytes of payload but carrying 3.
    scene
        .expect_refused(|c| c.send_raw(vec![0, 2, 50, 1, 2, 3]), 1007)
        .await;
}

#[tokio::test]
async fn an_update_yrs_rejects_closes_with_1007() {
    let scene = Scene::new(|_| {}).await;
    let reason = scene
        .expect_refused(|c| c.send_update(&[3, 200, 1, 0, 0, 9, 9, 9, 9, 9]), 1007)
        .await;
    assert!(
        reason.contains("invalid update") || reason.contains("CRDT"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_invalid_state_vector_closes_with_1007() {
    let scene = Scene::new(|_| {}).await;
    scene
        .expect_refused(
            |c| c.send_raw(Message::Sync(SyncMessage::Step1(&[5, 1])).encode()),
            1007,
        )
        .await;
}

#[tokio::test]
async fn awareness_that_is_not_json_closes_with_1007() {
    let scene = Scene::new(|_| {}).await;
    let mut update = Vec::new();
    write_var_uint(&mut update, 1);
    write_var_uint(&mut update, 42);
    write_var_uint(&mut update, 1);
    write_var_string(&mut update, "{not json");
    let mut frame = Vec::new();
    write_var_uint(&mut frame, 1);
    write_var_bytes(&mut frame, &update);
    scene.expect_refused(move |c| c.send_raw(frame), 1007).await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let scene = Scene::new(|c| c.max_message_bytes = 64 * 1024).await;
    let reason = scene
        .expect_refused(|c| c.send_update(&vec![0u8; 100 * 1024]), 1009)
        .await;
    assert!(reason.contains("65536"), "the limit is stated: {reason}");
}

#[tokio::test]
async fn a_text_frame_closes_with_1003() {
    let scene = Scene::new(|_| {}).await;
    scene
        .expect_refused(|c| c.send_ws(WsMessage::Text("hello?".into())), 1003)
        .await;
}

#[tokio::test]
async fn unacceptable_document_names_close_with_4400() {
    let server = TestServer::start().await;
    let long = "x".repeat(201);
    for name in [
        "..",
        "a..b",
        "bell%07",
        "nul%00byte",
        "a%2Fb",
        long.as_str(),
    ] {
        let mut client = Client::new(server.ws_url(name));
        client.connect().await;
        let (code, reason) = client.wait_closed().await;
        assert_eq!(code, 4400, "name {name:?}: {reason}");
        assert!(reason.contains("document name"), "{reason}");
    }
    // Nothing was created for them.
    let list = http::get(server.addr, "/api/docs").await.json();
    assert_eq!(list, serde_json::json!([]));
}

/// Found by mutating real updates: yrs 0.28 overflows a u32 while decoding
/// this block list and panics (debug builds). The panic is contained: only
/// the sender is closed, nothing is applied. (Since updates are walked
/// before yrs decodes them, this one is refused by the walk; yrs panics are
/// still caught for whatever the walk lets through.)
#[tokio::test]
async fn regression_yrs_panic_while_decoding_an_update_is_contained() {
    let scene = Scene::new(|_| {}).await;
    let panicking: Vec<u8> = vec![
        1, 2, 14, 132, 207, 231, 144, 158, 211, 231, 13, 145, 9, 68, 132, 207, 231, 144, 158, 211,
        231, 13, 0, 8, 99, 104, 117, 110, 107, 32, 49, 32, 40, 1, 1, 109, 2, 107, 49, 1, 125, 1,
    ];
    let reason = scene
        .expect_refused(move |c| c.send_update(&panicking), 1007)
        .await;
    assert!(reason.contains("does not decode"), "{reason}");
}

/// yrs decodes nested values recursively with no depth limit: an update
/// holding one value nested 200,000 arrays deep (400 KB) overflowed the
/// stack and aborted the whole server, for every document. Found while
/// walking yrs' decoder for the fuzz findings; updates are now walked
/// (nesting at most 64 deep) before yrs sees them.
#[tokio::test]
async fn regression_deeply_nested_value_crashed_the_server() {
    let scene = Scene::new(|_| {}).await;
    // An item in root "a" holding one value: [[[...null...]]].
    let mut nested = vec![1, 1, 1, 0, 0x08, 1, 1, b'a', 1];
    for _ in 0..200_000 {
        nested.extend_from_slice(&[117, 1]);
    }
    nested.extend_from_slice(&[126, 0]);
    let reason = scene
        .expect_refused(move |c| c.send_update(&nested), 1007)
        .await;
    assert!(reason.contains("nested too deeply"), "{reason}");
}
