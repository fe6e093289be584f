//! The durable job queue (design "Queue"): jobs are rows, claimed by one conditional update
//! with a lease, kept by a heartbeat, re-queued by a reaper when the lease expires. Claims
//! prefer the organization with the fewest running jobs (fair dispatch). Every job state
//! change and the file status change it implies happen in one transaction.

//!
//! By concern: `lease.rs` (claim, heartbeat, liveness, the reaper), `transitions.rs`
//! (progress, completion, failure, requeue), `purge.rs` (forgetting what was purged).

mod lease;
mod purge;
mod transitions;

use std::collections::HashMap;
use std::time::Duration;

use kiln_core::model::{Chunking, FileRecord};
use kiln_core::types::{LogLevel, Step};
use kiln_core::{FileId, OrgId, StoreId, Timestamp};
use serde_json::Value;
use sqlx::Row;

use crate::exec::{Exec, Q};
use crate::rows::Columns;
use crate::{Catalog, Result};

/// Automatic tries of one processing request (contract §7).
pub const MAX_ATTEMPTS: i64 = 3;
/// Lease expiries tolerated before a file fails with `WORKER_LOST`.
pub const MAX_LEASE_LOSSES: i64 = 3;

/// A job's kind (`jobs.kind`); each carries its own payload in [`Claimed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Extract, chunk, embed, index a file.
    Process,
    /// Remove a deleted file's chunks, vectors and blobs.
    Purge,
    /// Remove a deleted store's chunks, vectors and blobs.
    PurgeStore,
    /// Remove a deleted organization file's original.
    PurgeOrgFile,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Process,
        JobKind::Purge,
        JobKind::PurgeStore,
        JobKind::PurgeOrgFile,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Process => "process",
            JobKind::Purge => "purge",
            JobKind::PurgeStore => "purge_store",
            JobKind::PurgeOrgFile => "purge_org_file",
        }
    }

    pub fn parse(text: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// A job's state (`jobs.state`). A job is `Queued` until a worker claims it (`Running`, with
/// a lease); it ends `Done`, `Failed` (no tries left, or a kind this build does not know) or
/// `Cancelled` (its file was deleted first). A running job whose lease expires, that fails
/// with tries left, or that a worker hands back goes `Queued` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the job is over (nothing will run it again).
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What every held job has: its row, whose lease the worker holds, and its automatic try.
#[derive(Debug, Clone)]
pub struct HeldJob {
    pub job_id: String,
    pub organization_id: OrgId,
    /// The store the job is about (empty for an organization file's purge).
    pub store_id: StoreId,
    /// This job's automatic try, from 0.
    pub attempt: i64,
}

/// A job a worker holds, with its kind's payload.
#[derive(Debug, Clone)]
pub enum Claimed {
    /// Process a store's file.
    Process(Box<ProcessJob>),
    /// Remove a deleted store file's chunks, vectors and blobs.
    Purge { job: HeldJob, file_id: FileId },
    /// Remove a deleted store's (`job.store_id`) chunks, vectors and blobs.
    PurgeStore { job: HeldJob },
    /// Remove a deleted organization file's original.
    PurgeOrgFile { job: HeldJob, org_file_id: FileId },
}

/// A claimed processing job: the file as claimed (its `generation` is the one to write) and
/// its store's chunking.
#[derive(Debug, Clone)]
pub struct ProcessJob {
    pub held: HeldJob,
    pub file: FileRecord,
    pub chunking: Chunking,
}

impl Claimed {
    pub fn job(&self) -> &HeldJob {
        match self {
            Claimed::Process(process) => &process.held,
            Claimed::Purge { job, .. }
            | Claimed::PurgeStore { job }
            | Claimed::PurgeOrgFile { job, .. } => job,
        }
    }

    pub fn kind(&self) -> JobKind {
        match self {
            Claimed::Process(_) => JobKind::Process,
            Claimed::Purge { .. } => JobKind::Purge,
            Claimed::PurgeStore { .. } => JobKind::PurgeStore,
            Claimed::PurgeOrgFile { .. } => JobKind::PurgeOrgFile,
        }
    }

    /// The processing job, if this is one.
    pub fn into_process(self) -> Option<ProcessJob> {
        match self {
            Claimed::Process(process) => Some(*process),
            _ => None,
        }
    }
}

/// Whether a worker should go on with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// The file was deleted: stop at this boundary.
    Cancelled,
    /// The lease expired and the job went back to the queue (or elsewhere): stop.
    LeaseLost,
}

