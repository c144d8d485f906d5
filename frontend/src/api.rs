//! The server's HTTP API (`/api/docs...`), over `fetch`.

use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestCache, RequestInit, Response};

use crate::browser::window;
use crate::files::disposition_filename;
use crate::token::{TOKEN_REFUSED, token};
use crate::urls::encode_component;

/// One row of `GET /api/docs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DocSummary {
    pub name: String,
    pub bytes: u64,
    #[serde(default)]
    pub updates: u64,
    pub modified_ms: u64,
    pub connections: u64,
}

/// Why a request failed, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn network(err: JsValue) -> Self {
        let detail = err
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .unwrap_or_default();
        Self {
            status: 0,
            message: if detail.is_empty() {
                "the server cannot be reached".into()
            } else {
                format!("the server cannot be reached ({detail})")
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The server's error body: `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

async fn send(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, ApiError> {
    send_typed(method, url, body.map(|b| (b, "application/octet-stream"))).await
}

/// [`send`] with the body's `Content-Type`.
async fn send_typed(
    method: &str,
    url: &str,
    body: Option<(&[u8], &str)>,
) -> Result<Response, ApiError> {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_cache(RequestCache::NoStore);
    let headers = web_sys::Headers::new().map_err(ApiError::network)?;
    if let Some(token) = token() {
        headers
            .set("Authorization", &format!("Bearer {token}"))
            .map_err(ApiError::network)?;
    }
    if let Some((_, content_type)) = body {
        headers
            .set("Content-Type", content_type)
            .map_err(ApiError::network)?;
    }
    init.set_headers(&headers);
    let body = body.map(|(bytes, _)| bytes);
    if let Some(body) = body {
        let array = js_sys::Uint8Array::from(body);
        init.set_body(&array);
    }
    let response: Response = JsFuture::from(window().fetch_with_str_and_init(url, &init))
        .await
        .map_err(ApiError::network)?
        .unchecked_into();
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
    let text = match response.text() {
        Ok(promise) => JsFuture::from(promise)
            .await
            .ok()
            .and_then(|t| t.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let message = if status == 401 || status == 403 {
        TOKEN_REFUSED.to_owned()
    } else {
        serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| format!("the server answered {status}"))
    };
    Err(ApiError { status, message })
}

async fn text_of(response: Response) -> Result<String, ApiError> {
    let promise = response.text().map_err(ApiError::network)?;
    JsFuture::from(promise)
        .await
        .map_err(ApiError::network)?
        .as_string()
        .ok_or_else(|| ApiError {
            status: 0,
            message: "unreadable response".into(),
        })
}

async fn bytes_of(response: Response) -> Result<Vec<u8>, ApiError> {
    let promise = response.array_buffer().map_err(ApiError::network)?;
    let buffer = JsFuture::from(promise).await.map_err(ApiError::network)?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

pub async fn list_docs() -> Result<Vec<DocSummary>, ApiError> {
    let response = send("GET", "/api/docs", None).await?;
    let text = text_of(response).await?;
    serde_json::from_str(&text).map_err(|e| ApiError {
        status: 0,
        message: format!("unexpected document list: {e}"),
    })
}

fn snapshot_url(name: &str, format: &str) -> String {
    format!(
        "/api/docs/{}/snapshot?format={format}",
        encode_component(name)
    )
}

/// `format` is `yjs`, `text`, `json`, `markdown` or `html`.
pub async fn snapshot(name: &str, format: &str) -> Result<Vec<u8>, ApiError> {
    Ok(snapshot_file(name, format).await?.bytes)
}

/// A document exported by the server, as a file to download.
pub struct Exported {
    pub bytes: Vec<u8>,
    /// The name the server's `Content-Disposition` gives, if any.
    pub file_name: Option<String>,
}

/// [`snapshot`] with the file name the server suggests.
pub async fn snapshot_file(name: &str, format: &str) -> Result<Exported, ApiError> {
    let response = send("GET", &snapshot_url(name, format), None).await?;
    let file_name = response
        .headers()
        .get("Content-Disposition")
        .ok()
        .flatten()
        .and_then(|h| disposition_filename(&h));
    Ok(Exported {
        bytes: bytes_of(response).await?,
        file_name,
    })
}

/// `POST /api/docs?name=`: a new document holding `body` (of
/// `content_type`); the server's name for it. 409 when the name is taken.
pub async fn create_doc(name: &str, content_type: &str, body: &[u8]) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    struct Created {
        name: String,
    }
    let url = format!("/api/docs?name={}", encode_component(name));
    let response = send_typed("POST", &url, Some((body, content_type))).await?;
    let text = text_of(response).await?;
    serde_json::from_str::<Created>(&text)
        .map(|c| c.name)
        .map_err(|e| ApiError {
            status: 0,
            message: format!("unexpected answer to the import: {e}"),
        })
}

/// Merges a Yjs update into a document (creating it).
pub async fn put_snapshot(name: &str, update: &[u8]) -> Result<(), ApiError> {
    send("PUT", &snapshot_url(name, "yjs"), Some(update)).await?;
    Ok(())
}

pub async fn delete_doc(name: &str) -> Result<(), ApiError> {
    send(
        "DELETE",
        &format!("/api/docs/{}", encode_component(name)),
        None,
    )
    .await?;
    Ok(())
}

/// Renames a document. The server has no rename endpoint, so this is
/// "export the old document as a Yjs snapshot → PUT it under the new name →
/// DELETE the old one". The copy keeps the full CRDT state, so clients that
/// reconnect to the new name merge cleanly; editors still open on the old
/// name are closed with 4404 (deleted) and told so. Not atomic: if the
/// delete fails, both names exist and the error says so.
pub async fn rename_doc(old: &str, new: &str) -> Result<(), ApiError> {
    let state = snapshot(old, "yjs").await?;
    put_snapshot(new, &state).await?;
    delete_doc(old).await.map_err(|e| ApiError {
        status: e.status,
        message: format!("copied to {new:?}, but the old name could not be removed: {e}"),
    })
}
