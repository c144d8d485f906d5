//! Documents in and out of the web app (issue 13): the Export menu's
//! downloads equal what the editor shows, from the server or, when it
//! cannot be reached, from the browser's own copy; files imported from
//! the home page's picker or dropped on its list open as new documents;
//! refused imports say why.

use quire_protocol::rich::Node;
use quire_tests::TestServer;
use quire_tests::browser::{Browser, web_dist};
use quire_tests::http;
use serde_json::{Value, json};

use crate::support::*;

/// A heading, a bullet list with bold text and a link.
fn plan() -> Node {
    serde_json::from_value(json!({
        "type": "doc",
        "content": [
            {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Plan"}]},
            {"type": "bulletList", "content": [
                {"type": "listItem", "content": [{"type": "paragraph", "content": [
                    {"type": "text", "text": "bold", "marks": [{"type": "bold"}]},
                    {"type": "text", "text": " and "},
                    {"type": "text", "text": "link", "marks": [{"type": "link", "attrs": {"href": "https://example.com/"}}]}
                ]}]},
                {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "second"}]}]}
            ]}
        ]
    }))
    .expect("a ProseMirror document")
}

/// Records every download the page starts (its file name and content).
async fn catch_downloads(browser: &Browser) {
    browser
        .js(
            "window.__downloads = []; const blobs = new Map();\
             const create = URL.createObjectURL; URL.createObjectURL = (b) => { const u = create(b); blobs.set(u, b); return u; };\
             const click = HTMLAnchorElement.prototype.click;\
             HTMLAnchorElement.prototype.click = function () { if (this.download) window.__downloads.push({ name: this.download, blob: blobs.get(this.href) }); return click.call(this); };\
             return true",
            vec![],
        )
        .await;
}

/// Chooses `format` in the Export menu; the downloaded file's name and text.
async fn export(browser: &Browser, format: &str) -> (String, String) {
    let before = browser
        .js("return window.__downloads.length", vec![])
        .await
        .as_u64()
        .unwrap();
    browser.find("#export-button").await.click().await.unwrap();
    browser
        .find(&format!("#export-{format}"))
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_js(
            &format!("the {format} download"),
            &format!("return window.__downloads.length > {before}"),
        )
        .await;
    let file = browser
        .driver
        .execute_async(
            "const done = arguments[arguments.length - 1]; const d = window.__downloads[window.__downloads.length - 1];\
             d.blob.text().then((text) => done([d.name, text]))",
            vec![],
        )
        .await
        .unwrap();
    (
        file[0].as_str().unwrap().to_owned(),
        file[1].as_str().unwrap().to_owned(),
    )
}

const PLAN_MD: &str = "# Plan for today\n\n- **bold** and [link](https://example.com/)\n- second\n";

#[tokio::test]
async fn the_export_menu_downloads_markdown_and_html_equal_to_the_editor() {
    let server = app_server().await;
    seed(&server, "plan", &plan()).await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    open_editor(&browser, &base, "plan", "Writer").await;
    wait_text(
        &browser,
        "the seeded document shows",
        "Plan\nbold and link\nsecond",
    )
    .await;
    // An edit made in the editor is in the export too.
    type_at(&browser, Some(4), " for today").await;
    wait_status(&browser, "All changes saved").await;
    catch_downloads(&browser).await;

    let (name, markdown) = export(&browser, "md").await;
    assert_eq!(name, "plan.md");
    assert_eq!(markdown, PLAN_MD);

    let (name, html) = export(&browser, "html").await;
    assert_eq!(name, "plan.html");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<title>plan</title>"), "{html}");
    let editor = editor_html(&browser).await;
    for fragment in [
        "<h1>Plan for today</h1>",
        "<strong>bold</strong>",
        "href=\"https://example.com/\"",
        "<li><p>second</p>",
    ] {
        assert!(html.contains(fragment), "{fragment} in {html}");
        assert!(
            editor.contains(fragment.trim_start_matches("<li><p>")),
            "{fragment} in the editor: {editor}"
        );
    }

    let (name, text) = export(&browser, "txt").await;
    assert_eq!(name, "plan.txt");
    assert_eq!(text, editor_text(&browser).await);

    let (name, exported) = export(&browser, "json").await;
    assert_eq!(name, "plan.json");
    let exported: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(
        exported["default"]["content"][0]["content"][0]["text"],
        "Plan for today"
    );
    browser.screenshot("export-markdown").await;
    browser.close().await;
}

#[tokio::test]
async fn without_the_server_the_export_is_the_browsers_copy() {
    let mut server = app_server().await;
    seed(&server, "trip", &plan()).await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    open_editor(&browser, &base, "trip", "Traveller").await;
    type_at(&browser, Some(4), " for today").await;
    wait_status(&browser, "All changes saved").await;
    server.stop().await;
    wait_js(
        &browser,
        "the tab notices it is offline",
        "return !document.querySelector('#status').textContent.includes('saved')",
    )
    .await;
    catch_downloads(&browser).await;

    let (name, markdown) = export(&browser, "md").await;
    assert_eq!(name, "trip.md");
    assert_eq!(markdown, PLAN_MD);
    browser
        .wait_js(
            "the user is told it is this browser's copy",
            "return document.body.textContent.includes('Exported this browser’s copy')",
        )
        .await;
    let (_, html) = export(&browser, "html").await;
    assert!(html.contains("<h1>Plan for today</h1>"), "{html}");
    assert!(html.contains("<title>trip</title>"), "{html}");
    let (_, text) = export(&browser, "txt").await;
    assert_eq!(text, "Plan for today\nbold and link\nsecond");
    let (_, exported) = export(&browser, "json").await;
    let exported: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported["default"]["type"], "doc");
    browser.close().await;
}

