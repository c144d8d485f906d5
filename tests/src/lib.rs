//! Test support for Quire's integration tests: real servers on loopback
//! (in-process or as a child process), a native yrs client speaking the
//! y-websocket protocol over tokio-tungstenite, and an HTTP client
//! (hyper-util's).
//!
//! Everything here targets 127.0.0.1 only and every wait is bounded.

pub mod browser;
pub mod client;
pub mod cluster;
pub mod held_store;
pub mod http;
pub mod process;
pub mod proxy;
pub mod services;

use std::net::SocketAddr;
use std::time::Duration;

use quire_server::{AppState, Config};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use client::Client;
pub use process::ServerProcess;

/// How long any test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A Quire server running inside the test process on 127.0.0.1:0 with its
/// own sled folder.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Keeps the data folder alive as long as the server (and after, for
    /// restarts), unless the caller supplied the folder.
    pub data: std::path::PathBuf,
    _dir: Option<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server with test-friendly settings (short grace periods).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting `tune` adjust the configuration.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut server = Self::start_in(data, tune).await;
        server._dir = Some(dir);
        server
    }

    /// Starts a server whose store holds durability back until the test
    /// releases it ([`held_store::HeldStore`]): updates are applied and
    /// relayed, but nothing is confirmed saved meanwhile.
    pub async fn start_held(
        tune: impl FnOnce(&mut Config),
    ) -> (Self, std::sync::Arc<held_store::HeldStore>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut held = None;
        let mut server = Self::start_on(dir.path().join("data"), tune, |sled| {
            let store = held_store::HeldStore::new(sled);
            held = Some(store.clone());
            store
        })
        .await;
        server._dir = Some(dir);
        (server, held.expect("wrapped"))
    }

    /// Starts a server on an existing data folder.
    pub async fn start_in(data: std::path::PathBuf, tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(data, tune, |store| store).await
    }

    /// Starts a server whose sled store is first wrapped by `wrap` (e.g. in
    /// a [`held_store::HeldStore`]).
    pub async fn start_on(
        data: std::path::PathBuf,
        tune: impl FnOnce(&mut Config),
        wrap: impl FnOnce(
            std::sync::Arc<quire_storage::SledStore>,
        ) -> std::sync::Arc<dyn quire_storage::DocStore>,
    ) -> Self {
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), data.clone());
        config.room_grace = Duration::from_millis(200);
        tune(&mut config);
        let store = wrap(quire_server::open_store(&config).expect("open store"));
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = AppState::new(config, store);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(quire_server::serve(state.clone(), listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            state,
            data,
            _dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `ws://addr/ws/` — append a document name.
    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    /// Shuts down gracefully and waits for it; keeps the data folder.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server result");
        }
    }

    /// Stops, then starts again on the same folder (new port). The store's
    /// folder lock is released once the old state is dropped.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let dir = self._dir.take();
        let data = self.data.clone();
        drop(self);
        let mut server = Self::start_in(data, |c| c.room_grace = Duration::from_millis(200)).await;
        server._dir = dir;
        server
    }

    /// Number of rooms in memory.
    pub fn live_rooms(&self) -> usize {
        self.state.rooms.live().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `condition` until it holds or [`WAIT`] passes; returns whether it held.
/// For state that has no change notification (e.g. a room's eviction timer).
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Runs `node <script> <args…>` in `tests/compat/` (the npm clients: stock
/// Yjs in `compat.mjs`, Tiptap/y-prosemirror in `rich.mjs`; `npm ci` there
/// first, `cargo xtask test` does it) and returns its JSON result line;
/// panics with the script's output unless it reports success. (The one
/// runner the server and browser tests' own copies can call.)
pub async fn npm_script(script: &str, args: &[&str]) -> serde_json::Value {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat");
    assert!(
        dir.join("node_modules/yjs").exists(),
        "npm packages missing: run `npm ci` in {} (`cargo xtask test` does it)",
        dir.display()
    );
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the script finishes")
    .expect("node runs (install Node.js 20+)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().expect("a result line");
    let result: serde_json::Value = serde_json::from_str(last).expect("a JSON result");
    assert_eq!(result["ok"], true, "{stdout}");
    result
}
