//! Fan-out: R rooms × C clients, the first W clients of each room writing r
//! edits/s each, every client a real collaborator: it holds a yrs `Doc`,
//! applies every update it receives, and a writer inserts its next token
//! `<writer:seq>` at its own cursor (a sticky index after its previous
//! token, which moves with the others' edits), as people typing in
//! different places of one document do. Every other client of the room
//! checks that each writer's sequence arrives exactly once and measures
//! delivery latency from the edit's send time, recorded just before sending.
//! When a writer is held back (backpressure) by more than the timer's slack
//! of 2 ms, latency counts from the *scheduled* time instead, so a server
//! that slows its writers down shows it as latency, not as a lower rate. At
//! the end every client of a room must hold the same text (convergence).
//!
//! Two parts: the load (4 rooms × 50 clients, 5 writers per room at
//! 20 edits/s for 8 s, ≈ 19,600 deliveries/s), and a sweep over the offered
//! load (20 rooms × 20 clients, 2 writers per room) that doubles each
//! server's rate until it fails (p99 over 50 ms, a loss, a duplicate, a
//! divergence, a disconnect or falling behind), then bisects between the
//! last rate it kept up with and the first it missed, so that each server's
//! saturation point is measured, not bounded by a coarse step.
//!
//! One client is one tokio task (reading, applying and writing in one
//! `select!`), so the generator costs little beyond the yrs work a real
//! client does; its CPU is reported ("harness CPU") beside the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::{Assoc, Doc, GetString, IndexedSequence, StickyIndex, Text, Transact, Update};

use super::{STOP_GRACE, Span, Usage, bounded_rooms_first, start};
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

impl Load {
    /// Deliveries per second the load asks for: every edit to every other
    /// client of its room.
    pub fn offered(&self) -> f64 {
        f64::from(self.rooms * self.writers * (self.clients - 1)) * self.rate
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub kind: Kind,
    pub load: Load,
    pub offered_per_s: f64,
    pub edits_sent: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Tokens from another room (must be 0).
    pub misrouted: u64,
    /// Clients whose connection ended before the end.
    pub disconnects: u64,
    /// Clients whose final text differs from their room's first client's.
    pub diverged: u64,
    pub deliveries_per_s: f64,
    /// Edits sent / edits scheduled.
    pub send_fraction: f64,
    pub latency: Latency,
    pub usage: Usage,
    /// Server CPU per delivered message, in microseconds.
    pub server_cpu_us_per_delivery: f64,
    /// p99 within the limit, nothing lost, duplicated or diverged, ≥ 95 %
    /// of the scheduled edits sent, no disconnects.
    pub kept_up: bool,
    pub error: Option<String>,
}

/// One server's saturation point in the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saturation {
    pub kind: Kind,
    /// Highest deliveries/s kept up with.
    pub deliveries_per_s: f64,
    /// Its rate per writer.
    pub rate: f64,
    /// The lowest rate it failed at (None: it kept up with every rate
    /// tried, so the saturation is only a lower bound).
    pub failed_at_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub base: Vec<Run>,
    pub sweep: Vec<Run>,
    pub saturation: Vec<Saturation>,
    pub p99_limit_ms: f64,
    /// Largest rate per writer the sweep tries.
    pub max_rate: f64,
}

/// Where one server stands in the sweep.
struct Search {
    kind: Kind,
    /// Highest rate kept up with, lowest rate failed at.
    ok: Option<f64>,
    failed: Option<f64>,
    bisections_left: u32,
}

impl Search {
    /// The next rate to measure, or None when done.
    fn next(&self, first: f64, factor: f64, max_rate: f64) -> Option<f64> {
        match (self.ok, self.failed) {
            (None, None) => Some(first),
            (Some(ok), None) => (ok < max_rate).then(|| (ok * factor).min(max_rate)),
            (None, Some(_)) => None, // failed at the lowest rate
            (Some(ok), Some(failed)) => {
                (self.bisections_left > 0).then(|| (ok * failed).sqrt().round())
            }
        }
    }

    fn record(&mut self, rate: f64, kept_up: bool) {
        if self.failed.is_some() {
            self.bisections_left = self.bisections_left.saturating_sub(1);
        }
        if kept_up {
            self.ok = Some(self.ok.map_or(rate, |ok: f64| ok.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f: f64| f.min(rate)));
        }
    }
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    // The load.
    let base_load = Load {
        rooms: 4,
        clients: 50,
        writers: 5,
        rate: 20.0,
        seconds: ctx.pick(8.0, 2.0),
        warmup_s: ctx.pick(1.0, 0.5),
    };
    let mut base = Vec::new();
    for &kind in &ctx.env.kinds {
        let run = measure(ctx, kind, base_load, "base").await;
        print_run(&run);
        base.push(run);
    }

