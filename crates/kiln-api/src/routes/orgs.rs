//! Organizations (contract §2): a key sees its own organization only.

use axum::Json;
use axum::extract::State;
use kiln_core::model::Organization;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope};

#[derive(Serialize, ToSchema)]
pub(crate) struct OrganizationList {
    organizations: Vec<Organization>,
    total: i64,
    skip: i64,
    limit: i64,
}

/// The key's own organization, as a list (what the Aitronos SDK expects).
#[utoipa::path(get, path = "/v1/organizations", tag = "Organizations",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = OrganizationList), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_organizations(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
) -> Result<Json<OrganizationList>, ApiError> {
    let org = app.catalog.get_organization(auth.organization_id()).await?;
    Ok(Json(OrganizationList {
        organizations: vec![org],
        total: 1,
        skip: 0,
        limit: 1,
    }))
}

/// One organization: only the key's own.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}", tag = "Organizations",
    security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path, description = "`org_…`")),
    responses((status = 200, body = Organization), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_organization(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
) -> Result<Json<Organization>, ApiError> {
    Ok(Json(
        app.catalog.get_organization(auth.organization_id()).await?,
    ))
}
