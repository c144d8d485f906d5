//! Headless Chromium (Debian's `chromium` + `chromium-driver`) driven over
//! WebDriver with fantoccini, for the browser scenes. Each [`Browser`] is a
//! separate Chromium with a fresh profile (its own IndexedDB, service
//! workers and BroadcastChannel), so two of them behave like two people;
//! windows of one browser behave like tabs of one person.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};

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
        Self {
            driver,
            chromedriver,
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

    pub async fn close(self) {
        let _ = self.driver.close().await;
        drop(self.chromedriver);
    }
}
