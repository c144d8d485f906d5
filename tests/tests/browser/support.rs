//! What every browser test needs: a server serving the app, opening an
//! editor as a named person, reading what the editor shows (the rich
//! editor's text blocks one per line, or the plain editor's textarea),
//! putting the caret somewhere and typing like a person, and reading the
//! document the server stored.

use std::net::SocketAddr;
use std::time::Duration;

use quire_protocol::rich::{FRAGMENT, Node, json};
use quire_server::auth::{Claims, Permission, TokenKey};
use quire_tests::browser::{Browser, web_dist};
use quire_tests::{TestServer, http};
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update, WriteTxn};

/// A server serving the built app, with a quick heartbeat.
pub async fn app_server() -> TestServer {
    let dist = web_dist();
    TestServer::start_with(move |c| {
        c.static_dir = Some(dist);
        c.ping_interval = Duration::from_secs(1);
        c.ping_timeout = Duration::from_secs(1);
    })
    .await
}

/// Stores `node` as document `doc` on the server (a Yjs update, as a Tiptap app would write it).
pub async fn seed(server: &TestServer, doc: &str, node: &Node) {
    let ydoc = Doc::new();
    {
        let mut txn = ydoc.transact_mut();
        let fragment = txn.get_or_insert_xml_fragment(FRAGMENT);
        json::write(&mut txn, &fragment, 0, &node.content);
    }
    let update = ydoc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let put = http::request(
        server.addr,
        "PUT",
        &format!("/api/docs/{doc}/snapshot"),
        &update,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
}

/// A server serving the built app that wants tokens signed with `key`.
pub async fn guarded_server(key: &'static str) -> TestServer {
    let dist = web_dist();
    TestServer::start_with(move |c| {
        c.static_dir = Some(dist);
        c.auth_key = Some(TokenKey::new(key));
    })
    .await
}

/// A token for `doc` with `permission`, signed with `key`, valid for an hour.
pub fn doc_token(key: &str, doc: &str, permission: Permission) -> String {
    let exp = quire_server::auth::now_secs() + 3_600;
    TokenKey::new(key).sign(&Claims::doc(doc, permission, exp))
}

/// JS helpers defined in front of every script below.
pub const HELPERS: &str = r#"
const Q = {
  root: () => document.querySelector('#editor'),
  rich: () => { const e = document.querySelector('#editor'); return e && e.tagName !== 'TEXTAREA'; },
  blocks: (root) => [...root.querySelectorAll('p, h1, h2, h3, h4, h5, h6, pre')],
  blockText: (b) => {
    let s = '';
    const walk = (n) => { for (const c of n.childNodes) {
      if (c.nodeType === 3) s += c.data;
      else if (c.nodeName === 'BR') { if (!c.classList.contains('trailing-break')) s += '\n'; }
      else walk(c);
    } };
    walk(b);
    return s;
  },
  text: () => {
    const e = Q.root();
    if (!e) return null;
    if (!Q.rich()) return e.value;
    return Q.blocks(e).map(Q.blockText).join('\n');
  },
  // The editor's HTML without its layout wrappers: the chunks around
  // top-level blocks, the trailing breaks of empty lines.
  html: () => {
    const c = Q.root().cloneNode(true);
    c.querySelectorAll(':scope > div.chunk').forEach((k) => k.replaceWith(...k.childNodes));
    c.querySelectorAll('br.trailing-break').forEach((b) => b.remove());
    return c.innerHTML;
  },
  // Puts the caret at a text offset (null: the end). In the rich editor it
  // resolves once the editor has heard of it (its `selectionchange`
  // listener ran first), as after a person's click. A remote edit landing
  // before that is a race of its own, tested on purpose in caret.rs; the
  // tests using this are about other things.
  setCaret: (p) => {
    const e = Q.root();
    if (!Q.rich()) { const q = p === null ? e.value.length : p; e.setSelectionRange(q, q); return true; }
    return new Promise((resolve) => {
      const s = getSelection();
      const before = [s.anchorNode, s.anchorOffset, s.focusNode, s.focusOffset];
      const done = () => resolve(true);
      document.addEventListener('selectionchange', done, { once: true });
      const placed = Q.placeCaret(e, p);
      const after = [s.anchorNode, s.anchorOffset, s.focusNode, s.focusOffset];
      // A selection that did not change fires no event: nothing to wait for.
      if (!placed || after.every((v, i) => v === before[i])) {
        document.removeEventListener('selectionchange', done);
        resolve(placed);
      }
    });
  },
  placeCaret: (e, p) => {
    const blocks = Q.blocks(e);
    let at = 0;
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i];
      const len = Q.blockText(b).length;
      if (p === null ? i === blocks.length - 1 : p <= at + len) {
        let want = p === null ? len : p - at;
        const walker = document.createTreeWalker(b, NodeFilter.SHOW_TEXT);
        let node, last = null;
        while ((node = walker.nextNode())) {
          last = node;
          if (want <= node.data.length) { getSelection().collapse(node, want); return true; }
          want -= node.data.length;
        }
        if (last) getSelection().collapse(last, last.data.length); else getSelection().collapse(b.tagName === 'PRE' ? b.firstChild : b, 0);
        return true;
      }
      at += len + 1;
    }
    return false;
  },
  // The caret as a text offset.
  caret: () => {
    const e = Q.root();
    if (!Q.rich()) return e.selectionStart;
    const sel = getSelection();
    const blocks = Q.blocks(e);
    let at = 0;
    for (const b of blocks) {
      if (b.contains(sel.focusNode)) {
        const r = document.createRange();
        r.setStart(b, 0);
        r.setEnd(sel.focusNode, sel.focusOffset);
        return at + r.toString().length;
      }
      at += Q.blockText(b).length + 1;
    }
    return -1;
  },
  // Selects the first occurrence (or the `occurrence`-th) of `needle` in
  // the editor's text, across text nodes (formatting splits text into nodes).
  select: (needle, occurrence) => {
    const e = Q.root();
    const walker = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
    const nodes = [];
    let all = '', node;
    while ((node = walker.nextNode())) { nodes.push([node, all.length]); all += node.data; }
    let i = -1;
    for (let k = 0; k <= (occurrence || 0); k++) {
      i = all.indexOf(needle, i + 1);
      if (i < 0) return false;
    }
    const at = (p, end) => {
      for (const [n, start] of nodes) {
        if (end ? p <= start + n.data.length : p < start + n.data.length) return [n, p - start];
      }
      const [n, start] = nodes[nodes.length - 1];
      return [n, p - start];
    };
    const [an, ao] = at(i, false);
    const [fn, fo] = at(i + needle.length, true);
    e.focus();
    getSelection().setBaseAndExtent(an, ao, fn, fo);
    return true;
  },
};
"#;

