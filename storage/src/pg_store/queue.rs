//! The writes a store instance accepted and has not committed yet.
//!
//! Every write (append, chat message, compaction, deletion) takes the next
//! ticket and joins the back of the queue; the writer task takes work from
//! the front and removes it only after its COMMIT returned, so the queue
//! always holds exactly the uncommitted writes, in ticket order, and the
//! published ticket is the last one removed. Reads merge the queued
//! appends of a document into what the database returns (own appends are
//! visible at once), using the batch number each append is given when it
//! joins a batch (see `quire_batches` in the schema).
//!
//! An append's `Seq` is *provisional* until it commits (its real seq is
//! only assigned inside the batch's transaction): `PROVISIONAL` plus the
//! writer id and the ticket, above every database seq.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use crate::{Seq, StoreError};

/// Set in every provisional seq; database seqs stay far below it.
pub(super) const PROVISIONAL: u64 = 1 << 62;
/// Bits 0..40 of a provisional seq: the ticket.
const TICKET_BITS: u32 = 40;
/// Bits 40..62: the writer id (modulo), so provisional seqs keep growing
/// across reopenings, as sled's seqs do.
const WRITER_MASK: u64 = (1 << (62 - TICKET_BITS)) - 1;
/// How many committed appends stay mapped from ticket to seq, for
/// compactions whose bound is a provisional seq that committed meanwhile.
const RECENT: usize = 16 * 1024;

/// What a write does.
pub(super) enum Op {
    Update(Vec<u8>),
    Chat(Vec<u8>),
    /// Replace the document's entries up to `upto` by `state`.
    Compact {
        upto: Bound,
        state: Vec<u8>,
    },
    /// Delete the document; the caller waits on `reply`. The writer stops
    /// retrying at `deadline` and answers with the failure instead.
    Delete {
        reply: std::sync::mpsc::SyncSender<Result<bool, StoreError>>,
        deadline: std::time::Instant,
    },
}

/// A compaction's upper bound.
pub(super) enum Bound {
    /// A database seq.
    Seq(i64),
    /// The seq one of this instance's appends gets when it commits (it is
    /// ahead in the queue, so it has committed by the time this runs).
    After(Arc<Write>),
}

/// `Write::state` values (only deletions use more than `QUEUED`: a caller
/// may cancel a deletion the writer has not started).
pub(super) const QUEUED: u8 = 0;
pub(super) const RUNNING: u8 = 1;
pub(super) const CANCELLED: u8 = 2;

/// One accepted write.
pub(super) struct Write {
    pub ticket: u64,
    pub doc: String,
    pub op: Op,
    /// Unix ms when accepted: the document's modification time.
    pub at_ms: i64,
    /// The append batch it joined (0: none yet). Set before the batch's
    /// transaction starts, so a snapshot in which `quire_batches` shows a
    /// number >= this one holds this write.
    pub batch: AtomicI64,
    /// Its database seq once committed (0: not yet, or unknown because a
    /// retry found the batch already committed).
    pub seq: AtomicI64,
    /// QUEUED, RUNNING or CANCELLED: a deletion whose caller gave up is
    /// cancelled unless the writer started it.
    pub state: AtomicU8,
}

impl Write {
    /// Bytes it holds, for the pending bound.
    pub fn size(&self) -> u64 {
        let data = match &self.op {
            Op::Update(data) | Op::Chat(data) => data.len(),
            Op::Compact { state, .. } => state.len(),
            Op::Delete { .. } => 0,
        };
        (data + self.doc.len()) as u64
    }

    /// Whether the transaction that committed it is visible in a snapshot
    /// whose `quire_batches` row for this writer says `visible_batch`.
    pub fn visible_in(&self, visible_batch: i64) -> bool {
        let batch = self.batch.load(Ordering::SeqCst);
        batch != 0 && batch <= visible_batch
    }
}

/// The uncommitted writes and the counters that go with them.
pub(super) struct Queue {
    /// Uncommitted writes in ticket order; the front ones may be in flight.
    pub items: VecDeque<Arc<Write>>,
    /// The last ticket issued.
    pub last_ticket: u64,
    /// Sum of `Write::size` over `items`, bounded by the options.
    pub pending_bytes: u64,
    /// The last append batch number handed out.
    pub last_batch: i64,
    /// (ticket, seq) of recently committed appends, in ticket order.
    pub recent: VecDeque<(u64, i64)>,
}

impl Queue {
    pub fn new() -> Self {
        Self {
            items: VecDeque::new(),
            last_ticket: 0,
            pending_bytes: 0,
            last_batch: 0,
            recent: VecDeque::new(),
        }
    }

    /// Accepts a write; `None` if it would exceed `max_bytes` of pending
    /// writes (one write alone is always accepted).
    pub fn push(&mut self, doc: &str, op: Op, max_bytes: u64) -> Option<Arc<Write>> {
        let write = Arc::new(Write {
            ticket: self.last_ticket + 1,
            doc: doc.to_owned(),
            op,
            at_ms: now_ms(),
            batch: AtomicI64::new(0),
            seq: AtomicI64::new(0),
            state: AtomicU8::new(QUEUED),
        });
        let size = write.size();
        if !self.items.is_empty() && self.pending_bytes + size > max_bytes {
            return None;
        }
        self.last_ticket = write.ticket;
        self.pending_bytes += size;
        self.items.push_back(Arc::clone(&write));
        Some(write)
    }