    // For investigations (a profile of the load): no sweep.
    if std::env::var("QUIRE_BENCH_SWEEP").as_deref() == Ok("0") {
        return serde_json::to_value(Results {
            base,
            sweep: Vec::new(),
            saturation: Vec::new(),
            p99_limit_ms: P99_LIMIT_MS,
            max_rate: 0.0,
        })
        .map_err(|e| e.to_string());
    }
    let topology = |rate| Load {
        rooms: 20,
        clients: 20,
        writers: 2,
        rate,
        seconds: ctx.pick(5.0, 1.5),
        warmup_s: ctx.pick(1.0, 0.5),
    };
    let (first, factor, max_rate, bisections) =
        ctx.pick((10.0, 2.0, 2560.0, 3), (40.0, 4.0, 640.0, 1));
    let mut searches: Vec<Search> = ctx
        .env
        .kinds
        .iter()
        .map(|&kind| Search {
            kind,
            ok: None,
            failed: None,
            bisections_left: bisections,
        })
        .collect();
    let mut sweep: Vec<Run> = Vec::new();
    // Rounds: every server still searching measures its next rate, in turn.
    for round in 0.. {
        let mut any = false;
        for search in &mut searches {
            let Some(rate) = search.next(first, factor, max_rate) else {
                continue;
            };
            any = true;
            let run = measure(ctx, search.kind, topology(rate), &format!("sweep{round}")).await;
            print_run(&run);
            search.record(rate, run.kept_up);
            sweep.push(run);
        }
        if !any {
            break;
        }
    }
    let saturation = searches
        .iter()
        .map(|search| {
            let best = sweep
                .iter()
                .filter(|r| r.kind == search.kind && r.kept_up)
                .max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
            Saturation {
                kind: search.kind,
                deliveries_per_s: best.map_or(0.0, |r| r.deliveries_per_s),
                rate: best.map_or(0.0, |r| r.load.rate),
                failed_at_rate: search.failed,
            }
        })
        .collect();
    let results = Results {
        base,
        sweep,
        saturation,
        p99_limit_ms: P99_LIMIT_MS,
        max_rate,
    };
    for s in &results.saturation {
        println!(
            "saturation {}: {:.0} deliveries/s ({} edits/s per writer){}",
            s.kind.label(),
            s.deliveries_per_s,
            s.rate,
            if s.failed_at_rate.is_none() {
                " — kept up with every rate tried (a lower bound)"
            } else {
                ""
            }
        );
    }
    serde_json::to_value(results).map_err(|e| e.to_string())
}

