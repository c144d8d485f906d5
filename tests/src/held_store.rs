//! A sled store whose durability the test holds back: writes land in sled
//! as usual, but the durability watch does not move and `flush` does not
//! return while the hold is on, as with a disk that stalls. For tests of
//! "nothing is acknowledged before it is durable".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quire_storage::{
    Appended, Committed, DocInfo, DocStore, Seq, SledStore, StoreError, StoreHealth, StoredDoc,
};
use tokio::sync::watch;

pub struct HeldStore {
    inner: Arc<SledStore>,
    /// While set, durability progress is not passed on and flushes wait.
    held: Arc<AtomicBool>,
    /// What the store's users watch: the inner watch, passed on unless held.
    outer: Arc<watch::Sender<Committed>>,
}

impl HeldStore {
    /// Wraps `inner`, held from the start. Needs a tokio runtime.
    pub fn new(inner: Arc<SledStore>) -> Arc<Self> {
        let mut progress = inner.durability();
        let outer = Arc::new(watch::Sender::new(*progress.borrow()));
        let held = Arc::new(AtomicBool::new(true));
        tokio::spawn({
            let (outer, held) = (outer.clone(), held.clone());
            async move {
                while progress.changed().await.is_ok() {
                    if !held.load(Ordering::SeqCst) {
                        outer.send_replace(*progress.borrow_and_update());
                    }
                }
            }
        });
        Arc::new(Self { inner, held, outer })
    }

    /// Holds durability back again (what is durable already stays so).
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lets durability through from now on.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.outer.send_replace(*self.inner.durability().borrow());
    }
}

impl DocStore for HeldStore {
    fn hurry(&self) {
        self.inner.hurry()
    }
    fn append(&self, doc: &str, update: &[u8]) -> Result<Appended, StoreError> {
        self.inner.append(doc, update)
    }
    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.inner.load(doc)
    }
    fn compact(&self, doc: &str, upto: Seq, state: &[u8]) -> Result<(), StoreError> {
        self.inner.compact(doc, upto, state)
    }
    fn info(&self, doc: &str) -> Result<Option<DocInfo>, StoreError> {
        self.inner.info(doc)
    }
    fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        self.inner.list()
    }
    fn append_chat(&self, doc: &str, record: &[u8]) -> Result<Appended, StoreError> {
        self.inner.append_chat(doc, record)
    }
    fn recent_chat(&self, doc: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.recent_chat(doc, limit)
    }
    fn trim_chat(&self, doc: &str, keep: usize, max_bytes: u64) -> Result<(), StoreError> {
        self.inner.trim_chat(doc, keep, max_bytes)
    }
    fn delete(&self, doc: &str) -> Result<bool, StoreError> {
        self.inner.delete(doc)
    }
    fn durability(&self) -> watch::Receiver<Committed> {
        self.outer.subscribe()
    }
    fn flush(&self) -> Result<(), StoreError> {
        // Called on a blocking thread; bounded by the test releasing.
        let deadline = std::time::Instant::now() + crate::WAIT;
        while self.held.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.inner.flush()
    }
    fn last_ticket(&self) -> u64 {
        self.inner.last_ticket()
    }
    fn health(&self) -> StoreHealth {
        self.inner.health()
    }
}
