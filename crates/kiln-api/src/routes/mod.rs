//! The API's routes, each documented for the OpenAPI document.

mod events;
mod files;
mod ops;
mod org_files;
mod orgs;
mod search;
mod slices;
mod store_files;
mod stores;
mod uploads;
mod vector_stores;

pub(crate) use files::{too_large, unsupported};
pub use uploads::UploadSigner;

use serde::{Deserialize, Deserializer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::openapi::ApiDoc;
use kiln_core::{FileId, OrgId, StoreId};
use utoipa::OpenApi;

pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(orgs::list_organizations))
        .routes(routes!(orgs::get_organization))
        .routes(routes!(slices::create_slice, slices::list_slices))
        .routes(routes!(slices::get_slice, slices::update_slice))
        .routes(routes!(slices::archive_slice))
        .routes(routes!(stores::create_store, stores::list_slice_stores))
        .routes(routes!(stores::list_stores))
        .routes(routes!(
            stores::get_store,
            stores::update_store,
            stores::delete_store
        ))
        .merge(OpenApiRouter::new().routes(routes!(files::upload)).layer(
            axum::extract::DefaultBodyLimit::max(
                files::MAX_DIRECT_UPLOAD_BYTES as usize + 64 * 1024,
            ),
        ))
        .routes(routes!(uploads::upload_url))
        .routes(routes!(uploads::register))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(uploads::put_upload))
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .routes(routes!(files::list_files))
        .routes(routes!(files::get_config, files::patch_config))
        .routes(routes!(files::remove_bulk))
        .routes(routes!(files::get_file, files::delete_file))
        .routes(routes!(files::file_status))
        .routes(routes!(files::retry_file))
        .routes(routes!(files::file_logs))
        .routes(routes!(files::store_usage))
        .routes(routes!(files::organization_usage))
        .routes(routes!(search::search_store))
        .routes(routes!(search::search_knowledge))
        .routes(routes!(events::stream_events))
        .routes(routes!(events::create_webhook, events::list_webhooks))
        .routes(routes!(events::get_webhook, events::delete_webhook))
        .routes(routes!(events::webhook_deliveries))
        .merge(vector_stores_family())
}

/// The vector-stores and organization-files family (`vector-stores-api.md`).
fn vector_stores_family() -> OpenApiRouter<AppState> {
    let limit = axum::extract::DefaultBodyLimit::max;
    OpenApiRouter::new()
        .routes(routes!(
            vector_stores::list_vector_stores,
            vector_stores::create_vector_store
        ))
        .routes(routes!(vector_stores::vector_store_usage))
        .routes(routes!(
            vector_stores::get_vector_store,
            vector_stores::update_vector_store,
            vector_stores::delete_vector_store
        ))
        .routes(routes!(
            store_files::list_store_files,
            store_files::add_file
        ))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(store_files::upload_base64))
                .layer(limit(store_files::MAX_BASE64_BODY_BYTES)),
        )
        .routes(routes!(store_files::store_file_status))
        .routes(routes!(store_files::retry_store_file))
        .routes(routes!(
            store_files::get_store_file,
            store_files::remove_store_file
        ))
        .routes(routes!(store_files::store_file_logs))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(org_files::upload_org_files))
                .layer(limit(
                    store_files::MAX_BATCH_FILES
                        * (files::MAX_DIRECT_UPLOAD_BYTES as usize + 64 * 1024),
                )),
        )
        .routes(routes!(org_files::org_upload_url))
        .routes(routes!(
            org_files::list_org_files,
            org_files::register_org_files
        ))
        .routes(routes!(org_files::get_org_file, org_files::delete_org_file))
        .routes(routes!(org_files::org_file_content))
        .routes(routes!(org_files::download_org_file))
}

/// A path naming a slice.
#[derive(Deserialize)]
pub(crate) struct SliceRef {
    pub slice_id: String,
}

/// A path naming a store.
#[derive(Deserialize)]
pub(crate) struct StoreRef {
    pub store_id: StoreId,
}

/// A path naming a file in a store.
#[derive(Deserialize)]
pub(crate) struct FileRef {
    pub store_id: StoreId,
    pub file_id: FileId,
}

/// A path naming a file in a store of an organization.
#[derive(Deserialize)]
pub(crate) struct OrgFileRef {
    pub organization_id: OrgId,
    pub store_id: StoreId,
    pub file_id: FileId,
}

/// Deserialises a field that may be absent (`None`), `null` (`Some(None)`) or a value.
pub(crate) fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Longest description accepted, in characters.
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 4000;

/// Checks an optional description's length.
pub(crate) fn check_description(description: Option<&str>) -> Option<crate::error::FieldError> {
    let chars = description.map(|d| d.chars().count()).unwrap_or(0);
    (chars > MAX_DESCRIPTION_CHARS).then(|| {
        crate::error::FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters (got {chars})"),
        )
    })
}
