//! Traces: real editing sessions replayed through each server, one edit per
//! update. Sequential traces (automerge-paper, seph-blog1, rustcode): one
//! writer client sends every update (at most 256 unacknowledged by the
//! reader), one reader client receives them all. The concurrent trace
//! friendsforever: its 2 agents are 2 clients; an agent sends an edit only
//! once it has received every edit of the other agent that the edit's
//! `parents` reach, so each server sees the causal order a real session
//! would produce (see `trace::concurrent`).
//!
//! Scenario `traces`: every server replays each trace twice on the same
//! process, into two rooms: the first replay warms node's JIT (and any
//! cache), the second is the measurement the targets use; both are
//! reported. Quire runs once more with its default settings (no limits
//! lifted), again two replays on one process, to show what its rate
//! limits do to a fast writer; each of those stops after a time budget if
//! the limits hold it back, and reports how far it got.
//!
//! Scenario `storage`: one replay per trace and server, then the room is
//! evicted (Quire compacts its log), a fresh client loads it (which makes
//! y-leveldb trim its log) and must see `endContent`, and the server shuts
//! down cleanly: the data folder's size is what the document costs on disk.
//!
//! Reported: end-to-end time (first send to last receipt), server CPU per
//! update (including a settling second, 0.2 s in quick mode, for
//! background persistence).

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

/// One replay of a trace through a running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replay {
    /// First send to last receipt (or to the budget's end).
    pub e2e_s: f64,
    pub updates_per_s: f64,
    pub usage: Usage,
    pub server_cpu_us_per_update: f64,
    /// Updates the receivers got (all of them unless the budget ran out).
    pub delivered: u64,
    /// Every update arrived within the budget.
    pub finished: bool,
    /// The text the receiving client(s) assembled equals the expected text.
    pub receivers_match: bool,
}

/// Settings Quire ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settings {
    /// Connection and rate limits lifted (`servers::lift_limits`).
    LimitsLifted,
    /// `quire serve` defaults.
    Default,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub kind: Kind,
    pub trace: String,
    pub updates: u64,
    pub settings: Settings,
    /// The first replay on a fresh process (node's JIT cold).
    pub first: Option<Replay>,
    /// The second replay on the same process, into another room (warm).
    pub second: Option<Replay>,
    pub error: Option<String>,
}

/// One trace's cost on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageRun {
    pub kind: Kind,
    pub trace: String,
    pub updates: u64,
    pub replay: Option<Replay>,
    /// `du` of the data folder after a clean shutdown (allocated bytes).
    pub stored_bytes: Option<u64>,
    /// Sum of the files' lengths.
    pub stored_apparent_bytes: Option<u64>,
    /// A fresh client's text equals the expected text.
    pub fresh_client_matches: Option<bool>,
    pub clean_shutdown: bool,
    pub error: Option<String>,
}

/// The traces, as updates, prepared before any timing starts.
struct Prepared {
    info: TraceInfo,
    job: Arc<Job>,
    expected: String,
}

const SEQUENTIAL: [&str; 3] = ["automerge-paper", "seph-blog1", "rustcode"];
const CONCURRENT: &str = "friendsforever";

/// `QUIRE_BENCH_TRACES=a,b` (investigations): only these traces.
fn wanted(name: &str) -> bool {
    std::env::var("QUIRE_BENCH_TRACES").map_or(true, |list| list.split(',').any(|n| n == name))
}

fn prepare(ctx: &Ctx) -> Result<Vec<Prepared>, String> {
    let limit = ctx.pick(usize::MAX, 5_000);
    let mut out = Vec::new();
    for name in SEQUENTIAL.into_iter().filter(|n| wanted(n)) {
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
        out.push(Prepared {
            info,
            job: Arc::new(Job::Sequential(replay.updates)),
            expected: replay.expected,
        });
    }
    if !wanted(CONCURRENT) {
        return Ok(out);
    }
    let con = trace::concurrent(CONCURRENT, limit)?;
    let info = TraceInfo {
        name: CONCURRENT.to_owned(),
        concurrent: true,
        updates: con.updates.len(),
        update_bytes: con.updates.iter().map(|u| u.update.len() as u64).sum(),
        replay_matches_end_content: con.end_content_matches,
        final_len: con.expected.len(),
    };
    println!(
        "  {CONCURRENT}: {} updates from {} agents ({} merges, {} chain violations), merged text equals endContent: {}",
        info.updates, con.agents, con.merges, con.chain_violations, con.end_content_matches
    );
    out.push(Prepared {
        info,
        expected: con.expected.clone(),
        job: Arc::new(Job::Concurrent(con)),
    });
    Ok(out)
}

