//! Typed extractors whose rejections are envelopes: JSON bodies, query strings, path IDs.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use bytes::Bytes;
use kiln_core::ErrorCode;
use kiln_core::model::PageRequest;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body: 400 for a wrong content type or malformed JSON, 413 over the limit, 422 with
/// the offending field for JSON of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "Content-Type must be application/json",
            ));
        }
        // Refuse a declared oversize body before reading a byte of it.
        let limit = state.http.max_json_body_bytes;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large(limit));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(limit)
                } else {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "The request body could not be read",
                    )
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("JSON bodies are limited to {limit} bytes"),
    )
    .detail("max_bytes", limit)
}

/// Parses JSON, telling syntax errors (400) from shape errors (422, with the field's path).
/// Syntax is checked first, on its own, since serde reports some shape errors (an enum given
/// a number) as syntax errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| malformed(&err))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        ApiError::field(&field_name(&path, &message), message)
    })
}

fn malformed(err: &serde_json::Error) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("Malformed JSON: {}", strip_position(&err.to_string())),
    )
}

/// The field a deserialisation error is about: its path, or the name in "missing field `x`".
fn field_name(path: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.split('`').next()
    {
        return if path == "." {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
    }
    if path == "." {
        "body".to_string()
    } else {
        path.to_string()
    }
}

/// serde_json appends " at line L column C"; the position helps nobody reading an envelope.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// A query string: 422 with the offending parameter when it does not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                ApiError::field(&field_name(&path, &message), message)
            })
    }
}

/// Validates `skip` (≥ 0) and `limit` (1–100) of a list request.
pub fn page(skip: Option<i64>, limit: Option<i64>) -> Result<PageRequest, ApiError> {
    let mut fields = Vec::new();
    let skip = skip.unwrap_or(0);
    let limit = limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if skip < 0 {
        fields.push(crate::error::FieldError::new("skip", "must be 0 or more"));
    }
    if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
        fields.push(crate::error::FieldError::new(
            "limit",
            format!("must be between 1 and {}", PageRequest::MAX_LIMIT),
        ));
    }
    if fields.is_empty() {
        Ok(PageRequest { skip, limit })
    } else {
        Err(ApiError::validation(fields))
    }
}

/// Path parameters; a path that cannot be decoded names no resource (404).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|_| ApiError::new(ErrorCode::ResourceNotFound, "Resource not found"))
    }
}

/// Validates a required name: 1–255 characters, not blank.
pub fn check_name(field: &str, name: &str) -> Option<crate::error::FieldError> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        Some(crate::error::FieldError::new(field, "must not be empty"))
    } else if chars > 255 {
        Some(crate::error::FieldError::new(
            field,
            format!("must be at most 255 characters (got {chars})"),
        ))
    } else {
        None
    }
}

/// A numbered page (the vector-stores family's `page` from 1 and a size field, e.g.
/// `page_size` or `limit`, 1–100) as a window, or the fields' problems.
pub fn numbered_page(
    page: Option<i64>,
    size: Option<i64>,
    size_field: &str,
) -> Result<(i64, PageRequest), Vec<crate::error::FieldError>> {
    let mut fields = Vec::new();
    let number = page.unwrap_or(1);
    if number < 1 {
        fields.push(crate::error::FieldError::new("page", "must be 1 or more"));
    }
    let limit = size.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
        fields.push(crate::error::FieldError::new(
            size_field,
            format!("must be between 1 and {}", PageRequest::MAX_LIMIT),
        ));
    }
    if fields.is_empty() {
        let skip = (number - 1).saturating_mul(limit);
        Ok((number, PageRequest { skip, limit }))
    } else {
        Err(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn fields(err: &ApiError) -> serde_json::Value {
        err.details["fields"].clone()
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_with_the_field() {
        let err = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let err = parse_json::<Body>(b"{\"name\": 5}").unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
        assert_eq!(fields(&err)[0]["field"], "name");
        let err = parse_json::<Body>(b"{\"name\": \"a\", \"inner\": {\"count\": -1}}").unwrap_err();
        assert_eq!(fields(&err)[0]["field"], "inner.count");
        let err = parse_json::<Body>(b"{}").unwrap_err();
        assert_eq!(fields(&err)[0]["field"], "name");
        let err = parse_json::<Body>(b"[1]").unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
        let err = parse_json::<Body>(b"{\"name\": \"a\"} trailing").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn page_bounds() {
        assert_eq!(
            page(None, None).unwrap(),
            PageRequest { skip: 0, limit: 20 }
        );
        assert!(page(Some(-1), None).is_err());
        assert!(page(None, Some(0)).is_err());
        assert!(page(None, Some(101)).is_err());
        assert_eq!(page(Some(5), Some(100)).unwrap().limit, 100);
    }

    #[test]
    fn names_are_checked_in_characters() {
        assert!(check_name("name", "").is_some());
        assert!(check_name("name", "   ").is_some());
        assert!(check_name("name", &"é".repeat(255)).is_none());
        assert!(check_name("name", &"a".repeat(256)).is_some());
    }
}
