//! The servers under test, each a child process measured through `/proc`:
//! Quire (`quire serve`, release build), the Yjs reference server
//! (`@y/websocket-server` on node, leveldb persistence on), y-sweet 0.9.1
//! (the Rust Yjs server, when installed: see [`find_ysweet`]; filesystem
//! store in the run's temporary folder), and the bare broadcast server of
//! this crate (`quire-bench --serve-broadcast`).
//!
//! Children die with the bench: `kill_on_drop`, and `PR_SET_PDEATHSIG` so
//! that even a `kill -9` of the bench takes them along.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::sys::{self, ProcSample};

/// Which server a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Quire,
    Reference,
    #[serde(rename = "y-sweet")]
    YSweet,
    Bare,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Quire => "Quire",
            Kind::Reference => "y-websocket-server",
            Kind::YSweet => "y-sweet",
            Kind::Bare => "bare broadcast",
        }
    }

    /// The name used in `--servers` and in the result files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Quire => "quire",
            Kind::Reference => "reference",
            Kind::YSweet => "y-sweet",
            Kind::Bare => "bare",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Quire, Kind::Reference, Kind::YSweet, Kind::Bare]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// Whether the server sends a client's own updates back to it (the
    /// reference and y-sweet broadcast to every connection of the document).
    pub fn echoes_own_updates(self) -> bool {
        matches!(self, Kind::Reference | Kind::YSweet)
    }

    /// Whether the server keeps documents (all but the bare server).
    pub fn keeps_documents(self) -> bool {
        self != Kind::Bare
    }
}

/// The y-sweet version the bench measures.
pub const YSWEET_VERSION: &str = "0.9.1";

/// How to install that y-sweet where [`find_ysweet`] looks first.
pub const YSWEET_INSTALL: &str =
    "cargo install y-sweet --version 0.9.1 --locked --root ~/.cache/quire/y-sweet-0.9.1";

/// Finds an installed y-sweet 0.9.1: `QUIRE_BENCH_YSWEET` (a path), then
/// `~/.cache/quire/y-sweet-0.9.1/bin/y-sweet`, then
/// `$CARGO_TARGET_DIR/y-sweet-0.9.1/bin/y-sweet` (next to the bench's own
/// target folder), then `y-sweet` on `PATH`. The bench never installs it.
pub fn find_ysweet(bench_bin: &Path) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("QUIRE_BENCH_YSWEET") {
        candidates.push(path.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/quire/y-sweet-0.9.1/bin/y-sweet"));
    }
    if let Some(target) = bench_bin.parent().and_then(Path::parent) {
        candidates.push(target.join("y-sweet-0.9.1/bin/y-sweet"));
    }
    candidates.push("y-sweet".into());
    let mut seen = Vec::new();
    for candidate in candidates {
        let Ok(out) = std::process::Command::new(&candidate)
            .arg("version")
            .output()
        else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if version == YSWEET_VERSION {
            return Ok(candidate);
        }
        seen.push(format!("{} is version {version:?}", candidate.display()));
    }
    Err(format!(
        "y-sweet {YSWEET_VERSION} is not installed{}; to include it (about 2.5 min): {YSWEET_INSTALL}",
        if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join(", "))
        }
    ))
}

/// Where the bench finds its programs.
#[derive(Debug, Clone)]
pub struct Env {
    pub quire_bin: PathBuf,
    /// Which commit the `quire` binary was built from.
    pub measured: Measured,
    pub bench_bin: PathBuf,
    /// `bench/peers` with `node_modules` installed, if node is usable.
    pub peers: Option<PathBuf>,
    /// The y-sweet binary, if installed.
    pub ysweet: Option<PathBuf>,
    /// Root of this run's temporary data folders.
    pub tmp: PathBuf,
    /// Fixed kinds in the order they run, interleaved per measurement.
    pub kinds: Vec<Kind>,
    /// Flags lifting Quire's abuse limits (see [`lift_limits`]).
    pub quire_limit_args: Vec<String>,
    /// The issue-time `quire` ([`BASELINE_COMMIT`]) for the scenarios whose
    /// target compares with it (durability), if it could be built.
    pub baseline: Option<Baseline>,
}

/// Main when issue 14 was filed (the commit before the benchmarks
/// came in): what its target 5 calls "today's" saved updates/s. Measured
/// beside the current `quire` in the same run, since a figure from another
/// machine or day cannot decide a ratio.
pub const BASELINE_COMMIT: &str = "b2b74f02f41ea419d42b1a1a84b544a320b34f5b";

