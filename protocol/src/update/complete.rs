//! Completeness: every block an update refers to must be in the document
//! or in the update itself. Otherwise yrs keeps parts *pending*, or
//! integrates some behind the gap, and fuzzing found both wanting (pending
//! parts it later could not merge and panicked on, a heap use-after-free
//! when it retried them, live documents that differed from the same log
//! reloaded). An incomplete update says what it carries ([`Footprint`]),
//! so whoever dropped it can tell when the document has it all.

use std::collections::BTreeMap;

use super::Refusal;
use super::index::{Found, Index};
use super::walk::{Kind, Parsed};

/// What an update holds: per client the clock its blocks reach, and the
/// ranges it deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// client → end clock
    pub reach: BTreeMap<u64, u64>,
    /// (client, start clock, end clock)
    pub deleted: Vec<(u64, u64, u64)>,
}

impl Footprint {
    fn of(parsed: &Parsed) -> Self {
        let mut footprint = Footprint::default();
        for block in parsed
            .blocks
            .iter()
            .filter(|b| b.len > 0 && !matches!(b.kind, Kind::Skip))
        {
            footprint.reach_to(block.client, block.clock.saturating_add(block.len));
        }
        footprint.deleted = parsed
            .deleted
            .iter()
            .map(|&(client, clock, len)| (client, clock, clock.saturating_add(len)))
            .collect();
        footprint
    }

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

/// Refuses an update that refers to what neither it nor the document has,
/// saying what first.
pub(super) fn check_complete(index: &Index, parsed: &Parsed) -> Result<(), Refusal> {
    let mut first = None;
    let mut need = |why: String| {
        first.get_or_insert(why);
    };
    for (&client, list) in &index.starts {
        let mut reached = index.have(client);
        for &(clock, len, skip) in list {
            if clock > reached {
                need(format!(
                    "the update continues client {client} at clock {clock}, \
                     but this document has that client only up to clock {reached}"
                ));
            }
            if !skip {
                reached = reached.max(clock + len);
            }
        }
    }
    for block in &parsed.blocks {
        // A block the document has is skipped by yrs whatever it names.
        if index.known(block) {
            continue;
        }
        let Kind::Item {
            origin,
            right,
            parent,
        } = &block.kind
        else {
            continue;
        };
        for id in origin.iter().chain(right).chain(&parent.id()) {
            if let Found::Missing = index.find(&parsed.blocks, *id) {
                need(format!(
                    "item {}#{} refers to {}#{}, which this document does not have",
                    block.client, block.clock, id.0, id.1
                ));
            }
        }
    }
    for &(client, clock, len) in &parsed.deleted {
        let end = clock.saturating_add(len);
        if end <= index.have(client) {
            continue;
        }
        // The part past the document must be blocks of the update.
        let at = clock.max(index.have(client));
        let covered = index.spans.get(&client).is_some_and(|spans| {
            let i = spans.partition_point(|&(_, span_end)| span_end <= at);
            spans
                .get(i)
                .is_some_and(|&(start, span_end)| start <= at && span_end >= end)
        });
        if !covered {
            need(format!(
                "the update deletes {client}#{at}, which this document does not have"
            ));
        }
    }
    match first {
        None => Ok(()),
        Some(reason) => Err(Refusal::Incomplete {
            carries: Footprint::of(parsed),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Replica;
    use super::super::{Levels, check_against};
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
