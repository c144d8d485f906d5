//! A tiny in-memory [`DocStore`]: a map behind a mutex, every append durable
//! at once (the durability watch advances on every write).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use quire_storage::{Appended, Committed, DocInfo, DocStore, Seq, StoreError, StoredDoc};
use tokio::sync::watch;

#[derive(Default)]
struct Doc {
    log: BTreeMap<Seq, Vec<u8>>,
    chat: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Inner {
    docs: HashMap<String, Doc>,
    next_seq: Seq,
    ticket: u64,
}

pub struct MemStore {
    inner: Mutex<Inner>,
    durable: watch::Sender<Committed>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            durable: watch::Sender::new(Committed::default()),
        }
    }
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a ticket and publishes it as durable at once.
    fn commit(&self, inner: &mut Inner) -> u64 {
        inner.ticket += 1;
        let ticket = inner.ticket;
        self.durable.send_replace(Committed {
            ticket,
            batch: 1,
            flush_time: Duration::ZERO,
        });
        ticket
    }

    /// The stored log of `doc` (empty if none), oldest first.
    pub fn log(&self, doc: &str) -> Vec<Vec<u8>> {
        self.lock()
            .docs
            .get(doc)
            .map(|d| d.log.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl DocStore for MemStore {
    fn append(&self, doc: &str, update: &[u8]) -> Result<Appended, StoreError> {
        let mut inner = self.lock();
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner
            .docs
            .entry(doc.to_owned())
            .or_default()
            .log
            .insert(seq, update.to_vec());
        let ticket = self.commit(&mut inner);
        Ok(Appended { seq, ticket })
    }

    fn load(&self, doc: &str) -> Result<Option<StoredDoc>, StoreError> {
        Ok(self.lock().docs.get(doc).map(|d| StoredDoc {
            updates: d.log.values().cloned().collect(),
            last_seq: d.log.keys().next_back().copied().unwrap_or(0),
        }))
    }

    fn compact(&self, doc: &str, upto: Seq, state: &[u8]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner.docs.entry(doc.to_owned()).or_default();
        entry.log.insert(upto, state.to_vec());
        entry.log.retain(|&seq, _| seq >= upto);
        self.commit(&mut inner);
        Ok(())
    }

    fn info(&self, doc: &str) -> Result<Option<DocInfo>, StoreError> {
        Ok(self.lock().docs.get(doc).map(|d| DocInfo {
            name: doc.to_owned(),
            bytes: d.log.values().map(|u| u.len() as u64).sum(),
            updates: d.log.len() as u64,
            modified_ms: 0,
        }))
    }

    fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        let mut names: Vec<String> = self.lock().docs.keys().cloned().collect();
        names.sort();
        Ok(names
            .iter()
            .filter_map(|n| self.info(n).ok().flatten())
            .collect())
    }

    fn append_chat(&self, doc: &str, record: &[u8]) -> Result<Appended, StoreError> {
        let mut inner = self.lock();
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner
            .docs
            .entry(doc.to_owned())
            .or_default()
            .chat
            .push(record.to_vec());
        let ticket = self.commit(&mut inner);
        Ok(Appended { seq, ticket })
    }

    fn recent_chat(&self, doc: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .docs
            .get(doc)
            .map(|d| d.chat[d.chat.len().saturating_sub(limit)..].to_vec())
            .unwrap_or_default())
    }

    fn delete(&self, doc: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let existed = inner.docs.remove(doc).is_some();
        self.commit(&mut inner);
        Ok(existed)
    }

    fn durability(&self) -> watch::Receiver<Committed> {
        self.durable.subscribe()
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
