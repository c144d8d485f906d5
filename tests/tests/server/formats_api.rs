//! Documents in and out (issue 13): exports as Markdown, HTML, text, JSON
//! and Yjs; imports of Markdown, HTML and text through `PUT` and `POST`;
//! the same from the command line on a data folder.

use quire_protocol::rich::html::to_html;
use quire_protocol::rich::json::{self, Node};
use quire_protocol::rich::markdown::{from_markdown, to_markdown};
use quire_protocol::rich::{FRAGMENT, plain_text};
use quire_tests::http::{self, request_with};
use quire_tests::process::run_cli;
use quire_tests::{Client, TestServer};
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update, XmlFragment};

/// A document with every node and mark, as Markdown.
const SAMPLE: &str = "# Minutes\n\n\
Some **bold**, *italic*, ~~struck~~, <u>underlined</u> and `code` text with a \
[link](https://example.com/a).\\\nAfter a break.\n\n\
3. third\n\n   - nested\n4. fourth\n\n\
> quoted\n\n\
````rust\nlet fence = \"```\";\n````\n\n---\n\nThe end.\n";

/// `doc` as it reads back from a yrs document: null attrs are never
/// written (as y-prosemirror does), so they do not come back.
fn as_stored(mut doc: Node) -> Node {
    doc.attrs.retain(|_, v| !v.is_null());
    doc.content = doc.content.into_iter().map(as_stored).collect();
    doc
}

fn md(src: &str) -> Node {
    as_stored(from_markdown(src))
}

/// What a client sees of the fragment.
fn fragment_of(client: &Client) -> Node {
    let txn = client.doc.transact();
    match txn.get_xml_fragment(FRAGMENT) {
        Some(fragment) => json::read_fragment(&txn, &fragment),
        None => Node::doc(Vec::new()),
    }
}

/// An editor that writes `doc` into `default` and sends it.
async fn write_rich(server: &TestServer, name: &str, doc: &Node) -> Client {
    let client = Client::connect_synced(server.ws_url(&segment(name))).await;
    let update = {
        let fragment = client.doc.get_or_insert_xml_fragment(FRAGMENT);
        let mut txn = client.doc.transact_mut();
        let at = fragment.len(&txn);
        json::write(&mut txn, &fragment, at, &doc.content);
        txn.encode_update_v1()
    };
    client.send_update(&update);
    client
}

