//! Fan-out: R rooms × C clients, the first W clients of each room writing r
//! edits/s each. Every edit inserts a token `<writer:seq>` at the head of
//! the text; every other client of the room checks that each writer's
//! sequence arrives exactly once and measures delivery latency from the
//! edit's send time, recorded by the writer just before sending. When a
//! writer is held back (backpressure) by more than the timer's slack of
//! 2 ms, latency counts from the *scheduled* time instead, so a server that
//! slows its writers down shows it as latency, not as a lower rate. Then a
//! sweep raises the rate until p99 passes 50 ms, to find each server's
//! saturation point.
//!
//! Writers do not integrate the others' edits (they only count them): an
//! insert at the head references the writer's own previous item, which every
//! server has, so the servers' work is that of real concurrent typists.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{Doc, Text, Transact};

use super::{STOP_GRACE, Span, Usage, bounded, start};
use crate::Ctx;
use crate::servers::{Kind, Server};
use crate::stats::Latency;
use crate::ws::{self, Frame, Ws};

/// The p99 a server must keep to count as keeping up.
pub const P99_LIMIT_MS: f64 = 50.0;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Load {
    pub rooms: u32,
    pub clients: u32,
    pub writers: u32,
    /// Edits per second per writer.
    pub rate: f64,
    pub seconds: f64,
    /// Latencies of edits scheduled in the first `warmup_s` are not counted.
    pub warmup_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub kind: Kind,
    pub load: Load,
    pub edits_sent: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Tokens from another room (must be 0).
    pub misrouted: u64,
    /// Clients whose connection ended before the end.
    pub disconnects: u64,
    pub deliveries_per_s: f64,
    /// Edits sent / edits scheduled.
    pub send_fraction: f64,
    pub latency: Latency,
    pub usage: Usage,
    /// Server CPU per delivered message, in microseconds.
    pub server_cpu_us_per_delivery: f64,
    /// p99 within the limit, nothing lost or duplicated, ≥ 95 % of the
    /// scheduled edits sent, no disconnects.
    pub kept_up: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub base: Vec<Run>,
    pub sweep: Vec<Run>,
    /// Highest deliveries/s each server kept up with in the sweep.
    pub saturation: Vec<(Kind, f64)>,
    pub p99_limit_ms: f64,
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let base_load = Load {
        rooms: ctx.pick(100, 20),
        clients: 10,
        writers: 2,
        rate: 10.0,
        seconds: ctx.pick(12.0, 2.0),
        warmup_s: ctx.pick(1.0, 0.5),
    };
    let mut base = Vec::new();
    for &kind in &ctx.env.kinds {
        let run = measure(ctx, kind, base_load, "base").await;
        print_run(&run);
        base.push(run);
    }

    let sweep_rates: Vec<f64> = ctx.pick(
        vec![10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0],
        vec![20.0, 80.0, 320.0],
    );
    let topology = |rate| Load {
        rooms: 20,
        clients: 20,
        writers: 2,
        rate,
        seconds: ctx.pick(5.0, 1.5),
        warmup_s: ctx.pick(1.0, 0.5),
    };
    let mut sweep: Vec<Run> = Vec::new();
    let mut failed_at: Vec<(Kind, f64)> = Vec::new();
    for (step, &rate) in sweep_rates.iter().enumerate() {
        for &kind in &ctx.env.kinds {
            if failed_at.iter().any(|(k, _)| *k == kind) {
                continue;
            }
            let run = measure(ctx, kind, topology(rate), &format!("sweep{step}")).await;
            print_run(&run);
            let kept_up = run.kept_up;
            sweep.push(run);
            if !kept_up {
                failed_at.push((kind, rate));
            }
        }
        if failed_at.len() == ctx.env.kinds.len() {
            break;
        }
    }
    // One refining step between the last rate kept up with and the first missed.
    if !ctx.quick {
        for &(kind, rate) in &failed_at {
            let lower = sweep
                .iter()
                .filter(|r| r.kind == kind && r.kept_up)
                .map(|r| r.load.rate)
                .fold(0.0, f64::max);
            if lower > 0.0 {
                let mid = (lower * rate).sqrt().round();
                let run = measure(ctx, kind, topology(mid), "refine").await;
                print_run(&run);
                sweep.push(run);
            }
        }
    }
    let saturation = ctx
        .env
        .kinds
        .iter()
        .map(|&kind| {
            let best = sweep
                .iter()
                .filter(|r| r.kind == kind && r.kept_up)
                .map(|r| r.deliveries_per_s)
                .fold(0.0, f64::max);
            (kind, best)
        })
        .collect();
    let results = Results {
        base,
        sweep,
        saturation,
        p99_limit_ms: P99_LIMIT_MS,
    };
    for (kind, best) in &results.saturation {
        println!("saturation {}: {best:.0} deliveries/s", kind.label());
    }
    serde_json::to_value(results).map_err(|e| e.to_string())
}

