//! Private PostgreSQL and Redis servers on loopback, for cluster tests and
//! for `cargo xtask cluster`.
//!
//! # Layout
//!
//! - [`Postgres`]: `initdb` into a folder of its own, then `postgres` on a
//!   free `127.0.0.1` port with its Unix socket in that folder; stop, start
//!   again on the same port and data, `kill -9`.
//! - [`Redis`]: `redis-server` on a free `127.0.0.1` port, with its own
//!   folder and an append-only file; the same life cycle.
//! - [`ensure_postgres`] / [`ensure_redis`]: find the binaries (PostgreSQL
//!   under `/usr/lib/postgresql/*/bin`), installing Debian's `postgresql` /
//!   `redis-server` with apt-get when they are missing and we are root, or
//!   say exactly what is missing.
//!
//! Never the machine's default ports (5432, 6379) or data: every instance
//! gets a fresh port from the kernel and a folder only it uses.
//!
//! # Life cycle and clean-up
//!
//! A server is a direct child of this process in a process group of its own
//! (so `kill -9` takes its workers with it), not a daemon: dropping the
//! handle kills the group, waits, and removes the temporary folder. Should
//! this process die before its drops run, the kernel sends the server
//! `SIGKILL` (parent-death signal), and the next process that uses this
//! module removes the folders of dead processes. The children are spawned
//! from one long-lived thread because the parent-death signal follows the
//! spawning *thread*, and test threads end.
//!
//! Temporary instances live in `$TMPDIR/quire-services-<pid>/`; PostgreSQL
//! instances copy a template cluster `initdb`-ed once per process (about
//! 2 s) instead of running `initdb` each (a copy takes a fraction of that).
//! [`Postgres::start_in`] / [`Redis::start_in`] use a folder the caller
//! keeps instead (`cargo xtask cluster`'s data under the target dir).
//!
//! This module uses only `std` and `libc`, so that `xtask` can compile the
//! same file (`#[path = "../../tests/src/services.rs"] mod services;`).

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to accept connections after it was started
/// (crash recovery after `kill -9` included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports this module never hands out, whatever the kernel says.
const DEFAULT_PORTS: [u16; 2] = [5432, 6379];

/// Why a service could not be provided; the text says what to do.
#[derive(Debug)]
pub struct ServiceError(String);

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServiceError {}

pub type Result<T> = std::result::Result<T, ServiceError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(ServiceError(message.into()))
}

fn io_fail(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |e| ServiceError(format!("{what}: {e}"))
}

// ---------------------------------------------------------------------------
// Binaries and their installation

/// Where the PostgreSQL server binaries are (`initdb`, `postgres`,
/// `pg_isready`): the newest `/usr/lib/postgresql/<version>/bin`.
#[derive(Debug, Clone)]
pub struct PostgresBinaries {
    pub bin: PathBuf,
    /// The major version, from the folder name.
    pub version: u32,
}

/// Finds the PostgreSQL server binaries, installing Debian's `postgresql`
/// when they are missing and this process is root with apt-get.
pub fn ensure_postgres() -> Result<PostgresBinaries> {
    static FOUND: OnceLock<PostgresBinaries> = OnceLock::new();
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = FOUND.get() {
        return Ok(found.clone());
    }
    let found = match find_postgres() {
        Some(found) => found,
        None => {
            install("postgresql")?;
            find_postgres().ok_or_else(|| {
                ServiceError(
                    "PostgreSQL server binaries (initdb, postgres, pg_isready) are still \
                     missing under /usr/lib/postgresql/*/bin after installing `postgresql`"
                        .into(),
                )
            })?
        }
    };
    Ok(FOUND.get_or_init(|| found).clone())
}

fn find_postgres() -> Option<PostgresBinaries> {
    let mut best: Option<PostgresBinaries> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        let complete = ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|tool| bin.join(tool).is_file());
        if complete && best.as_ref().is_none_or(|b| version > b.version) {
            best = Some(PostgresBinaries { bin, version });
        }
    }
    best
}

/// Finds `redis-server`, installing Debian's `redis-server` when it is
/// missing and this process is root with apt-get.
pub fn ensure_redis() -> Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    ensure_program(&FOUND, "redis-server", "redis-server")
}

/// Finds `haproxy`, installing Debian's `haproxy` when it is missing and
/// this process is root with apt-get.
pub fn ensure_haproxy() -> Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    ensure_program(&FOUND, "haproxy", "haproxy")
}

