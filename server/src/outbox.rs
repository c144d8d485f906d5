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
//! - **Direct writes** (issue 14, target 1): a frame pushed while the queue
//!   is empty and the connection is writing nothing is written to the
//!   socket right there, by the room's task, with one non-blocking vectored
//!   write ([`SocketWriter`]), and the connection's task is not woken. Only
//!   when the socket does not take the whole frame (full: `WouldBlock`, or
//!   a partial write) is the frame (its rest) queued and the connection
//!   woken, which then owns writing until it has nothing left
//!   ([`OutboxReceiver::poll_idle`] hands writing back). At the issue's
//!   load every edit woke 49 connection tasks for one frame each; a
//!   scheduling share of ≈ 20 % of the profile.
//!
//! **Architecture Invariant:** every write to a socket is ordered and goes
//! through one place at a time: the room writes only under this queue's
//! lock, only whole frames, and only while `connection_writes` is false;
//! the connection sets it (under the lock, [`OutboxReceiver::claim`])
//! before it writes anything of its own, and clears it only once it has
//! written everything. A frame the room began is finished first. The lock
//! is never held across `.await`, and the room never waits on a socket.
//!
//! [`MemberQueue::answer_pending`]: crate::room_core::MemberQueue::answer_pending

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::metrics::Metrics;
use crate::room_core::{Answer, Close, Pushed};
use crate::websocket::{SocketWriter, Wrote};

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
    /// Frames up to this long may be written by the room directly (larger
    /// ones, e.g. initial syncs or frames a Quire connection sends in
    /// fragments, are the connection's to write).
    direct_max: usize,
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
    /// The socket, for the room's direct writes (`None`: never written
    /// directly; taken when the connection's end drops, so the socket does
    /// not outlive its connection).
    writer: Option<SocketWriter>,
    /// The connection's task owns writing: it has frames of its own (the
    /// Welcome, pings, pongs, a close) or taken from here not yet fully
    /// written. Starts true; only [`OutboxReceiver::poll_idle`] clears it,
    /// when the connection has nothing left to write. While true the room
    /// queues instead of writing.
    connection_writes: bool,
    /// Bytes of the oldest frame a direct write already put on the socket
    /// (header included), when it took only part of it.
    sent: usize,
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
    direct: Option<Direct>,
    metrics: Arc<Metrics>,
) -> (OutboxSender, OutboxReceiver) {
    let (writer, direct_max) = direct.map_or((None, 0), |d| (Some(d.writer), d.max_frame));
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
            writer,
            connection_writes: true,
            sent: 0,
        }),
        waker: AtomicWaker::new(),
        max_bytes: max_bytes.max(1),
        direct_max,
        metrics,
    });
    let sender = OutboxSender {
        shared: shared.clone(),
        max_frames: max_frames.max(1),
    };
    (sender, OutboxReceiver { shared })
}

/// How the room may write to the connection's socket itself.
#[derive(Debug)]
pub struct Direct {
    pub writer: SocketWriter,
    /// The longest frame written so (see `Shared::direct_max`).
    pub max_frame: usize,
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
    /// An idle connection's frame is written to its socket here and then.
    pub fn push(&self, frame: Bytes) -> Pushed {
        self.queue(frame, None, true)
    }

    /// Queues `frame` for the connection's task to write, never writing it
    /// here: for a room with more work waiting, whose next frames the
    /// connection then gathers into one vectored write (a direct write per
    /// frame would cost a system call per frame of a fast stream).
    pub fn push_for_connection(&self, frame: Bytes) -> Pushed {
        self.queue(frame, None, false)
    }

