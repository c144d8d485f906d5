//! Completeness: every block an update refers to must be in the document
//! or in the update itself. Otherwise yrs keeps parts *pending*, or
//! integrates some behind the gap, and fuzzing found both wanting (pending
//! parts it later could not merge and panicked on, a heap use-after-free
//! when it retried them, live documents that differed from the same log
//! reloaded). An incomplete update says what it carries ([`Footprint`]),
//! so whoever dropped it can tell when the document has it all.

use std::collections::BTreeMap;

use super::index::{Found, Index};
use super::reader::{Reader, Walked};
use super::walk::read_deleted_range;

/// What an update holds: per client the clock its blocks reach, and the
/// ranges it deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// client → end clock
    pub reach: BTreeMap<u64, u64>,
    /// (client, start clock, end clock), as the update lists them
    pub deleted: Vec<(u64, u64, u64)>,
}

impl Footprint {
    fn reach_to(&mut self, client: u64, clock: u64) {
        let end = self.reach.entry(client).or_default();
        *end = (*end).max(clock);
    }

    /// Both footprints together.
    pub fn merge(&mut self, other: Footprint) {
        for (client, clock) in other.reach {
            self.reach_to(client, clock);
        }
        self.deleted.extend(other.deleted);
    }
}

/// Per client, the clock the update's blocks reach.
pub(super) fn reach(index: &Index) -> BTreeMap<u64, u64> {
    (0..index.sections.len())
        .filter_map(|s| {
            let last = index.blocks_of(s).last()?;
            Some((index.sections[s].client, index.blocks[last].end()))
        })
        .collect()
}

/// The ranges the update's delete set lists (`ranges` of them, from byte
/// `at` on), as `(client, start, end)`.
pub(super) fn deleted(update: &[u8], at: usize, ranges: usize) -> Walked<Vec<(u64, u64, u64)>> {
    let mut deleted = Vec::with_capacity(ranges);
    each_deleted(update, at, |client, clock, len| {
        deleted.push((client, clock, clock.saturating_add(len)));
    })?;
    Ok(deleted)
}

/// Reads the delete set from byte `at` on again, calling `f` with each
/// range's client, clock and length.
fn each_deleted(update: &[u8], at: usize, mut f: impl FnMut(u64, u64, u64)) -> Walked<()> {
    let mut reader = Reader::at(update, at);
    for _ in 0..reader.count("deleted client count", 2)? {
        let client = reader.var_uint("deleted client")?;
        for _ in 0..reader.count("deleted range count", 2)? {
            let (clock, len) = read_deleted_range(&mut reader, client)?;
            f(client, clock, len);
        }
    }
    Ok(())
}

/// What the update refers to that neither it nor the document has, if
/// anything: the first such thing, said. The delete set is read again
/// from byte `delete_set_at` of `update`.
pub(super) fn missing(
    index: &Index,
    update: &[u8],
    delete_set_at: usize,
) -> Walked<Option<String>> {
    let mut first: Option<String> = None;
    // Only the first reason is said (and only it is written out).
    let mut need = |why: &dyn Fn() -> String| {
        if first.is_none() {
            first = Some(why());
        }
    };
    for section in index.sections {
        let have = index.have(section.client);
        if u64::from(section.continues_at) > have {
            need(&|| {
                format!(
                    "the update continues client {} at clock {}, \
                     but this document has that client only up to clock {have}",
                    section.client, section.continues_at
                )
            });
        }
    }
    for s in 0..index.sections.len() {
        for b in index.blocks_of(s) {
            // A block the document has is skipped by yrs whatever it names.
            if index.known(s, b) {
                continue;
            }
            let Some(refs) = index.refs(b)? else {
                continue;
            };
            let named = refs.origin.into_iter().chain(refs.right);
            for id in named.chain(refs.parent.id()) {
                if let Found::Missing = index.find(id) {
                    let (client, clock) = (index.sections[s].client, index.blocks[b].clock);
                    need(&|| {
                        format!(
                            "item {client}#{clock} refers to {}#{}, which this document does not have",
                            id.0, id.1
                        )
                    });
                }
            }
        }
    }
    // Deleted ranges past the document must be blocks of the update,
    // without a gap: `reach[b]` is where the update's blocks from block b
    // on stop being contiguous. Built only if some range needs it.
    let mut reach: Option<Vec<u32>> = None;
    each_deleted(update, delete_set_at, |client, clock, len| {
        let end = clock.saturating_add(len);
        let have = index.have(client);
        if end <= have {
            return;
        }
        let at = clock.max(have);
        let reach = reach.get_or_insert_with(|| contiguous_reach(index));
        let covered = index
            .block_at((client, at))
            .is_some_and(|b| u64::from(reach[b]) >= end);
        if !covered {
            need(&|| {
                format!("the update deletes {client}#{at}, which this document does not have")
            });
        }
    })?;
    Ok(first)
}

