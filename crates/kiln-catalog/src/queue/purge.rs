//! After a purge: forgetting the file's or store's rows.

use kiln_core::types::EventType;
use kiln_core::{FileId, OrgId, StoreId};
use serde_json::json;
use sqlx::Row;

use crate::events::{NewEvent, write as write_events};
use crate::{Catalog, Result};

impl Catalog {
    /// After a file's purge: forgets the file, its logs and its finished jobs.
    pub async fn forget_file(&self, job_id: &str, file_id: &FileId) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let file =
            sqlx::query("SELECT organization_id, store_id, file_name FROM files WHERE id = $1")
                .bind(file_id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM file_logs WHERE file_id = $1")
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM files WHERE id = $1 AND deleted_at IS NOT NULL")
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM jobs WHERE file_id = $1 AND id <> $2 AND state <> 'running'")
            .bind(file_id)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        if let Some(file) = file {
            let org: OrgId = file.try_get("organization_id")?;
            let store: StoreId = file.try_get("store_id")?;
            let name: String = file.try_get("file_name")?;
            let event = NewEvent::file(
                EventType::FilePurged,
                &store,
                file_id,
                json!({"file_name": name, "status": "deleted"}),
            );
            write_events(&mut tx, &org, vec![event]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// After a store's purge: forgets its files, their logs and jobs.
    pub async fn forget_store(&self, job_id: &str, store_id: &StoreId) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "DELETE FROM file_logs WHERE file_id IN (SELECT id FROM files WHERE store_id = $1)",
        )
        .bind(store_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM files WHERE store_id = $1")
            .bind(store_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM jobs WHERE store_id = $1 AND (id = $2 OR state <> 'running')")
            .bind(store_id)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
