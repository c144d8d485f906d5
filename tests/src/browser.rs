//! Headless Chromium (Debian's `chromium` + `chromium-driver`) driven over
//! WebDriver with fantoccini, for the browser scenes. Each [`Browser`] is a
//! separate Chromium with a fresh profile (its own IndexedDB, service
//! workers and BroadcastChannel), so two of them behave like two people;
//! windows of one browser behave like tabs of one person.
//!
//! What WebDriver cannot do (an IME composition) goes through the Chrome
//! DevTools Protocol: [`Browser::cdp`] connects to the page's DevTools
//! WebSocket (the port chromedriver opened, read from the profile's
//! `DevToolsActivePort`) and [`Cdp::call`] sends one command.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::WAIT;

/// Where screenshots go: `$CARGO_TARGET_DIR/browser-screenshots` (or next
/// to the test executable's target folder).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target folder");
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// The built web app: `QUIRE_WEB_DIST`, else `$CARGO_TARGET_DIR/quire-web`.
pub fn web_dist() -> PathBuf {
    let dist = std::env::var_os("QUIRE_WEB_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable");
            exe.parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .expect("target folder")
                .join("quire-web")
        });
    assert!(
        dist.join("index.html").exists(),
        "the web app is not built at {}: run `cargo xtask web` (`cargo xtask test` does)",
        dist.display()
    );
    dist
}

pub struct Browser {
    pub driver: WebDriver,
    chromedriver: Child,
    /// The Chromium that chromedriver started: killed when the browser is
    /// dropped, so a test that panics leaves no Chromium behind (killing
    /// chromedriver alone orphans it, and it runs on).
    chromium: Option<libc::pid_t>,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium.
    pub async fn start() -> Self {
        for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: install Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run does)"
            );
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("addr").port()
        };
        let chromedriver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile folder");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-default-apps", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let driver = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(driver) => break driver,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("could not start Chromium through chromedriver: {err}"),
            }
        };
        let chromium = driver
            .capabilities()
            .and_then(|c| c.get("goog:processID"))
            .and_then(Value::as_i64)
            .and_then(|pid| libc::pid_t::try_from(pid).ok());
        Self {
            driver,
            chromedriver,
            chromium,
            _profile: profile,
        }
    }

    pub async fn open(&self, url: &str) {
        self.driver.goto(url).await.expect("navigate");
    }

    /// Waits until the element matching `css` exists; returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.driver
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Runs JavaScript and returns its JSON result.
    pub async fn js(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.driver
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` (which returns a boolean) until true, or panics with `what`.
    pub async fn wait_js(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.js(script, vec![]).await == json!(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self
                    .screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "timed out waiting until {what} (screenshot: {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the current window under [`screenshot_dir`].
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.driver.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// A DevTools Protocol connection to the page shown now.
    pub async fn cdp(&self) -> Cdp {
        let file = self._profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + WAIT;
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = self
            .driver
            .current_url()
            .await
            .expect("current url")
            .to_string();
        let targets = devtools_get(port, "/json/list").await;
        let targets: Vec<Value> = serde_json::from_str(&targets).expect("DevTools target list");
        let target = targets
            .iter()
            .find(|t| t["type"] == "page" && t["url"] == url)
            .or_else(|| targets.iter().find(|t| t["type"] == "page"))
            .expect("a page target");
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("a DevTools WebSocket URL");
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("connect to DevTools");
        Cdp { ws, next: 1 }
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.driver.clone().close().await;
        if let Some(pid) = self.chromium {
            // Give Chromium a moment to quit by itself (it saves its profile).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            // SAFETY: kill with signal 0 only asks whether the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // SAFETY: as above.
            if unsafe { libc::kill(pid, 0) } != 0 {
                self.chromium = None; // gone: never signal a pid that may be reused
            }
        }
        let _ = self.chromedriver.start_kill();
        let _ = self.chromedriver.wait().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.chromium.take() {
            // SAFETY: a plain kill(2) of the process this browser started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// `GET` on the DevTools HTTP endpoint (HTTP/1.1 on loopback). Chromium
/// keeps the connection open after answering, whatever `Connection: close`
/// says, so the body is read by its `Content-Length`, never to the end.
async fn devtools_get(port: u16, path: &str) -> String {
    tokio::time::timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to DevTools");
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("DevTools answers with a Content-Length");
                if raw.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).into_owned();
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "DevTools closed the connection mid-answer");
            raw.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a DevTools answer in time")
}

/// One DevTools Protocol connection to a page.
pub struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Cdp {
    /// Sends `method` and waits for its answer (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::text(message))
            .await
            .expect("send to DevTools");
        let answer = tokio::time::timeout(WAIT, async {
            while let Some(frame) = self.ws.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
                if value["id"] == id {
                    return value;
                }
            }
            panic!("DevTools closed the connection");
        })
        .await
        .expect("a DevTools answer in time");
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }
}

/// Runs one scenario of `tests/compat/rich.mjs` (Tiptap's StarterKit schema
/// with y-prosemirror, from npm) against `server_url` (`ws://ADDR/ws`);
/// panics with its output unless it reports success; returns its result.
pub async fn rich_scenario(server_url: &str, scenario: &str, room: &str, arg: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat");
    assert!(
        dir.join("node_modules/@tiptap/core").exists()
            && dir.join("node_modules/y-prosemirror").exists(),
        "npm packages missing: run `npm ci` in {} (`cargo xtask test` does it)",
        dir.display()
    );
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg("rich.mjs")
            .args([server_url, scenario, room, arg])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the scenario finishes")
    .expect("node runs (install Node.js 20+)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rich.mjs {scenario} failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().expect("a result line");
    let result: Value = serde_json::from_str(last).expect("a JSON result");
    assert_eq!(result["ok"], true, "{stdout}");
    result
}
