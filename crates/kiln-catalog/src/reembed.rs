//! Re-embedding after the embedding model changes: every completed file records the model
//! (with its precision, e.g. `all-MiniLM-L6-v2@int8`) its active generation's vectors were
//! made with. When a server starts with another, each such file is queued for processing
//! again. Its active generation stays searchable until the new one completes and the flip
//! makes it stale, as with a forced retry; the text extracted before is reused.

use kiln_core::types::{EventType, FileStatus, LogLevel, Step};
use kiln_core::{FileId, OrgId, StoreId, Timestamp};
use serde_json::json;
use sqlx::Row;

use crate::events::{NewEvent, write as write_events};
use crate::files::{NewJob, Reset, append_log, enqueue, reset_to_pending};
use crate::{Catalog, Result};

/// Files queued per transaction: a large catalog is swept without one long write lock.
const BATCH: i64 = 500;

impl Catalog {
    /// Queues every live completed file whose vectors were made with a model other than
    /// `model` for processing with it; the number queued. Safe on several nodes at once: a
    /// file is reset from `completed` by a conditional update, so only one of them queues it.
    pub async fn reembed_outdated(&self, model: &str) -> Result<usize> {
        let mut queued = 0;
        loop {
            let mut tx = self.write_tx().await?;
            let rows = sqlx::query(
                "SELECT id, organization_id, store_id, attempts, embedding_model FROM files \
                 WHERE deleted_at IS NULL AND status = 'completed' \
                   AND COALESCE(embedding_model, '') <> $1 \
                 ORDER BY created_at, id LIMIT $2",
            )
            .bind(model)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(queued);
            }
            let now = Timestamp::now().millis();
            for row in &rows {
                let file_id: FileId = row.try_get("id")?;
                let org: OrgId = row.try_get("organization_id")?;
                let store_id: StoreId = row.try_get("store_id")?;
                let attempts: i64 = row.try_get("attempts")?;
                let before: Option<String> = row.try_get("embedding_model")?;
                let reset = Reset::Retry {
                    from: FileStatus::Completed,
                };
                if !reset_to_pending(&mut tx, &file_id, reset, now).await? {
                    continue;
                }
                let job = NewJob::Process {
                    store_id: &store_id,
                    file_id: &file_id,
                };
                enqueue(&mut tx, &org, job, now).await?;
                let data = json!({"from": before, "to": model});
                append_log(
                    &mut tx,
                    &org,
                    &file_id,
                    attempts,
                    LogLevel::Info,
                    Some(Step::Queued),
                    "reembed_requested",
                    &format!(
                        "The embedding model changed ({} -> {model}); re-embedding. The vectors made before stay searchable until this completes",
                        before.as_deref().unwrap_or("unknown")
                    ),
                    data.clone(),
                )
                .await?;
                let mut extra = data;
                extra["reason"] = json!("embedding_model_changed");
                let event = NewEvent::file(EventType::FileQueued, &store_id, &file_id, extra);
                write_events(&mut tx, &org, vec![event]).await?;
                queued += 1;
            }
            tx.commit().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Claimed, Completion, TestCatalog, test_catalogs, test_file};

    /// Several nodes starting with a new model at once queue each outdated file once.
    #[tokio::test]
    async fn concurrent_sweeps_queue_each_outdated_file_once() {
        for TestCatalog {
            catalog,
            org,
            store,
            ..
        } in test_catalogs().await
        {
            let files = 30;
            for _ in 0..files {
                test_file(&catalog, &org, &store).await;
            }
            for n in 0..files {
                let Some(Claimed::Process(job)) =
                    catalog.claim("w", Duration::from_secs(60)).await.unwrap()
                else {
                    panic!("a processing job");
                };
                let done = Completion {
                    chunk_count: 1,
                    extracted_text_bytes: 1,
                    vector_bytes: 4,
                    index_bytes: 1,
                    // One file already made with the new model.
                    embedding_model: if n == 0 { "new" } else { "old" }.into(),
                    data: serde_json::json!({}),
                    logs: Vec::new(),
                };
                catalog.complete(&job, "w", done).await.unwrap();
            }
            let (a, b, c) = tokio::join!(
                catalog.reembed_outdated("new"),
                catalog.reembed_outdated("new"),
                catalog.reembed_outdated("new")
            );
            let queued = a.unwrap() + b.unwrap() + c.unwrap();
            assert_eq!(queued, files - 1);
            let counts = catalog.job_counts().await.unwrap();
            let queued_jobs = counts
                .iter()
                .find(|(kind, state, _)| kind == "process" && state == "queued")
                .map(|(_, _, n)| *n);
            assert_eq!(queued_jobs, Some(files as i64 - 1), "{counts:?}");
            // Pending files are not swept again; nor is anything with the model it has.
            assert_eq!(catalog.reembed_outdated("new").await.unwrap(), 0);
        }
    }
}
