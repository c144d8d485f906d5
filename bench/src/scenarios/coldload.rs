//! Cold load: documents holding the whole automerge-paper history (every
//! item of its 259,778 edits, deleted ones as tombstones, as one Yjs
//! update) are stored, the server is restarted, and a fresh client
//! measures the time from starting to connect until its text is complete
//! ("synced"): first for documents nobody has opened since the restart
//! (cold), then for the same document while it is still open (warm; the
//! difference is the server's load). Then every document is opened and
//! closed in turn, two at a time, with a short room grace so they are
//! evicted: the server's peak memory and its memory once they are all
//! evicted show whether eviction gives memory back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{STOP_GRACE, Span, Usage, bounded_try, start};
use crate::Ctx;
use crate::servers::{Kind, Server};
use crate::stats::Latency;
use crate::sys::ProcSample;
use crate::trace;
use crate::ws::{self, Frame};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub kind: Kind,
    pub documents: usize,
    pub state_bytes: usize,
    pub seed_s: f64,
    /// Connect-to-synced for documents not loaded since the restart (ms).
    pub cold: Latency,
    /// The first one after the restart (ms).
    pub first_cold_ms: f64,
    /// Connect-to-synced for the same documents while loaded (ms).
    pub warm: Latency,
    /// Server RSS after the restart, before any document was opened (KiB).
    pub rss_before_kib: u64,
    /// Peak RSS while the documents were loaded and evicted (KiB).
    pub hwm_kib: u64,
    /// RSS once every document was evicted (KiB).
    pub rss_after_kib: u64,
    /// The anonymous part of `rss_before_kib` (`RssAnon`: heap and
    /// stacks, without the binary's and libraries' pages), KiB.
    #[serde(default)]
    pub rss_anon_before_kib: u64,
    /// The anonymous part of `rss_after_kib`, KiB: what the documents
    /// opened and evicted left in the heap.
    #[serde(default)]
    pub rss_anon_after_kib: u64,
    /// Time to open and close every document, two at a time.
    pub load_all_s: f64,
    /// Server CPU per document load (ms).
    pub cpu_ms_per_load: f64,
    pub usage: Usage,
    pub disk_bytes: u64,
    /// Documents Quire still held in memory at the end (`/metrics` `rooms`).
    #[serde(default)]
    pub rooms_in_memory_after: Option<f64>,
    pub error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let documents = std::env::var("QUIRE_BENCH_COLD_DOCS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ctx.pick(1000, 30));
    let cold_samples = ctx.pick(20, 5);
    let prepared = std::time::Instant::now();
    let (state, text) = trace::history_state("automerge-paper", ctx.pick(usize::MAX, 60_000))?;
    println!(
        "  automerge-paper history: {} bytes as one update, {} characters, prepared in {:.1} s",
        state.len(),
        text.len(),
        prepared.elapsed().as_secs_f64()
    );
    let state = Arc::new(state);
    let mut runs = Vec::new();
    for &kind in &ctx.env.kinds {
        if !matches!(kind, Kind::Quire | Kind::Reference) {
            continue; // the bare server keeps no documents; y-sweet is measured in fanout and traces
        }
        let run = match measure(ctx, kind, &state, &text, documents, cold_samples).await {
            Ok(run) => run,
            Err(e) => {
                println!("  {}: {e}", kind.label());
                continue;
            }
        };
        println!(
            "  {:<18} seed {:.1} s  cold p50 {:.1} ms (first {:.1}, max {:.1})  warm p50 {:.1} ms  rss {:.0} MiB -> peak {:.0} -> after eviction {:.0} MiB ({:.2}x; anonymous {:.0} -> {:.0} MiB)  {} docs loaded in {:.1} s, cpu {:.1} ms/load{}",
            kind.label(),
            run.seed_s,
            run.cold.p50_ms,
            run.first_cold_ms,
            run.cold.max_ms,
            run.warm.p50_ms,
            run.rss_before_kib as f64 / 1024.0,
            run.hwm_kib as f64 / 1024.0,
            run.rss_after_kib as f64 / 1024.0,
            run.rss_after_kib as f64 / run.rss_before_kib.max(1) as f64,
            run.rss_anon_before_kib as f64 / 1024.0,
            run.rss_anon_after_kib as f64 / 1024.0,
            run.documents,
            run.load_all_s,
            run.cpu_ms_per_load,
            run.error
                .as_deref()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default(),
        );
        runs.push(run);
    }
    serde_json::to_value(serde_json::json!({
        "trace": "automerge-paper",
        "whole_trace": !ctx.quick,
        "final_len": text.len(),
        "runs": runs,
    }))
    .map_err(|e| e.to_string())
}

/// `RssAnon` of process `pid` in KiB (0 if unreadable): the resident
/// memory the process allocated, as opposed to the file pages of its
/// binary and libraries, which `VmRSS` also counts.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("RssAnon:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn doc_name(i: usize) -> String {
    format!("cold-{i:04}")
}

