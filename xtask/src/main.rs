//! `cargo xtask`: the project's developer commands. Its dependencies are
//! `wasm-bindgen-cli-support`, for building the web app (see [`web`]), and
//! `libc`, for `cluster` (signals, and the test services it shares).
//!
//! Run `cargo xtask help` for the list. Every cargo invocation goes through the
//! `CARGO` binary that launched us and inherits the environment, so
//! `CARGO_TARGET_DIR` (if set) is respected everywhere.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

// The cluster set-up the tests use too (std and libc only); the tests use
// the parts `cargo xtask cluster` does not.
#[allow(dead_code)]
#[path = "../../tests/src/cluster.rs"]
mod cluster;
mod cluster_command;
#[allow(dead_code)]
#[path = "../../tests/src/services.rs"]
mod services;
mod web;

const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS...]

Commands:
  web               Build the web app (frontend/) into $CARGO_TARGET_DIR/quire-web/:
                    the wasm32 release build, wasm-bindgen (as a library), wasm-opt
                    when binaryen is installed, content-hashed assets, index.html
                    and sw.js. Prints the dist path and the asset sizes. Installs
                    the wasm32-unknown-unknown target with rustup if missing.
  serve [ARGS...]   Build the web app (quickly skipped when up to date), then build
                    and run the server in release mode on its default store
                    (./quire-data in the workspace root, gitignored); runs
                    `cargo run --release -p quire-server --bin quire -- serve
                    --static-dir <dist> ARGS...` from the workspace root, e.g.
                    `cargo xtask serve --addr 127.0.0.1:9000`, then open
                    http://127.0.0.1:9000/.
  test [ARGS...]    Run every test: check node (>= 20) and npm, `npm ci` in
                    tests/compat if its lockfile changed, build the web app and
                    the debug `quire` binary, run `cargo xtask cluster` for 5 s
                    on it, then `cargo test --workspace --exclude xtask ARGS...` with
                    QUIRE_WEB_DIST=<dist> (for browser tests).
                    ARGS go to `cargo test` verbatim, e.g.
                    `cargo xtask test -- --nocapture` or `cargo xtask test some_name`.
  lint              `cargo fmt --all -- --check`,
                    `cargo clippy --workspace --all-targets -- -D warnings` and
                    `cargo clippy -p quire-frontend --target wasm32-unknown-unknown -- -D warnings`.
  bench [ARGS...]   The benchmarks: `cargo run --release -p quire-bench -- ARGS...`
                    (scenarios fanout traces storage idle coldload durability;
                    full length unless --quick, whose results are labelled quick
                    and decide no target); results in bench/results/ and
                    bench/RESULTS.md. Peers: the Yjs reference server (npm ci in
                    bench/peers), y-sweet 0.9.1 if installed (`cargo install
                    y-sweet --version 0.9.1 --locked --root
                    ~/.cache/quire/y-sweet-0.9.1`), a bare broadcast server;
                    durability also runs the issue-time quire (b2b74f0), which
                    a full run builds once into $CARGO_TARGET_DIR/baseline-b2b74f0
                    (a few minutes the first time).
  cluster [--for DURATION] [--debug] [--dir FOLDER]
                    A Quire cluster on this machine: PostgreSQL and Redis (data
                    under $CARGO_TARGET_DIR/quire-cluster, free 127.0.0.1 ports,
                    installed with apt-get when missing), three `quire` nodes
                    (release build; --debug for the debug one) serving the web
                    app, and HAProxy (server/haproxy.cfg) in front. Prints the
                    URL; Ctrl-C (or the end of --for, e.g. 30s) stops it all.
  help              Show this text.
";

/// Minimum Node.js major version (tests/compat/package.json `engines.node`).
const NODE_MIN_MAJOR: u32 = 20;

