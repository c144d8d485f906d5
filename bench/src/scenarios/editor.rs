//! Editor: keystroke latency in headless Chromium, the rich editor in a
//! ~1 MB rich document (hundreds of headings, lists and marked runs) and,
//! in the same run, the plain-text (textarea) editor on the same text.
//!
//! Quire serves the built web app (`cargo xtask web` first; the dist is
//! `QUIRE_WEB_DIST`, else `$CARGO_TARGET_DIR/quire-web`). Chromium
//! (Debian's `/usr/bin/chromium`) is driven over the DevTools Protocol:
//! each keystroke is a real `Input.dispatchKeyEvent` in the middle of the
//! document; a script in the page records, per keystroke, the time from
//! `beforeinput` to the editor's DOM changing (a MutationObserver on the
//! contenteditable; the `input` event for the textarea) and to the update
//! being handed to `WebSocket.send`. Reports p50/p95 of both, and the
//! wasm size (raw and gzip) of the build measured and, when
//! `QUIRE_BENCH_WASM_BEFORE` names another dist (the textarea-only app),
//! of that one.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::rich::json::{self, Mark};
use quire_protocol::rich::{MarkType, Node, NodeType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use super::{STOP_GRACE, start};
use crate::Ctx;
use crate::servers::Kind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// `rich` or `textarea`.
    pub editor: String,
    pub doc_text_bytes: usize,
    pub keystrokes: usize,
    pub dom_p50_ms: f64,
    pub dom_p95_ms: f64,
    pub send_p50_ms: f64,
    pub send_p95_ms: f64,
    /// Keystrokes whose DOM change or send was not seen.
    pub missing: usize,
}

fn dist() -> Result<PathBuf, String> {
    let dir = std::env::var_os("QUIRE_WEB_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target"))
                .join("quire-web")
        });
    if dir.join("index.html").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "the web app is not built at {} (run `cargo xtask web`)",
            dir.display()
        ))
    }
}

