//! Kiln's HTTP API: the axum router, authentication, the error envelope, handlers and the
//! OpenAPI document generated from them. Handlers are thin: extract, authorize, call one
//! catalog or service function, map the result.

pub mod auth;
mod console;
pub mod context;
pub mod error;
pub mod extractors;
mod idempotency;
mod ingest;
pub mod metrics;
mod openapi;
mod routes;
mod search;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use kiln_blobs::Blobs;
use kiln_catalog::Catalog;
use kiln_core::ErrorCode;
use kiln_core::config::HttpConfig;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use metrics::Metrics;
pub use routes::UploadSigner;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Catalog,
    pub blobs: Blobs,
    pub index: Arc<kiln_index::ChunkIndex>,
    /// On a cluster's API node, what keeps `index` in step with the catalog's index log;
    /// searches wait for it to catch up (read-your-writes).
    pub replica: Option<Arc<kiln_replica::Replica>>,
    pub embedder: Arc<dyn kiln_embed::Embedder>,
    /// Wakes the workers when work arrives.
    pub waker: kiln_pipeline::Waker,
    pub metrics: Arc<Metrics>,
    pub http: Arc<HttpConfig>,
    /// Signs and checks upload URLs.
    pub upload_signer: Arc<UploadSigner>,
    /// Each store's searchable files, reused until the store's search version moves.
    pub searchable: Arc<search::SearchableCache>,
    /// Live feeds of file events for the event streams.
    pub events: kiln_events::EventHub,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The whole API plus `extra` routes, served behind the same layers (tests use this to check
/// that the layers hold for any handler, e.g. one that panics).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (api, openapi) = routes::api().split_for_parts();
    let timeout =
        context::RequestTimeout(Duration::from_secs(state.http.request_timeout_secs.max(1)));
    let json_limit = usize::try_from(state.http.max_json_body_bytes).unwrap_or(usize::MAX);
    api.merge(extra)
        .merge(openapi::docs(openapi))
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(from_fn_with_state(state.clone(), idempotency::layer))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(from_fn_with_state(timeout, context::request_context))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::ResourceNotFound, "No such route").detail("path", uri.path())
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("Method {method} is not allowed on this route"),
    )
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    // The panic's message may hold internals: it goes to the log only.
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}
