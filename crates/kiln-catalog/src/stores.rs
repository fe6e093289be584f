//! Stores: the containers of files, each inside a slice.

use kiln_core::model::{Chunking, Page, PageRequest, Store};
use kiln_core::types::{AccessMode, SliceStatus};
use kiln_core::{OrgId, StoreId, Timestamp};
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::exec::{Exec, Q};
use crate::rows::{self, Columns, STORE_SELECT};
use crate::{Catalog, CatalogError, Resource, Result};

#[derive(Debug, Clone)]
pub struct NewStore {
    pub name: String,
    pub description: Option<String>,
    pub access_mode: AccessMode,
}

#[derive(Debug, Clone, Default)]
pub struct StorePatch {
    pub name: Option<String>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub access_mode: Option<AccessMode>,
    /// Moves the store into another (active) slice of the organization.
    pub slice_id: Option<String>,
}

/// Which stores a list holds, and in what order (newest first by default).
#[derive(Debug, Clone, Default)]
pub struct StoreQuery {
    pub slice_id: Option<String>,
    pub access_mode: Option<AccessMode>,
    /// Case-insensitive substring of the name or description.
    pub search: Option<String>,
    pub sort: StoreSort,
    pub ascending: bool,
}

/// What a store list is ordered by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreSort {
    #[default]
    CreatedAt,
    UpdatedAt,
    Name,
    FileCount,
    DataSize,
}

/// A store as search sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchStore {
    pub id: StoreId,
    pub name: String,
    /// Moves whenever the store's searchable files change.
    pub search_version: i64,
}

fn store_sql(tail: &'static str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("{STORE_SELECT} {tail}"))
}

/// Tells searches that the store's searchable files changed (in the caller's transaction).
pub(crate) async fn bump_search_version(conn: &mut impl Exec, store_id: &StoreId) -> Result<()> {
    conn.execute(
        Q::new("UPDATE stores SET search_version = search_version + 1 WHERE id = $1")
            .bind(store_id),
    )
    .await?;
    Ok(())
}

/// Fails unless the slice exists in the organization and is active.
async fn require_active_slice(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    slice_id: &str,
) -> Result<()> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM slices WHERE organization_id = $1 AND id = $2")
            .bind(organization_id)
            .bind(slice_id)
            .fetch_optional(&mut *conn)
            .await?;
    match status.as_deref().and_then(SliceStatus::parse) {
        None => Err(CatalogError::NotFound(Resource::Slice)),
        Some(SliceStatus::Archived) => Err(CatalogError::SliceArchived),
        Some(SliceStatus::Active) => Ok(()),
    }
}

