//! Files in a store (contract §5–§10): upload, list, get, delete, status, retry, logs,
//! file config and usage. Writing needs `editor`; changing the file config needs `admin`.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use kiln_catalog::{CatalogError, FileFilter, NewFile, Resource, RetryOutcome};
use kiln_core::model::{Chunking, FileRecord, FileStatusView, LogEntry, Page, UsageFigures};
use kiln_core::types::FileStatus;
use kiln_core::{ErrorCode, FileId, StoreId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{FileRef, OrgFileRef, StoreRef};
use crate::AppState;
use crate::auth::{self, Admin, Authorized, Editor, Reader};
use crate::error::{ApiError, ErrorEnvelope, FieldError};
use crate::extractors::{ApiJson, ApiPath, ApiQuery, page};

/// The largest direct upload (contract §5): 31 MiB.
pub const MAX_DIRECT_UPLOAD_BYTES: u64 = 32_505_856;
/// Longest relative path, in bytes.
const MAX_RELATIVE_PATH_BYTES: usize = 1024;

pub(crate) fn store_error(store_id: &str) -> impl FnOnce(CatalogError) -> ApiError + '_ {
    crate::error::store_not_found("store_id", store_id)
}

fn file_error<'a>(
    store_id: &'a str,
    file_id: &'a str,
) -> impl FnOnce(CatalogError) -> ApiError + 'a {
    crate::error::file_not_found("store_id", store_id, file_id)
}

