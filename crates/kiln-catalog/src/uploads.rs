//! Signed-URL uploads: an upload row per `upload-url`, one part row per accepted `PUT`, and
//! registration that turns a complete upload into a file with its first job, atomically.
//! Also the server-wide secrets (the key that signs upload URLs).

use kiln_core::model::{FileRecord, OrgFile};
use kiln_core::{FileId, OrgId, StoreId, Timestamp, ids};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::files::{NewFile, insert_file, require_store};
use crate::rows::ts;
use crate::{Catalog, CatalogError, Resource, Result};

/// An upload announced by `upload-url` whose bytes are (being) sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// The file's ID once registered.
    pub id: FileId,
    pub organization_id: OrgId,
    /// Empty for an organization upload (no store).
    pub store_id: String,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub file_size: i64,
    pub sha256: Option<String>,
    /// Bytes `0..received_bytes` have arrived.
    pub received_bytes: i64,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Upload {
    pub fn is_complete(&self) -> bool {
        self.received_bytes == self.file_size
    }
}

/// What `upload-url` records.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub id: FileId,
    pub organization_id: OrgId,
    /// Empty for an organization upload (no store).
    pub store_id: String,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub file_size: i64,
    pub sha256: Option<String>,
    pub created_by: String,
    pub expires_at: Timestamp,
}

/// One accepted piece: bytes `offset..offset + length`, kept in the blob `blob_name`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadPart {
    pub offset: i64,
    pub length: i64,
    pub blob_name: String,
}

const UPLOAD_COLUMNS: &str = "id, organization_id, store_id, file_name, relative_path, mime_type, \
     file_size, sha256, received_bytes, created_by, created_at, expires_at";

fn upload(row: &AnyRow) -> Result<Upload> {
    Ok(Upload {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        store_id: row.try_get("store_id")?,
        file_name: row.try_get("file_name")?,
        relative_path: row.try_get("relative_path")?,
        mime_type: row.try_get("mime_type")?,
        file_size: row.try_get("file_size")?,
        sha256: row.try_get("sha256")?,
        received_bytes: row.try_get("received_bytes")?,
        created_by: row.try_get("created_by")?,
        created_at: ts(row, "created_at")?,
        expires_at: ts(row, "expires_at")?,
    })
}

