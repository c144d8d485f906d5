//! The registry of live rooms: document name → [`RoomHandle`].
//!
//! Its lock is taken to open a room, to list rooms and when a room leaves;
//! never per message, so it is not on the hot path. A room removes itself
//! (under the lock, only if nothing is waiting in its mailbox), so a lookup
//! either finds a room that will serve it or finds none and opens a new one
//! that loads what the old one left on disk. A caller that raced with an
//! eviction sees [`RoomError::Gone`] and looks up again.
//!
//! Several Quire nodes may each have a live room of the same document
//! (correctness never depends on routing): each room follows its document
//! on the [`Fanout`] from before it loads until it ends, so a node's
//! stream reader reads exactly the streams of its live rooms.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use quire_protocol::DocName;
use quire_storage::DocStore;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::config::Config;
use crate::fanout::Fanout;
use crate::memory::DocumentThreads;
use crate::metrics::Metrics;
use crate::room::{Departure, Room, RoomContext, RoomError, RoomHandle};

/// How often an operation is retried after racing with an eviction.
const GONE_RETRIES: usize = 5;

#[derive(Clone)]
pub struct Rooms {
    shared: Arc<Shared>,
}

/// What every room of this registry is given.
struct Shared {
    /// Live rooms and the signal that one left; what rooms see of the
    /// registry (as [`Departure`]).
    registry: Arc<Registry>,
    /// Flipped once at shutdown; every room watches it.
    shutdown: watch::Sender<bool>,
    store: Arc<dyn DocStore>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// The other nodes; every room follows its document there while it is
    /// open (the reader reads the streams of exactly the live rooms).
    fanout: Arc<dyn Fanout>,
    /// Where documents are loaded and dropped (and exports and imports
    /// built), so their memory goes back to the system once they close.
    documents: DocumentThreads,
}

/// The map of live rooms.
struct Registry {
    /// Live rooms. Only open, list and a room leaving take this lock.
    map: Mutex<HashMap<DocName, RoomHandle>>,
    /// Signalled whenever a room leaves, so shutdown can wait for none.
    emptied: Notify,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, HashMap<DocName, RoomHandle>> {
        // A panic elsewhere while holding this lock leaves the map intact.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Departure for Registry {
    fn leave_if(&self, name: &DocName, still_idle: &mut dyn FnMut() -> bool) -> bool {
        let mut map = self.map();
        if !still_idle() {
            return false;
        }
        map.remove(name);
        drop(map);
        self.emptied.notify_waiters();
        true
    }
}

impl Rooms {
    pub fn new(
        store: Arc<dyn DocStore>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        fanout: Arc<dyn Fanout>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry: Arc::new(Registry {
                    map: Mutex::new(HashMap::new()),
                    emptied: Notify::new(),
                }),
                shutdown: watch::Sender::new(false),
                store,
                config,
                metrics,
                fanout,
                documents: DocumentThreads::for_this_machine(),
            }),
        }
    }

    /// Where whole documents are built and dropped (see `memory`).
    pub fn documents(&self) -> &DocumentThreads {
        &self.shared.documents
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
        self.shared.registry.map()
    }

    /// What a room of this registry is given.
    fn context(&self) -> RoomContext {
        RoomContext {
            store: self.shared.store.clone(),
            config: self.shared.config.clone(),
            metrics: self.shared.metrics.clone(),
            registry: self.shared.registry.clone(),
            fanout: self.shared.fanout.clone(),
            documents: self.shared.documents.clone(),
        }
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
        let (room, handle) = Room::new(name.clone(), self.context());
        map.insert(name.clone(), handle.clone());
        drop(map);
        self.shared.metrics.rooms.inc();
        let span = tracing::info_span!("room", doc = %name);
        let run = room.run(self.shared.shutdown.subscribe());
        let documents = self.shared.documents.clone();
        tokio::spawn(
            async move {
                // Dropped where its memory goes back to the system: without
                // it a server that opened many documents stays near its peak.
                if let Some(document) = run.await {
                    documents.release(document).await;
                }
            }
            .instrument(span),
        );
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

    /// Tells every room to close its connections (1001), flush and leave;
    /// waits until all have. No room opens afterwards.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        loop {
            let emptied = self.shared.registry.emptied.notified();
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