/// [`BASELINE_COMMIT`] as tables and folder names show it.
pub fn baseline_short() -> &'static str {
    &BASELINE_COMMIT[..7]
}

/// A second `quire` binary, measured in the same run as the current one.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub bin: PathBuf,
    /// Which commit it was built from, and how that is known.
    pub measured: Measured,
    /// [`lift_limits`] for this binary (its flags may differ).
    pub limit_args: Vec<String>,
}

impl Baseline {
    pub fn new(bin: PathBuf, measured: Measured) -> Self {
        let limit_args = lift_limits(&bin);
        Self {
            bin,
            measured,
            limit_args,
        }
    }
}

/// What the `quire` binary is built from: the files below (the crates in
/// the binary, and the lock file) decide it; bench/, tests/ and docs do not.
pub const SERVER_PATHS: [&str; 6] = [
    "server",
    "storage",
    "protocol",
    "client",
    "Cargo.toml",
    "Cargo.lock",
];

/// Runs git in the workspace; its trimmed output if it succeeded.
pub fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(crate::workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether the work tree has uncommitted changes in [`SERVER_PATHS`].
pub fn server_sources_dirty() -> Option<bool> {
    let mut args = vec!["status", "--porcelain", "--"];
    args.extend(SERVER_PATHS);
    git(&args).map(|out| !out.is_empty())
}

/// How [`Measured::source`] begins for a binary the bench built itself
/// (anything else was given on the command line and is taken on trust).
pub const BUILT_BY_THE_BENCH: &str = "built by the bench from";

/// The commit of the `quire` binary measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Short hash, if known.
    pub commit: Option<String>,
    /// Uncommitted changes to the server's sources were in the build.
    pub dirty: Option<bool>,
    /// How the commit is known.
    pub source: String,
}

impl Measured {
    /// The bench builds `quire` from the work tree: HEAD, plus whatever
    /// uncommitted changes the server's sources hold.
    pub fn work_tree() -> Self {
        Self {
            commit: git(&["rev-parse", "--short", "HEAD"]),
            dirty: server_sources_dirty(),
            source: format!("{BUILT_BY_THE_BENCH} the work tree"),
        }
    }

    /// `--quire-bin`, with the commit `--quire-commit` names (if any).
    pub fn given(commit: Option<String>) -> Self {
        let resolved = commit
            .as_deref()
            .and_then(|c| git(&["rev-parse", "--short", &format!("{c}^{{commit}}")]));
        Self {
            source: match (&commit, &resolved) {
                (Some(_), Some(_)) => "--quire-bin, commit given by --quire-commit".into(),
                (Some(c), None) => format!("--quire-bin, --quire-commit {c} is not a commit here"),
                (None, _) => "--quire-bin without --quire-commit: commit unknown".into(),
            },
            commit: resolved,
            dirty: None,
        }
    }

    pub fn describe(&self) -> String {
        match (&self.commit, self.dirty) {
            (Some(c), Some(true)) => format!("{c} + uncommitted server changes ({})", self.source),
            (Some(c), _) => format!("{c} ({})", self.source),
            (None, _) => format!("unknown commit ({})", self.source),
        }
    }
}

/// Quire refuses more than 1,000 connections per IP address and slows any
/// connection past its share of room time, 100,000 messages/s or 8 MiB/s
/// (beyond a burst). Every bench client comes from
/// 127.0.0.1 and the trace replay is a deliberate flood, so the bench lifts
/// these limits (where this `quire` has them) to measure the server's
/// capacity; the reference server has no such limits.
pub fn lift_limits(quire: &Path) -> Vec<String> {
    let help = std::process::Command::new(quire)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    [
        ("--max-connections", "1000000"),
        ("--max-connections-per-ip", "1000000"),
        ("--max-rooms", "1000000"),
        ("--max-messages-per-sec", "1000000000"),
        ("--max-bytes-per-sec", "1000000000000"),
        ("--max-room-ms-per-sec", "1000000"),
    ]
    .into_iter()
    .filter(|(flag, _)| help.contains(&format!("{flag} ")))
    .flat_map(|(flag, value)| [flag.to_owned(), value.to_owned()])
    .collect()
}

impl Env {
    /// This environment with the baseline `quire` in place of the current
    /// one, if there is a baseline.
    pub fn with_baseline_quire(&self) -> Option<Env> {
        let baseline = self.baseline.as_ref()?;
        Some(Env {
            quire_bin: baseline.bin.clone(),
            measured: baseline.measured.clone(),
            quire_limit_args: baseline.limit_args.clone(),
            baseline: None,
            ..self.clone()
        })
    }

