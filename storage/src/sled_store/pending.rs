//! Appends not yet written to sled, and the packed entries they become.
//!
//! [`SledStore::append`](super::SledStore) only queues the update here (a
//! copy into the document's buffer under a mutex) and takes its ticket; the
//! group commit writes everything queued to sled right before its flush,
//! each document's updates as a few packed log entries (up to the store's
//! value size each) in one batch, and its meta record once. An update thus
//! costs one sled insert per pack instead of an insert plus a meta-tree
//! read-modify-write of its own, and none of it on the room's task.
//!
//! Pack layout: the updates one after another, each preceded by two
//! unsigned LEB128 varints (the `leb128` crate): its seq's distance from the
//! previous update's (the first: from 0), and its length. The seqs let a
//! compaction whose boundary falls inside a pack keep only what follows it.

use std::collections::HashMap;

use crate::Seq;

/// What is queued for one document, oldest first.
#[derive(Debug, Default)]
pub(super) struct PendingDoc {
    /// The updates' bytes, one after another.
    data: Vec<u8>,
    /// Each update's seq and length in `data`.
    entries: Vec<(Seq, usize)>,
    /// Unix ms of the newest append, for the meta record.
    pub(super) modified_ms: u64,
}

impl PendingDoc {
    pub(super) fn push(&mut self, seq: Seq, update: &[u8], now_ms: u64) {
        self.data.extend_from_slice(update);
        self.entries.push((seq, update.len()));
        self.modified_ms = now_ms;
    }

    /// The queued updates in order, with their seqs.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Seq, &[u8])> {
        let mut at = 0;
        self.entries.iter().map(move |&(seq, len)| {
            let update = &self.data[at..at + len];
            at += len;
            (seq, update)
        })
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.data.len()
    }

    /// `self` (older) followed by `newer`: how a batch that failed to be
    /// written goes back in front of what was queued meanwhile.
    fn then(mut self, newer: PendingDoc) -> PendingDoc {
        self.data.extend_from_slice(&newer.data);
        self.entries.extend_from_slice(&newer.entries);
        self.modified_ms = self.modified_ms.max(newer.modified_ms);
        self
    }
}

/// Every document's queued appends.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Document name → its queue.
    docs: HashMap<String, PendingDoc>,
    /// Bytes queued over all documents, for [`crate::StoreHealth`].
    bytes: u64,
}

impl Pending {
    pub(super) fn push(&mut self, doc: &str, seq: Seq, update: &[u8], now_ms: u64) {
        // No allocation for the name once the document has a queue.
        let queue = match self.docs.get_mut(doc) {
            Some(queue) => queue,
            None => self.docs.entry(doc.to_owned()).or_default(),
        };
        queue.push(seq, update, now_ms);
        self.bytes += update.len() as u64;
    }

    /// Takes everything queued, to be written.
    pub(super) fn take(&mut self) -> HashMap<String, PendingDoc> {
        self.bytes = 0;
        std::mem::take(&mut self.docs)
    }

    /// Puts back what could not be written, before what was queued since.
    pub(super) fn put_back(&mut self, docs: impl IntoIterator<Item = (String, PendingDoc)>) {
        for (doc, older) in docs {
            self.bytes += older.bytes() as u64;
            let merged = match self.docs.remove(&doc) {
                Some(newer) => older.then(newer),
                None => older,
            };
            self.docs.insert(doc, merged);
        }
    }

    /// Drops a deleted document's queue; whether it had one.
    pub(super) fn remove(&mut self, doc: &str) -> bool {
        match self.docs.remove(doc) {
            Some(queue) => {
                self.bytes -= queue.bytes() as u64;
                true
            }
            None => false,
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Appends `update` (at `seq`, after one at `previous`, 0 for the first)
/// to a pack being built. Seqs only grow within a pack.
pub(super) fn pack_into(pack: &mut Vec<u8>, previous: Seq, seq: Seq, update: &[u8]) {
    debug_assert!(seq >= previous, "a pack's seqs only grow");
    leb128::write::unsigned(pack, seq - previous).expect("writing to a Vec");
    leb128::write::unsigned(pack, update.len() as u64).expect("writing to a Vec");
    pack.extend_from_slice(update);
}

/// Bytes a pack spends on `update` besides its own (its two varints).
pub(super) fn pack_overhead(previous: Seq, seq: Seq, update: &[u8]) -> usize {
    leb128::write::unsigned_len(seq - previous) + leb128::write::unsigned_len(update.len() as u64)
}

/// The updates of a pack with their seqs, or `None` if it does not have
/// the pack layout.
pub(super) fn unpack(mut pack: &[u8]) -> Option<Vec<(Seq, &[u8])>> {
    let mut updates = Vec::new();
    let mut seq: Seq = 0;
    while !pack.is_empty() {
        let distance = leb128::read::unsigned(&mut pack).ok()?;
        seq = seq.checked_add(distance)?;
        let len = leb128::read::unsigned(&mut pack).ok()?;
        let len = usize::try_from(len).ok().filter(|&l| l <= pack.len())?;
        let (update, rest) = pack.split_at(len);
        updates.push((seq, update));
        pack = rest;
    }
    Some(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_round_trip_updates_of_every_length_class() {
        let updates: Vec<Vec<u8>> = [0usize, 1, 127, 128, 300, 16_384, 70_000]
            .iter()
            .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
            .collect();
        let mut pack = Vec::new();
        let seqs: Vec<Seq> = (0..updates.len() as u64)
            .map(|i| 1_000 + i * i * 97)
            .collect();
        let mut previous = 0;
        for (&seq, update) in seqs.iter().zip(&updates) {
            let before = pack.len();
            pack_into(&mut pack, previous, seq, update);
            assert_eq!(
                pack.len() - before,
                update.len() + pack_overhead(previous, seq, update)
            );
            previous = seq;
        }
        let back = unpack(&pack).expect("a pack");
        let expected: Vec<(Seq, &[u8])> = seqs
            .iter()
            .copied()
            .zip(updates.iter().map(Vec::as_slice))
            .collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_truncated_pack_is_refused() {
        let mut pack = Vec::new();
        pack_into(&mut pack, 0, 7, b"hello");
        assert!(unpack(&pack[..pack.len() - 1]).is_none());
        assert!(unpack(&[0x80]).is_none(), "varint cut short");
        assert!(unpack(&[0xff; 11]).is_none(), "varint too long");
        assert!(unpack(&[1, 0x80]).is_none(), "length cut short");
    }

    #[test]
    fn what_is_put_back_goes_before_what_came_since() {
        let mut pending = Pending::default();
        pending.push("d", 1, b"a", 10);
        let taken = pending.take();
        pending.push("d", 2, b"b", 20);
        pending.put_back(taken);
        assert_eq!(pending.bytes(), 2);
        let queue = pending.take().remove("d").unwrap();
        let order: Vec<_> = queue.iter().collect();
        assert_eq!(order, [(1, &b"a"[..]), (2, &b"b"[..])]);
        assert_eq!(queue.modified_ms, 20);
    }
}
