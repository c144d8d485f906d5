//! How much memory the update checks take, per byte of update, on crafted
//! updates made of the smallest structs the format allows: the walk must
//! stay within a small multiple of its input, whatever the input.
//!
//! Measured with a counting allocator: the peak of bytes allocated and not
//! yet freed on the measuring thread while a check runs, its result
//! included. (Before the walk's records were made compact, `cargo test -p
//! quire-protocol --test walk_memory -- --nocapture` printed up to 107
//! bytes per byte: 214 bytes per 2-byte GC struct.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use quire_protocol::lib0::write_var_uint;
use quire_protocol::update::{Footprint, Levels, Refusal, Run, check, check_against};
use yrs::{ClientID, StateVector};

/// Allocation counted per thread, so that tests running beside the
/// measurement do not disturb it.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            if q == p {
                count(new_size as isize - layout.size() as isize);
            } else {
                // Moved: both were allocated for a moment.
                count(new_size as isize);
                count(-(layout.size() as isize));
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes `f` had allocated at once (what it returns included).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let result = f();
    let peak = PEAK.with(Cell::get) - base;
    (result, peak.max(0) as usize)
}

/// How many bytes of memory the checks may take per byte of update.
const BOUND: f64 = 8.0;

/// A document that has what the crafted updates name but not their own
/// clients (1, 5 and from 1000 on): clients 2 and 3 up to clock 1.
fn origins() -> StateVector {
    let mut have = StateVector::default();
    for client in [2, 3] {
        have.set_max(ClientID::new(client), 1);
    }
    have
}

fn var(buf: &mut Vec<u8>, value: u64) {
    write_var_uint(buf, value);
}

/// One client section of `n` copies of `unit` (of `per_unit` structs),
/// then an empty delete set.
fn one_client(client: u64, n: usize, unit: &[u8], per_unit: usize) -> Vec<u8> {
    let mut update = vec![1];
    var(&mut update, (n * per_unit) as u64);
    var(&mut update, client);
    update.push(0);
    for _ in 0..n {
        update.extend_from_slice(unit);
    }
    update.push(0);
    update
}

const N: usize = 50_000;
const GC_1: [u8; 2] = [0, 1];
const SKIP_1: [u8; 2] = [10, 1];
/// An item of deleted content, length 1, after 2#0 (left origin only).
const ITEM_AFTER_2: [u8; 4] = [0x81, 2, 0, 1];
const ITEM_AFTER_3: [u8; 4] = [0x81, 3, 0, 1];

/// The crafted updates: a name and the bytes.
fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let mut shapes = Vec::new();
    shapes.push(("2-byte GC structs", one_client(1, N, &GC_1, 1)));
    shapes.push(("2-byte skips", one_client(1, N, &SKIP_1, 1)));
    let mut skip_gc = SKIP_1.to_vec();
    skip_gc.extend_from_slice(&GC_1);
    shapes.push((
        "skips and GC structs alternating",
        one_client(1, N / 2, &skip_gc, 2),
    ));
    let mut gc_item = GC_1.to_vec();
    gc_item.extend_from_slice(&ITEM_AFTER_2);
    shapes.push((
        "GC structs and items alternating",
        one_client(1, N / 2, &gc_item, 2),
    ));
    shapes.push(("4-byte items", one_client(1, N, &ITEM_AFTER_2, 1)));
    let mut levels = ITEM_AFTER_2.to_vec();
    levels.extend_from_slice(&ITEM_AFTER_3);
    shapes.push((
        "4-byte items alternating levels",
        one_client(1, N / 2, &levels, 2),
    ));
    // Client sections: empty, and of one GC struct each.
    for (name, unit) in [
        ("empty client sections", &[][..]),
        ("client sections of one GC struct", &GC_1[..]),
        ("client sections of one item", &ITEM_AFTER_2[..]),
    ] {
        let mut update = Vec::new();
        var(&mut update, N as u64);
        for client in 0..N as u64 {
            var(&mut update, (!unit.is_empty()) as u64);
            var(&mut update, 1000 + client);
            update.push(0);
            update.extend_from_slice(unit);
        }
        update.push(0);
        shapes.push((name, update));
    }
    // One item naming the last of many items of a later client: placing
    // its level follows the whole chain (each item depends on the one
    // before it).
    let mut chain = vec![2, 1, 1, 0, 0x81, 5];
    var(&mut chain, N as u64 - 1);
    chain.push(1);
    var(&mut chain, N as u64);
    chain.extend_from_slice(&[5, 0]);
    for _ in 0..N {
        chain.extend_from_slice(&ITEM_AFTER_2);
    }
    chain.push(0);
    shapes.push(("an item naming the end of a long chain", chain));
    // Delete sets: many 2-byte ranges of one client, many empty clients.
    let mut ranges = vec![0, 1, 1];
    var(&mut ranges, N as u64);
    for i in 0..N {
        ranges.extend_from_slice(&[(i % 100) as u8, 1]);
    }
    shapes.push(("2-byte deleted ranges", ranges));
    let mut clients = vec![0];
    var(&mut clients, N as u64);
    for client in 0..N as u64 {
        var(&mut clients, 1000 + client);
        clients.push(0);
    }
    shapes.push(("delete-set clients without ranges", clients));
    shapes
}