    /// A fresh, empty folder for one server's data.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create data folder");
        dir
    }
}

/// How to start one server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Data folder (Quire's sled folder, the reference's leveldb folder).
    pub data: Option<PathBuf>,
    /// Extra `quire serve` flags.
    pub quire_args: Vec<String>,
    /// Extra node flags (before the script).
    pub node_args: Vec<String>,
    /// Run Quire with its default abuse limits instead of lifting them.
    pub default_limits: bool,
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    pub addr: String,
    pub pid: u32,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// `perf record` attached to Quire when `QUIRE_BENCH_PERF` names a folder.
    perf: Option<Child>,
}

/// Attaches `perf record` (software cpu-clock sampling, so it works in VMs
/// without hardware counters) to `pid`, writing `<dir>/<n>.perf.data`.
/// Makes a child the bench starts die with it: `PR_SET_PDEATHSIG`, so
/// that even a `kill -9` of the bench takes the child along.
pub fn die_with_bench(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn attach_perf(pid: u32) -> Option<Child> {
    let dir = std::env::var_os("QUIRE_BENCH_PERF")?;
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = PathBuf::from(dir).join(format!("quire-{n:03}.perf.data"));
    let freq = std::env::var("QUIRE_BENCH_PERF_FREQ").unwrap_or_else(|_| "499".to_owned());
    let mut command = Command::new("perf");
    command
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            &freq,
            "--call-graph",
            "dwarf,8192",
            "-o",
        ])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    die_with_bench(&mut command);
    let child = command.spawn().ok()?;
    println!("  (perf recording Quire into {})", out.display());
    Some(child)
}

/// Lines of a child's output kept for error messages.
const LOG_LINES: usize = 200;
/// Longest wait for a server to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn collect_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    marker: &'static str,
    found: Arc<Mutex<Option<oneshot::Sender<String>>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split(marker).nth(1) {
                // Up to the first space or terminal colour code.
                let value = rest
                    .split(|c: char| c.is_whitespace() || c == '\u{1b}')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(tx) = found.lock().unwrap().take() {
                    let _ = tx.send(value);
                }
            }
            let mut log = log.lock().unwrap();
            if log.len() >= LOG_LINES {
                log.remove(0);
            }
            log.push(line);
        }
    });
}

