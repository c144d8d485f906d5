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
//!
//! Every DevTools call, tab step and wait has a deadline and an error that
//! names it: a stuck browser fails the run, it never hangs it. With
//! `QUIRE_BENCH_EDITOR_PROFILE=FILE`, one more rich pass (not counted)
//! runs under V8's sampling profiler and FILE gets its top functions.

use std::future::Future;
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

/// Runs one step of the scenario under a deadline; the error names the
/// step, so a stall reports where it happened instead of hanging the run.
async fn step<T>(
    what: &str,
    limit: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", limit.as_secs())),
    }
}

/// One HTTP/1.1 request. The answer ends after `Content-Length` bytes of
/// body, not at end of stream: Chromium's DevTools HTTP server ignores
/// `Connection: close` and keeps the connection open, so reading to the
/// end of the stream waited forever (the stall of the first runs).
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
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            let body_start = end + 4;
            if length.is_some_and(|n| raw.len() >= body_start + n) {
                let n = length.unwrap_or(0);
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = String::from_utf8_lossy(&raw[body_start..body_start + n]).into_owned();
                return Ok((status, body));
            }
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "{method} {path}: connection closed before a complete answer ({} bytes)",
                raw.len()
            ));
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next: u64,
    /// Events (messages without an id) that arrived while waiting for an
    /// answer, kept only while a trace is being taken.
    events: Vec<Value>,
    /// Whether to keep events at all (a trace's data arrives as events).
    keep_events: bool,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        let exchange = async {
            self.ws
                .send(Message::text(msg))
                .await
                .map_err(|e| e.to_string())?;
            while let Some(frame) = self.ws.next().await {
                let text = match frame.map_err(|e| e.to_string())? {
                    Message::Text(text) => text,
                    Message::Close(_) => break,
                    _ => continue,
                };
                let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                if v.get("id").is_none() && self.keep_events {
                    self.events.push(v);
                    continue;
                }
                if v["id"] == id {
                    if let Some(err) = v.get("error") {
                        return Err(err.to_string());
                    }
                    return Ok(v["result"].clone());
                }
            }
            Err("DevTools closed the connection".to_owned())
        };
        step(&format!("DevTools {method}"), CDP_DEADLINE, exchange).await
    }

    async fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = r.get("exceptionDetails") {
            return Err(format!(
                "script threw: {}",
                exception["exception"]["description"]
                    .as_str()
                    .unwrap_or(&exception["text"].to_string())
            ));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits for an event named `method`, keeping the others.
    async fn wait_event(&mut self, method: &str) -> Result<(), String> {
        let wait = async {
            if self.events.iter().any(|e| e["method"] == method) {
                return Ok(());
            }
            while let Some(frame) = self.ws.next().await {
                let Message::Text(text) = frame.map_err(|e| e.to_string())? else {
                    continue;
                };
                let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                let done = v["method"] == method;
                self.events.push(v);
                if done {
                    return Ok(());
                }
            }
            Err("DevTools closed the connection".to_owned())
        };
        step(&format!("DevTools event {method}"), READY_DEADLINE, wait).await
    }

    async fn wait_for(&mut self, what: &str, expr: &str) -> Result<(), String> {
        let started = std::time::Instant::now();
        while started.elapsed() < READY_DEADLINE {
            if self.eval(expr).await? == json!(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "waited {} s and still not {what}",
            READY_DEADLINE.as_secs()
        ))
    }
}

/// The longest a single DevTools call may take (a keystroke, an evaluate).
const CDP_DEADLINE: Duration = Duration::from_secs(30);
/// The longest a page may take to load its document and become editable.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// The longest one step of opening a tab may take.
const TAB_DEADLINE: Duration = Duration::from_secs(20);

/// One headless Chromium for the whole run.
struct Chromium {
    /// Killed on drop too, so an early error never leaves it running.
    child: tokio::process::Child,
    /// A fresh profile, removed when the browser has stopped.
    profile: PathBuf,
    /// Its DevTools port (it chose it: `--remote-debugging-port=0`).
    port: u16,
}