/// Figures of a processed file, recorded when it completes.
#[derive(Debug, Clone)]
pub struct Completion {
    pub chunk_count: i64,
    pub extracted_text_bytes: i64,
    pub vector_bytes: i64,
    pub index_bytes: i64,
    pub embedding_model: String,
    /// `step_completed` data for the indexing step, logged in the same transaction.
    pub data: Value,
    /// Log lines of this attempt not written yet (a worker writes a file's quick steps
    /// together), written first, with a `file.step_started` event for each step they start.
    pub logs: Vec<LogLine>,
}

/// What an attempt to complete a file led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompleteOutcome {
    /// Completed; the generation active before is stale now.
    Completed { previous_generation: i64 },
    /// Not completed: the file was deleted or the lease lost.
    Stopped(Liveness),
}

/// What a failure led to.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    RetryScheduled {
        delay: Duration,
        attempt: i64,
    },
    Failed,
    /// The job was no longer ours (lease lost or file deleted); nothing recorded.
    Stale,
}

/// A log entry to append.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: LogLevel,
    pub step: Option<Step>,
    pub event: &'static str,
    pub message: String,
    pub data: Value,
    /// When it happened: a worker may write several lines together, later.
    pub at: Timestamp,
}

impl LogLine {
    pub fn info(
        step: Option<Step>,
        event: &'static str,
        message: impl Into<String>,
        data: Value,
    ) -> Self {
        LogLine {
            level: LogLevel::Info,
            step,
            event,
            message: message.into(),
            data,
            at: Timestamp::now(),
        }
    }
}

async fn liveness(conn: &mut impl Exec, job_id: &str, worker: &str) -> Result<Liveness> {
    // `live` counts the job's file if it still exists and is not deleted.
    // Locked on PostgreSQL: inside a write transaction, a reaper or another worker must not
    // change the job between this check and the writes it allows.
    let sql = format!(
        "SELECT j.state, j.lease_owner, \
         (SELECT COUNT(*) FROM files f WHERE f.id = j.file_id AND f.deleted_at IS NULL) AS live \
         FROM jobs j WHERE j.id = $1{}",
        conn.dialect().for_update()
    );
    let row = conn.fetch_optional(Q::formatted(sql).bind(job_id)).await?;
    let Some(row) = row else {
        return Ok(Liveness::LeaseLost);
    };
    let state: String = row.col("state")?;
    let owner: Option<String> = row.col("lease_owner")?;
    let live: i64 = row.col("live")?;
    if JobState::parse(&state) != Some(JobState::Running) || owner.as_deref() != Some(worker) {
        return Ok(Liveness::LeaseLost);
    }
    // A deleted file — or one already purged and forgotten — cancels its processing.
    Ok(if live == 0 {
        Liveness::Cancelled
    } else {
        Liveness::Alive
    })
}

