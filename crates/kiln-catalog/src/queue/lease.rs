//! Claiming jobs with a lease, keeping it, and the reaper that takes back expired ones.

use std::time::Duration;

use kiln_core::types::{EventType, LogLevel, Step};
use kiln_core::{FileId, OrgId, StoreId, Timestamp};
use serde_json::json;
use sqlx::Row;

use super::*;
use crate::events::{NewEvent, file_state_of, write as write_events, write_with_state};
use crate::exec::{Exec, Q};
use crate::files::{FILE_COLUMNS, Reset, append_log, file_record, reset_to_pending};
use crate::rows::Columns;
use crate::{Catalog, Dialect, Result};

/// The organizations with queued jobs, as the common table `orgs(id)` (its last row NULL):
/// from the least ID, each next one found by `MIN(organization_id) … > previous` in the
/// index `jobs_queue_by_org`, one index lookup per organization however many jobs it has
/// queued. (A macro, so that both dialects' claims are one literal each.)
macro_rules! queued_organizations {
    () => {
        "WITH RECURSIVE orgs(id) AS ( \
           SELECT MIN(organization_id) FROM jobs WHERE state = 'queued' \
           UNION ALL \
           SELECT (SELECT MIN(n.organization_id) FROM jobs n \
                     WHERE n.state = 'queued' AND n.organization_id > orgs.id) \
           FROM orgs WHERE orgs.id IS NOT NULL), "
    };
}

/// The claim: the next due job of the organization with the fewest running jobs (fair
/// dispatch), taken in one conditional `UPDATE … RETURNING`. The organizations with queued
/// jobs are found by skipping from one to the next in the index `jobs_queue_by_org` (a
/// recursive `MIN(organization_id) … > previous`), and each one's head job (its earliest due
/// one) and running count are ranges of the same index; the head with the fewest running
/// jobs, then the earliest, is taken. A claim so costs a few index lookups per organization
/// with work queued, whatever the queue's length. (Ordering every queued job by its
/// organization's running count instead made each claim read the whole queue: 2 ms a claim
/// with 3,000 files queued on SQLite, on the one write connection, so ingesting a backlog
/// cost time quadratic in its length; PostgreSQL's `DISTINCT` over the queued jobs was a
/// sequential scan, 12.3 ms a claim with 30,000 queued.) On SQLite the one writer makes the
/// claim atomic. On PostgreSQL concurrent claimers would all pick the same job and all but
/// one come back empty, so each organization's head is picked with `FOR UPDATE SKIP LOCKED`
/// (a job another claimer is taking is passed over).
pub(super) fn claim_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            concat!(
                queued_organizations!(),
                "heads AS ( \
               SELECT (SELECT q.id FROM jobs q WHERE q.state = 'queued' \
                         AND q.organization_id = o.id AND q.run_after <= $3 \
                         ORDER BY q.run_after, q.created_at, q.id LIMIT 1) AS id, \
                      (SELECT COUNT(*) FROM jobs r WHERE r.state = 'running' \
                         AND r.organization_id = o.id) AS running \
               FROM orgs o WHERE o.id IS NOT NULL) \
             UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE id = (SELECT j.id FROM heads h JOIN jobs j ON j.id = h.id \
                         ORDER BY h.running, j.run_after, j.created_at, j.id LIMIT 1) \
               AND state = 'queued' \
             RETURNING id, kind, organization_id, store_id, file_id, attempt"
            )
        }
        Dialect::Postgres => {
            concat!(
                queued_organizations!(),
                "pick AS ( \
               SELECT j.id FROM orgs o CROSS JOIN LATERAL ( \
                 SELECT q.id, q.run_after, q.created_at FROM jobs q \
                 WHERE q.state = 'queued' AND q.organization_id = o.id \
                   AND q.run_after <= $3 \
                 ORDER BY q.run_after, q.created_at, q.id LIMIT 1 FOR UPDATE SKIP LOCKED) j \
               WHERE o.id IS NOT NULL \
               ORDER BY (SELECT COUNT(*) FROM jobs r \
                         WHERE r.state = 'running' AND r.organization_id = o.id), \
                        j.run_after, j.created_at, j.id LIMIT 1) \
             UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE id = (SELECT id FROM pick) AND state = 'queued' \
             RETURNING id, kind, organization_id, store_id, file_id, attempt"
            )
        }
    }
}

/// The running jobs whose lease ended before `$1` (a range of `jobs_queue_by_org`).
pub(super) const EXPIRED_SQL: &str = "SELECT id, kind, organization_id, store_id, file_id, lease_owner, lease_losses \
     FROM jobs WHERE state = 'running' AND lease_expires_at < $1";

