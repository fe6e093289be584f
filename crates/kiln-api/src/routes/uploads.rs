//! Uploads through a signed URL (contract §5): `upload-url` announces a file and returns a
//! signed, expiring URL that needs no API key; `PUT` to it sends the bytes whole or in
//! `Content-Range` pieces (answered 308 with `Range` until complete, then 200), resumable
//! after a dropped connection; `register` turns the complete upload into a file.
//!
//! Each accepted `PUT` becomes one part blob under the file's folder; the catalog counts the
//! bytes with a compare-and-set, so concurrent `PUT`s cannot both count. `register` streams
//! the parts into the file's `original` while hashing, checks size, SHA-256 and content type,
//! then creates the file and its job in one transaction.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use kiln_catalog::{CatalogError, NewFile, NewUpload, Resource, Upload};
use kiln_core::model::FileRecord;
use kiln_core::{ErrorCode, FileId, IdKind, OrgId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};

use super::StoreRef;
use super::files::{clean_file_name, relative_path_field, store_error, too_large, unsupported};
use crate::AppState;
use crate::auth::{Authorized, Editor};
use crate::error::{ApiError, ErrorEnvelope, FieldError};
use crate::extractors::{ApiJson, ApiPath, ApiQuery};

/// The piece size we suggest for `Content-Range` uploads.
pub const CHUNK_SIZE_RECOMMENDED: u64 = 8 * 1024 * 1024;

/// Where an upload's blobs go: its store's file folder, or (no store) the organization's.
pub(crate) fn upload_folder(upload: &Upload) -> kiln_blobs::Folder {
    kiln_blobs::Folder::upload(&upload.organization_id, &upload.store_id, &upload.id)
}

/// Signs and checks upload URLs with a server-wide secret (kept in the catalog, so every
/// server sharing it accepts the same URLs).
pub struct UploadSigner {
    key: Vec<u8>,
}

impl UploadSigner {
    pub fn new(secret: &str) -> Self {
        UploadSigner {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, upload_id: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("kiln-upload-v1\n{upload_id}\n{expires}").as_bytes());
        mac
    }

    /// The signature for `PUT /v1/uploads/{upload_id}?expires=…`.
    pub fn sign(&self, upload_id: &str, expires: i64) -> String {
        hex::encode(self.mac(upload_id, expires).finalize().into_bytes())
    }

