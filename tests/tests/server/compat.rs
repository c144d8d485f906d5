//! The stock npm client (`yjs` + `y-websocket`, pinned in
//! `tests/compat/package-lock.json`) against Quire. `cargo xtask test`
//! installs the packages; the scenarios live in `tests/compat/compat.mjs`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use quire_tests::http;
use quire_tests::{ServerProcess, TestServer};
use serde_json::Value;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// Runs one scenario; panics with its output unless it reports success.
pub(crate) async fn run_scenario(
    server_url: &str,
    scenario: &str,
    room: &str,
    extra: &[&str],
) -> Value {
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/yjs").exists() && dir.join("node_modules/y-websocket").exists(),
        "npm packages missing: run `npm ci` in {} (`cargo xtask test` does it)",
        dir.display()
    );
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg("compat.mjs")
            .arg(server_url)
            .arg(scenario)
            .arg(room)
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("scenario finishes")
    .expect("node runs (install Node.js 20+)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scenario {scenario} failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().expect("a result line");
    let result: Value = serde_json::from_str(last).expect("JSON result");
    assert_eq!(result["ok"], true, "{stdout}");
    result
}

fn base_url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn two_stock_clients_converge_and_match_the_snapshot() {
    let server = TestServer::start().await;
    let result = run_scenario(&base_url(server.addr), "converge", "npm-converge", &[]).await;
    let snapshot = http::get(server.addr, "/api/docs/npm-converge/snapshot?format=text").await;
    assert_eq!(snapshot.text(), result["text"].as_str().unwrap());
}

#[tokio::test]
async fn stock_awareness_arrives_and_is_removed_on_disconnect() {
    let server = TestServer::start().await;
    run_scenario(&base_url(server.addr), "awareness", "npm-awareness", &[]).await;
}

#[tokio::test]
async fn a_reconnecting_stock_client_catches_up() {
    let server = TestServer::start().await;
    let result = run_scenario(&base_url(server.addr), "reconnect", "npm-reconnect", &[]).await;
    let snapshot = http::get(server.addr, "/api/docs/npm-reconnect/snapshot?format=text").await;
    assert_eq!(snapshot.text(), result["text"].as_str().unwrap());
}

#[tokio::test]
async fn a_stock_client_finds_its_text_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    run_scenario(
        &base_url(server.addr),
        "write",
        "npm-restart",
        &["saved by yjs"],
    )
    .await;
    assert!(server.terminate().await.success());
    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    let result = run_scenario(
        &base_url(server.addr),
        "catchup",
        "npm-restart",
        &["saved by yjs"],
    )
    .await;
    assert_eq!(result["text"], "saved by yjs");
}

/// A stock client's edit on top of text the server has not seen (it came
/// from another tab) is not left half-applied: the server asks again with
/// sync step 1, the npm client answers with step 2, and both parts arrive.
#[tokio::test]
async fn a_stock_client_is_asked_for_what_its_edit_refers_to() {
    let server = TestServer::start().await;
    let result = run_scenario(&base_url(server.addr), "relayed", "npm-relayed", &[]).await;
    assert_eq!(
        result["text"].as_str().unwrap(),
        "from another tab, typed after it"
    );
    let snapshot = http::get(server.addr, "/api/docs/npm-relayed/snapshot?format=text").await;
    assert_eq!(snapshot.text(), "from another tab, typed after it");
}
