//! Traces: real editing sessions replayed through each server, one edit per
//! update. Sequential traces (automerge-paper, seph-blog1, rustcode): one
//! writer client sends every update (at most 256 unacknowledged by the
//! reader), one reader client receives them all. The concurrent trace
//! friendsforever: its 2 agents are 2 clients; an agent sends an edit only
//! once it has received every edit of the other agent that the edit's
//! `parents` reach, so each server sees the causal order a real session
//! would produce (see `trace::concurrent`).
//!
//! Reported: end-to-end time (first send to last receipt), server CPU per
//! update (including a settling second, 0.2 s in quick mode, for background persistence), bytes
//! stored after a clean shutdown (the document was evicted, which compacts
//! Quire's log, and loaded once more by a fresh client, which makes y-leveldb
//! trim its log), and whether the fresh client's text equals `endContent`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

use super::{STOP_GRACE, Span, Usage, start};
use crate::Ctx;
use crate::servers::{Kind, Server};
use crate::sys;
use crate::trace;
use crate::ws::{self, Frame, Ws};

/// Updates a writer may send ahead of the reader.
const WINDOW: u64 = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceInfo {
    pub name: String,
    pub concurrent: bool,
    pub updates: usize,
    pub update_bytes: u64,
    /// Whether the local yrs replay reproduces the trace's `endContent`.
    pub replay_matches_end_content: bool,
    pub final_len: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub kind: Kind,
    pub trace: String,
    pub updates: u64,
    pub e2e_s: f64,
    pub updates_per_s: f64,
    pub usage: Usage,
    pub server_cpu_us_per_update: f64,
    /// `du` of the data folder after a clean shutdown (allocated bytes).
    pub stored_bytes: Option<u64>,
    /// Sum of the files' lengths.
    pub stored_apparent_bytes: Option<u64>,
    /// The text the receiving client(s) assembled equals the expected text.
    pub receivers_match: bool,
    /// A fresh client's text equals the expected text (None: bare server,
    /// which keeps no document).
    pub fresh_client_matches: Option<bool>,
    pub clean_shutdown: bool,
    pub error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let limit = ctx.pick(usize::MAX, 5_000);
    let mut infos = Vec::new();
    let mut runs = Vec::new();
    for name in ["automerge-paper", "seph-blog1", "rustcode"] {
        let prepared = std::time::Instant::now();
        let replay = trace::sequential(name, limit)?;
        let info = TraceInfo {
            name: name.to_owned(),
            concurrent: false,
            updates: replay.updates.len(),
            update_bytes: replay.updates.iter().map(|u| u.len() as u64).sum(),
            replay_matches_end_content: replay.end_content_matches,
            final_len: replay.expected.len(),
        };
        println!(
            "  {name}: {} updates, {} bytes, prepared in {:.1} s{}",
            info.updates,
            info.update_bytes,
            prepared.elapsed().as_secs_f64(),
            if ctx.quick { " (quick: a prefix)" } else { "" }
        );
        let job = Arc::new(Job::Sequential(replay.updates));
        for &kind in &ctx.env.kinds {
            let run = measure(ctx, kind, name, job.clone(), &replay.expected).await;
            print_run(&run);
            runs.push(run);
        }
        infos.push(info);
    }
    let name = "friendsforever";
    let con = trace::concurrent(name, limit)?;
    let info = TraceInfo {
        name: name.to_owned(),
        concurrent: true,
        updates: con.updates.len(),
        update_bytes: con.updates.iter().map(|u| u.update.len() as u64).sum(),
        replay_matches_end_content: con.end_content_matches,
        final_len: con.expected.len(),
    };
    println!(
        "  {name}: {} updates from {} agents ({} merges, {} chain violations), merged text equals endContent: {}",
        info.updates, con.agents, con.merges, con.chain_violations, con.end_content_matches
    );
    let expected = con.expected.clone();
    let job = Arc::new(Job::Concurrent(con));
    for &kind in &ctx.env.kinds {
        let run = measure(ctx, kind, name, job.clone(), &expected).await;
        print_run(&run);
        runs.push(run);
    }
    infos.push(info);
    serde_json::to_value(serde_json::json!({ "traces": infos, "runs": runs, "window": WINDOW }))
        .map_err(|e| e.to_string())
}

fn print_run(run: &Run) {
    println!(
        "  {:<18} {:<16} {:>7} updates in {:>6.2} s ({:>6.0}/s)  cpu {:>6.1} µs/update  stored {:>9}  fresh client ok {:?}  receivers ok {}{}",
        run.kind.label(),
        run.trace,
        run.updates,
        run.e2e_s,
        run.updates_per_s,
        run.server_cpu_us_per_update,
        run.stored_bytes
            .map_or("-".into(), |b| format!("{} KiB", b / 1024)),
        run.fresh_client_matches,
        run.receivers_match,
        run.error
            .as_deref()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default(),
    );
}