/// A rich document of about `bytes` of text: sections with a heading, a
/// paragraph of marked runs, a bullet list, a numbered list, sometimes a
/// quote or a code block.
pub fn rich_document(bytes: usize) -> Vec<Node> {
    let words = [
        "quire",
        "editor",
        "document",
        "rich",
        "text",
        "yrs",
        "latency",
        "keystroke",
        "heading",
        "list",
    ];
    let sentence = |seed: usize, n: usize| -> String {
        (0..n)
            .map(|i| words[(seed * 7 + i * 3) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut blocks = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < bytes {
        let heading = format!("Section {i}: {}", sentence(i, 3));
        let runs = vec![
            Node::text(format!("{}. ", sentence(i + 1, 12)), vec![]),
            Node::text(sentence(i + 2, 6), vec![Mark::of(MarkType::Bold)]),
            Node::text(format!(" {} ", sentence(i + 3, 10)), vec![]),
            Node::text(sentence(i + 4, 5), vec![Mark::of(MarkType::Italic)]),
            Node::text(format!(" {} ", sentence(i + 5, 8)), vec![]),
            Node::text("a link", vec![Mark::link("https://example.com/")]),
            Node::text(format!(" and {}.", sentence(i + 6, 14)), vec![]),
        ];
        let item = |s: String| {
            Node::new(
                NodeType::ListItem,
                vec![Node::paragraph(vec![Node::text(s, vec![])])],
            )
        };
        let bullets = Node::new(
            NodeType::BulletList,
            (0..4).map(|k| item(sentence(i + k, 8))).collect(),
        );
        let numbered = Node::new(
            NodeType::OrderedList,
            (0..3).map(|k| item(sentence(i + k + 9, 6))).collect(),
        );
        for b in [
            Node::heading(
                if i % 5 == 0 { 1 } else { 2 },
                vec![Node::text(heading, vec![])],
            ),
            Node::paragraph(runs),
            bullets,
            numbered,
        ] {
            size += b.text_content().len() + 1;
            blocks.push(b);
        }
        if i % 4 == 0 {
            blocks.push(Node::new(
                NodeType::Blockquote,
                vec![Node::paragraph(vec![Node::text(sentence(i, 20), vec![])])],
            ));
        }
        if i % 7 == 0 {
            blocks.push(Node::new(
                NodeType::CodeBlock,
                vec![Node::text(format!("let x{i} = {i};\nprint(x{i});"), vec![])],
            ));
        }
        i += 1;
    }
    blocks
}

fn encode_rich(blocks: &[Node]) -> (Vec<u8>, String) {
    let doc = Doc::new();
    let fragment = doc.get_or_insert_xml_fragment("default");
    json::write(&mut doc.transact_mut(), &fragment, 0, blocks);
    let txn = doc.transact();
    let text = quire_protocol::rich::plain_text(&txn);
    (txn.encode_state_as_update_v1(&StateVector::default()), text)
}

fn encode_plain(text: &str) -> Vec<u8> {
    let doc = Doc::new();
    let content = doc.get_or_insert_text("content");
    content.insert(&mut doc.transact_mut(), 0, text);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

async fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .await
            .map_err(|e| e.to_string())?;
        let wait = async {
            while let Some(frame) = self.ws.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                if v["id"] == id {
                    if let Some(err) = v.get("error") {
                        return Err(format!("{method}: {err}"));
                    }
                    return Ok(v["result"].clone());
                }
            }
            Err("DevTools closed".to_owned())
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .map_err(|_| format!("{method} timed out"))?
    }

    async fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }

    async fn wait_for(&mut self, what: &str, expr: &str) -> Result<(), String> {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if self.eval(expr).await? == json!(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("timed out waiting until {what}"))
    }
}

struct Chromium {
    child: tokio::process::Child,
    _profile: PathBuf,
    port: u16,
}

async fn chromium(ctx: &Ctx) -> Result<Chromium, String> {
    let binary = "/usr/bin/chromium";
    if !std::path::Path::new(binary).exists() {
        return Err("chromium is missing (apt-get install chromium)".into());
    }
    let profile = ctx.env.tmp.join("editor-chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
    let child = tokio::process::Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
            "about:blank",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start chromium: {e}"))?;
    let file = profile.join("DevToolsActivePort");
    let started = std::time::Instant::now();
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
        {
            break p;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("chromium did not open DevTools".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(Chromium {
        child,
        _profile: profile,
        port,
    })
}

async fn page(chrome: &Chromium, url: &str) -> Result<Cdp, String> {
    let addr = format!("127.0.0.1:{}", chrome.port);
    let (_, body) = http(&addr, "PUT", &format!("/json/new?{url}"), b"").await?;
    let target: Value =
        serde_json::from_str(&body).map_err(|e| format!("DevTools new target: {e}: {body}"))?;
    let ws_url = target["webSocketDebuggerUrl"]
        .as_str()
        .ok_or("no DevTools URL")?;
    let (ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Cdp { ws, next: 1 })
}

const INSTRUMENT: &str = r#"(() => {
  window.__lat = []; let cur = null;
  const root = document.querySelector('#editor');
  root.addEventListener('beforeinput', () => { cur = {t0: performance.now(), dom: null, send: null}; window.__lat.push(cur); }, true);
  new MutationObserver(() => { if (cur && cur.dom === null) cur.dom = performance.now(); })
    .observe(root, {childList: true, subtree: true, characterData: true});
  root.addEventListener('input', () => { if (cur && cur.dom === null && root.tagName === 'TEXTAREA') cur.dom = performance.now(); }, true);
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (d) { if (cur && cur.send === null) cur.send = performance.now(); return send.call(this, d); };
  // The caret in the middle of the document.
  root.focus();
  if (root.tagName === 'TEXTAREA') { const m = Math.floor(root.value.length / 2); root.setSelectionRange(m, m); }
  else {
    const ps = root.querySelectorAll('p'); const p = ps[Math.floor(ps.length / 2)];
    const t = document.createTreeWalker(p, NodeFilter.SHOW_TEXT).nextNode();
    getSelection().collapse(t, Math.min(10, t.data.length));
  }
  return true;
})()"#;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(
    cdp: &mut Cdp,
    editor: &str,
    text_bytes: usize,
    keystrokes: usize,
) -> Result<Run, String> {
    cdp.eval(INSTRUMENT).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..keystrokes {
        let key = ["a", "e", "i", "o", "u", " "][i % 6];
        let code = if key == " " { "Space" } else { "KeyA" };
        cdp.call("Input.dispatchKeyEvent", json!({"type": "keyDown", "key": key, "text": key, "unmodifiedText": key, "code": code})).await?;
        cdp.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code}),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lat = cdp.eval("JSON.stringify(window.__lat)").await?;
    let lat: Vec<Value> =
        serde_json::from_str(lat.as_str().unwrap_or("[]")).map_err(|e| e.to_string())?;
    let mut dom = Vec::new();
    let mut send = Vec::new();
    let mut missing = 0;
    for l in &lat {
        let t0 = l["t0"].as_f64().unwrap_or(0.0);
        match (l["dom"].as_f64(), l["send"].as_f64()) {
            (Some(d), Some(s)) => {
                dom.push(d - t0);
                send.push(s - t0);
            }
            _ => missing += 1,
        }
    }
    dom.sort_by(f64::total_cmp);
    send.sort_by(f64::total_cmp);
    Ok(Run {
        editor: editor.into(),
        doc_text_bytes: text_bytes,
        keystrokes: lat.len(),
        dom_p50_ms: percentile(&dom, 0.5),
        dom_p95_ms: percentile(&dom, 0.95),
        send_p50_ms: percentile(&send, 0.5),
        send_p95_ms: percentile(&send, 0.95),
        missing,
    })
}

