//! Knowledge slices (contract §4). Mutations need `admin`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kiln_catalog::{NewSlice, SliceFilter, SlicePatch};
use kiln_core::model::{Page, Slice};
use kiln_core::types::{OwnerType, SliceStatus, SliceType};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{SliceRef, check_description, double_option};
use crate::AppState;
use crate::auth::{Admin, Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope, not_found_as};
use crate::extractors::{ApiJson, ApiPath, ApiQuery, check_name, page};

#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateSlice {
    /// 1–255 characters.
    name: String,
    description: Option<String>,
    /// Default `standard`.
    #[serde(rename = "type")]
    slice_type: Option<SliceType>,
    /// Default `organization`.
    owner_type: Option<OwnerType>,
    owner_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateSlice {
    name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SliceQuery {
    /// `active` (default) or `archived`.
    status: Option<SliceStatus>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    slice_type: Option<SliceType>,
    /// ≥ 0, default 0.
    skip: Option<i64>,
    /// 1–100, default 20.
    limit: Option<i64>,
}

/// Create a knowledge slice.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/knowledge/slices",
    tag = "Knowledge slices", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)), request_body = CreateSlice,
    responses((status = 201, body = Slice), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_slice(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiJson(body): ApiJson<CreateSlice>,
) -> Result<(StatusCode, Json<Slice>), ApiError> {
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
    let new = NewSlice {
        name: body.name,
        description: body.description,
        slice_type: body.slice_type.unwrap_or(SliceType::Standard),
        owner_type: body.owner_type.unwrap_or(OwnerType::Organization),
        owner_id: body.owner_id,
    };
    let slice = app
        .catalog
        .create_slice(auth.organization_id(), new, auth.key_id())
        .await?;
    Ok((StatusCode::CREATED, Json(slice)))
}

/// List knowledge slices; archived ones only with `status=archived`.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/knowledge/slices",
    tag = "Knowledge slices", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), SliceQuery),
    responses((status = 200, body = Page<Slice>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_slices(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiQuery(query): ApiQuery<SliceQuery>,
) -> Result<Json<Page<Slice>>, ApiError> {
    let window = page(query.skip, query.limit)?;
    let filter = SliceFilter {
        status: query.status.unwrap_or(SliceStatus::Active),
        slice_type: query.slice_type,
    };
    Ok(Json(
        app.catalog
            .list_slices(auth.organization_id(), filter, window)
            .await?,
    ))
}

/// Get a knowledge slice.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/knowledge/slices/{slice_id}",
    tag = "Knowledge slices", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("slice_id" = String, Path)),
    responses((status = 200, body = Slice), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_slice(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(SliceRef { slice_id }): ApiPath<SliceRef>,
) -> Result<Json<Slice>, ApiError> {
    let slice = app
        .catalog
        .get_slice(auth.organization_id(), &slice_id)
        .await
        .map_err(not_found_as("slice_id", &slice_id))?;
    Ok(Json(slice))
}

/// Rename or re-describe a knowledge slice (not an archived one).
#[utoipa::path(patch, path = "/v1/organizations/{organization_id}/knowledge/slices/{slice_id}",
    tag = "Knowledge slices", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("slice_id" = String, Path)),
    request_body = UpdateSlice,
    responses((status = 200, body = Slice), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_slice(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(SliceRef { slice_id }): ApiPath<SliceRef>,
    ApiJson(body): ApiJson<UpdateSlice>,
) -> Result<Json<Slice>, ApiError> {
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
    let patch = SlicePatch {
        name: body.name,
        description: body.description,
    };
    let slice = app
        .catalog
        .update_slice(auth.organization_id(), &slice_id, patch)
        .await
        .map_err(not_found_as("slice_id", &slice_id))?;
    Ok(Json(slice))
}

/// Archive a knowledge slice. Archiving an archived slice changes nothing.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/knowledge/slices/{slice_id}/archive",
    tag = "Knowledge slices", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("slice_id" = String, Path)),
    responses((status = 200, body = Slice), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn archive_slice(
    State(app): State<AppState>,
    auth: Authorized<Admin>,
    ApiPath(SliceRef { slice_id }): ApiPath<SliceRef>,
) -> Result<Json<Slice>, ApiError> {
    let slice = app
        .catalog
        .archive_slice(auth.organization_id(), &slice_id, auth.key_id())
        .await
        .map_err(not_found_as("slice_id", &slice_id))?;
    Ok(Json(slice))
}
