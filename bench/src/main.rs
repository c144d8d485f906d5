//! `quire-bench [SCENARIO...] [--quick]`: Quire's benchmark suite
//! (`cargo xtask bench ...` runs it).
//!
//! Runs each scenario against Quire, the Yjs reference server
//! (`@y/websocket-server` 0.1.1 with leveldb persistence), y-sweet 0.9.1
//! when it is installed (see `servers::find_ysweet`; the bench never
//! installs it) and a bare broadcast server, interleaved in one run; writes
//! `bench/results/<scenario>.json` and regenerates `bench/RESULTS.md`.
//!
//! Full length by default; `--quick` runs are labelled quick in every table
//! and never decide a target.
//!
//! Scenarios: see [`SCENARIOS`] (default: all).
//! Options:
//!   --quick            small sizes and short windows (each scenario < 1 min)
//!   --quire-bin PATH   use this `quire` binary instead of building one
//!   --quire-commit REV the commit PATH was built from (else: unknown, and
//!                      its figures decide no target)
//!   --baseline-bin PATH the issue-time `quire` (built from
//!                      `servers::BASELINE_COMMIT`) instead of the one the
//!                      bench builds for durability
//!   --no-reference     skip the node reference server
//!   --servers LIST     only these of quire,reference,y-sweet,bare
//!   --report-only      only regenerate RESULTS.md from the JSON files
//!   --serve-broadcast ADDR   (internal) run the bare broadcast server
//!
//! Environment (for investigations): `QUIRE_TRACES` (the editing-traces
//! folder, default /work/shared/traces/editing-traces),
//! `QUIRE_BENCH_EXTRA_ARGS` (more `quire serve` flags, recorded in the
//! results), `QUIRE_BENCH_PERF=DIR` (attach `perf record` to every Quire),
//! `QUIRE_BENCH_WRAPPER` (run Quire under e.g. `valgrind --tool=massif`),
//! `QUIRE_BENCH_PERF_FREQ` (its sampling rate, default 499 Hz),
//! `QUIRE_BENCH_RESULTS=DIR` (write the results there instead of
//! bench/results), `QUIRE_BENCH_SWEEP=0` (fanout without its sweep),
//! `QUIRE_BENCH_TRACES=a,b` (only these traces),
//! `QUIRE_BENCH_YSWEET` (the y-sweet binary), `QUIRE_BENCH_LAUNCHER` (how
//! the command line is written in the results; set by `cargo xtask bench`).

mod broadcast;
mod report;
mod scenarios;
mod servers;
// PostgreSQL, Redis and `quire` node processes for the cluster scenario:
// the tests' set-up (std and libc only), compiled here too.
#[allow(dead_code)]
#[path = "../../tests/src/services.rs"]
mod services;
mod stats;
mod sys;
mod trace;
mod ws;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use servers::{Env, Kind};

/// Every scenario, in the order a full run takes them.
pub const SCENARIOS: &[&str] = &[
    "fanout",
    "traces",
    "storage",
    "idle",
    "coldload",
    "durability",
    "editor",
    "cluster",
];

/// The workspace root (this crate's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `bench/`
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What every scenario gets.
pub struct Ctx {
    pub env: Env,
    pub quick: bool,
}

