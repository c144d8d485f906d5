//! The Quire server: y-websocket rooms over axum, one actor per live
//! document, sled storage behind the `DocStore` trait.
//!
//! # Layout
//!
//! - [`config`]: every setting `quire serve` takes.
//! - [`connection`]: one WebSocket; decodes frames, forwards them to its
//!   room, writes what the room queues, closes with a clear code.
//! - [`outbox`]: a connection's queue of room frames, bounded in bytes.
//! - [`room_core`]: how a room behaves: membership, sync, updates, saves,
//!   presence, chat, compaction; no I/O, no tasks, no clock.
//! - [`fanout`]: the seam to the other nodes of a cluster (Redis Streams,
//!   or nothing on one node).
//! - [`room`]: the tokio task around one document's core: its mailbox,
//!   its storage calls, its timers; the only writer of that document's log.
//! - [`rooms`]: the registry of live rooms; opens, evicts, shuts down.
//! - [`memory`]: the threads that build and drop whole documents, and
//!   what gives a closed document's memory back to the system.
//! - [`document`]: a yrs `Doc` with panic containment and the few
//!   operations Quire needs (apply and return the delta, diff, state).
//! - [`items`]: the update checks (`quire_protocol::update`) under the
//!   name the server's modules and tests import them by.
//! - [`snapshot`]: exports as a Yjs update, text, JSON, Markdown or HTML.
//! - [`import`]: files (Yjs, Markdown, HTML, text) made into an update.
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
pub mod import;
pub mod items {
    pub use quire_protocol::update::*;
}
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod request_body;
pub mod room;
pub mod room_core;
pub mod rooms;
pub mod snapshot;
pub mod web;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use quire_storage::{DocStore, SledOptions, SledStore, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use tracing::{debug, info, warn};

pub use config::Config;
use fanout::Fanout;
use metrics::Metrics;
use rooms::Rooms;

/// Longest header-read timeout of a connection the limits refused.
const REFUSED_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Exports of documents not in memory running now, at most
    /// `--max-cold-exports` (each rebuilds a whole document).
    pub cold_exports: Arc<tokio::sync::Semaphore>,
    /// The other nodes of a cluster (readiness: `is_ready`).
    pub fanout: Arc<dyn Fanout>,
    /// Names `POST /api/docs` is creating now (one request per name).
    pub creating: Arc<api::Creating>,
    /// Set once the node was ready (`/healthz`, see `api::healthz`): its
    /// fan-out reader connected and its store confirming writes.
    pub has_been_ready: Arc<std::sync::atomic::AtomicBool>,
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
            creating: Arc::default(),
            has_been_ready: Arc::default(),
            admission: limits::Admission::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            cold_exports: Arc::new(tokio::sync::Semaphore::new(config.max_cold_exports.max(1))),
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
        .route("/api/docs", get(api::list).post(api::create))
        .route(
            "/api/docs/{doc}/snapshot",
            get(api::export).put(api::import),
        )
        .route("/api/docs/{doc}", axum::routing::delete(api::delete))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .merge(web::routes(state.config.static_dir.as_deref()))
        .layer(DefaultBodyLimit::max(state.config.max_message_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_body::read_in_time,
        ))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span of one request, as tower-http's default (debug level) but with
/// the token in the query redacted, so debug logs hold no credentials.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redacted(request.uri()),
        version = ?request.version(),
    )
}

/// `uri` with the value of every `token` query parameter replaced.
fn redacted(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=[redacted]".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

/// DNS-rebinding guard, for HTTP and WebSocket alike: a page whose host
/// name was rebound to this server's address sends its own name as Host.
/// Accepted: IP literals (no name to rebind), `localhost`, and the names
/// given with `--public-host`; a request without Host (not a browser)
/// passes too.
async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(host) = request.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !host_allowed(host, &state.config.public_hosts) {
            warn!(
                host,
                "refusing a request for a host this server does not serve"
            );
            let text = format!(
                "this server does not answer to the host name {host:?}; \
                 its operator can add it with --public-host"
            );
            return (StatusCode::MISDIRECTED_REQUEST, text).into_response();
        }
    }
    next.run(request).await
}