    /// Whether `signature` was made by [`sign`](Self::sign) (compared in constant time).
    pub fn verify(&self, upload_id: &str, expires: i64, signature: &str) -> bool {
        hex::decode(signature)
            .ok()
            .is_some_and(|bytes| self.mac(upload_id, expires).verify_slice(&bytes).is_ok())
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadUrlRequest {
    /// 1–255 characters; its extension names the type.
    #[serde(alias = "filename")]
    pub(crate) file_name: String,
    /// Exact size in bytes (> 0).
    file_size: i64,
    mime_type: String,
    relative_path: Option<String>,
    /// Lowercase hex SHA-256 of the whole file; checked at `register`.
    sha256: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UploadUrlResponse {
    /// Becomes the file's id at `register`.
    upload_id: String,
    /// Signed, expiring; `PUT` the bytes here without an API key.
    upload_url: String,
    method: &'static str,
    chunk_size_recommended: u64,
    max_file_size: u64,
    expires_at: Timestamp,
}

/// The accepted type for a declared name and MIME type: by extension, else by MIME type.
fn declared_type(file_name: &str, mime_type: &str) -> Option<&'static kiln_extract::FileType> {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let types = kiln_extract::SUPPORTED_TYPES;
    types.iter().find(|t| t.extension == extension).or_else(|| {
        let mime = mime_type.split(';').next().unwrap_or("").trim();
        types
            .iter()
            .find(|t| t.mime_type.eq_ignore_ascii_case(mime))
    })
}

/// The base URL clients reach us at: configured, or from the request's `Host`.
pub(crate) fn public_base(app: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = app.http.public_url.as_deref().filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// Start an upload through a signed URL, for files over the direct-upload limit or for
/// resumable transfers.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/upload-url",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    request_body = UploadUrlRequest,
    responses((status = 201, body = UploadUrlResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn upload_url(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UploadUrlRequest>,
) -> Result<(StatusCode, Json<UploadUrlResponse>), ApiError> {
    let org = auth.organization_id().clone();
    app.catalog
        .store_chunking(&org, &store_id)
        .await
        .map_err(store_error(&store_id))?;
    let started = start_upload(&app, &org, &store_id, &headers, body, auth.key_id())
        .await
        .map_err(|err| err.detail_if_not_found("store_id", &store_id))?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// Checks a declared upload and records it with its signed URL; `store_id` empty: an upload
/// into the organization (no store).
pub(crate) async fn start_upload(
    app: &AppState,
    org: &OrgId,
    store_id: &str,
    headers: &HeaderMap,
    body: UploadUrlRequest,
    by: &str,
) -> Result<UploadUrlResponse, ApiError> {
    let mut problems = Vec::new();
    let file_name = match clean_file_name(Some(&body.file_name)) {
        Ok(name) if name == body.file_name.trim() => Some(name),
        _ => {
            problems.push(FieldError::new(
                "file_name",
                "must be 1 to 255 characters, without '/', '\\' or control characters",
            ));
            None
        }
    };
    if body.file_size <= 0 {
        problems.push(FieldError::new(
            "file_size",
            "must be greater than 0 (an empty file has nothing to index)",
        ));
    }
    if body.mime_type.trim().is_empty() {
        problems.push(FieldError::new("mime_type", "must not be empty"));
    }
    let sha256 = body.sha256.as_deref().map(str::to_ascii_lowercase);
    if sha256
        .as_deref()
        .is_some_and(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        problems.push(FieldError::new(
            "sha256",
            "must be 64 hexadecimal characters",
        ));
    }
    let relative_path = relative_path_field(body.relative_path.as_deref())
        .map_err(|problem| problems.push(problem))
        .unwrap_or_default();
    let Some(file_name) = file_name.filter(|_| problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };
    let file_type = declared_type(&file_name, &body.mime_type).ok_or_else(|| {
        unsupported(format!(
            "Files named '{file_name}' with MIME type '{}' are not supported.",
            body.mime_type
        ))
    })?;
    if body.file_size as u64 > file_type.max_size_bytes {
        return Err(too_large(
            file_type.max_size_bytes,
            &format!("A .{} file", file_type.extension),
        ));
    }
    let ttl = Duration::from_secs(app.http.upload_url_ttl_secs.max(60));
    // Whole seconds, so the URL's `expires` and `expires_at` agree exactly.
    let expires_secs = (Timestamp::now().millis() + ttl.as_millis() as i64) / 1000;
    let upload = app
        .catalog
        .create_upload(NewUpload {
            id: FileId::generate(),
            organization_id: org.clone(),
            store_id: store_id.to_string(),
            file_name,
            relative_path,
            mime_type: file_type.mime_type.to_string(),
            file_size: body.file_size,
            sha256,
            created_by: by.to_string(),
            expires_at: Timestamp(expires_secs * 1000),
        })
        .await?;
    let signature = app.upload_signer.sign(&upload.id, expires_secs);
    Ok(UploadUrlResponse {
        upload_url: format!(
            "{}/v1/uploads/{}?expires={expires_secs}&signature={signature}",
            public_base(app, headers),
            upload.id
        ),
        upload_id: upload.id.into_string(),
        method: "PUT",
        chunk_size_recommended: CHUNK_SIZE_RECOMMENDED,
        max_file_size: file_type.max_size_bytes,
        expires_at: upload.expires_at,
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SignedQuery {
    /// Unix seconds after which the URL stops working.
    expires: Option<i64>,
    signature: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct UploadRef {
    upload_id: String,
}

/// How far an upload has come, returned by every `PUT`.
#[derive(Serialize, ToSchema)]
pub(crate) struct UploadProgress {
    upload_id: String,
    received_bytes: i64,
    file_size: i64,
    complete: bool,
}

/// What a `PUT` carries: bytes `start..=end` of `total`, or (`None`) a query for the state.
struct PieceRange {
    piece: Option<(u64, u64)>,
    total: Option<u64>,
}

fn parse_content_range(headers: &HeaderMap, file_size: u64) -> Result<PieceRange, ApiError> {
    let Some(raw) = headers.get(header::CONTENT_RANGE) else {
        return Ok(PieceRange {
            piece: Some((0, file_size - 1)),
            total: Some(file_size),
        });
    };
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "Content-Range must look like 'bytes 0-1048575/5000000' (or 'bytes */5000000' to ask how much has arrived)",
        )
    };
    let text = raw.to_str().map_err(|_| bad())?.trim();
    let rest = text.strip_prefix("bytes ").ok_or_else(bad)?.trim();
    let (span, total) = rest.split_once('/').ok_or_else(bad)?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad())?),
    };
    let piece = match span.trim() {
        "*" => None,
        s => {
            let (a, b) = s.split_once('-').ok_or_else(bad)?;
            let a = a.trim().parse::<u64>().map_err(|_| bad())?;
            let b = b.trim().parse::<u64>().map_err(|_| bad())?;
            if b < a {
                return Err(bad());
            }
            Some((a, b))
        }
    };
    Ok(PieceRange { piece, total })
}

/// 200 when every byte is in, else 308 with `Range` naming what has arrived.
fn progress_response(upload: &Upload, received: i64) -> Response {
    let complete = received == upload.file_size;
    let body = Json(UploadProgress {
        upload_id: upload.id.to_string(),
        received_bytes: received,
        file_size: upload.file_size,
        complete,
    });
    if complete {
        return (StatusCode::OK, body).into_response();
    }
    let mut response = (StatusCode::PERMANENT_REDIRECT, body).into_response();
    if received > 0
        && let Ok(value) = HeaderValue::from_str(&format!("bytes=0-{}", received - 1))
    {
        response.headers_mut().insert(header::RANGE, value);
    }
    response
}

fn past_declared_size(upload: &Upload) -> ApiError {
    ApiError::new(
        ErrorCode::FileTooLarge,
        format!(
            "This upload was declared as {} bytes; the PUT goes past that. Nothing of this request was kept. Start a new upload with the right file_size.",
            upload.file_size
        ),
    )
    .detail("upload_id", upload.id.as_str())
    .detail("file_size", upload.file_size)
}

/// Send the bytes of an upload. No API key: the signed URL is the permission.
#[utoipa::path(put, path = "/v1/uploads/{upload_id}", tag = "Files",
    params(("upload_id" = String, Path), SignedQuery,
        ("Content-Range" = Option<String>, Header, description = "`bytes a-b/total` for a piece, `bytes */total` to ask for the state")),
    request_body(content_type = "application/octet-stream", description = "The file's bytes, whole or one piece"),
    responses((status = 200, body = UploadProgress, description = "every byte has arrived"),
        (status = 308, body = UploadProgress, description = "more bytes are needed; `Range` says which arrived"),
        (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn put_upload(
    State(app): State<AppState>,
    ApiPath(UploadRef { upload_id }): ApiPath<UploadRef>,
    ApiQuery(query): ApiQuery<SignedQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let (Some(expires), Some(signature)) = (query.expires, query.signature.as_deref()) else {
        return Err(ApiError::new(
            ErrorCode::AuthenticationRequired,
            "PUT the bytes to the signed upload_url returned by POST .../files/upload-url (it carries 'expires' and 'signature')",
        ));
    };
    if !app.upload_signer.verify(&upload_id, expires, signature) {
        return Err(ApiError::new(
            ErrorCode::InsufficientPermissions,
            "The upload URL's signature is not valid for this upload",
        ));
    }
    let gone = || {
        ApiError::new(
            ErrorCode::UploadNotFound,
            "No pending upload with this id: it expired, was registered, or its store was deleted. Start again with POST .../files/upload-url.",
        )
        .detail("upload_id", upload_id.as_str())
    };
    if expires.saturating_mul(1000) <= Timestamp::now().millis() {
        return Err(gone());
    }
    let not_found = |err: CatalogError| match err {
        CatalogError::NotFound(_) => gone(),
        other => other.into(),
    };
    let upload = app.catalog.upload(&upload_id).await.map_err(not_found)?;
    let file_size = upload.file_size as u64;
    let range = parse_content_range(request.headers(), file_size)?;
    if let Some(total) = range.total {
        if total > file_size {
            return Err(past_declared_size(&upload));
        }
        if total < file_size {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "Content-Range names a total of {total} bytes, but the upload was declared as {file_size} bytes"
                ),
            ));
        }
    }
    let Some((start, end)) = range.piece else {
        return Ok(progress_response(&upload, upload.received_bytes));
    };
    if end >= file_size {
        return Err(past_declared_size(&upload));
    }
    let held = upload.received_bytes as u64;
    if start > held {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "This piece starts at byte {start}, but only bytes before {held} have arrived. Send the piece that starts at byte {held}."
            ),
        )
        .detail("upload_id", upload.id.as_str())
        .detail("received_bytes", held));
    }
    // Bytes before `held` are here already (a resend after a dropped connection): skip them.
    let mut skip = held - start;
    let piece_len = end - start + 1;
    let blob = upload_folder(&upload).part(held, &IdKind::Job.generate());
    let mut writer: Option<kiln_blobs::BlobWriter> = None;
    let mut seen: u64 = 0;
    let mut written: u64 = 0;
    let mut stream = request.into_body().into_data_stream();
    let mut dropped = false;
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                // The connection broke: keep what arrived, the client resumes from there.
                dropped = true;
                break;
            };
            seen += chunk.len() as u64;
            if seen > piece_len {
                return Err(if range.total.is_some() && start + seen > file_size {
                    past_declared_size(&upload)
                } else {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "The body is longer than the {piece_len} bytes its Content-Range names"
                        ),
                    )
                });
            }
            let fresh = &chunk[(skip.min(chunk.len() as u64) as usize)..];
            skip -= skip.min(chunk.len() as u64);
            if fresh.is_empty() {
                continue;
            }
            if writer.is_none() {
                writer = Some(app.blobs.writer(&blob).await?);
            }
            if let Some(w) = writer.as_mut() {
                w.write(fresh).await?;
            }
            written += fresh.len() as u64;
        }
        Ok(())
    }
    .await;
    let Some(writer) = writer else {
        outcome?;
        return Ok(progress_response(&upload, upload.received_bytes));
    };
    if let Err(err) = outcome {
        writer.abort().await;
        return Err(err);
    }
    writer.finish().await?;
    let counted = app
        .catalog
        .add_upload_part(&upload.id, held as i64, written as i64, blob.as_ref())
        .await;
    match counted {
        Ok(Some(received)) if !dropped => Ok(progress_response(&upload, received)),
        Ok(Some(_)) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "The connection broke; the bytes that arrived are kept. Ask with 'Content-Range: bytes */total' and resume.",
        )),
        Ok(None) => {
            let _ = app.blobs.delete_prefix(&blob).await;
            Err(ApiError::new(
                ErrorCode::Conflict,
                "Another request wrote to this upload at the same time; nothing of this one was kept. Ask with 'Content-Range: bytes */total' and resume.",
            )
            .detail("upload_id", upload.id.as_str()))
        }
        Err(err) => {
            let _ = app.blobs.delete_prefix(&blob).await;
            Err(err.into())
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    upload_id: String,
    /// Overrides the `relative_path` given to `upload-url` (when not empty).
    relative_path: Option<String>,
}

