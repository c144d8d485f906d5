//! One connection's outbound queue of room frames, bounded in bytes (and in
//! frames), between the room that fills it and the connection's writer
//! that empties it.
//!
//! - The room's end, [`OutboxSender`], never waits: a frame that finds the
//!   queue at its bound is refused ([`Pushed::Full`]) and the room cuts the
//!   member off with 4408. The bound is checked before a frame goes in. A
//!   frame as large as the bound or larger (a large initial sync) does not
//!   count toward it, but only one such frame may wait at a time: so a
//!   member's acknowledgements and relays still fit behind a 50 MB sync
//!   the writer has not taken yet, and a queue holds less than twice its
//!   bound plus one large frame.
//! - Frames are [`Bytes`]: a frame the room encoded once for many members
//!   is shared by their queues, not copied; each queue counts its length.
//! - An answer the room builds for one request of the member ([`Answer`]:
//!   sync step 2 for a state vector, the presence table) is remembered
//!   while it waits unwritten. The same request again needs no new answer:
//!   whatever changed since the queued one was built reaches the member
//!   after it, as relays. The room asks [`MemberQueue::answer_pending`]
//!   before it builds anything, so a client that repeats one request and
//!   never reads costs one answer, not thousands.
//!
//! [`MemberQueue::answer_pending`]: crate::room_core::MemberQueue::answer_pending

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::room_core::{Answer, Pushed};

/// What the two ends share.
#[derive(Debug)]
struct Shared {
    /// Bytes of the frames queued and not yet taken by the writer (gauge).
    bytes: AtomicUsize,
    /// The same for frames smaller than `max_bytes`: what the bound limits.
    small_bytes: AtomicUsize,
    /// Frames of at least `max_bytes` queued (at most one at a time).
    large: AtomicUsize,
    /// The bound in bytes (at least 1).
    max_bytes: usize,
    /// Frames queued and not yet taken (bounded by `--outbox-capacity`).
    frames: AtomicUsize,
    /// Answers queued and not yet taken, in queue order, so a repeated
    /// request is not answered twice (a handful at most: one per kind and
    /// state vector). Kept here rather than in each queued frame, so an
    /// idle queue's slots stay small.
    answers: Mutex<VecDeque<Answer>>,
    /// The server-wide gauge of queued bytes (`quire_outbound_queued_bytes`).
    metrics: Arc<Metrics>,
}

/// One queued frame.
#[derive(Debug)]
struct Queued {
    frame: Bytes,
    /// Whether it is an answer (its request is the oldest in `answers`).
    answer: bool,
}

/// Makes a queue of at most `max_frames` frames and `max_bytes` bytes
/// (each at least 1).
pub fn outbox(
    max_frames: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
) -> (OutboxSender, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        bytes: AtomicUsize::new(0),
        small_bytes: AtomicUsize::new(0),
        large: AtomicUsize::new(0),
        max_bytes: max_bytes.max(1),
        frames: AtomicUsize::new(0),
        answers: Mutex::new(VecDeque::new()),
        metrics,
    });
    let sender = OutboxSender {
        tx,
        shared: shared.clone(),
        max_frames: max_frames.max(1),
    };
    (sender, OutboxReceiver { rx, shared })
}

/// The room's end. Clones share one queue.
#[derive(Debug, Clone)]
pub struct OutboxSender {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
    max_frames: usize,
}

impl OutboxSender {
    /// Queues `frame` unless the queue is at its bound (or its writer is gone).
    pub fn push(&self, frame: Bytes) -> Pushed {
        self.queue(frame, None)
    }

    /// Queues `frame` as the answer to `answer`'s request.
    pub fn push_answer(&self, answer: Answer, frame: Bytes) -> Pushed {
        self.queue(frame, Some(answer))
    }

    /// Whether an answer to this request waits unwritten.
    pub fn answer_pending(&self, answer: &Answer) -> bool {
        self.shared.answers().contains(answer)
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    fn queue(&self, frame: Bytes, answer: Option<Answer>) -> Pushed {
        if self.tx.is_closed() {
            return Pushed::Closed;
        }
        let shared = &self.shared;
        let len = frame.len();
        let large = shared.is_large(len);
        if shared.frames.load(Ordering::Relaxed) >= self.max_frames
            || shared.small_bytes.load(Ordering::Relaxed) >= shared.max_bytes
            || (large && shared.large.load(Ordering::Relaxed) > 0)
        {
            return Pushed::Full;
        }
        // Counted before sending, so the writer never subtracts first.
        shared.frames.fetch_add(1, Ordering::Relaxed);
        if large {
            shared.large.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.small_bytes.fetch_add(len, Ordering::Relaxed);
        }
        let queued = shared.bytes.fetch_add(len, Ordering::Relaxed) + len;
        let metrics = &shared.metrics;
        metrics.outbound_queued_bytes.inc_by(len as i64);
        let peak = metrics.outbound_queue_peak_bytes.inner();
        peak.fetch_max(i64::try_from(queued).unwrap_or(i64::MAX), Ordering::Relaxed);
        // One producer (the room): `answers` stays in queue order.
        let is_answer = answer.is_some();
        if let Some(answer) = answer {
            shared.answers().push_back(answer);
        }
        match self.tx.send(Queued {
            frame,
            answer: is_answer,
        }) {
            Ok(()) => {
                shared.metrics.record_out(len);
                Pushed::Queued
            }
            Err(mpsc::error::SendError(queued)) => {
                shared.taken(&queued);
                Pushed::Closed
            }
        }
    }
}

impl Shared {
    fn answers(&self) -> std::sync::MutexGuard<'_, VecDeque<Answer>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a frame of `len` bytes is exempt from the bound (one at a time).
    fn is_large(&self, len: usize) -> bool {
        len >= self.max_bytes
    }

