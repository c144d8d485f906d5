//! Reading an HTTP request's body within a deadline.
//!
//! hyper bounds how long a client may take to send a request's headers
//! (`--header-timeout`), but not its body: a client that announces a
//! 16 MiB import and then sends a byte a second holds its connection, its
//! admission slot and a growing buffer for days. [`read_in_time`] reads
//! every request body (of the methods that carry one) completely before the
//! handler runs, and answers 408 when it has not arrived within
//! `--message-timeout` — the same bound a WebSocket message has once it
//! started, so an import takes no longer over HTTP than over the socket —
//! or 413 as soon as it passes `--max-message-bytes` (at once when the
//! announced `Content-Length` does), without reading on.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::debug;

use crate::AppState;
use crate::api::AppError;

/// Middleware: the body read in full within `--message-timeout`, then the
/// request passed on with that body (its extensions, the WebSocket upgrade
/// among them, untouched).
pub async fn read_in_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let limit = state.config.max_message_bytes;
    let deadline = state.config.message_timeout;
    if announced_length(&request).is_some_and(|length| length > limit as u64) {
        return too_large(limit);
    }
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) if is_over_limit(&err) => return too_large(limit),
        Ok(Err(err)) => {
            debug!(%err, "request body broke off");
            return AppError::BadRequest(format!("the request body broke off: {err}"))
                .into_response();
        }
        Err(_) => {
            debug!(?deadline, uri = %parts.uri.path(), "request body too slow");
            return AppError::Timeout(format!(
                "the request body did not arrive within {} (--message-timeout)",
                humantime::format_duration(deadline)
            ))
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The body's `Content-Length`, when the client announced one.
fn announced_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// 413, from the announced length before any of the body is read, or as
/// soon as what arrived passes the limit.
fn too_large(limit: usize) -> Response {
    AppError::TooLarge(format!(
        "the request body is larger than {limit} bytes (--max-message-bytes)"
    ))
    .into_response()
}

/// Whether `to_bytes` stopped at the limit (http-body-util's `LengthLimitError`
/// somewhere in the chain), rather than for a broken connection.
fn is_over_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
