//! Plain-text documents (only the `Y.Text` named `content`, as Quire's
//! first editor and stock y-websocket apps write them) open in the
//! plain-text editor, lose nothing, and become rich documents once, on
//! demand, even when two people convert at the same moment.

use quire_tests::browser::Browser;
use quire_tests::http;
use quire_tests::proxy::FaultProxy;
use serde_json::json;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use crate::support::*;

/// Stores a plain-text document the way a stock Yjs app would.
async fn plain_document(addr: std::net::SocketAddr, name: &str, text: &str) {
    let doc = Doc::new();
    let content = doc.get_or_insert_text("content");
    content.insert(&mut doc.transact_mut(), 0, text);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let response = http::request(
        addr,
        "PUT",
        &format!("/api/docs/{name}/snapshot?format=yjs"),
        &update,
    )
    .await;
    assert!(response.status < 300, "stored: {}", response.status);
}

#[tokio::test]
async fn a_plain_text_document_opens_as_plain_text_and_two_conversions_keep_the_text_once() {
    let server = app_server().await;
    let proxy = FaultProxy::start(server.addr).await;
    let base = format!("http://{}", proxy.addr());
    plain_document(server.addr, "plainly", "first line\nsecond line").await;
    let (ann, bob) = tokio::join!(Browser::start(), Browser::start());
    open_editor(&ann, &base, "plainly", "Ann").await;
    open_editor(&bob, &base, "plainly", "Bob").await;
    for b in [&ann, &bob] {
        assert_eq!(
            b.js("return document.querySelector('#editor').tagName", vec![])
                .await,
            json!("TEXTAREA")
        );
        b.find("#convert-rich").await;
    }
    // Plain-text editing works as it always did.
    type_at(&ann, None, " (edited)").await;
    wait_text(
        &bob,
        "Bob sees Ann's edit",
        "first line\nsecond line (edited)",
    )
    .await;
    wait_status(&ann, "All changes saved").await;
    ann.screenshot("plain-mode").await;
    // Both convert while cut off from each other.
    proxy.refuse();
    proxy.cut();
    for b in [&ann, &bob] {
        b.wait_js(
            "offline",
            "return !document.querySelector('#status').textContent.trim().startsWith('All')",
        )
        .await;
    }
    tokio::join!(
        async { ann.find("#convert-rich").await.click().await.unwrap() },
        async { bob.find("#convert-rich").await.click().await.unwrap() }
    );
    for b in [&ann, &bob] {
        wait_html(
            b,
            "the document became paragraphs",
            "<p>first line</p><p>second line (edited)</p>",
        )
        .await;
    }
    proxy.heal();
    for b in [&ann, &bob] {
        wait_status(b, "All changes saved").await;
    }
    for b in [&ann, &bob] {
        wait_html(
            b,
            "after both conversions met, the text is there once",
            "<p>first line</p><p>second line (edited)</p>",
        )
        .await;
    }
    wait_stored(
        server.addr,
        "plainly",
        "<p>first line</p><p>second line (edited)</p>",
    )
    .await;
    // The plain text stays for apps that only read `content`.
    let roots = http::get(server.addr, "/api/docs/plainly/snapshot?format=json")
        .await
        .json();
    assert_eq!(roots["content"], "first line\nsecond line (edited)");
    // And the document is rich from now on: formatting works.
    js(&ann, "Q.root().focus(); return Q.select('first')", vec![]).await;
    keys(&ann, &ctrl("b")).await;
    wait_stored(
        server.addr,
        "plainly",
        "<p><bold>first</bold> line</p><p>second line (edited)</p>",
    )
    .await;
    bob.screenshot("plain-converted").await;
    ann.close().await;
    bob.close().await;
}