fn print_run(run: &Run) {
    println!(
        "  {:<18} rate {:>5}/s  deliveries {:>8.0}/s  p50 {:>7.2} p99 {:>8.2} max {:>8.2} ms  lost {} dup {}  cpu {:>5.1}%  rss {} MiB  harness {:>5.1}%  other {:>5.1}%{}{}",
        run.kind.label(),
        run.load.rate,
        run.deliveries_per_s,
        run.latency.p50_ms,
        run.latency.p99_ms,
        run.latency.max_ms,
        run.lost,
        run.duplicated,
        run.usage.cpu_pct,
        run.usage.hwm_kib / 1024,
        run.usage.harness_cpu_pct,
        run.usage.background_cpu_pct,
        if run.kept_up {
            ""
        } else {
            "  [did not keep up]"
        },
        run.error
            .as_deref()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default(),
    );
}

/// Shared by every client of one measurement.
struct Shared {
    load: Load,
    /// Set once every client is connected: the instant edit 0 is due.
    start: watch::Receiver<Option<Instant>>,
    /// Deliveries counted so far, across clients.
    delivered: AtomicU64,
    stop: watch::Receiver<bool>,
    period: Duration,
    total_writers: u32,
    /// Per writer, per sequence number: nanoseconds after the start at
    /// which the edit was handed to the socket.
    sent_at: Vec<Vec<AtomicU64>>,
}

/// Timer slack tolerated between an edit's schedule and its sending.
const TIMER_SLACK: Duration = Duration::from_millis(2);

