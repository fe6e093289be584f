//! The vector-stores family's stores (`vector-stores-api.md` §4.1): the same stores as the
//! knowledge family's, created without a slice (into the organization's default slice),
//! answered inside `{success, message, data}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kiln_catalog::{NewStore, StorePatch, StoreQuery, StoreSort};
use kiln_core::StoreId;
use kiln_core::model::{PageRequest, Store};
use kiln_core::types::AccessMode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{StoreRef, check_description, double_option};
use crate::AppState;
use crate::auth::{Admin, Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope, FieldError};
use crate::extractors::{ApiJson, ApiPath, ApiQuery, check_name};

/// The family's answer: `{success, message, data}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Enveloped<T> {
    success: bool,
    message: String,
    data: T,
}

/// `data` inside a success envelope.
pub(crate) fn enveloped<T>(message: impl Into<String>, data: T) -> Json<Enveloped<T>> {
    Json(Enveloped {
        success: true,
        message: message.into(),
        data,
    })
}

fn store_error(store_id: &str) -> impl FnOnce(kiln_catalog::CatalogError) -> ApiError + '_ {
    crate::error::store_not_found("vector_store_id", store_id)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct VectorStoreListQuery {
    /// Case-insensitive substring of the name or description.
    search: Option<String>,
    /// `public`, `organization`, `department` or `private`.
    access_mode: Option<AccessMode>,
    /// Accepted and ignored (Kiln has no Flowplate projects).
    flowplate_project_id: Option<String>,
    /// Accepted and ignored.
    flow_id: Option<String>,
    /// Stores to skip, ≥ 0 (default 0).
    skip: Option<i64>,
    /// Stores to return, 1–100 (default 20).
    take: Option<i64>,
    /// `created_at` (default), `updated_at`, `name`, `file_count` or `data_size`.
    sort: Option<String>,
    /// `desc` (default) or `asc`.
    order: Option<String>,
}

