//! Organization files and their links into stores (the vector-stores family).
//!
//! An organization file is an original in blob storage; a store processes it through a link,
//! which is the store's `files` row (its status, chunks, logs and jobs). The knowledge family
//! creates both at once under one ID; the vector-stores family uploads to the organization
//! and links (`vsf_…`) later, any number of stores per file, at most one live link per
//! (store, file). An organization file goes when it is deleted itself, or — one the knowledge
//! family created — when its last link goes; its original is then purged by a job.

use kiln_core::model::{FileRecord, OrgFile, Page, PageRequest};
use kiln_core::types::LogLevel;
use kiln_core::{FileId, IdKind, OrgId, StoreId, Timestamp};
use serde_json::json;
use sqlx::{AnyConnection, Row};

use crate::events::{NewEvent, write as write_events};
use crate::exec::{Exec, Q};
use crate::files::{NewJob, append_log, enqueue, insert_link, require_store};
use crate::rows::{Columns, ts};
use crate::{Catalog, CatalogError, Resource, Result};
use kiln_core::types::EventType;

/// An organization file whose original is already in blob storage.
#[derive(Debug, Clone)]
pub struct NewOrgFile {
    pub id: FileId,
    pub organization_id: OrgId,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub file_size: i64,
    pub sha256: Option<String>,
    pub created_by: String,
    pub blob_path: String,
}

/// Who made an organization file, which decides when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A store's upload (knowledge family): it goes with its last link.
    Store,
    /// An organization upload: it stays until deleted itself.
    Org,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Store => "store",
            Origin::Org => "org",
        }
    }
}

/// What adding a file to a store did.
#[derive(Debug, Clone)]
pub enum LinkOutcome {
    /// A new link, queued for processing.
    Created(Box<FileRecord>),
    /// The file was in the store already: its link as it is.
    Existing(Box<FileRecord>),
}

const ORG_FILE_COLUMNS: &str = "id, organization_id, file_name, relative_path, mime_type, \
     file_size, sha256, blob_path, created_by, created_at";

fn org_file(row: &impl Columns) -> Result<OrgFile> {
    Ok(OrgFile {
        id: row.col("id")?,
        organization_id: row.col("organization_id")?,
        file_name: row.col("file_name")?,
        relative_path: row.col("relative_path")?,
        mime_type: row.col("mime_type")?,
        file_size: row.col("file_size")?,
        sha256: row.col("sha256")?,
        blob_path: row.col("blob_path")?,
        created_by: row.col("created_by")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) async fn insert_org_file(
    conn: &mut impl Exec,
    new: &NewOrgFile,
    origin: Origin,
) -> Result<OrgFile> {
    let created = Timestamp::created().millis();
    // The row comes back from the insert itself: one round trip to the database, not two.
    let row = conn
        .fetch_one(
            Q::formatted(format!(
                "INSERT INTO org_files (id, organization_id, file_name, relative_path, mime_type, \
                 file_size, sha256, blob_path, origin, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                 RETURNING {ORG_FILE_COLUMNS}"
            ))
            .bind(&new.id)
            .bind(&new.organization_id)
            .bind(&new.file_name)
            .bind(&new.relative_path)
            .bind(&new.mime_type)
            .bind(new.file_size)
            .bind(&new.sha256)
            .bind(&new.blob_path)
            .bind(origin.as_str())
            .bind(&new.created_by)
            .bind(created),
        )
        .await?;
    org_file(&row)
}

async fn fetch_org_file(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    id: &str,
) -> Result<OrgFile> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ORG_FILE_COLUMNS} FROM org_files \
         WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL"
    )))
    .bind(organization_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref()
        .map(org_file)
        .transpose()?
        .ok_or(CatalogError::NotFound(Resource::OrgFile))
}