impl Catalog {
    /// For search: the active generation and display fields of every searchable file of the
    /// given stores.
    pub async fn searchable_files(
        &self,
        organization_id: &OrgId,
        store_ids: &[StoreId],
    ) -> Result<HashMap<String, SearchableFile>> {
        let mut out = HashMap::new();
        for store_id in store_ids {
            let rows = sqlx::query(
                "SELECT id, store_id, file_name, relative_path, mime_type, active_generation FROM files \
                 WHERE organization_id = $1 AND store_id = $2 AND deleted_at IS NULL AND active_generation > 0",
            )
            .bind(organization_id)
            .bind(store_id)
            .fetch_all(&self.read)
            .await?;
            for row in rows {
                out.insert(
                    row.try_get("id")?,
                    SearchableFile {
                        store_id: row.try_get("store_id")?,
                        file_name: row.try_get("file_name")?,
                        relative_path: row.try_get("relative_path")?,
                        mime_type: row.try_get("mime_type")?,
                        active_generation: row.try_get::<i64, _>("active_generation")? as u64,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Jobs by kind and state, for metrics and tests.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}

/// What search needs of a file.
#[derive(Debug, Clone)]
pub struct SearchableFile {
    pub store_id: StoreId,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub active_generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::types::FileErrorCode;

    use crate::test_file as add_file;

    async fn nothing_to_claim(catalog: &Catalog) -> bool {
        let claimed = catalog.claim("w", Duration::from_secs(60)).await.unwrap();
        claimed.is_none()
    }

    #[tokio::test]
    async fn concurrent_claimers_never_share_a_job() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            for _ in 0..200 {
                add_file(&catalog, &org, &store).await;
            }
            let claimers = (0..8).map(|n| {
                let catalog = catalog.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while let Some(job) = catalog
                        .claim(&format!("w{n}"), Duration::from_secs(60))
                        .await
                        .unwrap()
                    {
                        mine.push(job.into_process().unwrap().file.id);
                    }
                    mine
                })
            });
            let mut all = Vec::new();
            for claimer in claimers {
                all.extend(claimer.await.unwrap());
            }
            assert_eq!(all.len(), 200);
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 200, "a job was claimed twice");
        }
    }

