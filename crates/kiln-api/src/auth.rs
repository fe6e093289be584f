//! Authentication and authorization (contract §2) as typed extractors: a handler that takes
//! `Authorized<Admin>` runs only for a valid key of the path's organization with role admin.
//! Checks run in the contract's order: credentials (401), organization (404 for a malformed
//! ID, 403 for another organization), role (403) — all before the body is read.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use kiln_core::model::Principal;
use kiln_core::types::Role;
use kiln_core::{ErrorCode, IdKind, OrgId, ids};

use crate::AppState;
use crate::error::ApiError;

/// The least role a handler needs.
pub trait RequiredRole: Send + Sync {
    const ROLE: Role;
}

/// Slice and store management.
pub struct Admin;
/// Uploading, deleting and retrying files.
pub struct Editor;
/// Reading and searching.
pub struct Reader;

impl RequiredRole for Admin {
    const ROLE: Role = Role::Admin;
}
impl RequiredRole for Editor {
    const ROLE: Role = Role::Editor;
}
impl RequiredRole for Reader {
    const ROLE: Role = Role::Reader;
}

/// A caller allowed to act as `R` in the organization named by the path (if any).
pub struct Authorized<R> {
    pub principal: Principal,
    role: PhantomData<R>,
}

impl<R> Authorized<R> {
    pub fn organization_id(&self) -> &OrgId {
        &self.principal.organization_id
    }

    pub fn key_id(&self) -> &str {
        &self.principal.key_id
    }
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| invalid_key())?.trim();
        let (scheme, key) = text.split_once(' ').ok_or_else(invalid_key)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(invalid_key());
        }
        return Ok(Some(key.trim()));
    }
    match headers.get("x-api-key") {
        Some(value) => Ok(Some(value.to_str().map_err(|_| invalid_key())?.trim())),
        None => Ok(None),
    }
}

fn invalid_key() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidApiKey,
        "The API key is unknown, malformed or revoked",
    )
}

/// The key a request presents, if it has the shape of a key (401 otherwise).
pub fn key_value(headers: &HeaderMap) -> Result<&str, ApiError> {
    let key = presented_key(headers)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::AuthenticationRequired,
            "Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        )
    })?;
    if !ids::is_key_value_shape(key) {
        return Err(invalid_key());
    }
    Ok(key)
}

/// The principal behind the request's key.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Principal, ApiError> {
    let key = key_value(headers)?;
    state
        .catalog
        .authenticate(key)
        .await?
        .ok_or_else(invalid_key)
}

impl<R: RequiredRole> Authorized<R> {
    /// Allows `principal` (`None`: its key is unknown or revoked) to act as `R` in the
    /// organization `path_org` (if the path names one), or says why not.
    pub fn check(principal: Option<Principal>, path_org: Option<&str>) -> Result<Self, ApiError> {
        let principal = principal.ok_or_else(invalid_key)?;
        if let Some(org) = path_org {
            check_organization(&principal, org)?;
        }
        if !principal.role.allows(R::ROLE) {
            return Err(ApiError::new(
                ErrorCode::InsufficientPermissions,
                format!(
                    "This needs role '{}'; the key has role '{}'",
                    R::ROLE,
                    principal.role
                ),
            )
            .detail("required_role", R::ROLE.as_str())
            .detail("role", principal.role.as_str()));
        }
        Ok(Authorized {
            principal,
            role: PhantomData,
        })
    }
}

impl<R: RequiredRole> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(&parts.headers, state).await?;
        let path_org = RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(name, _)| *name == "organization_id")
                    .map(|(_, value)| value.to_string())
            });
        Authorized::check(Some(principal), path_org.as_deref())
    }
}

fn check_organization(principal: &Principal, org: &str) -> Result<(), ApiError> {
    if !IdKind::Organization.is_valid(org) {
        return Err(
            ApiError::new(ErrorCode::OrganizationNotFound, "Organization not found")
                .detail("organization_id", org),
        );
    }
    if principal.organization_id != org {
        return Err(ApiError::new(
            ErrorCode::OrganizationAccessDenied,
            "The API key belongs to another organization",
        )
        .detail("organization_id", org));
    }
    Ok(())
}