fn wasm_size(dist: &std::path::Path) -> Result<(u64, u64), String> {
    let assets = dist.join("assets");
    for entry in std::fs::read_dir(&assets).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&bytes).map_err(|e| e.to_string())?;
            let gzip = gz.finish().map_err(|e| e.to_string())?.len() as u64;
            return Ok((bytes.len() as u64, gzip));
        }
    }
    Err("no wasm in the dist".into())
}

pub async fn run(ctx: &Ctx) -> Result<Value, String> {
    let dist = dist()?;
    let bytes = ctx.pick(1_000_000, 200_000);
    let keystrokes = ctx.pick(300, 60);
    let blocks = rich_document(bytes);
    let (rich_update, text) = encode_rich(&blocks);
    let plain_update = encode_plain(&text);
    let dist_arg = dist.display().to_string();
    let (server, _options) = start(
        ctx,
        Kind::Quire,
        "editor",
        &["--static-dir", &dist_arg, "--max-message-bytes", "67108864"],
    )
    .await?;
    for (name, update) in [("bench-rich", &rich_update), ("bench-plain", &plain_update)] {
        let (status, body) = http(
            &server.addr,
            "PUT",
            &format!("/api/docs/{name}/snapshot?format=yjs"),
            update,
        )
        .await?;
        if status >= 300 {
            return Err(format!("storing {name}: {status} {body}"));
        }
    }
    let chrome = chromium(ctx).await?;
    let mut runs = Vec::new();
    // Both editors in one run, in the same browser, one after the other, twice (interleaved).
    for round in 0..2 {
        for (editor, doc) in [("rich", "bench-rich"), ("textarea", "bench-plain")] {
            let mut cdp = page(&chrome, &format!("http://{}/d/{doc}", server.addr)).await?;
            cdp.wait_for(
                "the editor is ready and saved",
                "(() => { const e = document.querySelector('#editor'); const s = document.querySelector('#status');\
                 return !!e && !!s && s.textContent.trim() === 'All changes saved' && (e.tagName === 'TEXTAREA' ? !e.readOnly : e.dataset.ready === 'true'); })()",
            )
            .await?;
            let run = measure(&mut cdp, editor, text.len(), keystrokes).await?;
            println!(
                "  round {round} {editor}: beforeinput→DOM p50 {:.2} ms p95 {:.2} ms; →socket p50 {:.2} ms p95 {:.2} ms ({} keys, {} missing)",
                run.dom_p50_ms,
                run.dom_p95_ms,
                run.send_p50_ms,
                run.send_p95_ms,
                run.keystrokes,
                run.missing
            );
            runs.push(run);
            let _ = cdp.call("Page.close", json!({})).await;
        }
    }
    drop(chrome.child);
    server.stop(STOP_GRACE).await;
    let (raw, gzip) = wasm_size(&dist)?;
    // The size before (a build of the textarea-only web app, e.g. main's),
    // when `QUIRE_BENCH_WASM_BEFORE` names its dist.
    let before = match std::env::var_os("QUIRE_BENCH_WASM_BEFORE") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let (raw, gzip) = wasm_size(&dir)?;
            Some(json!({"raw_bytes": raw, "gzip_bytes": gzip, "dist": dir.display().to_string()}))
        }
        None => None,
    };
    let wasm = json!({"raw_bytes": raw, "gzip_bytes": gzip, "dist": dist_arg});
    let report_md = report(
        ctx.quick,
        text.len(),
        blocks.len(),
        &runs,
        &wasm,
        before.as_ref(),
    );
    Ok(json!({
        "quick": ctx.quick,
        "doc_text_bytes": text.len(),
        "rich_update_bytes": rich_update.len(),
        "blocks": blocks.len(),
        "runs": runs,
        "wasm": wasm,
        "wasm_before": before,
        "note": "latency in one headless Chromium on a shared, loaded 2-core machine",
        "report_md": report_md,
    }))
}

