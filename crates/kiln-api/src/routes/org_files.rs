//! The organization's files (`vector-stores-api.md` §4.3): originals that exist without a
//! store, uploaded in batches (multipart, or signed URLs for large ones), added to stores by
//! the vector-store-files routes. Answers are not enveloped (the client's models are bare).

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kiln_catalog::{CatalogError, NewOrgFile, Resource};
use kiln_core::model::OrgFile;
use kiln_core::{ErrorCode, FileId, OrgId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::files::{MAX_DIRECT_UPLOAD_BYTES, clean_file_name, multipart_error};
use super::store_files::MAX_BATCH_FILES;
use super::uploads::{UploadUrlRequest, UploadUrlResponse, assemble, start_upload, upload_folder};
use crate::AppState;
use crate::auth::{Authorized, Editor, Reader};
use crate::error::{ApiError, ErrorEnvelope};
use crate::extractors::{ApiJson, ApiPath, ApiQuery, numbered_page};

/// An organization file.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrgFileView {
    /// `file_…`.
    id: FileId,
    original_filename: String,
    file_size: i64,
    mime_type: String,
    /// Where the original is in Kiln's blob storage (relative to its root).
    storage_path: String,
    organization_id: OrgId,
    uploaded_by: Option<String>,
    uploaded_by_api_key_id: Option<String>,
    uploaded_at: Timestamp,
    sha256: Option<String>,
    relative_path: Option<String>,
}

impl From<OrgFile> for OrgFileView {
    fn from(f: OrgFile) -> Self {
        OrgFileView {
            id: f.id,
            original_filename: f.file_name,
            file_size: f.file_size,
            mime_type: f.mime_type,
            storage_path: f.blob_path,
            organization_id: f.organization_id,
            uploaded_by: f.created_by.clone(),
            uploaded_by_api_key_id: f.created_by,
            uploaded_at: f.created_at,
            sha256: f.sha256,
            relative_path: f.relative_path,
        }
    }
}

/// The answer to a batch: what was accepted, and why the rest was not.
#[derive(Serialize, ToSchema)]
pub(crate) struct Batch<T> {
    /// Whether every file was accepted.
    success: bool,
    message: String,
    files: Vec<T>,
    total_uploaded: i64,
    total_failed: i64,
    /// One per refused file: `index`, `filename`, `error_code`, `status`, `message`, `details`.
    errors: Vec<Value>,
}

/// Gathers a batch's per-file outcomes. A batch none of whose files was accepted is an error
/// (the first file's, with every file's in its details), so a single-file caller sees the
/// status it would see in the knowledge family.
pub(crate) struct BatchResults<T> {
    files: Vec<T>,
    errors: Vec<(Value, ApiError)>,
}

