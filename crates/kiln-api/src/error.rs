//! The error envelope (contract §3): every non-2xx answer is one of these.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_catalog::{CatalogError, Resource};
use kiln_core::{ErrorCode, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::context;

/// A field-level validation problem.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error on its way to becoming an envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub system_message: String,
    pub details: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

/// Marks a response whose body is already an envelope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Enveloped;

impl ApiError {
    pub fn new(code: ErrorCode, system_message: impl Into<String>) -> Self {
        ApiError {
            code,
            system_message: system_message.into(),
            details: Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// Adds `key: value` to the details of a 404 (naming what was not found).
    pub fn detail_if_not_found(self, key: &str, value: &str) -> Self {
        if self.code.status() == 404 {
            self.detail(key, value)
        } else {
            self
        }
    }

    pub fn validation(fields: Vec<FieldError>) -> Self {
        let summary = fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError::new(ErrorCode::ValidationError, summary).detail("fields", json!(fields))
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn internal() -> Self {
        ApiError::new(ErrorCode::InternalError, "Internal server error")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The envelope's JSON, for the current request.
    pub fn envelope(&self) -> Value {
        let status = self.code.status();
        json!({
            "success": false,
            "error": {
                "code": self.code,
                "message": self.code.public_message(),
                "system_message": self.system_message,
                "type": if status >= 500 { "server_error" } else { "client_error" },
                "status": status,
                "details": self.details,
                "trace_id": context::current_request_id(),
                "timestamp": Timestamp::now(),
            }
        })
    }
}

/// Maps a catalog error about one record: a 404 names it, `{key: id}` in its details (the
/// one helper for every such lookup; files in a store have [`file_not_found`]).
pub(crate) fn not_found_as<'a>(
    key: &'a str,
    id: &'a str,
) -> impl FnOnce(CatalogError) -> ApiError + 'a {
    move |err| ApiError::from(err).detail_if_not_found(key, id)
}

/// Maps a catalog error about a store: a 404 names the store under `key`.
pub(crate) fn store_not_found<'a>(
    key: &'a str,
    store_id: &'a str,
) -> impl FnOnce(CatalogError) -> ApiError + 'a {
    not_found_as(key, store_id)
}

/// Maps a catalog error about a file in a store: a missing file names the file and the store
/// (under `store_key`), a missing store the store.
pub(crate) fn file_not_found<'a>(
    store_key: &'a str,
    store_id: &'a str,
    file_id: &'a str,
) -> impl FnOnce(CatalogError) -> ApiError + 'a {
    move |err| match err {
        CatalogError::NotFound(kiln_catalog::Resource::File) => ApiError::from(err)
            .detail("file_id", file_id)
            .detail(store_key, store_id),
        other => ApiError::from(other).detail_if_not_found(store_key, store_id),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.envelope())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(Enveloped);
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::NotFound(resource) => {
                let (code, what) = match resource {
                    Resource::Organization => (ErrorCode::OrganizationNotFound, "Organization"),
                    Resource::Slice => (ErrorCode::SliceNotFound, "Knowledge slice"),
                    Resource::Store => (ErrorCode::VectorStoreNotFound, "Vector store"),
                    Resource::ApiKey => (ErrorCode::ResourceNotFound, "API key"),
                    Resource::File => (ErrorCode::FileNotInStore, "File not found in this store"),
                    Resource::OrgFile => (ErrorCode::FileNotFound, "File"),
                    Resource::Upload => (ErrorCode::UploadNotFound, "Upload"),
                    Resource::Webhook => (ErrorCode::WebhookNotFound, "Webhook"),
                };
                let message = if resource == Resource::File {
                    what.to_string()
                } else {
                    format!("{what} not found")
                };
                ApiError::new(code, message)
            }
            CatalogError::SliceArchived => {
                ApiError::new(ErrorCode::SliceArchived, "The knowledge slice is archived")
            }
            CatalogError::Unavailable(err) => {
                tracing::error!(error = %err, "catalog unavailable");
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "The catalog is busy or closed",
                )
            }
            other => {
                // Internals stay in the log, never in the envelope.
                tracing::error!(error = %other, "catalog failure");
                ApiError::internal()
            }
        }
    }
}

impl From<kiln_blobs::BlobError> for ApiError {
    fn from(err: kiln_blobs::BlobError) -> Self {
        tracing::error!(error = %err, "blob storage failure");
        if err.is_storage_full() {
            return ApiError::new(
                ErrorCode::ServiceUnavailable,
                "Blob storage is full: nothing of this request was kept. Free space or add storage, then try again.",
            )
            .detail("reason", "storage_full");
        }
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Blob storage is not available",
        )
    }
}

/// The envelope's shape, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Safe to show a person.
    pub message: String,
    /// Technical; never contains internals.
    pub system_message: String,
    /// `client_error` (4xx) or `server_error` (5xx).
    #[serde(rename = "type")]
    pub error_type: String,
    pub status: u16,
    /// Context; for `VALIDATION_ERROR`, `fields: [{field, message}]`.
    pub details: Value,
    /// Equal to the `x-request-id` response header.
    pub trace_id: String,
    pub timestamp: Timestamp,
}