/// `doc` as a URL path segment.
fn segment(doc: &str) -> String {
    doc.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn path(doc: &str, rest: &str) -> String {
    format!("/api/docs/{}{rest}", segment(doc))
}

async fn put(server: &TestServer, doc: &str, content_type: &str, body: &[u8]) -> http::Response {
    request_with(
        server.addr,
        "PUT",
        &path(doc, "/snapshot"),
        &[("content-type", content_type)],
        body,
    )
    .await
}

async fn post(server: &TestServer, query: &str, content_type: &str, body: &[u8]) -> http::Response {
    request_with(
        server.addr,
        "POST",
        &format!("/api/docs{query}"),
        &[("content-type", content_type)],
        body,
    )
    .await
}

/// The stored document, through the Yjs export.
async fn stored(server: &TestServer, doc: &str) -> Doc {
    let yjs = http::get(server.addr, &path(doc, "/snapshot?format=yjs")).await;
    assert_eq!(yjs.status, 200, "{}", yjs.text());
    let copy = Doc::new();
    copy.transact_mut()
        .apply_update(Update::decode_v1(&yjs.body).unwrap())
        .unwrap();
    copy
}

fn stored_fragment(doc: &Doc) -> Node {
    let txn = doc.transact();
    json::read_fragment(
        &txn,
        &txn.get_xml_fragment(FRAGMENT).expect("a rich document"),
    )
}

#[tokio::test]
async fn every_format_exports_what_an_editor_wrote() {
    let server = TestServer::start().await;
    let name = "Minutes é \"draft\"";
    let written = md(SAMPLE);
    let _editor = write_rich(&server, name, &written).await;
    let mut viewer = Client::connect_synced(server.ws_url(&segment(name))).await;
    viewer
        .wait_until("the document arrived", |c| fragment_of(c) == written)
        .await;

    let expected = [
        ("markdown", "text/markdown; charset=utf-8", "md"),
        ("md", "text/markdown; charset=utf-8", "md"),
        ("html", "text/html; charset=utf-8", "html"),
        ("text", "text/plain; charset=utf-8", "txt"),
        ("json", "application/json", "json"),
        ("yjs", "application/octet-stream", "yjs"),
    ];
    for (format, content_type, extension) in expected {
        let response = http::get(
            server.addr,
            &path(name, &format!("/snapshot?format={format}")),
        )
        .await;
        assert_eq!(response.status, 200, "{format}: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{format}"
        );
        assert_eq!(
            response.header("content-disposition").unwrap(),
            format!(
                "attachment; filename=\"Minutes _ _draft_.{extension}\"; \
                 filename*=UTF-8''Minutes%20%C3%A9%20%22draft%22.{extension}"
            ),
            "{format}"
        );
        let body = response.body;
        match format {
            "markdown" | "md" => {
                assert_eq!(
                    String::from_utf8(body).unwrap(),
                    SAMPLE,
                    "the Markdown round trip"
                )
            }
            "html" => assert_eq!(String::from_utf8(body).unwrap(), to_html(&written, name)),
            "text" => assert_eq!(
                String::from_utf8(body).unwrap(),
                plain_text(&viewer.doc.transact())
            ),
            "json" => {
                let json: Value = serde_json::from_slice(&body).unwrap();
                let default: Node = serde_json::from_value(json["default"].clone()).unwrap();
                assert_eq!(default, fragment_of(&viewer));
                default.check().unwrap();
            }
            _ => {
                let copy = Doc::new();
                copy.transact_mut()
                    .apply_update(Update::decode_v1(&body).unwrap())
                    .unwrap();
                assert_eq!(stored_fragment(&copy), written);
            }
        }
    }
    let unknown = http::get(server.addr, &path(name, "/snapshot?format=pdf")).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"]["code"], "bad_request");
}

#[tokio::test]
async fn imports_become_the_content_of_an_empty_document_and_are_appended_to_others() {
    let server = TestServer::start().await;

    // Into an empty document: the file is the content, and an editor sees it.
    let response = put(
        &server,
        "notes",
        "text/markdown; charset=UTF-8",
        SAMPLE.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"changed": true}));
    let mut editor = Client::connect_synced(server.ws_url("notes")).await;
    editor
        .wait_until("the imported document", |c| fragment_of(c) == md(SAMPLE))
        .await;

    // Into a document with content: appended after its last block, merged
    // with what the editor has, which it then sees.
    let html = "<h2>Appendix</h2><p>From <em>HTML</em></p>";
    let response = put(&server, "notes", "text/html", html.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let text = put(
        &server,
        "notes",
        "text/plain;charset=utf-8",
        b"line one\nline two",
    )
    .await;
    assert_eq!(text.status, 200, "{}", text.text());
    let mut expected = md(SAMPLE);
    expected
        .content
        .extend(md("## Appendix\n\nFrom *HTML*\n\nline one\n\nline two\n").content);
    editor
        .wait_until("both imports, after the document", |c| {
            fragment_of(c) == expected
        })
        .await;
    let markdown = http::get(server.addr, "/api/docs/notes/snapshot?format=markdown")
        .await
        .text();
    assert!(
        markdown.ends_with("The end.\n\n## Appendix\n\nFrom *HTML*\n\nline one\n\nline two\n"),
        "{markdown}"
    );

    // An editor's concurrent edit and an import both survive.
    let update = {
        let fragment = editor.doc.get_or_insert_xml_fragment(FRAGMENT);
        let mut txn = editor.doc.transact_mut();
        json::write(
            &mut txn,
            &fragment,
            0,
            &from_markdown("Typed first.\n").content,
        );
        txn.encode_update_v1()
    };
    editor.send_update(&update);
    let response = put(&server, "notes", "text/markdown", b"Imported last.\n").await;
    assert_eq!(response.status, 200);
    editor
        .wait_until("the edit and the import", |c| {
            let text = plain_text(&c.doc.transact());
            text.starts_with("Typed first.\nMinutes") && text.ends_with("line two\nImported last.")
        })
        .await;
}

