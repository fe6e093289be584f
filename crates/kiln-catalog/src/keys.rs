//! Organizations and API keys.

use kiln_core::model::{ApiKeyInfo, Organization, Principal};
use kiln_core::types::Role;
use kiln_core::{IdKind, OrgId, Timestamp, ids};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::exec::{Exec, Q};
use crate::rows::{self, Columns, enum_col};
use crate::{Catalog, CatalogError, Resource, Result};

/// A key just created: its record and its value, which is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub info: ApiKeyInfo,
    pub value: String,
}

/// Keys are high-entropy random strings, so one SHA-256 is the right hash (no salt or
/// stretching needed, and lookups stay an index probe).
pub(crate) fn hash_key(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

const KEY_COLUMNS: &str =
    "id, organization_id, role, name, key_prefix, created_at, revoked_at FROM api_keys";

fn key_info(row: &AnyRow) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        role: enum_col(row, "role", Role::parse)?,
        name: row.try_get("name")?,
        prefix: row.try_get("key_prefix")?,
        created_at: rows::ts(row, "created_at")?,
        revoked_at: rows::opt_ts(row, "revoked_at")?,
    })
}

async fn insert_organization(conn: &mut sqlx::AnyConnection, name: &str) -> Result<Organization> {
    let now = Timestamp::created();
    let org = Organization::new(OrgId::generate(), name.to_string(), now, now);
    sqlx::query(
        "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&org.id)
    .bind(&org.name)
    .bind(now.millis())
    .bind(now.millis())
    .execute(&mut *conn)
    .await?;
    Ok(org)
}

async fn insert_key(
    conn: &mut sqlx::AnyConnection,
    organization_id: &OrgId,
    role: Role,
    name: Option<&str>,
) -> Result<NewApiKey> {
    let value = ids::generate_key_value();
    let info = ApiKeyInfo {
        id: IdKind::ApiKey.generate(),
        organization_id: organization_id.clone(),
        role,
        name: name.map(str::to_string),
        prefix: value[..8].to_string(),
        created_at: Timestamp::created(),
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, organization_id, key_hash, key_prefix, role, name, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&info.id)
    .bind(&info.organization_id)
    .bind(hash_key(&value))
    .bind(&info.prefix)
    .bind(role.as_str())
    .bind(info.name.clone())
    .bind(info.created_at.millis())
    .execute(&mut *conn)
    .await?;
    Ok(NewApiKey { info, value })
}

/// The PostgreSQL advisory lock that makes first starts on one database take turns.
const BOOTSTRAP_LOCK: i64 = 0x6b69_6c6e_626f_6f74; // "kilnboot"

impl Catalog {
    pub async fn create_organization(&self, name: &str) -> Result<Organization> {
        let mut conn = self.write.acquire().await?;
        insert_organization(&mut conn, name).await
    }

    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let sql = const_format_org("ORDER BY created_at, id");
        sqlx::query(sql)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::organization)
            .collect()
    }

    pub async fn get_organization(&self, id: &str) -> Result<Organization> {
        let row = sqlx::query(const_format_org("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or(CatalogError::NotFound(Resource::Organization))?;
        rows::organization(&row)
    }

    /// On a catalog without organizations, creates organization `name` with an admin key and
    /// returns both; otherwise does nothing and returns `None`.
    pub async fn bootstrap(&self, name: &str) -> Result<Option<(Organization, NewApiKey)>> {
        let mut tx = self.write_tx().await?;
        if self.dialect == crate::Dialect::Postgres {
            // Servers starting together on a new database take turns: one creates it.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(BOOTSTRAP_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(None);
        }
        let org = insert_organization(&mut tx, name).await?;
        let key = insert_key(&mut tx, &org.id, Role::Admin, Some("initial admin key")).await?;
        tx.commit().await?;
        Ok(Some((org, key)))
    }

    pub async fn create_api_key(
        &self,
        organization_id: &OrgId,
        role: Role,
        name: Option<&str>,
    ) -> Result<NewApiKey> {
        let mut tx = self.write_tx().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
                .bind(organization_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(CatalogError::NotFound(Resource::Organization));
        }
        let key = insert_key(&mut tx, organization_id, role, name).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Keys of one organization, or of all, oldest first.
    pub async fn list_api_keys(&self, organization_id: Option<&str>) -> Result<Vec<ApiKeyInfo>> {
        let rows = match organization_id {
            Some(org) => {
                sqlx::query(const_format_key(
                    "WHERE organization_id = $1 ORDER BY created_at, id",
                ))
                .bind(org)
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(const_format_key("ORDER BY created_at, id"))
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(key_info).collect()
    }

    /// Revokes a key; revoking a revoked key keeps its first revocation time.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<ApiKeyInfo> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(Timestamp::now().millis())
            .bind(key_id)
            .execute(&self.write)
            .await?;
        let row = sqlx::query(const_format_key("WHERE id = $1"))
            .bind(key_id)
            .fetch_optional(&self.write)
            .await?
            .ok_or(CatalogError::NotFound(Resource::ApiKey))?;
        key_info(&row)
    }

    /// The caller behind a key value, if the key exists and is not revoked.
    pub async fn authenticate(&self, value: &str) -> Result<Option<Principal>> {
        let hash = hash_key(value);
        // Every request asks this: on SQLite on the request's thread (see `inline`).
        read_inline!(self, |conn| async {
            let query = Q::new(
                "SELECT id, organization_id, role FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(hash.as_str());
            conn.fetch_optional(query)
                .await?
                .map(|row| principal(&row, ""))
                .transpose()
        })
    }
}

/// The key columns `id`, `organization_id` and `role` of a row, each named with `prefix`.
pub(crate) fn principal(row: &impl Columns, prefix: &str) -> Result<Principal> {
    Ok(Principal {
        key_id: row.col(&format!("{prefix}id"))?,
        organization_id: row.col(&format!("{prefix}organization_id"))?,
        role: enum_col(row, &format!("{prefix}role"), Role::parse)?,
    })
}

// The SQL strings are built from constants only, never from input.
fn const_format_org(tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM organizations {tail}",
        rows::ORG_COLUMNS
    ))
}

fn const_format_key(tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} {tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_process_writing_while_the_server_writes_waits_its_turn() {
        for crate::TestCatalog {
            url,
            catalog: server,
            org,
            ..
        } in crate::test_catalogs().await
        {
            // `kiln admin` on the same file, as a second process would open it.
            let admin = Catalog::open(&url, 1).await.unwrap();
            let org_id = org.clone();
            // The server is in the middle of a write when the admin starts creating a key (which
            // reads the organization, then inserts): it must wait for the server, not fail.
            let mut busy = server.write_tx().await.unwrap();
            sqlx::query("UPDATE organizations SET updated_at = updated_at + 1")
                .execute(&mut *busy)
                .await
                .unwrap();
            let creating = tokio::spawn(async move {
                admin
                    .create_api_key(&org_id, Role::Reader, Some("late"))
                    .await
            });
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            busy.commit().await.unwrap();
            let key = creating
                .await
                .unwrap()
                .expect("the admin's write waited, then went in");
            assert_eq!(key.info.name.as_deref(), Some("late"));
            assert!(server.authenticate(&key.value).await.unwrap().is_some());
        }
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
