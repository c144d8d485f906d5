//! The HTTP API and the command line on the data folder.

use quire_tests::http::{self, request};
use quire_tests::process::run_cli;
use quire_tests::{Client, ServerProcess, TestServer};
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, GetString, Map, ReadTxn, Text, Transact, Update, WriteTxn};

/// A client document with a text, a map and an array, like a real app.
async fn rich_document(server: &TestServer, doc: &str) -> Client {
    let mut client = Client::connect_synced(server.ws_url(doc)).await;
    client.push("Hello from the editor");
    let update = {
        let mut txn = client.doc.transact_mut();
        let meta = txn.get_or_insert_map("meta");
        meta.insert(&mut txn, "title", "Minutes");
        let items = txn.get_or_insert_array("items");
        items.push_back(&mut txn, "first");
        items.push_back(&mut txn, 2);
        txn.encode_update_v1()
    };
    client.send_update(&update);
    client
}

#[tokio::test]
async fn snapshot_equals_what_clients_see_in_every_format() {
    let server = TestServer::start().await;
    let _editor = rich_document(&server, "minutes").await;
    let mut viewer = Client::connect_synced(server.ws_url("minutes")).await;
    viewer
        .wait_until("the map arrived", |c| {
            c.doc.transact().get_map("meta").is_some() && c.text() == "Hello from the editor"
        })
        .await;

    let text = http::get(server.addr, "/api/docs/minutes/snapshot?format=text").await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(text.text(), viewer.text());

    let exported = http::get(server.addr, "/api/docs/minutes/snapshot?format=json")
        .await
        .json();
    assert_eq!(
        exported,
        json!({"content": "Hello from the editor", "meta": {"title": "Minutes"}, "items": ["first", 2]})
    );

    let yjs = http::get(server.addr, "/api/docs/minutes/snapshot").await;
    assert_eq!(yjs.status, 200, "yjs is the default format");
    assert!(
        yjs.header("content-disposition")
            .unwrap()
            .contains("minutes.yjs")
    );
    let copy = Doc::new();
    copy.transact_mut()
        .apply_update(Update::decode_v1(&yjs.body).unwrap())
        .unwrap();
    let txn = copy.transact();
    assert_eq!(
        txn.get_text("content").unwrap().get_string(&txn),
        viewer.text()
    );
    assert_eq!(txn.get_array("items").unwrap().len(&txn), 2);

    // After the room is gone, the export comes from disk and is the same.
    drop(txn);
    drop(_editor);
    drop(viewer);
    assert!(quire_tests::eventually(|| server.live_rooms() == 0).await);
    let from_disk = http::get(server.addr, "/api/docs/minutes/snapshot?format=json")
        .await
        .json();
    assert_eq!(from_disk, exported);
}

#[tokio::test]
async fn import_merges_and_never_replaces() {
    let server = TestServer::start().await;
    let mut editor = Client::connect_synced(server.ws_url("merge")).await;
    editor.push("kept. ");

    // An update made elsewhere, by a document that never saw "kept. ".
    let outside = Doc::new();
    let update = {
        let text = outside.get_or_insert_text("content");
        let mut txn = outside.transact_mut();
        text.insert(&mut txn, 0, "imported. ");
        txn.encode_update_v1()
    };
    let response = request(server.addr, "PUT", "/api/docs/merge/snapshot", &update).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"changed": true}));
    editor
        .wait_until("the import reaches the editor", |c| {
            c.text().len() == "kept. imported. ".len()
        })
        .await;
    let text = editor.text();
    assert!(
        text.contains("kept. ") && text.contains("imported. "),
        "{text}"
    );

    // Importing the same update again changes nothing.
    let again = request(server.addr, "PUT", "/api/docs/merge/snapshot", &update).await;
    assert_eq!(again.json(), json!({"changed": false}));

    // Garbage is refused and nothing changes.
    let before = http::get(server.addr, "/api/docs/merge/snapshot?format=text")
        .await
        .text();
    let bad = request(
        server.addr,
        "PUT",
        "/api/docs/merge/snapshot",
        b"\x01\x02garbage",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    assert_eq!(
        http::get(server.addr, "/api/docs/merge/snapshot?format=text")
            .await
            .text(),
        before
    );

    // Import into a document nobody has open creates it.
    let fresh = request(server.addr, "PUT", "/api/docs/brand-new/snapshot", &update).await;
    assert_eq!(fresh.status, 200);
    let text = http::get(server.addr, "/api/docs/brand-new/snapshot?format=text").await;
    assert_eq!(text.text(), "imported. ");
}