/// The RESULTS.md section: both editors' latencies per round, the rich
/// editor's p95 against one frame (16 ms), the ratio to the textarea on
/// the same text, and the wasm sizes.
fn report(
    quick: bool,
    text_bytes: usize,
    blocks: usize,
    runs: &[Run],
    wasm: &Value,
    before: Option<&Value>,
) -> String {
    let mut out = format!(
        "Keystroke latency in headless Chromium, {} KB of text ({blocks} blocks) in the rich editor and the same \
         text in the textarea editor, interleaved in one run{}. Machine shared with other work (2 cores, loaded).\n\n\
         | round | editor | keys | beforeinput→DOM p50 | p95 | →socket p50 | p95 | missing |\n|---|---|---|---|---|---|---|---|\n",
        text_bytes / 1000,
        if quick {
            " (**quick**: decides no target)"
        } else {
            ""
        }
    );
    for (i, r) in runs.iter().enumerate() {
        out += &format!(
            "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} |\n",
            i / 2,
            r.editor,
            r.keystrokes,
            r.dom_p50_ms,
            r.dom_p95_ms,
            r.send_p50_ms,
            r.send_p95_ms,
            r.missing
        );
    }
    let worst = |editor: &str, f: fn(&Run) -> f64| {
        runs.iter()
            .filter(|r| r.editor == editor)
            .map(f)
            .fold(f64::NAN, f64::max)
    };
    let rich_dom = worst("rich", |r| r.dom_p95_ms);
    let rich_send = worst("rich", |r| r.send_p95_ms);
    let plain_dom = worst("textarea", |r| r.dom_p95_ms);
    out += &format!(
        "\nTarget p95 < 16 ms (one frame): rich beforeinput→DOM p95 {rich_dom:.2} ms, →socket p95 {rich_send:.2} ms \
         (worst round) — {}{}. Rich / textarea DOM p95: {:.2}×.\n",
        if rich_dom < 16.0 && rich_send < 16.0 {
            "met"
        } else {
            "not met"
        },
        if quick {
            " (quick run: indicative only)"
        } else {
            ""
        },
        rich_dom / plain_dom
    );
    let kb = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0) / 1024.0;
    out += "\n| wasm (after wasm-bindgen) | raw | gzip |\n|---|---|---|\n";
    if let Some(b) = before {
        out += &format!(
            "| before (textarea editor) | {:.1} KB | {:.1} KB |\n",
            kb(b, "raw_bytes"),
            kb(b, "gzip_bytes")
        );
    }
    out += &format!(
        "| after (rich editor) | {:.1} KB | {:.1} KB |\n",
        kb(wasm, "raw_bytes"),
        kb(wasm, "gzip_bytes")
    );
    out
}