#[tokio::test]
async fn a_plain_text_document_gets_the_text_of_an_import_on_new_lines() {
    let server = TestServer::start().await;
    let mut editor = Client::connect_synced(server.ws_url("plain")).await;
    editor.push("typed in a textarea");
    let mut other = Client::connect_synced(server.ws_url("plain")).await;
    other.wait_text("typed in a textarea").await;

    let response = put(&server, "plain", "text/markdown", b"# Title\n\n- *item*\n").await;
    assert_eq!(response.status, 200, "{}", response.text());
    editor.wait_text("typed in a textarea\nTitle\nitem").await;
    let stored = stored(&server, "plain").await;
    let txn = stored.transact();
    assert!(
        txn.get_xml_fragment(FRAGMENT)
            .is_none_or(|f| f.len(&txn) == 0),
        "the document stays plain text"
    );
    assert_eq!(
        txn.get_text("content").unwrap().get_string(&txn),
        "typed in a textarea\nTitle\nitem"
    );
}

#[tokio::test]
async fn unknown_types_are_415_and_nothing_changes() {
    let server = TestServer::start().await;
    let response = put(&server, "doc", "application/pdf", b"%PDF-1.7").await;
    assert_eq!(response.status, 415);
    assert_eq!(response.json()["error"]["code"], "unsupported_media_type");
    let created = post(&server, "?name=doc", "image/png", b"png").await;
    assert_eq!(created.status, 415);
    assert_eq!(created.json()["error"]["code"], "unsupported_media_type");
    assert_eq!(http::get(server.addr, "/api/docs").await.json(), json!([]));
    let not_utf8 = put(&server, "doc", "text/plain", &[0xff, 0xfe, 0x00]).await;
    assert_eq!(not_utf8.status, 400);
}

#[tokio::test]
async fn bodies_over_the_message_limit_are_413_before_parsing_and_results_over_the_document_limit_too()
 {
    let server = TestServer::start_with(|config| {
        config.max_message_bytes = 64 * 1024;
        config.max_document_bytes = 16 * 1024;
    })
    .await;
    let huge = "word ".repeat(20_000);
    let response = put(&server, "big", "text/markdown", huge.as_bytes()).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"]["code"], "too_large");
    let created = post(&server, "?name=big", "text/html", huge.as_bytes()).await;
    assert_eq!(created.status, 413);

    // Under the message limit, but the document would pass its limit.
    let paragraphs = "A paragraph of text.\n\n".repeat(2_000);
    assert!(paragraphs.len() < 64 * 1024);
    let response = put(&server, "big", "text/markdown", paragraphs.as_bytes()).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "too_large");
    let export = http::get(server.addr, "/api/docs/big/snapshot?format=text").await;
    assert!(
        export.status == 404 || export.text().is_empty(),
        "nothing was stored: {} {}",
        export.status,
        export.text()
    );
}

