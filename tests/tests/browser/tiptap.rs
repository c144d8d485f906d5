//! Quire's editor and Tiptap apps on one document: the npm packages
//! `@tiptap/core` + `@tiptap/starter-kit` (the schema, `getSchema([StarterKit])`)
//! and `y-prosemirror` (the encoding), pinned in `tests/compat`, run in
//! Node through `tests/compat/rich.mjs` while a real browser runs Quire.

use std::time::Duration;

use quire_tests::browser::{Browser, rich_scenario};
use serde_json::{Value, json};

use crate::support::*;

fn ws(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// Compares two ProseMirror JSON documents by content (a mark's attrs may
/// come back from yrs with their keys in another order).
fn same(a: &Value, b: &Value) -> bool {
    a == b
}

#[tokio::test]
async fn a_document_written_by_y_prosemirror_renders_as_the_right_html() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    let written = rich_scenario(&ws(server.addr), "write", "from-tiptap", "sample").await;
    let browser = Browser::start().await;
    open_editor(&browser, &base, "from-tiptap", "Reader").await;
    let expected = concat!(
        "<h1>Project plan</h1>",
        "<p>Plain, <strong>bold</strong>, <em>italic</em>, <u>under</u>, <s>struck</s>, <code>code</code> and ",
        "<a href=\"https://tiptap.dev/\" target=\"_blank\" rel=\"noopener noreferrer nofollow\" title=\"https://tiptap.dev/\">a link</a>",
        "<br>after a break</p>",
        "<h2>Steps</h2>",
        "<ul><li><p>one</p></li><li><p>two</p><ol start=\"3\"><li><p>nested</p></li></ol></li></ul>",
        "<blockquote><p>A quote.</p></blockquote>",
        "<pre data-language=\"js\"><code>let x = 1;\nx += 1;</code></pre>",
        "<hr contenteditable=\"false\">",
        "<p></p>",
    );
    wait_html(
        &browser,
        "the Tiptap document renders as semantic HTML",
        expected,
    )
    .await;
    browser.screenshot("tiptap-document-in-quire").await;
    // What the server stored reads back as exactly what Tiptap wrote.
    let stored = serde_json::to_value(stored_json(server.addr, "from-tiptap").await).unwrap();
    assert!(
        same(&stored, &written["json"]),
        "stored {stored}\n written {}",
        written["json"]
    );
    // Editing it in Quire keeps it a valid Tiptap document.
    js(
        &browser,
        "Q.root().focus(); return Q.select('nested')",
        vec![],
    )
    .await;
    keys(&browser, &ctrl("b")).await;
    js(&browser, "return Q.setCaret(null)", vec![]).await;
    keys(&browser, "typed in Quire").await;
    wait_status(&browser, "All changes saved").await;
    let read = rich_scenario(&ws(server.addr), "read", "from-tiptap", "typed in Quire").await;
    let nested = &read["json"]["content"][3]["content"][1]["content"][1]["content"][0]["content"]
        [0]["content"][0];
    assert_eq!(nested["text"], "nested");
    assert_eq!(nested["marks"], json!([{"type": "bold", "attrs": {}}]));
    browser.close().await;
}

