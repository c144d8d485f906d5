//! `cargo xtask cluster`: a Quire cluster on this machine, for trying
//! cluster mode by hand. PostgreSQL and Redis (own data folders under the
//! target dir, free loopback ports, installed with apt-get when missing),
//! three `quire` nodes on them and HAProxy (`server/haproxy.cfg`) in front;
//! prints the URL and runs until Ctrl-C (or `--for DURATION`), then stops
//! everything. The set-up itself is `tests/src/cluster.rs`, which the
//! HAProxy tests run too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::services::http_status;
use crate::{Failure, cargo, run, run_step, web};

/// Set by SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// What `cargo xtask cluster` was asked for.
#[derive(Debug, Default, PartialEq)]
struct Options {
    /// Stop on its own after this long.
    run_for: Option<Duration>,
    /// Build the debug `quire` (faster to build) instead of release.
    debug: bool,
    /// Where everything lives (default: `<target>/quire-cluster`).
    dir: Option<PathBuf>,
}

fn parse(args: &[OsString]) -> Result<Options, Failure> {
    let mut options = Options::default();
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--for" => {
                let value = args
                    .next()
                    .ok_or_else(|| Failure::usage("--for needs a duration, e.g. 30s"))?;
                options.run_for = Some(duration(&value)?);
            }
            "--debug" => options.debug = true,
            "--dir" => {
                let value = args
                    .next()
                    .ok_or_else(|| Failure::usage("--dir needs a folder"))?;
                options.dir = Some(PathBuf::from(value));
            }
            other => {
                return Err(Failure::usage(format!(
                    "`cargo xtask cluster` does not take `{other}`"
                )));
            }
        }
    }
    Ok(options)
}

/// `30s`, `2m`, `500ms`, `1h`.
fn duration(text: &str) -> Result<Duration, Failure> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .map_err(|_| Failure::usage(format!("`{text}` is not a duration such as 30s")))?;
    match &text[digits.len()..] {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        unit => Err(Failure::usage(format!("unknown unit `{unit}` in `{text}`"))),
    }
}

/// `cargo xtask cluster [--for DURATION] [--debug] [--dir FOLDER]`.
pub fn cluster(args: &[OsString]) -> Result<(), Failure> {
    let options = parse(args)?;
    let mut dist = None;
    run_step("build the web app", || {
        dist = Some(web::build()?.dir);
        Ok(())
    })?;
    let profile = if options.debug { "debug" } else { "release" };
    let mut build = cargo();
    build.args(["build", "-p", "quire-server", "--bin", "quire"]);
    if !options.debug {
        build.arg("--release");
    }
    run_step(
        &format!("cargo build -p quire-server --bin quire ({profile})"),
        || run(&mut build),
    )?;
    let quire = web::target_dir().join(profile).join("quire");
    let dir = options
        .dir
        .clone()
        .unwrap_or_else(|| web::target_dir().join("quire-cluster"));
    let dist = dist.expect("the step ran");
    run_cluster(&quire, &dir, &dist, options.run_for)
}

/// Starts the cluster, says where it is, checks it answers through the
/// proxy, and waits for Ctrl-C or `run_for`; then stops it all.
pub fn run_cluster(
    quire: &Path,
    dir: &Path,
    dist: &Path,
    run_for: Option<Duration>,
) -> Result<(), Failure> {
    catch_stop_signals();
    println!(
        "==> starting PostgreSQL, Redis, three nodes and HAProxy under {}",
        dir.display()
    );
    let static_dir = dist.to_string_lossy().into_owned();
    let cluster = Cluster::start_in(quire, dir, &["--static-dir", &static_dir])
        .map_err(|e| Failure::new(format!("the cluster did not start: {e}")))?;
    let port = cluster.proxy.port();
    for path in ["/healthz", "/api/docs", "/"] {
        match http_status(port, path) {
            Some(200) => {}
            other => {
                return Err(Failure::new(format!(
                    "GET {path} through HAProxy answered {other:?}, not 200"
                )));
            }
        }
    }
    println!("{}", cluster.describe());
    println!(
        "==> Quire cluster ready: open {} (rooms at ws://127.0.0.1:{port}/ws/DOC)",
        cluster.url()
    );
    match run_for {
        Some(d) => println!("==> running for {d:?}; Ctrl-C stops it sooner"),
        None => println!("==> Ctrl-C stops everything"),
    }
    let deadline = run_for.map(|d| Instant::now() + d);
    while !STOP.load(Ordering::Relaxed) && deadline.is_none_or(|at| Instant::now() < at) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("==> stopping HAProxy, the nodes, Redis and PostgreSQL");
    drop(cluster);
    println!("==> stopped; the data stays in {}", dir.display());
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM set [`STOP`]. The servers are in process
/// groups of their own, so the terminal's Ctrl-C reaches only us, and we
/// stop them in order.
fn catch_stop_signals() {
    extern "C" fn on_signal(_signal: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_durations() {
        let args: Vec<OsString> = ["--for", "30s", "--debug"].map(OsString::from).to_vec();
        let Ok(options) = parse(&args) else {
            panic!("options refused")
        };
        assert_eq!(options.run_for, Some(Duration::from_secs(30)));
        assert!(options.debug);
        assert_eq!(duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(duration("500ms").ok(), Some(Duration::from_millis(500)));
        assert!(duration("soon").is_err());
        assert!(parse(&[OsString::from("--bogus")]).is_err());
    }
}