/// Scenario `traces`.
pub async fn run(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let traces = prepare(ctx)?;
    let mut runs = Vec::new();
    let lifted_budget = Duration::from_secs(ctx.pick(600, 60));
    // A budget for each default-settings replay, in case its rate limits
    // hold a fast writer back (before issue 14, to 500 updates per second).
    let budget = Duration::from_secs(ctx.pick(60, 15));
    for t in &traces {
        for &kind in &ctx.env.kinds {
            let run = measure(ctx, kind, t, Settings::LimitsLifted, lifted_budget).await;
            print_run(&run);
            runs.push(run);
        }
        if ctx.env.kinds.contains(&Kind::Quire) {
            let run = measure(ctx, Kind::Quire, t, Settings::Default, budget).await;
            print_run(&run);
            runs.push(run);
        }
    }
    let infos: Vec<&TraceInfo> = traces.iter().map(|t| &t.info).collect();
    serde_json::to_value(serde_json::json!({
        "traces": infos,
        "runs": runs,
        "window": WINDOW,
        "default_settings_budget_s": budget.as_secs_f64(),
    }))
    .map_err(|e| e.to_string())
}

/// Scenario `storage`.
pub async fn run_storage(ctx: &Ctx) -> Result<serde_json::Value, String> {
    let traces = prepare(ctx)?;
    let mut runs = Vec::new();
    for t in &traces {
        for &kind in ctx.env.kinds.iter().filter(|k| k.keeps_documents()) {
            let run = measure_storage(ctx, kind, t).await;
            println!(
                "  {:<18} {:<16} stored {:>9}  fresh client ok {:?}  clean shutdown {}{}",
                kind.label(),
                run.trace,
                run.stored_bytes
                    .map_or("-".into(), |b| format!("{} KiB", b / 1024)),
                run.fresh_client_matches,
                run.clean_shutdown,
                run.error
                    .as_deref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default(),
            );
            runs.push(run);
        }
    }
    let infos: Vec<&TraceInfo> = traces.iter().map(|t| &t.info).collect();
    serde_json::to_value(serde_json::json!({ "traces": infos, "runs": runs }))
        .map_err(|e| e.to_string())
}

fn print_replay(label: &str, replay: &Replay) {
    println!(
        "      {label:<7} {:>7} updates in {:>6.2} s ({:>6.0}/s)  cpu {:>6.1} µs/update{}  receivers ok {}",
        replay.delivered,
        replay.e2e_s,
        replay.updates_per_s,
        replay.server_cpu_us_per_update,
        if replay.finished {
            ""
        } else {
            "  [budget ran out]"
        },
        replay.receivers_match,
    );
}

