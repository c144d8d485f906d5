//! The registry of live rooms: document name → [`RoomHandle`].
//!
//! Its lock is taken to open a room, to list rooms and when a room leaves;
//! never per message, so it is not on the hot path. A room removes itself
//! (under the lock, only if nothing is waiting in its mailbox), so a lookup
//! either finds a room that will serve it or finds none and opens a new one
//! that loads what the old one left on disk. A caller that raced with an
//! eviction sees [`RoomError::Gone`] and looks up again.
//!
//! This is the seam for several Quire nodes: a registry that knows which
//! node owns a document would route here instead of spawning locally.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use quire_protocol::DocName;
use quire_storage::DocStore;
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::{Room, RoomError, RoomHandle};

/// How often an operation is retried after racing with an eviction.
const GONE_RETRIES: usize = 5;

#[derive(Clone)]
pub struct Rooms {
    shared: Arc<Shared>,
}

struct Shared {
    /// Live rooms. Only open, list and evict take this lock.
    map: Mutex<HashMap<DocName, RoomHandle>>,
    /// Signalled whenever a room leaves, so shutdown can wait for none.
    emptied: Notify,
    /// Flipped once at shutdown; every room watches it.
    shutdown: watch::Sender<bool>,
    store: Arc<dyn DocStore>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Rooms {
    pub fn new(store: Arc<dyn DocStore>, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                map: Mutex::new(HashMap::new()),
                emptied: Notify::new(),
                shutdown: watch::Sender::new(false),
                store,
                config,
                metrics,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn DocStore> {
        &self.shared.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.shared.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    fn map(&self) -> MutexGuard<'_, HashMap<DocName, RoomHandle>> {
        // A panic elsewhere while holding this lock leaves the map intact.
        self.shared.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live room of `name`, if any.
    pub fn get(&self, name: &DocName) -> Option<RoomHandle> {
        self.map().get(name).filter(|h| !h.is_closed()).cloned()
    }

    /// The room of `name`, opened (and loading) if it was not live.
    pub fn open(&self, name: &DocName) -> Result<RoomHandle, RoomError> {
        if *self.shared.shutdown.borrow() {
            return Err(RoomError::ShuttingDown);
        }
        let mut map = self.map();
        if let Some(handle) = map.get(name).filter(|h| !h.is_closed()) {
            return Ok(handle.clone());
        }
        if map.len() >= self.shared.config.max_rooms {
            return Err(RoomError::Busy);
        }
        let (room, handle) = Room::new(name.clone(), self.clone());
        map.insert(name.clone(), handle.clone());
        drop(map);
        self.shared.metrics.rooms.inc();
        let span = tracing::info_span!("room", doc = %name);
        tokio::spawn(room.run(self.shared.shutdown.subscribe()).instrument(span));
        Ok(handle)
    }

    /// Runs `op` on the room of `name`, opening it if needed and retrying
    /// when the room was evicted under our feet.
    pub async fn with_room<T, F, Fut>(&self, name: &DocName, op: F) -> Result<T, RoomError>
    where
        F: Fn(RoomHandle) -> Fut,
        Fut: Future<Output = Result<T, RoomError>>,
    {
        for _ in 0..GONE_RETRIES {
            match op(self.open(name)?).await {
                Err(RoomError::Gone) => tokio::task::yield_now().await,
                other => return other,
            }
        }
        Err(RoomError::Gone)
    }

    /// Live rooms and their connection counts.
    pub fn live(&self) -> Vec<(DocName, usize)> {
        self.map()
            .iter()
            .map(|(name, handle)| (name.clone(), handle.members()))
            .collect()
    }

    /// Removes the room of `name` if its mailbox is empty and `idle` holds;
    /// closes the mailbox so later sends fail with `Gone`.
    pub(crate) fn evict_if_idle(
        &self,
        name: &DocName,
        rx: &mut mpsc::Receiver<impl Send>,
        idle: bool,
    ) -> bool {
        let mut map = self.map();
        if !idle || !rx.is_empty() {
            return false;
        }
        map.remove(name);
        rx.close();
        drop(map);
        self.shared.emptied.notify_waiters();
        true
    }

    /// Removes the room of `name` unconditionally (shutdown, deletion).
    pub(crate) fn evict(&self, name: &DocName, rx: &mut mpsc::Receiver<impl Send>) {
        let mut map = self.map();
        map.remove(name);
        rx.close();
        drop(map);
        self.shared.emptied.notify_waiters();
    }

    /// Tells every room to close its connections (1001), flush and leave;
    /// waits until all have. No room opens afterwards.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        loop {
            let emptied = self.shared.emptied.notified();
            let empty = {
                let mut map = self.map();
                // A room whose task died (it cannot, but if) must not hold us up.
                map.retain(|_, handle| !handle.is_closed());
                map.is_empty()
            };
            if empty {
                return;
            }
            emptied.await;
        }
    }
}
