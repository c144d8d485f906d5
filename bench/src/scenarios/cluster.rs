//! Cluster mode: what coordination through PostgreSQL and Redis costs, for
//! 1, 2 and 3 `quire serve --database-url … --redis-url …` nodes in one run,
//! beside one node on sled.
//!
//! The scenario starts its own PostgreSQL and Redis (`tests/src/services.rs`:
//! free loopback ports, data folders of their own, never the machine's) and
//! real `quire` processes. Every configuration gets a fresh database and an
//! emptied Redis.
//!
//! **Steady load.** [`ROOMS`] documents; each has one writer (a `quire.v1`
//! client, for its `Saved` acks) on node `room % nodes`, typing
//! [`RATE`] updates per second, and one stock reader on every node. Each
//! update carries a token (writer, sequence number); a reader on the
//! writer's node measures same-node delivery, readers on other nodes
//! cross-node delivery (which waits for the PostgreSQL commit, then goes
//! through Redis). Save-ack latency is send → `Saved`. CPU of each node,
//! of Redis and of PostgreSQL (the postmaster and its backends)
//! over the window, per 1,000 updates written in the cluster.
//!
//! **Failover** (2 and 3 nodes): a writer on the last node, a reader on
//! node 1. The writer's node is killed with -9; the writer reconnects at
//! once to another node (node 2 of 3, so delivery is cross-node; node 1 of
//! 2) — what HAProxy's redispatch does, without its health-check delay —
//! and types one update: failover time is kill → that update at the reader.
//!
//! On two cores shared by the load generator, every node, Redis and
//! PostgreSQL, these figures show what coordination costs per update, not
//! what a cluster can carry.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::ext::{Ext, SUBPROTOCOL};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message as WsMessage};
use yrs::{Doc, Text, Transact};

use super::{await_quiet, bounded};
use crate::Ctx;
use crate::services::{Postgres, QuireNode, Redis};
use crate::stats::Latency;
use crate::sys;
use crate::ws::{self, Frame};

