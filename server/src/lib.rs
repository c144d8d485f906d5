//! The Quire server: y-websocket rooms over axum, one actor per live
//! document, sled storage behind the `DocStore` trait.
//!
//! # Layout
//!
//! - [`config`]: every setting `quire serve` takes.
//! - [`connection`]: one WebSocket; decodes frames, forwards them to its
//!   room, writes what the room queues, closes with a clear code.
//! - [`room_core`]: how a room behaves: membership, sync, updates, saves,
//!   presence, chat, compaction; no I/O, no tasks, no clock.
//! - [`fanout`]: the seam to the other nodes of a cluster (Redis Streams,
//!   or nothing on one node).
//! - [`room`]: the tokio task around one document's core: its mailbox,
//!   its storage calls, its timers; the only writer of that document's log.
//! - [`rooms`]: the registry of live rooms; opens, evicts, shuts down.
//! - [`document`]: a yrs `Doc` with panic containment and the few
//!   operations Quire needs (apply and return the delta, diff, state).
//! - [`items`]: the update checks (`quire_protocol::update`) under the
//!   name the server's modules and tests import them by.
//! - [`snapshot`]: exports as a Yjs update, text or JSON.
//! - [`api`]: the HTTP API and its single error type.
//! - [`auth`]: signed access tokens (HMAC-SHA256) and permissions.
//! - [`limits`]: connection admission and per-connection rate limits.
//! - [`metrics`]: Prometheus metrics.
//! - [`web`]: the web app's files (index, hashed assets, service worker).
//!
//! [`app`] builds the router from an [`AppState`], so tests can drive it
//! directly; [`serve`] runs it on a listener until a shutdown signal.

pub mod api;
pub mod auth;
pub mod config;
pub mod connection;
pub mod document;
pub mod fanout;
pub mod items {
    pub use quire_protocol::update::*;
}
pub mod limits;
pub mod metrics;
pub mod room;
pub mod room_core;
pub mod rooms;
pub mod snapshot;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::serve::ListenerExt;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use quire_storage::{DocStore, SledOptions, SledStore, StoreError};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

pub use config::Config;
use fanout::Fanout;
use metrics::Metrics;
use rooms::Rooms;

/// How long shutdown waits for connections to send their close frames.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What every request handler and connection shares. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    /// Live rooms, by document name.
    pub rooms: Rooms,
    /// The document store (reads for listing and export go straight to it).
    pub store: Arc<dyn DocStore>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Settings, read-only after start.
    pub config: Arc<Config>,
    /// Connection counts, for the total and per-address limits.
    pub admission: Arc<limits::Admission>,
    /// The other nodes of a cluster (readiness: `is_ready`).
    pub fanout: Arc<dyn Fanout>,
}

impl AppState {
    /// One node on `store`.
    pub fn new(config: Config, store: Arc<dyn DocStore>) -> Self {
        Self::with_fanout(config, store, fanout::single_node())
    }

    /// A node of a cluster: `store` is shared with the other nodes, which
    /// `fanout` reaches.
    pub fn with_fanout(config: Config, store: Arc<dyn DocStore>, fanout: Arc<dyn Fanout>) -> Self {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        Self {
            rooms: Rooms::new(
                store.clone(),
                config.clone(),
                metrics.clone(),
                fanout.clone(),
            ),
            fanout,
            admission: limits::Admission::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            store,
            metrics,
            config,
        }
    }
}

/// Wall-clock milliseconds, for timestamps shown to people.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the embedded sled store the configuration names.
pub fn open_store(config: &Config) -> Result<Arc<SledStore>, StoreError> {
    let options = SledOptions {
        commit_window: config.commit_window,
        ..SledOptions::default()
    };
    Ok(Arc::new(SledStore::open(&config.data, options)?))
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/ws/{doc}", get(ws_upgrade))
        .route("/api/docs", get(api::list))
        .route(
            "/api/docs/{doc}/snapshot",
            get(api::export).put(api::import),
        )
        .route("/api/docs/{doc}", axum::routing::delete(api::delete))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .merge(web::routes(state.config.static_dir.as_deref()))
        .layer(DefaultBodyLimit::max(state.config.max_message_bytes))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Query parameters of `/ws/{doc}`; anything else after `?` is ignored.
#[derive(serde::Deserialize)]
struct RoomQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    Path(doc): Path<String>,
    Query(query): Query<RoomQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    if let Err(refused) = check_origin(&headers, &state.config.allowed_origins) {
        warn!(%refused, "refusing a cross-site WebSocket");
        return (StatusCode::FORBIDDEN, refused).into_response();
    }
    let admitted = match state.admission.admit(peer.ip()) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            warn!(?refusal, %peer, "refusing a connection");
            let (status, text) = match refusal {
                limits::Refusal::Full(n) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the server holds its maximum of {n} connections"),
                ),
                limits::Refusal::TooManyFromAddress(n) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("at most {n} connections per address"),
                ),
            };
            return (status, text).into_response();
        }
    };
    let limit = state.config.max_message_bytes;
    ws.protocols([quire_protocol::ext::SUBPROTOCOL])
        .read_buffer_size(connection::READ_BUFFER_BYTES)
        .write_buffer_size(connection::WRITE_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection::serve(socket, doc, query.token, admitted, state))
}

/// Cross-site WebSocket hijacking guard: a browser always sends `Origin`;
/// it must be this server itself or one of `allowed`. Requests without an
/// Origin (native clients, which carry no ambient credentials) pass.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if origin_host.eq_ignore_ascii_case(host)
        || allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        Err(format!("origin {origin} is not allowed to open rooms here"))
    }
}

/// Serves on `listener` until `shutdown` completes, then closes every room
/// (connections get 1001), waits for their connections to end and flushes
/// storage.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut durability = state.store.durability();
    let metrics = state.metrics.clone();
    let recorder = tokio::spawn(async move {
        while durability.changed().await.is_ok() {
            let committed = *durability.borrow_and_update();
            metrics.record_commit(&committed);
        }
    });

    let rooms = state.rooms.clone();
    let router = app(state.clone());
    // Every frame is latency-sensitive (a keystroke); Nagle's algorithm
    // would hold small frames back waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        info!("shutting down: closing rooms");
        rooms.shutdown().await;
    })
    .await?;

    // Upgraded WebSockets outlive axum's graceful shutdown; give them a
    // moment to send their close frames. The last one to end signals it.
    let closing = state.admission.all_closed();
    if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
        warn!("connections still open after {CLOSE_GRACE:?}; stopping anyway");
    }
    recorder.abort();
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(Ok(())) => info!("storage flushed; bye"),
        Ok(Err(err)) => warn!(%err, "final flush failed"),
        Err(err) => warn!(%err, "final flush panicked"),
    }
    Ok(())
}