/// What one claim's transaction did.
enum ClaimStep {
    /// Claimed a job, or found none due.
    Done(Option<Claimed>),
    /// Passed over a job it cannot run (an unknown kind, a deleted file's): claim again.
    Again,
}

impl Catalog {
    /// Claims the next due job for `worker` with a lease of `lease`.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claimed>> {
        loop {
            match write_inline!(self, |conn| self.claim_in(conn, worker, lease))? {
                ClaimStep::Done(claimed) => return Ok(claimed),
                ClaimStep::Again => continue,
            }
        }
    }

    /// One claim, inside a write transaction.
    async fn claim_in(
        &self,
        conn: &mut impl Exec,
        worker: &str,
        lease: Duration,
    ) -> Result<ClaimStep> {
        let now = Timestamp::now().millis();
        let row = conn
            .fetch_optional(
                Q::new(claim_sql(self.dialect))
                    .bind(worker)
                    .bind(now + lease.as_millis() as i64)
                    .bind(now),
            )
            .await?;
        let Some(row) = row else {
            return Ok(ClaimStep::Done(None));
        };
        let job_id: String = row.col("id")?;
        let kind_text: String = row.col("kind")?;
        let Some(kind) = JobKind::parse(&kind_text) else {
            conn.execute(
                Q::new(
                    "UPDATE jobs SET state = 'failed', last_error = 'unknown job kind' WHERE id = $1",
                )
                .bind(&job_id),
            )
            .await?;
            return Ok(ClaimStep::Again);
        };
        let job = HeldJob {
            job_id: job_id.clone(),
            organization_id: row.col("organization_id")?,
            store_id: row.col("store_id")?,
            attempt: row.col("attempt")?,
        };
        // The row's `file_id` names what the job is about: a store's file, an
        // organization file, or (for a store's purge) the store itself.
        let subject: FileId = row.col("file_id")?;
        let claimed = match kind {
            JobKind::Purge => Claimed::Purge {
                job,
                file_id: subject,
            },
            JobKind::PurgeStore => Claimed::PurgeStore { job },
            JobKind::PurgeOrgFile => Claimed::PurgeOrgFile {
                job,
                org_file_id: subject,
            },
            JobKind::Process => {
                match self
                    .start_processing(conn, job, &subject, worker, now)
                    .await?
                {
                    Some(process) => Claimed::Process(Box::new(process)),
                    None => {
                        // A deleted file's job is cancelled, not run.
                        conn.execute(
                            Q::new(
                                "UPDATE jobs SET state = 'cancelled', updated_at = $1 WHERE id = $2",
                            )
                            .bind(now)
                            .bind(&job_id),
                        )
                        .await?;
                        return Ok(ClaimStep::Again);
                    }
                }
            }
        };
        Ok(ClaimStep::Done(Some(claimed)))
    }

    /// A claimed processing job's start: the file moves to `processing` with a new
    /// generation, and its `started` log and event are written. `None` if the file is deleted.
    async fn start_processing(
        &self,
        conn: &mut impl Exec,
        job: HeldJob,
        file_id: &FileId,
        worker: &str,
        now: i64,
    ) -> Result<Option<ProcessJob>> {
        // The started row comes back from the update itself: one round trip, not two.
        let started = conn
            .fetch_optional(
                Q::formatted(format!(
                    "UPDATE files SET status = 'processing', current_step = 'extracting', \
                     progress_percent = 0, started_at = $1, completed_at = NULL, error_code = NULL, \
                     error_message = NULL, retryable = NULL, attempts = attempts + 1, \
                     generation = generation + 1, updated_at = $1 \
                     WHERE id = $2 AND deleted_at IS NULL RETURNING {FILE_COLUMNS}"
                ))
                .bind(now)
                .bind(file_id),
            )
            .await?;
        let Some(file_row) = started else {
            return Ok(None);
        };
        let file = file_record(&file_row)?;
        let chunking = conn
            .fetch_optional(
                Q::new("SELECT max_chunk_tokens, chunk_overlap_tokens FROM stores WHERE id = $1")
                    .bind(&job.store_id),
            )
            .await?;
        let chunking = match chunking {
            Some(c) => Chunking {
                max_chunk_tokens: c.col::<i64>("max_chunk_tokens")? as u32,
                chunk_overlap_tokens: c.col::<i64>("chunk_overlap_tokens")? as u32,
            },
            None => Chunking::default(),
        };
        append_log(
            conn,
            &file.organization_id,
            &file.id,
            file.attempts,
            LogLevel::Info,
            Some(Step::Extracting),
            "started",
            &format!("Processing started (attempt {})", file.attempts),
            json!({"worker": worker, "job_id": job.job_id, "generation": file.generation, "job_attempt": job.attempt}),
        )
        .await?;
        self.progress_gate.reset(&file.id);
        // The event carries the row the update returned (nothing changes it in between).
        write_with_state(
            conn,
            &file.organization_id,
            vec![NewEvent::file(
                EventType::FileStepStarted,
                &file.store_id,
                &file.id,
                json!({"step": "extracting"}),
            )],
            Some((&file.id, file_state_of(&file_row)?)),
        )
        .await?;
        Ok(Some(ProcessJob {
            held: job,
            file,
            chunking,
        }))
    }

    /// Extends a lease; `false` if the job is no longer this worker's.
    pub async fn heartbeat(&self, job_id: &str, worker: &str, lease: Duration) -> Result<bool> {
        let now = Timestamp::now().millis();
        let n = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND state = 'running'",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(job_id)
        .bind(worker)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Whether the worker should go on.
    pub async fn liveness(&self, job_id: &str, worker: &str) -> Result<Liveness> {
        let mut conn = self.read.acquire().await?;
        liveness(&mut conn, job_id, worker).await
    }

    /// Re-queues jobs whose lease expired (the worker died), logging `lease_expired`. A file
    /// whose worker is lost too often fails with `WORKER_LOST`. Returns how many were reaped.
    pub async fn reap_expired(&self) -> Result<usize> {
        let now = Timestamp::now().millis();
        let expired = sqlx::query(EXPIRED_SQL)
            .bind(now)
            .fetch_all(&self.read)
            .await?;
        let mut reaped = 0;
        for row in expired {
            let job_id: String = row.try_get("id")?;
            let is_process =
                JobKind::parse(&row.try_get::<String, _>("kind")?) == Some(JobKind::Process);
            let org: OrgId = row.try_get("organization_id")?;
            let store: StoreId = row.try_get("store_id")?;
            let file_id: FileId = row.try_get("file_id")?;
            let owner: Option<String> = row.try_get("lease_owner")?;
            let losses: i64 = row.try_get::<i64, _>("lease_losses")? + 1;
            let mut tx = self.write_tx().await?;
            let give_up = is_process && losses >= MAX_LEASE_LOSSES;
            let n = sqlx::query(
                "UPDATE jobs SET state = $1, lease_owner = NULL, lease_expires_at = NULL, run_after = $2, \
                 lease_losses = $3, updated_at = $2 WHERE id = $4 AND state = 'running' AND lease_expires_at < $2",
            )
            .bind(if give_up { "failed" } else { "queued" })
            .bind(now)
            .bind(losses)
            .bind(&job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                continue;
            }
            if is_process {
                let attempt: i64 = sqlx::query_scalar("SELECT attempts FROM files WHERE id = $1")
                    .bind(&file_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .unwrap_or(0);
                append_log(
                    &mut tx,
                    &org,
                    &file_id,
                    attempt,
                    LogLevel::Warning,
                    None,
                    "lease_expired",
                    "The worker stopped answering; the job was taken back",
                    json!({"worker": owner, "lease_losses": losses, "requeued": !give_up}),
                )
                .await?;
                if give_up {
                    let message = "The file's processing was interrupted repeatedly (worker lost). Retry it; if it keeps failing, the file may crash the processor.";
                    let live = sqlx::query(
                        "UPDATE files SET status = 'failed', error_code = 'WORKER_LOST', error_message = $1, \
                         retryable = 1, updated_at = $2 WHERE id = $3 AND deleted_at IS NULL",
                    )
                    .bind(message)
                    .bind(now)
                    .bind(&file_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    append_log(
                        &mut tx,
                        &org,
                        &file_id,
                        attempt,
                        LogLevel::Error,
                        None,
                        "failed",
                        message,
                        json!({"error_code": "WORKER_LOST"}),
                    )
                    .await?;
                    // A deleted file's end was its `file.deleted`.
                    if live > 0 {
                        let event =
                            NewEvent::file(EventType::FileFailed, &store, &file_id, json!({}));
                        write_events(&mut tx, &org, vec![event]).await?;
                    }
                } else {
                    let due = Reset::Requeue { due: now };
                    if reset_to_pending(&mut tx, &file_id, due, now).await? {
                        let extra = json!({"reason": "worker_lost", "lease_losses": losses});
                        let event = NewEvent::file(EventType::FileQueued, &store, &file_id, extra);
                        write_events(&mut tx, &org, vec![event]).await?;
                    }
                }
            }
            tx.commit().await?;
            reaped += 1;
        }
        Ok(reaped)
    }
}
