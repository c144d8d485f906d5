//! One yrs document and the only ways Quire changes or reads it.
//!
//! yrs can panic on a malformed update. Every call that feeds it foreign bytes
//! runs under `catch_unwind`; after a panic the document may be half-changed,
//! so [`DocumentError::Poisoned`] tells the owner to drop it and rebuild it
//! from storage (which only ever received updates that applied cleanly).

use std::panic::{AssertUnwindSafe, catch_unwind};

use thiserror::Error;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use quire_protocol::update::{self as items, Footprint, Levels, Refusal};

#[derive(Debug, Error)]
pub enum DocumentError {
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    #[error("invalid state vector: {0}")]
    InvalidStateVector(String),
    /// The update refers to blocks the document does not have and it does
    /// not carry: it continues a client past a gap, names a neighbour or
    /// parent not here yet, or deletes items not here yet. yrs would keep
    /// such parts pending, or integrate some of them out of order, and both
    /// broke things (see ARCHITECTURE.md, "Rules from fuzzing"). Not
    /// applied; `carries` is what the update holds, for [`Document::holds`].
    #[error("{reason}")]
    Incomplete { carries: Footprint, reason: String },
    /// yrs panicked while applying; the in-memory document can no longer be trusted.
    #[error("update made the CRDT engine fail; it was not applied")]
    Poisoned,
}

/// What applying one update did to a [`Document`].
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// The part that was new and integrated, encoded as an update: what the
    /// room relays and stores. `None` when nothing was integrated.
    pub delta: Option<Vec<u8>>,
    /// Whether yrs kept part of the update out of the delta anyway
    /// (pending, or integrated behind a gap). `apply` only passes yrs
    /// complete updates, so this is a safety net: the room then stores the
    /// update as it came, so that what it acknowledges is on disk whole.
    pub held_back: bool,
}

impl Applied {
    /// Whether the update changed what the document holds (integrated or
    /// held back): whether there is anything to store.
    pub fn changed(&self) -> bool {
        self.delta.is_some() || self.held_back
    }

    /// What to append to the document's log for `update` (the bytes this
    /// was applied from), in order: the delta, then the update as it came
    /// if yrs kept part of it out of the delta, so that an acknowledged
    /// update is on disk whole.
    pub fn into_log_entries(self, update: &[u8]) -> impl Iterator<Item = Vec<u8>> {
        self.delta
            .into_iter()
            .chain(self.held_back.then(|| update.to_vec()))
    }
}

/// A yrs document plus the discipline around it.
pub struct Document {
    doc: Doc,
    /// The nesting level of every block, for refusing updates that would
    /// nest shared types past `items::MAX_NESTING`.
    levels: Levels,
}

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

impl Document {
    pub fn new() -> Self {
        // The server never edits, so its client id never appears in updates;
        // `skip_gc` stays off so deleted content is collected as in Yjs.
        Self {
            doc: Doc::new(),
            levels: Levels::default(),
        }
    }

