//! The checks every Yjs update passes before yrs decodes it, free of I/O so
//! that the server and (if it wants) the browser run the same ones.
//!
//! yrs trusts an update more than a server can afford to:
//!
//! - it reserves memory for whatever count a few bytes declare (clients,
//!   structs, values), so a 40-byte update can ask for gigabytes;
//! - it decodes nested values recursively without a depth limit, so deep
//!   enough nesting overflows the stack and aborts the process (no panic to
//!   catch);
//! - it integrates items whose *origins* (the left and right neighbours
//!   recorded when an item was inserted) no honest client could have
//!   written: the same item on both sides, or an item of its own client
//!   that is not older. Where it puts such an item depends on how the
//!   blocks around it happen to be split, so the live document, its
//!   snapshot and the same document reloaded from storage can order their
//!   text differently (found by the `room_sequence` fuzz target);
//! - it keeps parts of an update that refer to blocks it lacks *pending*,
//!   or integrates some of them behind the gap, and fuzzing found both
//!   wanting: pending parts it later cannot merge (and panics on), a heap
//!   use-after-free when it retries them, live documents that differ from
//!   the same log reloaded;
//! - it renders, deletes and drops nested shared types recursively, so a
//!   document nested a few thousand levels deep overflows the stack.
//!
//! [`check`] walks an update alone; [`check_against`] also checks it
//! against a document: complete, and nested at most [`MAX_NESTING`] deep.
//!
//! # Layout
//!
//! - [`format`]: the format's numbers under Yjs' and lib0's names.
//! - `reader`: the byte reader; the one place where a declared count must
//!   fit the bytes left and a clock must fit 32 bits.
//! - `walk`: the walk over the structs and the delete set; refuses
//!   impossible origins, repeated clients and trailing bytes, and keeps
//!   compact records (its memory is a small multiple of the update's).
//! - `content`, `any`: item contents and lib0 values, values nested at
//!   most [`MAX_VALUE_DEPTH`] deep.
//! - `index`: where a block an update names is (document, update, nowhere).
//! - `complete`: completeness against a document, and the [`Footprint`] of
//!   an incomplete update.
//! - `nesting`: the nesting level of shared types ([`Levels`], [`Runs`]).

mod any;
mod complete;
mod content;
pub mod format;
mod index;
mod nesting;
mod reader;
mod walk;

pub use any::MAX_VALUE_DEPTH;
pub use complete::Footprint;
pub use nesting::{Levels, MAX_NESTING, Run, Runs};

use yrs::StateVector;

/// Why an update is not applied.
#[derive(Debug)]
pub enum Refusal {
    /// Malformed, or something no honest client writes.
    Invalid(String),
    /// It refers to blocks the document does not have and it does not
    /// carry (it continues a client past a gap, names a neighbour or parent
    /// not here yet, deletes items not here yet). `carries`: what it holds,
    /// so that whoever dropped it can tell when the document has it all.
    Incomplete { carries: Footprint, reason: String },
}

impl From<reader::WalkError> for Refusal {
    fn from(err: reader::WalkError) -> Self {
        Refusal::Invalid(err.into())
    }
}

/// Walks `update` alone: refuses what is malformed or impossible whatever
/// the document (declared counts, nesting of values, content kinds,
/// origins). Applies nothing.
pub fn check(update: &[u8]) -> Result<(), String> {
    walk::check(update).map_err(String::from)
}

/// Reads a state vector (the payload of a sync step 1) as yrs would, and
/// refuses what yrs mishandles: an entry count the bytes cannot hold (yrs
/// reserves room for it first), a client ID past 53 bits (lib0's varint
/// reader refuses it; yrs' own decoder does not, and then a debug build
/// panics and a release build takes it for another client), a clock past
/// 32 bits, bytes left over.
pub fn check_state_vector(sv: &[u8]) -> Result<(), String> {
    let mut reader = reader::Reader::new(sv);
    let mut walk = || -> reader::Walked<()> {
        for _ in 0..reader.count("state vector entries", 2)? {
            reader.var_uint("state vector client")?;
            reader.clock("state vector clock")?;
        }
        Ok(())
    };
    walk().map_err(String::from)?;
    reader.finish().map_err(String::from)
}

