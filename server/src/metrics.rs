//! Prometheus metrics, served at `GET /metrics`.
//!
//! Handles are cheap clones of atomics, so the room and connection tasks
//! update them directly on the hot path without any lock.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use quire_storage::Committed;

/// Every metric Quire exports.
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_opened: Counter,
    /// Rooms (documents) held in memory.
    pub rooms: Gauge,
    /// Document updates received that changed a document.
    pub updates_in: Counter,
    /// Bytes of WebSocket frames received.
    pub bytes_in: Counter,
    /// Frames queued to clients.
    pub messages_out: Counter,
    /// Bytes of frames queued to clients.
    pub bytes_out: Counter,
    /// Bytes waiting in connections' outbound queues now (all connections).
    pub outbound_queued_bytes: Gauge,
    /// The most bytes one connection's outbound queue ever held.
    pub outbound_queue_peak_bytes: Gauge,
    /// Connections closed for sending bad input (malformed, invalid, too big).
    pub rejected_inputs: Counter,
    /// Connections cut because they did not read fast enough.
    pub slow_consumers_cut: Counter,
    /// Times a connection was slowed down for exceeding its rate limit.
    pub throttled: Counter,
    /// Storage writes covered by one group-commit flush.
    pub persist_batch: Histogram,
    /// Duration of one group-commit flush, in seconds.
    pub persist_seconds: Histogram,
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("quire");
        let metrics = Metrics {
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            rooms: Gauge::default(),
            updates_in: Counter::default(),
            bytes_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_out: Counter::default(),
            outbound_queued_bytes: Gauge::default(),
            outbound_queue_peak_bytes: Gauge::default(),
            rejected_inputs: Counter::default(),
            slow_consumers_cut: Counter::default(),
            throttled: Counter::default(),
            persist_batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            persist_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_opened",
            "WebSocket connections accepted",
            metrics.connections_opened.clone(),
        );
        registry.register("rooms", "Documents held in memory", metrics.rooms.clone());
        registry.register(
            "throttled",
            "Times a connection was slowed down by its rate limit",
            metrics.throttled.clone(),
        );
        registry.register(
            "updates_in",
            "Document updates received that changed a document",
            metrics.updates_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes of WebSocket frames received",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "messages_out",
            "Frames queued to clients",
            metrics.messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes of frames queued to clients",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "outbound_queued_bytes",
            "Bytes waiting in connections' outbound queues",
            metrics.outbound_queued_bytes.clone(),
        );
        registry.register(
            "outbound_queue_peak_bytes",
            "The most bytes one connection's outbound queue ever held",
            metrics.outbound_queue_peak_bytes.clone(),
        );
        registry.register(
            "rejected_inputs",
            "Connections closed for bad input",
            metrics.rejected_inputs.clone(),
        );
        registry.register(
            "slow_consumers_cut",
            "Connections cut for not reading fast enough",
            metrics.slow_consumers_cut.clone(),
        );
        registry.register(
            "persist_batch_size",
            "Storage writes covered by one group-commit flush",
            metrics.persist_batch.clone(),
        );
        registry.register(
            "persist_latency_seconds",
            "Duration of one group-commit flush",
            metrics.persist_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records one group-commit flush.
    pub fn record_commit(&self, committed: &Committed) {
        self.persist_batch.observe(committed.batch as f64);
        self.persist_seconds
            .observe(committed.flush_time.as_secs_f64());
    }

    /// Counts one frame queued to a client.
    pub fn record_out(&self, bytes: usize) {
        self.messages_out.inc();
        self.bytes_out.inc_by(bytes as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
