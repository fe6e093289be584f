//! The error codes of the contract (§3), each with its HTTP status and a message that is safe
//! to show a person.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    AuthenticationRequired,
    InvalidApiKey,
    OrganizationAccessDenied,
    InsufficientPermissions,
    OrganizationNotFound,
    SliceNotFound,
    VectorStoreNotFound,
    FileNotInStore,
    FileNotFound,
    UploadNotFound,
    WebhookNotFound,
    ResourceNotFound,
    MethodNotAllowed,
    EventsExpired,
    FileProcessingInProgress,
    FileAlreadyProcessed,
    UploadIncomplete,
    SliceArchived,
    Conflict,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    FileTooLarge,
    PayloadTooLarge,
    UnsupportedFileType,
    ValidationError,
    RateLimitExceeded,
    InternalError,
    ServiceUnavailable,
}

impl ErrorCode {
    pub const fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest => 400,
            AuthenticationRequired | InvalidApiKey => 401,
            OrganizationAccessDenied | InsufficientPermissions => 403,
            OrganizationNotFound | SliceNotFound | VectorStoreNotFound | FileNotInStore
            | FileNotFound | UploadNotFound | WebhookNotFound | ResourceNotFound => 404,
            MethodNotAllowed => 405,
            EventsExpired => 410,
            FileProcessingInProgress
            | FileAlreadyProcessed
            | UploadIncomplete
            | SliceArchived
            | Conflict
            | IdempotencyKeyInUse => 409,
            FileTooLarge | PayloadTooLarge => 413,
            UnsupportedFileType => 415,
            ValidationError | IdempotencyKeyMismatch => 422,
            RateLimitExceeded => 429,
            InternalError => 500,
            ServiceUnavailable => 503,
        }
    }

    pub const fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "INVALID_REQUEST",
            AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            InvalidApiKey => "INVALID_API_KEY",
            OrganizationAccessDenied => "ORGANIZATION_ACCESS_DENIED",
            InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            OrganizationNotFound => "ORGANIZATION_NOT_FOUND",
            SliceNotFound => "SLICE_NOT_FOUND",
            VectorStoreNotFound => "VECTOR_STORE_NOT_FOUND",
            FileNotInStore => "FILE_NOT_IN_STORE",
            FileNotFound => "FILE_NOT_FOUND",
            UploadNotFound => "UPLOAD_NOT_FOUND",
            WebhookNotFound => "WEBHOOK_NOT_FOUND",
            EventsExpired => "EVENTS_EXPIRED",
            ResourceNotFound => "RESOURCE_NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            FileProcessingInProgress => "FILE_PROCESSING_IN_PROGRESS",
            FileAlreadyProcessed => "FILE_ALREADY_PROCESSED",
            UploadIncomplete => "UPLOAD_INCOMPLETE",
            SliceArchived => "SLICE_ARCHIVED",
            Conflict => "CONFLICT",
            IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            IdempotencyKeyMismatch => "IDEMPOTENCY_KEY_MISMATCH",
            FileTooLarge => "FILE_TOO_LARGE",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedFileType => "UNSUPPORTED_FILE_TYPE",
            ValidationError => "VALIDATION_ERROR",
            RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            InternalError => "INTERNAL_ERROR",
            ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }

    /// A message safe to show a person.
    pub const fn public_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "The request could not be read. Check its format and try again.",
            AuthenticationRequired => "Authentication is required. Send an API key.",
            InvalidApiKey => "The API key is not valid.",
            OrganizationAccessDenied => "You don't have access to this organization.",
            InsufficientPermissions => "You don't have permission to do this.",
            OrganizationNotFound | SliceNotFound | VectorStoreNotFound | FileNotInStore
            | FileNotFound | UploadNotFound | WebhookNotFound | ResourceNotFound => {
                "We couldn't find the requested resource."
            }
            MethodNotAllowed => "This method is not allowed here.",
            EventsExpired => {
                "Those events are no longer kept. Reload the current state, then follow from now."
            }
            FileProcessingInProgress => "The file is still being processed.",
            FileAlreadyProcessed => "The file has already been processed.",
            UploadIncomplete => "The upload is not complete yet.",
            SliceArchived => "This knowledge slice is archived.",
            Conflict => "The request conflicts with the current state.",
            IdempotencyKeyInUse => {
                "A request with this Idempotency-Key is still running. Try again shortly."
            }
            IdempotencyKeyMismatch => {
                "This Idempotency-Key was used for a different request. Use a new key."
            }
            FileTooLarge => "The file is too large.",
            PayloadTooLarge => "The request is too large.",
            UnsupportedFileType => "This file type is not supported.",
            ValidationError => "Some fields are not valid.",
            RateLimitExceeded => "Too many requests. Try again later.",
            InternalError => "Something went wrong on our side. Please try again.",
            ServiceUnavailable => "The service is not available right now. Please try again.",
        }
    }
}
