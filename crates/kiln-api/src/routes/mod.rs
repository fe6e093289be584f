//! The API's routes, each documented for the OpenAPI document.

mod files;
mod ops;
mod orgs;
mod search;
mod slices;
mod stores;
mod uploads;

pub use uploads::UploadSigner;

use serde::{Deserialize, Deserializer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::openapi::ApiDoc;
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
}

/// A path naming a slice.
#[derive(Deserialize)]
pub(crate) struct SliceRef {
    pub slice_id: String,
}

/// A path naming a store.
#[derive(Deserialize)]
pub(crate) struct StoreRef {
    pub store_id: String,
}

/// A path naming a file in a store.
#[derive(Deserialize)]
pub(crate) struct FileRef {
    pub store_id: String,
    pub file_id: String,
}

/// A path naming a file in a store of an organization.
#[derive(Deserialize)]
pub(crate) struct OrgFileRef {
    pub organization_id: String,
    pub store_id: String,
    pub file_id: String,
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