    /// Uncounts a frame that left the queue.
    fn taken(&self, queued: &Queued) {
        let len = queued.frame.len();
        self.frames.fetch_sub(1, Ordering::Relaxed);
        if self.is_large(len) {
            self.large.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.small_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        self.metrics.outbound_queued_bytes.dec_by(len as i64);
        if queued.answer {
            self.answers().pop_front();
        }
    }
}

/// The writer's end. Dropping it empties the queue (and the gauge).
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
}

impl OutboxReceiver {
    /// The next frame; `None` once every sender is gone and the queue is
    /// empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let queued = self.rx.recv().await?;
        Some(self.take(queued))
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let queued = self.rx.try_recv().ok()?;
        Some(self.take(queued))
    }

    fn take(&self, queued: Queued) -> Bytes {
        self.shared.taken(&queued);
        queued.frame
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // After `close` no frame can arrive, so this empties the queue for good.
        self.rx.close();
        while let Ok(queued) = self.rx.try_recv() {
            self.shared.taken(&queued);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn the_bound_is_in_bytes_and_one_large_frame_always_fits() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = outbox(1000, 100, metrics.clone());
        assert_eq!(tx.push(frame(10_000)), Pushed::Queued, "one large frame");
        // What follows a large initial sync still fits behind it...
        assert_eq!(tx.push(frame(60)), Pushed::Queued);
        assert_eq!(tx.push(frame(60)), Pushed::Queued);
        assert_eq!(tx.push(frame(1)), Pushed::Full, "120 small bytes queued");
        // ...but not a second large frame.
        assert_eq!(tx.push(frame(100)), Pushed::Full);
        assert_eq!(metrics.outbound_queued_bytes.get(), 10_120);
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(10_000));
        assert_eq!(
            tx.push(frame(100)),
            Pushed::Full,
            "small bytes at the bound"
        );
        rx.try_recv();
        rx.try_recv();
        assert_eq!(tx.push(frame(100)), Pushed::Queued, "a large frame again");
        rx.try_recv();
        assert_eq!(tx.queued_bytes(), 0);
        for _ in 0..10 {
            assert_eq!(tx.push(frame(10)), Pushed::Queued);
        }
        assert_eq!(tx.push(frame(10)), Pushed::Full, "100 bytes queued");
        drop(rx);
        assert_eq!(tx.push(frame(1)), Pushed::Closed);
        assert_eq!(metrics.outbound_queued_bytes.get(), 0, "dropping empties");
    }

    #[test]
    fn a_frame_count_bound_still_applies() {
        let (tx, _rx) = outbox(2, usize::MAX, Arc::new(Metrics::new()));
        assert_eq!(tx.push(frame(1)), Pushed::Queued);
        assert_eq!(tx.push(frame(1)), Pushed::Queued);
        assert_eq!(tx.push(frame(1)), Pushed::Full);
    }

    #[test]
    fn an_answer_is_pending_until_the_writer_takes_it() {
        let (tx, mut rx) = outbox(10, 1000, Arc::new(Metrics::new()));
        let sv = Answer::SyncStep2(Bytes::from_static(&[0]));
        assert!(!tx.answer_pending(&sv));
        tx.push_answer(sv.clone(), frame(5));
        assert!(tx.answer_pending(&sv));
        assert!(!tx.answer_pending(&Answer::Awareness));
        assert!(!tx.answer_pending(&Answer::SyncStep2(Bytes::from_static(&[1, 7, 0]))));
        rx.try_recv().unwrap();
        assert!(!tx.answer_pending(&sv));
    }

    #[test]
    fn answers_leave_in_queue_order_among_other_frames() {
        let (tx, mut rx) = outbox(10, 1000, Arc::new(Metrics::new()));
        let sv = Answer::SyncStep2(Bytes::from_static(&[0]));
        tx.push(frame(1));
        tx.push_answer(sv.clone(), frame(2));
        tx.push(frame(3));
        tx.push_answer(Answer::Awareness, frame(4));
        let mut taken = Vec::new();
        while let Some(frame) = rx.try_recv() {
            taken.push((
                frame.len(),
                tx.answer_pending(&sv),
                tx.answer_pending(&Answer::Awareness),
            ));
        }
        assert_eq!(
            taken,
            [
                (1, true, true),
                (2, false, true),
                (3, false, true),
                (4, false, false)
            ]
        );
    }
}