impl Catalog {
    pub async fn create_store(
        &self,
        organization_id: &OrgId,
        slice_id: &str,
        new: NewStore,
        created_by: &str,
    ) -> Result<Store> {
        let mut tx = self.write_tx().await?;
        require_active_slice(&mut tx, organization_id, slice_id).await?;
        let id = StoreId::generate();
        let now = Timestamp::created().millis();
        let chunking = Chunking::default();
        sqlx::query(
            "INSERT INTO stores (id, organization_id, slice_id, name, description, access_mode, \
             max_chunk_tokens, chunk_overlap_tokens, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(organization_id)
        .bind(slice_id)
        .bind(new.name)
        .bind(new.description)
        .bind(new.access_mode.as_str())
        .bind(i64::from(chunking.max_chunk_tokens))
        .bind(i64::from(chunking.chunk_overlap_tokens))
        .bind(created_by)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let store = self.fetch_store(&mut *tx, organization_id, &id).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Stores of the organization, or of one of its slices, newest first.
    pub async fn list_stores(
        &self,
        organization_id: &OrgId,
        slice_id: Option<&str>,
        window: PageRequest,
    ) -> Result<Page<Store>> {
        let query = StoreQuery {
            slice_id: slice_id.map(str::to_string),
            ..StoreQuery::default()
        };
        self.list_stores_by(organization_id, &query, window).await
    }

    /// An organization's stores, filtered and ordered as `query` says.
    pub async fn list_stores_by(
        &self,
        organization_id: &OrgId,
        query: &StoreQuery,
        window: PageRequest,
    ) -> Result<Page<Store>> {
        const WHERE: &str = "WHERE s.organization_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR s.slice_id = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR s.access_mode = $3) \
             AND (CAST($4 AS TEXT) IS NULL OR LOWER(s.name) LIKE $4 ESCAPE '\\' \
                  OR LOWER(COALESCE(s.description, '')) LIKE $4 ESCAPE '\\')";
        let pattern = query.search.as_deref().map(rows::contains_pattern);
        let mode = query.access_mode.map(AccessMode::as_str);
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM stores s {WHERE}"
        )))
        .bind(organization_id)
        .bind(query.slice_id.clone())
        .bind(mode)
        .bind(pattern.clone())
        .fetch_one(&self.read)
        .await?;
        let column = match query.sort {
            StoreSort::CreatedAt => "s.created_at",
            StoreSort::UpdatedAt => "s.updated_at",
            StoreSort::Name => "LOWER(s.name)",
            StoreSort::FileCount => "n_total",
            StoreSort::DataSize => "data_size",
        };
        let direction = if query.ascending { "ASC" } else { "DESC" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{STORE_SELECT} {WHERE} GROUP BY s.id ORDER BY {column} {direction}, s.id {direction} \
             LIMIT $5 OFFSET $6"
        )))
        .bind(organization_id)
        .bind(query.slice_id.clone())
        .bind(mode)
        .bind(pattern)
        .bind(window.limit)
        .bind(window.skip)
        .fetch_all(&self.read)
        .await?;
        let items = rows.iter().map(rows::store).collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, total, window))
    }

    /// One of the organization's stores as search needs it (`NotFound` otherwise): a light
    /// lookup, without the store's file figures.
    pub async fn store_for_search(
        &self,
        organization_id: &OrgId,
        id: &StoreId,
    ) -> Result<SearchStore> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT name, search_version FROM stores WHERE organization_id = $1 AND id = $2",
        )
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        let (name, search_version) = row.ok_or(CatalogError::NotFound(Resource::Store))?;
        Ok(SearchStore {
            id: id.clone(),
            name,
            search_version,
        })
    }

    /// Every store of one of the organization's slices as search needs it, oldest first
    /// (`NotFound` for a slice that is not the organization's).
    pub async fn slice_search_stores(
        &self,
        organization_id: &OrgId,
        slice_id: &str,
    ) -> Result<Vec<SearchStore>> {
        self.get_slice(organization_id, slice_id).await?;
        let rows: Vec<(StoreId, String, i64)> = sqlx::query_as(
            "SELECT id, name, search_version FROM stores WHERE organization_id = $1 \
             AND slice_id = $2 ORDER BY created_at, id",
        )
        .bind(organization_id)
        .bind(slice_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, search_version)| SearchStore {
                id,
                name,
                search_version,
            })
            .collect())
    }

    /// A store with its file figures. The figures are counted over the store's files (an
    /// index-only scan, still one step per file): for a check that the store exists, or for
    /// its chunking, use [`Catalog::store_chunking`], which costs the same at any size.
    pub async fn get_store(&self, organization_id: &OrgId, id: &StoreId) -> Result<Store> {
        self.fetch_store(&self.read, organization_id, id).await
    }

    /// How a store of the organization cuts files into chunks, or `NotFound(Store)`: one row
    /// read, whatever the number of files. Uploads check their store with it before reading a
    /// byte of the body (with [`Catalog::get_store`] each upload counted every file of the
    /// store: 0.3 ms at 300 files, 26 ms at 10,000, 320 ms at 100,000).
    pub async fn store_chunking(&self, organization_id: &OrgId, id: &StoreId) -> Result<Chunking> {
        // Every upload asks this first: on SQLite on the request's thread (see `inline`).
        read_inline!(self, |conn| async {
            let query = Q::new(
                "SELECT max_chunk_tokens, chunk_overlap_tokens FROM stores \
                 WHERE organization_id = $1 AND id = $2",
            )
            .bind(organization_id)
            .bind(id);
            let row = conn
                .fetch_optional(query)
                .await?
                .ok_or(CatalogError::NotFound(Resource::Store))?;
            Ok(Chunking {
                max_chunk_tokens: row.col::<i64>("max_chunk_tokens")? as u32,
                chunk_overlap_tokens: row.col::<i64>("chunk_overlap_tokens")? as u32,
            })
        })
    }

    async fn fetch_store<'e, E>(
        &self,
        executor: E,
        organization_id: &OrgId,
        id: &StoreId,
    ) -> Result<Store>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let row = sqlx::query(store_sql(
            "WHERE s.organization_id = $1 AND s.id = $2 GROUP BY s.id",
        ))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(CatalogError::NotFound(Resource::Store))?;
        rows::store(&row)
    }

    pub async fn update_store(
        &self,
        organization_id: &OrgId,
        id: &StoreId,
        patch: StorePatch,
    ) -> Result<Store> {
        let mut tx = self.write_tx().await?;
        let current = self.fetch_store(&mut *tx, organization_id, id).await?;
        if let Some(slice_id) = patch.slice_id.as_deref()
            && slice_id != current.slice_id
        {
            require_active_slice(&mut tx, organization_id, slice_id).await?;
        }
        sqlx::query(
            "UPDATE stores SET name = $1, description = $2, access_mode = $3, slice_id = $4, \
             updated_at = $5 WHERE organization_id = $6 AND id = $7",
        )
        .bind(patch.name.unwrap_or(current.name))
        .bind(patch.description.unwrap_or(current.description))
        .bind(patch.access_mode.unwrap_or(current.access_mode).as_str())
        .bind(patch.slice_id.unwrap_or(current.slice_id))
        .bind(Timestamp::now().millis())
        .bind(organization_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let store = self.fetch_store(&mut *tx, organization_id, id).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Deletes a store: it and its files disappear at once; queued work is cancelled; a
    /// durable purge job removes chunks, vectors, blobs and the files' records.
    pub async fn delete_store(&self, organization_id: &OrgId, id: &StoreId) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query("DELETE FROM stores WHERE organization_id = $1 AND id = $2")
            .bind(organization_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(CatalogError::NotFound(Resource::Store));
        }
        let now = Timestamp::now().millis();
        let links: Vec<String> =
            sqlx::query_scalar("SELECT id FROM files WHERE store_id = $1 AND deleted_at IS NULL")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("UPDATE files SET deleted_at = $1 WHERE store_id = $2 AND deleted_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Files the knowledge family created here go with the store unless another store
        // holds them; organization uploads stay in the organization.
        for link in &links {
            crate::org_files::release_after_unlink(&mut tx, link, now).await?;
        }
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', updated_at = $1 WHERE store_id = $2 AND state = 'queued'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Unregistered uploads go too; their parts live under the store's blob prefix, which
        // the purge removes.
        sqlx::query(
            "DELETE FROM upload_parts WHERE upload_id IN (SELECT id FROM uploads WHERE store_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM uploads WHERE store_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let job = crate::files::NewJob::PurgeStore { store_id: id };
        crate::files::enqueue(&mut tx, organization_id, job, now).await?;
        crate::events::write(
            &mut tx,
            organization_id,
            vec![crate::events::NewEvent::store(
                kiln_core::types::EventType::StoreDeleted,
                id,
                serde_json::json!({"files": links.len()}),
            )],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets how the store's files are chunked from now on.
    pub async fn update_chunking(
        &self,
        organization_id: &OrgId,
        id: &StoreId,
        chunking: Chunking,
    ) -> Result<Store> {
        let n = sqlx::query(
            "UPDATE stores SET max_chunk_tokens = $1, chunk_overlap_tokens = $2, updated_at = $3 \
             WHERE organization_id = $4 AND id = $5",
        )
        .bind(i64::from(chunking.max_chunk_tokens))
        .bind(i64::from(chunking.chunk_overlap_tokens))
        .bind(Timestamp::now().millis())
        .bind(organization_id)
        .bind(id)
        .execute(&self.write)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(CatalogError::NotFound(Resource::Store));
        }
        self.fetch_store(&self.write, organization_id, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn insert_file(
        catalog: &Catalog,
        org: &str,
        store: &str,
        status: &str,
        size: i64,
        deleted: bool,
    ) {
        sqlx::query(
            "INSERT INTO files (id, organization_id, store_id, file_name, mime_type, file_size, \
             status, created_at, updated_at, deleted_at) VALUES ($1, $2, $3, 'f.txt', 'text/plain', \
             $4, $5, 0, 0, $6)",
        )
        .bind(kiln_core::IdKind::File.generate())
        .bind(org)
        .bind(store)
        .bind(size)
        .bind(status)
        .bind(deleted.then_some(1_i64))
        .execute(&catalog.write)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn store_figures_are_computed_from_live_files() {
        for crate::TestCatalog {
            url,
            catalog,
            org,
            store: store_id,
            ..
        } in crate::test_catalogs().await
        {
            // Opening again applies no migration twice.
            Catalog::open(&url, 2).await.unwrap();
            let store = catalog.get_store(&org, &store_id).await.unwrap();
            let new = NewStore {
                name: "st2".into(),
                description: None,
                access_mode: AccessMode::Organization,
            };
            let other = catalog
                .create_store(&org, &store.slice_id, new, "ak_x")
                .await
                .unwrap();
            insert_file(&catalog, &org, &store.id, "pending", 10, false).await;
            insert_file(&catalog, &org, &store.id, "completed", 100, false).await;
            insert_file(&catalog, &org, &store.id, "completed", 1000, false).await;
            insert_file(&catalog, &org, &store.id, "failed", 5, false).await;
            insert_file(&catalog, &org, &store.id, "completed", 7777, true).await;
            insert_file(&catalog, &org, &other.id, "processing", 3, false).await;

            let got = catalog.get_store(&org, &store.id).await.unwrap();
            assert_eq!(got.file_count, 4);
            assert_eq!(got.data_size, 1115);
            assert_eq!(
                (
                    got.file_counts.pending,
                    got.file_counts.processing,
                    got.file_counts.completed,
                    got.file_counts.failed,
                    got.file_counts.total
                ),
                (1, 0, 2, 1, 4)
            );
            let page = catalog
                .list_stores(&org, None, PageRequest { skip: 0, limit: 10 })
                .await
                .unwrap();
            assert_eq!(page.total, 2);
            let listed_other = page.items.iter().find(|s| s.id == other.id).unwrap();
            assert_eq!(listed_other.file_counts.processing, 1);
            assert_eq!(listed_other.data_size, 3);

            // On SQLite the figures are counted from the index alone, never from the files'
            // rows (a store of 100,000 files: 284 → 41 ms).
            if catalog.dialect == crate::Dialect::Sqlite {
                let sql = format!(
                    "{STORE_SELECT} WHERE s.organization_id = '{org}' AND s.id = '{}' GROUP BY s.id",
                    store.id
                );
                let plan = crate::test_sqlite_plan(&catalog, &sql).await;
                assert!(
                    plan.contains("COVERING INDEX files_store_figures"),
                    "{plan}"
                );
            }
            // The check an upload makes reads the store's row only: its chunking, or not found.
            assert_eq!(
                catalog.store_chunking(&org, &store.id).await.unwrap(),
                Chunking::default()
            );
            let stranger = kiln_core::OrgId::generate();
            for (org, id) in [(&org, &StoreId::generate()), (&stranger, &store.id)] {
                assert!(matches!(
                    catalog.store_chunking(org, id).await,
                    Err(CatalogError::NotFound(Resource::Store))
                ));
            }

            catalog.delete_store(&org, &store.id).await.unwrap();
            let hidden: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM files WHERE store_id = $1 AND deleted_at IS NULL",
            )
            .bind(&store.id)
            .fetch_one(&catalog.read)
            .await
            .unwrap();
            assert_eq!(hidden, 0, "the store's files are hidden at once");
            let purge = catalog
                .claim("w", std::time::Duration::from_secs(60))
                .await
                .unwrap()
                .expect("a purge job is queued");
            let crate::Claimed::PurgeStore { job } = purge else {
                panic!("not a store's purge: {purge:?}");
            };
            assert_eq!(job.store_id, store.id);
            catalog.forget_store(&job.job_id, &store.id).await.unwrap();
            let remaining: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE store_id = $1")
                    .bind(&store.id)
                    .fetch_one(&catalog.read)
                    .await
                    .unwrap();
            assert_eq!(remaining, 0);
            assert!(matches!(
                catalog.get_store(&org, &store.id).await,
                Err(CatalogError::NotFound(Resource::Store))
            ));
        }
    }
}