/// List vector stores (a bare array in `data`).
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores",
    tag = "Vector stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), VectorStoreListQuery),
    responses((status = 200, body = Enveloped<Vec<Store>>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_vector_stores(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiQuery(query): ApiQuery<VectorStoreListQuery>,
) -> Result<Json<Enveloped<Vec<Store>>>, ApiError> {
    let _ = (&query.flowplate_project_id, &query.flow_id);
    let mut problems = Vec::new();
    let skip = query.skip.unwrap_or(0);
    if skip < 0 {
        problems.push(FieldError::new("skip", "must be 0 or more"));
    }
    let take = query.take.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if !(1..=PageRequest::MAX_LIMIT).contains(&take) {
        problems.push(FieldError::new(
            "take",
            format!("must be between 1 and {}", PageRequest::MAX_LIMIT),
        ));
    }
    let sort = match query.sort.as_deref().unwrap_or("created_at") {
        "created_at" => StoreSort::CreatedAt,
        "updated_at" => StoreSort::UpdatedAt,
        "name" => StoreSort::Name,
        "file_count" => StoreSort::FileCount,
        "data_size" => StoreSort::DataSize,
        _ => {
            problems.push(FieldError::new(
                "sort",
                "must be created_at, updated_at, name, file_count or data_size",
            ));
            StoreSort::CreatedAt
        }
    };
    let ascending = match query.order.as_deref().unwrap_or("desc") {
        "desc" | "DESC" => false,
        "asc" | "ASC" => true,
        _ => {
            problems.push(FieldError::new("order", "must be asc or desc"));
            false
        }
    };
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let filter = StoreQuery {
        slice_id: None,
        access_mode: query.access_mode,
        search: query.search.filter(|s| !s.is_empty()),
        sort,
        ascending,
    };
    let page = app
        .catalog
        .list_stores_by(
            auth.organization_id(),
            &filter,
            PageRequest { skip, limit: take },
        )
        .await?;
    Ok(enveloped(
        format!("{} of {} vector stores", page.items.len(), page.total),
        page.items,
    ))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateVectorStore {
    /// 1–255 characters.
    name: String,
    description: Option<String>,
    /// Default `organization`.
    access_mode: Option<AccessMode>,
    /// Accepted and ignored: Kiln's access is by API key and role.
    access_departments: Option<Vec<String>>,
    /// Accepted and ignored.
    access_users: Option<Vec<String>>,
    /// Accepted and ignored.
    flowplate_project_id: Option<String>,
    /// Accepted and ignored.
    flow_id: Option<String>,
}

/// Create a vector store (in the organization's default slice).
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/vector-stores",
    tag = "Vector stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)), request_body = CreateVectorStore,
    responses((status = 201, body = Enveloped<Store>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_vector_store(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiJson(body): ApiJson<CreateVectorStore>,
) -> Result<(StatusCode, Json<Enveloped<Store>>), ApiError> {
    let _ = (
        &body.access_departments,
        &body.access_users,
        &body.flowplate_project_id,
        &body.flow_id,
    );
    let problems: Vec<_> = [
        check_name("name", &body.name),
        check_description(body.description.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let org = auth.organization_id();
    let slice = app.catalog.default_slice(org, auth.key_id()).await?;
    let store = app
        .catalog
        .create_store(
            org,
            &slice,
            NewStore {
                name: body.name,
                description: body.description,
                access_mode: body.access_mode.unwrap_or(AccessMode::Organization),
            },
            auth.key_id(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        enveloped("Vector store created", store),
    ))
}

/// Get a vector store.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}",
    tag = "Vector stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path)),
    responses((status = 200, body = Enveloped<Store>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_vector_store(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(VectorStoreRef { vector_store_id }): ApiPath<VectorStoreRef>,
) -> Result<Json<Enveloped<Store>>, ApiError> {
    let store = app
        .catalog
        .get_store(auth.organization_id(), &vector_store_id)
        .await
        .map_err(store_error(&vector_store_id))?;
    Ok(enveloped("Vector store", store))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateVectorStore {
    name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    access_mode: Option<AccessMode>,
    /// Accepted and ignored.
    access_departments: Option<Vec<String>>,
    /// Accepted and ignored.
    access_users: Option<Vec<String>>,
    /// Accepted and ignored.
    flowplate_project_id: Option<String>,
    /// Accepted and ignored.
    flow_id: Option<String>,
}

/// Update a vector store's name, description or access mode.
#[utoipa::path(patch, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}",
    tag = "Vector stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path)),
    request_body = UpdateVectorStore,
    responses((status = 200, body = Enveloped<Store>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_vector_store(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(VectorStoreRef { vector_store_id }): ApiPath<VectorStoreRef>,
    ApiJson(body): ApiJson<UpdateVectorStore>,
) -> Result<Json<Enveloped<Store>>, ApiError> {
    let _ = (
        &body.access_departments,
        &body.access_users,
        &body.flowplate_project_id,
        &body.flow_id,
    );
    let problems: Vec<_> = [
        body.name.as_deref().and_then(|n| check_name("name", n)),
        check_description(body.description.as_ref().and_then(|d| d.as_deref())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let patch = StorePatch {
        name: body.name,
        description: body.description,
        access_mode: body.access_mode,
        slice_id: None,
    };
    let store = app
        .catalog
        .update_store(auth.organization_id(), &vector_store_id, patch)
        .await
        .map_err(store_error(&vector_store_id))?;
    Ok(enveloped("Vector store updated", store))
}

/// Delete a vector store: its links and chunks go; organization files stay in the
/// organization (files uploaded through the knowledge family go with their last store).
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/vector-stores/{vector_store_id}",
    tag = "Vector stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("vector_store_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_vector_store(
    state: State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(VectorStoreRef { vector_store_id }): ApiPath<VectorStoreRef>,
) -> Result<StatusCode, ApiError> {
    super::stores::delete_store(
        state,
        auth,
        ApiPath(StoreRef {
            store_id: vector_store_id,
        }),
    )
    .await
}

/// A path naming a vector store.
#[derive(Deserialize)]
pub(crate) struct VectorStoreRef {
    pub vector_store_id: StoreId,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VectorStoreUsageItem {
    vector_store_id: StoreId,
    vector_store_name: String,
    /// Bytes of the originals in the store.
    data_size_bytes: i64,
    data_size_mb: f64,
    file_count: i64,
    /// This store's share of `total_size_bytes`, in percent.
    usage_percentage: f64,
    /// A color for charts, stable per store.
    color: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VectorStoreUsage {
    /// Sum of the stores' `data_size_bytes` (a file in two stores counts in each).
    total_size_bytes: i64,
    total_size_mb: f64,
    /// Sum of the stores' file counts.
    total_files: i64,
    vector_store_count: i64,
    vector_stores: Vec<VectorStoreUsageItem>,
    /// Kiln: every byte stored per store — originals, extracted text, vectors, index.
    total_bytes: i64,
}

const PALETTE: [&str; 8] = [
    "#4F46E5", "#059669", "#D97706", "#DC2626", "#0891B2", "#7C3AED", "#65A30D", "#DB2777",
];

fn mb(bytes: i64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0
}

/// The organization's usage, per store.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/vector-stores/usage",
    tag = "Vector stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)),
    responses((status = 200, body = Enveloped<VectorStoreUsage>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn vector_store_usage(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
) -> Result<Json<Enveloped<VectorStoreUsage>>, ApiError> {
    let per_store = app
        .catalog
        .organization_usage(auth.organization_id())
        .await?;
    let total_size_bytes: i64 = per_store.iter().map(|(_, _, u)| u.original_bytes).sum();
    let vector_stores = per_store
        .iter()
        .map(|(id, name, u)| VectorStoreUsageItem {
            vector_store_id: id.clone(),
            vector_store_name: name.clone(),
            data_size_bytes: u.original_bytes,
            data_size_mb: mb(u.original_bytes),
            file_count: u.file_count,
            usage_percentage: if total_size_bytes > 0 {
                (u.original_bytes as f64 * 10_000.0 / total_size_bytes as f64).round() / 100.0
            } else {
                0.0
            },
            color: PALETTE[id.bytes().map(usize::from).sum::<usize>() % PALETTE.len()].to_string(),
        })
        .collect();
    let usage = VectorStoreUsage {
        total_size_bytes,
        total_size_mb: mb(total_size_bytes),
        total_files: per_store.iter().map(|(_, _, u)| u.file_count).sum(),
        vector_store_count: per_store.len() as i64,
        vector_stores,
        total_bytes: per_store.iter().map(|(_, _, u)| u.total_bytes).sum(),
    };
    Ok(enveloped("Vector store usage", usage))
}