/// Levels where 2#0 is at level 1 and 3#0 at level 2.
fn two_levels() -> Levels {
    let mut levels = Levels::default();
    let run = |client, level| Run {
        client,
        start: 0,
        end: 1,
        level,
    };
    levels.record([run(2, 1), run(3, 2)]);
    levels
}

#[test]
fn the_checks_take_a_small_multiple_of_the_update_in_memory() {
    let documents = [
        ("holding what it names", origins()),
        ("empty", StateVector::default()),
    ];
    let levels = two_levels();
    let mut report = String::new();
    let mut over = Vec::new();
    for (name, update) in shapes() {
        let bytes = update.len() as f64;
        let (walked, alone) = peak_of(|| check(&update));
        walked.unwrap_or_else(|why| panic!("{name}: {why}"));
        report.push_str(&format!(
            "{name:<40} {bytes:>7} B  check {:>5.2}",
            alone as f64 / bytes
        ));
        if alone as f64 > BOUND * bytes {
            over.push(format!("{name}: check"));
        }
        for (document, have) in &documents {
            let (checked, peak) = peak_of(|| check_against(&update, have, &levels));
            // What an incomplete update carries is kept by the room and
            // counted apart (24 bytes a deleted range, by its type).
            let (verdict, carried) = match &checked {
                Ok(runs) => (format!("{} runs", runs.iter().count()), 0),
                Err(Refusal::Incomplete { carries, .. }) => {
                    ("incomplete".to_owned(), footprint_bytes(carries))
                }
                Err(Refusal::Invalid(why)) => panic!("{name}: {why}"),
            };
            drop(checked);
            let walk = peak.saturating_sub(carried) as f64;
            report.push_str(&format!(
                "  | {document}: {:>5.2} ({verdict}; footprint {:.2})",
                walk / bytes,
                carried as f64 / bytes
            ));
            if walk > BOUND * bytes {
                over.push(format!("{name}: against a document {document}"));
            }
            if carried as f64 > FOOTPRINT_BOUND * bytes {
                over.push(format!("{name}: footprint against a document {document}"));
            }
        }
        report.push('\n');
    }
    println!("peak bytes allocated per byte of update:\n{report}");
    assert!(over.is_empty(), "over the bound: {over:?}\n{report}");
}

/// The footprint of an incomplete update, which the room keeps: one
/// 24-byte entry per deleted range the update lists (2 bytes at least),
/// and one per client it reaches.
const FOOTPRINT_BOUND: f64 = 12.5;

/// Heap bytes a footprint takes (measured on a copy).
fn footprint_bytes(footprint: &Footprint) -> usize {
    peak_of(|| footprint.clone()).1
}
