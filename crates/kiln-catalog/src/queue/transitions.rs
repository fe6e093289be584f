//! A held job's file moving forward: progress, completion, failure (with automatic retries),
//! and jobs handed back.

use std::time::Duration;

use kiln_core::Timestamp;
use kiln_core::types::{EventType, FileErrorCode, LogLevel, Step};
use serde_json::json;

use super::*;
use crate::events::{
    NewEvent, STATE_COLUMNS, file_state_of, write as write_events, write_with_state,
};
use crate::exec::{Exec, Q};
use crate::files::{Reset, append_lines, append_log, reset_to_pending};
use crate::rows::Columns;
use crate::{Catalog, Result};

impl Catalog {
    /// Moves a file's step and progress forward (never back) and appends a log entry.
    pub async fn record_progress(
        &self,
        job: &ProcessJob,
        worker: &str,
        step: Step,
        percent: i64,
        logs: Vec<LogLine>,
    ) -> Result<Liveness> {
        write_inline!(self, |conn| self
            .record_progress_in(conn, job, worker, step, percent, &logs))
    }

    async fn record_progress_in(
        &self,
        conn: &mut impl Exec,
        job: &ProcessJob,
        worker: &str,
        step: Step,
        percent: i64,
        logs: &[LogLine],
    ) -> Result<Liveness> {
        let state = liveness(conn, &job.held.job_id, worker).await?;
        if state != Liveness::Alive {
            return Ok(state);
        }
        // A step's start is always an event (one for each step the lines start: a worker
        // may write several quick steps at once); progress within a step at most every
        // `PROGRESS_EVENT_INTERVAL_MS` per file.
        let before: Option<String> = match conn
            .fetch_optional(
                Q::new("SELECT current_step FROM files WHERE id = $1").bind(&job.file.id),
            )
            .await?
        {
            Some(row) => row.col("current_step")?,
            None => None,
        };
        let mut started = started_steps(before.as_deref(), logs);
        // (The claim already announced `extracting`.)
        let current = started.last().map(|s| s.as_str()).or(before.as_deref());
        if current != Some(step.as_str()) {
            started.push(step);
        }
        let mut events: Vec<NewEvent> = started
            .iter()
            .map(|started| step_started(job, *started))
            .collect();
        if !events.is_empty() {
            self.progress_gate.reset(&job.file.id);
        } else if self.progress_gate.admit(&job.file.id) {
            let extra = json!({"step": step.as_str()});
            let progress = NewEvent::file(
                EventType::FileProgress,
                &job.held.store_id,
                &job.file.id,
                extra,
            );
            events.push(progress);
        }
        conn.execute(
            Q::new(
                "UPDATE files SET current_step = $1, \
                 progress_percent = CASE WHEN progress_percent > $2 THEN progress_percent ELSE $2 END, \
                 updated_at = $3 WHERE id = $4",
            )
            .bind(step.as_str())
            .bind(percent.clamp(0, 100))
            .bind(Timestamp::now().millis())
            .bind(&job.file.id),
        )
        .await?;
        let attempt = job.file.attempts;
        append_lines(conn, &job.held.organization_id, &job.file.id, attempt, logs).await?;
        if !events.is_empty() {
            write_events(conn, &job.held.organization_id, events).await?;
        }
        Ok(Liveness::Alive)
    }

    /// Marks a processed file completed and flips its active generation, in one transaction:
    /// [`Completed`] with the generation that was active before (its chunks are now stale),
    /// or [`Stopped`] by the liveness that prevented completion.
    ///
    /// [`Completed`]: CompleteOutcome::Completed
    /// [`Stopped`]: CompleteOutcome::Stopped
    pub async fn complete(
        &self,
        job: &ProcessJob,
        worker: &str,
        done: Completion,
    ) -> Result<CompleteOutcome> {
        let outcome = write_inline!(self, |conn| complete_in(conn, job, worker, &done))?;
        if let CompleteOutcome::Completed { .. } = outcome {
            self.progress_gate.forget(&job.file.id);
        }
        Ok(outcome)
    }