impl Server {
    /// Starts a server of `kind` on 127.0.0.1 and waits until it listens.
    pub async fn start(env: &Env, kind: Kind, options: &Options) -> Result<Server, String> {
        let (mut command, marker) = match kind {
            Kind::Quire => {
                // For investigations: run Quire under a wrapper (valgrind ...).
                let mut c = match std::env::var("QUIRE_BENCH_WRAPPER") {
                    Ok(wrapper) if !wrapper.trim().is_empty() => {
                        let mut words = wrapper.split_whitespace();
                        let mut c = Command::new(words.next().unwrap_or_default());
                        c.args(words).arg(&env.quire_bin);
                        c
                    }
                    _ => Command::new(&env.quire_bin),
                };
                c.arg("serve").arg("--addr").arg("127.0.0.1:0");
                if !options.default_limits {
                    c.args(&env.quire_limit_args);
                }
                c.args(&options.quire_args);
                // For investigations: extra flags for every `quire serve`.
                if let Ok(extra) = std::env::var("QUIRE_BENCH_EXTRA_ARGS") {
                    c.args(extra.split_whitespace());
                }
                let data = options.data.clone().ok_or("Quire needs a data folder")?;
                c.env("QUIRE_DATA", data)
                    .env("QUIRE_LOG", "info,tower_http=warn")
                    .env("NO_COLOR", "1");
                (c, "listening on http://")
            }
            Kind::Reference => {
                let peers = env
                    .peers
                    .as_ref()
                    .ok_or("the reference server is not installed (node/npm missing)")?;
                let mut c = Command::new("node");
                c.args(&options.node_args);
                c.arg(peers.join("node_modules/@y/websocket-server/src/server.js"));
                c.env("HOST", "127.0.0.1")
                    .env("PORT", free_port().to_string());
                if let Some(data) = &options.data {
                    c.env("YPERSISTENCE", data);
                }
                (c, "running at ")
            }
            Kind::YSweet => {
                let bin = env.ysweet.as_ref().ok_or("y-sweet is not installed")?;
                let mut c = Command::new(bin);
                c.arg("serve");
                if let Some(data) = &options.data {
                    c.arg(data);
                }
                // Its default log level (info) writes lines for every
                // update; warn keeps the logging out of the measurement.
                // The connection string it prints gives the port.
                c.args(["--host", "127.0.0.1", "--port", "0"])
                    .env("NO_COLOR", "1")
                    .env("RUST_LOG", "warn");
                (c, "ys://")
            }
            Kind::Bare => {
                let mut c = Command::new(&env.bench_bin);
                c.arg("--serve-broadcast").arg("127.0.0.1:0");
                (c, "listening on ")
            }
        };
        let port_env = command
            .as_std()
            .get_envs()
            .find(|(k, _)| *k == "PORT")
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_bench(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.label()))?;
        let pid = child.id().ok_or("child has no pid")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel();
        let found = Arc::new(Mutex::new(Some(tx)));
        collect_lines(
            child.stdout.take().expect("stdout"),
            log.clone(),
            marker,
            found.clone(),
        );
        collect_lines(
            child.stderr.take().expect("stderr"),
            log.clone(),
            marker,
            found,
        );
        let announced = tokio::time::timeout(START_TIMEOUT, rx).await;
        let addr = match (announced, kind) {
            (Ok(Ok(_)), Kind::Reference) => format!("127.0.0.1:{}", port_env.unwrap_or_default()),
            (Ok(Ok(addr)), _) => addr.trim_end_matches('/').to_owned(),
            _ => {
                let _ = child.start_kill();
                return Err(format!(
                    "{} did not start; output: {:?}",
                    kind.label(),
                    log.lock().unwrap()
                ));
            }
        };
        let perf = if kind == Kind::Quire {
            attach_perf(pid)
        } else {
            None
        };
        Ok(Server {
            kind,
            addr,
            pid,
            child,
            log,
            perf,
        })
    }

    /// The WebSocket address of a room.
    pub fn url(&self, room: &str) -> String {
        match self.kind {
            Kind::Quire => format!("ws://{}/ws/{room}", self.addr),
            Kind::YSweet => format!("ws://{}/d/{room}/ws/{room}", self.addr),
            Kind::Reference | Kind::Bare => format!("ws://{}/{room}", self.addr),
        }
    }

    pub fn sample(&self) -> ProcSample {
        sys::sample(self.pid).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].to_vec()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns
    /// the last sample taken before the signal and whether it exited by itself.
    pub async fn stop(mut self, grace: Duration) -> (ProcSample, bool) {
        let last = self.sample();
        if let Some(mut perf) = self.perf.take() {
            if let Some(pid) = perf.id() {
                sys::signal(pid, libc::SIGINT);
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), perf.wait()).await;
        }
        // y-sweet shuts down (and saves its documents) on Ctrl-C only.
        let signal = if self.kind == Kind::YSweet {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        sys::signal(self.pid, signal);
        let clean = matches!(
            tokio::time::timeout(grace, self.child.wait()).await,
            Ok(Ok(_))
        );
        if !clean {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
        (last, clean)
    }
}

/// `quire --version`, `node --version` and the peers' package versions.
pub fn versions(env: &Env) -> serde_json::Value {
    let run = |program: &Path, arg: &str| {
        std::process::Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let package = |name: &str| -> Option<String> {
        let path = env
            .peers
            .as_ref()?
            .join("node_modules")
            .join(name)
            .join("package.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        json.get("version")?.as_str().map(str::to_owned)
    };
    let lock =
        std::fs::read_to_string(crate::workspace_root().join("Cargo.lock")).unwrap_or_default();
    let crate_version = |name: &str| -> Option<String> {
        let mut lines = lock.lines();
        while let Some(line) = lines.next() {
            if line == format!("name = \"{name}\"") {
                return lines
                    .next()
                    .and_then(|l| l.strip_prefix("version = \""))
                    .map(|v| v.trim_end_matches('"').to_owned());
            }
        }
        None
    };
    serde_json::json!({
        "quire": run(&env.quire_bin, "--version"),
        "measured": env.measured,
        "head_when_written": git(&["rev-parse", "--short", "HEAD"]),
        "y_sweet": env.ysweet.as_ref().map(|_| YSWEET_VERSION),
        "yrs": crate_version("yrs"),
        "tokio_tungstenite": crate_version("tokio-tungstenite"),
        "node": env.peers.as_ref().and_then(|_| run(Path::new("node"), "--version")),
        "y_websocket_server": package("@y/websocket-server"),
        "yjs": package("yjs"),
        "y_leveldb": package("y-leveldb"),
        "leveldown": package("leveldown"),
        "ws_node": package("ws"),
    })
}