/// Documents under load, each with one writer: divisible by 1, 2 and 3
/// nodes, so every node has as many writers.
const ROOMS: usize = 6;
/// Updates per second each writer types.
const RATE: f64 = 25.0;
/// Longest wait for the last acks and deliveries after the window.
const DRAIN: Duration = Duration::from_secs(5);
/// The writer id of the failover client.
const FAILOVER_WRITER: u32 = 0xfa11;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// `sled` (one plain node) or `postgres` (cluster mode, with Redis).
    pub store: String,
    pub nodes: usize,
    pub rooms: usize,
    pub rate_per_writer: f64,
    pub window_s: f64,
    pub updates: u64,
    pub acked: u64,
    pub save_ack: Latency,
    pub same_node: Latency,
    pub cross_node: Latency,
    /// Tokens the readers received, and how many they should have.
    pub delivered: u64,
    pub expected: u64,
    /// CPU seconds of each node over the window.
    pub node_cpu_s: Vec<f64>,
    /// Each node's CPU milliseconds per 1,000 updates written in the cluster.
    pub node_cpu_ms_per_1000: Vec<f64>,
    /// All nodes together, per 1,000 updates.
    pub nodes_cpu_ms_per_1000: f64,
    pub redis_cpu_ms_per_1000: Option<f64>,
    pub postgres_cpu_ms_per_1000: Option<f64>,
    /// The load generator's CPU (% of one core) and everything else's.
    pub harness_cpu_pct: f64,
    pub background_cpu_pct: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failover {
    pub nodes: usize,
    /// Where the writer reconnected, relative to the reader.
    pub delivery: String,
    /// Kill → the reconnected writer's first update at the reader (ms).
    pub cycles_ms: Vec<f64>,
    /// Kill → the writer saw its connection end (ms).
    pub noticed_ms: Vec<f64>,
    /// Kill → the writer's sync with the other node done (ms).
    pub resynced_ms: Vec<f64>,
    /// Kill → the other node's `Saved` for the writer's update (ms).
    pub saved_ms: Vec<f64>,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let window = Duration::from_secs_f64(ctx.pick(15.0, 3.0));
    let cycles = ctx.pick(5, 2);
    let (mut postgres, mut redis) = blocking(|| {
        let postgres = Postgres::start().map_err(|e| e.to_string())?;
        let redis = Redis::start().map_err(|e| e.to_string())?;
        Ok((postgres, redis))
    })
    .await?;
    let mut runs = Vec::new();
    let mut failovers = Vec::new();
    for (store, nodes) in [
        ("sled", 1),
        ("postgres", 1),
        ("postgres", 2),
        ("postgres", 3),
    ] {
        let mut cluster = match Nodes::start(ctx, &postgres, &redis, store, nodes).await {
            Ok(cluster) => cluster,
            Err(e) => {
                println!("  {store} × {nodes}: {e}");
                runs.push(Run::failed(store, nodes, window, e));
                continue;
            }
        };
        let run = steady(ctx, &cluster, &postgres, &redis, store, window).await;
        print_run(&run);
        runs.push(run);
        if store == "postgres" && nodes >= 2 {
            let failover = failover(&mut cluster, cycles).await;
            println!(
                "  failover, {nodes} nodes ({}): {} ms (p50 {}, max {}){}",
                failover.delivery,
                failover
                    .cycles_ms
                    .iter()
                    .map(|ms| format!("{ms:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                failover.p50_ms.map_or("-".into(), |v| format!("{v:.0}")),
                failover.max_ms.map_or("-".into(), |v| format!("{v:.0}")),
                failover
                    .error
                    .as_deref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            );
            failovers.push(failover);
        }
        cluster.stop().await;
    }
    let _ = blocking(move || {
        redis.stop();
        postgres.stop();
        Ok(())
    })
    .await;
    serde_json::to_value(serde_json::json!({
        "window_s": window.as_secs_f64(),
        "rooms": ROOMS,
        "rate_per_writer": RATE,
        "failover_cycles": cycles,
        "runs": runs,
        "failover": failovers,
    }))
    .map_err(|e| e.to_string())
}

fn print_run(run: &Run) {
    println!(
        "  {:<8} × {}: {:>5} updates, same-node p50 {:>6.2} p99 {:>6.2} ms, cross-node p50 {:>6.2} p99 {:>6.2} ms, save-ack p50 {:>6.2} p99 {:>6.2} ms, nodes {:.0} ms/1k updates (each {}), redis {} postgres {} ms/1k, delivered {}/{}{}",
        run.store,
        run.nodes,
        run.updates,
        run.same_node.p50_ms,
        run.same_node.p99_ms,
        run.cross_node.p50_ms,
        run.cross_node.p99_ms,
        run.save_ack.p50_ms,
        run.save_ack.p99_ms,
        run.nodes_cpu_ms_per_1000,
        run.node_cpu_ms_per_1000
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        run.redis_cpu_ms_per_1000
            .map_or("-".into(), |v| format!("{v:.0}")),
        run.postgres_cpu_ms_per_1000
            .map_or("-".into(), |v| format!("{v:.0}")),
        run.delivered,
        run.expected,
        run.error
            .as_deref()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default(),
    );
}

impl Run {
    fn failed(store: &str, nodes: usize, window: Duration, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::new(store, nodes, window)
        }
    }

    fn new(store: &str, nodes: usize, window: Duration) -> Self {
        Self {
            store: store.to_owned(),
            nodes,
            rooms: ROOMS,
            rate_per_writer: RATE,
            window_s: window.as_secs_f64(),
            updates: 0,
            acked: 0,
            save_ack: Latency::default(),
            same_node: Latency::default(),
            cross_node: Latency::default(),
            delivered: 0,
            expected: 0,
            node_cpu_s: Vec::new(),
            node_cpu_ms_per_1000: Vec::new(),
            nodes_cpu_ms_per_1000: 0.0,
            redis_cpu_ms_per_1000: None,
            postgres_cpu_ms_per_1000: None,
            harness_cpu_pct: 0.0,
            background_cpu_pct: 0.0,
            error: None,
        }
    }
}

/// Runs blocking service control (start, stop, kill) off the async threads.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| format!("service control panicked: {e}"))?
}

/// The `quire` processes of one configuration.
struct Nodes {
    /// `None` while a node is handed to a blocking task.
    nodes: Vec<Option<QuireNode>>,
    addrs: Vec<String>,
}

