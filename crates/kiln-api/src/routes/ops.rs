//! Operations endpoints (contract §12): no key needed, except `/metrics` when configured.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_core::ErrorCode;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "Operations",
    responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The catalog, blob storage and embedding model answer.
#[utoipa::path(get, path = "/ready", tag = "Operations",
    responses((status = 200, description = "Ready"), (status = 503, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn ready(
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let catalog = app.catalog.ping().await.is_ok();
    let storage = app.blobs.ping().await.is_ok();
    // The model is loaded before the server starts listening; its vectors must fit the index.
    let model = app.embedder.dimensions() == app.index.dimensions();
    let mut checks = json!({ "catalog": catalog, "storage": storage, "model": model });
    // A cluster node: how far its index replica is behind the catalog's log.
    let index = match &app.replica {
        Some(replica) => {
            let synced = replica.catch_up(std::time::Duration::from_secs(5)).await;
            checks["index"] = json!({
                "applied": replica.applied(),
                "behind": replica.behind(),
                "opened": replica.opened,
                "error": synced.as_ref().err().map(ToString::to_string),
            });
            synced.is_ok()
        }
        None => true,
    };
    if catalog && storage && model && index {
        Ok(Json(json!({ "status": "ready", "checks": checks })))
    } else {
        Err(ApiError::new(ErrorCode::ServiceUnavailable, "Not ready").detail("checks", checks))
    }
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "Operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if app.http.metrics_require_key {
        crate::auth::authenticate(&headers, &app).await?;
    }
    if let Some(replica) = &app.replica {
        // The lag against the head as it is now, not as last seen.
        let _ = replica.catch_up(std::time::Duration::ZERO).await;
        app.metrics.set_replica(replica.applied(), replica.behind());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response())
}