enum Job {
    Sequential(Vec<Vec<u8>>),
    Concurrent(trace::ConcurrentUpdates),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Sequential(u) => u.len(),
            Job::Concurrent(c) => c.updates.len(),
        }
    }
}

async fn measure(ctx: &Ctx, kind: Kind, name: &str, job: Arc<Job>, expected: &str) -> Run {
    let mut run = Run {
        kind,
        trace: name.to_owned(),
        updates: job.len() as u64,
        e2e_s: 0.0,
        updates_per_s: 0.0,
        usage: Usage::default(),
        server_cpu_us_per_update: 0.0,
        stored_bytes: None,
        stored_apparent_bytes: None,
        receivers_match: false,
        fresh_client_matches: None,
        clean_shutdown: false,
        error: None,
    };
    let grace = ctx.pick("500ms", "100ms");
    let (server, options) = match start(
        ctx,
        kind,
        &format!("trace-{name}"),
        &["--room-grace", grace],
    )
    .await
    {
        Ok(started) => started,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let room = format!("trace-{name}");
    let timeout = Duration::from_secs(ctx.pick(600, 60));
    let settle = Duration::from_millis(ctx.pick(1000, 200));
    let replayed = match &*job {
        Job::Sequential(updates) => {
            replay_sequential(&server, &room, updates, timeout, settle).await
        }
        Job::Concurrent(con) => replay_concurrent(&server, &room, con, timeout, settle).await,
    };
    match replayed {
        Ok((e2e, usage, texts)) => {
            run.e2e_s = e2e.as_secs_f64();
            run.updates_per_s = run.updates as f64 / run.e2e_s.max(1e-9);
            run.server_cpu_us_per_update = 1e6 * usage.cpu_s / run.updates.max(1) as f64;
            run.usage = usage;
            run.receivers_match = texts.iter().all(|t| t == expected);
        }
        Err(e) => run.error = Some(e),
    }
    if kind != Kind::Bare && run.error.is_none() {
        // Let the room be evicted (Quire compacts), then load it afresh.
        tokio::time::sleep(Duration::from_millis(ctx.pick(1500, 400))).await;
        let target = expected.len() as u32;
        match ws::sync_until(&server.url(&room), Duration::from_secs(60), |len| {
            len >= target
        })
        .await
        {
            Ok((doc, _, mut socket)) => {
                run.fresh_client_matches = Some(ws::text_of(&doc) == expected);
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
            }
            Err(e) => {
                run.fresh_client_matches = Some(false);
                run.error = Some(format!("fresh client: {e}"));
            }
        }
        tokio::time::sleep(settle).await;
    }
    let (_, clean) = server.stop(STOP_GRACE).await;
    run.clean_shutdown = clean;
    if let (Some(data), true) = (&options.data, kind != Kind::Bare) {
        let (blocks, apparent) = sys::disk_usage(data);
        run.stored_bytes = Some(blocks);
        run.stored_apparent_bytes = Some(apparent);
    }
    run
}

/// Counts and keeps every update a connection receives; wakes the waiter.
struct Receiver {
    received: AtomicU64,
    wake: Notify,
}

fn spawn_receiver(
    mut stream: SplitStream<Ws>,
    receiver: Arc<Receiver>,
    keep: bool,
) -> tokio::task::JoinHandle<Vec<Vec<u8>>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(Ok(message)) = stream.next().await {
            let WsMessage::Binary(bytes) = message else {
                if message.is_close() {
                    break;
                }
                continue;
            };
            if let Frame::Update(update) = ws::classify(&bytes) {
                if keep {
                    kept.push(update.to_vec());
                }
                receiver.received.fetch_add(1, Ordering::Release);
                receiver.wake.notify_one();
            }
        }
        receiver.wake.notify_one();
        kept
    })
}

/// Waits until `condition` holds for `receiver`, or `deadline`.
async fn wait_for(
    receiver: &Receiver,
    deadline: tokio::time::Instant,
    condition: impl Fn(u64) -> bool,
) -> Result<(), String> {
    loop {
        let notified = receiver.wake.notified();
        if condition(receiver.received.load(Ordering::Acquire)) {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(format!(
                "timed out with {} updates received",
                receiver.received.load(Ordering::Acquire)
            ));
        }
    }
}

fn merged_text(updates: &[Vec<u8>]) -> String {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for update in updates {
            if let Ok(update) = Update::decode_v1(update) {
                let _ = txn.apply_update(update);
            }
        }
    }
    ws::text_of(&doc)
}

