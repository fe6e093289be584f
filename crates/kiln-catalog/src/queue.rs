//! The durable job queue (design "Queue"): jobs are rows, claimed by one conditional update
//! with a lease, kept by a heartbeat, re-queued by a reaper when the lease expires. Claims
//! prefer the organization with the fewest running jobs (fair dispatch). Every job state
//! change and the file status change it implies happen in one transaction.

use std::collections::HashMap;
use std::time::Duration;

use kiln_core::Timestamp;
use kiln_core::model::{Chunking, FileRecord};
use kiln_core::types::{FileErrorCode, LogLevel, Step};
use serde_json::{Value, json};
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::events::{NewEvent, write as write_events};
use crate::files::{FILE_COLUMNS, append_log, file_record};
use crate::{Catalog, Dialect, Result};
use kiln_core::types::EventType;

/// Automatic tries of one processing request (contract §7).
pub const MAX_ATTEMPTS: i64 = 3;
/// Lease expiries tolerated before a file fails with `WORKER_LOST`.
pub const MAX_LEASE_LOSSES: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    fn parse(text: &str) -> Option<JobKind> {
        match text {
            "process" => Some(JobKind::Process),
            "purge" => Some(JobKind::Purge),
            "purge_store" => Some(JobKind::PurgeStore),
            "purge_org_file" => Some(JobKind::PurgeOrgFile),
            _ => None,
        }
    }
}

/// A job a worker holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job_id: String,
    pub kind: JobKind,
    pub organization_id: String,
    pub store_id: String,
    /// For `PurgeStore`, the store ID; for `PurgeOrgFile`, the organization file's.
    pub file_id: String,
    /// This job's automatic try, from 0.
    pub job_attempt: i64,
    /// For `Process`: the file as claimed (its `generation` is the one to write) and the
    /// store's chunking.
    pub file: Option<FileRecord>,
    pub chunking: Chunking,
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
        }
    }
}

async fn liveness(conn: &mut AnyConnection, job_id: &str, worker: &str) -> Result<Liveness> {
    // `live` counts the job's file if it still exists and is not deleted.
    // Locked on PostgreSQL: inside a write transaction, a reaper or another worker must not
    // change the job between this check and the writes it allows.
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT j.state, j.lease_owner, \
         (SELECT COUNT(*) FROM files f WHERE f.id = j.file_id AND f.deleted_at IS NULL) AS live \
         FROM jobs j WHERE j.id = $1{}",
        Dialect::of(conn).for_update()
    )))
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Liveness::LeaseLost);
    };
    let state: String = row.try_get("state")?;
    let owner: Option<String> = row.try_get("lease_owner")?;
    let live: i64 = row.try_get("live")?;
    if state != "running" || owner.as_deref() != Some(worker) {
        return Ok(Liveness::LeaseLost);
    }
    // A deleted file — or one already purged and forgotten — cancels its processing.
    Ok(if live == 0 {
        Liveness::Cancelled
    } else {
        Liveness::Alive
    })
}

/// The claim: the next due job of the organization with the fewest running jobs (fair
/// dispatch), taken in one conditional `UPDATE … RETURNING`. On SQLite the one writer makes it
/// atomic. On PostgreSQL concurrent claimers would all pick the same job and all but one come
/// back empty, so each organization's head job is picked with `FOR UPDATE SKIP LOCKED` (a job
/// another claimer is taking is passed over), and organizations are found first, so the
/// running jobs are counted once per organization instead of once per queued job.
fn claim_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE id = (SELECT j.id FROM jobs j WHERE j.state = 'queued' AND j.run_after <= $3 \
               ORDER BY (SELECT COUNT(*) FROM jobs r WHERE r.organization_id = j.organization_id \
                         AND r.state = 'running'), j.run_after, j.created_at, j.id LIMIT 1) \
               AND state = 'queued' \
             RETURNING id, kind, organization_id, store_id, file_id, attempt"
        }
        Dialect::Postgres => {
            "WITH orgs AS ( \
               SELECT o.organization_id, (SELECT COUNT(*) FROM jobs r \
                 WHERE r.organization_id = o.organization_id AND r.state = 'running') AS running \
               FROM (SELECT DISTINCT organization_id FROM jobs \
                     WHERE state = 'queued' AND run_after <= $3) o), \
             pick AS ( \
               SELECT j.id FROM orgs CROSS JOIN LATERAL ( \
                 SELECT q.id, q.run_after, q.created_at FROM jobs q \
                 WHERE q.organization_id = orgs.organization_id AND q.state = 'queued' \
                   AND q.run_after <= $3 \
                 ORDER BY q.run_after, q.created_at, q.id LIMIT 1 FOR UPDATE SKIP LOCKED) j \
               ORDER BY orgs.running, j.run_after, j.created_at, j.id LIMIT 1) \
             UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE id = (SELECT id FROM pick) AND state = 'queued' \
             RETURNING id, kind, organization_id, store_id, file_id, attempt"
        }
    }
}