#[tokio::test]
async fn post_creates_a_document_once() {
    let server = TestServer::start().await;
    let created = post(
        &server,
        "?name=Report%202026",
        "text/markdown",
        SAMPLE.as_bytes(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json(), json!({"name": "Report 2026"}));
    assert_eq!(created.header("location"), Some("/d/Report%202026"));
    assert_eq!(
        stored_fragment(&stored(&server, "Report 2026").await),
        md(SAMPLE)
    );

    let again = post(&server, "?name=Report%202026", "text/plain", b"other").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "conflict");
    assert_eq!(
        stored_fragment(&stored(&server, "Report 2026").await),
        md(SAMPLE),
        "a refused create changes nothing"
    );

    // A document open in an editor but never written is taken too.
    let _open = Client::connect_synced(server.ws_url("open")).await;
    assert_eq!(
        post(&server, "?name=open", "text/plain", b"x").await.status,
        409
    );

    // A refused create leaves the name free.
    let garbage = post(
        &server,
        "?name=retry",
        "application/octet-stream",
        b"\x01\x02no",
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(
        post(&server, "?name=retry", "text/plain", b"x")
            .await
            .status,
        201
    );

    let nameless = post(&server, "", "text/plain", b"x").await;
    assert_eq!(nameless.status, 400);
    assert_eq!(nameless.json()["error"]["code"], "bad_request");
    assert_eq!(
        post(&server, "?name=", "text/plain", b"x").await.status,
        400
    );
}

#[tokio::test]
async fn of_concurrent_posts_of_one_name_exactly_one_creates() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let attempts: Vec<_> = (0..8)
        .map(|n| {
            tokio::spawn(async move {
                let body = format!("attempt {n}\n");
                request_with(
                    addr,
                    "POST",
                    "/api/docs?name=race",
                    &[("content-type", "text/markdown")],
                    body.as_bytes(),
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap().status);
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let text = http::get(server.addr, "/api/docs/race/snapshot?format=text")
        .await
        .text();
    assert!(
        text.starts_with("attempt ") && !text.contains('\n'),
        "one import: {text:?}"
    );
}

#[tokio::test]
async fn hostile_html_leaves_no_script_handler_or_javascript_url_in_the_stored_document() {
    let server = TestServer::start().await;
    let html = r#"<html><head><title>t</title><style>p{color:red}</style><script>alert(1)</script></head>
<body onload="alert(1)"><p>Safe <a href="java&#09;script:alert(1)">one</a>
<a href=" javascript:alert(2)">two</a> <a href="https://ok.example/">three</a></p>
<img src=x onerror="alert(3)"><svg><script>alert(4)</script></svg>
<iframe src="javascript:alert(5)"></iframe><template><script>alert(6)</script></template>
<div style="background:url(javascript:alert(7))" onclick="alert(8)">end</div></body></html>"#;
    let response = put(&server, "xss", "text/html", html.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let stored = stored(&server, "xss").await;
    let xml = {
        let txn = stored.transact();
        txn.get_xml_fragment(FRAGMENT).unwrap().get_string(&txn)
    };
    let json = serde_json::to_string(&stored_fragment(&stored)).unwrap();
    for everything in [&xml, &json] {
        let lower = everything.to_ascii_lowercase();
        for bad in [
            "script",
            "onerror",
            "onload",
            "onclick",
            "javascript",
            "alert",
            "style",
            "iframe",
            "svg",
        ] {
            assert!(!lower.contains(bad), "{bad:?} in {everything}");
        }
    }
    assert_eq!(plain_text(&stored.transact()), "Safe one two three\nend");
    assert!(
        json.contains("https://ok.example/"),
        "the good link stays: {json}"
    );
}

#[tokio::test]
async fn the_cli_exports_and_imports_every_format_on_a_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = dir.path();
    std::fs::write(files.join("notes.md"), SAMPLE).unwrap();
    std::fs::write(files.join("more.htm"), "<p>From <b>HTML</b></p>").unwrap();
    std::fs::write(files.join("last.txt"), "plain line").unwrap();
    std::fs::write(files.join("odd.bin"), "# Heading").unwrap();

    let run = |args: Vec<String>| {
        let data = data.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&data, &args).await
        }
    };
    let file = |name: &str| files.join(name).display().to_string();

    let (status, stdout, stderr) = run(vec!["import".into(), "cli".into(), file("notes.md")]).await;
    assert!(status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&stdout).contains("imported"));
    let (status, stdout, stderr) = run(vec![
        "export".into(),
        "cli".into(),
        "--format".into(),
        "markdown".into(),
    ])
    .await;
    assert!(status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        SAMPLE,
        "Markdown round trip"
    );

    for name in ["more.htm", "last.txt"] {
        let (status, _, stderr) = run(vec!["import".into(), "cli".into(), file(name)]).await;
        assert!(status.success(), "{name}: {stderr}");
    }
    let (status, _, stderr) = run(vec!["import".into(), "cli".into(), file("odd.bin")]).await;
    assert!(!status.success());
    assert!(stderr.contains("--format"), "{stderr}");
    let (status, _, stderr) = run(vec![
        "import".into(),
        "cli".into(),
        file("odd.bin"),
        "--format".into(),
        "md".into(),
    ])
    .await;
    assert!(status.success(), "{stderr}");

    let out = files.join("cli.html");
    let (status, _, stderr) = run(vec![
        "export".into(),
        "cli".into(),
        "--format".into(),
        "html".into(),
        "--out".into(),
        out.display().to_string(),
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("<title>cli</title>"));
    assert!(
        html.contains("<p>From <strong>HTML</strong></p>\n<p>plain line</p>\n<h1>Heading</h1>"),
        "{html}"
    );
    let (status, text, _) = run(vec!["export".into(), "cli".into()]).await;
    assert!(status.success());
    assert!(
        String::from_utf8(text)
            .unwrap()
            .ends_with("The end.\nFrom HTML\nplain line\nHeading")
    );
    for (format, check) in [("json", "\"default\""), ("yjs", "")] {
        let (status, bytes, stderr) = run(vec![
            "export".into(),
            "cli".into(),
            "--format".into(),
            format.into(),
        ])
        .await;
        assert!(status.success(), "{format}: {stderr}");
        assert!(!bytes.is_empty());
        assert!(String::from_utf8_lossy(&bytes).contains(check));
    }

    // What the CLI wrote, a server serves.
    let server = TestServer::start_in(data.clone(), |_| {}).await;
    let markdown = http::get(server.addr, "/api/docs/cli/snapshot?format=md")
        .await
        .text();
    assert!(markdown.starts_with(SAMPLE), "{markdown}");
    assert_eq!(to_markdown(&from_markdown(&markdown)), markdown);
}

#[tokio::test]
async fn what_imports_write_tiptap_reads_as_valid_starter_kit_content() {
    let server = TestServer::start().await;
    let html = "<h3>From HTML</h3><ul><li>item<ol start=\"2\"><li><p>inner</p></li></ol></li>stray</ul>\
                <blockquote>q<pre><code class=\"language-js\">x()</code></pre></blockquote>\
                <p><a href=\"https://a.example/\"><b>bold link</b></a><br><u>u</u><s>s</s><code>c</code></p>";
    for (content_type, body) in [
        ("text/markdown", SAMPLE.as_bytes()),
        ("text/html", html.as_bytes()),
        ("text/plain", b"one\n\nthree".as_slice()),
    ] {
        let response = put(&server, "tiptap", content_type, body).await;
        assert_eq!(response.status, 200, "{content_type}: {}", response.text());
    }
    // The npm scenario reads the fragment with y-prosemirror and checks it
    // with `schema.nodeFromJSON(json).check()` (StarterKit 3.x).
    let read = quire_tests::browser::rich_scenario(
        &format!("ws://{}/ws", server.addr),
        "read",
        "tiptap",
        "",
    )
    .await;
    let ours = stored_fragment(&stored(&server, "tiptap").await);
    let theirs: Node = serde_json::from_value(read["json"].clone()).unwrap();
    assert_eq!(theirs.content.len(), ours.content.len());
    assert_eq!(
        plain_text_of(&theirs),
        plain_text_of(&ours),
        "Tiptap reads the same text"
    );
}

fn plain_text_of(doc: &Node) -> String {
    quire_protocol::rich::node_text(doc)
}
