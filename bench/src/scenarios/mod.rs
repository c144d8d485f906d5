//! The scenarios. Each returns its raw figures as JSON; `report` turns them
//! into tables.

pub mod cluster;
pub mod coldload;
pub mod durability;
pub mod editor;
pub mod fanout;
pub mod idle;
pub mod traces;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Ctx;
use crate::servers::{Kind, Options, Server};
use crate::sys::{self, ProcSample};

pub async fn run(name: &str, ctx: &Ctx) -> Result<serde_json::Value, String> {
    match name {
        "fanout" => fanout::run(ctx).await,
        "idle" => idle::run(ctx).await,
        "traces" => traces::run(ctx).await,
        "storage" => traces::run_storage(ctx).await,
        "coldload" => coldload::run(ctx).await,
        "durability" => durability::run(ctx).await,
        "editor" => editor::run(ctx).await,
        "cluster" => cluster::run(ctx).await,
        other => Err(format!("unknown scenario {other}")),
    }
}

/// A server's resource use over a measured span, and its peak memory.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds the server used in the span.
    pub cpu_s: f64,
    /// Length of the span.
    pub wall_s: f64,
    /// CPU use as a percentage of one core.
    pub cpu_pct: f64,
    /// Resident memory at the end of the span (KiB).
    pub rss_kib: u64,
    /// Peak resident memory of the process so far (KiB, VmHWM).
    pub hwm_kib: u64,
    /// The load generator's own CPU use in the span (% of one core).
    pub harness_cpu_pct: f64,
    /// CPU used by everything else on the machine in the span (% of one
    /// core): other work sharing the machine disturbs the figures.
    #[serde(default)]
    pub background_cpu_pct: f64,
}

/// Measures a server and the bench over one span.
pub struct Span {
    server: sys::CpuMeter,
    harness: sys::CpuMeter,
    machine: (f64, f64),
    pid: u32,
}

impl Span {
    pub fn start(server: &Server) -> Self {
        Self {
            server: sys::CpuMeter::start(server.pid),
            harness: sys::CpuMeter::start(0),
            machine: sys::machine_cpu(),
            pid: server.pid,
        }
    }

    pub fn finish(&self) -> Usage {
        let (cpu_s, wall_s) = self.server.read();
        let (harness_cpu, harness_wall) = self.harness.read();
        let sample: ProcSample = sys::sample(self.pid).unwrap_or_default();
        let (busy, _) = sys::machine_cpu();
        let machine_busy = busy - self.machine.0;
        Usage {
            cpu_s,
            wall_s,
            cpu_pct: 100.0 * cpu_s / wall_s.max(1e-9),
            rss_kib: sample.rss_kib,
            hwm_kib: sample.hwm_kib,
            harness_cpu_pct: 100.0 * harness_cpu / harness_wall.max(1e-9),
            background_cpu_pct: 100.0 * (machine_busy - cpu_s - harness_cpu).max(0.0)
                / wall_s.max(1e-9),
        }
    }
}

/// Starts a server with a fresh data folder named after the scenario.
/// Quire always persists; the reference gets leveldb persistence
/// (YPERSISTENCE) too, so both store every update.
pub async fn start(
    ctx: &Ctx,
    kind: Kind,
    tag: &str,
    quire_args: &[&str],
) -> Result<(Server, Options), String> {
    start_with(ctx, kind, tag, quire_args, false).await
}

/// [`start`], with Quire's default limits kept if `default_limits`.
pub async fn start_with(
    ctx: &Ctx,
    kind: Kind,
    tag: &str,
    quire_args: &[&str],
    default_limits: bool,
) -> Result<(Server, Options), String> {
    await_quiet(ctx).await;
    let data = ctx.env.data_dir(&format!("{tag}-{kind:?}"));
    let options = Options {
        data: kind.keeps_documents().then_some(data),
        quire_args: quire_args.iter().map(|s| s.to_string()).collect(),
        node_args: Vec::new(),
        default_limits,
    };
    let server = Server::start(&ctx.env, kind, &options).await?;
    Ok((server, options))
}

/// Waits (a bounded time) until the rest of the machine is quiet: other
/// work on a shared machine is the main source of noise. Returns the CPU
/// (% of one core) the machine used in the last probe.
pub async fn await_quiet(ctx: &Ctx) -> f64 {
    if ctx.quick {
        return 0.0;
    }
    let limit = Duration::from_secs(10);
    let started = std::time::Instant::now();
    loop {
        let (busy0, _) = sys::machine_cpu();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (busy1, _) = sys::machine_cpu();
        let pct = 100.0 * (busy1 - busy0) / 0.3;
        if pct < 40.0 || started.elapsed() >= limit {
            if started.elapsed() >= limit {
                println!("  (machine busy: {pct:.0}% CPU used by other work; measuring anyway)");
            }
            return pct;
        }
    }
}

/// Like [`bounded`] for fallible jobs, but starts no new job once one has
/// failed, and returns the first error.
pub async fn bounded_try<T, F, Fut>(n: usize, limit: usize, make: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let results = bounded(n, limit, |i| {
        let failed = failed.clone();
        let job = (!failed.load(std::sync::atomic::Ordering::Relaxed)).then(|| make(i));
        async move {
            let Some(job) = job else {
                return Err("skipped after an earlier failure".to_owned());
            };
            let result = job.await;
            if result.is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            result
        }
    })
    .await;
    results.into_iter().collect()
}

/// [`bounded`] in two phases: first the jobs `opens_room(i)` says open a
/// room, one at a time, then the rest with at most `limit` at once. The
/// first client of a room then creates the document alone, as it does
/// outside a benchmark (y-sweet answers 500 to a second client that
/// arrives while the first one's document is still being created).
pub async fn bounded_rooms_first<T, F, Fut>(
    n: usize,
    limit: usize,
    opens_room: impl Fn(usize) -> bool,
    make: F,
) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let (first, rest): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| opens_room(i));
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (phase, limit) in [(first, 1), (rest, limit)] {
        let results = bounded(phase.len(), limit, |k| make(phase[k])).await;
        for (k, value) in results.into_iter().enumerate() {
            out[phase[k]] = Some(value);
        }
    }
    out.into_iter().map(|v| v.expect("every job ran")).collect()
}

/// Runs `make(i)` for i in 0..n with at most `limit` at once; results in order.
pub async fn bounded<T, F, Fut>(n: usize, limit: usize, make: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let job = make(i);
        set.spawn(async move {
            let out = job.await;
            drop(permit);
            (i, out)
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, value)) = joined {
            out[i] = Some(value);
        }
    }
    out.into_iter().map(|v| v.expect("task finished")).collect()
}

/// Grace for a clean server shutdown.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