    #[tokio::test]
    async fn the_organization_with_the_fewest_running_jobs_goes_first() {
        for crate::TestCatalog {
            catalog,
            org: first,
            store: first_store,
            ..
        } in crate::test_catalogs().await
        {
            let (second, second_store) = crate::test_org_with_store(&catalog).await;
            // A third organization's job is queued but due only in an hour: its organization
            // is visited and passed over.
            let (third, third_store) = crate::test_org_with_store(&catalog).await;
            let later = add_file(&catalog, &third, &third_store).await;
            sqlx::query("UPDATE jobs SET run_after = run_after + 3600000 WHERE file_id = $1")
                .bind(&later)
                .execute(&catalog.write)
                .await
                .unwrap();
            // Due one after the other: the first organization's two files, then the second's.
            let mut files = Vec::new();
            for (org, store) in [
                (&first, &first_store),
                (&first, &first_store),
                (&second, &second_store),
            ] {
                files.push(add_file(&catalog, org, store).await);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let claim = async || {
                let claimed = catalog.claim("w", Duration::from_secs(60)).await.unwrap();
                claimed.unwrap().into_process().unwrap().file.id
            };
            // Neither runs anything: the earliest job. Then the first organization runs one,
            // so the second's job goes before the first's earlier one.
            assert_eq!(claim().await, files[0]);
            assert_eq!(claim().await, files[2]);
            assert_eq!(claim().await, files[1]);
            assert!(nothing_to_claim(&catalog).await);

            // On SQLite a claim skips from one organization with queued jobs to the next and
            // looks up each one's head job in the index `jobs_queue_by_org`, instead of
            // reading and sorting the whole queue.
            if catalog.dialect == crate::Dialect::Sqlite {
                let sql = lease::claim_sql(catalog.dialect)
                    .replace("$1", "'w'")
                    .replace("$2", "0")
                    .replace("$3", "0");
                let plan = crate::test_sqlite_plan(&catalog, &sql).await;
                for step in [
                    "SEARCH n USING COVERING INDEX jobs_queue_by_org (state=? AND organization_id>?)",
                    "SEARCH q USING COVERING INDEX jobs_queue_by_org (state=? AND organization_id=? AND run_after<?)",
                ] {
                    assert!(plan.contains(step), "{plan}");
                }
            }
        }
    }

    /// Every state change of a job or a file rewrites its entry in each index that holds the
    /// state (on SQLite, a page or two more in the log at each commit). The jobs table keeps
    /// one such index besides the one-live-job guard, and the queue's lookups (the claim's,
    /// checked above, and the reaper's) are ranges of it; the files table keeps the store's
    /// figures' one (checked in `stores`).
    #[tokio::test]
    async fn state_changes_rewrite_only_the_indexes_queries_use() {
        for crate::TestCatalog { catalog, .. } in crate::test_catalogs().await {
            let indexes = async |table: &str| -> Vec<String> {
                let sql = match catalog.dialect {
                    crate::Dialect::Sqlite => {
                        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 \
                         AND sql IS NOT NULL ORDER BY name"
                    }
                    crate::Dialect::Postgres => {
                        "SELECT CAST(indexname AS TEXT) FROM pg_indexes WHERE tablename = $1 \
                         AND indexname NOT LIKE '%_pkey' ORDER BY indexname"
                    }
                };
                sqlx::query_scalar(sql)
                    .bind(table)
                    .fetch_all(&catalog.read)
                    .await
                    .unwrap()
            };
            let dialect = catalog.dialect;
            assert_eq!(
                indexes("jobs").await,
                ["jobs_file", "jobs_one_live_process", "jobs_queue_by_org"],
                "{dialect:?}"
            );
            assert_eq!(
                indexes("files").await,
                [
                    "files_one_link",
                    "files_org_file",
                    "files_store_created",
                    "files_store_figures"
                ],
                "{dialect:?}"
            );
            if dialect == crate::Dialect::Sqlite {
                let plan =
                    crate::test_sqlite_plan(&catalog, &lease::EXPIRED_SQL.replace("$1", "0")).await;
                assert!(
                    plan.contains("SEARCH jobs USING INDEX jobs_queue_by_org (state=?)"),
                    "{plan}"
                );
            }
        }
    }

    #[tokio::test]
    async fn expired_leases_are_reaped_and_heartbeats_keep_them() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let a = add_file(&catalog, &org, &store).await;
            let b = add_file(&catalog, &org, &store).await;
            let first = catalog
                .claim("w1", Duration::from_millis(300))
                .await
                .unwrap()
                .and_then(Claimed::into_process)
                .unwrap();
            let second = catalog
                .claim("w2", Duration::from_millis(300))
                .await
                .unwrap()
                .and_then(Claimed::into_process)
                .unwrap();
            let mut files = [first.file.id.clone(), second.file.id.clone()];
            files.sort();
            let mut expected = [a, b];
            expected.sort();
            assert_eq!(files, expected);
            // w2 heartbeats; w1 does not.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                catalog
                    .heartbeat(&second.held.job_id, "w2", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(catalog.reap_expired().await.unwrap(), 1);
            assert_eq!(
                catalog.liveness(&first.held.job_id, "w1").await.unwrap(),
                Liveness::LeaseLost
            );
            assert_eq!(
                catalog.liveness(&second.held.job_id, "w2").await.unwrap(),
                Liveness::Alive
            );
            assert!(
                !catalog
                    .heartbeat(&first.held.job_id, "w1", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            // The reaped job is claimable again, with a new generation.
            let again = catalog
                .claim("w3", Duration::from_secs(60))
                .await
                .unwrap()
                .and_then(Claimed::into_process)
                .unwrap();
            assert_eq!(again.file.id, first.file.id);
            assert_eq!(again.file.generation, 2);
        }
    }

    #[tokio::test]
    async fn transient_failures_retry_until_the_third_try() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            add_file(&catalog, &org, &store).await;
            for try_number in 0..MAX_ATTEMPTS {
                let job = catalog
                    .claim("w", Duration::from_secs(60))
                    .await
                    .unwrap()
                    .and_then(Claimed::into_process)
                    .expect("due at once");
                assert_eq!(job.held.attempt, try_number);
                let outcome = catalog
                    .fail(
                        &job,
                        "w",
                        Step::Embedding,
                        FileErrorCode::EmbeddingFailed,
                        "down",
                        true,
                        Duration::ZERO,
                    )
                    .await
                    .unwrap();
                if try_number + 1 < MAX_ATTEMPTS {
                    assert!(matches!(outcome, FailOutcome::RetryScheduled { .. }));
                } else {
                    assert_eq!(outcome, FailOutcome::Failed);
                }
            }
            assert!(nothing_to_claim(&catalog).await);
        }
    }
}