/// Walks `update` against a document that has every client up to `have`
/// and whose blocks sit at `levels`: besides [`check`], every block it
/// refers to must be in the document or in the update, and no shared type
/// may end up nested deeper than [`MAX_NESTING`]. Returns the levels of the
/// blocks it adds, to record once it is applied.
pub fn check_against(update: &[u8], have: &StateVector, levels: &Levels) -> Result<Runs, Refusal> {
    let parsed = walk::parse(update)?;
    let index = index::Index::new(update, &parsed, have);
    if let Some(reason) = complete::missing(&index, update, parsed.delete_set_at)? {
        // The walk's records go before the footprint is built.
        let reach = complete::reach(&index);
        let (at, ranges) = (parsed.delete_set_at, parsed.deleted_ranges);
        drop(index);
        drop(parsed);
        let deleted = complete::deleted(update, at, ranges)?;
        let carries = Footprint { reach, deleted };
        return Err(Refusal::Incomplete { carries, reason });
    }
    let level = nesting::place(&index, levels, true)?;
    Ok(nesting::runs(&index, &level))
}

#[cfg(test)]
pub(crate) mod tests {
    //! What the modules' tests share: a document that applies updates the
    //! way the server's does, and update builders.

    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, ReadTxn, Transact, Update};

    /// A yrs document that applies updates only through [`check_against`]
    /// and records their levels, as the server's document does.
    #[derive(Default)]
    pub(crate) struct Replica {
        pub(crate) doc: Doc,
        levels: Levels,
    }

    impl Replica {
        /// Applies `update` if the checks pass; whether it changed anything.
        pub(crate) fn apply(&mut self, update: &[u8]) -> Result<bool, String> {
            let have = self.doc.transact().state_vector();
            let runs =
                check_against(update, &have, &self.levels).map_err(|refusal| match refusal {
                    Refusal::Invalid(why) => why,
                    Refusal::Incomplete { reason, .. } => reason,
                })?;
            let update = Update::decode_v1(update).map_err(|e| e.to_string())?;
            let mut txn = self.doc.transact_mut();
            txn.apply_update(update).map_err(|e| e.to_string())?;
            let changed = !txn.delete_set().is_empty()
                || txn
                    .after_state()
                    .iter()
                    .any(|(client, &clock)| clock > txn.before_state().get(client));
            drop(txn);
            self.levels.record(&runs);
            Ok(changed)
        }

        /// A document rebuilt from stored updates (which passed the checks
        /// when they arrived): levels from its state, as on a reload.
        pub(crate) fn from_updates<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> Self {
            let doc = Doc::new();
            for update in updates {
                let update = Update::decode_v1(update).unwrap();
                doc.transact_mut().apply_update(update).unwrap();
            }
            let state = doc.transact().encode_diff_v1(&StateVector::default());
            Self {
                levels: Levels::of_state(&state),
                doc,
            }
        }
    }

    /// What [`check_against`] says about `update` against an empty
    /// document, which must be a refusal.
    pub(crate) fn refused(update: &[u8]) -> String {
        match check_against(update, &StateVector::default(), &Levels::default()) {
            Err(Refusal::Invalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// An array item in root "a" holding one `Any` value: `value` bytes.
    pub(crate) fn any_item(value: &[u8]) -> Vec<u8> {
        let mut update = vec![1, 1, 1, 0, 0x08, 1, 1, b'a', 1];
        update.extend_from_slice(value);
        update.push(0); // empty delete set
        update
    }

    pub(crate) fn var(buf: &mut Vec<u8>, value: u64) {
        crate::lib0::write_var_uint(buf, value);
    }
}