fn print_run(run: &Run) {
    println!(
        "  {:<18} {:<16} {} updates{}{}",
        run.kind.label(),
        run.trace,
        run.updates,
        if run.settings == Settings::Default {
            "  (default settings)"
        } else {
            ""
        },
        run.error
            .as_deref()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default(),
    );
    if let Some(r) = &run.first {
        print_replay("first", r);
    }
    if let Some(r) = &run.second {
        print_replay("second", r);
    }
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

/// Replays `t` into `room`, stopping after `budget` (`Replay::finished`
/// says whether it got through).
async fn replay(
    ctx: &Ctx,
    server: &Server,
    room: &str,
    t: &Prepared,
    budget: Duration,
) -> Result<Replay, String> {
    let settle = Duration::from_millis(ctx.pick(1000, 200));
    match &*t.job {
        Job::Sequential(updates) => {
            replay_sequential(server, room, updates, &t.expected, budget, settle).await
        }
        Job::Concurrent(con) => {
            replay_concurrent(server, room, con, &t.expected, budget, settle).await
        }
    }
}

fn grace(ctx: &Ctx) -> [&'static str; 2] {
    ["--room-grace", ctx.pick("500ms", "100ms")]
}

/// Two replays of `t` on one fresh `kind` server with `settings`, into two
/// rooms; each stops after `budget`, and the second runs only if the first
/// finished.
async fn measure(ctx: &Ctx, kind: Kind, t: &Prepared, settings: Settings, budget: Duration) -> Run {
    let mut run = Run {
        kind,
        trace: t.info.name.clone(),
        updates: t.job.len() as u64,
        settings,
        first: None,
        second: None,
        error: None,
    };
    let (tag, defaults) = match settings {
        Settings::LimitsLifted => (format!("trace-{}", t.info.name), false),
        Settings::Default => (format!("trace-{}-defaults", t.info.name), true),
    };
    let (server, _) = match super::start_with(ctx, kind, &tag, &grace(ctx), defaults).await {
        Ok(started) => started,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    for pass in ["first", "second"] {
        let room = format!("trace-{}-{pass}", t.info.name);
        match replay(ctx, &server, &room, t, budget).await {
            Ok(r) => {
                let finished = r.finished;
                if !finished && settings == Settings::LimitsLifted {
                    run.error = Some(format!(
                        "{pass} replay did not finish within {} s ({} of {} updates)",
                        budget.as_secs(),
                        r.delivered,
                        run.updates
                    ));
                }
                // With the defaults, an unfinished replay is a figure (how
                // far the limits let it get), not an error.
                if pass == "first" {
                    run.first = Some(r);
                } else {
                    run.second = Some(r);
                }
                if !finished {
                    break;
                }
            }
            Err(e) => {
                run.error = Some(format!("{pass} replay: {e}"));
                break;
            }
        }
    }
    server.stop(STOP_GRACE).await;
    run
}

async fn measure_storage(ctx: &Ctx, kind: Kind, t: &Prepared) -> StorageRun {
    let mut run = StorageRun {
        kind,
        trace: t.info.name.clone(),
        updates: t.job.len() as u64,
        replay: None,
        stored_bytes: None,
        stored_apparent_bytes: None,
        fresh_client_matches: None,
        clean_shutdown: false,
        error: None,
    };
    let (server, options) =
        match start(ctx, kind, &format!("storage-{}", t.info.name), &grace(ctx)).await {
            Ok(started) => started,
            Err(e) => {
                run.error = Some(e);
                return run;
            }
        };
    let room = format!("trace-{}", t.info.name);
    let budget = Duration::from_secs(ctx.pick(600, 60));
    match replay(ctx, &server, &room, t, budget).await {
        Ok(r) => run.replay = Some(r),
        Err(e) => run.error = Some(e),
    }
    if run.error.is_none() {
        // Let the room be evicted (Quire compacts), then load it afresh.
        tokio::time::sleep(Duration::from_millis(ctx.pick(1500, 400))).await;
        let target = t.expected.len() as u32;
        match ws::sync_until(&server.url(&room), Duration::from_secs(60), |len| {
            len >= target
        })
        .await
        {
            Ok((doc, _, mut socket)) => {
                run.fresh_client_matches = Some(ws::text_of(&doc) == t.expected);
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
            }
            Err(e) => {
                run.fresh_client_matches = Some(false);
                run.error = Some(format!("fresh client: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(ctx.pick(1000, 200))).await;
    }
    let (_, clean) = server.stop(STOP_GRACE).await;
    run.clean_shutdown = clean;
    if let Some(data) = &options.data {
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

/// Reads updates until the connection ends or `all` arrived (then it
/// stops by itself: some servers keep a closed connection open a while).
fn spawn_receiver(
    mut stream: SplitStream<Ws>,
    receiver: Arc<Receiver>,
    keep: bool,
    all: Option<u64>,
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
                let received = receiver.received.fetch_add(1, Ordering::Release) + 1;
                receiver.wake.notify_one();
                if all.is_some_and(|n| received >= n) {
                    break;
                }
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
    expected: &str,
    budget: Duration,
    settle: Duration,
) -> Result<Replay, String> {
    let n = updates.len() as u64;
    let (mut reader_sink, reader_stream) = connect(server, room).await?.split();
    let reader = Arc::new(Receiver {
        received: AtomicU64::new(0),
        wake: Notify::new(),
    });
    let reading = spawn_receiver(reader_stream, reader.clone(), true, Some(n));
    let (mut sink, stream) = connect(server, room).await?.split();
    // The writer's own input (servers that echo send its updates back) is drained.
    let echoes = spawn_receiver(
        stream,
        Arc::new(Receiver {
            received: AtomicU64::new(0),
            wake: Notify::new(),
        }),
        false,
        None,
    );
    let frames: Vec<Vec<u8>> = updates.iter().map(|u| ws::update_frame(u)).collect();
    let span = Span::start(server);
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let sending = async {
        for (sent, frame) in frames.into_iter().enumerate() {
            let sent = sent as u64;
            wait_for(&reader, deadline, |received| sent < received + WINDOW).await?;
            tokio::time::timeout_at(deadline, sink.send(WsMessage::Binary(frame.into())))
                .await
                .map_err(|_| "budget".to_owned())?
                .map_err(|e| format!("send: {e}"))?;
        }
        wait_for(&reader, deadline, |received| received >= n).await
    };
    let finished = match sending.await {
        Ok(()) => true,
        Err(_) if tokio::time::Instant::now() >= deadline => false,
        Err(e) => return Err(e),
    };
    let e2e = started.elapsed();
    let delivered = reader.received.load(Ordering::Acquire);
    tokio::time::sleep(settle).await;
    let usage = span.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader_sink.close()).await;
    let kept = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .map_err(|_| "reader did not finish".to_owned())?
        .map_err(|e| e.to_string())?;
    echoes.abort();
    let receivers_match = finished && merged_text(&kept) == expected;
    Ok(replay_figures(
        e2e,
        usage,
        delivered,
        finished,
        receivers_match,
    ))
}

fn replay_figures(
    e2e: Duration,
    usage: Usage,
    delivered: u64,
    finished: bool,
    receivers_match: bool,
) -> Replay {
    let e2e_s = e2e.as_secs_f64();
    Replay {
        e2e_s,
        updates_per_s: delivered as f64 / e2e_s.max(1e-9),
        server_cpu_us_per_update: 1e6 * usage.cpu_s / delivered.max(1) as f64,
        usage,
        delivered,
        finished,
        receivers_match,
    }
}

async fn replay_concurrent(
    server: &Server,
    room: &str,
    con: &trace::ConcurrentUpdates,
    expected: &str,
    budget: Duration,
    settle: Duration,
) -> Result<Replay, String> {
    let echo = server.kind.echoes_own_updates();
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
        let totals_a = con
            .updates
            .iter()
            .filter(|u| u.agent == readers.len())
            .count() as u64;
        let all_in = con.updates.len() as u64 - totals_a + if echo { totals_a } else { 0 };
        readers.push(spawn_receiver(stream, receiver.clone(), true, Some(all_in)));
        receivers.push(receiver);
        sinks.push(sink);
    }
    let totals: Vec<u64> = (0..agents)
        .map(|a| con.updates.iter().filter(|u| u.agent == a).count() as u64)
        .collect();
    let all: u64 = totals.iter().sum();
    let span = Span::start(server);
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
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
            let sending = async {
                for (sent, (frame, others)) in mine.into_iter().enumerate() {
                    let own_echoes = if echo { sent as u64 } else { 0 };
                    // Everything of the others this edit builds on has arrived
                    // (with echoes, also this agent's own earlier edits).
                    wait_for(&receiver, deadline, |received| {
                        received >= others + own_echoes
                    })
                    .await?;
                    tokio::time::timeout_at(deadline, sink.send(WsMessage::Binary(frame.into())))
                        .await
                        .map_err(|_| "budget".to_owned())?
                        .map_err(|e| format!("send: {e}"))?;
                }
                wait_for(&receiver, deadline, |received| received >= expected_in).await
            };
            let outcome = sending.await;
            (sink, outcome)
        }));
    }
    let mut sinks = Vec::new();
    let mut finished = true;
    for task in tasks {
        let (sink, outcome) = task.await.map_err(|e| e.to_string())?;
        sinks.push(sink);
        match outcome {
            Ok(()) => {}
            Err(_) if tokio::time::Instant::now() >= deadline => finished = false,
            Err(e) => return Err(e),
        }
    }
    let e2e = started.elapsed();
    // Updates delivered: what each agent received of the others' edits.
    let received: u64 = receivers
        .iter()
        .map(|r| r.received.load(Ordering::Acquire))
        .sum();
    let copies = if echo { agents } else { agents - 1 } as u64;
    let delivered = received / copies.max(1);
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
    let receivers_match = finished && texts.iter().all(|t| t == expected);
    Ok(replay_figures(
        e2e,
        usage,
        delivered,
        finished,
        receivers_match,
    ))
}