/// Writes `files` (name, content) into a fresh folder; their paths.
fn write_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = files
        .iter()
        .map(|(name, content)| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path.display().to_string()
        })
        .collect();
    (dir, paths)
}

const MINUTES_MD: &str =
    "# Minutes\n\n- **Decided**: ship it\n- see [notes](https://example.com/n)\n";

#[tokio::test]
async fn a_file_picked_for_import_opens_as_a_new_document_and_a_taken_name_gets_a_number() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    let (_dir, paths) = write_files(&[("Meeting notes.md", MINUTES_MD)]);
    for (attempt, doc) in ["Meeting notes", "Meeting notes-2"].into_iter().enumerate() {
        browser.open(&base).await;
        browser.find("#import-button").await;
        browser
            .find("#import-file")
            .await
            .send_keys(&paths[0])
            .await
            .expect("choose the file");
        let path = format!("/d/{}", doc.replace(' ', "%20"));
        browser
            .wait_js(
                &format!("import {attempt} opens {doc}"),
                &format!(
                    "return location.pathname === {} && !!document.querySelector('#editor')",
                    json!(path)
                ),
            )
            .await;
        wait_text(
            &browser,
            "the imported content shows",
            "Minutes\nDecided: ship it\nsee notes",
        )
        .await;
        let html = editor_html(&browser).await;
        assert!(html.contains("<h1>Minutes</h1>"), "{html}");
        assert!(html.contains("<strong>Decided</strong>"), "{html}");
        assert!(html.contains("href=\"https://example.com/n\""), "{html}");
        let stored = http::get(
            server.addr,
            &format!(
                "/api/docs/{}/snapshot?format=markdown",
                doc.replace(' ', "%20")
            ),
        )
        .await;
        assert_eq!(stored.text(), MINUTES_MD);
    }
    browser.screenshot("import-picked").await;
    browser.close().await;
}

/// Drops `files` (name, type, content) on the home page's document list.
async fn drop_files(browser: &Browser, files: Value) {
    browser
        .js(
            "const dt = new DataTransfer();\
             for (const [name, type, text] of arguments[0]) dt.items.add(new File([text], name, { type }));\
             const list = document.querySelector('section.list');\
             const over = new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true });\
             list.dispatchEvent(over);\
             if (!over.defaultPrevented) throw new Error('the list does not accept files');\
             list.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));\
             return true",
            vec![files],
        )
        .await;
}

#[tokio::test]
async fn files_dropped_on_the_list_are_each_imported_and_the_last_opens() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    browser.open(&base).await;
    browser.find("#doc-list-empty").await;
    drop_files(
        &browser,
        json!([
            [
                "letter.html",
                "text/html",
                "<h2>Dear reader</h2><p>Hello <em>there</em><script>alert(1)</script></p>"
            ],
            ["todo.txt", "text/plain", "milk\neggs"],
        ]),
    )
    .await;
    browser
        .wait_js(
            "the last dropped file opens",
            "return location.pathname === '/d/todo' && !!document.querySelector('#editor')",
        )
        .await;
    wait_text(&browser, "the text file's lines", "milk\neggs").await;
    let letter = stored_json(server.addr, "letter").await;
    assert_eq!(
        show(&letter),
        "<h2>Dear reader</h2><p>Hello <italic>there</italic></p>",
        "the HTML file's heading and marks, without its script"
    );
    let docs = http::get(server.addr, "/api/docs").await.json();
    let mut names: Vec<&str> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["letter", "todo"]);
    browser.close().await;
}

#[tokio::test]
async fn a_refused_import_says_why_on_the_home_page() {
    let dist = web_dist();
    let server = TestServer::start_with(move |c| {
        c.static_dir = Some(dist);
        c.max_message_bytes = 64 * 1024;
    })
    .await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    browser.open(&base).await;
    browser.find("#doc-list-empty").await;
    let big = format!("# Big\n\n{}\n", "word ".repeat(20_000));
    drop_files(
        &browser,
        json!([
            ["photo.png", "image/png", "not really a picture"],
            ["big.md", "text/markdown", big],
            ["small.md", "text/markdown", "small *one*"],
        ]),
    )
    .await;
    browser
        .wait_js(
            "the errors are shown",
            "const e = document.querySelector('#action-error'); return !!e && e.textContent.includes('big.md')",
        )
        .await;
    let banner = browser
        .js(
            "return document.querySelector('#action-error').textContent",
            vec![],
        )
        .await;
    let banner = banner.as_str().unwrap();
    assert!(
        banner.contains("“photo.png” is not a file Quire imports"),
        "{banner}"
    );
    assert!(
        banner.contains("Could not import “big.md”: the file is larger than the server accepts"),
        "{banner}"
    );
    assert!(banner.contains("Imported as “small”"), "{banner}");
    assert_eq!(
        browser.js("return location.pathname", vec![]).await,
        json!("/"),
        "the page stays to show what failed"
    );
    let docs = http::get(server.addr, "/api/docs").await.json();
    assert_eq!(docs.as_array().unwrap().len(), 1, "{docs}");
    assert_eq!(
        http::get(server.addr, "/api/docs/big/snapshot?format=text")
            .await
            .status,
        404,
        "nothing of the refused file is stored"
    );
    browser.screenshot("import-refused").await;
    browser.close().await;
}