/// Register a complete upload as a file in the store; processing starts.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/register",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    request_body = RegisterRequest,
    responses((status = 201, body = FileRecord), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn register(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<FileRecord>), ApiError> {
    let org = auth.organization_id().clone();
    app.catalog
        .store_chunking(&org, &store_id)
        .await
        .map_err(store_error(&store_id))?;
    let relative_path = relative_path_field(body.relative_path.as_deref())
        .map_err(|problem| ApiError::validation(vec![problem]))?;
    let not_found = || {
        ApiError::new(
            ErrorCode::UploadNotFound,
            "No pending upload with this id in this store: it expired, was registered already, or never existed",
        )
        .detail("upload_id", body.upload_id.as_str())
        .detail("store_id", store_id.as_str())
    };
    let upload = match app.catalog.upload(&body.upload_id).await {
        Ok(upload) if upload.organization_id == org && upload.store_id == store_id.as_str() => {
            upload
        }
        Ok(_) | Err(CatalogError::NotFound(_)) => return Err(not_found()),
        Err(err) => return Err(err.into()),
    };
    let (file_type, sha256, original) = assemble(&app, &upload, not_found).await?;
    let folder = upload_folder(&upload);
    let created = app
        .catalog
        .register_upload(NewFile {
            id: upload.id.clone(),
            organization_id: org,
            store_id: store_id.clone(),
            file_name: upload.file_name.clone(),
            relative_path: relative_path.or(upload.relative_path.clone()),
            mime_type: file_type.mime_type.to_string(),
            file_size: upload.file_size,
            sha256: Some(sha256),
            created_by: auth.key_id().to_string(),
            original_blob: original.to_string(),
        })
        .await;
    match created {
        Ok(file) => {
            let _ = app.blobs.delete_prefix(&folder.parts()).await;
            app.waker.wake();
            Ok((StatusCode::CREATED, Json(file)))
        }
        // Another registration won the race; its original is the same bytes: leave it.
        Err(CatalogError::NotFound(Resource::Upload)) => Err(not_found()),
        Err(err) => Err(store_error(&store_id)(err)),
    }
}

/// Assembles a complete upload's parts into its original (`original` in its folder), checking
/// the declared size and SHA-256 and detecting the type. On a mismatch the bytes are dropped
/// (the same URL takes them again); an unreadable type ends the upload.
pub(crate) async fn assemble(
    app: &AppState,
    upload: &Upload,
    not_found: impl Fn() -> ApiError + Send + Sync,
) -> Result<
    (
        &'static kiln_extract::FileType,
        String,
        kiln_blobs::BlobPath,
    ),
    ApiError,
> {
    if !upload.is_complete() {
        return Err(ApiError::new(
            ErrorCode::UploadIncomplete,
            format!(
                "{} of {} bytes have arrived. PUT the rest to the upload_url, then register.",
                upload.received_bytes, upload.file_size
            ),
        )
        .detail("upload_id", upload.id.as_str())
        .detail("received_bytes", upload.received_bytes)
        .detail("file_size", upload.file_size));
    }
    let folder = upload_folder(upload);
    let original = folder.original();
    let parts = app.catalog.upload_parts(&upload.id).await?;
    let contiguous = parts.iter().try_fold(0i64, |end, part| {
        (part.offset == end).then_some(end + part.length)
    });
    if contiguous != Some(upload.file_size) {
        tracing::error!(upload = %upload.id, "upload parts do not add up");
        return Err(ApiError::internal());
    }
    // The parts in order, as one stream, received like any other original.
    let blobs = app.blobs.clone();
    let pieces = futures::stream::iter(parts)
        .then(move |part| {
            let blobs = blobs.clone();
            async move {
                let path = kiln_blobs::BlobPath::from(part.blob_name.as_str());
                blobs
                    .get_stream(&path)
                    .await
                    .map(|s| s.map_err(ApiError::from))
            }
        })
        .map_err(|err| match err {
            // A concurrent registration finished first and removed the parts.
            kiln_blobs::BlobError::NotFound(_) => not_found(),
            other => other.into(),
        })
        .try_flatten()
        .boxed();
    let received =
        match crate::ingest::receive(app, &original, &upload.file_name, "file", u64::MAX, pieces)
            .await
        {
            Ok(received) => received,
            Err(err)
                if matches!(
                    err.code,
                    ErrorCode::UnsupportedFileType | ErrorCode::FileTooLarge
                ) =>
            {
                // The content can never be read (or is beyond its detected type's limit): the
                // upload is over.
                app.catalog.discard_upload(&upload.id).await?;
                let _ = app.blobs.delete_prefix(folder.path()).await;
                return Err(err);
            }
            Err(err) => return Err(err),
        };
    if received.size != upload.file_size as u64 {
        let _ = app.blobs.delete(&original).await;
        tracing::error!(upload = %upload.id, size = received.size, "upload parts do not add up");
        return Err(ApiError::internal());
    }
    let sha256 = received.sha256;
    if let Some(expected) = upload.sha256.as_deref().filter(|e| *e != sha256) {
        // The bytes are wrong: drop them, so the same URL can take them again.
        let _ = app.blobs.delete(&original).await;
        let dropped = app.catalog.reset_upload(&upload.id).await?;
        for part in dropped {
            let _ = app
                .blobs
                .delete_prefix(&kiln_blobs::BlobPath::from(part.blob_name.as_str()))
                .await;
        }
        return Err(ApiError::new(
            ErrorCode::UploadIncomplete,
            "The bytes received do not match the declared sha256. They were discarded: PUT the file again to the same upload_url, then register.",
        )
        .detail("upload_id", upload.id.as_str())
        .detail("expected_sha256", expected)
        .detail("received_sha256", sha256));
    }
    Ok((received.file_type, sha256, original))
}
