//! Search over stores (contract §11): keyword (BM25), semantic (vectors) or hybrid (a
//! weighted sum of both lists' normalised scores). Only completed, undeleted files' active
//! generations are searchable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_catalog::{SearchStore, SearchableFile};
use kiln_core::{ErrorCode, FileId, OrgId, StoreId};
use kiln_index::{Hit, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, FieldError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Semantic,
    Keyword,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Filters {
    pub file_ids: Option<Vec<String>>,
    pub relative_path_prefix: Option<String>,
    pub mime_types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchRequest {
    /// 1–4000 characters (may be omitted in `semantic` mode with `query_vector`).
    pub query: Option<String>,
    /// A query vector of the store's dimensions; skips embedding the query.
    pub query_vector: Option<Vec<f32>>,
    /// 1–100, default 10.
    pub top_k: Option<i64>,
    pub mode: Option<Mode>,
    pub filters: Option<Filters>,
    pub score_threshold: Option<f32>,
}

/// The longest a search waits for this node's index replica to catch up with the log.
const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A search over several stores of the organization: either `store_ids` or `slice_id`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct KnowledgeSearchRequest {
    /// 1–100 stores of the organization.
    pub store_ids: Option<Vec<StoreId>>,
    /// Every store of this slice.
    pub slice_id: Option<String>,
    #[serde(flatten)]
    pub search: SearchRequest,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub store_id: StoreId,
    /// The store's name (an extension of the contract's fields).
    pub store_name: String,
    pub file_id: FileId,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub chunk_index: u32,
    pub text: String,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub query: Option<String>,
    pub mode: Mode,
    pub results: Vec<SearchResult>,
    pub took_ms: u64,
}

/// The most stores one search may name in `store_ids`.
pub const MAX_STORES: usize = 100;

/// A store's searchable files by ID.
type Files = Arc<HashMap<String, SearchableFile>>;

/// Each store's searchable files as of a search version. A search asks the catalog only for
/// the store's version (with its name) and reads its files again when the version moved, so
/// a store of many files costs no per-search file scan. Several servers sharing a catalog
/// stay right: the version lives in the catalog, raised in the transactions that change
/// what is searchable.
#[derive(Default)]
pub struct SearchableCache {
    stores: Mutex<HashMap<StoreId, (i64, Files)>>,
}

impl SearchableCache {
    async fn files(
        &self,
        app: &AppState,
        organization_id: &OrgId,
        store: &SearchStore,
    ) -> Result<Files, ApiError> {
        if let Some((version, files)) = self.lock().get(&store.id)
            && *version == store.search_version
        {
            return Ok(files.clone());
        }
        // Read after the version: files at least as new as it, so keeping them is safe.
        let files: Files = Arc::new(
            app.catalog
                .searchable_files(organization_id, std::slice::from_ref(&store.id))
                .await?,
        );
        self.lock()
            .insert(store.id.clone(), (store.search_version, files.clone()));
        Ok(files)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StoreId, (i64, Files)>> {
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Searches `stores` (already checked to be the organization's).
pub async fn search(
    app: &AppState,
    organization_id: &OrgId,
    stores: Vec<SearchStore>,
    request: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    let started = Instant::now();
    let mode = request.mode.unwrap_or_default();
    let top_k = request.top_k.unwrap_or(10);
    let mut problems = Vec::new();
    if !(1..=100).contains(&top_k) {
        problems.push(FieldError::new("top_k", "must be between 1 and 100"));
    }
    let query = request.query.clone();
    match query.as_deref() {
        Some(q) if q.trim().is_empty() || q.chars().count() > 4000 => {
            problems.push(FieldError::new("query", "must have 1 to 4000 characters"))
        }
        None if !(mode == Mode::Semantic && request.query_vector.is_some()) => {
            problems.push(FieldError::new(
                "query",
                "is required (only semantic search with query_vector may omit it)",
            ))
        }
        _ => {}
    }
    if let Some(v) = &request.query_vector
        && v.len() != app.index.dimensions()
    {
        problems.push(FieldError::new(
            "query_vector",
            format!(
                "must have {} numbers (the store's dimensions), got {}",
                app.index.dimensions(),
                v.len()
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    // The query's vector first: what the catalog says is searchable is read as late as
    // possible before the index is, so a re-processed file's old generation is not dropped
    // from the index in between (its drop follows the flip to the new one).
    let vector = match (mode, request.query_vector) {
        (Mode::Keyword, _) => None,
        (_, Some(v)) => Some(v),
        (_, None) => {
            let text = vec![query.clone().unwrap_or_default()];
            let mut vectors = app.embedder.embed(&text).await.map_err(|e| {
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("The query could not be embedded: {e}"),
                )
            })?;
            vectors.pop()
        }
    };

    let top_k = top_k as usize;
    let mut catalogs: Vec<Files> = Vec::with_capacity(stores.len());
    for store in &stores {
        catalogs.push(app.searchable.files(app, organization_id, store).await?);
    }
    // The index speaks plain strings.
    let store_names: HashMap<String, String> = stores
        .iter()
        .map(|s| (s.id.to_string(), s.name.clone()))
        .collect();
    let store_ids: Vec<String> = stores.into_iter().map(|s| s.id.into_string()).collect();
    let filters = request.filters.unwrap_or_default();
    let catalogs = Arc::new(catalogs);
    let lookup = catalogs.clone();
    // Which chunks may be answered: the file's active generation, within the filters.
    let active = move |id: &str, generation: u64| {
        find_file(&lookup, id).is_some_and(|f| {
            f.active_generation == generation
                && filters
                    .file_ids
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|i| i == id))
                && filters.relative_path_prefix.as_ref().is_none_or(|prefix| {
                    f.relative_path
                        .as_deref()
                        .unwrap_or("")
                        .starts_with(prefix.trim_start_matches('/'))
                })
                && filters
                    .mime_types
                    .as_ref()
                    .is_none_or(|m| m.contains(&f.mime_type))
        })
    };

    // Read-your-writes on a cluster: everything logged before this search is in the index.
    if let Some(replica) = &app.replica {
        replica
            .catch_up(REPLICA_WAIT)
            .await
            .map_err(|e| ApiError::new(ErrorCode::ServiceUnavailable, e.to_string()))?;
    }
    let index = app.index.clone();
    let text = query.clone().unwrap_or_default();
    let threshold = request.score_threshold;
    let (hits, files) = tokio::task::spawn_blocking(move || {
        let scope = Scope {
            store_ids: &store_ids,
            active: &active,
        };
        let mode = match mode {
            Mode::Keyword => kiln_index::Mode::Keyword,
            Mode::Semantic => kiln_index::Mode::Semantic,
            Mode::Hybrid => kiln_index::Mode::Hybrid,
        };
        let hits = index.search(&scope, mode, &text, vector.as_deref(), top_k)?;
        let hits: Vec<Hit> = hits
            .into_iter()
            .filter(|hit| threshold.is_none_or(|t| hit.score >= t))
            .collect();
        // The answered files' names, while the catalog copies are at hand.
        let files: HashMap<String, (String, Option<String>)> = hits
            .iter()
            .filter_map(|hit| {
                let file = find_file(&catalogs, &hit.file_id)?;
                Some((
                    hit.file_id.clone(),
                    (file.file_name.clone(), file.relative_path.clone()),
                ))
            })
            .collect();
        Ok::<_, kiln_index::IndexError>((hits, files))
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "search failed");
        ApiError::new(ErrorCode::ServiceUnavailable, "The index is not available")
    })?;

    let results = hits
        .into_iter()
        .filter_map(|hit| {
            let (file_name, relative_path) = files.get(&hit.file_id)?.clone();
            Some(SearchResult {
                store_name: store_names.get(&hit.store_id).cloned().unwrap_or_default(),
                store_id: hit.store_id.into(),
                file_name,
                relative_path,
                file_id: hit.file_id.into(),
                chunk_index: hit.chunk_index,
                text: hit.text,
                score: hit.score,
                page: hit.page,
            })
        })
        .collect();
    Ok(SearchResponse {
        query,
        mode,
        results,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

fn find_file<'a>(catalogs: &'a [Files], id: &str) -> Option<&'a SearchableFile> {
    catalogs.iter().find_map(|files| files.get(id))
}
