//! The rich editor's caret when a remote edit lands between a caret move
//! and the browser's `selectionchange` event: the next keystroke must go
//! where the caret was put, not where it was before (issue 10's last
//! race). A remote update that arrived there used to put the old caret
//! back. `Q.setCaret` hides the race (it waits for the event), so these
//! tests move the caret with the Selection API and apply the update in the
//! same script, before the event loop runs the event: once through the
//! socket (a real update from a native client, relayed by the server) and
//! once through the `BroadcastChannel` of another tab.
//!
//! To apply an update at a moment of the test's choosing, the page's
//! socket and channel are held: a script that runs before the app's
//! (DevTools `Page.addScriptToEvaluateOnNewDocument`) records them, and
//! [`hold`] queues what they receive until [`RELEASE`] hands it to the
//! app's own `onmessage` handler, synchronously.

use quire_protocol::rich::Node;
use quire_tests::browser::{Browser, Cdp};
use quire_tests::client::Client;
use serde_json::json;
use yrs::{GetString, Text, Transact, XmlFragment, XmlOut};

use crate::support::*;

/// Runs before the app: records every `WebSocket` and `BroadcastChannel`
/// the page makes (the originals stay reachable for the test's own use).
const RECORD: &str = r#"
window.__held = { sockets: [], channels: [], BroadcastChannel: window.BroadcastChannel };
const RecordedSocket = class extends window.WebSocket {
  constructor(...args) { super(...args); window.__held.sockets.push(this); }
};
const RecordedChannel = class extends window.BroadcastChannel {
  constructor(...args) { super(...args); window.__held.channels.push(this); }
};
window.WebSocket = RecordedSocket;
window.BroadcastChannel = RecordedChannel;
"#;

/// From now on, what `target` (a script expression) receives is queued
/// in `__held.queue` instead of reaching the app.
async fn hold(browser: &Browser, target: &str) {
    let script = format!(
        "const target = {target}; const H = window.__held;\
         const deliver = target.onmessage; H.queue = [];\
         target.onmessage = (e) => H.queue.push(e);\
         H.release = () => {{ target.onmessage = deliver; const q = H.queue; H.queue = [];\
           for (const e of q) deliver.call(target, e); return q.length; }};\
         return typeof deliver === 'function'"
    );
    assert_eq!(
        js(browser, &script, vec![]).await,
        json!(true),
        "{target} has the app's handler"
    );
}

/// In one script (no turn of the event loop, so no `selectionchange`
/// reaches the editor in between): put the caret at text offset
/// `arguments[0]` with the Selection API, then hand the held messages to
/// the app. Returns how many were held, the text and the caret after it.
const RELEASE: &str = "const placed = Q.placeCaret(Q.root(), arguments[0]);\
    const released = window.__held.release();\
    return [placed, released, Q.text(), Q.caret()]";

/// Opens the DevTools connection that makes every page of `browser` run [`RECORD`] first.
async fn record_sockets_and_channels(browser: &Browser) -> Cdp {
    let mut cdp = browser.cdp().await;
    cdp.call("Page.enable", json!({})).await;
    cdp.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": RECORD }),
    )
    .await;
    cdp
}

fn three_paragraphs() -> Node {
    let p = |t: &str| json!({"type": "paragraph", "content": [{"type": "text", "text": t}]});
    serde_json::from_value(
        json!({"type": "doc", "content": [p("alpha"), p("bravo"), p("charlie")]}),
    )
    .expect("a document")
}

