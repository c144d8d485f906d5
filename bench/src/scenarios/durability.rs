//! Durability: updates per second the server acknowledges as saved on disk
//! (`quire.v1` `Saved` acks, sent after the group commit that made an update
//! durable), with the default commit window (10 ms) versus `--commit-window
//! 0ms`.
//!
//! What 0 does (storage/src/sled_store.rs, `run_flusher`): the flusher
//! thread skips its wait and flushes as soon as a write is pending, but
//! writes arriving while a flush runs still join the next flush: 0 ms is
//! "no deliberate batching", not "one fsync per update". The flush counts
//! from `/metrics` (`persist_batch_size`) show how many writes each flush
//! covered.
//!
//! Two workloads: one client sending its next update only once the previous
//! one is saved (ack latency bound), and 64 clients in 16 rooms with up to
//! 16 unacknowledged updates each (throughput bound). Each client types as
//! a person does, on at the end of its own text (`writer-<id>`: a paragraph
//! of its own), and integrates what the others in its room type. Until
//! round 5 every client inserted at the head of one text it never updated:
//! each insert's YATA conflict scan then crossed every item the room's other
//! clients had inserted, so yrs' `resolve_conflict` took most of the
//! server's time and the rate fell the longer a run lasted; that measured
//! yrs, not saving. (Typing after a sticky cursor in one shared text costs
//! the client O(text) per keystroke in yrs, `from_block_offset` over its one
//! squashed block, which made the load generator the limit.) The reference server
//! has no save acknowledgement (y-leveldb writes without fsync and tells no
//! one), so it has no column here.
//!
//! Each workload also runs on the issue-time `quire`
//! ([`crate::servers::BASELINE_COMMIT`], default window) when the bench has
//! it: issue 14's target 5 asks that 64 writers keep that server's saved
//! updates/s, which only a measurement in the same run can decide.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::ext::{Ext, SUBPROTOCOL};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Text, Transact, Update};

