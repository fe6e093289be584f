//! Moving a catalog into another (`kiln migrate-to`): an embedded SQLite catalog into a
//! cluster's PostgreSQL one, every row as it is (IDs, key hashes, logs, jobs), so the same
//! keys, files and histories answer there.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Catalog, CatalogError, Result};

/// The tables copied, parents before children. The index tables are not among them: the
/// caller moves the chunks themselves (they live in the embedded index, not the catalog).
const TABLES: &[&str] = &[
    "organizations",
    "api_keys",
    "slices",
    "stores",
    "org_files",
    "files",
    "jobs",
    "file_logs",
    "uploads",
    "upload_parts",
    "server_secrets",
    "idempotency_keys",
    "event_counters",
    "events",
    "webhooks",
    "webhook_deliveries",
];

/// Rows per `INSERT`.
const ROWS: usize = 200;

impl Catalog {
    /// Copies every row of this catalog into `target`, which must hold no organization yet.
    /// Returns the rows copied per table. Columns are `TEXT` or `BIGINT` (the portable
    /// schema has no others outside the index tables).
    pub async fn copy_to(&self, target: &Catalog) -> Result<Vec<(&'static str, u64)>> {
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(&target.read)
            .await?;
        if existing > 0 {
            return Err(CatalogError::NotEmpty);
        }
        let mut copied = Vec::new();
        let mut tx = target.write_tx().await?;
        for table in TABLES {
            let columns = self.columns(table).await?;
            let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {} FROM {table}",
                names.join(", ")
            )))
            .fetch_all(&self.read)
            .await?;
            for batch in rows.chunks(ROWS) {
                let mut sql = format!("INSERT INTO {table} ({}) VALUES ", names.join(", "));
                for (r, _) in batch.iter().enumerate() {
                    if r > 0 {
                        sql.push(',');
                    }
                    let slots: Vec<String> = (0..names.len())
                        .map(|c| format!("${}", r * names.len() + c + 1))
                        .collect();
                    sql.push_str(&format!("({})", slots.join(",")));
                }
                let mut insert = sqlx::query(AssertSqlSafe(sql));
                for row in batch {
                    for (i, (_, integer)) in columns.iter().enumerate() {
                        insert = bind_column(insert, row, i, *integer)?;
                    }
                }
                insert.execute(&mut *tx).await?;
            }
            copied.push((*table, rows.len() as u64));
        }
        tx.commit().await?;
        Ok(copied)
    }

    /// A table's columns and whether each is an integer, from SQLite's schema.
    async fn columns(&self, table: &str) -> Result<Vec<(String, bool)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, type FROM pragma_table_info('{table}') ORDER BY cid"
        )))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let kind: String = row.try_get("type")?;
                let kind = kind.to_ascii_uppercase();
                Ok((name, kind.contains("INT")))
            })
            .collect()
    }
}

fn bind_column<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    row: &AnyRow,
    column: usize,
    integer: bool,
) -> Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>> {
    Ok(if integer {
        query.bind(row.try_get::<Option<i64>, _>(column)?)
    } else {
        query.bind(row.try_get::<Option<String>, _>(column)?)
    })
}

#[cfg(test)]
mod tests {
    use crate::{Catalog, CatalogError, test_catalogs};

    #[tokio::test]
    async fn a_catalog_moves_whole_and_only_into_an_empty_one() {
        let mut catalogs = test_catalogs().await;
        if catalogs.len() < 2 {
            kiln_testkit::skipped(
                "kiln-catalog copy to PostgreSQL",
                "KILN_TEST_POSTGRES is not set",
            );
            return;
        }
        let postgres = catalogs.pop().unwrap();
        let sqlite = catalogs.pop().unwrap();
        // The PostgreSQL one already has an organization: refused.
        assert!(matches!(
            sqlite.catalog.copy_to(&postgres.catalog).await,
            Err(CatalogError::NotEmpty)
        ));
        let server = crate::testing::postgres_server().unwrap();
        let url = crate::testing::database(
            &server,
            &format!(
                "kiln_copy_{}",
                kiln_core::ids::generate_secret()[..12].to_lowercase()
            ),
        );
        let target = Catalog::open(&url, 2).await.unwrap();
        let key = sqlite
            .catalog
            .create_api_key(&sqlite.org, kiln_core::types::Role::Admin, Some("k"))
            .await
            .unwrap();
        let copied = sqlite.catalog.copy_to(&target).await.unwrap();
        let count = |table: &str| copied.iter().find(|(t, _)| *t == table).unwrap().1;
        assert_eq!(count("organizations"), 1);
        assert_eq!(count("stores"), 1);
        // The same key works there, for the same organization and store.
        let principal = target.authenticate(&key.value).await.unwrap().unwrap();
        assert_eq!(principal.key_id, key.info.id);
        let store = target.get_store(&sqlite.org, &sqlite.store).await.unwrap();
        assert_eq!(store.id, sqlite.store);
    }
}