/// Stores `state` as document `room`: one update, then a step 1 whose
/// answer proves the update was applied.
async fn seed(url: String, state: Arc<Vec<u8>>) -> Result<(), String> {
    let mut socket = ws::connect(&url, None).await?;
    ws::handshake_empty(&mut socket, |_| {}).await?;
    socket
        .send(WsMessage::Binary(ws::update_frame(&state).into()))
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send(WsMessage::Binary(ws::EMPTY_STEP1.to_vec().into()))
        .await
        .map_err(|e| e.to_string())?;
    let answered = async {
        while let Some(Ok(message)) = socket.next().await {
            if let WsMessage::Binary(bytes) = message
                && matches!(ws::classify(&bytes), Frame::Step2(_))
            {
                return Ok(());
            }
        }
        Err("connection ended while seeding".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(60), answered)
        .await
        .map_err(|_| "seeding timed out".to_owned())??;
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    Ok(())
}

async fn measure(
    ctx: &Ctx,
    kind: Kind,
    state: &Arc<Vec<u8>>,
    text: &str,
    documents: usize,
    cold_samples: usize,
) -> Result<Run, String> {
    let quire_args = ["--room-grace", "200ms"];
    let (server, options) = start(ctx, kind, "coldload", &quire_args).await?;
    let seeding = std::time::Instant::now();
    let urls: Arc<Vec<String>> =
        Arc::new((0..documents).map(|i| server.url(&doc_name(i))).collect());
    let seeded = bounded_try(documents, 2, |i| seed(urls[i].clone(), state.clone())).await;
    let seed_s = seeding.elapsed().as_secs_f64();
    if let Err(e) = seeded {
        let log = server.log_tail(10);
        server.stop(STOP_GRACE).await;
        return Err(format!("seeding: {e}; server output: {log:?}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop(STOP_GRACE).await;

    // Restart on the same data.
    let server = Server::start(&ctx.env, kind, &options).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: ProcSample = server.sample();
    let anon_before = rss_anon_kib(server.pid);
    let target = text.len() as u32;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut error = None;
    for i in 0..cold_samples.min(documents) {
        let url = server.url(&doc_name(i));
        match ws::sync_until(&url, Duration::from_secs(60), |len| len >= target).await {
            Ok((doc, elapsed, mut first)) => {
                if ws::text_of(&doc) != text {
                    error = Some(format!("{} synced to the wrong text", doc_name(i)));
                }
                cold.push(elapsed.as_micros() as u32);
                // Warm: the document is open (the first client stays).
                if let Ok((_, elapsed, mut second)) =
                    ws::sync_until(&url, Duration::from_secs(60), |len| len >= target).await
                {
                    warm.push(elapsed.as_micros() as u32);
                    let _ = tokio::time::timeout(Duration::from_secs(2), second.close(None)).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), first.close(None)).await;
            }
            Err(e) => error = Some(format!("{}: {e}", doc_name(i))),
        }
    }
    let first_cold_ms = cold.first().map_or(0.0, |&us| f64::from(us) / 1000.0);

    // Every document, opened and closed, two at a time.
    let span = Span::start(&server);
    let loading = std::time::Instant::now();
    let urls: Arc<Vec<String>> =
        Arc::new((0..documents).map(|i| server.url(&doc_name(i))).collect());
    let loads = bounded_try(documents, 2, |i| {
        let url = urls[i].clone();
        async move {
            let (_, _, mut socket) =
                ws::sync_until(&url, Duration::from_secs(60), |len| len >= target).await?;
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
            Ok::<_, String>(())
        }
    })
    .await;
    let load_all_s = loading.elapsed().as_secs_f64();
    if let Err(e) = loads {
        error.get_or_insert(format!(
            "loading: {e}; server output: {:?}",
            server.log_tail(10)
        ));
    }
    // Eviction: Quire after its 200 ms grace (plus a flush), the reference at once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let usage = span.finish();
    let after = server.sample();
    let anon_after = rss_anon_kib(server.pid);
    let rooms_in_memory_after = if kind == Kind::Quire {
        let body = super::durability::metrics_text(&server).await;
        body.and_then(|b| super::durability::metric(&b, "_rooms"))
    } else {
        None
    };
    server.stop(STOP_GRACE).await;
    let disk_bytes = options
        .data
        .as_ref()
        .map_or(0, |d| crate::sys::disk_usage(d).0);
    Ok(Run {
        kind,
        documents,
        state_bytes: state.len(),
        seed_s,
        cold: Latency::from_micros(&mut cold),
        first_cold_ms,
        warm: Latency::from_micros(&mut warm),
        rss_before_kib: before.rss_kib,
        hwm_kib: after.hwm_kib,
        rss_after_kib: after.rss_kib,
        rss_anon_before_kib: anon_before,
        rss_anon_after_kib: anon_after,
        load_all_s,
        cpu_ms_per_load: 1000.0 * usage.cpu_s / documents.max(1) as f64,
        usage,
        disk_bytes,
        rooms_in_memory_after,
        error,
    })
}