impl Chromium {
    /// Stops the browser and waits for it, then removes its profile.
    async fn close(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn chromium(ctx: &Ctx) -> Result<Chromium, String> {
    let binary = "/usr/bin/chromium";
    if !std::path::Path::new(binary).exists() {
        return Err("chromium is missing (apt-get install chromium)".into());
    }
    let profile = ctx.env.tmp.join("editor-chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(binary);
    command
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
        .kill_on_drop(true);
    crate::servers::die_with_bench(&mut command);
    let child = command
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
        profile,
        port,
    })
}

/// Opens a tab on `url` and connects to it; each step has a deadline.
async fn page(chrome: &Chromium, url: &str) -> Result<Cdp, String> {
    let addr = format!("127.0.0.1:{}", chrome.port);
    let (status, body) = step(
        "DevTools: open a tab (PUT /json/new)",
        TAB_DEADLINE,
        http(&addr, "PUT", &format!("/json/new?{url}"), b""),
    )
    .await?;
    let target: Value = serde_json::from_str(&body)
        .map_err(|e| format!("DevTools: open a tab: {status} {e}: {body}"))?;
    let id = target["id"]
        .as_str()
        .ok_or_else(|| format!("DevTools: open a tab: no target id in {body}"))?;
    let ws_url = format!("ws://{addr}/devtools/page/{id}");
    let (ws, _) = step("DevTools: connect to the tab", TAB_DEADLINE, async {
        tokio_tungstenite::connect_async(&ws_url)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let mut cdp = Cdp {
        ws,
        next: 1,
        events: Vec::new(),
        keep_events: false,
    };
    // Keystrokes go to the focused tab: the one measured.
    cdp.call("Page.bringToFront", json!({})).await?;
    Ok(cdp)
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

/// CPU used by everything on the machine over `span`, in % of one core.
async fn background_load(span: Duration) -> f64 {
    let (busy0, _) = crate::sys::machine_cpu();
    let started = std::time::Instant::now();
    tokio::time::sleep(span).await;
    let (busy1, _) = crate::sys::machine_cpu();
    100.0 * (busy1 - busy0) / started.elapsed().as_secs_f64()
}

/// Both editors in the same browser, one after the other, twice
/// (interleaved), each in a fresh tab.
async fn rounds(
    chrome: &Chromium,
    addr: &str,
    text_bytes: usize,
    keystrokes: usize,
) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let trace_dir = std::env::var_os("QUIRE_BENCH_EDITOR_TRACE").map(PathBuf::from);
    for round in 0..2 {
        for (editor, doc) in [("rich", "bench-rich"), ("textarea", "bench-plain")] {
            let mut cdp = page(chrome, &format!("http://{addr}/d/{doc}"))
                .await
                .map_err(|e| format!("round {round} {editor}: {e}"))?;
            let run = async {
                cdp.wait_for(
                    "the editor is ready and saved",
                    "(() => { const e = document.querySelector('#editor'); const s = document.querySelector('#status');\
                     return !!e && !!s && s.textContent.trim() === 'All changes saved' && (e.tagName === 'TEXTAREA' ? !e.readOnly : e.dataset.ready === 'true'); })()",
                )
                .await?;
                match &trace_dir {
                    Some(dir) => {
                        trace_start(&mut cdp).await?;
                        let run = measure(&mut cdp, editor, text_bytes, keystrokes).await;
                        let out = dir.join(format!("round{round}-{editor}.json"));
                        trace_end(&mut cdp, &out).await?;
                        run
                    }
                    None => measure(&mut cdp, editor, text_bytes, keystrokes).await,
                }
            }
            .await
            .map_err(|e| format!("round {round} {editor}: {e}"))?;
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
    if let Some(out) = std::env::var_os("QUIRE_BENCH_EDITOR_PROFILE") {
        profile(chrome, addr, text_bytes, keystrokes, &PathBuf::from(out)).await?;
    }
    Ok(runs)
}

/// Trace categories: the renderer's main-thread work (script, style,
/// layout, paint, selection) and V8's sampled stacks inside it.
const TRACE_CATEGORIES: &str = "devtools.timeline,disabled-by-default-devtools.timeline,\
     disabled-by-default-devtools.timeline.frame,v8.execute,blink.user_timing,\
     disabled-by-default-v8.cpu_profiler";

/// For investigations (`QUIRE_BENCH_EDITOR_TRACE=DIR`): a DevTools trace
/// of the pass that follows (the measured one: tracing slows it a little).
async fn trace_start(cdp: &mut Cdp) -> Result<(), String> {
    cdp.keep_events = true;
    cdp.events.clear();
    cdp.call(
        "Tracing.start",
        json!({"categories": TRACE_CATEGORIES, "transferMode": "ReportEvents"}),
    )
    .await?;
    Ok(())
}

/// Ends the trace and writes it as a Chrome trace file (`traceEvents`,
/// loadable in DevTools' Performance panel) with the pass's latencies.
async fn trace_end(cdp: &mut Cdp, out: &std::path::Path) -> Result<(), String> {
    let lat = cdp.eval("JSON.stringify(window.__lat)").await?;
    cdp.call("Tracing.end", json!({})).await?;
    cdp.wait_event("Tracing.tracingComplete").await?;
    let mut trace = Vec::new();
    for e in std::mem::take(&mut cdp.events) {
        if e["method"] == "Tracing.dataCollected"
            && let Value::Array(values) = &e["params"]["value"]
        {
            trace.extend(values.iter().cloned());
        }
    }
    cdp.keep_events = false;
    let lat: Value = serde_json::from_str(lat.as_str().unwrap_or("[]")).unwrap_or(Value::Null);
    let file = json!({"traceEvents": trace, "latencies": lat}).to_string();
    std::fs::write(out, file).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("  trace written to {}", out.display());
    Ok(())
}

/// For investigations (`QUIRE_BENCH_EDITOR_PROFILE=FILE`): one more rich
/// pass, after the measured ones and not counted in them, under the V8
/// sampling profiler; writes the functions with the most self time.
async fn profile(
    chrome: &Chromium,
    addr: &str,
    text_bytes: usize,
    keystrokes: usize,
    out: &std::path::Path,
) -> Result<(), String> {
    let mut cdp = page(chrome, &format!("http://{addr}/d/bench-rich")).await?;
    cdp.wait_for(
        "the rich editor is ready",
        "(() => { const e = document.querySelector('#editor'); return !!e && e.dataset.ready === 'true'; })()",
    )
    .await?;
    cdp.call("Profiler.enable", json!({})).await?;
    cdp.call("Profiler.setSamplingInterval", json!({"interval": 200}))
        .await?;
    cdp.call("Profiler.start", json!({})).await?;
    measure(&mut cdp, "rich", text_bytes, keystrokes).await?;
    let profile = cdp.call("Profiler.stop", json!({})).await?;
    let _ = cdp.call("Page.close", json!({})).await;
    let mut hits: std::collections::HashMap<String, u64> = Default::default();
    let mut total = 0;
    for node in profile["profile"]["nodes"].as_array().into_iter().flatten() {
        let n = node["hitCount"].as_u64().unwrap_or(0);
        let name = node["callFrame"]["functionName"].as_str().unwrap_or("");
        let name = if name.is_empty() { "(anonymous)" } else { name };
        *hits.entry(name.to_owned()).or_default() += n;
        total += n;
    }
    let mut top: Vec<_> = hits.into_iter().collect();
    top.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    let mut text =
        format!("self samples of {total} (interval 200 µs), rich editor, {keystrokes} keys\n");
    for (name, n) in top.iter().take(40) {
        text += &format!(
            "{:6.2} %  {name}\n",
            100.0 * *n as f64 / total.max(1) as f64
        );
    }
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "  profile of one more rich pass written to {}",
        out.display()
    );
    Ok(())
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
        let (status, body) = step(
            &format!("storing {name} on the server"),
            Duration::from_secs(120),
            http(
                &server.addr,
                "PUT",
                &format!("/api/docs/{name}/snapshot?format=yjs"),
                update,
            ),
        )
        .await?;
        if status >= 300 {
            return Err(format!("storing {name}: {status} {body}"));
        }
    }
    // Other work on the machine over a short idle span before the browser
    // starts (the server is idle then): the runs' figures carry it.
    let background_cpu_pct = background_load(Duration::from_secs(3)).await;
    println!("  other work on the machine: ≈ {background_cpu_pct:.0} % of a core");
    let measured = match chromium(ctx).await {
        Ok(chrome) => {
            let runs = rounds(&chrome, &server.addr, text.len(), keystrokes).await;
            chrome.close().await;
            runs
        }
        Err(e) => Err(e),
    };
    server.stop(STOP_GRACE).await;
    let runs = measured?;
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
        background_cpu_pct,
    );
    Ok(json!({
        "quick": ctx.quick,
        "doc_text_bytes": text.len(),
        "rich_update_bytes": rich_update.len(),
        "blocks": blocks.len(),
        "runs": runs,
        "wasm": wasm,
        "wasm_before": before,
        "usage": {"background_cpu_pct": background_cpu_pct},
        "note": "latency in one headless Chromium on a shared 2-core machine; usage.background_cpu_pct is the CPU other work used just before",
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
    background_cpu_pct: f64,
) -> String {
    let mut out = format!(
        "Keystroke latency in headless Chromium, {} KB of text ({blocks} blocks) in the rich editor and the same \
         text in the textarea editor, interleaved in one run{}. Machine shared with other work (2 cores): other \
         work used ≈ {background_cpu_pct:.0} % of a core just before the browser started{}.\n\n\
         | round | editor | keys | beforeinput→DOM p50 | p95 | →socket p50 | p95 | missing |\n|---|---|---|---|---|---|---|---|\n",
        text_bytes / 1000,
        if quick {
            " (**quick**: decides no target)"
        } else {
            ""
        },
        if background_cpu_pct > 50.0 {
            " (**loaded**)"
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
