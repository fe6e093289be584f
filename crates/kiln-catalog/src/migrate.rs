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
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for (version, name, sql) in MIGRATIONS {
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
