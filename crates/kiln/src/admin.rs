//! Operator commands on a data dir (with or without a server running on it): organizations
//! and API keys. Output is JSON, one value per command, for people and scripts alike.

use kiln_catalog::Catalog;
use kiln_core::types::Role;
use serde_json::{Value, json};

pub async fn org_create(catalog: &Catalog, name: &str) -> anyhow::Result<Value> {
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 255,
        "an organization name has 1 to 255 characters"
    );
    Ok(json!(catalog.create_organization(name).await?))
}

pub async fn org_list(catalog: &Catalog) -> anyhow::Result<Value> {
    Ok(json!(catalog.list_organizations().await?))
}

/// Creates a key; the answer holds the key value, which is shown only this once.
pub async fn key_create(
    catalog: &Catalog,
    organization_id: &kiln_core::OrgId,
    role: Role,
    name: Option<&str>,
) -> anyhow::Result<Value> {
    let key = catalog
        .create_api_key(organization_id, role, name)
        .await
        .map_err(|err| match err {
            kiln_catalog::CatalogError::NotFound(_) => {
                anyhow::anyhow!("organization {organization_id} does not exist")
            }
            other => other.into(),
        })?;
    let mut value = json!(key.info);
    value["key"] = json!(key.value);
    Ok(value)
}

pub async fn key_list(catalog: &Catalog, organization_id: Option<&str>) -> anyhow::Result<Value> {
    Ok(json!(catalog.list_api_keys(organization_id).await?))
}

pub async fn key_revoke(catalog: &Catalog, key_id: &str) -> anyhow::Result<Value> {
    let info = catalog
        .revoke_api_key(key_id)
        .await
        .map_err(|err| match err {
            kiln_catalog::CatalogError::NotFound(_) => {
                anyhow::anyhow!("API key {key_id} does not exist")
            }
            other => other.into(),
        })?;
    Ok(json!(info))
}
