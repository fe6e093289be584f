//! Stores (contract §4). Mutations need `admin`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kiln_catalog::{NewStore, StorePatch};
use kiln_core::model::{Page, Store};
use kiln_core::types::AccessMode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{SliceRef, StoreRef, check_description, double_option};
use crate::AppState;
use crate::auth::{Admin, Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope, not_found_as};
use crate::extractors::{ApiJson, ApiPath, ApiQuery, check_name, page};

#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateStore {
    /// 1–255 characters.
    name: String,
    description: Option<String>,
    /// Default `organization`.
    access_mode: Option<AccessMode>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateStore {
    name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    access_mode: Option<AccessMode>,
    /// Moves the store into another active slice.
    slice_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// ≥ 0, default 0.
    skip: Option<i64>,
    /// 1–100, default 20.
    limit: Option<i64>,
}

/// Create a store in a slice (not an archived one).
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/knowledge/slices/{slice_id}/stores",
    tag = "Stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("slice_id" = String, Path)),
    request_body = CreateStore,
    responses((status = 201, body = Store), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_store(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(SliceRef { slice_id }): ApiPath<SliceRef>,
    ApiJson(body): ApiJson<CreateStore>,
) -> Result<(StatusCode, Json<Store>), ApiError> {
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
    let new = NewStore {
        name: body.name,
        description: body.description,
        access_mode: body.access_mode.unwrap_or(AccessMode::Organization),
    };
    let store = app
        .catalog
        .create_store(auth.organization_id(), &slice_id, new, auth.key_id())
        .await
        .map_err(not_found_as("slice_id", &slice_id))?;
    Ok((StatusCode::CREATED, Json(store)))
}

/// List the stores of a slice.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/knowledge/slices/{slice_id}/stores",
    tag = "Stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("slice_id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Store>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_slice_stores(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(SliceRef { slice_id }): ApiPath<SliceRef>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Store>>, ApiError> {
    let window = page(query.skip, query.limit)?;
    // An unknown slice is a 404, not an empty list.
    app.catalog
        .get_slice(auth.organization_id(), &slice_id)
        .await
        .map_err(not_found_as("slice_id", &slice_id))?;
    Ok(Json(
        app.catalog
            .list_stores(auth.organization_id(), Some(&slice_id), window)
            .await?,
    ))
}

/// List all stores of the organization.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/knowledge/stores",
    tag = "Stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Store>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_stores(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Store>>, ApiError> {
    let window = page(query.skip, query.limit)?;
    Ok(Json(
        app.catalog
            .list_stores(auth.organization_id(), None, window)
            .await?,
    ))
}

/// Get a store with its file figures.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/knowledge/stores/{store_id}",
    tag = "Stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    responses((status = 200, body = Store), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_store(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
) -> Result<Json<Store>, ApiError> {
    let store = app
        .catalog
        .get_store(auth.organization_id(), &store_id)
        .await
        .map_err(not_found_as("store_id", &store_id))?;
    Ok(Json(store))
}

/// Update a store's name, description, access mode or slice.
#[utoipa::path(patch, path = "/v1/organizations/{organization_id}/knowledge/stores/{store_id}",
    tag = "Stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    request_body = UpdateStore,
    responses((status = 200, body = Store), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_store(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    ApiJson(body): ApiJson<UpdateStore>,
) -> Result<Json<Store>, ApiError> {
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
    let target_slice = body.slice_id.clone();
    let patch = StorePatch {
        name: body.name,
        description: body.description,
        access_mode: body.access_mode,
        slice_id: body.slice_id,
    };
    let store = app
        .catalog
        .update_store(auth.organization_id(), &store_id, patch)
        .await
        .map_err(|err| match (&err, target_slice) {
            (kiln_catalog::CatalogError::NotFound(kiln_catalog::Resource::Slice), Some(slice)) => {
                ApiError::from(err).detail("slice_id", slice)
            }
            _ => ApiError::from(err).detail_if_not_found("store_id", &store_id),
        })?;
    Ok(Json(store))
}

/// Delete a store and everything in it.
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/knowledge/stores/{store_id}",
    tag = "Stores", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_store(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
) -> Result<StatusCode, ApiError> {
    let org = auth.organization_id();
    app.catalog
        .delete_store(org, &store_id)
        .await
        .map_err(not_found_as("store_id", &store_id))?;
    // The store is gone; its purge job deletes whatever this leaves.
    if let Err(err) =
        kiln_pipeline::purge_store_blobs(&app.catalog, &app.blobs, org, &store_id).await
    {
        tracing::warn!(error = %err, "deleting a store's blobs (its purge job retries)");
    }
    Ok(StatusCode::NO_CONTENT)
}
