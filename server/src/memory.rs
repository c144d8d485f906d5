//! Giving the memory of closed documents back to the system.
//!
//! A document that was open costs memory while it is open, and should cost
//! none once it is evicted. With glibc's allocator, freed memory stays
//! resident in three places unless the server sees to it:
//!
//! - **Thread caches.** Every thread keeps up to 7 freed chunks of each
//!   small size (the tcache) for its next allocations. Chunks a long-lived
//!   thread freed while it built or dropped a document lie scattered over
//!   that document's pages, and each keeps its page resident: hundreds of
//!   pages per thread that touched documents. A thread's cache goes back to
//!   the allocator when the thread ends. Hence [`DocumentThreads`]: work
//!   that builds or drops a whole document runs on a thread that ends
//!   with it, never on tokio's workers or its blocking pool, which live on.
//! - **Arena tops.** Each arena keeps free memory at its top up to the trim
//!   threshold, which glibc raises to twice the largest block it ever
//!   mapped and freed (a document's state: hundreds of KiB), in every arena.
//!   [`fix_allocator_thresholds`] pins both thresholds at start.
//! - **Free chunks inside an arena**, which only `malloc_trim` releases:
//!   [`DocumentThreads::trim`], after a document was dropped or big work
//!   (an import, an export) is done.
//!
//! Measured with `quire-bench coldload` (1,000 documents of the
//! automerge-paper history opened and evicted;
//! `bench/results/memory-threads.md`): RSS after eviction 18–19 MiB
//! without these, 17–18.7 MiB with them, against 10.2 MiB before any
//! document was opened. Most of what stays is still thread caches (with
//! the tcache off entirely it is 13 MiB), probably those of tokio's
//! workers, which encode what joining clients are sent (not measured).
//! Elsewhere than on glibc the three calls do nothing, and the threads are
//! just threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;
use tokio::sync::Semaphore;

/// Work on this many bytes or more is big enough to trim after.
const BIG_BYTES: usize = 1024 * 1024;

/// The allocation size from which glibc maps memory of its own, and the
/// free top an arena keeps: fixed, so no arena keeps more than this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ALLOCATOR_THRESHOLD: libc::c_int = 64 * 1024;

/// Pins glibc's mmap and trim thresholds (see the module docs). Called once
/// by `quire serve` before its threads start: a library does not change
/// the allocator of the process it is linked into.
pub fn fix_allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two of the allocator's tuning values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, ALLOCATOR_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, ALLOCATOR_THRESHOLD);
    }
}

/// How long an idle thread of tokio's blocking pool lives (tokio's default
/// is 10 s). Each keeps its stack and its thread cache resident, and the
/// blocking work around documents (stored chat read, sled compaction,
/// joining document threads) can leave several behind after a burst of
/// loads: `quire serve` lets them go after a second. A thread is started
/// again in tens of microseconds when work comes back.
pub const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// A document thread could not run its work.
#[derive(Debug, Error)]
pub enum DocumentThreadError {
    #[error("could not start a thread: {0}")]
    Spawn(std::io::Error),
    #[error("the work panicked")]
    Panicked,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Threads for work on whole documents: loading one, dropping one,
/// rendering or importing one. Each piece of work runs on a thread of its
/// own that ends with it, so that thread's cache of freed chunks goes back
/// to the allocator (see the module docs); at most `limit` run at once.
#[derive(Clone)]
pub struct DocumentThreads {
    inner: Arc<Inner>,
}

struct Inner {
    /// One permit per thread that may run: each holds a whole document in
    /// memory and keeps a core busy, so a burst of loads (every client
    /// reconnecting after a restart) waits here instead of starting
    /// hundreds of threads.
    slots: Semaphore,
    /// Set while a trim is scheduled: documents closing together cost one
    /// trim, not one each.
    trim_scheduled: AtomicBool,
}

impl DocumentThreads {
    /// At most `limit` threads at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: Semaphore::new(limit.max(1)),
                trim_scheduled: AtomicBool::new(false),
            }),
        }
    }

    /// Two per core: loads also wait for storage (PostgreSQL answers over
    /// the network), so a few more than the cores keep them busy.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(2 * cores)
    }

    /// Runs `job` on a thread of its own and returns its result once that
    /// thread has ended (its cache is back with the allocator by then).
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DocumentThreadError> {
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        // What the work logs names its document, as on the room's task.
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("quire-document".into())
            .spawn(move || span.in_scope(job))
            .map_err(DocumentThreadError::Spawn)?;
        // Joining blocks: a blocking-pool thread waits for the end instead.
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| DocumentThreadError::ShuttingDown)?
            .map_err(|_| DocumentThreadError::Panicked)
    }

    /// Drops `value` (a closed room's document) on a document thread, then
    /// gives what it held back to the system.
    pub async fn release<T: Send + 'static>(&self, value: T) {
        if let Err(err) = self.run(move || drop(value)).await {
            tracing::warn!(%err, "could not drop a document on a thread of its own");
        }
        self.trim();
    }

    /// After work on `bytes` (an import, an export): [`Self::trim`] when it
    /// was big enough to matter.
    pub fn trim_after(&self, bytes: usize) {
        if bytes >= BIG_BYTES {
            self.trim();
        }
    }

    /// Returns the free memory inside the allocator's arenas to the system
    /// (glibc's `malloc_trim`), on a blocking thread; at most one pending.
    pub fn trim(&self) {
        if self.inner.trim_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // Cleared first: a document dropped during the trim schedules another.
            inner.trim_scheduled.store(false, Ordering::Release);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free pages of the allocator's own arenas.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Set by a thread-local's destructor, which runs as its thread ends.
    struct EndsWithThread(Arc<AtomicBool>);

    impl Drop for EndsWithThread {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    thread_local! {
        static WATCH: std::cell::RefCell<Option<EndsWithThread>> = const { std::cell::RefCell::new(None) };
    }

    #[tokio::test]
    async fn work_runs_on_a_thread_of_its_own_that_has_ended_when_it_returns() {
        let threads = DocumentThreads::new(2);
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let here = std::thread::current().id();
        let there = threads
            .run(move || {
                WATCH.with(|w| *w.borrow_mut() = Some(EndsWithThread(flag)));
                std::thread::current().id()
            })
            .await
            .expect("ran");
        assert_ne!(there, here);
        assert!(ended.load(Ordering::SeqCst), "the thread was still running");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_limit_run_at_once() {
        let threads = DocumentThreads::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..6).map(|_| {
            let (threads, running, most) = (threads.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                threads
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            })
        });
        for job in jobs.collect::<Vec<_>>() {
            job.await.expect("joined").expect("ran");
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error_not_a_crash() {
        let threads = DocumentThreads::new(1);
        let result = threads.run(|| -> u32 { panic!("bad document") }).await;
        assert!(matches!(result, Err(DocumentThreadError::Panicked)));
        // The slot came back: the next work runs.
        assert_eq!(threads.run(|| 7).await.expect("ran"), 7);
    }
}
