//! The `quire` binary as a real child process, for restarts, `kill -9` and
//! the command line. The binary is built by `cargo xtask test` (or
//! `cargo build -p quire-server`) into the same target folder as the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::WAIT;

/// Path of the `quire` binary next to the running test executable.
pub fn quire_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/quire
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("quire{}", std::env::consts::EXE_SUFFIX)))
        .expect("target folder");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p quire-server --bin quire` first (`cargo xtask test` does)",
        binary.display()
    );
    binary
}

/// A running `quire serve`.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Lines the server logged, collected in the background.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `quire serve` on `data`, listening on `port` (0 = any).
    pub async fn start(data: &Path, port: u16, extra: &[&str]) -> Self {
        let mut child = Command::new(quire_binary())
            .arg("serve")
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("QUIRE_DATA", data)
            .env("QUIRE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn quire");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let lines = log.clone();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = tokio::time::timeout(WAIT, addr_rx)
            .await
            .unwrap_or_else(|_| panic!("quire did not start; log: {:?}", log.lock().unwrap()))
            .expect("log reader")
            .parse()
            .expect("listen address");
        Self { addr, child, log }
    }

    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    /// SIGKILL: no flush, no goodbye.
    pub async fn kill_9(mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY-free: `kill` the command, not libc, to avoid a dependency.
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("quire exits after SIGTERM")
            .expect("exit status")
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Runs a `quire` subcommand on `data` to completion: (status, stdout, stderr).
pub async fn run_cli(data: &Path, args: &[&str]) -> (std::process::ExitStatus, Vec<u8>, String) {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(quire_binary())
            .args(args)
            .env("QUIRE_DATA", data)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("quire command finishes in time")
    .expect("run quire");
    (
        output.status,
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
