//! File lifecycle events: a Server-Sent Events stream per organization, and webhook
//! endpoints that receive the same events (README "Events"). Reading needs `reader`;
//! managing webhooks needs `admin`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_catalog::{EventFilter, Webhook};
use kiln_core::types::EventType;
use kiln_core::{ErrorCode, FileId, OrgId, StoreId};
use kiln_events::StartError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Admin, Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope, not_found_as};
use crate::extractors::{ApiJson, ApiPath, ApiQuery};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only this store's events.
    store_id: Option<StoreId>,
    /// Only this file's events.
    file_id: Option<FileId>,
    /// Comma-separated event types (e.g. `file.completed,file.failed`); default all.
    types: Option<String>,
    /// Replay events after this position, then follow. A `Last-Event-ID` header (sent by
    /// browsers when they reconnect) takes precedence. Without either: from now.
    after: Option<i64>,
    /// `false`: end the stream once the replay is done instead of following (default true).
    follow: Option<bool>,
}

fn parse_types(text: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for name in text.unwrap_or("").split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        if EventType::parse(name).is_none() {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(ApiError::field(
                "types",
                format!("unknown event type {name:?}; known: {}", known.join(", ")),
            ));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "Last-Event-ID must be an event's position (a whole number ≥ 0)",
                )
            }),
    }
}

/// Stream file events (Server-Sent Events). Each event is `id: <position>`, `event: <type>`,
/// `data: <event JSON>`; a keep-alive comment every 15 s. Events are in position order, each
/// once; progress is coalesced to at most 4 per second per file.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/events",
    tag = "Events", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position")),
    responses(
        (status = 200, description = "A `text/event-stream` of events", content_type = "text/event-stream", body = FileEvent),
        (status = 410, description = "The position asked for was removed by retention: resync", body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn stream_events(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let filter = EventFilter {
        store_id: query.store_id,
        file_id: query.file_id,
        types: parse_types(query.types.as_deref())?,
    };
    let after = match last_event_id(&headers)? {
        Some(id) => Some(id),
        None => query.after.filter(|n| *n >= 0),
    };
    if query.after.is_some_and(|n| n < 0) {
        return Err(ApiError::field("after", "must be ≥ 0"));
    }
    let stream = match app
        .events
        .subscribe(auth.organization_id(), after, filter)
        .await
    {
        Ok(stream) => stream,
        Err(StartError::Expired { oldest }) => {
            return Err(ApiError::new(
                ErrorCode::EventsExpired,
                format!(
                    "Events after {} are no longer kept (retention). Resync: read the current \
                     state (list the files), then subscribe without `after` to follow from now, \
                     or resume from {oldest} or later.",
                    after.unwrap_or(0)
                ),
            )
            .detail("oldest_available_after", oldest));
        }
        Err(StartError::Catalog(err)) => return Err(err.into()),
    };
    let stream = if query.follow == Some(false) {
        stream.replay_only()
    } else {
        stream
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        let sse = SseEvent::default()
            .id(event.seq.to_string())
            .event(event.event_type.clone())
            .data(event.to_json().to_string());
        Some((Ok::<_, Infallible>(sse), stream))
    });
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Proxies must pass events on as they come.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

/// An event as the stream and webhooks send it.
#[derive(Serialize, ToSchema)]
pub(crate) struct FileEvent {
    /// The event's position in its organization's stream, as text (the SSE `id`).
    id: String,
    seq: i64,
    /// `file.uploaded`, `file.queued`, `file.step_started`, `file.progress`,
    /// `file.completed`, `file.failed`, `file.retried`, `file.deleted`, `file.purged`,
    /// `store.deleted`.
    #[serde(rename = "type")]
    event_type: String,
    organization_id: OrgId,
    store_id: Option<StoreId>,
    file_id: Option<FileId>,
    created_at: String,
    /// The file's state after the change (`file_name`, `status`, `current_step`,
    /// `progress_percent`, `attempt`, `chunk_count`, `error_code`, `error_message`) and
    /// fields of the event's type (e.g. `reason` of `file.queued`).
    data: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateWebhook {
    /// Where events are POSTed (`http` or `https`).
    url: String,
    /// Event types to send; empty or absent: all.
    #[serde(default)]
    event_types: Vec<String>,
}

/// A webhook endpoint.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookView {
    id: String,
    url: String,
    event_types: Vec<String>,
    created_at: String,
    /// The last event position handled (delivered, skipped or abandoned).
    delivered_through: i64,
    /// Failed tries of the next event (0: healthy).
    failing_attempts: i64,
    /// The signing secret: only in the answer to the request that created the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookView {
    fn of(hook: Webhook, secret: Option<String>) -> Self {
        WebhookView {
            id: hook.id,
            url: hook.url,
            event_types: hook.event_types,
            created_at: hook.created_at.to_rfc3339(),
            delivered_through: hook.cursor_seq,
            failing_attempts: hook.attempt,
            secret,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookList {
    items: Vec<WebhookView>,
}

#[derive(Deserialize)]
pub(crate) struct WebhookRef {
    webhook_id: String,
}

fn check_url(url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && url
            .parse::<axum::http::Uri>()
            .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "url",
            "must be an absolute http:// or https:// URL of at most 2048 characters",
        ))
    }
}

/// Register a webhook endpoint: events from now on are POSTed to it, signed with the secret
/// in this answer (shown once). See README "Webhooks" for the signature.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/webhooks",
    tag = "Events", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)),
    request_body = CreateWebhook,
    responses((status = 201, body = WebhookView), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_webhook(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    check_url(&body.url)?;
    let types = parse_types(Some(&body.event_types.join(",")))
        .map_err(|_| ApiError::field("event_types", "contains an unknown event type"))?;
    let (hook, secret) = app
        .catalog
        .create_webhook(auth.organization_id(), &body.url, &types, auth.key_id())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookView::of(hook, Some(secret))),
    ))
}