#[tokio::test]
async fn list_shows_documents_with_size_time_and_connections() {
    let server = TestServer::start().await;
    let mut a = Client::connect_synced(server.ws_url("alpha")).await;
    a.push("some text");
    let mut b = Client::connect_synced(server.ws_url("alpha")).await;
    // Once relayed, the edit is stored (the room stores before it relays).
    b.wait_text("some text").await;
    let mut c = Client::connect_synced(server.ws_url("beta")).await;
    c.push("x");
    let mut watcher = Client::connect_synced(server.ws_url("beta")).await;
    watcher.wait_text("x").await;
    let _idle = Client::connect_synced(server.ws_url("gamma")).await;

    let list = http::get(server.addr, "/api/docs").await.json();
    let rows = list.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["alpha", "beta", "gamma"],
        "open but unwritten documents are listed too"
    );
    let alpha = &rows[0];
    assert_eq!(alpha["connections"], 2);
    assert!(alpha["bytes"].as_u64().unwrap() > 0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let modified = alpha["modified_ms"].as_u64().unwrap();
    assert!(
        modified <= now_ms && now_ms - modified < 60_000,
        "modified {modified}, now {now_ms}"
    );
    assert_eq!(rows[1]["connections"], 2);
    assert_eq!(rows[2]["bytes"], 0);
}

#[tokio::test]
async fn delete_closes_connections_with_4404_and_forgets_the_document() {
    let server = TestServer::start().await;
    let mut editor = Client::connect_synced(server.ws_url("doomed")).await;
    editor.push("soon gone");
    let mut watcher = Client::connect_synced(server.ws_url("doomed")).await;
    watcher.wait_text("soon gone").await;

    let response = request(server.addr, "DELETE", "/api/docs/doomed", &[]).await;
    assert_eq!(response.status, 204);
    assert_eq!(editor.wait_closed().await.0, 4404);
    assert_eq!(watcher.wait_closed().await.0, 4404);
    assert_eq!(
        http::get(server.addr, "/api/docs/doomed/snapshot")
            .await
            .status,
        404
    );
    assert_eq!(http::get(server.addr, "/api/docs").await.json(), json!([]));

    // The name can be used again, from scratch.
    let fresh = Client::connect_synced(server.ws_url("doomed")).await;
    assert_eq!(fresh.text(), "");
    assert_eq!(
        request(server.addr, "DELETE", "/api/docs/never-was", &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let server = TestServer::start().await;
    let missing = http::get(server.addr, "/api/docs/nothing-here/snapshot?format=text").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing-here")
    );

    let mut client = Client::connect_synced(server.ws_url("present")).await;
    client.push("hi");
    let mut other = Client::connect_synced(server.ws_url("present")).await;
    other.wait_text("hi").await;
    let bad_format = http::get(server.addr, "/api/docs/present/snapshot?format=pdf").await;
    assert_eq!(bad_format.status, 400);
    assert!(
        bad_format.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pdf")
    );

    let bad_name = http::get(server.addr, "/api/docs/a..b/snapshot").await;
    assert_eq!(bad_name.status, 400);
    assert_eq!(bad_name.json()["error"]["code"], "bad_request");
}

/// What axum's extractors refuse gets the same JSON body as every other
/// error: an upload over `--max-message-bytes`, a path that is not UTF-8,
/// a query that does not parse.
#[tokio::test]
async fn refused_requests_get_the_json_error_body_too() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1_000).await;
    let too_large = request(
        server.addr,
        "PUT",
        "/api/docs/big/snapshot",
        &vec![0; 2_000],
    )
    .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["error"]["code"], "too_large");

    let not_utf8 = http::get(server.addr, "/api/docs/%FF/snapshot").await;
    assert_eq!(not_utf8.status, 400);
    assert_eq!(not_utf8.json()["error"]["code"], "bad_request");

    let twice = http::get(server.addr, "/api/docs/x/snapshot?format=text&format=json").await;
    assert_eq!(twice.status, 400);
    assert_eq!(twice.json()["error"]["code"], "bad_request");
    assert!(
        !twice.json()["error"]["message"]
            .as_str()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let server = TestServer::start().await;
    let health = http::get(server.addr, "/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));

    let mut a = Client::connect_synced(server.ws_url("metered")).await;
    a.push("abc");
    let mut b = Client::connect_synced(server.ws_url("metered")).await;
    b.wait_text("abc").await;
    let metrics = http::get(server.addr, "/metrics").await.text();
    for line in [
        "quire_connections 2",
        "quire_rooms 1",
        "quire_updates_in_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    for name in [
        "quire_bytes_in_total",
        "quire_bytes_out_total",
        "quire_messages_out_total",
        "quire_persist_batch_size_bucket",
        "quire_persist_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
}

#[tokio::test]
async fn the_command_line_lists_exports_and_imports_on_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    let mut client = Client::connect_synced(server.ws_url("cli-doc")).await;
    client.push("written online");
    let mut other = Client::connect_synced(server.ws_url("cli-doc")).await;
    other.wait_text("written online").await;

    // While the server runs, the folder is locked and the CLI says so.
    let (status, _, stderr) = run_cli(dir.path(), &["ls"]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another Quire process"),
        "{stderr}"
    );

    assert!(server.terminate().await.success());
    let (status, stdout, _) = run_cli(dir.path(), &["ls"]).await;
    assert!(status.success());
    let listing = String::from_utf8(stdout).unwrap();
    assert!(listing.starts_with("cli-doc\t"), "{listing}");

    let (status, stdout, stderr) =
        run_cli(dir.path(), &["export", "cli-doc", "--format", "text"]).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, b"written online");

    let out = dir.path().join("copy.json");
    let (status, _, stderr) = run_cli(
        dir.path(),
        &[
            "export",
            "cli-doc",
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json, json!({"content": "written online"}));

    // Import an update made elsewhere; it merges with what is there.
    let outside = Doc::new();
    let update = {
        let text = outside.get_or_insert_text("content");
        let mut txn = outside.transact_mut();
        text.insert(&mut txn, 0, "offline note. ");
        txn.encode_update_v1()
    };
    let file = dir.path().join("note.yjs");
    std::fs::write(&file, update).unwrap();
    let (status, _, stderr) =
        run_cli(dir.path(), &["import", "cli-doc", file.to_str().unwrap()]).await;
    assert!(status.success(), "{stderr}");

    let (status, _, stderr) = run_cli(dir.path(), &["export", "nope", "--format", "text"]).await;
    assert!(
        !status.success() && stderr.contains("no document named"),
        "{stderr}"
    );

    let server = ServerProcess::start(dir.path(), 0, &[]).await;
    let reader = Client::connect_synced(server.ws_url("cli-doc")).await;
    let text = reader.text();
    assert_eq!(text.len(), "offline note. written online".len());
    assert!(
        text.contains("offline note. ") && text.contains("written online"),
        "{text}"
    );
}

#[tokio::test]
async fn quire_cat_prints_a_live_document_and_watch_follows_its_changes() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let server = TestServer::start().await;
    let mut editor = Client::connect_synced(server.ws_url("live%20notes")).await;
    editor.push("first line\n");
    let mut watcher = Client::connect_synced(server.ws_url("live%20notes")).await;
    watcher.wait_text("first line\n").await;
    let base = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().unwrap();

    let (status, stdout, stderr) = run_cli(dir.path(), &["cat", &base, "live notes"]).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, b"first line\n");

    let mut watch = tokio::process::Command::new(quire_tests::process::quire_binary())
        .args(["watch", &base, "live notes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(quire_tests::WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("--- live changes") {
                // The watcher is synced and observing: now edit.
                editor.push("second line");
            }
            let done = line.contains("second line");
            seen.push(line);
            if done {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("watch did not show the edit; it printed {seen:?}"));
    assert_eq!(seen[0], "first line");
    assert_eq!(seen.last().unwrap(), "@11 +\"second line\"");
    watch.kill().await.unwrap();

    let (status, _, stderr) = run_cli(dir.path(), &["cat", &base, "a..b"]).await;
    assert!(!status.success() && stderr.contains(".."), "{stderr}");
}

