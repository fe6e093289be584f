//! The vector-stores family's files in a store (`vector-stores-api.md` §4.2): links of
//! organization files into a store (`vsf_…`), each processed by the same pipeline as a
//! knowledge-family file. `{file_id}` in a path is the organization file's ID (`file_…`) or
//! the link's (`vsf_…`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use kiln_catalog::{FileFilter, LinkOutcome, NewOrgFile, RetryOutcome};
use kiln_core::model::{FileRecord, FileStatusView, LogEntry, Page, PageRequest};
use kiln_core::types::{FileErrorCode, FileStatus, Step};
use kiln_core::{ErrorCode, FileId, OrgId, StoreId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::files::{MAX_DIRECT_UPLOAD_BYTES, clean_file_name};
use super::vector_stores::{Enveloped, VectorStoreRef, enveloped};
use crate::AppState;
use crate::auth::{Authorized, Editor, Reader};
use crate::error::{ApiError, ErrorEnvelope, FieldError};
use crate::extractors::{ApiJson, ApiPath, ApiQuery, numbered_page, page};

/// The largest base64 upload request (its own limit, not the 1 MiB of other JSON bodies).
pub const MAX_BASE64_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Files per batch upload.
pub const MAX_BATCH_FILES: usize = 10;

/// A file in a vector store: the link, with its organization file's name and size and the
/// pipeline's progress.
#[derive(Serialize, ToSchema)]
pub(crate) struct VectorStoreFile {
    /// The link (`vsf_…`; a file uploaded through the knowledge family: its `file_…` ID).
    id: FileId,
    vector_store_id: StoreId,
    /// The organization file (`file_…`).
    file_id: FileId,
    added_by: Option<String>,
    added_by_api_key_id: Option<String>,
    added_at: Timestamp,
    /// `pending`, `processing`, `completed` or `failed`.
    processing_status: FileStatus,
    processing_started_at: Option<Timestamp>,
    processing_completed_at: Option<Timestamp>,
    error_message: Option<String>,
    chunk_count: i64,
    embedding_model: Option<String>,
    file_name: String,
    file_size: i64,
    mime_type: String,
    /// Not estimated (always `null`): Kiln reports `progress_percent` and `current_step`.
    estimated_completion_seconds: Option<i64>,
    progress_percent: i64,
    current_step: Step,
    error_code: Option<FileErrorCode>,
    retryable: Option<bool>,
    attempt: i64,
    relative_path: Option<String>,
}

impl From<FileRecord> for VectorStoreFile {
    fn from(f: FileRecord) -> Self {
        VectorStoreFile {
            id: f.id,
            vector_store_id: f.store_id,
            file_id: f.org_file_id,
            added_by: f.created_by.clone(),
            added_by_api_key_id: f.created_by,
            added_at: f.created_at,
            processing_status: f.status,
            processing_started_at: f.started_at,
            processing_completed_at: f.completed_at,
            error_message: f.error_message,
            chunk_count: f.chunk_count,
            embedding_model: f.embedding_model,
            file_name: f.file_name,
            file_size: f.file_size,
            mime_type: f.mime_type,
            estimated_completion_seconds: None,
            progress_percent: f.progress_percent,
            current_step: f.current_step,
            error_code: f.error_code,
            retryable: f.retryable,
            attempt: f.attempts,
            relative_path: f.relative_path,
        }
    }
}

/// A file's processing status in the client's shape, with the knowledge family's fields.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProcessingStatus {
    vector_store_file_id: FileId,
    file_id: FileId,
    vector_store_id: StoreId,
    processing_started_at: Option<Timestamp>,
    processing_completed_at: Option<Timestamp>,
    added_at: Timestamp,
    #[serde(flatten)]
    status: FileStatusView,
}