async fn connect(server: &Server, room: &str) -> Result<Ws, String> {
    let mut socket = ws::connect(&server.url(room), None).await?;
    ws::handshake_empty(&mut socket, |_| {}).await?;
    Ok(socket)
}

async fn replay_sequential(
    server: &Server,
    room: &str,
    updates: &[Vec<u8>],
    timeout: Duration,
    settle: Duration,
) -> Result<(Duration, Usage, Vec<String>), String> {
    let n = updates.len() as u64;
    let (mut reader_sink, reader_stream) = connect(server, room).await?.split();
    let reader = Arc::new(Receiver {
        received: AtomicU64::new(0),
        wake: Notify::new(),
    });
    let reading = spawn_receiver(reader_stream, reader.clone(), true);
    let (mut sink, stream) = connect(server, room).await?.split();
    // The writer's own input (the reference echoes its updates) is drained.
    let echoes = spawn_receiver(
        stream,
        Arc::new(Receiver {
            received: AtomicU64::new(0),
            wake: Notify::new(),
        }),
        false,
    );
    let frames: Vec<Vec<u8>> = updates.iter().map(|u| ws::update_frame(u)).collect();
    let span = Span::start(server);
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    for (sent, frame) in frames.into_iter().enumerate() {
        let sent = sent as u64;
        wait_for(&reader, deadline, |received| sent < received + WINDOW).await?;
        sink.send(WsMessage::Binary(frame.into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    wait_for(&reader, deadline, |received| received >= n).await?;
    let e2e = started.elapsed();
    tokio::time::sleep(settle).await;
    let usage = span.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader_sink.close()).await;
    let kept = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .map_err(|_| "reader did not finish".to_owned())?
        .map_err(|e| e.to_string())?;
    echoes.abort();
    Ok((e2e, usage, vec![merged_text(&kept)]))
}

async fn replay_concurrent(
    server: &Server,
    room: &str,
    con: &trace::ConcurrentUpdates,
    timeout: Duration,
    settle: Duration,
) -> Result<(Duration, Usage, Vec<String>), String> {
    // The reference server echoes a client's own updates back to it.
    let echo = server.kind == Kind::Reference;
    let agents = con.agents;
    let mut sinks = Vec::new();
    let mut receivers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..agents {
        let (sink, stream) = connect(server, room).await?.split();
        let receiver = Arc::new(Receiver {
            received: AtomicU64::new(0),
            wake: Notify::new(),
        });
        readers.push(spawn_receiver(stream, receiver.clone(), true));
        receivers.push(receiver);
        sinks.push(sink);
    }
    let totals: Vec<u64> = (0..agents)
        .map(|a| con.updates.iter().filter(|u| u.agent == a).count() as u64)
        .collect();
    let all: u64 = totals.iter().sum();
    let span = Span::start(server);
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut tasks = Vec::new();
    for (a, mut sink) in sinks.into_iter().enumerate() {
        let receiver = receivers[a].clone();
        let mine: Vec<(Vec<u8>, u64)> = con
            .updates
            .iter()
            .filter(|u| u.agent == a)
            .map(|u| {
                let others: usize = u
                    .requires
                    .iter()
                    .enumerate()
                    .filter(|&(b, _)| b != a)
                    .map(|(_, &k)| k)
                    .sum();
                (ws::update_frame(&u.update), others as u64)
            })
            .collect();
        let expected_in = all - totals[a] + if echo { totals[a] } else { 0 };
        tasks.push(tokio::spawn(async move {
            for (sent, (frame, others)) in mine.into_iter().enumerate() {
                let own_echoes = if echo { sent as u64 } else { 0 };
                // Everything of the others this edit builds on has arrived
                // (with echoes, also this agent's own earlier edits).
                wait_for(&receiver, deadline, |received| {
                    received >= others + own_echoes
                })
                .await?;
                sink.send(WsMessage::Binary(frame.into()))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            wait_for(&receiver, deadline, |received| received >= expected_in).await?;
            Ok::<_, String>(sink)
        }));
    }
    let mut sinks = Vec::new();
    for task in tasks {
        sinks.push(task.await.map_err(|e| e.to_string())??);
    }
    let e2e = started.elapsed();
    tokio::time::sleep(settle).await;
    let usage = span.finish();
    for sink in &mut sinks {
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    }
    let mut texts = Vec::new();
    for (a, reader) in readers.into_iter().enumerate() {
        let mut kept = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .map_err(|_| "reader did not finish".to_owned())?
            .map_err(|e| e.to_string())?;
        // An agent's document: what it received plus its own edits.
        kept.extend(
            con.updates
                .iter()
                .filter(|u| u.agent == a)
                .map(|u| u.update.clone()),
        );
        texts.push(merged_text(&kept));
    }
    Ok((e2e, usage, texts))
}
