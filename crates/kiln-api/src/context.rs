//! Per-request context: the request ID (echoed or generated, returned as `x-request-id` and
//! used as every envelope's `trace_id`), a time limit, and a last guard that turns any error
//! response not already in the envelope (from a layer or the framework) into one.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_core::ErrorCode;
use rand::Rng;

use crate::error::{ApiError, Enveloped};

pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's ID, or a fresh one outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_request_id())
}

fn new_request_id() -> String {
    format!("req_{:032x}", rand::rng().random::<u128>())
}

/// A client's own request ID is echoed if it is short, visible ASCII.
fn client_request_id(request: &Request) -> Option<String> {
    let value = request.headers().get(&REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_string())
}

/// The time limit for a request, set per router.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

pub async fn request_context(
    axum::extract::State(timeout): axum::extract::State<RequestTimeout>,
    request: Request,
    next: Next,
) -> Response {
    let id = client_request_id(&request).unwrap_or_else(new_request_id);
    // Uploads stream many MiB (and registering assembles them): ten times the time.
    let path = request.uri().path();
    let limit = if path.ends_with("/files/upload")
        || path.ends_with("/files/register")
        || path.starts_with("/v1/uploads/")
    {
        timeout.0 * 10
    } else {
        timeout.0
    };
    let mut response = REQUEST_ID
        .scope(id.clone(), async move {
            let response = match tokio::time::timeout(limit, next.run(request)).await {
                Ok(response) => response,
                Err(_) => ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("The request took longer than {} s", limit.as_secs()),
                )
                .into_response(),
            };
            ensure_envelope(response)
        })
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(&REQUEST_ID_HEADER, value);
    }
    response
}

/// Replaces an error response that is not an envelope by the envelope for its status.
fn ensure_envelope(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<Enveloped>().is_some()
    {
        return response;
    }
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::AuthenticationRequired,
        StatusCode::NOT_FOUND => ErrorCode::ResourceNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::ValidationError,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimitExceeded,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
        s if s.is_client_error() => ErrorCode::InvalidRequest,
        _ => ErrorCode::InternalError,
    };
    let reason = status.canonical_reason().unwrap_or("error");
    let mut fresh = ApiError::new(code, reason).into_response();
    // Keep the framework's headers that matter to clients (e.g. `allow` on a 405).
    for (name, value) in response.headers() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}