impl ProcessingStatus {
    fn of(file: &FileRecord, lease: Option<Timestamp>) -> Self {
        ProcessingStatus {
            vector_store_file_id: file.id.clone(),
            file_id: file.org_file_id.clone(),
            vector_store_id: file.store_id.clone(),
            processing_started_at: file.started_at,
            processing_completed_at: file.completed_at,
            added_at: file.created_at,
            status: FileStatusView::of(file, lease),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VectorStoreFileList {
    total: i64,
    page: i64,
    page_size: i64,
    total_pages: i64,
    files: Vec<VectorStoreFile>,
}

/// A path naming a file in a vector store.
#[derive(Deserialize)]
pub(crate) struct StoreFileRef {
    vector_store_id: StoreId,
    file_id: FileId,
}

fn store_error(store_id: &str) -> impl FnOnce(kiln_catalog::CatalogError) -> ApiError + '_ {
    crate::error::store_not_found("vector_store_id", store_id)
}

fn file_error<'a>(
    store_id: &'a str,
    file_id: &'a str,
) -> impl FnOnce(kiln_catalog::CatalogError) -> ApiError + 'a {
    crate::error::file_not_found("vector_store_id", store_id, file_id)
}

/// The link named by a path (by organization file ID or link ID).
async fn link_of(app: &AppState, org: &OrgId, path: &StoreFileRef) -> Result<FileId, ApiError> {
    app.catalog
        .resolve_link(org, &path.vector_store_id, &path.file_id)
        .await
        .map_err(file_error(&path.vector_store_id, &path.file_id))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StoreFileListQuery {
    /// From 1 (default 1).
    page: Option<i64>,
    /// 1–100 (default 20).
    page_size: Option<i64>,
    /// Comma-separated statuses, e.g. `completed,failed`.
    status: Option<String>,
}

/// List the files in a vector store, newest first.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path), StoreFileListQuery),
    responses((status = 200, body = Enveloped<VectorStoreFileList>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_store_files(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(VectorStoreRef { vector_store_id }): ApiPath<VectorStoreRef>,
    ApiQuery(query): ApiQuery<StoreFileListQuery>,
) -> Result<Json<Enveloped<VectorStoreFileList>>, ApiError> {
    let (page_number, window, mut problems) =
        match numbered_page(query.page, query.page_size, "page_size") {
            Ok((n, w)) => (n, w, Vec::new()),
            Err(problems) => (1, PageRequest::default(), problems),
        };
    let page_size = window.limit;
    let mut statuses = Vec::new();
    for name in query.status.as_deref().unwrap_or("").split(',') {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        match FileStatus::parse(name) {
            Some(status) => statuses.push(status),
            None => problems.push(FieldError::new(
                "status",
                format!("'{name}' is not one of pending, processing, completed, failed"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let filter = FileFilter {
        statuses,
        search: None,
    };
    let listed = app
        .catalog
        .list_files(auth.organization_id(), &vector_store_id, &filter, window)
        .await
        .map_err(store_error(&vector_store_id))?;
    let total = listed.total;
    Ok(enveloped(
        format!("{} of {total} files", listed.items.len()),
        VectorStoreFileList {
            total,
            page: page_number,
            page_size,
            total_pages: (total + page_size - 1) / page_size,
            files: listed
                .items
                .into_iter()
                .map(VectorStoreFile::from)
                .collect(),
        },
    ))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct AddFile {
    /// The organization file (`file_…`).
    file_id: FileId,
}

/// Add an organization file to a vector store: a link and its processing job. Adding a file
/// that is in the store already answers its link (200) and creates nothing.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path)), request_body = AddFile,
    responses((status = 201, body = Enveloped<VectorStoreFile>), (status = 200, body = Enveloped<VectorStoreFile>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn add_file(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(VectorStoreRef { vector_store_id }): ApiPath<VectorStoreRef>,
    ApiJson(body): ApiJson<AddFile>,
) -> Result<(StatusCode, Json<Enveloped<VectorStoreFile>>), ApiError> {
    let outcome = app
        .catalog
        .link_file(
            auth.organization_id(),
            &vector_store_id,
            &body.file_id,
            auth.key_id(),
        )
        .await
        .map_err(|err| match err {
            kiln_catalog::CatalogError::NotFound(kiln_catalog::Resource::OrgFile) => {
                ApiError::from(err).detail("file_id", body.file_id.as_str())
            }
            other => store_error(&vector_store_id)(other),
        })?;
    Ok(match outcome {
        LinkOutcome::Created(link) => {
            app.waker.wake();
            (
                StatusCode::CREATED,
                enveloped("File added to the vector store", (*link).into()),
            )
        }
        LinkOutcome::Existing(link) => (
            StatusCode::OK,
            enveloped("The file is in the vector store already", (*link).into()),
        ),
    })
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Base64File {
    filename: String,
    /// The file's bytes, base64 (standard alphabet, padding optional).
    content: String,
    /// Informative: the type is detected from the name and content.
    #[allow(dead_code)]
    mime_type: String,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Base64Upload {
    /// 1 to 10 files.
    files: Vec<Base64File>,
}

/// Upload files as base64 into a vector store: each becomes an organization file linked into
/// the store and queued. Files are accepted or refused one by one; if none is accepted, the
/// answer is the first one's error.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files/upload-base64",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path)), request_body = Base64Upload,
    responses((status = 201, body = super::org_files::Batch<VectorStoreFile>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn upload_base64(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(VectorStoreRef { vector_store_id }): ApiPath<VectorStoreRef>,
    ApiJson(body): ApiJson<Base64Upload>,
) -> Result<(StatusCode, Json<super::org_files::Batch<VectorStoreFile>>), ApiError> {
    let org = auth.organization_id().clone();
    app.catalog
        .store_chunking(&org, &vector_store_id)
        .await
        .map_err(store_error(&vector_store_id))?;
    if body.files.is_empty() || body.files.len() > MAX_BATCH_FILES {
        return Err(ApiError::field(
            "files",
            format!("must hold 1 to {MAX_BATCH_FILES} files"),
        ));
    }
    let mut results = super::org_files::BatchResults::new();
    for (index, upload) in body.files.into_iter().enumerate() {
        let outcome = accept_base64(
            &app,
            &org,
            &vector_store_id,
            &upload.filename,
            &upload.content,
            auth.key_id(),
        )
        .await
        .map(VectorStoreFile::from);
        results.push(index, &upload.filename, outcome);
    }
    if results.accepted() > 0 {
        app.waker.wake();
    }
    Ok((StatusCode::CREATED, Json(results.finish("uploaded")?)))
}

/// One base64 file: decoded, stored as an organization file, linked into the store.
async fn accept_base64(
    app: &AppState,
    org: &OrgId,
    store_id: &StoreId,
    filename: &str,
    content: &str,
    by: &str,
) -> Result<FileRecord, ApiError> {
    let name = clean_file_name(Some(filename))?;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(content.trim().trim_end_matches('='))
        .map_err(|err| ApiError::field("content", format!("is not valid base64: {err}")))?;
    let id = FileId::generate();
    let folder = kiln_blobs::Folder::org_file(org, &id);
    let original = folder.original();
    let body = futures::stream::iter([Ok(bytes::Bytes::from(bytes))]);
    let received = crate::ingest::receive(
        app,
        &original,
        &name,
        "content",
        MAX_DIRECT_UPLOAD_BYTES,
        body,
    )
    .await?;
    let created = app
        .catalog
        .create_org_file_in_store(
            NewOrgFile {
                id,
                organization_id: org.clone(),
                file_name: name,
                relative_path: None,
                mime_type: received.file_type.mime_type.to_string(),
                file_size: received.size as i64,
                sha256: Some(received.sha256),
                created_by: by.to_string(),
                blob_path: original.to_string(),
            },
            store_id,
        )
        .await;
    if created.is_err() {
        let _ = app.blobs.delete_prefix(folder.path()).await;
    }
    Ok(created?)
}

/// A file's processing status.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files/{file_id}/status",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, body = Enveloped<ProcessingStatus>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn store_file_status(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(path): ApiPath<StoreFileRef>,
) -> Result<Json<Enveloped<ProcessingStatus>>, ApiError> {
    let org = auth.organization_id();
    let link = link_of(&app, org, &path).await?;
    let (file, lease) = app
        .catalog
        .file_status(org, &path.vector_store_id, &link)
        .await
        .map_err(file_error(&path.vector_store_id, &path.file_id))?;
    Ok(enveloped(
        format!("The file is {}", file.status),
        ProcessingStatus::of(&file, lease),
    ))
}

/// The retry's body, `{}` or this; read by nobody (as in the knowledge family).
#[derive(Deserialize, ToSchema)]
pub(crate) struct RetryBody {
    /// Accepted; a retry always clears the previous error.
    #[allow(dead_code)]
    reset_error: Option<bool>,
}

/// Retry processing a failed file: reset to `pending` and queued again. A file that is
/// pending or processing, or completed, answers 409 as in the knowledge family.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files/{file_id}/retry",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path), ("file_id" = String, Path)),
    request_body = RetryBody,
    responses((status = 200, body = Enveloped<ProcessingStatus>), (status = 409, body = ErrorEnvelope), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn retry_store_file(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(path): ApiPath<StoreFileRef>,
) -> Result<Json<Enveloped<ProcessingStatus>>, ApiError> {
    let org = auth.organization_id();
    let link = link_of(&app, org, &path).await?;
    let outcome = app
        .catalog
        .retry_file(org, &path.vector_store_id, &link, false, auth.key_id())
        .await
        .map_err(file_error(&path.vector_store_id, &path.file_id))?;
    match outcome {
        RetryOutcome::Queued(file) => {
            app.waker.wake();
            Ok(enveloped(
                "Retry queued: the file is pending",
                ProcessingStatus::of(&file, None),
            ))
        }
        RetryOutcome::InProgress(status) => Err(ApiError::new(
            ErrorCode::FileProcessingInProgress,
            format!("The file is {status}; it will end completed or failed on its own"),
        )
        .detail("status", status.as_str())),
        RetryOutcome::AlreadyProcessed => Err(ApiError::new(
            ErrorCode::FileAlreadyProcessed,
            "The file is completed; there is nothing to retry",
        )
        .detail("status", "completed")),
    }
}

/// A file in a vector store.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files/{file_id}",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, body = Enveloped<VectorStoreFile>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_store_file(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(path): ApiPath<StoreFileRef>,
) -> Result<Json<Enveloped<VectorStoreFile>>, ApiError> {
    let org = auth.organization_id();
    let link = link_of(&app, org, &path).await?;
    let file = app
        .catalog
        .get_file(org, &path.vector_store_id, &link)
        .await
        .map_err(file_error(&path.vector_store_id, &path.file_id))?;
    Ok(enveloped("File", file.into()))
}

/// Remove a file from a vector store: its chunks go; the organization file stays (one the
/// knowledge family uploaded goes with its last store).
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files/{file_id}",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn remove_store_file(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(path): ApiPath<StoreFileRef>,
) -> Result<StatusCode, ApiError> {
    let org = auth.organization_id();
    let link = link_of(&app, org, &path).await?;
    let removed = app
        .catalog
        .delete_files(org, &path.vector_store_id, &[link], auth.key_id())
        .await
        .map_err(store_error(&path.vector_store_id))?;
    if removed.is_empty() {
        return Err(file_error(&path.vector_store_id, &path.file_id)(
            kiln_catalog::CatalogError::NotFound(kiln_catalog::Resource::File),
        ));
    }
    app.waker.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StoreFileLogQuery {
    /// Only this attempt's entries.
    attempt: Option<i64>,
    skip: Option<i64>,
    limit: Option<i64>,
}

/// A file's processing log, oldest first (`data` is a page: `items`, `total`, …).
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}/files/{file_id}/logs",
    tag = "Vector store files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path), ("file_id" = String, Path), StoreFileLogQuery),
    responses((status = 200, body = Enveloped<Page<LogEntry>>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn store_file_logs(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(path): ApiPath<StoreFileRef>,
    ApiQuery(query): ApiQuery<StoreFileLogQuery>,
) -> Result<Json<Enveloped<Page<LogEntry>>>, ApiError> {
    let window = page(query.skip, query.limit)?;
    if query.attempt.is_some_and(|a| a < 0) {
        return Err(ApiError::field("attempt", "must be 0 or more"));
    }
    let org = auth.organization_id();
    let link = link_of(&app, org, &path).await?;
    let logs = app
        .catalog
        .file_logs(org, &path.vector_store_id, &link, query.attempt, window)
        .await
        .map_err(file_error(&path.vector_store_id, &path.file_id))?;
    Ok(enveloped(format!("{} log entries", logs.total), logs))
}
