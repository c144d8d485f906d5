//! Issue 13's three fixes for stock clients, found by trying the server
//! with the stock npm client: an idle client stays connected, `quire cat`
//! and `watch` take the URLs a Yjs app uses, and what a client wrote
//! reaches the others as it wrote it.

use std::time::{Duration, Instant};

use quire_tests::browser::rich_scenario;
use quire_tests::process::run_cli;
use quire_tests::{Client, TestServer};

use crate::compat::run_scenario;

/// y-websocket closes a socket on which no message arrived for 30 s, and
/// browsers never show WebSocket pings to scripts; a stock client alone in
/// a quiet room was closed and reconnected every 30 s. (Slow: 35 s idle.)
#[tokio::test]
async fn a_stock_client_alone_in_a_quiet_room_stays_connected() {
    let server = TestServer::start().await;
    let result = run_scenario(&format!("ws://{}/ws", server.addr), "idle", "npm-idle", &[]).await;
    assert_eq!(result["text"], "alone");
}

/// yrs keeps a map value's keys in hash order, and the server relayed a
/// re-encoded delta: a link mark's attrs reached other clients reordered.
#[tokio::test]
async fn a_link_mark_reaches_another_stock_client_byte_for_byte() {
    let server = TestServer::start().await;
    let result = rich_scenario(&format!("ws://{}/ws", server.addr), "relay", "pm-relay", "").await;
    let sent = result["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "one transaction, one update: {result}");
    assert_eq!(
        result["received"], result["sent"],
        "the reader received the writer's bytes"
    );
    assert_eq!(
        result["reader"], result["writer"],
        "the same JSON text, keys in the same order"
    );
    assert!(
        result["writer"]
            .as_str()
            .unwrap()
            .contains(r#""href":"https://tiptap.dev/","target":"_blank","rel""#),
        "{result}"
    );
}

/// `quire cat` given `ws://host:port/ws` (the base URL of a Yjs app)
/// waited 15 s and said "could not reach the server".
#[tokio::test]
async fn quire_cat_takes_the_server_the_yjs_base_url_or_a_room_url() {
    let server = TestServer::start().await;
    let mut editor = Client::connect_synced(server.ws_url("cli%20urls")).await;
    editor.push("typed in the room\n");
    let mut reader = Client::connect_synced(server.ws_url("cli%20urls")).await;
    reader.wait_text("typed in the room\n").await;
    let dir = tempfile::tempdir().unwrap();
    let addr = server.addr;
    for args in [
        vec![format!("http://{addr}"), "cli urls".into()],
        vec![format!("ws://{addr}"), "cli urls".into()],
        vec![format!("ws://{addr}/ws"), "cli urls".into()],
        vec![format!("ws://{addr}/ws/"), "cli urls".into()],
        vec![format!("ws://{addr}/ws/cli%20urls")],
        vec![format!("ws://{addr}/ws/cli%20urls"), "cli urls".into()],
    ] {
        let mut argv = vec!["cat"];
        argv.extend(args.iter().map(String::as_str));
        let (status, stdout, stderr) = run_cli(dir.path(), &argv).await;
        assert!(status.success(), "{argv:?}: {stderr}");
        assert_eq!(stdout, b"typed in the room\n", "{argv:?}");
    }
    let (status, _, stderr) = run_cli(
        dir.path(),
        &["cat", &format!("ws://{addr}/ws/cli%20urls"), "other"],
    )
    .await;
    assert!(
        !status.success() && stderr.contains("names the document"),
        "{stderr}"
    );
}

/// A server that answers but not at that path (HTTP 404 on the upgrade)
/// is not retried until the sync timeout: the command fails at once and
/// says which URL it tried.
#[tokio::test]
async fn quire_cat_and_watch_on_a_wrong_path_fail_at_once_saying_what_was_tried() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("ws://{}/elsewhere", server.addr);
    for command in ["cat", "watch"] {
        let started = Instant::now();
        let (status, stdout, stderr) = run_cli(dir.path(), &[command, &wrong, "notes"]).await;
        assert!(!status.success(), "{command} succeeded");
        assert!(stdout.is_empty(), "{command} printed {stdout:?}");
        let tried = format!("ws://{}/elsewhere/ws/notes", server.addr);
        assert!(
            stderr.contains(&tried) && stderr.contains("404"),
            "{command}: {stderr}"
        );
        // Far below the 15 s the client would wait for a sync.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{command} took {:?}",
            started.elapsed()
        );
    }
}
