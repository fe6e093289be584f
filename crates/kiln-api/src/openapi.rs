//! The OpenAPI document (generated from the handlers' annotations) and the API browser.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;

const DESCRIPTION: &str = "\
Kiln's Knowledge API, compatible with the Aitronos Knowledge API.

Decided points (where the public documentation is silent):
- IDs are a prefix plus 20 random characters `[a-z0-9]`; an ID with the wrong prefix is not found (404).
- Keys carry a role: `admin` (everything, including slices and stores), `editor` (files), `reader` (read and search).
- Every list takes `skip` (>= 0) and `limit` (1-100, default 20) and answers `{items, total, skip, limit, has_more}`, newest first.
- Every non-2xx answer is the error envelope `{success: false, error: {code, message, system_message, type, status, details, trace_id, timestamp}}`; `trace_id` equals the `x-request-id` header.
- Stores carry `file_counts {pending, processing, completed, failed, total}` and `chunking`.
";

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln Knowledge API", description = DESCRIPTION),
    modifiers(&Security),
    components(schemas(crate::error::ErrorEnvelope, crate::error::FieldError))
)]
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ak_...")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// `/openapi.json` and the browser at `/docs`.
pub(crate) fn docs(openapi: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
}