#[tokio::test]
async fn the_web_app_is_served_with_the_right_caching() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir(site.path().join("assets")).unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><title>Quire app</title>",
    )
    .unwrap();
    std::fs::write(site.path().join("sw.js"), "// worker").unwrap();
    std::fs::write(site.path().join("assets/quire-0123abcd.js"), "export {}").unwrap();
    let dir = site.path().to_owned();
    let server = TestServer::start_with(move |c| c.static_dir = Some(dir)).await;

    for path in ["/", "/d/some%20doc", "/d/other"] {
        let page = http::get(server.addr, path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text().contains("Quire app"), "{path}");
        assert_eq!(page.header("cache-control"), Some("no-cache"), "{path}");
    }
    let worker = http::get(server.addr, "/sw.js").await;
    assert_eq!(
        (worker.status, worker.header("cache-control")),
        (200, Some("no-cache"))
    );
    let asset = http::get(server.addr, "/assets/quire-0123abcd.js").await;
    assert_eq!(asset.status, 200);
    assert_eq!(
        asset.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        http::get(server.addr, "/assets/missing.js").await.status,
        404
    );
    // The API and rooms still work next to the app.
    assert_eq!(http::get(server.addr, "/api/docs").await.status, 200);
    let _room = Client::connect_synced(server.ws_url("beside-the-app")).await;

    // Without a built app, / says how to get one.
    let bare = TestServer::start().await;
    let page = http::get(bare.addr, "/").await;
    assert!(page.text().contains("cargo xtask serve"));
}

#[tokio::test]
async fn responses_are_compressed_for_clients_that_ask() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut editor = Client::connect_synced(server.ws_url("squeeze")).await;
    editor.push(&"compressible text ".repeat(2000));
    let mut other = Client::connect_synced(server.ws_url("squeeze")).await;
    other
        .wait_until("synced", |c| c.text().len() > 30_000)
        .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/docs/squeeze/snapshot?format=text HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let head =
        String::from_utf8_lossy(&raw[..raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap()])
            .to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        raw.len() < 10_000,
        "36 KB of text compressed to {} bytes",
        raw.len()
    );
}