impl Shared {
    /// When edit `seq` of writer `gid` is due, relative to the start.
    fn due(&self, gid: u32, seq: u32) -> Duration {
        let phase = self
            .period
            .mul_f64(f64::from(gid) / f64::from(self.total_writers));
        phase + self.period * seq
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    /// Per writer of the room: bit per sequence number.
    bits: Vec<Vec<u64>>,
    duplicated: u64,
    misrouted: u64,
    disconnected: bool,
}

async fn measure(ctx: &Ctx, kind: Kind, load: Load, tag: &str) -> Run {
    match measure_inner(ctx, kind, load, tag).await {
        Ok(run) => run,
        Err(e) => Run {
            kind,
            load,
            edits_sent: 0,
            deliveries_expected: 0,
            deliveries: 0,
            lost: 0,
            duplicated: 0,
            misrouted: 0,
            disconnects: 0,
            deliveries_per_s: 0.0,
            send_fraction: 0.0,
            latency: Latency::default(),
            usage: Usage::default(),
            server_cpu_us_per_delivery: 0.0,
            kept_up: false,
            error: Some(e),
        },
    }
}

async fn measure_inner(ctx: &Ctx, kind: Kind, load: Load, tag: &str) -> Result<Run, String> {
    let (mut server, _options) = start(ctx, kind, &format!("fanout-{tag}"), &[]).await?;
    let result = drive(&server, load, tag).await;
    let alive = server.alive();
    let server_log = server.log_tail(5);
    let (_, _) = server.stop(STOP_GRACE).await;
    let mut run = result?;
    if !alive {
        run.error = Some(format!(
            "the server exited during the run; its last output: {:?}",
            server_log
        ));
        run.kept_up = false;
    }
    Ok(run)
}

async fn drive(server: &Server, load: Load, tag: &str) -> Result<Run, String> {
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let period = Duration::from_secs_f64(1.0 / load.rate);
    let max_seq = (load.rate * load.seconds).ceil() as u32 + 2;
    let shared = Arc::new(Shared {
        sent_at: (0..load.rooms * load.writers)
            .map(|_| (0..max_seq).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        load,
        start: start_rx,
        delivered: AtomicU64::new(0),
        stop: stop_rx,
        period,
        total_writers: load.rooms * load.writers,
    });
    let sent: Arc<Vec<AtomicU64>> = Arc::new(
        (0..load.rooms * load.writers)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let failed = Arc::new(AtomicBool::new(false));

    // Connect every client (bounded concurrency), each then runs on its own.
    let n = (load.rooms * load.clients) as usize;
    let urls: Vec<String> = (0..load.rooms)
        .map(|r| server.url(&format!("fan-{tag}-{r}")))
        .collect();
    let urls = Arc::new(urls);
    let connected = bounded(n, 64, |i| {
        let urls = urls.clone();
        let shared = shared.clone();
        let sent = sent.clone();
        let failed = failed.clone();
        async move {
            let room = i as u32 / load.clients;
            let index = i as u32 % load.clients;
            let mut ws = ws::connect(&urls[room as usize], None).await?;
            ws::handshake_empty(&mut ws, |_| {}).await?;
            let (sink, stream) = ws.split();
            let gid = (index < load.writers).then_some(room * load.writers + index);
            let reader = tokio::spawn(read_loop(stream, shared.clone(), room, gid, max_seq));
            let writer = gid.map(|gid| {
                tokio::spawn(write_loop(sink, shared.clone(), gid, sent.clone(), failed))
            });
            Ok::<_, String>((reader, writer))
        }
    })
    .await;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for c in connected {
        let (reader, writer) = c?;
        readers.push(reader);
        writers.extend(writer);
    }

    let t0 = Instant::now() + Duration::from_millis(200);
    let span = Span::start(server);
    start_tx.send_replace(Some(t0));
    let mut sinks = Vec::new();
    for writer in writers {
        if let Ok(sink) = writer.await {
            sinks.push(sink);
        }
    }
    let edits_sent: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let expected = edits_sent * u64::from(load.clients - 1);
    // Drain: wait until every delivery arrived, or 5 s of silence.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while Instant::now() < drain_deadline {
        let now = shared.delivered.load(Ordering::Relaxed);
        if now >= expected {
            break;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let usage = span.finish();
    let active_s = (Instant::now() - t0).as_secs_f64();
    stop_tx.send_replace(true);

    let mut latencies = Vec::new();
    let mut run = Run {
        kind: server.kind,
        load,
        edits_sent,
        deliveries_expected: expected,
        deliveries: 0,
        lost: 0,
        duplicated: 0,
        misrouted: 0,
        disconnects: 0,
        deliveries_per_s: 0.0,
        send_fraction: edits_sent as f64
            / (f64::from(load.rooms * load.writers) * load.rate * load.seconds).max(1.0),
        latency: Latency::default(),
        usage,
        server_cpu_us_per_delivery: 0.0,
        kept_up: false,
        error: None,
    };
    for (i, reader) in readers.into_iter().enumerate() {
        let room = i as u32 / load.clients;
        let index = i as u32 % load.clients;
        let Ok(mut seen) = reader.await else {
            run.error = Some("a reader panicked".into());
            continue;
        };
        run.duplicated += seen.duplicated;
        run.misrouted += seen.misrouted;
        run.disconnects += u64::from(seen.disconnected);
        for w in 0..load.writers {
            if w == index {
                continue;
            }
            let gid = room * load.writers + w;
            let sent_w = sent[gid as usize].load(Ordering::Relaxed);
            let got: u64 = seen.bits[w as usize]
                .iter()
                .map(|b| u64::from(b.count_ones()))
                .sum();
            run.deliveries += got;
            run.lost += sent_w.saturating_sub(got);
        }
        latencies.append(&mut seen.latencies_us);
    }
    // Close the writers' connections politely (readers closed theirs).
    for mut sink in sinks {
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    }
    run.latency = Latency::from_micros(&mut latencies);
    // Deliveries per second over the writing window (not the drain).
    run.deliveries_per_s = run.deliveries as f64 / load.seconds;
    run.server_cpu_us_per_delivery = 1e6 * run.usage.cpu_s / (run.deliveries.max(1) as f64);
    let _ = active_s;
    if failed.load(Ordering::Relaxed) && run.error.is_none() {
        run.error = Some("a writer's connection failed".into());
    }
    run.kept_up = run.error.is_none()
        && run.lost == 0
        && run.duplicated == 0
        && run.misrouted == 0
        && run.disconnects == 0
        && run.send_fraction >= 0.95
        && run.latency.p99_ms <= P99_LIMIT_MS;
    Ok(run)
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    room: u32,
    own: Option<u32>,
    max_seq: u32,
) -> Seen {
    let load = shared.load;
    let words = (max_seq as usize).div_ceil(64);
    let mut seen = Seen {
        bits: (0..load.writers).map(|_| vec![0u64; words]).collect(),
        ..Seen::default()
    };
    let mut start = shared.start.clone();
    let mut stop = shared.stop.clone();
    let t0 = loop {
        if let Some(t0) = *start.borrow_and_update() {
            break t0;
        }
        tokio::select! {
            _ = start.changed() => {}
            _ = stop.changed() => return seen,
        }
    };
    let warmup = Duration::from_secs_f64(load.warmup_s);
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = stop.changed() => break,
        };
        let bytes = match message {
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                seen.disconnected = !*stop.borrow();
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Frame::Update(update) = ws::classify(&bytes) else {
            continue;
        };
        let now = Instant::now();
        ws::scan_tokens(update, |gid, seq| {
            if gid / load.writers != room {
                seen.misrouted += 1;
                return;
            }
            if Some(gid) == own {
                // The reference server echoes a client's own updates.
                return;
            }
            let w = (gid % load.writers) as usize;
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            let Some(slot) = seen.bits[w].get_mut(word) else {
                seen.misrouted += 1;
                return;
            };
            if *slot & (1 << bit) != 0 {
                seen.duplicated += 1;
                return;
            }
            *slot |= 1 << bit;
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            let due = shared.due(gid, seq);
            if due >= warmup {
                let sent = Duration::from_nanos(
                    shared.sent_at[gid as usize]
                        .get(seq as usize)
                        .map_or(0, |t| t.load(Ordering::Acquire)),
                );
                let origin = if sent > due + TIMER_SLACK { due } else { sent };
                let latency = now.saturating_duration_since(t0 + origin);
                seen.latencies_us
                    .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
            }
        });
    }
    seen
}

async fn write_loop(
    mut sink: SplitSink<Ws, WsMessage>,
    shared: Arc<Shared>,
    gid: u32,
    sent: Arc<Vec<AtomicU64>>,
    failed: Arc<AtomicBool>,
) -> SplitSink<Ws, WsMessage> {
    let load = shared.load;
    let doc = Doc::with_client_id(u64::from(gid) + 1);
    let text = doc.get_or_insert_text("content");
    let mut start = shared.start.clone();
    let t0 = loop {
        if let Some(t0) = *start.borrow_and_update() {
            break t0;
        }
        if start.changed().await.is_err() {
            return sink;
        }
    };
    let end = Duration::from_secs_f64(load.seconds);
    let mut seq = 0u32;
    loop {
        let due = shared.due(gid, seq);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(t0 + due).await;
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, &ws::token(gid, seq));
            txn.encode_update_v1()
        };
        let now = Instant::now().saturating_duration_since(t0);
        shared.sent_at[gid as usize][seq as usize].store(now.as_nanos() as u64, Ordering::Release);
        if sink
            .send(WsMessage::Binary(ws::update_frame(&update).into()))
            .await
            .is_err()
        {
            failed.store(true, Ordering::Relaxed);
            break;
        }
        seq += 1;
        sent[gid as usize].store(u64::from(seq), Ordering::Relaxed);
    }
    sink
}
