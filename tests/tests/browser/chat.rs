//! Chat errors in words (issue 12): a message the server refuses is said
//! next to the chat input and given back to it; a read-only link cannot
//! send and says why.

use quire_server::Config;
use quire_server::auth::Permission;
use quire_tests::TestServer;
use quire_tests::browser::{Browser, web_dist};
use serde_json::json;

use crate::support::*;

async fn open_chat(browser: &Browser) {
    browser.find("#chat-toggle").await.click().await.unwrap();
    browser
        .wait_js(
            "the chat is open",
            "return document.querySelector('#chat').classList.contains('open')",
        )
        .await;
}

async fn send_chat(browser: &Browser, text: &str) {
    let input = browser.find("#chat-input").await;
    input.send_keys(text).await.unwrap();
    browser.find("#chat-send").await.click().await.unwrap();
}

/// A server tuned by `tune` serving the app, and a person in `doc`'s
/// editor with the chat open who has sent one short message.
async fn chatting(doc: &str, tune: impl FnOnce(&mut Config)) -> (TestServer, Browser) {
    let dist = web_dist();
    let server = TestServer::start_with(move |c| {
        c.static_dir = Some(dist);
        tune(c);
    })
    .await;
    let base = format!("http://{}", server.addr);
    let browser = Browser::start().await;
    open_editor(&browser, &base, doc, "Talker").await;
    open_chat(&browser).await;
    send_chat(&browser, "short").await;
    browser
        .wait_js(
            "the short message is in the list",
            "return document.querySelectorAll('[data-testid=chat-message]').length === 1",
        )
        .await;
    (server, browser)
}

/// Sends `text`; the server refuses it, the page says `words` under the
/// input, gives the text back and lists only the first message.
async fn refused(browser: &Browser, text: &str, words: &str) {
    send_chat(browser, text).await;
    browser
        .wait_js(
            "the refusal is said",
            &format!(
                "return document.querySelector('#chat-error').textContent.includes({})",
                json!(words)
            ),
        )
        .await;
    assert_eq!(
        browser
            .js(
                "return [document.querySelector('#chat-input').value, document.querySelectorAll('[data-testid=chat-message]').length]",
                vec![]
            )
            .await,
        json!([text, 1]),
        "what was typed is given back, and not listed"
    );
}

#[tokio::test]
async fn a_chat_message_over_the_servers_limit_is_refused_in_words_and_given_back() {
    let (_server, browser) = chatting("talk", |c| c.max_chat_message_bytes = 16).await;
    refused(
        &browser,
        "this message is far longer than sixteen bytes",
        "Your message was not sent: it is longer than the server accepts",
    )
    .await;
    // Still connected: the editor keeps saving.
    type_at(&browser, None, "still here").await;
    wait_status(&browser, "All changes saved").await;
    browser.screenshot("chat-refused").await;
    browser.close().await;
}

#[tokio::test]
async fn a_chat_message_past_the_document_size_limit_is_refused_in_words() {
    // Chat counts towards the document's size.
    let (_server, browser) = chatting("full", |c| c.max_document_bytes = 400).await;
    refused(
        &browser,
        &"x".repeat(300),
        "Your message was not sent: this document is at the server’s size limit",
    )
    .await;
    browser.close().await;
}

#[tokio::test]
async fn a_read_only_link_cannot_chat_and_says_why() {
    const KEY: &str = "chat-read-only-test-key";
    let server = guarded_server(KEY).await;
    let base = format!("http://{}", server.addr);
    let read = doc_token(KEY, "briefing", Permission::Read);
    let browser = Browser::start().await;
    browser
        .open(&format!("{base}/d/briefing?token={read}"))
        .await;
    browser.find("#read-only-badge").await;
    open_chat(&browser).await;
    browser.find("#chat-read-only").await;
    assert_eq!(
        browser
            .js(
                "const i = document.querySelector('#chat-input'), b = document.querySelector('#chat-send');\
                 return [i.disabled, b.disabled, document.querySelector('#chat-read-only').textContent]",
                vec![]
            )
            .await,
        json!([
            true,
            true,
            "Your access to this document is read-only: you can read the chat, not write in it."
        ])
    );
    browser.screenshot("chat-read-only").await;
    browser.close().await;
}