use super::{STOP_GRACE, Span, Usage, bounded, start};
use crate::Ctx;
use crate::servers::{Kind, Server};
use crate::stats::Latency;
use crate::ws::{self, Frame};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Measured on the issue-time `quire`, not the current one.
    #[serde(default)]
    pub baseline: bool,
    pub commit_window: String,
    pub workload: String,
    pub clients: usize,
    pub window: usize,
    pub acked: u64,
    pub acked_per_s: f64,
    pub ack_latency: Latency,
    pub usage: Usage,
    pub server_cpu_us_per_update: f64,
    /// Flushes /metrics recorded during the run, and the writes they covered.
    pub flushes_observed: Option<f64>,
    pub writes_per_flush: Option<f64>,
    pub flush_ms_mean: Option<f64>,
    pub error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    if !ctx.env.kinds.contains(&Kind::Quire) {
        return Err("durability needs Quire".into());
    }
    let seconds = ctx.pick(10.0, 2.0);
    let baseline = ctx.env.with_baseline_quire().map(|env| Ctx {
        env,
        quick: ctx.quick,
    });
    let mut runs = Vec::new();
    for (workload, clients, rooms, window) in [("serial", 1, 1, 1), ("parallel", 64, 16, 16)] {
        // The issue-time server first, then the current one with each window.
        let setups = baseline
            .iter()
            .map(|b| (b, "2ms (default)", true))
            .chain([(ctx, "10ms (default)", false), (ctx, "0ms", false)]);
        for (on, commit_window, is_baseline) in setups {
            let args: Vec<&str> = if commit_window == "0ms" {
                vec!["--commit-window", "0ms"]
            } else {
                Vec::new()
            };
            let mut run = measure(
                on,
                &args,
                commit_window,
                workload,
                clients,
                rooms,
                window,
                seconds,
            )
            .await;
            run.baseline = is_baseline;
            println!(
                "  {:<8}{} commit window {:<14} {:>7.0} saved updates/s  ack p50 {:>6.2} p99 {:>6.2} ms  cpu {:>5.1} µs/update ({:.0}%, harness {:.0}%, other {:.0}%)  writes/flush {}{}",
                workload,
                if is_baseline {
                    format!(" (issue-time {})", crate::servers::baseline_short())
                } else {
                    String::new()
                },
                commit_window,
                run.acked_per_s,
                run.ack_latency.p50_ms,
                run.ack_latency.p99_ms,
                run.server_cpu_us_per_update,
                run.usage.cpu_pct,
                run.usage.harness_cpu_pct,
                run.usage.background_cpu_pct,
                run.writes_per_flush
                    .map_or("-".into(), |w| format!("{w:.1}")),
                run.error
                    .as_deref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default(),
            );
            runs.push(run);
        }
    }
    let baseline = baseline.as_ref().map(|b| {
        serde_json::json!({
            "commit": b.env.measured.commit,
            "source": b.env.measured.source,
            "flags_added_by_the_bench": b.env.quire_limit_args,
        })
    });
    serde_json::to_value(serde_json::json!({
        "seconds": seconds,
        "runs": runs,
        "baseline": baseline,
    }))
    .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    ctx: &Ctx,
    args: &[&str],
    commit_window: &str,
    workload: &str,
    clients: usize,
    rooms: usize,
    window: usize,
    seconds: f64,
) -> Run {
    let mut run = Run {
        baseline: false,
        commit_window: commit_window.to_owned(),
        workload: workload.to_owned(),
        clients,
        window,
        acked: 0,
        acked_per_s: 0.0,
        ack_latency: Latency::default(),
        usage: Usage::default(),
        server_cpu_us_per_update: 0.0,
        flushes_observed: None,
        writes_per_flush: None,
        flush_ms_mean: None,
        error: None,
    };
    let (server, _) = match start(ctx, Kind::Quire, &format!("durability-{workload}"), args).await {
        Ok(started) => started,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let urls: Vec<String> = (0..clients)
        .map(|i| server.url(&format!("durable-{}", i % rooms)))
        .collect();
    let metrics_before = scrape(&server).await;
    let span = Span::start(&server);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let results = bounded(clients, clients, |i| {
        writer(urls[i].clone(), i as u64 + 1, window, end)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let usage = span.finish();
    let metrics_after = scrape(&server).await;
    let mut latencies = Vec::new();
    for result in results {
        match result {
            Ok((acked, mut l)) => {
                run.acked += acked;
                latencies.append(&mut l);
            }
            Err(e) => run.error = Some(e),
        }
    }
    run.acked_per_s = run.acked as f64 / elapsed;
    run.ack_latency = Latency::from_micros(&mut latencies);
    run.server_cpu_us_per_update = 1e6 * usage.cpu_s / run.acked.max(1) as f64;
    run.usage = usage;
    if let (Some(before), Some(after)) = (metrics_before, metrics_after) {
        let flushes = after.0 - before.0;
        run.flushes_observed = Some(flushes);
        if flushes > 0.0 {
            run.writes_per_flush = Some((after.1 - before.1) / flushes);
            run.flush_ms_mean = Some(1000.0 * (after.2 - before.2) / flushes);
        }
    }
    server.stop(STOP_GRACE).await;
    run
}

/// One client: keeps up to `window` updates unacknowledged until `end`,
/// then waits for the last acks. Returns acked updates and ack latencies (µs).
async fn writer(
    url: String,
    id: u64,
    window: usize,
    end: Instant,
) -> Result<(u64, Vec<u32>), String> {
    let mut socket = ws::connect(&url, Some(SUBPROTOCOL)).await?;
    let doc = Doc::with_client_id(id);
    let text = doc.get_or_insert_text(format!("writer-{id}"));
    let mut integrated = Ok(());
    ws::handshake_empty(&mut socket, |frame| {
        if let Frame::Step2(update) | Frame::Update(update) = ws::classify(frame)
            && integrated.is_ok()
        {
            integrated = integrate(&doc, update);
        }
    })
    .await?;
    integrated?;
    // The handshake's step 2 was update message 1.
    let mut sent_messages = 1u64;
    let mut acked_through = 0u64;
    let first = sent_messages + 1;
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut latencies = Vec::new();
    let mut seq = 0u32;
    let last_ack_deadline = end + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        while now < end && in_flight.len() < window {
            let update = {
                let mut txn = doc.transact_mut();
                text.push(&mut txn, &ws::token(id as u32, seq));
                txn.encode_update_v1()
            };
            seq += 1;
            socket
                .send(WsMessage::Binary(ws::update_frame(&update).into()))
                .await
                .map_err(|e| e.to_string())?;
            sent_messages += 1;
            in_flight.push_back((sent_messages, Instant::now()));
        }
        if now >= end && in_flight.is_empty() {
            break;
        }
        let message = tokio::time::timeout_at(last_ack_deadline, socket.next())
            .await
            .map_err(|_| "acks did not arrive in time".to_owned())?;
        let bytes = match message {
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(WsMessage::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        };
        match ws::classify(&bytes) {
            Frame::Ext(Ext::Saved { through }) => {
                acked_through = acked_through.max(through);
                let at = Instant::now();
                while let Some(&(number, sent)) = in_flight.front() {
                    if number > acked_through {
                        break;
                    }
                    latencies.push((at - sent).as_micros().min(u128::from(u32::MAX)) as u32);
                    in_flight.pop_front();
                }
            }
            // Another client's typing (the server does not echo one's own).
            Frame::Update(update) => integrate(&doc, update)?,
            Frame::Ext(Ext::Ping(nonce)) => socket
                .send(WsMessage::Binary(Ext::Pong(nonce).encode().into()))
                .await
                .map_err(|e| e.to_string())?,
            _ => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    Ok((acked_through.saturating_sub(first - 1), latencies))
}

/// Applies an update the server relayed to the client's document.
fn integrate(doc: &Doc, update: &[u8]) -> Result<(), String> {
    let update = Update::decode_v1(update).map_err(|e| format!("bad update: {e}"))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| format!("cannot apply a relayed update: {e}"))
}

/// (flush count, writes covered, flush seconds) from Quire's `/metrics`.
async fn scrape(server: &Server) -> Option<(f64, f64, f64)> {
    let body = metrics_text(server).await?;
    let value = |suffix: &str| metric(&body, suffix);
    Some((
        value("persist_batch_size_count")?,
        value("persist_batch_size_sum")?,
        value("persist_latency_seconds_sum").unwrap_or(0.0),
    ))
}

/// The first sample whose name ends with `suffix` in a Prometheus text page.
pub fn metric(body: &str, suffix: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Quire's `/metrics` page.
pub async fn metrics_text(server: &Server) -> Option<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(&server.addr).await.ok()?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()?
}