impl<T> BatchResults<T> {
    pub(crate) fn new() -> Self {
        BatchResults {
            files: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, index: usize, filename: &str, outcome: Result<T, ApiError>) {
        match outcome {
            Ok(file) => self.files.push(file),
            Err(err) => {
                let entry = json!({
                    "index": index,
                    "filename": filename,
                    "error_code": err.code.as_str(),
                    "status": err.code.status(),
                    "message": err.system_message,
                    "details": err.details,
                });
                self.errors.push((entry, err));
            }
        }
    }

    pub(crate) fn accepted(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn finish(self, what: &str) -> Result<Batch<T>, ApiError> {
        let errors: Vec<Value> = self.errors.iter().map(|(e, _)| e.clone()).collect();
        if self.files.is_empty() {
            let (_, first) = self.errors.into_iter().next().ok_or_else(|| {
                ApiError::field("files", format!("must hold 1 to {MAX_BATCH_FILES} files"))
            })?;
            return Err(first.detail("errors", Value::Array(errors)));
        }
        let (accepted, failed) = (self.files.len() as i64, errors.len() as i64);
        Ok(Batch {
            success: failed == 0,
            message: format!("{accepted} {what}, {failed} failed"),
            files: self.files,
            total_uploaded: accepted,
            total_failed: failed,
            errors,
        })
    }
}

/// Upload files to the organization (multipart: one part `files` per file, up to 10). Each
/// streams to storage while it is hashed; its type is detected from content.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/files/upload",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "`files`, repeated (1 to 10)"),
    responses((status = 201, body = Batch<OrgFileView>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn upload_org_files(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    request: Request,
) -> Result<(StatusCode, Json<Batch<OrgFileView>>), ApiError> {
    let org = auth.organization_id().clone();
    let mut multipart = Multipart::from_request(request, &app).await.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("Expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let mut results = BatchResults::new();
    let mut index = 0;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if !matches!(field.name(), Some("files" | "file")) {
            continue; // Unknown fields are skipped.
        }
        let filename = field.file_name().unwrap_or("").to_string();
        if index >= MAX_BATCH_FILES {
            // Refused unread: the batch's first ten files stand.
            let refused = ApiError::field(
                "files",
                format!("a request holds at most {MAX_BATCH_FILES} files"),
            );
            results.push(index, &filename, Err(refused));
            index += 1;
            continue;
        }
        let outcome: Result<OrgFileView, ApiError> = async {
            let name = clean_file_name(Some(&filename))?;
            let id = FileId::generate();
            let folder = kiln_blobs::Folder::org_file(&org, &id);
            let original = folder.original();
            let received = crate::ingest::receive(
                &app,
                &original,
                &name,
                "files",
                MAX_DIRECT_UPLOAD_BYTES,
                field.map(|chunk| chunk.map_err(multipart_error)),
            )
            .await?;
            let created = app
                .catalog
                .create_org_file(NewOrgFile {
                    id,
                    organization_id: org.clone(),
                    file_name: name,
                    relative_path: None,
                    mime_type: received.file_type.mime_type.to_string(),
                    file_size: received.size as i64,
                    sha256: Some(received.sha256),
                    created_by: auth.key_id().to_string(),
                    blob_path: original.to_string(),
                })
                .await;
            if created.is_err() {
                let _ = app.blobs.delete_prefix(folder.path()).await;
            }
            Ok(OrgFileView::from(created?))
        }
        .await;
        // A body cut short or malformed ends the whole request.
        if let Err(err) = &outcome
            && err.code == ErrorCode::InvalidRequest
        {
            return Err(outcome.err().unwrap_or_else(ApiError::internal));
        }
        results.push(index, &filename, outcome);
        index += 1;
    }
    if index == 0 {
        return Err(ApiError::field(
            "files",
            "is required: send each document as a multipart part named 'files'",
        ));
    }
    Ok((StatusCode::CREATED, Json(results.finish("uploaded")?)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct UploadUrlBatch {
    /// 1 to 10 files, each as the knowledge family's upload-url takes it (`file_name` or
    /// `filename`, `file_size`, `mime_type`, optional `sha256`, `relative_path`).
    files: Vec<UploadUrlRequest>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UploadUrlBatchResponse {
    success: bool,
    message: String,
    /// One signed URL per accepted file; `PUT` its bytes there, then register the
    /// `upload_id`s with `POST .../files`.
    uploads: Vec<UploadUrlResponse>,
    total: i64,
    total_failed: i64,
    errors: Vec<Value>,
}

/// Start uploads through signed URLs (large or resumable files); register them when complete.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/files/upload-url",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)), request_body = UploadUrlBatch,
    responses((status = 201, body = UploadUrlBatchResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn org_upload_url(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UploadUrlBatch>,
) -> Result<(StatusCode, Json<UploadUrlBatchResponse>), ApiError> {
    if body.files.is_empty() || body.files.len() > MAX_BATCH_FILES {
        return Err(ApiError::field(
            "files",
            format!("must hold 1 to {MAX_BATCH_FILES} files"),
        ));
    }
    let mut results = BatchResults::new();
    for (index, file) in body.files.into_iter().enumerate() {
        let name = file.file_name.clone();
        let started = start_upload(
            &app,
            auth.organization_id(),
            "",
            &headers,
            file,
            auth.key_id(),
        )
        .await;
        results.push(index, &name, started);
    }
    let batch = results.finish("started")?;
    Ok((
        StatusCode::CREATED,
        Json(UploadUrlBatchResponse {
            success: batch.success,
            message: batch.message,
            total: batch.total_uploaded,
            total_failed: batch.total_failed,
            uploads: batch.files,
            errors: batch.errors,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterEntry {
    upload_id: String,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterBatch {
    /// `[{"upload_id": …}]`, 1 to 10.
    #[serde(default)]
    files: Vec<RegisterEntry>,
    /// Or the IDs alone.
    #[serde(default)]
    upload_ids: Vec<String>,
}

/// Register complete uploads as organization files.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/files",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)), request_body = RegisterBatch,
    responses((status = 201, body = Batch<OrgFileView>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn register_org_files(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiJson(body): ApiJson<RegisterBatch>,
) -> Result<(StatusCode, Json<Batch<OrgFileView>>), ApiError> {
    let ids: Vec<String> = body
        .files
        .into_iter()
        .map(|f| f.upload_id)
        .chain(body.upload_ids)
        .collect();
    if ids.is_empty() || ids.len() > MAX_BATCH_FILES {
        return Err(ApiError::field(
            "files",
            format!("must name 1 to {MAX_BATCH_FILES} uploads"),
        ));
    }
    let org = auth.organization_id();
    let mut results = BatchResults::new();
    for (index, id) in ids.iter().enumerate() {
        let outcome = register_one(&app, org, id, auth.key_id()).await;
        results.push(index, id, outcome);
    }
    Ok((StatusCode::CREATED, Json(results.finish("registered")?)))
}

async fn register_one(
    app: &AppState,
    org: &OrgId,
    upload_id: &str,
    by: &str,
) -> Result<OrgFileView, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::UploadNotFound,
            "No pending organization upload with this id: it expired, was registered already, or never existed",
        )
        .detail("upload_id", upload_id)
    };
    let upload = match app.catalog.upload(upload_id).await {
        Ok(upload) if upload.organization_id == *org && upload.store_id.is_empty() => upload,
        Ok(_) | Err(CatalogError::NotFound(_)) => return Err(not_found()),
        Err(err) => return Err(err.into()),
    };
    let (file_type, sha256, original) = assemble(app, &upload, not_found).await?;
    let created = app
        .catalog
        .register_org_upload(NewOrgFile {
            id: upload.id.clone(),
            organization_id: org.clone(),
            file_name: upload.file_name.clone(),
            relative_path: upload.relative_path.clone(),
            mime_type: file_type.mime_type.to_string(),
            file_size: upload.file_size,
            sha256: Some(sha256),
            created_by: by.to_string(),
            blob_path: original.to_string(),
        })
        .await;
    match created {
        Ok(file) => {
            let _ = app
                .blobs
                .delete_prefix(&upload_folder(&upload).parts())
                .await;
            Ok(file.into())
        }
        // Another registration won the race; its original is the same bytes: leave it.
        Err(CatalogError::NotFound(Resource::Upload)) => Err(not_found()),
        Err(err) => Err(err.into()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrgFileListQuery {
    /// From 1 (default 1).
    page: Option<i64>,
    /// 1–100 (default 20).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OrgFileList {
    files: Vec<OrgFileView>,
    total: i64,
    page: i64,
    limit: i64,
    has_more: bool,
}

/// List the organization's files, newest first.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/files",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), OrgFileListQuery),
    responses((status = 200, body = OrgFileList), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_org_files(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiQuery(query): ApiQuery<OrgFileListQuery>,
) -> Result<Json<OrgFileList>, ApiError> {
    let (page_number, window) =
        numbered_page(query.page, query.limit, "limit").map_err(ApiError::validation)?;
    let listed = app
        .catalog
        .list_org_files(auth.organization_id(), window)
        .await?;
    Ok(Json(OrgFileList {
        has_more: listed.has_more,
        total: listed.total,
        page: page_number,
        limit: window.limit,
        files: listed.items.into_iter().map(OrgFileView::from).collect(),
    }))
}

/// A path naming an organization file.
#[derive(Deserialize)]
pub(crate) struct OrgFilePath {
    organization_id: OrgId,
    file_id: FileId,
}

fn org_file_error(file_id: &str) -> impl FnOnce(CatalogError) -> ApiError + '_ {
    crate::error::not_found_as("file_id", file_id)
}

/// Get an organization file.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/files/{file_id}",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, body = OrgFileView), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_org_file(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(path): ApiPath<OrgFilePath>,
) -> Result<Json<OrgFileView>, ApiError> {
    let file = app
        .catalog
        .get_org_file(auth.organization_id(), &path.file_id)
        .await
        .map_err(org_file_error(&path.file_id))?;
    Ok(Json(file.into()))
}

/// Delete an organization file: gone from every store at once (chunks purged), then its
/// original is purged.
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/files/{file_id}",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_org_file(
    State(app): State<AppState>,
    auth: Authorized<Editor>,
    ApiPath(path): ApiPath<OrgFilePath>,
) -> Result<StatusCode, ApiError> {
    app.catalog
        .delete_org_file(auth.organization_id(), &path.file_id, auth.key_id())
        .await
        .map_err(org_file_error(&path.file_id))?;
    app.waker.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct FileContent {
    file_id: FileId,
    filename: String,
    mime_type: String,
    file_size: i64,
    /// Signed and expiring (the upload URL lifetime): `GET` it without an API key.
    download_url: String,
    expires_at: Timestamp,
}

/// What a download token signs (apart from upload URLs' signatures).
fn download_subject(file_id: &str) -> String {
    format!("download:{file_id}")
}

/// A signed, expiring download URL for an organization file.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/files/{file_id}/content",
    tag = "Organization files", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, body = FileContent), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn org_file_content(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    headers: HeaderMap,
    ApiPath(path): ApiPath<OrgFilePath>,
) -> Result<Json<FileContent>, ApiError> {
    let file = app
        .catalog
        .get_org_file(auth.organization_id(), &path.file_id)
        .await
        .map_err(org_file_error(&path.file_id))?;
    let ttl = app.http.upload_url_ttl_secs.max(60) as i64;
    let expires = Timestamp::now().millis() / 1000 + ttl;
    let token = app.upload_signer.sign(&download_subject(&file.id), expires);
    Ok(Json(FileContent {
        download_url: format!(
            "{}/v1/organizations/{}/files/{}/download?token={token}&expires={expires}",
            super::uploads::public_base(&app, &headers),
            file.organization_id,
            file.id
        ),
        file_id: file.id,
        filename: file.file_name,
        mime_type: file.mime_type,
        file_size: file.file_size,
        expires_at: Timestamp(expires * 1000),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadQuery {
    /// From `.../content`'s `download_url`.
    token: Option<String>,
    /// Unix seconds.
    expires: Option<i64>,
}

/// Download an organization file's original: with the signed `token` and `expires` of its
/// `download_url` (no API key needed), or with an API key.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/files/{file_id}/download",
    tag = "Organization files",
    params(("organization_id" = String, Path), ("file_id" = String, Path), DownloadQuery),
    responses((status = 200, description = "The original's bytes"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn download_org_file(
    State(app): State<AppState>,
    auth: Result<Authorized<Reader>, ApiError>,
    ApiPath(path): ApiPath<OrgFilePath>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    let signed = match (&query.token, query.expires) {
        (Some(token), Some(expires)) => {
            if expires < Timestamp::now().millis() / 1000 {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "This download URL has expired; ask .../content for a new one",
                ));
            }
            if !app
                .upload_signer
                .verify(&download_subject(&path.file_id), expires, token)
            {
                return Err(ApiError::new(
                    ErrorCode::AuthenticationRequired,
                    "The download token is not valid for this file",
                ));
            }
            true
        }
        _ => false,
    };
    if !signed {
        auth?;
    }
    let file = app
        .catalog
        .get_org_file(&path.organization_id, &path.file_id)
        .await
        .map_err(org_file_error(&path.file_id))?;
    let stream = app
        .blobs
        .get_stream(&file.blob_path.as_str().into())
        .await?
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(&file.mime_type) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.file_size));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file.file_name.replace(['"', '\\'], "_")
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
