//! How deep shared types nest (a type inside a type inside …). yrs renders,
//! deletes and drops nested types recursively, and a stack overflow aborts
//! the process. Measured on a 2 MiB stack (a tokio worker's) by
//! `measure_nesting_yrs_handles` in `quire-server`'s `document.rs`, the
//! whole life of a document (built, encoded, loaded, applied under a deep
//! observer, rendered as every snapshot format, deleted, dropped) runs
//! 1,137 XmlElements or 1,686 Y.Maps deep in a debug build, and not 1,152
//! or 1,716; the time it takes grows linearly with the depth. So a
//! document knows the level of each of its blocks
//! ([`Levels`]), and an update that would nest past [`MAX_NESTING`] is
//! refused. Placing a block also finds items that depend on each other in
//! a cycle, which yrs would keep pending forever.

use std::collections::HashMap;

use yrs::StateVector;

use super::Refusal;
use super::index::{Found, Index};
use super::reader::Id;
use super::walk::{Parent, parse};

/// How deep shared types may nest: under a quarter of what a 2 MiB stack
/// was measured to hold in a debug build (see the module docs; a release
/// build's frames are smaller), far past what an outline nests (a
/// rich-text editor's deepest documents nest a few dozen levels), and
/// within what a byte per block holds while placing (see [`UNSEEN`]).
pub const MAX_NESTING: u32 = 250;

/// The nesting level of every block a document holds (1 for the blocks of
/// a root type, 2 inside a type held by a root, …; 0 for garbage-collected
/// blocks, which hold nothing, and blocks it has no run for), as runs per
/// client: what [`super::check_against`] needs to place a new block that
/// names an old one as neighbour or parent.
#[derive(Debug, Default)]
pub struct Levels {
    /// Per client, runs `(start, end, level)` in clock order.
    clients: HashMap<u64, Vec<(u64, u64, u32)>>,
}

/// Blocks `start..end` of `client` sit at `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub client: u64,
    pub start: u64,
    pub end: u64,
    pub level: u32,
}

/// The levels of the blocks an update adds (those past level 0, adjacent
/// ones of one level joined), to record once it is applied.
#[derive(Debug, Default)]
pub struct Runs {
    /// Per client: the client and where its runs end in `spans`.
    clients: Vec<(u64, u32)>,
    /// `(start, end, level)`, by client and clock.
    spans: Vec<(u32, u32, u32)>,
}

impl Runs {
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Run> + '_ {
        let starts = std::iter::once(0).chain(self.clients.iter().map(|&(_, end)| end));
        self.clients
            .iter()
            .zip(starts)
            .flat_map(move |(&(client, end), start)| {
                self.spans[start as usize..end as usize]
                    .iter()
                    .map(move |&(start, end, level)| Run {
                        client,
                        start: start.into(),
                        end: end.into(),
                        level,
                    })
            })
    }
}