/// Whether a Host header names this server (see [`check_host`]).
fn host_allowed(host: &str, public_hosts: &[String]) -> bool {
    let authority = match host.parse::<axum::http::uri::Authority>() {
        Ok(authority) => authority,
        Err(_) => return false,
    };
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || public_hosts.iter().any(|public| {
            public.eq_ignore_ascii_case(name) || public.eq_ignore_ascii_case(authority.as_str())
        })
}

/// Query parameters of `/ws/{doc}`; anything else after `?` is ignored.
#[derive(serde::Deserialize)]
struct RoomQuery {
    token: Option<String>,
}

/// A TCP connection's place under the connection limits, put on each of
/// its requests by [`serve`]: a WebSocket upgrade takes it for the
/// WebSocket's lifetime; otherwise the connection frees it as it ends.
#[derive(Clone, Debug)]
pub struct ConnectionSlot {
    admitted: Arc<Mutex<Option<limits::Admitted>>>,
    /// Bytes read from the socket, for the WebSocket's message timeout.
    meter: Arc<limits::ReadMeter>,
}

impl ConnectionSlot {
    fn take(&self) -> Option<limits::Admitted> {
        self.admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn put_back(&self, admitted: limits::Admitted) {
        *self.admitted.lock().unwrap_or_else(|p| p.into_inner()) = Some(admitted);
    }
}

/// The answer to a connection the limits refuse.
fn refusal_response(refusal: &limits::Refusal) -> Response {
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
    (status, text).into_response()
}

async fn ws_upgrade(
    upgrade: websocket::Upgrade,
    Path(doc): Path<String>,
    Query(query): Query<RoomQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<Extension<ConnectionSlot>>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    if let Err(refused) = check_origin(&headers, &state.config.allowed_origins) {
        warn!(%refused, "refusing a cross-site WebSocket");
        return (StatusCode::FORBIDDEN, refused).into_response();
    }
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let client = limits::client_ip(peer.ip(), forwarded, &state.config.trust_proxy);
    // The connection's own place (taken when it was accepted), or a new
    // one when the router runs without `serve` (tests driving `app`).
    let meter = slot.as_ref().map(|Extension(slot)| slot.meter.clone());
    let admitted = match slot.as_ref().and_then(|Extension(slot)| slot.take()) {
        Some(mut admitted) => match admitted.attribute(client) {
            Ok(()) => Ok(admitted),
            Err(refusal) => {
                // The TCP connection goes on (keep-alive) and keeps its place.
                if let Some(Extension(slot)) = &slot {
                    slot.put_back(admitted);
                }
                Err(refusal)
            }
        },
        None => state.admission.admit(client),
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            warn!(?refusal, %peer, %client, "refusing a connection");
            return refusal_response(&refusal);
        }
    };
    let extensions = upgrade.offers(quire_protocol::ext::SUBPROTOCOL);
    let protocol = extensions.then_some(quire_protocol::ext::SUBPROTOCOL);
    let max_message = state.config.max_message_bytes;
    // Boxed: the connection's task keeps what it captures for its life.
    let opening = Box::new(connection::Opening {
        raw_name: doc,
        token: query.token,
        extensions,
        admitted,
        meter,
        state,
    });
    upgrade.accept(protocol, max_message, move |socket| {
        connection::serve(socket, opening)
    })
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
///
/// Each TCP connection is admitted under the connection limits as it is
/// accepted (refused ones get 503/429 and are closed), then served by
/// hyper's HTTP/1 with a header-read timeout (`--header-timeout`), so a
/// client that never finishes its request neither holds a task forever
/// nor escapes the limits.
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

