//! The web app's files: `index.html` for `/` and every editor URL
//! `/d/{doc}` (so deep links and reloads work), content-hashed assets with
//! year-long immutable caching, and the service worker at the root scope.
//! `index.html` and `sw.js` are never cached, so a new build is picked up
//! on the next load.
//!
//! The files come from `--static-dir` (built by `cargo xtask web`). Without
//! it, `/` explains how to build the app; the API and rooms work either way.

use std::path::Path;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Html;
use axum::routing::get;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;

const NO_CACHE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Routes for the web app, served from `dir` when given.
pub fn routes(dir: Option<&Path>) -> Router<AppState> {
    let Some(dir) = dir else {
        return Router::new().route("/", get(not_built));
    };
    let index = ServeFile::new(dir.join("index.html"));
    let no_cache = || {
        SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static(NO_CACHE),
        )
    };
    Router::new()
        .route_service("/", index.clone())
        .route_service("/d/{doc}", index)
        .route_service("/sw.js", ServeFile::new(dir.join("sw.js")))
        .layer(no_cache())
        .nest_service(
            "/assets",
            Router::new()
                .fallback_service(ServeDir::new(dir.join("assets")))
                .layer(SetResponseHeaderLayer::overriding(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(IMMUTABLE),
                )),
        )
}

async fn not_built() -> Html<&'static str> {
    Html(
        "<!doctype html><meta charset=utf-8><title>Quire</title>\
         <h1>Quire is running</h1>\
         <p>The web app is not being served: start Quire with <code>cargo xtask serve</code>, \
         which builds it, or pass <code>--static-dir</code> to <code>quire serve</code>.</p>\
         <p>Rooms are at <code>/ws/&lt;document&gt;</code>; documents are listed at \
         <a href=/api/docs>/api/docs</a>.</p>",
    )
}