    /// Queues `frame` as the answer to `answer`'s request.
    pub fn push_answer(&self, answer: Answer, frame: Bytes) -> Pushed {
        self.queue(frame, Some(answer), true)
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

    fn queue(&self, frame: Bytes, answer: Option<Answer>, write_here: bool) -> Pushed {
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
            let mut sent = 0;
            if write_here
                && let Some(writer) = &queue.writer
                && !queue.connection_writes
                && queue.frames.is_empty()
                && queue.close.is_none()
                && len <= shared.direct_max
            {
                match writer.try_write_binary(&frame) {
                    Ok(Wrote::Whole) => {
                        drop(queue);
                        shared.metrics.record_out(len);
                        return Pushed::Queued;
                    }
                    Ok(Wrote::Part(written)) => sent = written,
                    // The connection's own write meets the error (or its
                    // read the end) and it ends; the frame waits as usual.
                    Err(_) => {}
                }
                // The rest is the connection's: it is woken to write it.
                queue.connection_writes = true;
                queue.sent = sent;
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

    /// Takes the oldest frame, uncounted, with the bytes of it a direct
    /// write already put on the socket.
    fn take(&self, queue: &mut Queue) -> Option<(Bytes, usize)> {
        let queued = queue.frames.pop_front()?;
        let sent = std::mem::take(&mut queue.sent);
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
        Some((queued.frame, sent))
    }
}

/// The writer's end. Dropping it empties the queue (and the gauge).
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl OutboxReceiver {
    /// The next frame and the bytes of its WebSocket frame already on
    /// the socket; `None` once every sender is gone and the queue is
    /// empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<(Bytes, usize)> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Bytes, usize)>> {
        let mut queue = self.shared.lock();
        queue.connection_writes = true;
        if let Some(taken) = self.shared.take(&mut queue) {
            return Poll::Ready(Some(taken));
        }
        if queue.senders == 0 {
            return Poll::Ready(None);
        }
        // Registered under the lock: a push after it wakes this waker.
        self.shared.waker.register(cx.waker());
        Poll::Pending
    }

    /// The next frame if one is queued, and the bytes of its WebSocket
    /// frame already on the socket (the connection writes the rest first).
    /// The connection owns writing from here (see [`Self::claim`]).
    pub fn try_recv(&mut self) -> Option<(Bytes, usize)> {
        let mut queue = self.shared.lock();
        queue.connection_writes = true;
        self.shared.take(&mut queue)
    }

    /// Takes writing over from the room: no direct write starts until
    /// [`Self::poll_idle`] hands it back. Returns the frame a direct write
    /// began and did not finish, if any, with the bytes of it written: the
    /// connection writes its rest before anything else.
    pub fn claim(&mut self) -> Option<(Bytes, usize)> {
        let mut queue = self.shared.lock();
        queue.connection_writes = true;
        if queue.sent == 0 {
            return None;
        }
        self.shared.take(&mut queue)
    }

    /// The close asked for, if any (taken once). Call [`Self::claim`]
    /// first: the close goes out after a frame already begun.
    pub fn take_close(&mut self) -> Option<Close> {
        let mut queue = self.shared.lock();
        debug_assert!(queue.connection_writes && queue.sent == 0);
        queue.close.take()
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

    /// For a connection with nothing left to write: `Ready(true)` once a
    /// frame or a close waits, `Ready(false)` once every sender is gone
    /// and nothing is queued; else hands writing to the room (its direct
    /// writes) and registers the task's waker (a frame queued, a close or
    /// the last sender leaving wakes it). After `Pending` the connection
    /// claims ([`Self::claim`]) before it writes anything.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut queue = self.shared.lock();
        if !queue.frames.is_empty() || queue.close.is_some() {
            return Poll::Ready(true);
        }
        if queue.senders == 0 {
            return Poll::Ready(false);
        }
        queue.connection_writes = false;
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
        queue.writer = None;
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
        let (tx, mut rx) = outbox(1000, 100, None, metrics.clone());
        assert_eq!(tx.push(frame(10_000)), Pushed::Queued, "one large frame");
        // What follows a large initial sync still fits behind it...
        assert_eq!(tx.push(frame(60)), Pushed::Queued);
        assert_eq!(tx.push(frame(60)), Pushed::Queued);
        assert_eq!(tx.push(frame(1)), Pushed::Full, "120 small bytes queued");
        // ...but not a second large frame.
        assert_eq!(tx.push(frame(100)), Pushed::Full);
        assert_eq!(metrics.outbound_queued_bytes.get(), 10_120);
        assert_eq!(rx.try_recv().map(|(f, _)| f.len()), Some(10_000));
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
        let (tx, mut rx) = outbox(10, 1000, None, Arc::new(Metrics::new()));
        let second = tx.clone();
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some((frame, _)) = rx.recv().await {
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
        let (tx, mut rx) = outbox(1000, 1 << 20, None, Arc::new(Metrics::new()));
        for _ in 0..500 {
            tx.push(frame(1));
        }
        while rx.try_recv().is_some() {}
        let queue = tx.shared.lock();
        assert_eq!(queue.frames.capacity() + queue.answers.capacity(), 0);
    }

    #[test]
    fn a_frame_count_bound_still_applies() {
        let (tx, _rx) = outbox(2, usize::MAX, None, Arc::new(Metrics::new()));
        assert_eq!(tx.push(frame(1)), Pushed::Queued);
        assert_eq!(tx.push(frame(1)), Pushed::Queued);
        assert_eq!(tx.push(frame(1)), Pushed::Full);
    }

    #[test]
    fn an_answer_is_pending_until_the_writer_takes_it() {
        let (tx, mut rx) = outbox(10, 1000, None, Arc::new(Metrics::new()));
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
        let (tx, mut rx) = outbox(10, 1000, None, Arc::new(Metrics::new()));
        let sv = Answer::SyncStep2(Bytes::from_static(&[0]));
        tx.push(frame(1));
        tx.push_answer(sv.clone(), frame(2));
        tx.push(frame(3));
        tx.push_answer(Answer::Awareness, frame(4));
        let mut taken = Vec::new();
        while let Some((frame, _)) = rx.try_recv() {
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

    /// A server socket over TCP, its outbox writing directly, and the
    /// client's end.
    async fn direct_pair(
        max_frame: usize,
    ) -> (
        crate::websocket::WebSocket,
        OutboxSender,
        OutboxReceiver,
        tokio::net::TcpStream,
    ) {
        use crate::limits::Metered;
        use crate::websocket::{Transport, WebSocket};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let tcp = Metered::new(accepted.unwrap().0, Arc::default());
        let socket = WebSocket::new(Transport::tcp(tcp), Bytes::new(), 1 << 20);
        let direct = Direct {
            writer: socket.writer().expect("a TCP socket"),
            max_frame,
        };
        let (tx, rx) = outbox(usize::MAX, 1 << 30, Some(direct), Arc::new(Metrics::new()));
        (socket, tx, rx, client.unwrap())
    }

    /// Counts the wakes of a task.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Wakes {
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Hands writing to the room, as a connection with nothing to write does.
    fn go_idle(rx: &mut OutboxReceiver, wakes: &Arc<Wakes>) {
        let waker = std::task::Waker::from(wakes.clone());
        let polled = rx.poll_idle(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "nothing queued");
    }

    /// Reads `count` binary frames (up to 64 KiB each) the server wrote;
    /// their payloads' lengths, in order.
    async fn read_frame_lens(client: &mut tokio::net::TcpStream, count: usize) -> Vec<usize> {
        use tokio::io::AsyncReadExt;
        let mut lens = Vec::new();
        for _ in 0..count {
            let mut head = [0u8; 2];
            client.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], 0x82, "a whole binary frame");
            let len = match head[1] {
                126 => {
                    let mut len = [0u8; 2];
                    client.read_exact(&mut len).await.unwrap();
                    usize::from(u16::from_be_bytes(len))
                }
                len => usize::from(len),
            };
            let mut payload = vec![0u8; len];
            client.read_exact(&mut payload).await.unwrap();
            lens.push(len);
        }
        lens
    }

    #[tokio::test]
    async fn a_frame_for_an_idle_connection_is_written_by_the_room_without_waking_it() {
        let (mut socket, tx, mut rx, mut client) = direct_pair(100).await;
        // A fresh connection owns writing (its Welcome goes first).
        assert_eq!(tx.push(frame(3)), Pushed::Queued);
        assert_eq!(tx.queued_bytes(), 3, "queued while the connection writes");
        let (first, sent) = rx.try_recv().unwrap();
        assert_eq!(sent, 0);
        socket.queue_binary(first);
        socket.write_out().await.unwrap();
        let wakes = Arc::new(Wakes::default());
        go_idle(&mut rx, &wakes);
        let answer = Answer::Awareness;
        assert_eq!(tx.push(Bytes::from_static(b"abc")), Pushed::Queued);
        assert_eq!(tx.push_answer(answer.clone(), frame(5)), Pushed::Queued);
        assert_eq!(tx.queued_bytes(), 0, "written, not queued");
        assert!(
            !tx.answer_pending(&answer),
            "an answer written is not pending"
        );
        assert_eq!(wakes.count(), 0, "the connection's task was not woken");
        // A frame over the direct bound is the connection's to write.
        assert_eq!(tx.push(frame(101)), Pushed::Queued);
        assert_eq!(wakes.count(), 1);
        assert_eq!(tx.queued_bytes(), 101);
        // So is a frame behind it, and writing stays the connection's.
        assert_eq!(tx.push(frame(7)), Pushed::Queued);
        assert_eq!(rx.claim(), None, "nothing begun");
        while let Some((frame, _)) = rx.try_recv() {
            socket.queue_binary(frame);
        }
        assert_eq!(tx.push(frame(9)), Pushed::Queued);
        assert_eq!(tx.queued_bytes(), 9, "the connection writes: queued");
        socket.write_out().await.unwrap();
        let lens = read_frame_lens(&mut client, 5).await;
        assert_eq!(lens, [3, 3, 5, 101, 7], "in order");
    }

    /// Regression (traces replay twice as dear after direct writes): a room
    /// with more work waiting leaves frames to the connection, which
    /// gathers them into one write, and a direct write never overtakes them.
    #[tokio::test]
    async fn frames_pushed_for_the_connection_are_gathered_by_it_not_written_one_by_one() {
        let (mut socket, tx, mut rx, mut client) = direct_pair(100).await;
        let wakes = Arc::new(Wakes::default());
        assert_eq!(rx.claim(), None);
        go_idle(&mut rx, &wakes);
        for len in [4, 5, 6] {
            assert_eq!(tx.push_for_connection(frame(len)), Pushed::Queued);
        }
        assert_eq!(tx.queued_bytes(), 15, "queued, not written");
        assert!(wakes.count() >= 1, "the connection's task was woken");
        // The room idle again: a frame behind queued ones still waits its turn.
        assert_eq!(tx.push(frame(7)), Pushed::Queued);
        assert_eq!(tx.queued_bytes(), 22, "behind the queued frames");
        assert_eq!(rx.claim(), None, "nothing begun");
        while let Some((frame, sent)) = rx.try_recv() {
            assert_eq!(sent, 0);
            socket.queue_binary(frame);
        }
        socket.write_out().await.unwrap();
        let lens = read_frame_lens(&mut client, 4).await;
        assert_eq!(lens, [4, 5, 6, 7], "in order");
    }

    /// A socket the client does not read fills up: the room's write is
    /// partial or refused, and the connection finishes it before anything
    /// else, every frame whole and in order.
    #[tokio::test]
    async fn a_full_socket_hands_the_rest_of_a_frame_to_the_connection_in_order() {
        const LEN: usize = 40_000;
        let (mut socket, tx, mut rx, mut client) = direct_pair(64 * 1024).await;
        let wakes = Arc::new(Wakes::default());
        assert_eq!(rx.claim(), None);
        go_idle(&mut rx, &wakes);
        let numbered = |n: u32| {
            let mut frame = vec![(n % 251) as u8; LEN];
            frame[..4].copy_from_slice(&n.to_be_bytes());
            Bytes::from(frame)
        };
        let mut pushed = 0u32;
        while tx.queued_bytes() == 0 {
            assert!(pushed < 100_000, "the socket never filled");
            assert_eq!(tx.push(numbered(pushed)), Pushed::Queued);
            pushed += 1;
        }
        assert_eq!(wakes.count(), 1, "woken once the socket was full");
        for _ in 0..3 {
            assert_eq!(tx.push(numbered(pushed)), Pushed::Queued);
            pushed += 1;
        }
        // Meanwhile the connection queued a control frame of its own.
        socket.queue_pong(Bytes::from_static(b"p"));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        // What the connection's writer does: claim, then write it all.
        if let Some((rest, sent)) = rx.claim() {
            assert!(sent > 0);
            socket.resume_first(rest, sent);
        }
        while let Some((frame, sent)) = rx.try_recv() {
            assert_eq!(sent, 0);
            socket.queue_binary(frame);
        }
        socket.write_out().await.unwrap();
        drop((socket, rx, tx));
        let all = reader.await.unwrap();
        // Parse: binary frames 0..pushed in order, the pong among them.
        let (mut at, mut next, mut pongs) = (0, 0u32, 0);
        while at < all.len() {
            match all[at] {
                0x8a => {
                    assert_eq!(&all[at + 1..at + 3], &[1, b'p']);
                    pongs += 1;
                    at += 3;
                }
                0x82 => {
                    assert_eq!(all[at + 1], 126);
                    let len = usize::from(u16::from_be_bytes([all[at + 2], all[at + 3]]));
                    assert_eq!(len, LEN);
                    let payload = &all[at + 4..at + 4 + len];
                    assert_eq!(payload[..4], next.to_be_bytes(), "frames in order");
                    assert!(payload[4..].iter().all(|&b| b == (next % 251) as u8));
                    next += 1;
                    at += 4 + len;
                }
                other => panic!("byte {other:#x} at {at}: not a frame start"),
            }
        }
        assert_eq!((next, pongs), (pushed, 1));
    }
}