/// Normalises a relative path: `/`-separated, no `.`/empty segments, no trailing slash.
/// Refuses `..`, absolute paths, backslashes, control characters and over 1,024 bytes.
pub(crate) fn normalize_relative_path(raw: &str) -> Result<Option<String>, String> {
    if raw.len() > MAX_RELATIVE_PATH_BYTES {
        return Err(format!("must be at most {MAX_RELATIVE_PATH_BYTES} bytes"));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if raw.contains('\\') {
        return Err("must use '/' as separator, not '\\\\'".into());
    }
    if raw.starts_with('/')
        || raw.contains(':') && raw.split('/').next().is_some_and(|s| s.ends_with(':'))
    {
        return Err("must be relative, not absolute".into());
    }
    let mut parts = Vec::new();
    for segment in raw.split('/') {
        match segment.trim() {
            "" | "." => {}
            ".." => return Err("must not contain '..'".into()),
            s => parts.push(s),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// An optional `relative_path` field, normalised; its problem as a field error.
pub(crate) fn relative_path_field(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    match raw.map(normalize_relative_path).transpose() {
        Ok(path) => Ok(path.flatten()),
        Err(message) => Err(FieldError::new("relative_path", message)),
    }
}

/// The file's name as sent: its last path segment, without control characters.
pub(crate) fn clean_file_name(raw: Option<&str>) -> Result<String, ApiError> {
    let name = raw
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if name.is_empty() || name.chars().any(char::is_control) || name.chars().count() > 255 {
        return Err(ApiError::field(
            "file",
            "needs a file name of 1 to 255 characters",
        ));
    }
    Ok(name)
}

pub fn too_large(limit: u64, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::FileTooLarge,
        format!(
            "{what} is limited to {limit} bytes. For larger files, use POST .../files/upload-url and PUT the bytes to the returned URL."
        ),
    )
    .detail("max_bytes", limit)
}

pub fn unsupported(reason: String) -> ApiError {
    let supported: Vec<&str> = kiln_extract::SUPPORTED_TYPES
        .iter()
        .map(|t| t.extension)
        .collect();
    ApiError::new(ErrorCode::UnsupportedFileType, reason)
        .detail("supported_types", json!(supported))
}

/// Upload a file (multipart: `file`, optional `relative_path`). The bytes stream to storage
/// while they are hashed; the type is detected from content.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/upload",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "`file` (required), `relative_path` (optional)"),
    responses((status = 201, body = FileRecord), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn upload(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    request: Request,
) -> Result<(StatusCode, Json<FileRecord>), ApiError> {
    let org = auth.organization_id().clone();
    // The store is checked before a byte of the body is read.
    app.catalog
        .store_chunking(&org, &store_id)
        .await
        .map_err(store_error(&store_id))?;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Multipart framing adds a little; anything far over the limit is refused unread.
    if declared.is_some_and(|len| len > MAX_DIRECT_UPLOAD_BYTES + 64 * 1024) {
        return Err(too_large(MAX_DIRECT_UPLOAD_BYTES, "A direct upload"));
    }
    let mut multipart = Multipart::from_request(request, &app).await.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("Expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;

    let file_id = FileId::generate();
    let folder = kiln_blobs::Folder::store_file(&org, &store_id, &file_id);
    let blob_path = folder.original();
    let mut relative_path_raw: Option<String> = None;
    let mut received: Option<(String, &'static kiln_extract::FileType, u64, String)> = None;
    let result: Result<(), ApiError> = async {
        while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
            match field.name() {
                Some("relative_path") => {
                    let text = field.text().await.map_err(multipart_error)?;
                    relative_path_raw = Some(text);
                }
                Some("file") if received.is_none() => {
                    let name = clean_file_name(field.file_name())?;
                    let got = crate::ingest::receive(
                        &app,
                        &blob_path,
                        &name,
                        "file",
                        MAX_DIRECT_UPLOAD_BYTES,
                        field.map(|chunk| chunk.map_err(multipart_error)),
                    )
                    .await?;
                    received = Some((name, got.file_type, got.size, got.sha256));
                }
                _ => {
                    // Unknown fields are drained and ignored.
                    while field.chunk().await.map_err(multipart_error)?.is_some() {}
                }
            }
        }
        Ok(())
    }
    .await;
    // Removes whatever this upload wrote (the file's whole blob folder).
    let discard = || async {
        let _ = app.blobs.delete_prefix(folder.path()).await;
    };
    if let Err(err) = result {
        discard().await;
        return Err(err);
    }
    let Some((file_name, file_type, size, sha256)) = received else {
        return Err(ApiError::field(
            "file",
            "is required: send the document as the multipart field 'file'",
        ));
    };
    let relative_path = match relative_path_field(relative_path_raw.as_deref()) {
        Ok(path) => path,
        Err(problem) => {
            discard().await;
            return Err(ApiError::validation(vec![problem]));
        }
    };
    let created = app
        .catalog
        .create_file(NewFile {
            id: file_id,
            organization_id: org,
            store_id: store_id.clone(),
            file_name,
            relative_path,
            mime_type: file_type.mime_type.to_string(),
            file_size: size as i64,
            sha256: Some(sha256),
            created_by: auth.key_id().to_string(),
            original_blob: blob_path.to_string(),
        })
        .await;
    match created {
        Ok(file) => {
            app.waker.wake();
            Ok((StatusCode::CREATED, Json(file)))
        }
        Err(err) => {
            discard().await;
            Err(store_error(&store_id)(err))
        }
    }
}

pub(crate) fn multipart_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(MAX_DIRECT_UPLOAD_BYTES, "A direct upload")
    } else {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("Malformed multipart body: {}", err.body_text()),
        )
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FileListQuery {
    status: Option<FileStatus>,
    /// Case-insensitive substring of the file name or relative path.
    search: Option<String>,
    skip: Option<i64>,
    limit: Option<i64>,
}

/// List files, newest first.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/stores/{store_id}/files",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path), FileListQuery),
    responses((status = 200, body = Page<FileRecord>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_files(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    ApiQuery(query): ApiQuery<FileListQuery>,
) -> Result<Json<Page<FileRecord>>, ApiError> {
    let window = page(query.skip, query.limit)?;
    let filter = FileFilter {
        statuses: query.status.into_iter().collect(),
        search: query.search.filter(|s| !s.is_empty()),
    };
    Ok(Json(
        app.catalog
            .list_files(auth.organization_id(), &store_id, &filter, window)
            .await
            .map_err(store_error(&store_id))?,
    ))
}

/// Get a file.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/{file_id}",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, body = FileRecord), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_file(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(FileRef { store_id, file_id }): ApiPath<FileRef>,
) -> Result<Json<FileRecord>, ApiError> {
    Ok(Json(
        app.catalog
            .get_file(auth.organization_id(), &store_id, &file_id)
            .await
            .map_err(file_error(&store_id, &file_id))?,
    ))
}

/// Delete a file: gone from lists and search at once; chunks, vectors and the original are
/// purged by a durable background job.
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/{file_id}",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_file(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(FileRef { store_id, file_id }): ApiPath<FileRef>,
) -> Result<StatusCode, ApiError> {
    let deleted = app
        .catalog
        .delete_files(
            auth.organization_id(),
            &store_id,
            std::slice::from_ref(&file_id),
            auth.key_id(),
        )
        .await
        .map_err(store_error(&store_id))?;
    if deleted.is_empty() {
        return Err(file_error(&store_id, &file_id)(CatalogError::NotFound(
            Resource::File,
        )));
    }
    app.waker.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RemoveBulk {
    /// 1 to 1,000 file IDs; IDs not in the store are skipped.
    file_ids: Vec<FileId>,
}

/// Delete many files.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/remove-bulk",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)), request_body = RemoveBulk,
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn remove_bulk(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    ApiJson(body): ApiJson<RemoveBulk>,
) -> Result<StatusCode, ApiError> {
    if body.file_ids.is_empty() || body.file_ids.len() > 1000 {
        return Err(ApiError::field("file_ids", "must hold 1 to 1000 file IDs"));
    }
    app.catalog
        .delete_files(
            auth.organization_id(),
            &store_id,
            &body.file_ids,
            auth.key_id(),
        )
        .await
        .map_err(store_error(&store_id))?;
    app.waker.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// A file's processing status.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/{file_id}/status",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, body = FileStatusView), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn file_status(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(path): ApiPath<OrgFileRef>,
) -> Result<Json<FileStatusView>, ApiError> {
    // Clients poll this: the key and the file come from one database query, not two (status
    // p99 while ingesting 300 files: 5.2–6.0 ms -> 3.6–4.9), checked in the usual order.
    let OrgFileRef {
        organization_id,
        store_id,
        file_id,
    } = path;
    let key = auth::key_value(&headers)?;
    let found = app
        .catalog
        .key_and_file_status(key, &organization_id, &store_id, &file_id)
        .await?;
    let (principal, file) = found.unzip();
    let auth = Authorized::<Reader>::check(principal, Some(&organization_id))?;
    let (file, lease) = match file.flatten() {
        Some(found) => found,
        // Not there: ask again to tell a missing store from a missing file.
        None => app
            .catalog
            .file_status(auth.organization_id(), &store_id, &file_id)
            .await
            .map_err(file_error(&store_id, &file_id))?,
    };
    Ok(Json(FileStatusView::of(&file, lease)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RetryQuery {
    /// Re-process a completed file; its chunks stay searchable until the new ones replace them.
    force: Option<bool>,
}

/// Retry processing: a failed file is reset to `pending` and re-enqueued (contract §6). The
/// body is ignored except `{"reset_error": bool}`.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/{file_id}/retry",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path), ("file_id" = String, Path), RetryQuery),
    responses((status = 200, body = FileStatusView), (status = 409, body = ErrorEnvelope), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn retry_file(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(FileRef { store_id, file_id }): ApiPath<FileRef>,
    ApiQuery(query): ApiQuery<RetryQuery>,
) -> Result<Json<FileStatusView>, ApiError> {
    let outcome = app
        .catalog
        .retry_file(
            auth.organization_id(),
            &store_id,
            &file_id,
            query.force.unwrap_or(false),
            auth.key_id(),
        )
        .await
        .map_err(file_error(&store_id, &file_id))?;
    match outcome {
        RetryOutcome::Queued(file) => {
            app.waker.wake();
            Ok(Json(FileStatusView::of(&file, None)))
        }
        RetryOutcome::InProgress(status) => Err(ApiError::new(
            ErrorCode::FileProcessingInProgress,
            format!("The file is {status}; it will end completed or failed on its own"),
        )
        .detail("status", status.as_str())),
        RetryOutcome::AlreadyProcessed => Err(ApiError::new(
            ErrorCode::FileAlreadyProcessed,
            "The file is completed; pass ?force=true to re-process it",
        )
        .detail("status", "completed")),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Only this attempt's entries.
    attempt: Option<i64>,
    skip: Option<i64>,
    limit: Option<i64>,
}

/// A file's processing log, oldest first.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/{file_id}/logs",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path), ("file_id" = String, Path), LogQuery),
    responses((status = 200, body = Page<LogEntry>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn file_logs(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(FileRef { store_id, file_id }): ApiPath<FileRef>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<Page<LogEntry>>, ApiError> {
    let window = page(query.skip, query.limit)?;
    if query.attempt.is_some_and(|a| a < 0) {
        return Err(ApiError::field("attempt", "must be 0 or more"));
    }
    Ok(Json(
        app.catalog
            .file_logs(
                auth.organization_id(),
                &store_id,
                &file_id,
                query.attempt,
                window,
            )
            .await
            .map_err(file_error(&store_id, &file_id))?,
    ))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SupportedType {
    extension: &'static str,
    mime_type: &'static str,
    max_size_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct FileConfig {
    supported_types: Vec<SupportedType>,
    max_direct_upload_bytes: u64,
    max_upload_bytes: u64,
    chunking: Chunking,
    embedding_model: String,
    embedding_dimensions: usize,
}

fn file_config(app: &AppState, chunking: Chunking) -> FileConfig {
    let supported_types: Vec<SupportedType> = kiln_extract::SUPPORTED_TYPES
        .iter()
        .map(|t| SupportedType {
            extension: t.extension,
            mime_type: t.mime_type,
            max_size_bytes: t.max_size_bytes,
        })
        .collect();
    let max_upload_bytes = supported_types
        .iter()
        .map(|t| t.max_size_bytes)
        .max()
        .unwrap_or(0);
    FileConfig {
        supported_types,
        max_direct_upload_bytes: MAX_DIRECT_UPLOAD_BYTES,
        max_upload_bytes,
        chunking,
        embedding_model: app.embedder.model().to_string(),
        embedding_dimensions: app.embedder.dimensions(),
    }
}

/// The store's file configuration.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/config",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    responses((status = 200, body = FileConfig), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_config(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
) -> Result<Json<FileConfig>, ApiError> {
    let chunking = app
        .catalog
        .store_chunking(auth.organization_id(), &store_id)
        .await
        .map_err(store_error(&store_id))?;
    Ok(Json(file_config(&app, chunking)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct ConfigPatch {
    chunking: Option<ChunkingPatch>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct ChunkingPatch {
    /// 100–4096.
    max_chunk_tokens: Option<u32>,
    /// 0 to half of `max_chunk_tokens`.
    chunk_overlap_tokens: Option<u32>,
}

/// Change how files processed from now on are chunked.
#[utoipa::path(patch, path = "/v1/organizations/{organization_id}/stores/{store_id}/files/config",
    tag = "Files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)), request_body = ConfigPatch,
    responses((status = 200, body = FileConfig), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn patch_config(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    ApiJson(body): ApiJson<ConfigPatch>,
) -> Result<Json<FileConfig>, ApiError> {
    let org = auth.organization_id();
    let chunking = app
        .catalog
        .store_chunking(org, &store_id)
        .await
        .map_err(store_error(&store_id))?;
    let Some(patch) = body.chunking else {
        return Ok(Json(file_config(&app, chunking)));
    };
    let max = patch.max_chunk_tokens.unwrap_or(chunking.max_chunk_tokens);
    let overlap = patch
        .chunk_overlap_tokens
        .unwrap_or(chunking.chunk_overlap_tokens.min(max / 2));
    let mut problems = Vec::new();
    if !(100..=4096).contains(&max) {
        problems.push(FieldError::new(
            "chunking.max_chunk_tokens",
            "must be between 100 and 4096",
        ));
    }
    if overlap > max / 2 {
        problems.push(FieldError::new(
            "chunking.chunk_overlap_tokens",
            format!(
                "must be between 0 and {} (half of max_chunk_tokens)",
                max / 2
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let store = app
        .catalog
        .update_chunking(
            org,
            &store_id,
            Chunking {
                max_chunk_tokens: max,
                chunk_overlap_tokens: overlap,
            },
        )
        .await
        .map_err(store_error(&store_id))?;
    Ok(Json(file_config(&app, store.chunking)))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct StoreUsage {
    store_id: StoreId,
    #[serde(flatten)]
    figures: UsageFigures,
}

/// A store's storage usage, exact to the byte.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/stores/{store_id}/usage",
    tag = "Usage", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    responses((status = 200, body = StoreUsage), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn store_usage(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
) -> Result<Json<StoreUsage>, ApiError> {
    let figures = app
        .catalog
        .store_usage(auth.organization_id(), &store_id)
        .await
        .map_err(store_error(&store_id))?;
    Ok(Json(StoreUsage { store_id, figures }))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct NamedStoreUsage {
    store_id: StoreId,
    name: String,
    #[serde(flatten)]
    figures: UsageFigures,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OrganizationUsage {
    #[serde(flatten)]
    figures: UsageFigures,
    stores: Vec<NamedStoreUsage>,
}

/// The organization's storage usage: totals and per store.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/knowledge/usage",
    tag = "Usage", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)),
    responses((status = 200, body = OrganizationUsage), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn organization_usage(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
) -> Result<Json<OrganizationUsage>, ApiError> {
    let per_store = app
        .catalog
        .organization_usage(auth.organization_id())
        .await?;
    let mut total = UsageFigures::default();
    for (_, _, u) in &per_store {
        total.file_count += u.file_count;
        total.file_counts.pending += u.file_counts.pending;
        total.file_counts.processing += u.file_counts.processing;
        total.file_counts.completed += u.file_counts.completed;
        total.file_counts.failed += u.file_counts.failed;
        total.file_counts.total += u.file_counts.total;
        total.original_bytes += u.original_bytes;
        total.extracted_text_bytes += u.extracted_text_bytes;
        total.chunk_count += u.chunk_count;
        total.vector_bytes += u.vector_bytes;
        total.index_bytes += u.index_bytes;
        total.total_bytes += u.total_bytes;
    }
    let stores = per_store
        .into_iter()
        .map(|(store_id, name, figures)| NamedStoreUsage {
            store_id,
            name,
            figures,
        })
        .collect();
    Ok(Json(OrganizationUsage {
        figures: total,
        stores,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_or_refused() {
        assert_eq!(
            normalize_relative_path("reports/2025").unwrap().as_deref(),
            Some("reports/2025")
        );
        assert_eq!(
            normalize_relative_path("./a//b/./c/").unwrap().as_deref(),
            Some("a/b/c")
        );
        assert_eq!(normalize_relative_path("").unwrap(), None);
        for bad in [
            "../etc",
            "a/../../b",
            "/abs",
            "a\\b",
            "C:/x",
            "a\u{0}b",
            "tab\there",
        ] {
            assert!(normalize_relative_path(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_relative_path(&"a".repeat(1025)).is_err());
        assert!(normalize_relative_path(&"a".repeat(1024)).is_ok());
    }
}
