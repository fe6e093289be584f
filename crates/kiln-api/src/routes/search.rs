//! Search endpoints (contract §11). Need `reader`.

use axum::Json;
use axum::extract::State;

use super::StoreRef;
use crate::AppState;
use crate::auth::{Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{ApiJson, ApiPath};
use crate::search::{SearchRequest, SearchResponse, search};

/// Search one store.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/stores/{store_id}/search",
    tag = "Search", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path), ("store_id" = String, Path)), request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn search_store(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiPath(StoreRef { store_id }): ApiPath<StoreRef>,
    ApiJson(body): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let org = auth.organization_id();
    app.catalog
        .get_store(org, &store_id)
        .await
        .map_err(|e| ApiError::from(e).detail_if_not_found("store_id", &store_id))?;
    Ok(Json(search(&app, org, vec![store_id], body).await?))
}