    /// The queued appends (`chat` false) or chat messages (`chat` true) of
    /// `doc`, oldest first.
    pub fn pending_of(&self, doc: &str, chat: bool) -> Vec<Arc<Write>> {
        self.items
            .iter()
            .filter(|w| w.doc == doc && matches!(w.op, Op::Chat(_)) == chat)
            .filter(|w| matches!(w.op, Op::Update(_) | Op::Chat(_)))
            .cloned()
            .collect()
    }

    /// Every queued append or chat message.
    pub fn pending_entries(&self) -> Vec<Arc<Write>> {
        self.items
            .iter()
            .filter(|w| matches!(w.op, Op::Update(_) | Op::Chat(_)))
            .cloned()
            .collect()
    }

    /// Removes the `count` front writes after their commit and records the
    /// appends' seqs. Returns the last ticket removed.
    pub fn complete(&mut self, count: usize) -> u64 {
        let mut last = 0;
        for _ in 0..count {
            let Some(write) = self.items.pop_front() else {
                break;
            };
            self.pending_bytes -= write.size();
            last = write.ticket;
            if matches!(write.op, Op::Update(_)) {
                self.recent
                    .push_back((write.ticket, write.seq.load(Ordering::SeqCst)));
                if self.recent.len() > RECENT {
                    self.recent.pop_front();
                }
            }
        }
        last
    }

    /// What a compaction bound given as `upto` means: a database seq, an
    /// append still queued, or `None` (an append whose seq is unknown).
    pub fn bound(&self, upto: Seq, writer_id: i64) -> Option<Bound> {
        let Some(ticket) = own_ticket(upto, writer_id) else {
            return Some(Bound::Seq(upto.min(i64::MAX as u64) as i64));
        };
        if let Some(write) = self.find(ticket) {
            return Some(Bound::After(write));
        }
        let at = self
            .recent
            .binary_search_by_key(&ticket, |&(t, _)| t)
            .ok()?;
        let seq = self.recent[at].1;
        (seq != 0).then_some(Bound::Seq(seq))
    }

    /// The database seq for `after` in a read: database seqs as they are,
    /// a committed own append by its seq, anything else 0 (from the start).
    pub fn resolve(&self, after: Seq, writer_id: i64) -> i64 {
        match self.bound(after, writer_id) {
            Some(Bound::Seq(seq)) => seq,
            Some(Bound::After(write)) => write.seq.load(Ordering::SeqCst),
            None => 0,
        }
    }

    fn find(&self, ticket: u64) -> Option<Arc<Write>> {
        let at = self
            .items
            .binary_search_by_key(&ticket, |w| w.ticket)
            .ok()?;
        Some(Arc::clone(&self.items[at]))
    }
}

/// The provisional seq of this writer's write with `ticket`.
pub(super) fn provisional(writer_id: i64, ticket: u64) -> Seq {
    PROVISIONAL
        | ((writer_id as u64 & WRITER_MASK) << TICKET_BITS)
        | (ticket & ((1 << TICKET_BITS) - 1))
}

/// The ticket inside a provisional seq of this writer.
fn own_ticket(seq: Seq, writer_id: i64) -> Option<u64> {
    if seq & PROVISIONAL == 0 {
        return None;
    }
    let writer = (seq >> TICKET_BITS) & WRITER_MASK;
    (writer == writer_id as u64 & WRITER_MASK).then_some(seq & ((1 << TICKET_BITS) - 1))
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisional_seqs_sit_above_database_seqs_and_round_trip() {
        let seq = provisional(7, 42);
        assert!(seq > i64::MAX as u64 / 2);
        assert_eq!(own_ticket(seq, 7), Some(42));
        assert_eq!(own_ticket(seq, 8), None, "another writer's");
        assert_eq!(own_ticket(12345, 7), None, "a database seq");
        assert!(
            provisional(8, 1) > provisional(7, 1_000_000),
            "grows with the writer id"
        );
    }

    #[test]
    fn a_bound_follows_an_append_into_the_recent_map() {
        let mut queue = Queue::new();
        let write = queue
            .push("d", Op::Update(vec![1]), u64::MAX)
            .expect("room");
        let seq = provisional(3, write.ticket);
        assert!(matches!(queue.bound(seq, 3), Some(Bound::After(_))));
        write.seq.store(99, Ordering::SeqCst);
        assert_eq!(queue.complete(1), write.ticket);
        assert!(matches!(queue.bound(seq, 3), Some(Bound::Seq(99))));
        assert_eq!(queue.resolve(seq, 3), 99);
        assert_eq!(queue.resolve(5, 3), 5);
        assert_eq!(queue.pending_bytes, 0);
    }

    #[test]
    fn the_pending_bound_refuses_a_write_but_never_the_first() {
        let mut queue = Queue::new();
        assert!(queue.push("d", Op::Update(vec![0; 100]), 10).is_some());
        assert!(queue.push("d", Op::Update(vec![0; 100]), 10).is_none());
        assert_eq!(queue.last_ticket, 1, "a refused write takes no ticket");
    }
}