impl<'a> IntoIterator for &'a Runs {
    type Item = Run;
    type IntoIter = Box<dyn Iterator<Item = Run> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Levels {
    /// The levels of a whole-document update (a document's state), without
    /// refusing anything: what a document loaded from storage starts with.
    /// Blocks it cannot place count as level 0.
    pub fn of_state(state: &[u8]) -> Self {
        let mut levels = Levels::default();
        if let Ok(parsed) = parse(state) {
            let nothing = StateVector::default();
            let index = Index::new(state, &parsed, &nothing);
            if let Ok(placed) = place(&index, &Levels::default(), false) {
                levels.record(&runs(&index, &placed));
            }
        }
        levels
    }

    pub fn level_of(&self, (client, clock): Id) -> Option<u32> {
        let runs = self.clients.get(&client)?;
        let i = runs.partition_point(|&(_, end, _)| end <= clock);
        runs.get(i)
            .filter(|&&(start, _, _)| start <= clock)
            .map(|&(_, _, level)| level)
    }

    /// Adds the runs of newly applied blocks (each starting where its
    /// client's known blocks end, as applied updates are complete).
    pub fn record(&mut self, runs: impl IntoIterator<Item = Run>) {
        for run in runs {
            let list = self.clients.entry(run.client).or_default();
            let start = list
                .last()
                .map_or(run.start, |&(_, end, _)| run.start.max(end));
            if start >= run.end {
                continue;
            }
            match list.last_mut() {
                Some(last) if last.1 == start && last.2 == run.level => last.1 = run.end,
                _ => list.push((start, run.end, run.level)),
            }
        }
    }
}

/// Levels while placing: past [`MAX_NESTING`] is refused (or, for a
/// document's state, held at one more, which refuses the same: anything
/// inside or beside it), so a byte holds every level and these two marks.
const UNSEEN: u8 = u8::MAX;
const RESOLVING: u8 = u8::MAX - 1;
const TOO_DEEP: u32 = MAX_NESTING + 1;
const _: () = assert!(TOO_DEEP < RESOLVING as u32, "levels must fit a byte");

fn clamp(level: u32) -> u8 {
    level.min(TOO_DEEP) as u8
}

/// The level of every block of the update, resolved through its neighbours
/// and parents (in the update, or at `known` in the document). With
/// `strict`, a dependency cycle or nesting past [`MAX_NESTING`] refuses the
/// update; otherwise what cannot be placed is level 0.
pub(super) fn place(index: &Index, known: &Levels, strict: bool) -> Result<Vec<u8>, Refusal> {
    let blocks = index.blocks;
    let mut level = vec![UNSEEN; blocks.len()];
    let mut stack: Vec<u32> = Vec::new();
    for s in 0..index.sections.len() {
        for root in index.blocks_of(s) {
            if level[root] != UNSEEN || index.known(s, root) {
                continue;
            }
            level[root] = RESOLVING;
            stack.push(root as u32);
            while let Some(&b) = stack.last() {
                let b = b as usize;
                let client = index.sections[index.section_of(b)].client;
                let clock = u64::from(blocks[b].clock);
                let refs = index.refs(b)?;
                // What it depends on: what it names, and (as yrs integrates
                // a client's blocks in clock order) the block before it.
                let (origin, right, parent) = match &refs {
                    Some(refs) => (refs.origin, refs.right, refs.parent.id()),
                    None => (None, None, None),
                };
                let before = (clock > 0).then(|| (client, clock - 1));
                let mut pending = None;
                for id in origin.into_iter().chain(right).chain(parent).chain(before) {
                    if let Found::Update(d) = index.find(id) {
                        match level[d] {
                            UNSEEN => {
                                pending = Some(d);
                                break;
                            }
                            RESOLVING if d != b && strict => {
                                let other = index.sections[index.section_of(d)].client;
                                return Err(Refusal::Invalid(format!(
                                    "items {client}#{clock} and {other}#{} depend on each other",
                                    blocks[d].clock
                                )));
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(d) = pending {
                    level[d] = RESOLVING;
                    stack.push(d as u32);
                    continue;
                }
                let of = |id: Id| -> u32 {
                    match index.find(id) {
                        Found::Update(d) if level[d] < RESOLVING => level[d].into(),
                        Found::Document => known.level_of(id).unwrap_or(0),
                        _ => 0,
                    }
                };
                let resolved = match refs {
                    None => 0,
                    Some(refs) => match (refs.origin, refs.right, refs.parent) {
                        (None, None, Parent::Root) => 1,
                        (None, None, Parent::Nested(p)) => match of(p) {
                            0 => 0,
                            l => l + 1,
                        },
                        // In its neighbours' container. yrs takes the parent
                        // from a neighbour that is not collected, so a
                        // collected one (level 0) does not count.
                        _ => origin.into_iter().chain(right).map(of).max().unwrap_or(0),
                    },
                };
                if strict && resolved > MAX_NESTING {
                    return Err(Refusal::Invalid(format!(
                        "the update nests shared types {resolved} deep; this server allows {MAX_NESTING}"
                    )));
                }
                level[b] = clamp(resolved);
                stack.pop();
            }
        }
    }
    Ok(level)
}

/// The runs the update adds: its blocks past what the document has, at
/// the levels [`place`] found. Counted first, so that each vector is
/// allocated once at its size.
pub(super) fn runs(index: &Index, level: &[u8]) -> Runs {
    let (mut clients, mut spans) = (0, 0);
    for s in 0..index.sections.len() {
        let before = spans;
        each_run(index, level, s, |_| spans += 1);
        clients += usize::from(spans > before);
    }
    let mut runs = Runs {
        clients: Vec::with_capacity(clients),
        spans: Vec::with_capacity(spans),
    };
    for s in 0..index.sections.len() {
        let before = runs.spans.len();
        each_run(index, level, s, |run| runs.spans.push(run));
        if runs.spans.len() > before {
            let client = index.sections[s].client;
            runs.clients.push((client, runs.spans.len() as u32));
        }
    }
    runs
}

/// The runs of section `s`, adjacent blocks of one level joined.
fn each_run(index: &Index, level: &[u8], s: usize, mut emit: impl FnMut((u32, u32, u32))) {
    let have = index.have(index.sections[s].client);
    let mut open: Option<(u32, u32, u32)> = None;
    for b in index.blocks_of(s) {
        let block = index.blocks[b];
        let start = u64::from(block.clock).max(have) as u32;
        let (end, level) = (block.end() as u32, u32::from(level[b]));
        if start >= end || level == 0 {
            continue;
        }
        match &mut open {
            Some(run) if run.1 == start && run.2 == level => run.1 = end,
            _ => {
                if let Some(run) = open.replace((start, end, level)) {
                    emit(run);
                }
            }
        }
    }
    if let Some(run) = open {
        emit(run);
    }
}

#[cfg(test)]
mod tests {
    use super::super::check_against;
    use super::super::tests::{Replica, refused, var};
    use super::*;
    use yrs::{Array, ArrayPrelim, Doc, ReadTxn, Transact};

    /// `depth` arrays nested in `from` (or in root "a"), in one
    /// transaction: its update, and the innermost array.
    fn nest(doc: &Doc, from: Option<yrs::ArrayRef>, depth: usize) -> (Vec<u8>, yrs::ArrayRef) {
        let root = doc.get_or_insert_array("a");
        let mut txn = doc.transact_mut();
        let mut inner = from;
        for _ in 0..depth {
            inner = Some(match inner {
                Some(array) => array.insert(&mut txn, 0, ArrayPrelim::default()),
                None => root.insert(&mut txn, 0, ArrayPrelim::default()),
            });
        }
        (txn.encode_update_v1(), inner.expect("depth > 0"))
    }

    #[test]
    fn shared_types_nested_past_the_limit_are_refused() {
        let fine = nest(&Doc::with_client_id(1), None, MAX_NESTING as usize).0;
        check_against(&fine, &StateVector::default(), &Levels::default()).unwrap();
        let deep = nest(&Doc::with_client_id(1), None, MAX_NESTING as usize + 1).0;
        match check_against(&deep, &StateVector::default(), &Levels::default()) {
            Err(Refusal::Invalid(why)) => assert!(why.contains("nests shared types"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Nesting is counted across updates, through neighbours as well as
    /// parents, and survives a reload from storage.
    #[test]
    fn nesting_is_counted_across_updates_and_reloads() {
        let writer = Doc::with_client_id(1);
        let half = MAX_NESTING as usize / 2;
        let (first, inner) = nest(&writer, None, half);
        let mut replica = Replica::default();
        replica.apply(&first).unwrap();
        // An array inside the innermost one (one level deeper), sent
        // alone; then more than half the limit more inside a sibling of
        // it, which names it only as its neighbour.
        let (sibling, _) = nest(&writer, Some(inner.clone()), 1);
        replica.apply(&sibling).unwrap();
        let second = {
            let mut txn = writer.transact_mut();
            let next = inner.insert(&mut txn, 1, ArrayPrelim::default());
            drop(txn);
            nest(&writer, Some(next), half + 1);
            writer
                .transact()
                .encode_diff_v1(&replica.doc.transact().state_vector())
        };
        let err = replica.apply(&second).unwrap_err();
        assert!(err.contains("nests shared types"), "{err}");
        let mut reloaded = Replica::from_updates([first.as_slice(), sibling.as_slice()]);
        let err = reloaded.apply(&second).unwrap_err();
        assert!(err.contains("nests shared types"), "{err}");
    }

    /// Found in review: an item naming itself as parent, and items that
    /// depend on each other through their client's order, passed as
    /// complete and went pending in yrs.
    #[test]
    fn regression_items_depending_on_themselves() {
        // 5#0, an array whose parent is 5#0.
        assert!(refused(&[1, 1, 5, 0, 7, 0, 5, 0, 0, 0]).contains("not older than it"));
        // 1#0 after 2#0; 1#1 in root "t"; 2#0 after 1#1.
        let mut update = vec![2, 2, 1, 0, 0x84, 2, 0, 1, b'a', 0x04, 1, 1, b't', 1, b'b'];
        update.extend_from_slice(&[1, 2, 0, 0x84, 1, 1, 1, b'c', 0]);
        assert!(refused(&update).contains("depend on each other"));
    }

    /// Found in review: "beside a collected block an item is collected
    /// too" is how Yjs behaves, not yrs, which takes the parent from the
    /// other neighbour: an array next to a collected block and a live item
    /// counted as level 0, and 300 arrays nested in it were accepted.
    #[test]
    fn regression_nesting_laundered_through_a_collected_neighbour() {
        let writer = Doc::with_client_id(1);
        let root = writer.get_or_insert_array("a");
        let first = {
            let mut txn = writer.transact_mut();
            root.push_back(&mut txn, 1);
            txn.encode_update_v1()
        };
        let mut replica = Replica::default();
        replica.apply(&first).unwrap();
        let depth = 300u64;
        let mut update = vec![1];
        var(&mut update, 2 + depth);
        update.extend_from_slice(&[9, 0, 0, 1]); // GC 9#0
        // 9#1: an array between 9#0 (collected) and 1#0 (live).
        update.extend_from_slice(&[0x80 | 0x40 | 7, 9, 0, 1, 0, 0]);
        for i in 0..depth {
            update.extend_from_slice(&[7, 0, 9]);
            var(&mut update, 1 + i);
            update.push(0);
        }
        update.push(0);
        let err = replica.apply(&update).unwrap_err();
        assert!(err.contains("nests shared types"), "{err}");
    }

    #[test]
    fn levels_merge_runs_and_answer_by_clock() {
        let mut levels = Levels::default();
        let run = |start, end, level| Run {
            client: 3,
            start,
            end,
            level,
        };
        levels.record([run(0, 4, 1), run(4, 6, 1), run(6, 8, 2)]);
        assert_eq!(levels.clients[&3], [(0, 6, 1), (6, 8, 2)]);
        assert_eq!(levels.level_of((3, 5)), Some(1));
        assert_eq!(levels.level_of((3, 7)), Some(2));
        assert_eq!(levels.level_of((3, 8)), None);
        assert_eq!(levels.level_of((4, 0)), None);
    }
}