/// Per block, the clock up to which the update's blocks run on from it
/// without a gap.
fn contiguous_reach(index: &Index) -> Vec<u32> {
    let mut reach = vec![0; index.blocks.len()];
    for s in 0..index.sections.len() {
        let mut next: Option<(u64, u32)> = None;
        for b in index.blocks_of(s).rev() {
            let block = index.blocks[b];
            reach[b] = match next {
                Some((start, end)) if start == block.end() => end,
                _ => block.end() as u32,
            };
            next = Some((u64::from(block.clock), reach[b]));
        }
    }
    reach
}

#[cfg(test)]
mod tests {
    use super::super::tests::Replica;
    use super::super::{Levels, Refusal, check_against};
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, StateVector, Text, Transact};

    #[test]
    fn references_to_what_the_document_lacks_are_incomplete() {
        let writer = Doc::with_client_id(1);
        let text = writer.get_or_insert_text("t");
        let first = {
            let mut txn = writer.transact_mut();
            text.insert(&mut txn, 0, "ab");
            txn.encode_update_v1()
        };
        // Another client types between the two letters it has not seen
        // arrive at the server.
        let other = Doc::with_client_id(2);
        other
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&first).unwrap())
            .unwrap();
        let between = {
            let text = other.get_or_insert_text("t");
            let mut txn = other.transact_mut();
            text.insert(&mut txn, 1, "x");
            txn.encode_update_v1()
        };
        let deletion = {
            let text = other.get_or_insert_text("t");
            let mut txn = other.transact_mut();
            text.remove_range(&mut txn, 0, 1);
            txn.encode_update_v1()
        };
        let carried = [
            (&between, vec![(2, 1)], vec![]),
            (&deletion, vec![], vec![(1, 0, 1)]),
        ];
        for (update, reach, deleted) in carried {
            match check_against(update, &StateVector::default(), &Levels::default()) {
                Err(Refusal::Incomplete { carries, .. }) => {
                    let reach = reach.into_iter().collect();
                    assert_eq!(carries, Footprint { reach, deleted })
                }
                other => panic!("expected Incomplete, got {other:?}"),
            }
        }
        let mut replica = Replica::default();
        replica.apply(&first).unwrap();
        replica.apply(&between).unwrap();
        replica.apply(&deletion).unwrap();
    }

    /// Found by `room_sequence`: a copy of a block the document has, with
    /// its origin forged to name a block nobody has, was taken for
    /// incomplete (and its message then acknowledged once the document
    /// "held" it). yrs skips blocks it has, whatever they name.
    #[test]
    fn blocks_the_document_has_are_not_checked_again() {
        let writer = Doc::with_client_id(100);
        let text = writer.get_or_insert_text("t");
        let typed = {
            let mut txn = writer.transact_mut();
            text.insert(&mut txn, 0, "abc");
            txn.encode_update_v1()
        };
        let mut replica = Replica::default();
        replica.apply(&typed).unwrap();
        // 100#2, length 1, origin 31#11, right origin 100#1, "x".
        let forged: &[u8] = b"\x01\x01d\x02\xc4\x1f\x0bd\x01\x01x\0";
        assert!(!replica.apply(forged).unwrap(), "nothing changes");
    }

    /// Found by `room_sequence`: an empty item (which yrs drops) past a
    /// gap made `apply` call the update incomplete while `is_known` called
    /// it nothing new, so a read-only connection was acknowledged for a
    /// message the stored log "lacked".
    #[test]
    fn regression_an_empty_item_past_a_gap_holds_nothing() {
        // 101#2, empty string, right origin 116#101; an empty delete-set entry.
        let empty: &[u8] = b"\x01\x01e\x02Dte\0\x01a\0";
        let runs = check_against(empty, &StateVector::default(), &Levels::default()).unwrap();
        assert!(runs.is_empty(), "{runs:?}");
        let mut replica = Replica::default();
        assert!(!replica.apply(empty).unwrap(), "nothing changes");
    }

    #[test]
    fn a_gap_before_a_client_s_blocks_is_incomplete_and_says_so() {
        // Client 7 from clock 10, which the document does not reach.
        let update = [1, 1, 7, 10, 0x04, 1, 1, b't', 1, b'a', 0];
        match check_against(&update, &StateVector::default(), &Levels::default()) {
            Err(Refusal::Incomplete { carries, reason }) => {
                assert!(
                    reason.contains("continues client 7 at clock 10"),
                    "{reason}"
                );
                assert_eq!(carries.reach, [(7, 11)].into());
            }
            other => panic!("expected Incomplete, got {other:?}"),
        }
    }
}