impl Nodes {
    async fn start(
        ctx: &Ctx,
        postgres: &Postgres,
        redis: &Redis,
        store: &str,
        count: usize,
    ) -> Result<Self, String> {
        let mut args: Vec<String> = ctx.env.quire_limit_args.clone();
        if store == "postgres" {
            let database = format!("cluster_{count}");
            postgres
                .psql("postgres", &format!("DROP DATABASE IF EXISTS {database}"))
                .map_err(|e| e.to_string())?;
            let url = postgres
                .create_database(&database)
                .map_err(|e| e.to_string())?;
            redis
                .command(&["FLUSHALL"])
                .map_err(|e| format!("cannot empty Redis: {e}"))?;
            args.extend(["--database-url".to_owned(), url]);
            args.extend(["--redis-url".to_owned(), redis.url()]);
        }
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        for n in 0..count {
            let dir = ctx
                .env
                .data_dir(&format!("cluster-{store}-{count}-node{n}"));
            let binary = ctx.env.quire_bin.clone();
            let args = args.clone();
            let node = blocking(move || {
                QuireNode::start_in(&binary, dir, &args).map_err(|e| e.to_string())
            })
            .await?;
            addrs.push(node.addr());
            nodes.push(Some(node));
        }
        Ok(Self { nodes, addrs })
    }

    fn url(&self, node: usize, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addrs[node])
    }

    fn pid(&self, node: usize) -> u32 {
        self.nodes[node]
            .as_ref()
            .and_then(QuireNode::pid)
            .unwrap_or(0)
    }

    /// Runs `job` on node `n` on a blocking thread.
    async fn control(
        &mut self,
        n: usize,
        job: impl FnOnce(&mut QuireNode) -> Result<(), String> + Send + 'static,
    ) -> Result<(), String> {
        let mut node = self.nodes[n].take().ok_or("node is busy")?;
        let (node, result) = tokio::task::spawn_blocking(move || {
            let result = job(&mut node);
            (node, result)
        })
        .await
        .map_err(|e| format!("node control panicked: {e}"))?;
        self.nodes[n] = Some(node);
        result
    }

    async fn stop(mut self) {
        let nodes: Vec<QuireNode> = self.nodes.drain(..).flatten().collect();
        let _ = blocking(move || {
            for mut node in nodes {
                node.stop();
            }
            Ok(())
        })
        .await;
    }
}

/// CPU seconds of a process and its children: PostgreSQL's postmaster and
/// its backends (which each start a session of their own, so they are not
/// in its process group), plus what it reaped of children that ended.
fn family_cpu_s(parent: u32) -> f64 {
    let ticks = sys::clock_ticks();
    let mut total = 0.0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After ')': state, ppid, ..., utime (11), stime, cutime, cstime.
        let ppid = fields.get(1).and_then(|g| g.parse::<u32>().ok());
        if pid != parent && ppid != Some(parent) {
            continue;
        }
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += field(11) + field(12);
        if pid == parent {
            total += field(13) + field(14);
        }
    }
    total / ticks
}

/// When each writer sent each of its updates (index: sequence number).
type SendLog = Arc<Vec<Mutex<Vec<Instant>>>>;

struct WriterResult {
    sent: u64,
    acked: u64,
    ack_micros: Vec<u32>,
}

