//! The HTTP API: document list, snapshot export and import (Yjs, text,
//! JSON, Markdown, HTML), creating a document from a file, deletion,
//! health and metrics. Every error is a JSON body `{"error": {"code",
//! "message"}}`, including what axum's extractors refuse (a body over the
//! size limit, a path or query that does not parse); a 5xx never reveals
//! internals (they go to the log).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use quire_protocol::DocName;
use quire_storage::{DocInfo, DocStore};
use serde::{Deserialize, Serialize};
use tracing::error;

use crate::AppState;
use crate::auth::{self, AuthError, Claims, Permission};
use crate::document::Document;
use crate::import::{self, ImportError, ImportFormat};
use crate::room::RoomError;
use crate::snapshot::{self, Format};

/// What `Retry-After` says when a bounded resource is busy, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// Every way an API request can fail.
#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    /// No token, or a bad or expired one.
    Unauthorized(String),
    /// A valid token that does not allow this.
    Forbidden(String),
    NotFound(String),
    /// Over a size limit.
    TooLarge(String),
    /// A name that is taken (`POST /api/docs`).
    Conflict(String),
    /// A body in a format the endpoint does not read.
    UnsupportedType(String),
    /// Shutting down, or a document that cannot be loaded right now.
    Unavailable(String),
    /// A bounded resource is in use; 503 with `Retry-After`.
    Busy(String),
    /// The request (its body) did not arrive in time; 408.
    Timeout(String),
    /// Anything else; the detail is logged, not returned.
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.as_str()),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.as_str()),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.as_str()),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.as_str()),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m.as_str()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.as_str()),
            AppError::UnsupportedType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.as_str(),
            ),
            AppError::Unavailable(m) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.as_str())
            }
            AppError::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, "busy", m.as_str()),
            AppError::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, "timeout", m.as_str()),
            AppError::Internal(detail) => {
                error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                )
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        if matches!(self, AppError::Busy(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

impl From<RoomError> for AppError {
    fn from(err: RoomError) -> Self {
        match err {
            RoomError::InvalidUpdate(m) => AppError::BadRequest(m),
            RoomError::Incomplete { reason, .. } => AppError::BadRequest(reason),
            RoomError::TooLarge(m) => AppError::TooLarge(m),
            RoomError::ShuttingDown | RoomError::Busy => AppError::Unavailable(err.to_string()),
            RoomError::Unavailable(m) => AppError::Internal(m),
            RoomError::Gone => AppError::Internal("room kept closing".into()),
        }
    }
}

/// An extractor's refusal, in the API's error body: 413 stays "too large",
/// anything else is the client's mistake.
macro_rules! rejection_into_app_error {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for AppError {
            fn from(rejection: $rejection) -> Self {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::TooLarge(rejection.body_text())
                } else {
                    AppError::BadRequest(rejection.body_text())
                }
            }
        }
    )*};
}

rejection_into_app_error!(BytesRejection, PathRejection, QueryRejection);

impl From<ImportError> for AppError {
    fn from(err: ImportError) -> Self {
        match err {
            ImportError::UnsupportedType(_) => AppError::UnsupportedType(err.to_string()),
            ImportError::NotUtf8(_) | ImportError::TooDeep(_) => {
                AppError::BadRequest(err.to_string())
            }
            ImportError::BadState(_) => AppError::Internal(err.to_string()),
        }
    }
}

impl From<AuthError> for AppError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::WrongDocument | AuthError::Insufficient => {
                AppError::Forbidden(err.to_string())
            }
            _ => AppError::Unauthorized(err.to_string()),
        }
    }
}

/// Checks the request's `Authorization: Bearer` token for `doc` (or, for
/// the list, any document) with at least `needed`. Without `--auth-key`
/// everything is allowed (`None`).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    doc: Option<&DocName>,
    needed: Permission,
) -> Result<Option<Claims>, AppError> {
    let Some(key) = &state.config.auth_key else {
        return Ok(None);
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let now = auth::now_secs();
    let claims = match doc {
        Some(doc) => key.authorize(token, doc.as_str(), needed, now)?,
        None => {
            let claims = key.verify(token.ok_or(AuthError::Missing)?, now)?;
            if claims.perm < needed {
                return Err(AuthError::Insufficient.into());
            }
            claims
        }
    };
    Ok(Some(claims))
}

fn doc_name(raw: &str) -> Result<DocName, AppError> {
    DocName::parse(raw).map_err(|e| AppError::BadRequest(e.to_string()))
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn DocStore>,
    f: impl FnOnce(&dyn DocStore) -> Result<T, quire_storage::StoreError> + Send + 'static,
) -> Result<T, AppError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(e.to_string()))
}