fn print_run(run: &Run) {
    println!(
        "  {:<18} rate {:>5}/s  deliveries {:>8.0}/s of {:>8.0}  p50 {:>7.2} p99 {:>8.2} max {:>8.2} ms  lost {} dup {} diverged {}  cpu {:>5.1}% ({:.1} µs/delivery)  rss {} MiB  harness {:>5.1}%  other {:>5.1}%{}{}",
        run.kind.label(),
        run.load.rate,
        run.deliveries_per_s,
        run.offered_per_s,
        run.latency.p50_ms,
        run.latency.p99_ms,
        run.latency.max_ms,
        run.lost,
        run.duplicated,
        run.diverged,
        run.usage.cpu_pct,
        run.server_cpu_us_per_delivery,
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
    /// Edits sent so far, per writer.
    sent: Vec<AtomicU64>,
    /// Writers that sent their last edit (or gave up).
    writers_done: AtomicU32,
    /// A writer's connection failed.
    failed: AtomicBool,
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
    /// The client's text at the end.
    text: String,
    error: Option<String>,
}

async fn measure(ctx: &Ctx, kind: Kind, load: Load, tag: &str) -> Run {
    match measure_inner(ctx, kind, load, tag).await {
        Ok(run) => run,
        Err(e) => Run {
            kind,
            load,
            offered_per_s: load.offered(),
            edits_sent: 0,
            deliveries_expected: 0,
            deliveries: 0,
            lost: 0,
            duplicated: 0,
            misrouted: 0,
            disconnects: 0,
            diverged: 0,
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
            "the server exited during the run; its last output: {server_log:?}"
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
    let total_writers = load.rooms * load.writers;
    let shared = Arc::new(Shared {
        sent_at: (0..total_writers)
            .map(|_| (0..max_seq).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        sent: (0..total_writers).map(|_| AtomicU64::new(0)).collect(),
        load,
        start: start_rx,
        delivered: AtomicU64::new(0),
        stop: stop_rx,
        period,
        total_writers,
        writers_done: AtomicU32::new(0),
        failed: AtomicBool::new(false),
    });

    // Connect every client (bounded concurrency), each then runs on its own.
    let n = (load.rooms * load.clients) as usize;
    let urls: Arc<Vec<String>> = Arc::new(
        (0..load.rooms)
            .map(|r| server.url(&format!("fan-{tag}-{r}")))
            .collect(),
    );
    let opens_room = |i: usize| (i as u32).is_multiple_of(load.clients);
    let connected = bounded_rooms_first(n, 64, opens_room, |i| {
        let urls = urls.clone();
        let shared = shared.clone();
        async move {
            let room = i as u32 / load.clients;
            let index = i as u32 % load.clients;
            let mut socket = ws::connect(&urls[room as usize], None).await?;
            ws::handshake_empty(&mut socket, |_| {}).await?;
            let gid = (index < load.writers).then_some(room * load.writers + index);
            Ok::<_, String>(tokio::spawn(client(
                socket,
                shared,
                i as u64 + 1,
                room,
                gid,
                max_seq,
            )))
        }
    })
    .await;
    let mut clients = Vec::new();
    for c in connected {
        clients.push(c?);
    }

    let t0 = Instant::now() + Duration::from_millis(200);
    let span = Span::start(server);
    start_tx.send_replace(Some(t0));
    // Writing window, then drain: until every delivery arrived, or 5 s of
    // silence, or 10 s.
    let writing_ends = t0 + Duration::from_secs_f64(load.seconds) + Duration::from_secs(10);
    while shared.writers_done.load(Ordering::Acquire) < total_writers
        && Instant::now() < writing_ends
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let edits_sent = || -> u64 { shared.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum() };
    let expected = edits_sent() * u64::from(load.clients - 1);
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
    stop_tx.send_replace(true);

    let edits_sent = edits_sent();
    let mut latencies = Vec::new();
    let mut run = Run {
        kind: server.kind,
        load,
        offered_per_s: load.offered(),
        edits_sent,
        deliveries_expected: edits_sent * u64::from(load.clients - 1),
        deliveries: 0,
        lost: 0,
        duplicated: 0,
        misrouted: 0,
        disconnects: 0,
        diverged: 0,
        deliveries_per_s: 0.0,
        send_fraction: edits_sent as f64
            / (f64::from(total_writers) * load.rate * load.seconds).max(1.0),
        latency: Latency::default(),
        usage,
        server_cpu_us_per_delivery: 0.0,
        kept_up: false,
        error: None,
    };
    let mut room_text: Option<String> = None;
    for (i, handle) in clients.into_iter().enumerate() {
        let room = i as u32 / load.clients;
        let index = i as u32 % load.clients;
        let Ok(mut seen) = handle.await else {
            run.error = Some("a client panicked".into());
            continue;
        };
        if let Some(e) = seen.error.take() {
            run.error.get_or_insert(e);
        }
        run.duplicated += seen.duplicated;
        run.misrouted += seen.misrouted;
        run.disconnects += u64::from(seen.disconnected);
        if index == 0 {
            room_text = Some(std::mem::take(&mut seen.text));
        } else if room_text.as_deref() != Some(seen.text.as_str()) {
            run.diverged += 1;
        }
        for w in 0..load.writers {
            if w == index {
                continue;
            }
            let gid = room * load.writers + w;
            let sent_w = shared.sent[gid as usize].load(Ordering::Relaxed);
            let got: u64 = seen.bits[w as usize]
                .iter()
                .map(|b| u64::from(b.count_ones()))
                .sum();
            run.deliveries += got;
            run.lost += sent_w.saturating_sub(got);
        }
        latencies.append(&mut seen.latencies_us);
    }
    run.latency = Latency::from_micros(&mut latencies);
    // Deliveries per second over the writing window (not the drain).
    run.deliveries_per_s = run.deliveries as f64 / load.seconds;
    run.server_cpu_us_per_delivery = 1e6 * run.usage.cpu_s / (run.deliveries.max(1) as f64);
    if shared.failed.load(Ordering::Relaxed) && run.error.is_none() {
        run.error = Some("a writer's connection failed".into());
    }
    run.kept_up = run.error.is_none()
        && run.lost == 0
        && run.duplicated == 0
        && run.misrouted == 0
        && run.disconnects == 0
        && run.diverged == 0
        && run.send_fraction >= 0.95
        && run.latency.p99_ms <= P99_LIMIT_MS;
    Ok(run)
}

/// One collaborator: applies what it receives to its document and, if it is
/// a writer (`gid`), types a token at its own cursor on schedule.
async fn client(
    mut socket: Ws,
    shared: Arc<Shared>,
    client_id: u64,
    room: u32,
    gid: Option<u32>,
    max_seq: u32,
) -> Seen {
    let load = shared.load;
    let words = (max_seq as usize).div_ceil(64);
    let mut seen = Seen {
        bits: (0..load.writers).map(|_| vec![0u64; words]).collect(),
        ..Seen::default()
    };
    let doc = Doc::with_client_id(client_id);
    let text = doc.get_or_insert_text("content");
    let mut cursor: Option<StickyIndex> = None;
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
    let end = Duration::from_secs_f64(load.seconds);
    let mut seq = 0u32;
    let mut writing = gid.is_some();
    let done_writing = |shared: &Shared| {
        shared.writers_done.fetch_add(1, Ordering::Release);
    };
    if let Some(g) = gid
        && shared.due(g, 0) >= end
    {
        writing = false;
        done_writing(&shared);
    }
    loop {
        let due = gid.map_or(end, |g| shared.due(g, seq));
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(t0 + due), if writing => {
                let g = gid.expect("writers have an id");
                let update = {
                    let mut txn = doc.transact_mut();
                    let at = cursor
                        .as_ref()
                        .and_then(|c| c.get_offset(&txn))
                        .map_or(0, |o| o.index);
                    text.insert(&mut txn, at, &ws::token(g, seq));
                    cursor = text.sticky_index(&txn, at + ws::TOKEN_LEN as u32, Assoc::Before);
                    txn.encode_update_v1()
                };
                let now = Instant::now().saturating_duration_since(t0);
                shared.sent_at[g as usize][seq as usize].store(now.as_nanos() as u64, Ordering::Release);
                if socket.send(WsMessage::Binary(ws::update_frame(&update).into())).await.is_err() {
                    shared.failed.store(true, Ordering::Relaxed);
                    writing = false;
                    done_writing(&shared);
                    continue;
                }
                seq += 1;
                shared.sent[g as usize].store(u64::from(seq), Ordering::Relaxed);
                if shared.due(g, seq) >= end {
                    writing = false;
                    done_writing(&shared);
                }
            }
            message = socket.next() => {
                let bytes = match message {
                    Some(Ok(WsMessage::Binary(bytes))) => bytes,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                        seen.disconnected = !*stop.borrow();
                        if writing {
                            done_writing(&shared);
                        }
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let Frame::Update(update) = ws::classify(&bytes) else {
                    continue;
                };
                let now = Instant::now();
                let mut foreign = false;
                ws::scan_tokens(update, |w_gid, s| {
                    if w_gid / load.writers != room {
                        seen.misrouted += 1;
                        return;
                    }
                    if Some(w_gid) == gid {
                        return; // an echo of this client's own edit
                    }
                    foreign = true;
                    let w = (w_gid % load.writers) as usize;
                    let (word, bit) = ((s / 64) as usize, s % 64);
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
                    let due = shared.due(w_gid, s);
                    if due >= warmup {
                        let sent = Duration::from_nanos(
                            shared.sent_at[w_gid as usize]
                                .get(s as usize)
                                .map_or(0, |t| t.load(Ordering::Acquire)),
                        );
                        let origin = if sent > due + TIMER_SLACK { due } else { sent };
                        let latency = now.saturating_duration_since(t0 + origin);
                        seen.latencies_us
                            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                });
                // Integrate it, as a real client does (an echo of its own
                // edit changes nothing, so it is skipped).
                if foreign {
                    let applied = Update::decode_v1(update)
                        .map_err(|e| e.to_string())
                        .and_then(|u| doc.transact_mut().apply_update(u).map_err(|e| e.to_string()));
                    if let Err(e) = applied {
                        seen.error.get_or_insert(format!("cannot apply a relayed update: {e}"));
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    seen.text = text.get_string(&doc.transact());
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep doubles until a rate fails, then bisects between the last
    /// rate kept up with and the first missed, three times.
    #[test]
    fn sweep_doubles_then_bisects_to_the_saturation_point() {
        let mut search = Search {
            kind: Kind::Quire,
            ok: None,
            failed: None,
            bisections_left: 3,
        };
        let mut tried = Vec::new();
        while let Some(rate) = search.next(10.0, 2.0, 2560.0) {
            tried.push(rate);
            search.record(rate, rate < 100.0);
        }
        assert_eq!(tried, [10.0, 20.0, 40.0, 80.0, 160.0, 113.0, 95.0, 104.0]);
        assert_eq!((search.ok, search.failed), (Some(95.0), Some(104.0)));
    }

    /// A server that keeps up with every rate stops at the largest rate:
    /// its saturation is only a lower bound.
    #[test]
    fn sweep_stops_at_the_largest_rate() {
        let mut search = Search {
            kind: Kind::Bare,
            ok: None,
            failed: None,
            bisections_left: 3,
        };
        let mut tried = Vec::new();
        while let Some(rate) = search.next(40.0, 4.0, 640.0) {
            tried.push(rate);
            search.record(rate, true);
        }
        assert_eq!(tried, [40.0, 160.0, 640.0]);
        assert_eq!(search.failed, None);
    }
}
