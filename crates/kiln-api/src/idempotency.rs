//! `Idempotency-Key` on POSTs: the first request with a key runs; its answer is kept for a
//! day (per caller: the key is scoped by the credential's hash) and replayed to every re-send
//! with the same key, with `Idempotent-Replayed: true`. A re-send while the first still runs
//! gets 409 `IDEMPOTENCY_KEY_IN_USE` with `Retry-After: 1`; the same key on another method or
//! path gets 422 `IDEMPOTENCY_KEY_MISMATCH`. Answers a re-send may change (5xx, 408, 409, 429,
//! 401, 403) are not kept: the key runs again.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_catalog::{IdempotencyClaim, StoredResponse};
use kiln_core::ErrorCode;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

pub(crate) const HEADER: &str = "idempotency-key";
/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;
/// Largest answer kept (the family's answers are small JSON).
const MAX_KEPT_BODY: usize = 4 * 1024 * 1024;

/// Releases a claimed key if its request never finished (the client went away, the request
/// timed out), so a re-send runs instead of waiting for the claim to be taken over.
struct Claim {
    app: AppState,
    scope: String,
    key: String,
    settled: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            let (catalog, scope, key) = (
                self.app.catalog.clone(),
                std::mem::take(&mut self.scope),
                std::mem::take(&mut self.key),
            );
            tokio::spawn(async move {
                let _ = catalog.release_idempotency_key(&scope, &key).await;
            });
        }
    }
}

pub(crate) async fn layer(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => k.to_string(),
        _ => {
            return ApiError::new(
                ErrorCode::InvalidRequest,
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
            .into_response();
        }
    };
    // Without a credential the handler answers 401 itself; nothing to remember.
    let Ok(credential) = crate::auth::key_value(request.headers()) else {
        return next.run(request).await;
    };
    let scope = hex::encode(Sha256::digest(credential.as_bytes()));
    let fingerprint = format!("{} {}", request.method(), request.uri().path());
    // A claim whose process died is taken over after the longest a request may run.
    let abandoned_after = Duration::from_secs(app.http.request_timeout_secs.max(1) * 10 + 60);
    let claim = app
        .catalog
        .claim_idempotency_key(&scope, &key, &fingerprint, abandoned_after)
        .await;
    match claim {
        Err(err) => ApiError::from(err).into_response(),
        Ok(IdempotencyClaim::Replay(stored)) => replay(stored),
        Ok(IdempotencyClaim::InProgress) => {
            let mut err = ApiError::new(
                ErrorCode::IdempotencyKeyInUse,
                "A request with this Idempotency-Key is still running; its answer will be replayed once it finishes",
            );
            err.retry_after_secs = Some(1);
            err.into_response()
        }
        Ok(IdempotencyClaim::Mismatch) => ApiError::new(
            ErrorCode::IdempotencyKeyMismatch,
            "This Idempotency-Key was used for another request (method and path); use a new key",
        )
        .detail("request", fingerprint)
        .into_response(),
        Ok(IdempotencyClaim::Run) => {
            let mut claim = Claim {
                app: app.clone(),
                scope,
                key,
                settled: false,
            };
            let response = next.run(request).await;
            let status = response.status();
            if !keeps(status) {
                return response;
            }
            let (parts, body) = response.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_KEPT_BODY).await else {
                return ApiError::internal().into_response();
            };
            let stored = StoredResponse {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            };
            match app
                .catalog
                .finish_idempotency_key(&claim.scope, &claim.key, &stored)
                .await
            {
                Ok(()) => claim.settled = true,
                Err(err) => tracing::warn!(error = %err, "could not keep an idempotent answer"),
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// Whether an answer is final for its key (kept and replayed).
fn keeps(status: StatusCode) -> bool {
    !(status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 408 | 409 | 429))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