    /// Records a failure: transient ones are retried with `retry_delay` while tries remain;
    /// then, or for permanent ones, the file fails with its code and message.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail(
        &self,
        job: &ProcessJob,
        worker: &str,
        step: Step,
        code: FileErrorCode,
        message: &str,
        transient: bool,
        retry_delay: Duration,
    ) -> Result<FailOutcome> {
        let mut tx = self.write_tx().await?;
        if liveness(&mut tx, &job.held.job_id, worker).await? != Liveness::Alive {
            return Ok(FailOutcome::Stale);
        }
        let now = Timestamp::now().millis();
        let attempt = job.file.attempts;
        let next_try = job.held.attempt + 1;
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
            .bind(&job.held.job_id)
            .execute(&mut *tx)
            .await?;
            let due = Reset::Requeue { due: run_after };
            reset_to_pending(&mut tx, &job.file.id, due, now).await?;
            append_log(
                &mut tx,
                &job.held.organization_id,
                &job.file.id,
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
                &job.held.store_id,
                &job.file.id,
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
            .bind(&job.held.job_id)
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
            .bind(&job.file.id)
            .execute(&mut *tx)
            .await?;
            append_log(
                &mut tx,
                &job.held.organization_id,
                &job.file.id,
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
                &job.held.store_id,
                &job.file.id,
                json!({"step": step.as_str(), "retryable": transient}),
            ));
            FailOutcome::Failed
        };
        write_events(&mut tx, &job.held.organization_id, events).await?;
        tx.commit().await?;
        self.progress_gate.forget(&job.file.id);
        Ok(outcome)
    }

    /// Ends a job that needs no file update (purges, cancelled work) in a final `state`.
    pub async fn finish_job(&self, job_id: &str, state: JobState) -> Result<()> {
        debug_assert!(state.is_final(), "a job ends in a final state");
        sqlx::query(
            "UPDATE jobs SET state = $1, lease_owner = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(state.as_str())
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
}

/// The steps `logs` start (`step_started` lines), in order, leaving out the one already
/// `current` and repeats.
/// A completion, inside a write transaction.
async fn complete_in(
    conn: &mut impl Exec,
    job: &ProcessJob,
    worker: &str,
    done: &Completion,
) -> Result<CompleteOutcome> {
    let file = &job.file;
    let state = liveness(conn, &job.held.job_id, worker).await?;
    if state != Liveness::Alive {
        return Ok(CompleteOutcome::Stopped(state));
    }
    let now = Timestamp::now().millis();
    let row = conn
        .fetch_optional(
            Q::new("SELECT active_generation, current_step FROM files WHERE id = $1")
                .bind(&file.id),
        )
        .await?;
    let Some(row) = row else {
        return Ok(CompleteOutcome::Stopped(Liveness::Cancelled));
    };
    let previous: i64 = row.col("active_generation")?;
    let before: Option<String> = row.col("current_step")?;
    // The lines the worker had not written yet, and the steps they started.
    let mut events: Vec<NewEvent> = started_steps(before.as_deref(), &done.logs)
        .into_iter()
        .map(|started| step_started(job, started))
        .collect();
    // The completed row comes back for the events (nothing changes it before they go in).
    let completed = conn
        .fetch_optional(
            Q::formatted(format!(
                "UPDATE files SET status = 'completed', current_step = 'completed', progress_percent = 100, \
                 completed_at = $1, updated_at = $1, active_generation = $2, chunk_count = $3, \
                 extracted_text_bytes = $4, vector_bytes = $5, index_bytes = $6, embedding_model = $7, \
                 error_code = NULL, error_message = NULL, retryable = NULL WHERE id = $8 \
                 RETURNING {STATE_COLUMNS}"
            ))
            .bind(now)
            .bind(file.generation)
            .bind(done.chunk_count)
            .bind(done.extracted_text_bytes)
            .bind(done.vector_bytes)
            .bind(done.index_bytes)
            .bind(&done.embedding_model)
            .bind(&file.id),
        )
        .await?;
    let Some(completed) = completed else {
        return Ok(CompleteOutcome::Stopped(Liveness::Cancelled));
    };
    crate::stores::bump_search_version(conn, &file.store_id).await?;
    conn.execute(
        Q::new("UPDATE jobs SET state = 'done', lease_owner = NULL, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&job.held.job_id),
    )
    .await?;
    // The lines the worker had not written yet, then the completion's own: one insert.
    let mut lines = done.logs.clone();
    lines.push(LogLine::info(
        Some(Step::Indexing),
        "step_completed",
        "Indexing completed",
        done.data.clone(),
    ));
    lines.push(LogLine::info(
        Some(Step::Completed),
        "completed",
        format!("Completed: {} chunks, searchable", done.chunk_count),
        json!({"chunks": done.chunk_count, "generation": file.generation}),
    ));
    append_lines(conn, &file.organization_id, &file.id, file.attempts, &lines).await?;
    events.push(NewEvent::file(
        EventType::FileCompleted,
        &file.store_id,
        &file.id,
        json!({}),
    ));
    let state = file_state_of(&completed)?;
    write_with_state(conn, &file.organization_id, events, Some((&file.id, state))).await?;
    Ok(CompleteOutcome::Completed {
        previous_generation: previous,
    })
}

fn started_steps(mut current: Option<&str>, logs: &[LogLine]) -> Vec<Step> {
    let mut started = Vec::new();
    for line in logs {
        let Some(step) = line.step.filter(|_| line.event == "step_started") else {
            continue;
        };
        if current != Some(step.as_str()) {
            started.push(step);
            current = Some(step.as_str());
        }
    }
    started
}

/// `file.step_started` for `step` of the job's file.
fn step_started(job: &ProcessJob, step: Step) -> NewEvent {
    let extra = json!({"step": step.as_str()});
    NewEvent::file(
        EventType::FileStepStarted,
        &job.held.store_id,
        &job.file.id,
        extra,
    )
}