/// List webhook endpoints (without their secrets).
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/webhooks",
    tag = "Events", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)),
    responses((status = 200, body = WebhookList), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_webhooks(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
) -> Result<Json<WebhookList>, ApiError> {
    let hooks = app.catalog.list_webhooks(auth.organization_id()).await?;
    Ok(Json(WebhookList {
        items: hooks
            .into_iter()
            .map(|h| WebhookView::of(h, None))
            .collect(),
    }))
}

/// Get a webhook endpoint.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/webhooks/{webhook_id}",
    tag = "Events", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_webhook(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(WebhookRef { webhook_id }): ApiPath<WebhookRef>,
) -> Result<Json<WebhookView>, ApiError> {
    let hook = app
        .catalog
        .get_webhook(auth.organization_id(), &webhook_id)
        .await
        .map_err(not_found_as("webhook_id", &webhook_id))?;
    Ok(Json(WebhookView::of(hook, None)))
}

/// Delete a webhook endpoint: nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/webhooks/{webhook_id}",
    tag = "Events", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_webhook(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(WebhookRef { webhook_id }): ApiPath<WebhookRef>,
) -> Result<StatusCode, ApiError> {
    app.catalog
        .delete_webhook(auth.organization_id(), &webhook_id)
        .await
        .map_err(not_found_as("webhook_id", &webhook_id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    id: String,
    /// The event's position.
    event_id: String,
    event_type: String,
    /// This event's try at this endpoint, from 1.
    attempt: i64,
    /// `delivered`, `failed` (tried again later) or `abandoned` (failed for longer than
    /// deliveries are retried).
    outcome: String,
    status_code: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    items: Vec<DeliveryView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// 1–1000, default 100.
    limit: Option<i64>,
}

/// A webhook endpoint's delivery log, newest first.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/webhooks/{webhook_id}/deliveries",
    tag = "Events", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("webhook_id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn webhook_deliveries(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(WebhookRef { webhook_id }): ApiPath<WebhookRef>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1–1000"));
    }
    let log = app
        .catalog
        .webhook_deliveries(auth.organization_id(), &webhook_id, limit)
        .await
        .map_err(not_found_as("webhook_id", &webhook_id))?;
    Ok(Json(DeliveryList {
        items: log
            .into_iter()
            .map(|d| DeliveryView {
                id: d.id,
                event_id: d.event_seq.to_string(),
                event_type: d.event_type,
                attempt: d.attempt,
                outcome: d.outcome,
                status_code: d.status_code,
                error: d.error,
                duration_ms: d.duration_ms,
                created_at: d.created_at.to_rfc3339(),
            })
            .collect(),
    }))
}