/// Runs `script` with the helpers defined.
pub async fn js(browser: &Browser, script: &str, args: Vec<Value>) -> Value {
    browser.js(&format!("{HELPERS}\n{script}"), args).await
}

pub async fn wait_js(browser: &Browser, what: &str, script: &str) {
    browser.wait_js(what, &format!("{HELPERS}\n{script}")).await
}

pub async fn editor_text(browser: &Browser) -> String {
    js(browser, "return Q.text()", vec![])
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub async fn editor_html(browser: &Browser) -> String {
    js(browser, "return Q.html()", vec![])
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub async fn caret(browser: &Browser) -> Value {
    js(browser, "return Q.caret()", vec![]).await
}

/// Waits until the editor shows `expected`.
pub async fn wait_text(browser: &Browser, what: &str, expected: &str) {
    wait_js(
        browser,
        what,
        &format!("return Q.text() === {}", json!(expected)),
    )
    .await
}

pub async fn wait_html(browser: &Browser, what: &str, expected: &str) {
    let script = format!("return !!Q.root() && Q.html() === {}", json!(expected));
    let deadline = tokio::time::Instant::now() + quire_tests::WAIT;
    loop {
        if js(browser, &script, vec![]).await == json!(true) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let html = editor_html(browser).await;
            panic!("timed out waiting until {what}:\n expected {expected}\n      got {html}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_status(browser: &Browser, expected: &str) {
    let script = format!(
        "return document.querySelector('#status') && document.querySelector('#status').textContent.trim() === {}",
        json!(expected)
    );
    browser
        .wait_js(&format!("status is {expected}"), &script)
        .await;
}

/// Opens the editor of `doc` as `name` and waits until it is synced and saved.
pub async fn open_editor(browser: &Browser, base: &str, doc: &str, name: &str) {
    let current = browser.js("return location.origin", vec![]).await;
    if current.as_str() != Some(base) {
        browser.open(base).await;
    }
    let user = json!({ "name": name, "color": "#1d72b8" }).to_string();
    browser
        .js(
            "localStorage.setItem('quire.user', arguments[0]); return true",
            vec![json!(user)],
        )
        .await;
    browser.open(&format!("{base}/d/{doc}")).await;
    browser.find("#editor").await;
    wait_js(
        browser,
        "the editor is ready",
        "const e = Q.root(); return !!e && (e.tagName === 'TEXTAREA' ? !e.readOnly : e.dataset.ready === 'true')",
    )
    .await;
    wait_status(browser, "All changes saved").await;
}

/// Puts the caret at `pos` (a text offset; `None`: the end) and types `text` like a person.
pub async fn type_at(browser: &Browser, pos: Option<u32>, text: &str) {
    let editor = browser.find("#editor").await;
    let focused = js(
        browser,
        "return document.activeElement === Q.root()",
        vec![],
    )
    .await;
    if focused != json!(true) {
        editor.click().await.expect("focus the editor");
    }
    let pos = pos.map(Value::from).unwrap_or(Value::Null);
    js(browser, "return Q.setCaret(arguments[0])", vec![pos]).await;
    editor.send_keys(text).await.expect("type");
}

/// Sends keys to the editor where its caret is.
pub async fn keys(browser: &Browser, text: &str) {
    let editor = browser.find("#editor").await;
    editor.send_keys(text).await.expect("keys");
}

/// Ctrl + `key` (WebDriver keys: Control, the key, release all).
pub fn ctrl(key: &str) -> String {
    format!("\u{E009}{key}\u{E000}")
}

pub fn ctrl_shift(key: &str) -> String {
    format!("\u{E009}\u{E008}{key}\u{E000}")
}

pub const ENTER: &str = "\u{E007}";
pub const BACKSPACE: &str = "\u{E003}";
pub const TAB: &str = "\u{E004}";
pub const SHIFT_TAB: &str = "\u{E008}\u{E004}\u{E000}";
pub const SHIFT_ENTER: &str = "\u{E008}\u{E007}\u{E000}";

/// The rich document the server stored, as ProseMirror JSON (read from its Yjs snapshot).
pub async fn stored_json(addr: SocketAddr, doc: &str) -> Node {
    let bytes = http::get(addr, &format!("/api/docs/{doc}/snapshot?format=yjs"))
        .await
        .body;
    let ydoc = Doc::new();
    ydoc.transact_mut()
        .apply_update(Update::decode_v1(&bytes).expect("a Yjs update"))
        .expect("the snapshot applies");
    let fragment = ydoc.get_or_insert_xml_fragment("default");
    let txn = ydoc.transact();
    json::read_fragment(&txn, &fragment)
}

/// A compact picture of a document: `<p>a<bold>b</bold></p>` (tests compare these).
pub fn show(node: &Node) -> String {
    if let Some(text) = &node.text {
        let mut s = text.clone();
        for m in node.marks.iter().rev() {
            let extra = if m.kind == "link" {
                format!(" {}", m.href().unwrap_or(""))
            } else {
                String::new()
            };
            s = format!("<{}{extra}>{s}</{}>", m.kind, m.kind);
        }
        return s;
    }
    let tag = match node.kind.as_str() {
        "paragraph" => "p".to_owned(),
        "heading" => format!(
            "h{}",
            node.attrs.get("level").and_then(Value::as_i64).unwrap_or(1)
        ),
        "bulletList" => "ul".to_owned(),
        "orderedList" => "ol".to_owned(),
        "listItem" => "li".to_owned(),
        "blockquote" => "q".to_owned(),
        "codeBlock" => "pre".to_owned(),
        "horizontalRule" => return "<hr>".to_owned(),
        "hardBreak" => return "<br>".to_owned(),
        other => other.to_owned(),
    };
    let inner: String = node.content.iter().map(show).collect();
    if node.kind == "doc" {
        inner
    } else {
        format!("<{tag}>{inner}</{tag}>")
    }
}

/// Waits until the stored document looks like `expected` (see [`show`]).
pub async fn wait_stored(addr: SocketAddr, doc: &str, expected: &str) -> Node {
    let deadline = tokio::time::Instant::now() + quire_tests::WAIT;
    loop {
        let json = stored_json(addr, doc).await;
        if show(&json) == expected {
            json.check()
                .unwrap_or_else(|e| panic!("stored document is not valid StarterKit content: {e}"));
            return json;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "stored document:\n expected {expected}\n      got {}",
                show(&json)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