struct ReaderResult {
    same_micros: Vec<u32>,
    cross_micros: Vec<u32>,
    delivered: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

async fn steady(
    ctx: &Ctx,
    cluster: &Nodes,
    postgres: &Postgres,
    redis: &Redis,
    store: &str,
    window: Duration,
) -> Run {
    let nodes = cluster.addrs.len();
    let mut run = Run::new(store, nodes, window);
    let sent_log: SendLog = Arc::new((0..ROOMS).map(|_| Mutex::new(Vec::new())).collect());
    let (stop_tx, stop) = watch::channel(false);
    // Readers first: every node has each document's room open before the
    // writers start.
    let mut readers = Vec::new();
    for room in 0..ROOMS {
        for node in 0..nodes {
            let url = cluster.url(node, &format!("load-{room}"));
            let writer_node = room % nodes;
            let log = sent_log.clone();
            let stop = stop.clone();
            readers.push(tokio::spawn(async move {
                reader(url, node == writer_node, log, stop).await
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    await_quiet(ctx).await;
    let node_meters: Vec<sys::CpuMeter> = (0..nodes)
        .map(|n| sys::CpuMeter::start(cluster.pid(n)))
        .collect();
    let redis_pid = redis.pid().unwrap_or(0);
    let redis_meter = sys::CpuMeter::start(redis_pid);
    let pg_pid = postgres.pid().unwrap_or(0);
    let pg_before = family_cpu_s(pg_pid);
    let harness = sys::CpuMeter::start(0);
    let machine_before = sys::machine_cpu().0;
    let started = Instant::now();
    let end = started + window;
    let interval = Duration::from_secs_f64(1.0 / RATE);
    let urls: Vec<String> = (0..ROOMS)
        .map(|room| cluster.url(room % nodes, &format!("load-{room}")))
        .collect();
    let writers = bounded(ROOMS, ROOMS, |room| {
        writer(
            urls[room].clone(),
            room as u32,
            interval,
            end,
            sent_log.clone(),
        )
    })
    .await;
    // CPU over the window and the drain of the last acks.
    let elapsed = started.elapsed().as_secs_f64();
    run.node_cpu_s = node_meters.iter().map(|m| m.read().0).collect();
    let redis_cpu = redis_meter.read().0;
    let pg_cpu = (family_cpu_s(pg_pid) - pg_before).max(0.0);
    let (harness_cpu, _) = harness.read();
    let machine_busy = sys::machine_cpu().0 - machine_before;
    let mut ack_micros = Vec::new();
    for result in writers {
        match result {
            Ok(w) => {
                run.updates += w.sent;
                run.acked += w.acked;
                ack_micros.extend(w.ack_micros);
            }
            Err(e) => run.error = Some(e),
        }
    }
    run.expected = run.updates * nodes as u64;
    // The readers take what is still on its way, then stop.
    let drain_end = Instant::now() + DRAIN;
    while Instant::now() < drain_end && DELIVERED.load(Ordering::Relaxed) < run.expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut same = Vec::new();
    let mut cross = Vec::new();
    for reader in readers {
        match reader.await {
            Ok(Ok(r)) => {
                run.delivered += r.delivered;
                same.extend(r.same_micros);
                cross.extend(r.cross_micros);
            }
            Ok(Err(e)) => run.error = Some(e),
            Err(e) => run.error = Some(e.to_string()),
        }
    }
    DELIVERED.store(0, Ordering::Relaxed);
    run.save_ack = Latency::from_micros(&mut ack_micros);
    run.same_node = Latency::from_micros(&mut same);
    run.cross_node = Latency::from_micros(&mut cross);
    let thousands = (run.updates as f64 / 1000.0).max(1e-9);
    run.node_cpu_ms_per_1000 = run
        .node_cpu_s
        .iter()
        .map(|cpu| 1000.0 * cpu / thousands)
        .collect();
    run.nodes_cpu_ms_per_1000 = run.node_cpu_ms_per_1000.iter().sum();
    if store == "postgres" {
        run.redis_cpu_ms_per_1000 = Some(1000.0 * redis_cpu / thousands);
        run.postgres_cpu_ms_per_1000 = Some(1000.0 * pg_cpu / thousands);
    }
    let measured: f64 = run.node_cpu_s.iter().sum::<f64>()
        + if store == "postgres" {
            redis_cpu + pg_cpu
        } else {
            0.0
        };
    run.harness_cpu_pct = 100.0 * harness_cpu / elapsed;
    run.background_cpu_pct = 100.0 * (machine_busy - measured - harness_cpu).max(0.0) / elapsed;
    run
}

/// Tokens delivered to every reader so far (the drain's progress).
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// A `quire.v1` writer typing at `interval` until `end`, then waiting (up
/// to [`DRAIN`]) for its last acks.
async fn writer(
    url: String,
    id: u32,
    interval: Duration,
    end: Instant,
    log: SendLog,
) -> Result<WriterResult, String> {
    let mut socket = ws::connect(&url, Some(SUBPROTOCOL)).await?;
    ws::handshake_empty(&mut socket, |_| {}).await?;
    // The handshake's step 2 was update message 1.
    let mut messages = 1u64;
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut result = WriterResult {
        sent: 0,
        acked: 0,
        ack_micros: Vec::new(),
    };
    let doc = Doc::with_client_id(u64::from(id) + 1);
    let text = doc.get_or_insert_text("content");
    let mut tick = tokio::time::interval_at(Instant::now(), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let give_up = end + DRAIN;
    loop {
        let typing = Instant::now() < end;
        if !typing && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if typing => {
                let update = {
                    let mut txn = doc.transact_mut();
                    text.insert(&mut txn, 0, &ws::token(id, result.sent as u32));
                    txn.encode_update_v1()
                };
                let now = Instant::now();
                log[id as usize].lock().unwrap().push(now);
                socket
                    .send(WsMessage::Binary(ws::update_frame(&update).into()))
                    .await
                    .map_err(|e| e.to_string())?;
                result.sent += 1;
                messages += 1;
                in_flight.push_back((messages, now));
            }
            message = socket.next() => {
                let Some(bytes) = binary(message, "writer")? else { continue };
                match ws::classify(&bytes) {
                    Frame::Ext(Ext::Saved { through }) => {
                        let at = Instant::now();
                        while let Some(&(number, sent)) = in_flight.front() {
                            if number > through {
                                break;
                            }
                            result.ack_micros.push(micros(at - sent));
                            result.acked += 1;
                            in_flight.pop_front();
                        }
                    }
                    Frame::Ext(Ext::Ping(nonce)) => socket
                        .send(WsMessage::Binary(Ext::Pong(nonce).encode().into()))
                        .await
                        .map_err(|e| e.to_string())?,
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(give_up) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    Ok(result)
}

/// A stock reader: the delivery latency of every token it receives, until
/// `stop`.
async fn reader(
    url: String,
    same_node: bool,
    log: SendLog,
    mut stop: watch::Receiver<bool>,
) -> Result<ReaderResult, String> {
    let mut socket = ws::connect(&url, None).await?;
    ws::handshake_empty(&mut socket, |_| {}).await?;
    let mut result = ReaderResult {
        same_micros: Vec::new(),
        cross_micros: Vec::new(),
        delivered: 0,
    };
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            message = socket.next() => {
                let Some(bytes) = binary(message, "reader")? else { continue };
                let at = Instant::now();
                let (Frame::Update(update) | Frame::Step2(update)) = ws::classify(&bytes) else {
                    continue;
                };
                ws::scan_tokens(update, |writer, seq| {
                    if !seen.insert((writer, seq)) {
                        return;
                    }
                    let sent = log
                        .get(writer as usize)
                        .and_then(|l| l.lock().unwrap().get(seq as usize).copied());
                    let Some(sent) = sent else { return };
                    result.delivered += 1;
                    DELIVERED.fetch_add(1, Ordering::Relaxed);
                    let latency = micros(at.saturating_duration_since(sent));
                    if same_node {
                        result.same_micros.push(latency);
                    } else {
                        result.cross_micros.push(latency);
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    Ok(result)
}

/// Kill -9 of the writer's node, `cycles` times; restarts it after each.
async fn failover(cluster: &mut Nodes, cycles: usize) -> Failover {
    let nodes = cluster.addrs.len();
    let victim = nodes - 1;
    let target = if nodes >= 3 { 1 } else { 0 };
    let mut out = Failover {
        nodes,
        delivery: if target == 0 {
            "reconnected to the reader's node".into()
        } else {
            "reconnected to a third node: cross-node".into()
        },
        cycles_ms: Vec::new(),
        noticed_ms: Vec::new(),
        resynced_ms: Vec::new(),
        saved_ms: Vec::new(),
        p50_ms: None,
        max_ms: None,
        error: None,
    };
    for cycle in 0..cycles {
        match failover_cycle(cluster, cycle, victim, target).await {
            Ok((noticed, resynced, saved, delivered)) => {
                out.noticed_ms.push(noticed);
                out.resynced_ms.push(resynced);
                out.saved_ms.push(saved);
                out.cycles_ms.push(delivered);
            }
            Err(e) => {
                out.error = Some(format!("cycle {cycle}: {e}"));
                break;
            }
        }
        if let Err(e) = cluster
            .control(victim, |n| n.start_again().map_err(|e| e.to_string()))
            .await
        {
            out.error = Some(format!("restart after cycle {cycle}: {e}"));
            break;
        }
    }
    let mut sorted = out.cycles_ms.clone();
    sorted.sort_by(f64::total_cmp);
    out.p50_ms = sorted.get(sorted.len().saturating_sub(1) / 2).copied();
    out.max_ms = sorted.last().copied();
    out
}

/// One failover: (noticed, resynced, saved, delivered) in ms after the kill.
async fn failover_cycle(
    cluster: &mut Nodes,
    cycle: usize,
    victim: usize,
    target: usize,
) -> Result<(f64, f64, f64, f64), String> {
    let doc = format!("failover-{cycle}");
    let mut reader = ws::connect(&cluster.url(0, &doc), None).await?;
    ws::handshake_empty(&mut reader, |_| {}).await?;
    let mut writer = ws::connect(&cluster.url(victim, &doc), Some(SUBPROTOCOL)).await?;
    ws::handshake_empty(&mut writer, |_| {}).await?;
    let doc_state = Doc::with_client_id(u64::from(FAILOVER_WRITER));
    let text = doc_state.get_or_insert_text("content");
    let type_token = |seq: u32| {
        let mut txn = doc_state.transact_mut();
        text.insert(&mut txn, 0, &ws::token(FAILOVER_WRITER, seq));
        WsMessage::Binary(ws::update_frame(&txn.encode_update_v1()).into())
    };
    // A first update, saved and seen by the reader: both rooms are live.
    writer
        .send(type_token(0))
        .await
        .map_err(|e| e.to_string())?;
    wait_frame(
        &mut writer,
        |f| matches!(f, Frame::Ext(Ext::Saved { through }) if *through >= 2),
    )
    .await?;
    wait_token(&mut reader, 0).await?;

    let killed = Instant::now();
    cluster
        .control(victim, |n| {
            n.kill();
            Ok(())
        })
        .await?;
    // The writer sees its connection end (a reset from the dead process).
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match writer.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .map_err(|_| "the writer never saw its node die".to_owned())?;
    let noticed = killed.elapsed();
    let mut writer = ws::connect(&cluster.url(target, &doc), Some(SUBPROTOCOL)).await?;
    ws::handshake_empty(&mut writer, |_| {}).await?;
    let resynced = killed.elapsed();
    writer
        .send(type_token(1))
        .await
        .map_err(|e| e.to_string())?;
    let saved = async {
        wait_frame(
            &mut writer,
            |f| matches!(f, Frame::Ext(Ext::Saved { through }) if *through >= 2),
        )
        .await
        .map(|()| killed.elapsed())
    };
    let seen = async { wait_token(&mut reader, 1).await.map(|()| killed.elapsed()) };
    let (saved, delivered) = tokio::join!(saved, seen);
    let (saved, delivered) = (saved?, delivered?);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer.close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader.close(None)).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(noticed), ms(resynced), ms(saved), ms(delivered)))
}

/// A received frame's bytes if it is binary (`None` for other frames); an
/// error once the connection closed or failed.
fn binary(message: Option<Result<WsMessage, WsError>>, who: &str) -> Result<Option<Bytes>, String> {
    match message {
        Some(Ok(WsMessage::Binary(bytes))) => Ok(Some(bytes)),
        Some(Ok(WsMessage::Close(frame))) => Err(format!("{who} closed: {frame:?}")),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(format!("{who}: {e}")),
        None => Err(format!("{who} connection ended")),
    }
}

/// Reads until a frame `pick` accepts (answering pings), within 10 s.
async fn wait_frame(socket: &mut ws::Ws, pick: impl Fn(&Frame) -> bool) -> Result<(), String> {
    let waiting = async {
        loop {
            let Some(bytes) = binary(socket.next().await, "connection")? else {
                continue;
            };
            let frame = ws::classify(&bytes);
            if pick(&frame) {
                return Ok(());
            }
            if let Frame::Ext(Ext::Ping(nonce)) = frame {
                socket
                    .send(WsMessage::Binary(Ext::Pong(nonce).encode().into()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Reads until the failover writer's token `seq` arrives.
async fn wait_token(socket: &mut ws::Ws, seq: u32) -> Result<(), String> {
    wait_frame(socket, |frame| {
        let (Frame::Update(update) | Frame::Step2(update)) = frame else {
            return false;
        };
        let mut found = false;
        ws::scan_tokens(update, |w, s| found |= w == FAILOVER_WRITER && s == seq);
        found
    })
    .await
    .map_err(|e| format!("token {seq} not delivered: {e}"))
}