/// The live link of `org_file_id` in `store_id`, if any.
async fn live_link(
    conn: &mut AnyConnection,
    store_id: &StoreId,
    org_file_id: &FileId,
) -> Result<Option<FileId>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM files WHERE store_id = $1 AND org_file_id = $2 AND deleted_at IS NULL",
    )
    .bind(store_id)
    .bind(org_file_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// After a link was deleted (inside that transaction): a file the knowledge family created
/// goes with its last link — hidden now, its original purged by a job.
pub(crate) async fn release_after_unlink(
    conn: &mut AnyConnection,
    link_id: &str,
    now: i64,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT o.id, o.organization_id FROM files f JOIN org_files o ON o.id = f.org_file_id \
         WHERE f.id = $1 AND o.origin = 'store' AND o.deleted_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM files g WHERE g.org_file_id = o.id AND g.deleted_at IS NULL)",
    )
    .bind(link_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        let id: String = row.try_get("id")?;
        let organization_id: OrgId = row.try_get("organization_id")?;
        hide_org_file(conn, &organization_id, &id, now).await?;
    }
    Ok(())
}

/// Hides an organization file and queues the purge of its original.
async fn hide_org_file(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    id: &str,
    now: i64,
) -> Result<bool> {
    let hidden = sqlx::query(
        "UPDATE org_files SET deleted_at = $1, updated_at = $1 \
         WHERE organization_id = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(organization_id)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if hidden > 0 {
        // An organization file has no store: the job's store is empty.
        let job = NewJob::PurgeOrgFile { org_file_id: id };
        enqueue(conn, organization_id, job, now).await?;
    }
    Ok(hidden > 0)
}

impl Catalog {
    /// Records an organization upload (no store yet).
    pub async fn create_org_file(&self, new: NewOrgFile) -> Result<OrgFile> {
        let mut tx = self.write_tx().await?;
        let file = insert_org_file(&mut tx, &new, Origin::Org).await?;
        tx.commit().await?;
        Ok(file)
    }

    /// Records an organization upload and links it into a store, in one transaction (the
    /// vector-stores family's base64 upload).
    pub async fn create_org_file_in_store(
        &self,
        new: NewOrgFile,
        store_id: &StoreId,
    ) -> Result<FileRecord> {
        let mut tx = self.write_tx().await?;
        require_store(&mut tx, &new.organization_id, store_id).await?;
        let file = insert_org_file(&mut tx, &new, Origin::Org).await?;
        let link = insert_link(
            &mut tx,
            &file,
            store_id,
            &FileId::from(IdKind::StoreFile.generate()),
            &new.created_by,
        )
        .await?;
        tx.commit().await?;
        Ok(link)
    }

    pub async fn get_org_file(&self, organization_id: &OrgId, id: &str) -> Result<OrgFile> {
        let mut conn = self.read.acquire().await?;
        fetch_org_file(&mut conn, organization_id, id).await
    }

