//! Versioned migrations: each runs once, in its own transaction, in order. A migration has
//! one text for both databases, or one for each where their SQL differs.

use sqlx::{AnyConnection, AnyPool, Connection};

use crate::{CatalogError, Dialect, Result};

/// A migration's SQL: the same for both databases, or per database.
enum Sql {
    Portable(&'static str),
    PerDialect {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

impl Sql {
    fn for_dialect(&self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (Sql::Portable(sql), _) => sql,
            (Sql::PerDialect { sqlite, .. }, Dialect::Sqlite) => sqlite,
            (Sql::PerDialect { postgres, .. }, Dialect::Postgres) => postgres,
        }
    }
}

/// All migrations, in order. Never edit one that has shipped; add a new one.
const MIGRATIONS: &[(i64, &str, Sql)] = &[
    (
        1,
        "foundation",
        Sql::Portable(include_str!("../migrations/0001_foundation.sql")),
    ),
    (
        2,
        "uploads",
        Sql::Portable(include_str!("../migrations/0002_uploads.sql")),
    ),
    (
        3,
        "search_version",
        Sql::Portable(include_str!("../migrations/0003_search_version.sql")),
    ),
    (
        4,
        "cluster",
        Sql::PerDialect {
            sqlite: include_str!("../migrations/0004_cluster.sqlite.sql"),
            postgres: include_str!("../migrations/0004_cluster.postgres.sql"),
        },
    ),
    (
        5,
        "index_log",
        Sql::Portable(include_str!("../migrations/0005_index_log.sql")),
    ),
    (
        6,
        "org_files",
        Sql::Portable(include_str!("../migrations/0006_org_files.sql")),
    ),
    (
        7,
        "events",
        Sql::Portable(include_str!("../migrations/0007_events.sql")),
    ),
    (
        8,
        "store_figures",
        Sql::Portable(include_str!("../migrations/0008_store_figures.sql")),
    ),
    (
        9,
        "claim_by_organization",
        Sql::Portable(include_str!("../migrations/0009_claim_by_organization.sql")),
    ),
    (
        10,
        "fewer_state_indexes",
        Sql::Portable(include_str!("../migrations/0010_fewer_state_indexes.sql")),
    ),
];

/// An arbitrary key of the PostgreSQL advisory lock that makes processes starting on one
/// database apply migrations one at a time.
const MIGRATION_LOCK: i64 = 0x006b_696c_6e6d_6967; // "kilnmig"

pub(crate) async fn run(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    let mut conn = pool.acquire().await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let applied = apply(&mut conn, dialect).await;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    applied
}

async fn apply(conn: &mut AnyConnection, dialect: Dialect) -> Result<()> {
    apply_until(conn, dialect, i64::MAX).await
}

/// Applies the migrations up to version `last` (tests make an older release's catalog).
async fn apply_until(conn: &mut AnyConnection, dialect: Dialect, last: i64) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v <= last) {
        let (version, name) = (*version, *name);
        // Immediate on SQLite: two processes opening a new catalog at once take turns (see
        // `write_tx`); on PostgreSQL the advisory lock does that.
        let mut tx = match dialect {
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => conn.begin().await?,
        };
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if applied.is_some() {
            continue;
        }
        sqlx::raw_sql(sql.for_dialect(dialect))
            .execute(&mut *tx)
            .await
            .map_err(|source| CatalogError::Migration { version, source })?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(kiln_core::Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied catalog migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::{FileId, OrgId, StoreId};
    use std::str::FromStr;

    /// A catalog made by the release before organization files (schema 5), with a live file
    /// and a deleted one, opened by this release: each file row becomes its own
    /// organization file, at the original's old place, and the knowledge family reads both.
    #[tokio::test]
    async fn a_catalog_of_the_previous_release_gains_organization_files() {
        for (_dir, url) in crate::test_urls().await {
            sqlx::any::install_default_drivers();
            let dialect = Dialect::of_url(&url).unwrap();
            if dialect == Dialect::Postgres {
                crate::create_database(&url).await.unwrap();
            }
            let options = sqlx::any::AnyConnectOptions::from_str(&url).unwrap();
            let mut conn = AnyConnection::connect_with(&options).await.unwrap();
            apply_until(&mut conn, dialect, 5).await.unwrap();
            for sql in [
                "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ('org_1', 'o', 1, 1)",
                "INSERT INTO slices (id, organization_id, name, slice_type, owner_type, status, created_at, updated_at) \
                 VALUES ('kslice_1', 'org_1', 's', 'knowledge', 'organization', 'active', 1, 1)",
                "INSERT INTO stores (id, organization_id, slice_id, name, access_mode, max_chunk_tokens, chunk_overlap_tokens, created_at, updated_at) \
                 VALUES ('vs_1', 'org_1', 'kslice_1', 'st', 'organization', 800, 400, 1, 1)",
                "INSERT INTO files (id, organization_id, store_id, file_name, mime_type, file_size, sha256, status, created_by, created_at, updated_at) \
                 VALUES ('file_a', 'org_1', 'vs_1', 'a.txt', 'text/plain', 11, 'aa', 'completed', 'ak_1', 2, 2)",
                "INSERT INTO files (id, organization_id, store_id, file_name, mime_type, file_size, status, created_at, updated_at, deleted_at) \
                 VALUES ('file_b', 'org_1', 'vs_1', 'b.txt', 'text/plain', 5, 'failed', 3, 3, 4)",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            conn.close().await.unwrap();

            let catalog = crate::Catalog::open(&url, 2).await.unwrap();
            let (org, store) = (OrgId::from("org_1"), StoreId::from("vs_1"));
            let (a, b) = (FileId::from("file_a"), FileId::from("file_b"));
            let file = catalog.get_file(&org, &store, &a).await.unwrap();
            assert_eq!(file.org_file_id, "file_a");
            assert_eq!(
                file.original_blob,
                "orgs/org_1/stores/vs_1/files/file_a/original"
            );
            let org_file = catalog.get_org_file(&org, &a).await.unwrap();
            assert_eq!(
                (
                    org_file.file_name.as_str(),
                    org_file.file_size,
                    org_file.sha256.as_deref()
                ),
                ("a.txt", 11, Some("aa"))
            );
            assert_eq!(org_file.blob_path, file.original_blob);
            // The deleted file's organization file is deleted too (its purge still runs).
            assert!(catalog.get_org_file(&org, &b).await.is_err());
            let listed = catalog
                .list_org_files(&org, kiln_core::model::PageRequest { skip: 0, limit: 10 })
                .await
                .unwrap();
            assert_eq!(listed.total, 1);
            // Deleting the migrated file in the knowledge family takes its organization file.
            catalog
                .delete_files(&org, &store, std::slice::from_ref(&a), "ak_1")
                .await
                .unwrap();
            assert!(catalog.get_org_file(&org, &a).await.is_err());
        }
    }
}