    let router = app(state.clone());
    // Set once shutdown begins: connections finish their request and close.
    let (stopping_tx, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let connection = serve_connection(tcp, peer, router.clone(), &state);
                tokio::spawn(connection.with_stop(stopping.clone()));
            }
            // Out of file descriptors and the like: back off a moment.
            Err(err) => {
                warn!(%err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    info!("shutting down: closing rooms");
    state.rooms.shutdown().await;
    let _ = stopping_tx.send(true);

    // Upgraded WebSockets and requests in flight get a moment to finish and
    // send their close frames. The last one to end signals it.
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

/// One accepted TCP connection, before it is run.
struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    /// Its place under the limits, or why it has none.
    slot: Result<ConnectionSlot, limits::Refusal>,
    header_timeout: std::time::Duration,
}

/// Admits a TCP connection (a trusted proxy's counts for its clients later,
/// per request) and prepares it to be served.
fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    state: &AppState,
) -> Accepted {
    // Every frame is latency-sensitive (a keystroke); Nagle's algorithm
    // would hold small frames back waiting for an ACK.
    let _ = tcp.set_nodelay(true);
    let admitted = if state.config.trust_proxy.contains(&peer.ip()) {
        state.admission.admit_unattributed()
    } else {
        state.admission.admit(peer.ip())
    };
    Accepted {
        tcp,
        peer,
        router,
        slot: admitted.map(|admitted| ConnectionSlot {
            admitted: Arc::new(Mutex::new(Some(admitted))),
            meter: Arc::default(),
        }),
        header_timeout: state.config.header_timeout,
    }
}

impl Accepted {
    /// Serves the connection's requests until it closes, or until
    /// `stopping` is set and the request in flight is done.
    async fn with_stop(self, mut stopping: watch::Receiver<bool>) {
        let Accepted {
            tcp,
            peer,
            router,
            slot,
            header_timeout,
        } = self;
        if let Err(refusal) = &slot {
            warn!(?refusal, %peer, "refusing a connection");
        }
        let meter = slot
            .as_ref()
            .map_or_else(|_| Arc::default(), |slot| slot.meter.clone());
        // A refused connection holds no place, but a socket: it gets only
        // a moment to say what it wanted.
        let header_timeout = match &slot {
            Ok(_) => header_timeout,
            Err(_) => header_timeout.min(REFUSED_HEADER_TIMEOUT),
        };
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                let slot = slot.clone();
                async move {
                    let slot = match slot {
                        Ok(slot) => slot,
                        // Refused: answered properly (the request read), then closed.
                        Err(refusal) => {
                            let mut response = refusal_response(&refusal);
                            response.headers_mut().insert(
                                header::CONNECTION,
                                "close".parse().expect("a header value"),
                            );
                            return Ok(response);
                        }
                    };
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(slot);
                    tower_service::Service::call(&mut router, request).await
                }
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let io = TokioIo::new(limits::Metered::new(tcp, meter));
        let connection = builder.serve_connection(io, service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    debug!(%err, %peer, "HTTP connection ended");
                }
            }
            () = async { drop(stopping.wait_for(|stopping| *stopping).await) } => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Log output captured for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_or_configured_names() {
        let public = ["docs.example".to_owned()];
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "10.1.2.3:80",
            "localhost:8080",
            "LOCALHOST",
            "docs.example",
            "docs.example:443",
        ] {
            assert!(host_allowed(host, &public), "{host}");
        }
        for host in ["attacker.example:8080", "docs.example.evil", "", "a b"] {
            assert!(!host_allowed(host, &public), "{host}");
        }
    }

    #[test]
    fn tokens_are_redacted_from_request_uris() {
        let uri: Uri = "/ws/notes?a=1&token=SECRET&b=2".parse().unwrap();
        assert_eq!(redacted(&uri), "/ws/notes?a=1&token=[redacted]&b=2");
        let uri: Uri = "/ws/notes".parse().unwrap();
        assert_eq!(redacted(&uri), "/ws/notes");
    }

    /// Regression (issue 12): `?token=` appeared in debug-level request spans.
    #[tokio::test]
    async fn debug_logs_of_a_request_hold_no_token() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .finish();
        // A current-thread runtime: the server's tasks log through this too.
        let _default = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path().join("d"));
        let store = open_store(&config).unwrap();
        let listener = TcpListener::bind(config.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(AppState::new(config, store), listener, async {
            let _ = stopped.await;
        }));
        for path in [
            "/ws/notes?token=SECRET-TOKEN",
            "/api/docs?token=SECRET-TOKEN",
        ] {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 "));
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            log.contains("token=[redacted]"),
            "the request spans are logged: {log}"
        );
        assert!(!log.contains("SECRET-TOKEN"), "{log}");
    }
}