impl Catalog {
    /// The secret called `name`, created (randomly) the first time it is asked for. Every
    /// server sharing the catalog sees the same value.
    pub async fn server_secret(&self, name: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(ids::generate_secret())
        .bind(Timestamp::now().millis())
        .execute(&self.write)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.write)
                .await?,
        )
    }

    /// Records a new upload in a store.
    /// An upload into a store, or (`store_id` empty) into the organization.
    pub async fn create_upload(&self, new: NewUpload) -> Result<Upload> {
        let mut tx = self.write_tx().await?;
        if !new.store_id.is_empty() {
            let store_id = StoreId::from(new.store_id.as_str());
            require_store(&mut tx, &new.organization_id, &store_id).await?;
        }
        let now = Timestamp::now().millis();
        sqlx::query(
            "INSERT INTO uploads (id, organization_id, store_id, file_name, relative_path, \
             mime_type, file_size, sha256, received_bytes, created_by, created_at, updated_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $10, $11)",
        )
        .bind(&new.id)
        .bind(&new.organization_id)
        .bind(&new.store_id)
        .bind(&new.file_name)
        .bind(new.relative_path.clone())
        .bind(&new.mime_type)
        .bind(new.file_size)
        .bind(new.sha256.clone())
        .bind(&new.created_by)
        .bind(now)
        .bind(new.expires_at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.upload(&new.id).await
    }

    /// An unexpired upload, found by its id alone (a signed URL names nothing else).
    pub async fn upload(&self, id: &str) -> Result<Upload> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND expires_at > $2"
        )))
        .bind(id)
        .bind(Timestamp::now().millis())
        .fetch_optional(&self.read)
        .await?
        .ok_or(CatalogError::NotFound(Resource::Upload))?;
        upload(&row)
    }

    /// Records that bytes `offset..offset + length` arrived in blob `blob_name`, provided the
    /// upload still holds exactly `offset` bytes (so concurrent `PUT`s cannot both count).
    /// Returns the new received total, or `None` when another request got there first or
    /// the upload is gone.
    pub async fn add_upload_part(
        &self,
        id: &str,
        offset: i64,
        length: i64,
        blob_name: &str,
    ) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let now = Timestamp::now().millis();
        let moved = sqlx::query(
            "UPDATE uploads SET received_bytes = $1, updated_at = $2 \
             WHERE id = $3 AND received_bytes = $4 AND expires_at > $2 AND $1 <= file_size",
        )
        .bind(offset + length)
        .bind(now)
        .bind(id)
        .bind(offset)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO upload_parts (upload_id, offset_bytes, length, blob_name) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(offset)
        .bind(length)
        .bind(blob_name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(offset + length))
    }

    /// The parts of an upload, in byte order.
    pub async fn upload_parts(&self, id: &str) -> Result<Vec<UploadPart>> {
        let rows = sqlx::query(
            "SELECT offset_bytes, length, blob_name FROM upload_parts WHERE upload_id = $1 \
             ORDER BY offset_bytes",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UploadPart {
                    offset: row.try_get("offset_bytes")?,
                    length: row.try_get("length")?,
                    blob_name: row.try_get("blob_name")?,
                })
            })
            .collect()
    }

    /// Forgets the bytes of an upload (they proved wrong), so it can be sent again. Returns
    /// the parts that were dropped, for the caller to delete.
    pub async fn reset_upload(&self, id: &str) -> Result<Vec<UploadPart>> {
        let parts = self.upload_parts(id).await?;
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE uploads SET received_bytes = 0, updated_at = $1 WHERE id = $2")
            .bind(Timestamp::now().millis())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(parts)
    }

    /// Turns a complete upload into a file with its first job, in one transaction. Fails
    /// with `NotFound(Upload)` if the upload is gone, expired, incomplete or already
    /// registered (only one of two concurrent registrations wins).
    pub async fn register_upload(&self, new: NewFile) -> Result<FileRecord> {
        let mut tx = self.write_tx().await?;
        require_store(&mut tx, &new.organization_id, &new.store_id).await?;
        take_upload(
            &mut tx,
            &new.id,
            &new.organization_id,
            new.store_id.as_str(),
        )
        .await?;
        let file = insert_file(&mut tx, &new).await?;
        tx.commit().await?;
        Ok(file)
    }

    /// Registers a complete organization upload (no store) as an organization file.
    pub async fn register_org_upload(&self, new: crate::NewOrgFile) -> Result<OrgFile> {
        let mut tx = self.write_tx().await?;
        take_upload(&mut tx, &new.id, &new.organization_id, "").await?;
        let file =
            crate::org_files::insert_org_file(&mut tx, &new, crate::org_files::Origin::Org).await?;
        tx.commit().await?;
        Ok(file)
    }

    /// Deletes an upload and its part rows (not its blobs).
    pub async fn discard_upload(&self, id: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uploads that expired before `before`, oldest first, up to `limit`.
    pub async fn expired_uploads(&self, before: Timestamp, limit: i64) -> Result<Vec<Upload>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= $1 \
             ORDER BY expires_at LIMIT $2"
        )))
        .bind(before.millis())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(upload).collect()
    }
}

