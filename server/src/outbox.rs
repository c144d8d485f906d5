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
//! - No channel: one `VecDeque` and its counts under one lock (held by
//!   either end for a few instructions), and the connection's waker. Issue
//!   14's profile had tokio's list channel (a 32-slot block per connection,
//!   and its push and pop) among the writer's costs; an idle queue now holds
//!   no block, and a queue's buffer is given back whenever it is empty.
//! - The close to perform travels beside the frames ([`CloseSender`], the
//!   room's, and [`OutboxReceiver::close`], the connection's own): one slot,
//!   the first close wins, and it goes out before any frame still queued.
//!   (Two channels of tokio's did this before, ≈ 3.5 KiB per connection.)
//!
//! [`MemberQueue::answer_pending`]: crate::room_core::MemberQueue::answer_pending

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::metrics::Metrics;
use crate::room_core::{Answer, Close, Pushed};

/// What the two ends share.
#[derive(Debug)]
struct Shared {
    /// The queue and its counts, behind one lock: the room pushes, the
    /// writer takes, each holding it for a few instructions.
    queue: Mutex<Queue>,
    /// The writer's task, woken by a push (and by the last sender leaving).
    waker: AtomicWaker,
    /// The bound in bytes (at least 1).
    max_bytes: usize,
    /// The server-wide gauge of queued bytes (`quire_outbound_queued_bytes`).
    metrics: Arc<Metrics>,
}

/// The queue proper.
#[derive(Debug)]
struct Queue {
    /// Frames queued and not yet taken, oldest first (bounded by
    /// `--outbox-capacity`).
    frames: VecDeque<Queued>,
    /// Answers queued and not yet taken, in queue order, so a repeated
    /// request is not answered twice (a handful at most: one per kind and
    /// state vector). Kept here rather than in each queued frame, so an
    /// idle queue's slots stay small.
    answers: VecDeque<Answer>,
    /// Bytes of the frames queued (the gauge's share of this queue).
    bytes: usize,
    /// The same for frames smaller than `max_bytes`: what the bound limits.
    small_bytes: usize,
    /// Frames of at least `max_bytes` queued (at most one at a time).
    large: usize,
    /// Room-side handles alive: none left and nothing queued ends `recv`.
    senders: usize,
    /// Whether the writer's end is alive (pushes are refused once not).
    receiver: bool,
    /// A close to perform before anything still queued (the first wins).
    close: Option<Close>,
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
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            answers: VecDeque::new(),
            bytes: 0,
            small_bytes: 0,
            large: 0,
            senders: 1,
            receiver: true,
            close: None,
        }),
        waker: AtomicWaker::new(),
        max_bytes: max_bytes.max(1),
        metrics,
    });
    let sender = OutboxSender {
        shared: shared.clone(),
        max_frames: max_frames.max(1),
    };
    (sender, OutboxReceiver { shared })
}

/// Where the room puts the close it decided for the member (its queue's
/// close slot; the first close wins).
#[derive(Debug, Clone)]
pub struct CloseSender {
    shared: Arc<Shared>,
}

impl CloseSender {
    /// Asks the connection to close; `Err` gives the close back when one
    /// is already asked for or the connection is gone.
    pub fn try_send(&self, close: Close) -> Result<(), Close> {
        self.shared.set_close(close)
    }
}

/// The room's end. Clones share one queue.
#[derive(Debug)]
pub struct OutboxSender {
    shared: Arc<Shared>,
    max_frames: usize,
}

