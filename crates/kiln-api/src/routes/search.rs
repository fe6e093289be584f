//! Search endpoints (contract §11). Need `reader`.

use axum::Json;
use axum::extract::State;
use kiln_catalog::SearchStore;
use kiln_core::{OrgId, StoreId};

use super::StoreRef;
use crate::AppState;
use crate::auth::{Authorized, Reader};
use crate::error::{ApiError, ErrorEnvelope, FieldError};
use crate::extractors::{ApiJson, ApiPath};
use crate::search::{KnowledgeSearchRequest, MAX_STORES, SearchRequest, SearchResponse, search};

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
    let store = checked_store(&app, org, &store_id).await?;
    Ok(Json(search(&app, org, vec![store], body).await?))
}

/// Search several stores of the organization at once: those named in `store_ids`, or every
/// store of `slice_id`. A store or slice of another organization is 404, like a missing one.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/knowledge/search",
    tag = "Search", security(("bearer" = []), ("api_key" = [])),
    params(("organization_id" = String, Path)), request_body = KnowledgeSearchRequest,
    responses((status = 200, body = SearchResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn search_knowledge(
    State(app): State<AppState>,
    auth: Authorized<Reader>,
    ApiJson(body): ApiJson<KnowledgeSearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let org = auth.organization_id();
    let stores = match (body.store_ids, body.slice_id) {
        (Some(ids), None) if (1..=MAX_STORES).contains(&ids.len()) => {
            let mut stores: Vec<SearchStore> = Vec::with_capacity(ids.len());
            for id in ids {
                if !stores.iter().any(|known| known.id == id) {
                    stores.push(checked_store(&app, org, &id).await?);
                }
            }
            stores
        }
        (Some(_), None) => {
            return Err(ApiError::validation(vec![FieldError::new(
                "store_ids",
                format!("must name 1 to {MAX_STORES} stores"),
            )]));
        }
        (None, Some(slice_id)) => app
            .catalog
            .slice_search_stores(org, &slice_id)
            .await
            .map_err(crate::error::not_found_as("slice_id", &slice_id))?,
        (store_ids, _) => {
            let message = if store_ids.is_some() {
                "give either store_ids or slice_id, not both"
            } else {
                "one of store_ids or slice_id is required"
            };
            return Err(ApiError::validation(vec![
                FieldError::new("store_ids", message),
                FieldError::new("slice_id", message),
            ]));
        }
    };
    Ok(Json(search(&app, org, stores, body.search).await?))
}

async fn checked_store(
    app: &AppState,
    org: &OrgId,
    store_id: &StoreId,
) -> Result<SearchStore, ApiError> {
    app.catalog
        .store_for_search(org, store_id)
        .await
        .map_err(crate::error::not_found_as("store_id", store_id))
}