fn main() -> ExitCode {
    forward_interrupts_to_children();
    let mut args = env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    let result = match command.as_ref().and_then(|c| c.to_str()) {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("web") if rest.is_empty() => web_command(),
        Some("web") => Err(Failure::usage("`cargo xtask web` takes no arguments")),
        Some("serve") => serve(&rest),
        Some("test") => test(&rest),
        Some("lint") if rest.is_empty() => lint(),
        Some("bench") => bench(&rest),
        Some("cluster") => cluster_command::cluster(&rest),
        Some("lint") => Err(Failure::usage("`cargo xtask lint` takes no arguments")),
        Some(other) => Err(Failure::usage(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            if failure.show_usage {
                eprint!("\n{USAGE}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// `cargo xtask web`: build the web app and say where it is.
fn web_command() -> Result<(), Failure> {
    let mut dist = None;
    run_step("build the web app", || {
        dist = Some(web::build()?);
        Ok(())
    })?;
    if let Some(dist) = dist {
        println!("{}", dist.dir.display());
    }
    Ok(())
}

/// `cargo xtask serve`: the README's "start Quire" command.
fn serve(args: &[OsString]) -> Result<(), Failure> {
    let mut dist = None;
    run_step("build the web app", || {
        dist = Some(web::build()?);
        Ok(())
    })?;
    let dist = dist.expect("the step ran").dir;

    // Not a timed step: the server runs until interrupted, and its exit code
    // becomes ours.
    header("cargo run --release -p quire-server --bin quire -- serve --static-dir <dist>");
    let mut command = cargo();
    command.args([
        "run",
        "--release",
        "-p",
        "quire-server",
        "--bin",
        "quire",
        "--",
        "serve",
    ]);
    let given = args.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == "--static-dir" || a.starts_with("--static-dir="))
    });
    if !given {
        command.arg("--static-dir").arg(&dist);
    }
    run(command.args(args))
}

/// `cargo xtask test`: the README's "run every test" command.
fn test(cargo_test_args: &[OsString]) -> Result<(), Failure> {
    let start = Instant::now();
    run_step(
        "check prerequisites (node >= 20, npm)",
        check_node_prerequisites,
    )?;
    run_step(
        "check prerequisites (chromium, chromium-driver)",
        ensure_chromium,
    )?;
    run_step("npm ci in tests/compat", npm_ci_if_stale)?;
    let mut dist = None;
    run_step("build the web app", || {
        dist = Some(web::build()?);
        Ok(())
    })?;
    let dist = dist.expect("the step ran").dir;
    run_step("cargo build -p quire-server --bin quire", || {
        run(cargo().args(["build", "-p", "quire-server", "--bin", "quire"]))
    })?;
    run_step(
        "cargo xtask cluster --for 5s (debug build, own folder)",
        || {
            let dir = web::target_dir().join("quire-cluster-test");
            let _ = std::fs::remove_dir_all(cluster::Cluster::postgres_dir(&dir));
            let _ = std::fs::remove_dir_all(&dir);
            let quire = web::target_dir().join("debug").join("quire");
            cluster_command::run_cluster(&quire, &dir, &dist, Some(Duration::from_secs(5)))
        },
    )?;
    run_step("cargo test --workspace --exclude xtask", || {
        run(cargo()
            .args(["test", "--workspace", "--exclude", "xtask"])
            .args(cargo_test_args)
            .env("QUIRE_WEB_DIST", &dist))
    })?;
    println!("==> all test steps passed in {}", Elapsed(start.elapsed()));
    Ok(())
}

/// `cargo xtask bench [SCENARIO...] [--quick]`: the benchmarks
/// (`bench/`), which write `bench/results/` and `bench/RESULTS.md`. The
/// results record the command as `cargo xtask bench ARGS`.
fn bench(args: &[OsString]) -> Result<(), Failure> {
    run(cargo()
        .args(["run", "--release", "-p", "quire-bench", "--"])
        .args(args)
        .env("QUIRE_BENCH_LAUNCHER", "cargo xtask bench"))
}

/// `cargo xtask lint`: formatting and clippy over the whole workspace.
fn lint() -> Result<(), Failure> {
    let start = Instant::now();
    run_step(
        "check prerequisites (rustfmt, clippy)",
        check_lint_prerequisites,
    )?;
    run_step("cargo fmt --all -- --check", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    run_step(
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    run_step(
        "cargo clippy -p quire-frontend --target wasm32-unknown-unknown -- -D warnings",
        || {
            web::ensure_wasm_target()?;
            run(cargo().args([
                "clippy",
                "-p",
                "quire-frontend",
                "--target",
                "wasm32-unknown-unknown",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    println!("==> all lint steps passed in {}", Elapsed(start.elapsed()));
    Ok(())
}

fn check_node_prerequisites() -> Result<(), Failure> {
    let install = "to install: `apt-get install nodejs npm` (Debian/Ubuntu; Debian 12's \
                   nodejs is 18, so there use Debian 13+, NodeSource or nvm), \
                   or see https://nodejs.org";
    let mut missing = Vec::new();
    match tool_version(Command::new("node").arg("--version")) {
        None => missing.push(format!(
            "`node` (>= {NODE_MIN_MAJOR}) was not found on PATH"
        )),
        Some(version) => {
            let major = version
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            match major {
                Some(major) if major >= NODE_MIN_MAJOR => println!("    node {}", version.trim()),
                _ => missing.push(format!(
                    "`node` {} is too old or unrecognised; >= {NODE_MIN_MAJOR} is required",
                    version.trim()
                )),
            }
        }
    }
    match tool_version(npm().arg("--version")) {
        None => missing.push("`npm` was not found on PATH".to_owned()),
        Some(version) => println!("    npm {}", version.trim()),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "missing prerequisites:\n  - {}\n{install}",
            missing.join("\n  - ")
        )))
    }
}

/// The browser scenes drive Debian's Chromium through its WebDriver.
/// Installs both with apt-get when running as root; otherwise says how.
fn ensure_chromium() -> Result<(), Failure> {
    const PACKAGES: [(&str, &str); 2] = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ];
    let missing = || -> Vec<&str> {
        PACKAGES
            .iter()
            .filter(|(path, _)| !std::path::Path::new(path).exists())
            .map(|(_, package)| *package)
            .collect()
    };
    let wanted = missing();
    if wanted.is_empty() {
        println!("    chromium and chromedriver present");
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let has_apt = tool_version(Command::new("apt-get").arg("--version")).is_some();
    if is_root && has_apt {
        println!("    installing {} with apt-get", wanted.join(" "));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&wanted)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let still = missing();
    if still.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "missing for the browser tests: {}; install with `sudo apt-get install {}` (Debian's packages)",
            still.join(", "),
            still.join(" ")
        )))
    }
}

fn check_lint_prerequisites() -> Result<(), Failure> {
    let mut missing = Vec::new();
    for (subcommand, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        match tool_version(cargo().args([subcommand, "--version"])) {
            Some(version) => println!("    {}", version.trim()),
            None => missing.push(component),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "missing cargo components: {}; install with `rustup component add {}`",
            missing.join(", "),
            missing.join(" ")
        )))
    }
}

/// Runs `npm ci` in tests/compat unless `node_modules/` is at least as new as
/// `package-lock.json` (npm rewrites `node_modules/.package-lock.json` on every install).
fn npm_ci_if_stale() -> Result<(), Failure> {
    let compat = workspace_root().join("tests").join("compat");
    let lockfile = compat.join("package-lock.json");
    let installed = compat.join("node_modules").join(".package-lock.json");
    let lock_mtime = mtime(&lockfile)
        .ok_or_else(|| Failure::new(format!("{} is missing or unreadable", lockfile.display())))?;
    match mtime(&installed) {
        Some(installed_mtime) if installed_mtime >= lock_mtime => {
            println!("    skipped: tests/compat/node_modules is up to date with package-lock.json");
            Ok(())
        }
        found => {
            let why = if found.is_none() {
                "node_modules is not installed"
            } else {
                "package-lock.json is newer than node_modules"
            };
            println!("    {why}; running npm ci --no-audit --no-fund");
            run(npm()
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&compat))
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// The workspace root: the parent of this crate's directory.
///
/// `cargo run` also sets `CARGO_MANIFEST_DIR` at run time; prefer it, because a
/// build cache shared between checkouts (CI's `CARGO_TARGET_DIR`) can hand us a
/// binary compiled in another checkout, with that checkout's path baked in.
fn workspace_root() -> PathBuf {
    let xtask_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    xtask_dir
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The cargo that launched us (`CARGO` is set by `cargo run`), run from the workspace root.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn npm() -> Command {
    Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
}

fn header(title: &str) {
    println!("==> {title}");
}

/// Prints a header, runs the step, and reports its elapsed time; a failure names the step.
fn run_step(name: &str, step: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    header(name);
    let start = Instant::now();
    match step() {
        Ok(()) => {
            println!("==> ok: {name} ({})", Elapsed(start.elapsed()));
            Ok(())
        }
        Err(mut failure) => {
            failure.message = format!(
                "step `{name}` failed after {}: {}",
                Elapsed(start.elapsed()),
                failure.message
            );
            Err(failure)
        }
    }
}

/// Runs a command with inherited stdio; a non-zero exit is a failure with that exit code.
fn run(command: &mut Command) -> Result<(), Failure> {
    let program = Path::new(command.get_program())
        .file_stem()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    let status = command
        .status()
        .map_err(|e| Failure::new(format!("could not start `{program}`: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure {
            message: format!("`{program}` exited with {}", describe(status)),
            code: exit_code(status),
            show_usage: false,
        })
    }
}

/// The trimmed stdout of a successful `--version`-style command, or `None`.
fn tool_version(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn mtime(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The status as a process exit code: the child's own code, or 128 + signal.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
    }
    1
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{status}"),
    }
}

/// On Ctrl-C the terminal signals the whole foreground process group. Catch
/// SIGINT with a no-op handler so that we wait for the child (the server shuts
/// down gracefully; tests stop), then report its status. A handler, unlike
/// SIG_IGN, is reset to the default on exec, so children still get SIGINT normally.
#[cfg(unix)]
fn forward_interrupts_to_children() {
    extern "C" fn on_interrupt(_signal: std::ffi::c_int) {}
    unsafe extern "C" {
        fn signal(
            signum: std::ffi::c_int,
            handler: extern "C" fn(std::ffi::c_int),
        ) -> *const std::ffi::c_void;
    }
    const SIGINT: std::ffi::c_int = 2;
    // SAFETY: installs an async-signal-safe handler that does nothing.
    unsafe {
        signal(SIGINT, on_interrupt);
    }
}

#[cfg(not(unix))]
fn forward_interrupts_to_children() {}

struct Failure {
    message: String,
    code: u8,
    show_usage: bool,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
            show_usage: false,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
            show_usage: true,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A duration printed as `850ms`, `12.3s` or `2m05s`.
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        if secs < 1.0 {
            write!(f, "{}ms", self.0.as_millis())
        } else if secs < 60.0 {
            write!(f, "{secs:.1}s")
        } else {
            let whole = self.0.as_secs();
            write!(f, "{}m{:02}s", whole / 60, whole % 60)
        }
    }
}
