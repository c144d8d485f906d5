//! Idle: N connected stock y-websocket clients across 100 rooms, doing
//! nothing but answering heartbeats (tungstenite answers WebSocket pings
//! while reading). Quire runs with its default `--ping-interval` (25 s), the
//! reference pings every 30 s, y-sweet every 20 s, the bare server every
//! 25 s; the window is
//! long enough for every connection to be pinged at least once in a full
//! run. Measures server memory per connection and CPU per idle second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{STOP_GRACE, Span, Usage, bounded_rooms_first, start};
use crate::Ctx;
use crate::servers::Kind;
use crate::ws;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub kind: Kind,
    pub clients: u32,
    pub rooms: u32,
    pub connected: u32,
    pub connect_s: f64,
    pub window_s: f64,
    /// Server RSS before any client connected (KiB).
    pub rss_before_kib: u64,
    /// Server RSS with every client connected, at the end of the window (KiB).
    pub rss_connected_kib: u64,
    /// (connected − before) / clients, in bytes.
    pub rss_per_conn_bytes: f64,
    /// Server CPU milliseconds per idle second, over the window.
    pub cpu_ms_per_s: f64,
    pub usage: Usage,
    /// WebSocket pings the clients received in the window.
    pub pings: u64,
    /// Connections that ended during the window (must be 0).
    pub disconnects: u64,
    /// The load generator's memory per connection (bytes), for scale.
    pub harness_rss_per_conn_bytes: f64,
    pub error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let clients: u32 = ctx.pick(10_000, 1_000);
    let rooms = 100;
    let window = Duration::from_secs(ctx.pick(40, 5));
    let mut runs = Vec::new();
    for &kind in &ctx.env.kinds {
        let run = match measure(ctx, kind, clients, rooms, window).await {
            Ok(run) => run,
            Err(e) => {
                println!("  {}: {e}", kind.label());
                continue;
            }
        };
        println!(
            "  {:<18} {} clients in {:.1} s  rss {:.0} -> {:.0} MiB  = {:.0} B/conn  cpu {:.2} ms/s  pings {}  disconnects {}  harness {:.0} B/conn",
            kind.label(),
            run.connected,
            run.connect_s,
            run.rss_before_kib as f64 / 1024.0,
            run.rss_connected_kib as f64 / 1024.0,
            run.rss_per_conn_bytes,
            run.cpu_ms_per_s,
            run.pings,
            run.disconnects,
            run.harness_rss_per_conn_bytes,
        );
        runs.push(run);
    }
    serde_json::to_value(serde_json::json!({ "runs": runs })).map_err(|e| e.to_string())
}

async fn measure(
    ctx: &Ctx,
    kind: Kind,
    clients: u32,
    rooms: u32,
    window: Duration,
) -> Result<Run, String> {
    let (mut server, _) = start(ctx, kind, "idle", &[]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.sample();
    let harness_before = crate::sys::sample(0).unwrap_or_default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let pings = Arc::new(AtomicU64::new(0));
    let disconnects = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let urls: Arc<Vec<String>> = Arc::new(
        (0..rooms)
            .map(|r| server.url(&format!("idle-{r}")))
            .collect(),
    );
    let opens_room = |i: usize| i < rooms as usize;
    let connected = bounded_rooms_first(clients as usize, 128, opens_room, |i| {
        let url = urls[i % rooms as usize].clone();
        let stop = stop_rx.clone();
        let pings = pings.clone();
        let disconnects = disconnects.clone();
        async move {
            let mut ws = ws::connect(&url, None).await?;
            ws::handshake_empty(&mut ws, |_| {}).await?;
            let task = tokio::spawn(async move {
                let mut stop = stop;
                loop {
                    tokio::select! {
                        message = ws.next() => match message {
                            Some(Ok(WsMessage::Ping(_))) => { pings.fetch_add(1, Ordering::Relaxed); }
                            Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => {
                                if !*stop.borrow() {
                                    disconnects.fetch_add(1, Ordering::Relaxed);
                                }
                                return;
                            }
                            Some(Ok(_)) => {}
                        },
                        _ = stop.changed() => {
                            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                            return;
                        }
                    }
                }
            });
            Ok::<_, String>(task)
        }
    })
    .await;
    let connect_s = started.elapsed().as_secs_f64();
    let mut tasks = Vec::new();
    let mut error = None;
    for c in connected {
        match c {
            Ok(task) => tasks.push(task),
            Err(e) => error = Some(e),
        }
    }
    // Let connection setup settle, then measure the idle window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pings.store(0, Ordering::Relaxed);
    let span = Span::start(&server);
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline && server.alive() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let usage = span.finish();
    let harness_after = crate::sys::sample(0).unwrap_or_default();
    let run = Run {
        kind,
        clients,
        rooms,
        connected: tasks.len() as u32,
        connect_s,
        window_s: usage.wall_s,
        rss_before_kib: before.rss_kib,
        rss_connected_kib: usage.rss_kib,
        rss_per_conn_bytes: (usage.rss_kib as f64 - before.rss_kib as f64) * 1024.0
            / f64::from(clients.max(1)),
        cpu_ms_per_s: 1000.0 * usage.cpu_s / usage.wall_s.max(1e-9),
        usage,
        pings: pings.load(Ordering::Relaxed),
        disconnects: disconnects.load(Ordering::Relaxed),
        harness_rss_per_conn_bytes: (harness_after.rss_kib as f64 - harness_before.rss_kib as f64)
            * 1024.0
            / f64::from(clients.max(1)),
        error,
    };
    stop_tx.send_replace(true);
    for task in tasks {
        let _ = task.await;
    }
    server.stop(STOP_GRACE).await;
    Ok(run)
}