impl Clone for OutboxSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
            max_frames: self.max_frames,
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let last = {
            let mut queue = self.shared.lock();
            queue.senders -= 1;
            queue.senders == 0
        };
        if last {
            self.shared.waker.wake();
        }
    }
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
        self.shared.lock().answers.contains(answer)
    }

    /// The close slot of this queue, for the room.
    pub fn closer(&self) -> CloseSender {
        CloseSender {
            shared: self.shared.clone(),
        }
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    fn queue(&self, frame: Bytes, answer: Option<Answer>) -> Pushed {
        let shared = &self.shared;
        let len = frame.len();
        let large = shared.is_large(len);
        let queued = {
            let mut queue = shared.lock();
            if !queue.receiver {
                return Pushed::Closed;
            }
            if queue.frames.len() >= self.max_frames
                || queue.small_bytes >= shared.max_bytes
                || (large && queue.large > 0)
            {
                return Pushed::Full;
            }
            if large {
                queue.large += 1;
            } else {
                queue.small_bytes += len;
            }
            queue.bytes += len;
            let is_answer = answer.is_some();
            if let Some(answer) = answer {
                queue.answers.push_back(answer);
            }
            queue.frames.push_back(Queued {
                frame,
                answer: is_answer,
            });
            queue.bytes
        };
        shared.waker.wake();
        let metrics = &shared.metrics;
        metrics.outbound_queued_bytes.inc_by(len as i64);
        let peak = metrics.outbound_queue_peak_bytes.inner();
        peak.fetch_max(
            i64::try_from(queued).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        metrics.record_out(len);
        Pushed::Queued
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_close(&self, close: Close) -> Result<(), Close> {
        {
            let mut queue = self.lock();
            if !queue.receiver || queue.close.is_some() {
                return Err(close);
            }
            queue.close = Some(close);
        }
        self.waker.wake();
        Ok(())
    }

    /// Whether a frame of `len` bytes is exempt from the bound (one at a time).
    fn is_large(&self, len: usize) -> bool {
        len >= self.max_bytes
    }

    /// Takes the oldest frame, uncounted.
    fn take(&self, queue: &mut Queue) -> Option<Bytes> {
        let queued = queue.frames.pop_front()?;
        let len = queued.frame.len();
        if self.is_large(len) {
            queue.large -= 1;
        } else {
            queue.small_bytes -= len;
        }
        queue.bytes -= len;
        if queued.answer {
            queue.answers.pop_front();
        }
        // An empty queue holds no buffer: an idle connection costs none.
        if queue.frames.is_empty() {
            queue.frames = VecDeque::new();
            queue.answers = VecDeque::new();
        }
        self.metrics.outbound_queued_bytes.dec_by(len as i64);
        Some(queued.frame)
    }
}

/// The writer's end. Dropping it empties the queue (and the gauge).
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl OutboxReceiver {
    /// The next frame; `None` once every sender is gone and the queue is
    /// empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut queue = self.shared.lock();
        if let Some(frame) = self.shared.take(&mut queue) {
            return Poll::Ready(Some(frame));
        }
        if queue.senders == 0 {
            return Poll::Ready(None);
        }
        // Registered under the lock: a push after it wakes this waker.
        self.shared.waker.register(cx.waker());
        Poll::Pending
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let mut queue = self.shared.lock();
        self.shared.take(&mut queue)
    }

    /// The close asked for, if any (taken once).
    pub fn take_close(&mut self) -> Option<Close> {
        self.shared.lock().close.take()
    }

    /// Asks for a close from the connection's side (the first close wins).
    pub fn close(&self, close: Close) {
        let _ = self.shared.set_close(close);
    }

    /// Registers the task's waker without looking at the queue (so that a
    /// close is noticed while the socket is full).
    pub fn register(&self, cx: &mut Context<'_>) {
        self.shared.waker.register(cx.waker());
    }

    /// `Ready(true)` once a frame or a close waits, `Ready(false)` once
    /// every sender is gone and nothing is queued; else registers the
    /// task's waker (a push, a close or the last sender leaving wakes it).
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let queue = self.shared.lock();
        if !queue.frames.is_empty() || queue.close.is_some() {
            return Poll::Ready(true);
        }
        if queue.senders == 0 {
            return Poll::Ready(false);
        }
        // Registered under the lock: a push after it wakes this waker.
        self.shared.waker.register(cx.waker());
        Poll::Pending
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Once `receiver` is false no frame can arrive, so this empties the
        // queue for good.
        let mut queue = self.shared.lock();
        queue.receiver = false;
        while self.shared.take(&mut queue).is_some() {}
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

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_and_ends_with_the_last_sender() {
        let (tx, mut rx) = outbox(10, 1000, Arc::new(Metrics::new()));
        let second = tx.clone();
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(frame) = rx.recv().await {
                got.push(frame.len());
            }
            got
        });
        tokio::task::yield_now().await;
        assert_eq!(tx.push(frame(3)), Pushed::Queued);
        tokio::task::yield_now().await;
        assert_eq!(second.push(frame(4)), Pushed::Queued);
        drop(tx);
        assert!(!writer.is_finished(), "one sender is left");
        drop(second);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer ends")
            .unwrap();
        assert_eq!(got, [3, 4]);
    }

    #[test]
    fn an_empty_queue_holds_no_buffer() {
        let (tx, mut rx) = outbox(1000, 1 << 20, Arc::new(Metrics::new()));
        for _ in 0..500 {
            tx.push(frame(1));
        }
        while rx.try_recv().is_some() {}
        let queue = tx.shared.lock();
        assert_eq!(queue.frames.capacity() + queue.answers.capacity(), 0);
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