/// Removes a complete, unexpired upload and its part rows, as its registration does (inside
/// the caller's transaction); of concurrent registrations one finds it.
async fn take_upload(
    conn: &mut sqlx::AnyConnection,
    id: &FileId,
    organization_id: &OrgId,
    store_id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let removed = sqlx::query(
        "DELETE FROM uploads WHERE id = $1 AND organization_id = $2 AND store_id = $3 \
         AND received_bytes = file_size AND expires_at > $4",
    )
    .bind(id)
    .bind(organization_id)
    .bind(store_id)
    .bind(Timestamp::now().millis())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if removed == 0 {
        return Err(CatalogError::NotFound(Resource::Upload));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_upload(org: &OrgId, store: &str, size: i64, expires_at: Timestamp) -> NewUpload {
        NewUpload {
            id: FileId::generate(),
            organization_id: org.clone(),
            store_id: store.into(),
            file_name: "big.txt".into(),
            relative_path: None,
            mime_type: "text/plain".into(),
            file_size: size,
            sha256: None,
            created_by: "ak_x".into(),
            expires_at,
        }
    }

    fn file_for(upload: &Upload) -> NewFile {
        NewFile {
            id: upload.id.clone(),
            organization_id: upload.organization_id.clone(),
            store_id: StoreId::from(upload.store_id.as_str()),
            file_name: upload.file_name.clone(),
            relative_path: None,
            mime_type: upload.mime_type.clone(),
            file_size: upload.file_size,
            sha256: None,
            created_by: upload.created_by.clone(),
            original_blob: format!("{}/original", upload.id),
        }
    }

    #[tokio::test]
    async fn parts_count_once_and_registration_needs_every_byte() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let later = Timestamp(Timestamp::now().millis() + 60_000);
            let up = catalog
                .create_upload(new_upload(&org, &store, 10, later))
                .await
                .unwrap();
            assert_eq!(up.received_bytes, 0);
            assert_eq!(
                catalog.add_upload_part(&up.id, 0, 4, "a").await.unwrap(),
                Some(4)
            );
            // A second writer that saw 0 bytes loses; so does one past the declared size.
            assert_eq!(
                catalog.add_upload_part(&up.id, 0, 4, "b").await.unwrap(),
                None
            );
            assert_eq!(
                catalog.add_upload_part(&up.id, 4, 7, "c").await.unwrap(),
                None
            );
            let early = catalog.register_upload(file_for(&up)).await;
            assert!(matches!(
                early,
                Err(CatalogError::NotFound(Resource::Upload))
            ));
            assert_eq!(
                catalog.add_upload_part(&up.id, 4, 6, "d").await.unwrap(),
                Some(10)
            );
            let parts = catalog.upload_parts(&up.id).await.unwrap();
            let names: Vec<&str> = parts.iter().map(|p| p.blob_name.as_str()).collect();
            assert_eq!(names, ["a", "d"]);
            let file = catalog.register_upload(file_for(&up)).await.unwrap();
            assert_eq!(file.id, up.id);
            assert_eq!(file.file_size, 10);
            // Registered once: the upload is gone, a second registration finds nothing.
            assert!(catalog.upload(&up.id).await.is_err());
            assert!(catalog.register_upload(file_for(&up)).await.is_err());
            assert!(catalog.upload_parts(&up.id).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn expired_uploads_are_invisible_and_listed_for_cleanup() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let past = Timestamp(Timestamp::now().millis() - 1);
            let up = catalog
                .create_upload(new_upload(&org, &store, 3, past))
                .await
                .unwrap_err();
            // Creating reads the row back, which an expired upload no longer shows.
            assert!(matches!(up, CatalogError::NotFound(Resource::Upload)));
            let expired = catalog.expired_uploads(Timestamp::now(), 10).await.unwrap();
            assert_eq!(expired.len(), 1);
            assert_eq!(
                catalog
                    .add_upload_part(&expired[0].id, 0, 3, "a")
                    .await
                    .unwrap(),
                None
            );
            catalog.discard_upload(&expired[0].id).await.unwrap();
            assert!(
                catalog
                    .expired_uploads(Timestamp::now(), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[tokio::test]
    async fn the_secret_is_made_once() {
        for crate::TestCatalog { catalog, .. } in crate::test_catalogs().await {
            let a = catalog.server_secret("upload_url").await.unwrap();
            let b = catalog.server_secret("upload_url").await.unwrap();
            assert_eq!(a, b);
            assert_eq!(a.len(), 64);
            assert_ne!(a, catalog.server_secret("other").await.unwrap());
        }
    }
}