/// Inserts `text` at the start of paragraph `block` of `client`'s copy;
/// returns the update (not sent).
fn prepend(client: &Client, block: u32, text: &str) -> Vec<u8> {
    let fragment = client.doc.get_or_insert_xml_fragment("default");
    let mut txn = client.doc.transact_mut();
    let Some(XmlOut::Element(paragraph)) = fragment.get(&txn, block) else {
        panic!("paragraph {block} is in the native client's copy");
    };
    let Some(XmlOut::Text(run)) = paragraph.get(&txn, 0) else {
        panic!("paragraph {block} holds text");
    };
    run.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

#[tokio::test]
async fn a_remote_edit_before_selectionchange_does_not_move_the_caret_back() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    seed(&server, "race", &three_paragraphs()).await;
    let browser = Browser::start().await;
    browser.open(&base).await;
    let _cdp = record_sockets_and_channels(&browser).await;
    open_editor(&browser, &base, "race", "Ann").await;
    let mut other = Client::connect_synced(server.ws_url("race")).await;
    assert_eq!(
        js(&browser, "return window.__held.sockets.length", vec![]).await,
        json!(1),
        "the page's socket was recorded"
    );
    // The editor knows the caret at the end of "alpha".
    js(&browser, "Q.root().focus(); return Q.setCaret(5)", vec![]).await;

    // 1. Through the socket: someone types "R" at the start of "bravo";
    //    it lands right after the caret was put into "charlie".
    hold(&browser, "window.__held.sockets.at(-1)").await;
    let update = prepend(&other, 1, "R");
    other.send_update(&update);
    wait_js(
        &browser,
        "the server relayed the update to the page (held)",
        "return window.__held.queue.some((e) => { const b = new Uint8Array(e.data); return b[0] === 0 && b[1] === 2; })",
    )
    .await;
    assert_eq!(editor_text(&browser).await, "alpha\nbravo\ncharlie");
    let released = js(&browser, RELEASE, vec![json!(15)]).await; // "cha|rlie"
    assert_eq!(
        released[2],
        json!("alpha\nRbravo\ncharlie"),
        "the update applied at once: {released}"
    );
    assert_eq!(
        released[3],
        json!(16),
        "the caret stayed where it was put (after \"cha\"), not back after \"alpha\": {released}"
    );
    keys(&browser, "X").await;
    wait_text(
        &browser,
        "the keystroke landed at the new caret",
        "alpha\nRbravo\nchaXrlie",
    )
    .await;
    wait_stored(
        server.addr,
        "race",
        "<p>alpha</p><p>Rbravo</p><p>chaXrlie</p>",
    )
    .await;

    // 2. Through the channel of another tab: an update of "T" at the start
    //    of "alpha" lands right after the caret was put into "Rbravo".
    let channel = "window.__held.channels.find((c) => c.name === 'quire:doc:race')";
    hold(&browser, channel).await;
    other
        .wait_until("the native client has the keystroke", |c| {
            let fragment = c.doc.get_or_insert_xml_fragment("default");
            let txn = c.doc.transact();
            fragment.get_string(&txn).contains("chaXrlie")
        })
        .await;
    let update = prepend(&other, 0, "T");
    let posted = js(
        &browser,
        "const c = new window.__held.BroadcastChannel('quire:doc:race');\
         c.postMessage({ t: 'u', d: new Uint8Array(arguments[0]) }); c.close(); return true",
        vec![json!(update)],
    )
    .await;
    assert_eq!(posted, json!(true));
    wait_js(
        &browser,
        "the other tab's update reached the page (held)",
        "return window.__held.queue.length === 1",
    )
    .await;
    let released = js(&browser, RELEASE, vec![json!(9)]).await; // "Rbr|avo"
    assert_eq!(
        released[2],
        json!("Talpha\nRbravo\nchaXrlie"),
        "the update applied at once: {released}"
    );
    assert_eq!(
        released[3],
        json!(10),
        "the caret stayed where it was put (after \"Rbr\"), not back after \"X\": {released}"
    );
    keys(&browser, "Y").await;
    let expected = "Talpha\nRbrYavo\nchaXrlie";
    wait_text(&browser, "the keystroke landed at the new caret", expected).await;
    // The page relayed the other tab's update to the server with its own.
    wait_stored(
        server.addr,
        "race",
        "<p>Talpha</p><p>RbrYavo</p><p>chaXrlie</p>",
    )
    .await;
    browser.screenshot("rich-caret-race").await;
    drop(other);
    browser.close().await;
}