impl Ctx {
    /// `full` in a full run, `quick` with `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

struct Args {
    scenarios: Vec<String>,
    quick: bool,
    quire_bin: Option<PathBuf>,
    quire_commit: Option<String>,
    baseline_bin: Option<PathBuf>,
    reference: bool,
    report_only: bool,
    servers: Option<Vec<Kind>>,
}

fn usage() -> String {
    format!(
        "usage: quire-bench [SCENARIO...] [--quick] [--quire-bin PATH [--quire-commit REV]] [--baseline-bin PATH] [--no-reference] [--servers quire,reference,y-sweet,bare] [--report-only]\n\
         scenarios: {}",
        SCENARIOS.join(", ")
    )
}

fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut args = Args {
        scenarios: Vec::new(),
        quick: false,
        quire_bin: None,
        quire_commit: None,
        baseline_bin: None,
        reference: true,
        report_only: false,
        servers: None,
    };
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--no-reference" => args.reference = false,
            "--report-only" => args.report_only = true,
            "--quire-bin" => {
                args.quire_bin = Some(it.next().ok_or("--quire-bin needs a path")?.into());
            }
            "--quire-commit" => {
                args.quire_commit = Some(it.next().ok_or("--quire-commit needs a commit")?.into());
            }
            "--baseline-bin" => {
                args.baseline_bin = Some(it.next().ok_or("--baseline-bin needs a path")?.into());
            }
            "--servers" => {
                let list = it.next().ok_or("--servers needs a list")?;
                let mut kinds = Vec::new();
                for name in list.split(',') {
                    kinds.push(Kind::from_name(name).ok_or(format!("unknown server {name:?}"))?);
                }
                args.servers = Some(kinds);
            }
            "-h" | "--help" => return Err(usage()),
            "all" => args
                .scenarios
                .extend(SCENARIOS.iter().map(|s| s.to_string())),
            name if SCENARIOS.contains(&name) => args.scenarios.push(name.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if args.scenarios.is_empty() {
        args.scenarios = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    if args.quire_commit.is_some() && args.quire_bin.is_none() {
        return Err("--quire-commit only goes with --quire-bin".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("--serve-broadcast") {
        let addr = raw.get(1).map_or("127.0.0.1:0", String::as_str);
        return match broadcast::run(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("broadcast server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args(&raw) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if args.report_only {
        return match report::regenerate() {
            Ok(path) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let fds = sys::raise_fd_limit(65_535);
    let nice = sys::renice(-10);
    println!("open-file limit: {fds}, nice {nice} (children inherit both)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tmp = std::env::temp_dir().join(format!("quire-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let code = runtime.block_on(async {
        let env = match prepare(&args, tmp).await {
            Ok(env) => env,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let ctx = Ctx {
            env,
            quick: args.quick,
        };
        let mut failed = false;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        for name in &args.scenarios {
            println!(
                "\n=== {name}{} ===",
                if ctx.quick { " (quick)" } else { "" }
            );
            let started = std::time::Instant::now();
            // Ctrl-C or SIGTERM: stop here; dropping the scenario kills its
            // servers, and the temporary folder is removed on the way out.
            let outcome = tokio::select! {
                outcome = scenarios::run(name, &ctx) => outcome,
                _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
                _ = terminate.recv() => Err("terminated".to_owned()),
            };
            if matches!(&outcome, Err(e) if e == "interrupted" || e == "terminated") {
                eprintln!("{name}: {}", outcome.unwrap_err());
                return ExitCode::FAILURE;
            }
            match outcome {
                Ok(results) => {
                    let path = report::write_scenario(name, &ctx, &raw, results);
                    println!(
                        "{name}: done in {:.0} s, wrote {}",
                        started.elapsed().as_secs_f64(),
                        path.display()
                    );
                }
                Err(e) => {
                    eprintln!("{name} failed: {e}");
                    failed = true;
                }
            }
        }
        match report::regenerate() {
            Ok(path) => println!("\nwrote {}", path.display()),
            Err(e) => eprintln!("could not write RESULTS.md: {e}"),
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

/// Removes this run's temporary folder on every exit path.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Finds or builds `quire`, installs the reference server if needed.
async fn prepare(args: &Args, tmp: PathBuf) -> Result<Env, String> {
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let bench_bin = std::env::current_exe().map_err(|e| e.to_string())?;
    let (quire_bin, measured) = match &args.quire_bin {
        Some(path) => (
            path.clone(),
            servers::Measured::given(args.quire_commit.clone()),
        ),
        None => {
            // What the build sees: the work tree as it is now.
            let measured = servers::Measured::work_tree();
            (build_quire(&bench_bin).await?, measured)
        }
    };
    if !quire_bin.exists() {
        return Err(format!("{} does not exist", quire_bin.display()));
    }
    println!("quire binary measured: {}", measured.describe());
    let peers = if args.reference
        && args
            .servers
            .as_ref()
            .is_none_or(|s| s.contains(&Kind::Reference))
    {
        match install_peers().await {
            Ok(dir) => Some(dir),
            Err(e) => {
                eprintln!("reference server unavailable, its columns will be empty: {e}");
                None
            }
        }
    } else {
        None
    };
    let wanted = |k: Kind| args.servers.as_ref().is_none_or(|only| only.contains(&k));
    let ysweet = if wanted(Kind::YSweet) {
        match servers::find_ysweet(&bench_bin) {
            Ok(path) => Some(path),
            Err(e) => {
                println!("skipping y-sweet: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut kinds = vec![Kind::Quire];
    if peers.is_some() {
        kinds.push(Kind::Reference);
    }
    if ysweet.is_some() {
        kinds.push(Kind::YSweet);
    }
    kinds.push(Kind::Bare);
    if let Some(only) = &args.servers {
        kinds.retain(|k| only.contains(k));
    }
    let quire_limit_args = servers::lift_limits(&quire_bin);
    println!(
        "quire limits lifted for the bench: {}",
        quire_limit_args.join(" ")
    );
    let baseline =
        if kinds.contains(&Kind::Quire) && args.scenarios.iter().any(|s| s == "durability") {
            match baseline_quire(args, &bench_bin).await {
                Ok(baseline) => {
                    println!(
                        "issue-time quire measured beside it: {}",
                        baseline.measured.describe()
                    );
                    Some(baseline)
                }
                Err(e) => {
                    println!("skipping the issue-time quire: {e}");
                    None
                }
            }
        } else {
            None
        };
    Ok(Env {
        quire_limit_args,
        quire_bin,
        measured,
        bench_bin,
        peers,
        ysweet,
        tmp,
        kinds,
        baseline,
    })
}

/// The `quire` of [`servers::BASELINE_COMMIT`]: `--baseline-bin`, or built
/// by the bench from that commit's files (`git archive`) into its own
/// target folder next to this binary's, `$CARGO_TARGET_DIR/baseline-REV`
/// (a few minutes the first time, a no-op after).
async fn baseline_quire(args: &Args, bench_bin: &Path) -> Result<servers::Baseline, String> {
    let commit = servers::BASELINE_COMMIT;
    let short = servers::baseline_short();
    if let Some(bin) = &args.baseline_bin {
        if !bin.exists() {
            return Err(format!("{} does not exist", bin.display()));
        }
        let measured = servers::Measured {
            commit: Some(short.to_owned()),
            dirty: None,
            source: format!("--baseline-bin, taken to be built from {short}"),
        };
        return Ok(servers::Baseline::new(bin.clone(), measured));
    }
    if args.quick {
        return Err(
            "a quick run does not build it (minutes the first time); give --baseline-bin".into(),
        );
    }
    let target_dir = bench_bin
        .parent()
        .and_then(Path::parent)
        .ok_or("no target folder")?;
    let dir = target_dir.join(format!("baseline-{short}"));
    let src = dir.join("src");
    // A tree without its lock file was left half-made (an interrupted
    // extraction of an earlier bench): made again.
    if !src.join("Cargo.lock").exists() {
        let _ = std::fs::remove_dir_all(&src);
        // Extracted aside and renamed once whole: an interrupted
        // extraction is never taken for a source tree.
        let partial = dir.join("src.partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        println!("extracting {short} into {}", src.display());
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("git archive \"$1\" | tar -x -C \"$2\"")
            .arg("sh")
            .arg(commit)
            .arg(&partial)
            .current_dir(workspace_root())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("cannot run git archive: {e}"))?;
        if !status.success() || !partial.join("Cargo.lock").exists() {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!(
                "git archive {short} failed ({status}): is the clone shallow?"
            ));
        }
        std::fs::rename(&partial, &src)
            .map_err(|e| format!("cannot rename {}: {e}", partial.display()))?;
    }
    // Its sources never change: an earlier build of them is as good.
    let bin = match cargo_build_quire(&src, &dir.join("target"), &["--locked"]).await {
        Ok(bin) => bin,
        Err(failure) => {
            let earlier = dir.join("target/release/quire");
            if !earlier.exists() {
                return Err(format!("{failure}, and no earlier build is there"));
            }
            eprintln!("{failure}; using the earlier build {}", earlier.display());
            earlier
        }
    };
    let measured = servers::Measured {
        commit: Some(short.to_owned()),
        dirty: Some(false),
        source: format!("{} {short}'s files", servers::BUILT_BY_THE_BENCH),
    };
    Ok(servers::Baseline::new(bin, measured))
}

/// `cargo build --release -p quire-server --bin quire` of the work tree
/// into this binary's target folder; a no-op when it is up to date.
async fn build_quire(bench_bin: &Path) -> Result<PathBuf, String> {
    let target_dir = bench_bin
        .parent()
        .and_then(Path::parent)
        .ok_or("no target folder")?;
    cargo_build_quire(&workspace_root(), target_dir, &[]).await
}

/// `cargo build --release -p quire-server --bin quire` (plus `extra`) of
/// the workspace at `workspace` into `target_dir`, returning the binary.
/// A failed build is an error: for the work tree, an earlier binary would
/// be measured as the current commit.
async fn cargo_build_quire(
    workspace: &Path,
    target_dir: &Path,
    extra: &[&str],
) -> Result<PathBuf, String> {
    let quire = target_dir.join("release/quire");
    println!(
        "building quire: cargo build --release -p quire-server --bin quire {}in {}",
        extra.iter().map(|a| format!("{a} ")).collect::<String>(),
        workspace.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = tokio::process::Command::new(cargo)
        .args(["build", "--release", "-p", "quire-server", "--bin", "quire"])
        .args(extra)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace)
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Ok(quire),
        Ok(s) => Err(format!(
            "cargo build of {} failed ({s})",
            workspace.display()
        )),
        Err(e) => Err(format!("cannot run cargo ({e})")),
    }
}

/// `npm ci` in bench/peers when node_modules is missing or older than the lock.
async fn install_peers() -> Result<PathBuf, String> {
    let dir = bench_dir().join("peers");
    let modules = dir.join("node_modules");
    let stamp = modules.join(".package-lock.json");
    let lock = dir.join("package-lock.json");
    let stale = match (std::fs::metadata(&stamp), std::fs::metadata(&lock)) {
        (Ok(s), Ok(l)) => match (s.modified(), l.modified()) {
            (Ok(s), Ok(l)) => s < l,
            _ => true,
        },
        _ => true,
    };
    if stale {
        println!(
            "installing the reference server: npm ci in {}",
            dir.display()
        );
        let run = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(600), run).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => return Err(format!("npm ci failed: {s}")),
            Ok(Err(e)) => return Err(format!("cannot run npm: {e}")),
            Err(_) => return Err("npm ci took over 10 minutes".into()),
        }
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !node.status.success() {
        return Err("node --version failed".into());
    }
    Ok(dir)
}