/// One row of `GET /api/docs`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocSummary {
    pub name: String,
    /// Bytes stored for the document (its update log).
    pub bytes: u64,
    /// Entries in its update log.
    pub updates: u64,
    /// Last change, Unix milliseconds (0 if never stored).
    pub modified_ms: u64,
    /// Connections open on it now.
    pub connections: usize,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<DocSummary>>, AppError> {
    let claims = authorize(&state, &headers, None, Permission::Read)?;
    let stored = blocking(&state.store, |store| store.list()).await?;
    let mut live: std::collections::HashMap<String, usize> = state
        .rooms
        .live()
        .into_iter()
        .map(|(name, connections)| (name.to_string(), connections))
        .collect();
    let mut docs: Vec<DocSummary> = stored
        .into_iter()
        .map(
            |DocInfo {
                 name,
                 bytes,
                 updates,
                 modified_ms,
             }| DocSummary {
                connections: live.remove(&name).unwrap_or(0),
                name,
                bytes,
                updates,
                modified_ms,
            },
        )
        .collect();
    // Documents open in an editor but not yet written to are listed too.
    docs.extend(
        live.into_iter()
            .filter(|(_, c)| *c > 0)
            .map(|(name, connections)| DocSummary {
                name,
                bytes: 0,
                updates: 0,
                modified_ms: 0,
                connections,
            }),
    );
    // A token shows only the documents it may read.
    docs.retain(|doc| claims.as_ref().is_none_or(|c| c.covers(&doc.name)));
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(docs))
}

#[derive(Deserialize)]
pub struct SnapshotQuery {
    format: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (Path(raw), Query(query)) = (path?, query?);
    let name = doc_name(&raw)?;
    authorize(&state, &headers, Some(&name), Permission::Read)?;
    let asked = query.format.as_deref().unwrap_or("yjs");
    let Some(format) = Format::parse(asked) else {
        return Err(AppError::BadRequest(format!(
            "unknown format {asked:?}; use yjs, text, json, markdown (md) or html"
        )));
    };
    let title = name.to_string();
    let body = match state.rooms.get(&name) {
        // A live room has the freshest state, pending parts included.
        Some(room) => {
            let state_update = room.snapshot().await?;
            let documents = state.rooms.documents();
            let body = documents
                .run(move || snapshot::render_titled(state_update, format, &title))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            documents.trim_after(body.as_ref().map_or(0, Vec::len));
            body.map_err(|e| AppError::Internal(e.to_string()))?
        }
        None => {
            // Each rebuilds a whole document: only so many at once.
            let Ok(_permit) = state.cold_exports.clone().try_acquire_owned() else {
                return Err(AppError::Busy(format!(
                    "{} exports of documents not in memory are running; try again shortly",
                    state.config.max_cold_exports
                )));
            };
            let doc = name.to_string();
            let stored = blocking(&state.store, move |store| store.load(&doc)).await?;
            let Some(stored) = stored else {
                return Err(AppError::NotFound(format!("no document named {name:?}")));
            };
            // One thread builds the document and renders it: one copy, and
            // what it frees goes back to the allocator as the thread ends.
            let documents = state.rooms.documents();
            let body = documents
                .run(move || {
                    let body = Document::from_updates(stored.updates.iter().map(Vec::as_slice))
                        .and_then(|document| snapshot::render_document(&document, format, &title));
                    drop(stored);
                    body
                })
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            documents.trim_after(body.as_ref().map_or(0, Vec::len));
            body.map_err(|e| {
                AppError::Internal(format!("stored document {name} does not render: {e}"))
            })?
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition(name.as_str(), format.extension())) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `Content-Disposition` for a download of `name` (RFC 6266): an ASCII
/// `filename` for old clients (anything outside letters, digits, `-_. `
/// becomes `_`) and the exact name as `filename*` (RFC 5987).
pub fn disposition(name: &str, extension: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = utf8_percent_encode(name, NOT_UNRESERVED);
    format!("attachment; filename=\"{ascii}.{extension}\"; filename*=UTF-8''{exact}.{extension}")
}

#[derive(Serialize)]
pub struct ImportResult {
    /// False when the update held nothing the document did not have.
    pub changed: bool,
}

pub async fn import(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportResult>, AppError> {
    let (Path(raw), body) = (path?, body?);
    let name = doc_name(&raw)?;
    authorize(&state, &headers, Some(&name), Permission::Write)?;
    let format = body_format(&headers)?;
    let changed = import_into(&state, &name, format, body).await?;
    Ok(Json(ImportResult { changed }))
}

/// What the request's `Content-Type` says its body is (415 otherwise).
fn body_format(headers: &HeaderMap) -> Result<ImportFormat, AppError> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            AppError::UnsupportedType("the Content-Type header is not ASCII".into())
        })?),
    };
    Ok(ImportFormat::from_content_type(content_type)?)
}