    /// Rebuilds a document from its stored log, one transaction per entry
    /// as the room applied them: yrs integrates a forged item (one whose
    /// origins contradict each other) differently depending on how the
    /// blocks around it happen to be split, so the log is replayed the way
    /// the live document was built.
    pub fn from_updates<'a>(
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DocumentError> {
        let mut document = Self::new();
        {
            let decoded = updates
                .into_iter()
                .map(|bytes| {
                    Update::decode_v1(bytes)
                        .map_err(|e| DocumentError::InvalidUpdate(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            guarded(|| {
                for update in decoded {
                    document
                        .doc
                        .transact_mut()
                        .apply_update(update)
                        .map_err(|e| DocumentError::InvalidUpdate(e.to_string()))?;
                }
                Ok(())
            })?;
        }
        document.levels = Levels::of_state(
            &document
                .doc
                .transact()
                .encode_diff_v1(&StateVector::default()),
        );
        Ok(document)
    }

    /// Applies a remote update: what was new to this document, and whether
    /// yrs kept part of it back (see [`Applied`]). An update the walk
    /// refuses (`items::check_against`) never reaches yrs: malformed or
    /// impossible ones are `InvalidUpdate`, ones that refer to blocks this
    /// document lacks are `Incomplete`.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<Applied, DocumentError> {
        // Counts that do not fit the bytes (yrs reserves memory for them),
        // nesting that would overflow yrs' recursion, impossible origins,
        // references to what the document lacks.
        let have = self.doc.transact().state_vector();
        let runs =
            items::check_against(bytes, &have, &self.levels).map_err(|refusal| match refusal {
                Refusal::Invalid(why) => DocumentError::InvalidUpdate(why),
                Refusal::Incomplete { carries, reason } => {
                    DocumentError::Incomplete { carries, reason }
                }
            })?;
        // A panic while decoding leaves the document untouched: plain rejection.
        let update = guarded(|| {
            Update::decode_v1(bytes).map_err(|e| DocumentError::InvalidUpdate(e.to_string()))
        })
        .map_err(|err| match err {
            DocumentError::Poisoned => {
                DocumentError::InvalidUpdate("update does not decode".into())
            }
            other => other,
        })?;
        let doc = &self.doc;
        let levels = &mut self.levels;
        guarded(|| {
            let insertions = update.insertions(true);
            // Where each client's blocks in the update end, and whether it
            // deletes anything, read before yrs consumes it.
            let reach: Vec<(ClientID, u32)> = insertions
                .iter()
                .filter_map(|(client, ranges)| Some((*client, ranges.iter().map(|r| r.end).max()?)))
                .collect();
            let deletes = !update.delete_set().is_empty();
            let mut txn = doc.transact_mut();
            let result = txn.apply_update(update);
            let changed = changed(&txn);
            match result {
                // yrs does not roll back: an error after part of the update
                // was integrated leaves a document storage never saw.
                Err(_) if changed => Err(DocumentError::Poisoned),
                Err(e) => Err(DocumentError::InvalidUpdate(e.to_string())),
                Ok(()) => {
                    // Blocks past the state vector are pending, or integrated
                    // behind a gap (yrs "skips": the clock stays at the gap);
                    // deletions of items not here yet wait in the pending
                    // delete set. Neither is in the transaction's delta.
                    let have = txn.state_vector();
                    let held_back = reach.iter().any(|(client, end)| *end > have.get(client))
                        || (deletes && txn.has_missing_updates());
                    let delta = changed
                        .then(|| txn.encode_update_v1())
                        // A struct ahead of its client's clock can move the
                        // state vector to clock 0 without integrating anything.
                        .filter(|delta| delta.as_slice() != EMPTY_UPDATE);
                    levels.record(&runs);
                    Ok(Applied { delta, held_back })
                }
            }
        })
    }

    /// Whether `bytes` is a valid update holding nothing this document does
    /// not have (no new blocks, no new deletions). Applies nothing.
    pub fn is_known(&self, bytes: &[u8]) -> bool {
        // yrs must not decode what the walk refuses (its decoder can
        // overflow the stack on deep nesting).
        if items::check(bytes).is_err() {
            return false;
        }
        let doc = &self.doc;
        guarded(|| {
            let update = Update::decode_v1(bytes)
                .map_err(|e| DocumentError::InvalidUpdate(e.to_string()))?;
            let txn = doc.transact();
            let have = txn.state_vector();
            // Any block reaching past what the document has is news
            // (including blocks ahead of a gap, which yrs would hold back).
            let beyond = update.insertions(true).iter().any(|(client, ranges)| {
                let clock = have.get(client);
                ranges.iter().any(|r| r.end > clock)
            });
            if beyond {
                return Ok(false);
            }
            let deleted = txn.snapshot().delete_set;
            Ok(update.delete_set().iter().all(|(client, ranges)| {
                ranges
                    .iter()
                    .all(|wanted| deletes(&deleted, client.get(), wanted.clone()))
            }))
        })
        .unwrap_or(false)
    }

    /// This document's state vector, encoded (the payload of sync step 1).
    pub fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// Whether this document holds everything `footprint` describes: every
    /// client up to the clock it reaches, and every range it deletes
    /// deleted.
    pub fn holds(&self, footprint: &Footprint) -> bool {
        let txn = self.doc.transact();
        let have = txn.state_vector();
        let reached = footprint
            .reach
            .iter()
            .all(|(&client, &clock)| u64::from(have.get(&ClientID::new(client))) >= clock);
        if !reached || footprint.deleted.is_empty() {
            return reached;
        }
        let deleted = txn.snapshot().delete_set;
        footprint.deleted.iter().all(|&(client, start, end)| {
            let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
                return false;
            };
            deletes(&deleted, client, start..end)
        })
    }

    /// What a peer with state vector `sv` lacks (the payload of sync step 2).
    pub fn diff(&self, sv: &[u8]) -> Result<Vec<u8>, DocumentError> {
        // Each entry takes at least two bytes (client, clock); yrs would
        // reserve room for whatever count the first varint declares.
        check_declared_count(sv, 2).map_err(DocumentError::InvalidStateVector)?;
        guarded(|| {
            let sv = StateVector::decode_v1(sv)
                .map_err(|e| DocumentError::InvalidStateVector(e.to_string()))?;
            Ok(self.doc.transact().encode_diff_v1(&sv))
        })
    }

    /// The whole document as one update, pending parts included, or
    /// `None` when yrs cannot merge its pending parts into it (it panics
    /// doing so on some inputs). What compaction writes: loading it gives
    /// back this document, pending parts and all.
    pub fn encode_whole(&self) -> Option<Vec<u8>> {
        guarded(|| {
            Ok(self
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default()))
        })
        .ok()
    }

    /// The whole document as one update for readers (snapshots): as
    /// [`Self::encode_whole`], or the integrated content alone (what
    /// editors show) when the pending parts do not merge.
    pub fn encode_state(&self) -> Result<Vec<u8>, DocumentError> {
        match self.encode_whole() {
            Some(state) => Ok(state),
            None => guarded(|| Ok(self.doc.transact().encode_diff_v1(&StateVector::default()))),
        }
    }

    /// The underlying yrs document, for read-only rendering.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }
}

/// Refuses a payload whose leading varint declares more entries than its
/// remaining bytes can hold at `min_entry_bytes` each.
fn check_declared_count(bytes: &[u8], min_entry_bytes: u64) -> Result<(), String> {
    let mut cursor = quire_protocol::lib0::Cursor::new(bytes);
    let count = cursor
        .read_var_uint("entry count")
        .map_err(|e| e.to_string())?;
    let room = cursor.remaining() as u64 / min_entry_bytes;
    if count > room {
        return Err(format!("declares {count} entries in {} bytes", bytes.len()));
    }
    Ok(())
}

/// An update holding nothing: no client blocks, empty delete set.
const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// Whether a transaction changed the document: new blocks (ignoring clients
/// that only appeared at clock 0) or new deletions.
fn changed(txn: &yrs::TransactionMut) -> bool {
    if !txn.delete_set().is_empty() {
        return true;
    }
    let before = txn.before_state();
    txn.after_state()
        .iter()
        .any(|(client, &clock)| clock > before.get(client))
}

/// Whether the delete set `deleted` holds all of `wanted` for `client`.
fn deletes(deleted: &yrs::IdSet, client: u64, wanted: std::ops::Range<u32>) -> bool {
    let mut have: Vec<std::ops::Range<u32>> = deleted
        .iter()
        .filter(|(c, _)| c.get() == client)
        .flat_map(|(_, r)| r.iter().cloned().collect::<Vec<_>>())
        .collect();
    have.sort_by_key(|r| r.start);
    covered(&have, wanted)
}

/// Whether the sorted ranges `have` cover all of `wanted`.
fn covered(have: &[std::ops::Range<u32>], wanted: std::ops::Range<u32>) -> bool {
    let mut next = wanted.start;
    for range in have {
        if next >= wanted.end {
            break;
        }
        if range.start > next {
            return false;
        }
        next = next.max(range.end);
    }
    next >= wanted.end
}

/// Runs `f`, turning a panic inside yrs into [`DocumentError::Poisoned`].
fn guarded<T>(f: impl FnOnce() -> Result<T, DocumentError>) -> Result<T, DocumentError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(DocumentError::Poisoned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edit(text: &str) -> Vec<u8> {
        let doc = Doc::new();
        let content = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        content.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    }

    fn text_of(document: &Document) -> String {
        let content = document.doc().get_or_insert_text("content");
        content.get_string(&document.doc().transact())
    }

    #[test]
    fn apply_returns_only_what_was_new() {
        let mut document = Document::new();
        let update = edit("hello");
        assert!(document.apply(&update).unwrap().delta.is_some());
        assert!(
            document.apply(&update).unwrap().delta.is_none(),
            "a duplicate changes nothing"
        );
        assert_eq!(text_of(&document), "hello");
    }

    #[test]
    fn garbage_is_rejected_and_changes_nothing() {
        let mut document = Document::new();
        document.apply(&edit("kept")).unwrap();
        for garbage in [
            &[0xff, 0xff, 0xff][..],
            &[1, 1, 1, 1, 1, 1],
            b"not an update at all",
        ] {
            assert!(document.apply(garbage).is_err());
        }
        assert_eq!(text_of(&document), "kept");
    }

    #[test]
    fn diff_against_own_state_vector_is_empty_of_content() {
        let mut document = Document::new();
        document.apply(&edit("abc")).unwrap();
        let diff = document.diff(&document.state_vector()).unwrap();
        let mut other = Document::new();
        assert!(other.apply(&diff).unwrap().delta.is_none());
        assert!(document.diff(&[0xff, 0xff]).is_err());
    }

    /// Mutated real updates (flipped, dropped and inserted bytes): `apply`
    /// never lets a panic out, and whatever it rejects leaves the document
    /// exactly as it was. (100,000 rounds found yrs panicking in decoding on
    /// about one input in five in a debug build; this keeps a quick sample.)
    #[test]
    fn mutated_updates_never_escape_and_rejections_change_nothing() {
        let source = Doc::new();
        let text = source.get_or_insert_text("content");
        let mut updates = Vec::new();
        for i in 0..12 {
            let mut txn = source.transact_mut();
            text.insert(&mut txn, 0, &format!("chunk {i} "));
            if i > 3 {
                text.remove_range(&mut txn, 2, 3);
            }
            updates.push(txn.encode_update_v1());
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let mut rejected = 0;
        for _ in 0..3000 {
            let mut bytes = updates[rng.usize(..updates.len())].clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[i] = rng.u8(..),
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, rng.u8(..)),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let mut document =
                Document::from_updates(updates[..3].iter().map(Vec::as_slice)).unwrap();
            let before = document.encode_state().unwrap();
            match document.apply(&bytes) {
                Ok(_) => {}
                Err(DocumentError::Poisoned) => panic!("yrs failed mid-transaction on {bytes:?}"),
                Err(_) => {
                    rejected += 1;
                    assert_eq!(document.encode_state().unwrap(), before);
                }
            }
        }
        assert!(
            rejected > 1000,
            "the sample exercises rejection ({rejected})"
        );
    }

    #[test]
    fn is_known_tells_new_content_and_new_deletions_from_old() {
        let source = Doc::new();
        let text = source.get_or_insert_text("content");
        let insert = {
            let mut txn = source.transact_mut();
            text.insert(&mut txn, 0, "hello world");
            txn.encode_update_v1()
        };
        let delete = {
            let mut txn = source.transact_mut();
            text.remove_range(&mut txn, 0, 6);
            txn.encode_update_v1()
        };
        let mut document = Document::new();
        assert!(!document.is_known(&insert));
        document.apply(&insert).unwrap();
        assert!(document.is_known(&insert));
        assert!(!document.is_known(&delete), "a new deletion is news");
        document.apply(&delete).unwrap();
        assert!(document.is_known(&delete));
        assert!(document.is_known(&document.diff(&document.state_vector()).unwrap()));
        assert!(!document.is_known(b"garbage"));
        // What the walk refuses never reaches yrs' decoder (which overflows
        // the stack on deep nesting).
        let mut nested = vec![1, 1, 1, 0, 0x08, 1, 1, b'a', 1];
        nested.extend(std::iter::repeat_n([117, 1], 200_000).flatten());
        nested.extend_from_slice(&[126, 0]);
        assert!(!document.is_known(&nested));
    }

    #[test]
    fn from_updates_equals_applying_one_by_one() {
        let a = edit("one");
        let b = edit("two");
        let rebuilt = Document::from_updates([a.as_slice(), b.as_slice()]).unwrap();
        let mut stepwise = Document::new();
        stepwise.apply(&a).unwrap();
        stepwise.apply(&b).unwrap();
        assert_eq!(text_of(&rebuilt), text_of(&stepwise));
        assert_eq!(
            rebuilt.encode_state().unwrap(),
            stepwise.encode_state().unwrap()
        );
    }
}