    /// An organization's live files, newest first.
    pub async fn list_org_files(
        &self,
        organization_id: &OrgId,
        window: PageRequest,
    ) -> Result<Page<OrgFile>> {
        let mut conn = self.read.acquire().await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM org_files WHERE organization_id = $1 AND deleted_at IS NULL",
        )
        .bind(organization_id)
        .fetch_one(&mut *conn)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORG_FILE_COLUMNS} FROM org_files WHERE organization_id = $1 \
             AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(organization_id)
        .bind(window.limit)
        .bind(window.skip)
        .fetch_all(&mut *conn)
        .await?;
        let items = rows.iter().map(org_file).collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, total, window))
    }

    /// Adds an organization file to a store: a new link with its job, or — the file is in
    /// the store already, e.g. a re-sent request — the existing link. Of concurrent adds,
    /// one creates the link and the others get it.
    pub async fn link_file(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        org_file_id: &FileId,
        by: &str,
    ) -> Result<LinkOutcome> {
        let attempt = async {
            let mut tx = self.write_tx().await?;
            require_store(&mut tx, organization_id, store_id).await?;
            let file = fetch_org_file(&mut tx, organization_id, org_file_id).await?;
            if let Some(link) = live_link(&mut tx, store_id, org_file_id).await? {
                let record =
                    crate::files::fetch_file(&mut tx, organization_id, store_id, &link).await?;
                return Ok(LinkOutcome::Existing(Box::new(record)));
            }
            let link = FileId::from(IdKind::StoreFile.generate());
            let record = insert_link(&mut tx, &file, store_id, &link, by).await?;
            tx.commit().await?;
            Ok(LinkOutcome::Created(Box::new(record)))
        };
        match attempt.await {
            // PostgreSQL: a concurrent add inserted the link between our look and our insert
            // (the unique index `files_one_link` refused ours); theirs is the answer.
            Err(CatalogError::Db(sqlx::Error::Database(err))) if err.is_unique_violation() => {
                let mut conn = self.read.acquire().await?;
                let link = live_link(&mut conn, store_id, org_file_id)
                    .await?
                    .ok_or(CatalogError::NotFound(Resource::File))?;
                let record =
                    crate::files::fetch_file(&mut conn, organization_id, store_id, &link).await?;
                Ok(LinkOutcome::Existing(Box::new(record)))
            }
            other => other,
        }
    }

    /// The link ID of a file in a store, named by its organization file ID or its link ID.
    pub async fn resolve_link(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_or_link_id: &FileId,
    ) -> Result<FileId> {
        let mut conn = self.read.acquire().await?;
        let id: Option<FileId> = sqlx::query_scalar(
            "SELECT id FROM files WHERE organization_id = $1 AND store_id = $2 \
             AND (id = $3 OR org_file_id = $3) AND deleted_at IS NULL",
        )
        .bind(organization_id)
        .bind(store_id)
        .bind(file_or_link_id)
        .fetch_optional(&mut *conn)
        .await?;
        match id {
            Some(id) => Ok(id),
            None => {
                require_store(&mut conn, organization_id, store_id).await?;
                Err(CatalogError::NotFound(Resource::File))
            }
        }
    }

    /// Deletes an organization file: gone from every store at once (each link deleted as a
    /// knowledge-family delete does), its original purged by a job.
    pub async fn delete_org_file(&self, organization_id: &OrgId, id: &str, by: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = Timestamp::now().millis();
        if !hide_org_file(&mut tx, organization_id, id, now).await? {
            return Err(CatalogError::NotFound(Resource::OrgFile));
        }
        let links = sqlx::query(
            "SELECT id, store_id FROM files WHERE org_file_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::new();
        for link in &links {
            let link_id: FileId = link.try_get("id")?;
            let store_id: StoreId = link.try_get("store_id")?;
            crate::files::unlink(&mut tx, organization_id, &store_id, &link_id, now).await?;
            append_log(
                &mut tx,
                organization_id,
                &link_id,
                0,
                LogLevel::Info,
                None,
                "deleted",
                "Its organization file was deleted; its chunks and vectors are being purged",
                json!({"by": by, "file_id": id}),
            )
            .await?;
            events.push(NewEvent::file(
                EventType::FileDeleted,
                &store_id,
                &link_id,
                json!({"by": by, "org_file_id": id}),
            ));
        }
        write_events(&mut tx, organization_id, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The original to keep when a deleted link's blobs are purged: its organization file's,
    /// while that file lives.
    pub async fn live_original_of_link(&self, link_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT o.blob_path FROM files f JOIN org_files o ON o.id = f.org_file_id \
             WHERE f.id = $1 AND o.deleted_at IS NULL",
        )
        .bind(link_id)
        .fetch_optional(&self.read)
        .await?)
    }

    /// The originals of live organization files stored under `prefix` (a store's blob
    /// folder): what a store's purge must leave.
    pub async fn live_originals_under(&self, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{}/%", crate::rows::escape_like(prefix));
        Ok(sqlx::query_scalar(
            "SELECT blob_path FROM org_files WHERE deleted_at IS NULL AND blob_path LIKE $1 ESCAPE '\\'",
        )
        .bind(pattern)
        .fetch_all(&self.read)
        .await?)
    }

    /// A deleted organization file's original (for its purge job).
    pub async fn deleted_org_file_blob(&self, id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT blob_path FROM org_files WHERE id = $1 AND deleted_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?)
    }

    /// After an organization file's purge: forgets it and finishes the job.
    pub async fn forget_org_file(&self, job_id: &str, id: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM org_files WHERE id = $1 AND deleted_at IS NOT NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