/// Merges `body` into the document through its room, answering once the
/// change is durable. A Yjs update goes to the room as it is; any other
/// format is converted into an update off the room's task (on a blocking
/// thread, against a replica of the room's state: a big file never holds
/// up the room or a worker other rooms need).
async fn import_into(
    state: &AppState,
    name: &DocName,
    format: ImportFormat,
    body: Bytes,
) -> Result<bool, AppError> {
    let update = if format == ImportFormat::Yjs {
        body
    } else {
        let current = state
            .rooms
            .with_room(name, |room| async move { room.snapshot().await })
            .await?;
        let documents = state.rooms.documents();
        let size = body.len();
        let update = documents
            .run(move || import::to_update(Some(&current), format, &body))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        documents.trim_after(size);
        update?.into()
    };
    let size = update.len();
    let changed = state
        .rooms
        .with_room(name, |room| {
            let update = update.clone();
            async move { room.import(update).await }
        })
        .await;
    drop(update);
    // What the room's apply freed (the decoded update, its delta).
    state.rooms.documents().trim_after(size);
    Ok(changed?)
}

/// Names being created by `POST /api/docs` right now: a name is claimed
/// before the check that it is free and released when the request ends,
/// so two requests for one name cannot both find it free.
#[derive(Default)]
pub struct Creating {
    names: Mutex<HashSet<DocName>>,
}

/// A claim on a name; dropping it releases the name.
pub struct Claim<'a> {
    creating: &'a Creating,
    name: DocName,
}

impl Creating {
    fn claim(&self, name: &DocName) -> Option<Claim<'_>> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.insert(name.clone()).then(|| Claim {
            creating: self,
            name: name.clone(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut names = self
            .creating
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        names.remove(&self.name);
    }
}

#[derive(Deserialize)]
pub struct CreateQuery {
    name: Option<String>,
}

/// What `POST /api/docs` answers.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Created {
    pub name: String,
}

/// `POST /api/docs?name=DOC`: a new document holding the body (in any
/// format `PUT .../snapshot` takes); 409 if the name is taken, stored or
/// live.
pub async fn create(
    State(state): State<AppState>,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (Query(query), body) = (query?, body?);
    let Some(raw) = query.name.filter(|n| !n.is_empty()) else {
        return Err(AppError::BadRequest(
            "name the new document: POST /api/docs?name=NAME".into(),
        ));
    };
    let name = doc_name(&raw)?;
    authorize(&state, &headers, Some(&name), Permission::Write)?;
    let format = body_format(&headers)?;
    let taken = || AppError::Conflict(format!("a document named {name:?} already exists"));
    let Some(_claim) = state.creating.claim(&name) else {
        return Err(taken());
    };
    let doc = name.to_string();
    let stored = blocking(&state.store, move |store| store.info(&doc))
        .await?
        .is_some();
    // Live: open in an editor (a room left by a refused import, with no
    // one in it and nothing stored, does not count).
    let live = state
        .rooms
        .get(&name)
        .is_some_and(|room| room.members() > 0);
    if stored || live {
        return Err(taken());
    }
    import_into(&state, &name, format, body).await?;
    let location = format!("/d/{}", utf8_percent_encode(name.as_str(), NOT_UNRESERVED));
    let mut response = (
        StatusCode::CREATED,
        Json(Created {
            name: name.to_string(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let Path(raw) = path?;
    let name = doc_name(&raw)?;
    authorize(&state, &headers, Some(&name), Permission::Admin)?;
    let doc = name.to_string();
    let stored = blocking(&state.store, move |store| store.info(&doc))
        .await?
        .is_some();
    if !stored && state.rooms.get(&name).is_none() {
        return Err(AppError::NotFound(format!("no document named {name:?}")));
    }
    state
        .rooms
        .with_room(&name, |room| async move { room.delete().await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Readiness, for a load balancer's health checks. One node on sled is
/// ready at once. A node of a cluster answers 503 until its Redis reader
/// is connected and its store is not stalled (the PostgreSQL pool applied
/// the migrations before the server listened), then 200 from then on: when
/// the shared Redis or database fails, every node fails together, and
/// taking them all out of the proxy would turn a degraded cluster (each
/// node still serving and relaying to its own clients, catching up later)
/// into an outage. What is degraded meanwhile is said in the body.
pub async fn healthz(State(state): State<AppState>) -> Response {
    use std::sync::atomic::Ordering;
    let mut waiting = Vec::new();
    if !state.fanout.is_ready() {
        waiting.push("the Redis stream reader is not connected".to_owned());
    }
    if let Some(why) = state.store.health().stalled {
        waiting.push(format!("the store is not confirming writes: {why}"));
    }
    if waiting.is_empty() {
        state.has_been_ready.store(true, Ordering::Relaxed);
        return "ok\n".into_response();
    }
    let waiting = waiting.join("; ");
    if state.has_been_ready.load(Ordering::Relaxed) {
        format!("ok, degraded: {waiting}\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting: {waiting}\n"),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