impl Catalog {
    /// Claims the next due job for `worker` with a lease of `lease`.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claimed>> {
        loop {
            let mut tx = self.write_tx().await?;
            let now = Timestamp::now().millis();
            let row = sqlx::query(claim_sql(self.dialect))
                .bind(worker)
                .bind(now + lease.as_millis() as i64)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let job_id: String = row.try_get("id")?;
            let kind_text: String = row.try_get("kind")?;
            let Some(kind) = JobKind::parse(&kind_text) else {
                sqlx::query("UPDATE jobs SET state = 'failed', last_error = 'unknown job kind' WHERE id = $1")
                    .bind(&job_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                continue;
            };
            let mut claimed = Claimed {
                job_id: job_id.clone(),
                kind,
                organization_id: row.try_get("organization_id")?,
                store_id: row.try_get("store_id")?,
                file_id: row.try_get("file_id")?,
                job_attempt: row.try_get("attempt")?,
                file: None,
                chunking: Chunking::default(),
            };
            if kind == JobKind::Process {
                // A deleted file's job is cancelled, not run.
                let started = sqlx::query(
                    "UPDATE files SET status = 'processing', current_step = 'extracting', \
                     progress_percent = 0, started_at = $1, completed_at = NULL, error_code = NULL, \
                     error_message = NULL, retryable = NULL, attempts = attempts + 1, \
                     generation = generation + 1, updated_at = $1 \
                     WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind(now)
                .bind(&claimed.file_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if started == 0 {
                    sqlx::query(
                        "UPDATE jobs SET state = 'cancelled', updated_at = $1 WHERE id = $2",
                    )
                    .bind(now)
                    .bind(&job_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    continue;
                }
                let file_row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {FILE_COLUMNS} FROM files WHERE id = $1"
                )))
                .bind(&claimed.file_id)
                .fetch_one(&mut *tx)
                .await?;
                let file = file_record(&file_row)?;
                let chunking = sqlx::query(
                    "SELECT max_chunk_tokens, chunk_overlap_tokens FROM stores WHERE id = $1",
                )
                .bind(&claimed.store_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(c) = chunking {
                    claimed.chunking = Chunking {
                        max_chunk_tokens: c.try_get::<i64, _>("max_chunk_tokens")? as u32,
                        chunk_overlap_tokens: c.try_get::<i64, _>("chunk_overlap_tokens")? as u32,
                    };
                }
                append_log(
                    &mut tx,
                    &file.organization_id,
                    &file.id,
                    file.attempts,
                    LogLevel::Info,
                    Some(Step::Extracting),
                    "started",
                    &format!("Processing started (attempt {})", file.attempts),
                    json!({"worker": worker, "job_id": job_id, "generation": file.generation, "job_attempt": claimed.job_attempt}),
                )
                .await?;
                self.progress_gate.reset(&file.id);
                write_events(
                    &mut tx,
                    &file.organization_id,
                    vec![NewEvent::file(
                        EventType::FileStepStarted,
                        &file.store_id,
                        &file.id,
                        json!({"step": "extracting"}),
                    )],
                )
                .await?;
                claimed.file = Some(file);
            }
            tx.commit().await?;
            return Ok(Some(claimed));
        }
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

    /// Moves a file's step and progress forward (never back) and appends a log entry.
    pub async fn record_progress(
        &self,
        job: &Claimed,
        worker: &str,
        step: Step,
        percent: i64,
        logs: Vec<LogLine>,
    ) -> Result<Liveness> {
        let mut tx = self.write_tx().await?;
        let state = liveness(&mut tx, &job.job_id, worker).await?;
        if state != Liveness::Alive {
            return Ok(state);
        }
        // A step's start is always an event; progress within a step at most every
        // `PROGRESS_EVENT_INTERVAL_MS` per file.
        let before: Option<String> =
            sqlx::query_scalar("SELECT current_step FROM files WHERE id = $1")
                .bind(&job.file_id)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        // (The claim already announced `extracting`.)
        let event = if before.as_deref() != Some(step.as_str()) {
            self.progress_gate.reset(&job.file_id);
            Some(EventType::FileStepStarted)
        } else if self.progress_gate.admit(&job.file_id) {
            Some(EventType::FileProgress)
        } else {
            None
        };
        sqlx::query(
            "UPDATE files SET current_step = $1, \
             progress_percent = CASE WHEN progress_percent > $2 THEN progress_percent ELSE $2 END, \
             updated_at = $3 WHERE id = $4",
        )
        .bind(step.as_str())
        .bind(percent.clamp(0, 100))
        .bind(Timestamp::now().millis())
        .bind(&job.file_id)
        .execute(&mut *tx)
        .await?;
        let attempt = job.file.as_ref().map_or(0, |f| f.attempts);
        for line in logs {
            append_log(
                &mut tx,
                &job.organization_id,
                &job.file_id,
                attempt,
                line.level,
                line.step,
                line.event,
                &line.message,
                line.data,
            )
            .await?;
        }
        if let Some(kind) = event {
            let extra = json!({"step": step.as_str()});
            let event = NewEvent::file(kind, &job.store_id, &job.file_id, extra);
            write_events(&mut tx, &job.organization_id, vec![event]).await?;
        }
        tx.commit().await?;
        Ok(Liveness::Alive)
    }

    /// Marks a processed file completed and flips its active generation, in one transaction.
    /// Returns the generation that was active before (its chunks are now stale), or the
    /// liveness that prevented completion.
    pub async fn complete(
        &self,
        job: &Claimed,
        worker: &str,
        done: Completion,
    ) -> Result<Result<i64, Liveness>> {
        let file = job.file.as_ref().expect("a process job carries its file");
        let mut tx = self.write_tx().await?;
        let state = liveness(&mut tx, &job.job_id, worker).await?;
        if state != Liveness::Alive {
            return Ok(Err(state));
        }
        let now = Timestamp::now().millis();
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT active_generation FROM files WHERE id = $1")
                .bind(&file.id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(previous) = previous else {
            return Ok(Err(Liveness::Cancelled));
        };
        sqlx::query(
            "UPDATE files SET status = 'completed', current_step = 'completed', progress_percent = 100, \
             completed_at = $1, updated_at = $1, active_generation = $2, chunk_count = $3, \
             extracted_text_bytes = $4, vector_bytes = $5, index_bytes = $6, embedding_model = $7, \
             error_code = NULL, error_message = NULL, retryable = NULL WHERE id = $8",
        )
        .bind(now)
        .bind(file.generation)
        .bind(done.chunk_count)
        .bind(done.extracted_text_bytes)
        .bind(done.vector_bytes)
        .bind(done.index_bytes)
        .bind(&done.embedding_model)
        .bind(&file.id)
        .execute(&mut *tx)
        .await?;
        crate::stores::bump_search_version(&mut tx, &file.store_id).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', lease_owner = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(&job.job_id)
        .execute(&mut *tx)
        .await?;
        append_log(
            &mut tx,
            &file.organization_id,
            &file.id,
            file.attempts,
            LogLevel::Info,
            Some(Step::Indexing),
            "step_completed",
            "Indexing completed",
            done.data,
        )
        .await?;
        append_log(
            &mut tx,
            &file.organization_id,
            &file.id,
            file.attempts,
            LogLevel::Info,
            Some(Step::Completed),
            "completed",
            &format!("Completed: {} chunks, searchable", done.chunk_count),
            json!({"chunks": done.chunk_count, "generation": file.generation}),
        )
        .await?;
        let event = NewEvent::file(
            EventType::FileCompleted,
            &file.store_id,
            &file.id,
            json!({}),
        );
        write_events(&mut tx, &file.organization_id, vec![event]).await?;
        tx.commit().await?;
        self.progress_gate.forget(&file.id);
        Ok(Ok(previous))
    }

    /// Records a failure: transient ones are retried with `retry_delay` while tries remain;
    /// then, or for permanent ones, the file fails with its code and message.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail(
        &self,
        job: &Claimed,
        worker: &str,
        step: Step,
        code: FileErrorCode,
        message: &str,
        transient: bool,
        retry_delay: Duration,
    ) -> Result<FailOutcome> {
        let mut tx = self.write_tx().await?;
        if liveness(&mut tx, &job.job_id, worker).await? != Liveness::Alive {
            return Ok(FailOutcome::Stale);
        }
        let now = Timestamp::now().millis();
        let attempt = job.file.as_ref().map_or(0, |f| f.attempts);
        let next_try = job.job_attempt + 1;
        let mut events = Vec::new();
        let outcome = if transient && next_try < MAX_ATTEMPTS {
            let run_after = now + retry_delay.as_millis() as i64;
            sqlx::query(
                "UPDATE jobs SET state = 'queued', attempt = $1, run_after = $2, lease_owner = NULL, \
                 lease_expires_at = NULL, last_error = $3, updated_at = $4 WHERE id = $5",
            )
            .bind(next_try)
            .bind(run_after)
            .bind(message)
            .bind(now)
            .bind(&job.job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE files SET status = 'pending', current_step = 'queued', progress_percent = 0, \
                 queued_at = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(run_after)
            .bind(now)
            .bind(&job.file_id)
            .execute(&mut *tx)
            .await?;
            append_log(
                &mut tx,
                &job.organization_id,
                &job.file_id,
                attempt,
                LogLevel::Warning,
                Some(step),
                "auto_retry_scheduled",
                &format!("{message} — retrying in {} ms (try {} of {MAX_ATTEMPTS})", retry_delay.as_millis(), next_try + 1),
                json!({"error_code": code.as_str(), "delay_ms": retry_delay.as_millis() as u64, "next_try": next_try + 1, "max_tries": MAX_ATTEMPTS}),
            )
            .await?;
            events.push(NewEvent::file(
                EventType::FileQueued,
                &job.store_id,
                &job.file_id,
                json!({"reason": "auto_retry", "error_code": code.as_str(), "message": message,
                       "delay_ms": retry_delay.as_millis() as u64, "next_try": next_try + 1}),
            ));
            FailOutcome::RetryScheduled {
                delay: retry_delay,
                attempt: next_try,
            }
        } else {
            sqlx::query(
                "UPDATE jobs SET state = 'failed', lease_owner = NULL, last_error = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(message)
            .bind(now)
            .bind(&job.job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE files SET status = 'failed', current_step = $1, error_code = $2, error_message = $3, \
                 retryable = $4, completed_at = NULL, updated_at = $5 WHERE id = $6",
            )
            .bind(step.as_str())
            .bind(code.as_str())
            .bind(message)
            .bind(i64::from(transient))
            .bind(now)
            .bind(&job.file_id)
            .execute(&mut *tx)
            .await?;
            append_log(
                &mut tx,
                &job.organization_id,
                &job.file_id,
                attempt,
                LogLevel::Error,
                Some(step),
                "failed",
                message,
                json!({"error_code": code.as_str(), "retryable": transient, "tries": next_try}),
            )
            .await?;
            events.push(NewEvent::file(
                EventType::FileFailed,
                &job.store_id,
                &job.file_id,
                json!({"step": step.as_str(), "retryable": transient}),
            ));
            FailOutcome::Failed
        };
        write_events(&mut tx, &job.organization_id, events).await?;
        tx.commit().await?;
        self.progress_gate.forget(&job.file_id);
        Ok(outcome)
    }

    /// Marks a job done that needs no file update (purges, cancelled work).
    pub async fn finish_job(&self, job_id: &str, state: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = $1, lease_owner = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(state)
        .bind(Timestamp::now().millis())
        .bind(job_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Puts a job this worker holds back in the queue to run after `delay` (for jobs without
    /// a file status of their own, e.g. purges, whose failure must not be lost).
    pub async fn requeue(
        &self,
        job_id: &str,
        worker: &str,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        let now = Timestamp::now().millis();
        sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
             run_after = $1, last_error = $2, attempt = attempt + 1, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND state = 'running'",
        )
        .bind(now + delay.as_millis() as i64)
        .bind(error)
        .bind(now)
        .bind(job_id)
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// After a file's purge: forgets the file, its logs and its finished jobs.
    pub async fn forget_file(&self, job_id: &str, file_id: &str) -> Result<()> {
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
            let org: String = file.try_get("organization_id")?;
            let store: String = file.try_get("store_id")?;
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
    pub async fn forget_store(&self, job_id: &str, store_id: &str) -> Result<()> {
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

    /// Re-queues jobs whose lease expired (the worker died), logging `lease_expired`. A file
    /// whose worker is lost too often fails with `WORKER_LOST`. Returns how many were reaped.
    pub async fn reap_expired(&self) -> Result<usize> {
        let now = Timestamp::now().millis();
        let expired = sqlx::query(
            "SELECT id, kind, organization_id, store_id, file_id, lease_owner, lease_losses FROM jobs \
             WHERE state = 'running' AND lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        let mut reaped = 0;
        for row in expired {
            let job_id: String = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            let org: String = row.try_get("organization_id")?;
            let store: String = row.try_get("store_id")?;
            let file_id: String = row.try_get("file_id")?;
            let owner: Option<String> = row.try_get("lease_owner")?;
            let losses: i64 = row.try_get::<i64, _>("lease_losses")? + 1;
            let mut tx = self.write_tx().await?;
            let give_up = kind == "process" && losses >= MAX_LEASE_LOSSES;
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
            if kind == "process" {
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
                    let live = sqlx::query(
                        "UPDATE files SET status = 'pending', current_step = 'queued', progress_percent = 0, \
                         queued_at = $1, updated_at = $1 WHERE id = $2 AND deleted_at IS NULL",
                    )
                    .bind(now)
                    .bind(&file_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if live > 0 {
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

    /// For search: the active generation and display fields of every searchable file of the
    /// given stores.
    pub async fn searchable_files(
        &self,
        organization_id: &str,
        store_ids: &[String],
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
    pub store_id: String,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub active_generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_file as add_file;

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
                        mine.push(job.file_id);
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
                .unwrap();
            let second = catalog
                .claim("w2", Duration::from_millis(300))
                .await
                .unwrap()
                .unwrap();
            let mut files = [first.file_id.clone(), second.file_id.clone()];
            files.sort();
            let mut expected = [a, b];
            expected.sort();
            assert_eq!(files, expected);
            // w2 heartbeats; w1 does not.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                catalog
                    .heartbeat(&second.job_id, "w2", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(catalog.reap_expired().await.unwrap(), 1);
            assert_eq!(
                catalog.liveness(&first.job_id, "w1").await.unwrap(),
                Liveness::LeaseLost
            );
            assert_eq!(
                catalog.liveness(&second.job_id, "w2").await.unwrap(),
                Liveness::Alive
            );
            assert!(
                !catalog
                    .heartbeat(&first.job_id, "w1", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            // The reaped job is claimable again, with a new generation.
            let again = catalog
                .claim("w3", Duration::from_secs(60))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.file_id, first.file_id);
            assert_eq!(again.file.as_ref().unwrap().generation, 2);
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
                    .expect("due at once");
                assert_eq!(job.job_attempt, try_number);
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
            assert!(
                catalog
                    .claim("w", Duration::from_secs(60))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }
}