/// `program` on PATH (or in /usr/bin, /usr/sbin), installing `package`
/// first if it is missing; remembered in `found`.
fn ensure_program(found: &OnceLock<PathBuf>, program: &str, package: &str) -> Result<PathBuf> {
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = found.get() {
        return Ok(found.clone());
    }
    let path = match find_program(program) {
        Some(path) => path,
        None => {
            install(package)?;
            find_program(program).ok_or_else(|| {
                ServiceError(format!(
                    "{program} is still missing after installing `{package}`"
                ))
            })?
        }
    };
    Ok(found.get_or_init(|| path).clone())
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Held while looking for binaries and installing them: tests start
/// servers from parallel threads, and apt-get runs one at a time.
static INSTALLING: Mutex<()> = Mutex::new(());

/// `apt-get update` then `apt-get install PACKAGE` (the caller holds
/// [`INSTALLING`]); or an error that names the package to install.
fn install(package: &str) -> Result<()> {
    let how = format!("install Debian's `{package}` package (`sudo apt-get install {package}`)");
    let has_apt = Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !is_root() || !has_apt {
        return fail(format!(
            "{package} is missing and this process cannot install it (needs root and apt-get): {how}"
        ));
    }
    eprintln!("services: installing {package} with apt-get");
    for args in [
        &["update", "-q"][..],
        &["install", "-y", "-q", "--no-install-recommends", package][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Keep the package's own service (default port, default data)
            // from being started: we only want its binaries.
            .env("RUNLEVEL", "1")
            .stdin(Stdio::null())
            .status()
            .map_err(io_fail("cannot run apt-get"))?;
        if !status.success() {
            return fail(format!(
                "`apt-get {}` failed ({status}): {how}",
                args.join(" ")
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Folders, ports, processes

/// A folder for one instance: removed on drop unless the caller owns it.
#[derive(Debug)]
struct ServiceDir {
    path: PathBuf,
    temporary: bool,
}

impl ServiceDir {
    fn temporary(kind: &str) -> Result<Self> {
        let root = process_root()?;
        for n in 0.. {
            let path = root.join(format!("{kind}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(Self {
                        path,
                        temporary: true,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return fail(format!("cannot create {}: {e}", path.display())),
            }
        }
        unreachable!("the loop only ends by returning")
    }

    fn kept(path: PathBuf) -> Result<Self> {
        fs::create_dir_all(&path)
            .map_err(io_fail(format_args!("cannot create {}", path.display())))?;
        Ok(Self {
            path,
            temporary: false,
        })
    }
}

impl Drop for ServiceDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// `$TMPDIR/quire-services-<pid>`: created on first use, after removing
/// the folders of processes that no longer exist; removed at exit.
fn process_root() -> Result<PathBuf> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(root.clone());
    }
    let tmp = std::env::temp_dir();
    if let Ok(entries) = fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("quire-services-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let root = tmp.join(format!("quire-services-{}", std::process::id()));
    fs::create_dir_all(&root).map_err(io_fail(format_args!("cannot create {}", root.display())))?;
    let root = ROOT.get_or_init(|| root).clone();
    extern "C" fn remove_root() {
        if let Some(root) = ROOT.get() {
            let _ = fs::remove_dir_all(root);
        }
    }
    // SAFETY: registers a plain function without arguments; it only reads
    // a OnceLock that is set by now and removes a folder.
    unsafe { libc::atexit(remove_root) };
    Ok(root)
}

/// A port the kernel says is free on 127.0.0.1 right now, never a default.
fn free_port() -> Result<u16> {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_fail("cannot bind a port on 127.0.0.1"))?;
        let port = listener
            .local_addr()
            .map_err(io_fail("cannot read the bound port"))?
            .port();
        if !DEFAULT_PORTS.contains(&port) {
            return Ok(port);
        }
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:port.
fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The first folder above `path` that the account `uid` may not enter
/// (neither its own nor open to others), with its mode.
fn closed_ancestor(path: &Path, uid: u32) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().skip(1).find_map(|ancestor| {
        let meta = fs::metadata(ancestor).ok()?;
        (meta.uid() != uid && meta.mode() & 0o001 == 0)
            .then(|| (ancestor.to_owned(), meta.mode() & 0o7777))
    })
}

/// Whether PostgreSQL can keep its data in `dir`: as root it runs as the
/// `postgres` account, which must be able to walk down to it.
pub fn postgres_can_use(dir: &Path) -> bool {
    if !is_root() {
        return true;
    }
    postgres_account().is_ok_and(|(uid, _)| closed_ancestor(dir, uid).is_none())
}

/// Uid and gid of the `postgres` account (initdb refuses to run as root).
fn postgres_account() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(io_fail("cannot run `id`"))?;
        if !out.status.success() {
            return fail(
                "running as root but there is no `postgres` account to run PostgreSQL as \
                 (Debian's `postgresql` package creates it)",
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| ServiceError("`id` printed something that is not a number".into()))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Spawns `command` from the one thread that lives as long as the process,
/// in a process group of its own, with `SIGKILL` as its parent-death signal.
fn spawn_child(mut command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("quire-services".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the service launcher thread");
        Mutex::new(tx)
    });
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (prctl, getppid). It runs after the uid change,
    // which would otherwise clear the parent-death signal.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: do not outlive it.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    launcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the service launcher thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the service launcher thread is gone"))?
}

/// A server process while it runs: a child in a process group of its own.
#[derive(Debug, Default)]
struct Process(Option<Child>);

impl Process {
    /// The child's id (also its process group's) while it runs.
    fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    fn is_running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Asks it to stop with `signal`; kills it if that takes too long.
    fn stop(&mut self, signal: libc::c_int) {
        if let Some(mut child) = self.0.take() {
            signal_group(&child, signal);
            if !wait_exit(&mut child, STOP_TIMEOUT) {
                kill_child(&mut child);
            }
        }
    }

    /// `kill -9` of the whole group.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            kill_child(&mut child);
        }
    }

    /// Spawns `command` (see [`spawn_child`]) and waits until `ready`;
    /// a server that does not get ready is killed.
    fn start(
        &mut self,
        command: Command,
        what: &str,
        log: &Path,
        ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let mut child =
            spawn_child(command).map_err(io_fail(format_args!("cannot start {what}")))?;
        match wait_ready(&mut child, what, log, ready) {
            Ok(()) => {
                self.0 = Some(child);
                Ok(())
            }
            Err(e) => {
                kill_child(&mut child);
                Err(e)
            }
        }
    }
}

/// Calls `start` with fresh free ports until one works (a port can be
/// taken between choosing and binding it); returns that port.
fn on_free_port(mut start: impl FnMut(u16) -> Result<()>) -> Result<u16> {
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        match start(port) {
            Ok(()) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Sends `signal` to the child's whole process group.
fn signal_group(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; the group is the
    // child's own (process_group(0)), so nothing else is hit.
    unsafe { libc::kill(-pid, signal) };
}

/// Waits up to `timeout` for the child to exit; `true` if it did.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn kill_child(child: &mut Child) {
    signal_group(child, libc::SIGKILL);
    let _ = child.wait();
}

/// The last `lines` lines of a log file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Appends to (creating) a log file, for a child's stdout and stderr.
fn log_file(path: &Path) -> Result<(File, File)> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_fail(format_args!("cannot open {}", path.display())))?;
    let copy = file
        .try_clone()
        .map_err(io_fail("cannot duplicate a file handle"))?;
    Ok((file, copy))
}

/// Polls `ready` until it holds, the child exits, or [`START_TIMEOUT`].
fn wait_ready(
    child: &mut Child,
    what: &str,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return fail(format!(
                "{what} exited ({status}) before accepting connections; its log ends with:\n{}",
                log_tail(log, 20)
            ));
        }
        if Instant::now() >= deadline {
            kill_child(child);
            return fail(format!(
                "{what} did not accept connections within {START_TIMEOUT:?}; its log ends with:\n{}",
                log_tail(log, 20)
            ));
        }
        thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// A private PostgreSQL server on `127.0.0.1:port`, superuser `postgres`
/// without a password (trust authentication, loopback only).
#[derive(Debug)]
pub struct Postgres {
    binaries: PostgresBinaries,
    /// The instance folder: `data/` (the cluster), the Unix socket, `log`.
    dir: ServiceDir,
    port: u16,
    /// The `postgres` account when we are root (its server cannot be).
    account: Option<(u32, u32)>,
    /// Extra `-c name=value` settings, kept for restarts.
    settings: Vec<(String, String)>,
    /// The postmaster while it runs.
    process: Process,
}

impl Postgres {
    /// A fresh cluster in a temporary folder, removed on drop. Small
    /// settings for tests (16 MB of shared buffers).
    pub fn start() -> Result<Self> {
        let dir = ServiceDir::temporary("postgres")?;
        Self::launch(dir, vec![("shared_buffers".into(), "16MB".into())])
    }

    /// A cluster in `dir` (created with `initdb` on first use, kept on drop).
    pub fn start_in(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::launch(ServiceDir::kept(dir.into())?, Vec::new())
    }

    fn launch(dir: ServiceDir, settings: Vec<(String, String)>) -> Result<Self> {
        let binaries = ensure_postgres()?;
        let account = if is_root() {
            Some(postgres_account()?)
        } else {
            None
        };
        let mut postgres = Self {
            binaries,
            dir,
            port: 0,
            account,
            settings,
            process: Process::default(),
        };
        postgres.reachable_by_account()?;
        postgres.own(&postgres.dir.path)?;
        if !postgres.data().join("PG_VERSION").exists() {
            if postgres.dir.temporary {
                postgres.copy_template()?;
            } else {
                postgres.initdb(&postgres.data())?;
            }
        }
        postgres.port = on_free_port(|port| {
            postgres.port = port;
            postgres.start_again()
        })?;
        Ok(postgres)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance folder (the cluster is in `data/`, the log in `log`).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The server's process id while it runs, which is also its process
    /// group's (for measuring its CPU, workers included).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `sql` with `psql` against database `db`, returning its output
    /// (unaligned, tuples only); for tests and set-up scripts.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.binaries.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(io_fail("cannot run psql"))?;
        if !out.status.success() {
            return fail(format!(
                "psql failed on {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Creates database `db` and returns its URL.
    pub fn create_database(&self, db: &str) -> Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""))?;
        Ok(self.url_for(db))
    }

    /// Clean ("fast") shutdown: open transactions are rolled back, committed
    /// ones are on disk. Does nothing if it is not running.
    pub fn stop(&mut self) {
        self.process.stop(libc::SIGINT);
    }

    /// `kill -9` of the server and every backend (its process group): a
    /// crash; the next start runs crash recovery.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data, and waits until
    /// it accepts connections. Does nothing if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // After a kill -9 the old backends may hold the shared
                // memory for a moment; the port may be in TIME_WAIT use.
                Err(e) if Instant::now() < deadline && self.retryable_start_failure() => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stop then start (same port, same data).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    fn data(&self) -> PathBuf {
        self.dir.path.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path.join("log")
    }

    /// Gives `path` to the `postgres` account when we are root.
    fn own(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.account {
            chown(path, Some(uid), Some(gid)).map_err(io_fail(format_args!(
                "cannot give {} to postgres",
                path.display()
            )))?;
        }
        Ok(())
    }

    /// The `postgres` account must be able to walk down to the folder:
    /// under a private home (`/root` is 0700) it cannot, so say so.
    fn reachable_by_account(&self) -> Result<()> {
        let Some((uid, _)) = self.account else {
            return Ok(());
        };
        match closed_ancestor(&self.dir.path, uid) {
            None => Ok(()),
            Some((ancestor, mode)) => fail(format!(
                "PostgreSQL runs as the postgres account, which cannot enter {} \
                 (mode {mode:o}); put the data folder elsewhere (e.g. under /tmp) or \
                 `chmod o+x` that folder",
                ancestor.display(),
            )),
        }
    }

    fn as_account(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.account {
            command.uid(uid).gid(gid);
        }
    }

    fn initdb(&self, data: &Path) -> Result<()> {
        let mut command = Command::new(self.binaries.bin.join("initdb"));
        command
            .arg("-D")
            .arg(data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        self.as_account(&mut command);
        let out = command.output().map_err(io_fail("cannot run initdb"))?;
        if !out.status.success() {
            return fail(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Copies this process's template cluster (made on first use) into the
    /// instance's data folder, keeping owners and modes.
    fn copy_template(&self) -> Result<()> {
        static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
        let mut template = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
        if template.is_none() {
            let path = process_root()?.join("template");
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).map_err(io_fail("cannot create the template folder"))?;
            self.own(&path)?;
            self.initdb(&path.join("data"))?;
            *template = Some(path);
        }
        let source = template.as_ref().expect("set above").join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(&source)
            .arg(self.data())
            .status()
            .map_err(io_fail("cannot run cp"))?;
        if !status.success() {
            return fail(format!("copying the template cluster failed ({status})"));
        }
        Ok(())
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = self.log_path();
        let (stdout, stderr) = log_file(&log)?;
        let mut command = Command::new(self.binaries.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir.path)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        for (name, value) in &self.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        self.as_account(&mut command);
        let isready = self.binaries.bin.join("pg_isready");
        let port = self.port.to_string();
        self.process.start(command, "postgres", &log, || {
            Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-t", "1", "-p", &port])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    fn retryable_start_failure(&self) -> bool {
        let tail = log_tail(&self.log_path(), 5);
        tail.contains("shared memory block")
            || tail.contains("could not bind")
            || tail.contains("lock file")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.dir.temporary {
            // The data goes away with the folder: no need to shut down cleanly.
            self.kill();
        } else {
            self.stop();
        }
    }
}

// ---------------------------------------------------------------------------
// Redis

/// A private `redis-server` on `127.0.0.1:port` with an append-only file in
/// its own folder (`fsync` every second, Redis's default).
#[derive(Debug)]
pub struct Redis {
    binary: PathBuf,
    dir: ServiceDir,
    port: u16,
    process: Process,
}

impl Redis {
    /// A fresh server in a temporary folder, removed on drop.
    pub fn start() -> Result<Self> {
        Self::launch(ServiceDir::temporary("redis")?)
    }

    /// A server whose data lives in `dir` (kept on drop).
    pub fn start_in(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::launch(ServiceDir::kept(dir.into())?)
    }

    fn launch(dir: ServiceDir) -> Result<Self> {
        let mut redis = Self {
            binary: ensure_redis()?,
            dir,
            port: 0,
            process: Process::default(),
        };
        redis.port = on_free_port(|port| {
            redis.port = port;
            redis.start_again()
        })?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The server's process id while it runs, which is also its process
    /// group's (for measuring its CPU, workers included).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends one command (arguments as RESP bulk strings) and returns the
    /// raw reply line(s); enough for tests and readiness checks.
    pub fn command(&self, args: &[&str]) -> Result<String> {
        resp_command(self.port, args)
    }

    /// Clean shutdown (`SIGTERM`: Redis flushes its append-only file).
    pub fn stop(&mut self) {
        self.process.stop(libc::SIGTERM);
    }

    /// `kill -9`: what was written since the last fsync may be lost.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts again on the same port and data; waits until it answers PING
    /// (after loading its append-only file). Does nothing if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = self.log_path();
        let (stdout, stderr) = log_file(&log)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.path)
            .args(["--appendonly", "yes", "--save", "", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let port = self.port;
        self.process.start(command, "redis-server", &log, || {
            resp_command(port, &["PING"]).is_ok_and(|reply| reply.starts_with("+PONG"))
        })
    }

    /// Stop then start (same port, same data).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path.join("log")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.dir.temporary {
            self.kill();
        } else {
            self.stop();
        }
    }
}

/// One RESP request on a fresh connection; returns what the server sent
/// back within a short while (one reply, possibly multi-line).
fn resp_command(port: u16, args: &[&str]) -> Result<String> {
    if !port_open(port) {
        return fail(format!("nothing listens on 127.0.0.1:{port}"));
    }
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .map_err(io_fail(format_args!("cannot connect to 127.0.0.1:{port}")))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(io_fail("cannot set a read timeout"))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(io_fail("cannot send to redis"))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply_complete(&reply) {
                    break;
                }
            }
            Err(e) if reply.is_empty() => return fail(format!("no reply from redis: {e}")),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether `reply` holds one whole simple RESP reply (status, error,
/// integer, or a bulk string), which is all [`resp_command`] is used for.
fn reply_complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    let Some(first_end) = text.find("\r\n") else {
        return false;
    };
    match text.as_bytes()[0] {
        b'$' => match text[1..first_end].parse::<i64>() {
            Ok(len) if len < 0 => true,
            Ok(len) => text.len() >= first_end + 2 + len as usize + 2,
            Err(_) => true,
        },
        _ => true,
    }
}

// ---------------------------------------------------------------------------
// HTTP readiness

/// The status code of `GET path` on 127.0.0.1:port (HTTP/1.0, no Host:
/// what HAProxy's health check sends), or `None` when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// Quire nodes

/// A `quire serve` process on `127.0.0.1:port`, as a node of a cluster:
/// stopped, killed with -9 and started again on the same port.
#[derive(Debug)]
pub struct QuireNode {
    binary: PathBuf,
    /// Its folder: the (unused in cluster mode) data folder and `log`.
    dir: ServiceDir,
    port: u16,
    /// The flags after `serve --addr …`, kept for restarts.
    args: Vec<String>,
    process: Process,
}

impl QuireNode {
    /// Starts `binary serve --addr 127.0.0.1:<free port> ARGS` with its
    /// data in `dir`, and waits until its `/healthz` answers 200.
    pub fn start_in(binary: &Path, dir: impl Into<PathBuf>, args: &[String]) -> Result<Self> {
        let mut node = Self {
            binary: binary.to_owned(),
            dir: ServiceDir::kept(dir.into())?,
            port: 0,
            args: args.to_vec(),
            process: Process::default(),
        };
        node.port = on_free_port(|port| {
            node.port = port;
            node.start_again()
        })?;
        Ok(node)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs, which is also its process
    /// group's (for measuring its CPU, workers included).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("log")).unwrap_or_default()
    }

    /// Clean shutdown (`SIGTERM`: rooms closed, the store flushed).
    pub fn stop(&mut self) {
        self.process.stop(libc::SIGTERM);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts again on the same port and flags; waits for `/healthz` 200.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = self.dir.path.join("log");
        let (stdout, stderr) = log_file(&log)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--data")
            .arg(self.dir.path.join("data"))
            .args(["serve", "--addr", &self.addr()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let port = self.port;
        self.process.start(command, "quire serve", &log, || {
            http_status(port, "/healthz") == Some(200)
        })
    }
}

impl Drop for QuireNode {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// HAProxy

/// The HAProxy configuration Quire ships (`server/haproxy.cfg`), which
/// takes its addresses from the environment.
pub const HAPROXY_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../server/haproxy.cfg");

/// `haproxy -f server/haproxy.cfg` on `127.0.0.1:port` in front of three
/// nodes, in the foreground (`-db`), with its folder for the log.
#[derive(Debug)]
pub struct Haproxy {
    binary: PathBuf,
    dir: ServiceDir,
    port: u16,
    nodes: Vec<String>,
    process: Process,
}

impl Haproxy {
    /// Starts HAProxy (installing it if needed) on a free port in front of
    /// `nodes` (three `host:port`), in a temporary folder.
    pub fn start(nodes: &[String]) -> Result<Self> {
        Self::launch(ServiceDir::temporary("haproxy")?, nodes)
    }

    /// Likewise with its folder in `dir` (kept on drop).
    pub fn start_in(dir: impl Into<PathBuf>, nodes: &[String]) -> Result<Self> {
        Self::launch(ServiceDir::kept(dir.into())?, nodes)
    }

    fn launch(dir: ServiceDir, nodes: &[String]) -> Result<Self> {
        if nodes.len() != 3 {
            return fail(format!(
                "server/haproxy.cfg names three nodes, not {}",
                nodes.len()
            ));
        }
        let mut proxy = Self {
            binary: ensure_haproxy()?,
            dir,
            port: 0,
            nodes: nodes.to_vec(),
            process: Process::default(),
        };
        proxy.port = on_free_port(|port| {
            proxy.port = port;
            proxy.start_again()
        })?;
        Ok(proxy)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.process.stop(libc::SIGTERM);
    }

    /// Starts again on the same port; waits until a request through it
    /// reaches a ready node (`/healthz` 200).
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_running() {
            return Ok(());
        }
        let log = self.dir.path.join("log");
        let (stdout, stderr) = log_file(&log)?;
        let mut command = Command::new(&self.binary);
        command
            .args(["-db", "-f", HAPROXY_CONFIG])
            .env("QUIRE_PROXY_BIND", format!("127.0.0.1:{}", self.port))
            .current_dir(&self.dir.path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (i, node) in self.nodes.iter().enumerate() {
            command.env(format!("QUIRE_NODE{}", i + 1), node);
        }
        let port = self.port;
        self.process.start(command, "haproxy", &log, || {
            http_status(port, "/healthz") == Some(200)
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
