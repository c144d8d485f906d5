//! How long a room's task spends in `DocStore::append` compared with the
//! rest of one update's work, on a real sled store with its group-commit
//! flusher running: the figure behind "appends stay on the room's task"
//! in ARCHITECTURE.md.
//!
//! ```sh
//! cargo run --release -p quire-server --example append_cost -- [UPDATES]
//! ```
//!
//! One writer types UPDATES keystrokes (default 20,000: mostly one
//! character after the last, sometimes a deletion or a jump) into a room
//! with two other members; each keystroke goes through the real
//! `RoomCore::receive`, and the append it hands out is carried out on the
//! same thread, as `room.rs` does. Prints the distribution of both times
//! and the append's share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quire_server::Config;
use quire_server::metrics::Metrics;
use quire_server::room_core::{
    Close, Inbound, Joining, MemberQueue, Now, Output, Pushed, Restored, RoomCore,
};
use quire_storage::{DocStore, SledOptions, SledStore};
use yrs::{Doc, GetString, Text, Transact};

/// A member that reads everything at once.
struct Reader;

impl MemberQueue for Reader {
    fn push(&mut self, _frame: Bytes) -> Pushed {
        Pushed::Queued
    }
    fn close(&mut self, _close: Close) {}
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    let updates: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |n| n.parse().expect("a number of updates"));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("sled");
    let config = Arc::new(Config::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        dir.path().into(),
    ));
    let mut core: RoomCore<Reader> = RoomCore::new(config, Arc::new(Metrics::new()));
    core.loaded(Restored::from_log(&[]), Vec::new());
    let now = Now { ms: 0, unix_ms: 0 };
    for conn in 1..=3 {
        let joining = Joining {
            queue: Reader,
            extensions: true,
            can_write: true,
        };
        core.join(conn, joining, now).expect("join");
    }

    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text("content");
    let mut rng = fastrand::Rng::with_seed(11);
    let mut cursor = 0u32;
    let (mut core_times, mut append_times) = (Vec::new(), Vec::new());
    for _ in 0..updates {
        let update = {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            match rng.u8(..20) {
                0 if len > 0 => {
                    cursor = cursor.min(len - 1);
                    text.remove_range(&mut txn, cursor, 1);
                }
                1 => {
                    cursor = rng.u32(..=len);
                    text.insert(&mut txn, cursor, "x");
                    cursor += 1;
                }
                _ => {
                    cursor = cursor.min(len);
                    text.insert(&mut txn, cursor, "a");
                    cursor += 1;
                }
            }
            txn.encode_update_v1()
        };
        let started = Instant::now();
        core.receive(1, Inbound::Update(update.into()), now);
        let mut in_append = Duration::ZERO;
        while let Some(output) = core.poll_output() {
            match output {
                Output::Append { write, entry } => {
                    let appending = Instant::now();
                    store.append("doc", &entry).expect("append");
                    in_append += appending.elapsed();
                    core.appended(write, now);
                    core.durable(write, now);
                }
                Output::Compact { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        core_times.push(started.elapsed() - in_append);
        append_times.push(in_append);
    }
    let text_len = text.get_string(&doc.transact()).len();
    core_times.sort();
    append_times.sort();
    let total = |times: &[Duration]| times.iter().sum::<Duration>();
    let share = total(&append_times).as_secs_f64()
        / (total(&append_times) + total(&core_times)).as_secs_f64();
    println!("{updates} keystrokes, final text {text_len} characters");
    for (name, times) in [
        ("rest of the update", &core_times),
        ("store.append", &append_times),
    ] {
        println!(
            "{name:>20}: p50 {:>7.1?}  p99 {:>7.1?}  p99.9 {:>7.1?}  max {:>7.1?}  total {:>7.1?}",
            percentile(times, 0.5),
            percentile(times, 0.99),
            percentile(times, 0.999),
            times[times.len() - 1],
            total(times),
        );
    }
    println!("append share of the room's time: {:.0} %", share * 100.0);
}