#[tokio::test]
async fn what_a_person_writes_in_quire_is_valid_starter_kit_content() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    open_editor(&browser, &base, "to-tiptap", "Writer").await;
    type_at(&browser, None, "# Minutes").await;
    keys(&browser, ENTER).await;
    keys(&browser, "Agreed: **ship it** on *Friday*, see `deploy.sh`").await;
    keys(&browser, ENTER).await;
    keys(&browser, "- tests").await;
    keys(&browser, ENTER).await;
    keys(&browser, "docs").await;
    keys(&browser, TAB).await;
    keys(&browser, ENTER).await;
    keys(&browser, ENTER).await;
    keys(&browser, ENTER).await;
    keys(&browser, "> quoted").await;
    keys(&browser, ENTER).await;
    keys(&browser, ENTER).await;
    keys(&browser, "---").await;
    keys(&browser, "line").await;
    keys(&browser, SHIFT_ENTER).await;
    keys(&browser, "break").await;
    js(&browser, "return Q.select('Friday')", vec![]).await;
    keys(&browser, &ctrl("k")).await;
    browser
        .find("#link-input")
        .await
        .send_keys("https://cal.example/fri\u{E007}")
        .await
        .unwrap();
    wait_status(&browser, "All changes saved").await;
    let read = rich_scenario(&ws(server.addr), "read", "to-tiptap", "break").await;
    let expected = json!({"type": "doc", "content": [
        {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Minutes"}]},
        {"type": "paragraph", "content": [
            {"type": "text", "text": "Agreed: "},
            {"type": "text", "text": "ship it", "marks": [{"type": "bold", "attrs": {}}]},
            {"type": "text", "text": " on "},
            {"type": "text", "text": "Friday", "marks": [
                {"type": "italic", "attrs": {}},
                {"type": "link", "attrs": {"href": "https://cal.example/fri", "target": "_blank", "rel": "noopener noreferrer nofollow", "class": null, "title": null}}
            ]},
            {"type": "text", "text": ", see "},
            {"type": "text", "text": "deploy.sh", "marks": [{"type": "code", "attrs": {}}]}
        ]},
        {"type": "bulletList", "content": [
            {"type": "listItem", "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "tests"}]},
                {"type": "bulletList", "content": [
                    {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "docs"}]}]}
                ]}
            ]}
        ]},
        {"type": "blockquote", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "quoted"}]}]},
        {"type": "horizontalRule"},
        {"type": "paragraph", "content": [{"type": "text", "text": "line"}, {"type": "hardBreak"}, {"type": "text", "text": "break"}]}
    ]});
    // Marks in any order (ProseMirror sorts them itself).
    let mut got = read["json"].clone();
    let friday = &mut got["content"][1]["content"][3]["marks"];
    if let Some(marks) = friday.as_array_mut() {
        marks.sort_by_key(|m| m["type"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        same(&got, &expected),
        "Tiptap reads:\n{got}\nexpected:\n{expected}"
    );
    browser.screenshot("quire-document-for-tiptap").await;
    browser.close().await;
}

#[tokio::test]
async fn a_tiptap_client_and_the_browser_edit_at_once_and_converge() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    open_editor(&browser, &base, "both-edit", "Quirer").await;
    type_at(&browser, None, "Shared start ").await;
    keys(&browser, ENTER).await;
    keys(&browser, "second").await;
    wait_status(&browser, "All changes saved").await;
    let url = ws(server.addr);
    let tiptap = tokio::spawn(async move { rich_scenario(&url, "edit", "both-edit", "15").await });
    for word in ["one ", "two ", "three "] {
        js(&browser, "return Q.setCaret(null)", vec![]).await;
        keys(&browser, word).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    js(&browser, "return Q.select('second')", vec![]).await;
    keys(&browser, &ctrl("i")).await;
    let tiptap = tiptap.await.expect("the Tiptap client ran");
    wait_status(&browser, "All changes saved").await;
    // Everyone ends with the same document, holding every edit once: the
    // browser has had every Tiptap edit (a condition, not a pause).
    wait_js(
        &browser,
        "the browser shows every Tiptap edit",
        "return [...Array(15).keys()].every(i => Q.text().includes('tt' + i + ' '))",
    )
    .await;
    let read = rich_scenario(&ws(server.addr), "read", "both-edit", "").await;
    let stored = serde_json::to_value(stored_json(server.addr, "both-edit").await).unwrap();
    assert!(
        same(&stored, &read["json"]),
        "server {stored}\n tiptap {}",
        read["json"]
    );
    let text = editor_text(&browser).await;
    for i in 0..15 {
        assert_eq!(
            text.matches(&format!("tt{i} ")).count(),
            1,
            "tt{i} once in {text:?}"
        );
    }
    for word in ["Shared start", "one ", "two ", "three "] {
        assert_eq!(text.matches(word).count(), 1, "{word:?} once in {text:?}");
    }
    assert!(text.contains("second"), "{text}");
    let _ = tiptap;
    browser.screenshot("tiptap-and-quire-converged").await;
    browser.close().await;
}

#[tokio::test]
async fn carets_cross_between_quire_and_tiptap() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    open_editor(&browser, &base, "carets", "Quirer").await;
    type_at(&browser, None, "Hello caret world").await;
    // Quire's caret after "Hello " is ProseMirror position 1 + 6.
    js(&browser, "return Q.setCaret(6)", vec![]).await;
    wait_status(&browser, "All changes saved").await;
    let url = ws(server.addr);
    let spec = json!({"name": "Tiptap", "pos": 3, "watch": "Quirer", "holdMs": 6000}).to_string();
    let node = tokio::spawn(async move { rich_scenario(&url, "caret", "carets", &spec).await });
    // Tiptap's caret at position 3 (after "He") shows in Quire with its name.
    browser
        .wait_js("Tiptap's caret shows", "return !!document.querySelector('.remote-caret[data-user=Tiptap] .remote-caret-label')")
        .await;
    let offset = js(
        &browser,
        "const caret = document.querySelector('.remote-caret[data-user=Tiptap]').getBoundingClientRect();\
         const t = Q.root().querySelector('p').firstChild; const r = document.createRange(); r.setStart(t, 2); r.setEnd(t, 2);\
         return Math.abs(caret.left - r.getBoundingClientRect().left)",
        vec![],
    )
    .await;
    assert!(
        offset.as_f64().unwrap_or(99.0) < 3.0,
        "the caret is drawn after \"He\" (off by {offset}px)"
    );
    browser.screenshot("tiptap-caret-in-quire").await;
    let result = node.await.expect("the Tiptap client ran");
    assert_eq!(
        result["seen"]["anchor"], 7,
        "Tiptap sees Quire's caret after \"Hello \": {result}"
    );
    assert_eq!(result["seen"]["head"], 7);
    browser.close().await;
}
