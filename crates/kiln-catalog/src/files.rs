//! Files in stores: registration with their first job, lists, status, retry, delete, logs
//! and usage. Every status change and its job change happen in one transaction.

use std::sync::atomic::AtomicI64;

use kiln_core::model::{
    FileCounts, FileRecord, LogEntry, OrgFile, Page, PageRequest, Principal, UsageFigures,
};
use kiln_core::types::{FileErrorCode, FileStatus, LogLevel, Step};
use kiln_core::{FileId, IdKind, OrgId, StoreId, Timestamp};
use serde_json::{Value, json};
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::events::{NewEvent, file_state_of, write as write_events, write_with_state};
use crate::exec::{Exec, Q};
use crate::queue::JobKind;
use crate::rows::{Columns, enum_col, opt_ts, ts};
use crate::{Catalog, CatalogError, Dialect, Resource, Result};
use kiln_core::types::EventType;

/// A file accepted by the API, its bytes already in blob storage.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub id: FileId,
    pub organization_id: OrgId,
    pub store_id: StoreId,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub file_size: i64,
    pub sha256: Option<String>,
    pub created_by: String,
    /// Where the original was stored.
    pub original_blob: String,
}

#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    /// Any of these statuses (none: all).
    pub statuses: Vec<FileStatus>,
    /// Case-insensitive substring of the file name or relative path.
    pub search: Option<String>,
}

/// What a retry did.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    /// Re-queued; the file as it is now.
    Queued(Box<FileRecord>),
    /// Pending or processing: nothing changed.
    InProgress(FileStatus),
    /// Completed, and `force` was not given.
    AlreadyProcessed,
}

pub(crate) const FILE_COLUMNS: &str = "id, organization_id, store_id, file_name, relative_path, \
     mime_type, file_size, sha256, status, current_step, progress_percent, error_code, \
     error_message, retryable, attempts, generation, active_generation, chunk_count, \
     extracted_text_bytes, vector_bytes, index_bytes, embedding_model, created_by, created_at, \
     updated_at, queued_at, started_at, completed_at, org_file_id, original_blob";

pub(crate) fn file_record(row: &impl Columns) -> Result<FileRecord> {
    let error_code: Option<String> = row.col("error_code")?;
    Ok(FileRecord {
        id: row.col("id")?,
        store_id: row.col("store_id")?,
        organization_id: row.col("organization_id")?,
        file_name: row.col("file_name")?,
        relative_path: row.col("relative_path")?,
        mime_type: row.col("mime_type")?,
        file_size: row.col("file_size")?,
        sha256: row.col("sha256")?,
        status: enum_col(row, "status", FileStatus::parse)?,
        progress_percent: row.col("progress_percent")?,
        current_step: enum_col(row, "current_step", Step::parse)?,
        error_code: error_code.as_deref().and_then(FileErrorCode::parse),
        error_message: row.col("error_message")?,
        retryable: row.col::<Option<i64>>("retryable")?.map(|v| v != 0),
        attempts: row.col("attempts")?,
        chunk_count: row.col("chunk_count")?,
        embedding_model: row.col("embedding_model")?,
        created_by: row.col("created_by")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        queued_at: opt_ts(row, "queued_at")?,
        started_at: opt_ts(row, "started_at")?,
        completed_at: opt_ts(row, "completed_at")?,
        generation: row.col("generation")?,
        active_generation: row.col("active_generation")?,
        extracted_text_bytes: row.col("extracted_text_bytes")?,
        vector_bytes: row.col("vector_bytes")?,
        index_bytes: row.col("index_bytes")?,
        org_file_id: row.col("org_file_id")?,
        original_blob: row.col("original_blob")?,
    })
}

/// What the status endpoint reads: the key's caller and, if it exists, the file with its
/// running job's lease expiry.
pub type KeyAndFile = (Principal, Option<(FileRecord, Option<Timestamp>)>);

/// The key and, if it exists, the file of [`Catalog::key_and_file_status`]'s row.
fn key_and_file(row: &impl Columns) -> Result<KeyAndFile> {
    let principal = crate::keys::principal(row, "key_")?;
    let file = match row.col::<Option<String>>("id")? {
        Some(_) => Some((
            file_record(row)?,
            row.col::<Option<i64>>("lease")?.map(Timestamp),
        )),
        None => None,
    };
    Ok((principal, file))
}

fn file_sql(tail: &'static str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("SELECT {FILE_COLUMNS} FROM files {tail}"))
}

/// Log sequence numbers on SQLite: increasing within a process, and (being time-based) across
/// restarts; one process writes a SQLite catalog at a time. On PostgreSQL, where several
/// processes log the same file, a database sequence gives them (`file_log_seq`).
fn next_seq() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    kiln_core::time::strictly_increasing(&LAST, Timestamp::now().millis() * 1000)
}

/// Appends a log entry for a file inside the caller's transaction, as of now.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append_log(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    file_id: &FileId,
    attempt: i64,
    level: LogLevel,
    step: Option<Step>,
    event: &str,
    message: &str,
    data: Value,
) -> Result<()> {
    let entry = (Timestamp::now(), level, step, event, message, &data);
    insert_logs(conn, organization_id, file_id, attempt, &[entry]).await
}

/// Appends lines a worker logged, each with the time it happened, inside the caller's
/// transaction, in one statement (a worker writes several at once).
pub(crate) async fn append_lines(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    file_id: &FileId,
    attempt: i64,
    lines: &[crate::LogLine],
) -> Result<()> {
    let entries: Vec<Entry<'_>> = lines
        .iter()
        .map(|line| {
            (
                line.at,
                line.level,
                line.step,
                line.event,
                line.message.as_str(),
                &line.data,
            )
        })
        .collect();
    insert_logs(conn, organization_id, file_id, attempt, &entries).await
}

/// A log entry's time, level, step, event, message and data.
type Entry<'a> = (
    Timestamp,
    LogLevel,
    Option<Step>,
    &'a str,
    &'a str,
    &'a Value,
);

/// Log entries a statement inserts at most (10 parameters each: well under SQLite's 32,766
/// and PostgreSQL's 65,535).
pub(crate) const LOG_ROWS_PER_STATEMENT: usize = 500;

/// Inserts entries in order, as few statements as it takes: each statement is a round trip
/// to the database (through sqlx on SQLite, to its connection's thread and back; inline, a
/// statement prepared and run).
async fn insert_logs(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    file_id: &FileId,
    attempt: i64,
    entries: &[Entry<'_>],
) -> Result<()> {
    let dialect = conn.dialect();
    for rows in entries.chunks(LOG_ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO file_logs (file_id, seq, organization_id, ts, level, attempt, step, \
             event, message, data) VALUES ",
        );
        // The sequence number (column 1): SQLite's is numbered here; PostgreSQL's comes from
        // its sequence, row by row.
        sql.push_str(&crate::value_rows(rows.len(), 10, |column, p| {
            match (column, dialect) {
                (1, Dialect::Postgres) => format!("COALESCE({p}, nextval('file_log_seq'))"),
                _ => p,
            }
        }));
        let mut query = Q::formatted(sql);
        for (at, level, step, event, message, data) in rows {
            let seq = (dialect == Dialect::Sqlite).then(next_seq);
            query = query
                .bind(file_id)
                .bind(seq)
                .bind(organization_id)
                .bind(at.millis())
                .bind(level.as_str())
                .bind(attempt)
                .bind(step.map(Step::as_str))
                .bind(*event)
                .bind(*message)
                .bind(data.to_string());
        }
        conn.execute(query).await?;
    }
    Ok(())
}

/// How a file goes back to `pending`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reset {
    /// The queue took it back (a transient failure with tries left, a lost worker): its
    /// timestamps stay, it is due at `due`.
    Requeue { due: i64 },
    /// A retry asked for: only from `from`, and the last outcome (error, start, end) is
    /// cleared.
    Retry { from: FileStatus },
}

/// Puts a live file back to `pending` at step `queued` and 0 %, the one way every path
/// (automatic retry, reaper, retry endpoint) does it. Whether a file was reset.
pub(crate) async fn reset_to_pending(
    conn: &mut AnyConnection,
    file_id: &FileId,
    reset: Reset,
    now: i64,
) -> Result<bool> {
    const PENDING: &str = "status = 'pending', current_step = 'queued', progress_percent = 0";
    let query = match reset {
        Reset::Requeue { due } => sqlx::query(AssertSqlSafe(format!(
            "UPDATE files SET {PENDING}, queued_at = $1, updated_at = $2 \
             WHERE id = $3 AND deleted_at IS NULL"
        )))
        .bind(due)
        .bind(now)
        .bind(file_id),
        Reset::Retry { from } => sqlx::query(AssertSqlSafe(format!(
            "UPDATE files SET {PENDING}, error_code = NULL, error_message = NULL, \
             retryable = NULL, started_at = NULL, completed_at = NULL, queued_at = $1, \
             updated_at = $1 WHERE id = $2 AND deleted_at IS NULL AND status = $3"
        )))
        .bind(now)
        .bind(file_id)
        .bind(from.as_str()),
    };
    Ok(query.execute(&mut *conn).await?.rows_affected() > 0)
}

/// A job to enqueue, with what its kind is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewJob<'a> {
    Process { store_id: &'a str, file_id: &'a str },
    Purge { store_id: &'a str, file_id: &'a str },
    PurgeStore { store_id: &'a str },
    PurgeOrgFile { org_file_id: &'a str },
}

impl NewJob<'_> {
    /// The row's kind, `store_id` and `file_id` (which names the job's subject: the file, the
    /// store itself for a store's purge, the organization file).
    fn columns(&self) -> (JobKind, &str, &str) {
        match *self {
            NewJob::Process { store_id, file_id } => (JobKind::Process, store_id, file_id),
            NewJob::Purge { store_id, file_id } => (JobKind::Purge, store_id, file_id),
            NewJob::PurgeStore { store_id } => (JobKind::PurgeStore, store_id, store_id),
            NewJob::PurgeOrgFile { org_file_id } => (JobKind::PurgeOrgFile, "", org_file_id),
        }
    }
}

/// Enqueues a job inside the caller's transaction.
pub(crate) async fn enqueue(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    job: NewJob<'_>,
    now: i64,
) -> Result<()> {
    let (kind, store_id, file_id) = job.columns();
    conn.execute(
        Q::new(
            "INSERT INTO jobs (id, kind, organization_id, store_id, file_id, state, attempt, \
             run_after, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6, $6)",
        )
        .bind(IdKind::Job.generate())
        .bind(kind.as_str())
        .bind(organization_id)
        .bind(store_id)
        .bind(file_id)
        .bind(now),
    )
    .await?;
    if conn.dialect() == Dialect::Postgres {
        // Wakes idle workers on every node when the transaction commits.
        conn.execute(Q::new("SELECT pg_notify($1, '')").bind(crate::JOBS_CHANNEL))
            .await?;
    }
    Ok(())
}

/// Fails unless the store exists in the organization.
pub(crate) async fn require_store(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    store_id: &StoreId,
) -> Result<()> {
    let found = conn
        .fetch_optional(
            Q::new("SELECT id FROM stores WHERE organization_id = $1 AND id = $2")
                .bind(organization_id)
                .bind(store_id),
        )
        .await?;
    found
        .map(|_| ())
        .ok_or(CatalogError::NotFound(Resource::Store))
}

pub(crate) async fn fetch_file(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    store_id: &StoreId,
    file_id: &FileId,
) -> Result<FileRecord> {
    let row = sqlx::query(file_sql(
        "WHERE organization_id = $1 AND store_id = $2 AND id = $3 AND deleted_at IS NULL",
    ))
    .bind(organization_id)
    .bind(store_id)
    .bind(file_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => file_record(&row),
        None => Err(missing_file(conn, organization_id, store_id).await),
    }
}

/// Deletes a store's file row (a link) inside the caller's transaction: hidden at once, its
/// queued processing cancelled, a purge job for its chunks and blobs; a knowledge-family
/// organization file goes with its last link. `false`: no such live file.
pub(crate) async fn unlink(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    store_id: &StoreId,
    file_id: &FileId,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE files SET deleted_at = $1, updated_at = $1 \
         WHERE organization_id = $2 AND store_id = $3 AND id = $4 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(organization_id)
    .bind(store_id)
    .bind(file_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    crate::stores::bump_search_version(&mut *conn, store_id).await?;
    sqlx::query(
        "UPDATE jobs SET state = 'cancelled', updated_at = $1 \
         WHERE file_id = $2 AND kind = 'process' AND state = 'queued'",
    )
    .bind(now)
    .bind(file_id)
    .execute(&mut *conn)
    .await?;
    let job = NewJob::Purge { store_id, file_id };
    enqueue(&mut *conn, organization_id, job, now).await?;
    crate::org_files::release_after_unlink(&mut *conn, file_id, now).await?;
    Ok(true)
}

/// Why a file was not found: its store is missing (checked first, as the contract says), or
/// the file is.
async fn missing_file(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    store_id: &StoreId,
) -> CatalogError {
    match require_store(conn, organization_id, store_id).await {
        Ok(()) => CatalogError::NotFound(Resource::File),
        Err(err) => err,
    }
}

/// Inserts a knowledge-family file: its organization file and its store link under one ID,
/// with the link's first job and log entries (inside the caller's transaction).
pub(crate) async fn insert_file(tx: &mut impl Exec, new: &NewFile) -> Result<FileRecord> {
    require_store(&mut *tx, &new.organization_id, &new.store_id).await?;
    let org_file = crate::org_files::insert_org_file(
        &mut *tx,
        &crate::NewOrgFile {
            id: new.id.clone(),
            organization_id: new.organization_id.clone(),
            file_name: new.file_name.clone(),
            relative_path: new.relative_path.clone(),
            mime_type: new.mime_type.clone(),
            file_size: new.file_size,
            sha256: new.sha256.clone(),
            created_by: new.created_by.clone(),
            blob_path: new.original_blob.clone(),
        },
        crate::org_files::Origin::Store,
    )
    .await?;
    insert_link(&mut *tx, &org_file, &new.store_id, &new.id, &new.created_by).await
}

/// Links an organization file into a store: the store's file row (`link_id`), its first job
/// and log entries (inside the caller's transaction).
pub(crate) async fn insert_link(
    tx: &mut impl Exec,
    org_file: &OrgFile,
    store_id: &StoreId,
    link_id: &FileId,
    by: &str,
) -> Result<FileRecord> {
    // The creation time orders lists (strictly increasing, so it may run a little ahead of
    // the clock in a burst); the queue's times are the clock's, or the job would not be due.
    let created = Timestamp::created().millis();
    let now = Timestamp::now().millis();
    let org = &org_file.organization_id;
    // The record comes back from the insert itself (nothing below changes the row): one
    // round trip to the database, not two.
    let row = tx
        .fetch_one(
            Q::formatted(format!(
                "INSERT INTO files (id, organization_id, store_id, file_name, relative_path, \
                 mime_type, file_size, sha256, status, current_step, created_by, created_at, \
                 updated_at, queued_at, org_file_id, original_blob) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 'queued', $9, $10, $11, $11, $12, $13) \
                 RETURNING {FILE_COLUMNS}"
            ))
            .bind(link_id)
            .bind(org)
            .bind(store_id)
            .bind(&org_file.file_name)
            .bind(&org_file.relative_path)
            .bind(&org_file.mime_type)
            .bind(org_file.file_size)
            .bind(&org_file.sha256)
            .bind(by)
            .bind(created)
            .bind(now)
            .bind(&org_file.id)
            .bind(&org_file.blob_path),
        )
        .await?;
    let record = file_record(&row)?;
    let job = NewJob::Process {
        store_id,
        file_id: link_id,
    };
    enqueue(&mut *tx, org, job, now).await?;
    let lines = [
        crate::LogLine::info(
            None,
            "uploaded",
            format!(
                "Received {} ({} bytes)",
                org_file.file_name, org_file.file_size
            ),
            json!({"file_size": org_file.file_size, "mime_type": org_file.mime_type,
                   "sha256": org_file.sha256, "by": by, "file_id": org_file.id}),
        ),
        crate::LogLine::info(
            Some(Step::Queued),
            "queued",
            "Queued for processing",
            json!({}),
        ),
    ];
    append_lines(&mut *tx, org, link_id, 0, &lines).await?;
    // The events carry the row just inserted (nothing changes it before they are written).
    write_with_state(
        &mut *tx,
        org,
        vec![
            NewEvent::file(
                EventType::FileUploaded,
                store_id,
                link_id,
                json!({"file_size": org_file.file_size, "mime_type": org_file.mime_type,
                       "org_file_id": org_file.id}),
            ),
            NewEvent::file(
                EventType::FileQueued,
                store_id,
                link_id,
                json!({"reason": "uploaded"}),
            ),
        ],
        Some((link_id, file_state_of(&row)?)),
    )
    .await?;
    Ok(record)
}

impl Catalog {
    /// Registers an uploaded file with its first job, in one transaction.
    pub async fn create_file(&self, new: NewFile) -> Result<FileRecord> {
        write_inline!(self, |conn| insert_file(conn, &new))
    }

    pub async fn get_file(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_id: &FileId,
    ) -> Result<FileRecord> {
        let mut conn = self.read.acquire().await?;
        fetch_file(&mut conn, organization_id, store_id, file_id).await
    }

    /// A file and, while a worker holds it, its lease's expiry.
    pub async fn file_status(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_id: &FileId,
    ) -> Result<(FileRecord, Option<Timestamp>)> {
        // One query on the hot path (clients poll this): the file and its running job's lease.
        let mut conn = self.read.acquire().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {FILE_COLUMNS}, (SELECT j.lease_expires_at FROM jobs j WHERE j.file_id = files.id \
             AND j.kind = 'process' AND j.state = 'running') AS lease \
             FROM files WHERE organization_id = $1 AND store_id = $2 AND id = $3 AND deleted_at IS NULL"
        )))
        .bind(organization_id)
        .bind(store_id)
        .bind(file_id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => {
                let lease: Option<i64> = row.try_get("lease")?;
                Ok((file_record(&row)?, lease.map(Timestamp)))
            }
            None => Err(missing_file(&mut conn, organization_id, store_id).await),
        }
    }

    /// The caller behind a key (`None`: unknown or revoked) and, in the same query, the file
    /// `file_id` of `organization_id`'s store with its running job's lease (`None`: no such
    /// file there; `file_status` tells what is missing). For the status endpoint, which
    /// clients poll: one round trip to the database instead of two. The caller must still
    /// check that the key may read that organization before using the file.
    pub async fn key_and_file_status(
        &self,
        key_value: &str,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_id: &FileId,
    ) -> Result<Option<KeyAndFile>> {
        // Built once (a `'static` text both drivers take as it is).
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT k.id AS key_id, k.organization_id AS key_organization_id, \
                 k.role AS key_role, f.* FROM api_keys k LEFT JOIN ( \
                   SELECT {FILE_COLUMNS}, (SELECT j.lease_expires_at FROM jobs j \
                   WHERE j.file_id = files.id AND j.kind = 'process' AND j.state = 'running') \
                   AS lease FROM files WHERE organization_id = $2 AND store_id = $3 AND id = $4 \
                   AND deleted_at IS NULL \
                 ) f ON 1 = 1 \
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
            )
        });
        let hash = crate::keys::hash_key(key_value);
        // Clients poll this while their files process: on SQLite it is read on this thread,
        // without sqlx's hand-off to a connection thread and back (see `inline`).
        read_inline!(self, |conn| async {
            let query = Q::new(SQL.as_str())
                .bind(hash.as_str())
                .bind(organization_id)
                .bind(store_id)
                .bind(file_id);
            conn.fetch_optional(query)
                .await?
                .as_ref()
                .map(key_and_file)
                .transpose()
        })
    }

    pub async fn list_files(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        filter: &FileFilter,
        window: PageRequest,
    ) -> Result<Page<FileRecord>> {
        let mut conn = self.read.acquire().await?;
        require_store(&mut conn, organization_id, store_id).await?;
        // Statuses as one comma-separated text, matched with `LIKE` (portable: no arrays).
        let status = (!filter.statuses.is_empty()).then(|| {
            let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            format!(",{},", names.join(","))
        });
        let pattern = filter.search.as_deref().map(crate::rows::contains_pattern);
        const WHERE: &str = "WHERE organization_id = $1 AND store_id = $2 AND deleted_at IS NULL \
             AND (CAST($3 AS TEXT) IS NULL OR $3 LIKE '%,' || status || ',%') \
             AND (CAST($4 AS TEXT) IS NULL OR LOWER(file_name) LIKE $4 ESCAPE '\\' \
                  OR LOWER(COALESCE(relative_path, '')) LIKE $4 ESCAPE '\\')";
        let total: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM files {WHERE}")))
                .bind(organization_id)
                .bind(store_id)
                .bind(status.clone())
                .bind(pattern.clone())
                .fetch_one(&mut *conn)
                .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {FILE_COLUMNS} FROM files {WHERE} ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
        )))
        .bind(organization_id)
        .bind(store_id)
        .bind(status)
        .bind(pattern)
        .bind(window.limit)
        .bind(window.skip)
        .fetch_all(&mut *conn)
        .await?;
        let items = rows.iter().map(file_record).collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, total, window))
    }

    /// Retries a file (contract §6): a failed file — or, with `force`, a completed one — is
    /// reset to pending with one new job. Atomic: of concurrent retries, one wins.
    pub async fn retry_file(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_id: &FileId,
        force: bool,
        by: &str,
    ) -> Result<RetryOutcome> {
        let mut tx = self.write_tx().await?;
        let file = fetch_file(&mut tx, organization_id, store_id, file_id).await?;
        match file.status {
            FileStatus::Pending | FileStatus::Processing => {
                return Ok(RetryOutcome::InProgress(file.status));
            }
            FileStatus::Completed if !force => return Ok(RetryOutcome::AlreadyProcessed),
            FileStatus::Completed | FileStatus::Failed => {}
        }
        let now = Timestamp::now().millis();
        let reset = Reset::Retry { from: file.status };
        let updated = reset_to_pending(&mut tx, file_id, reset, now).await?;
        if !updated {
            return Ok(RetryOutcome::InProgress(FileStatus::Pending));
        }
        let job = NewJob::Process { store_id, file_id };
        enqueue(&mut tx, organization_id, job, now).await?;
        append_log(
            &mut tx,
            organization_id,
            file_id,
            file.attempts,
            LogLevel::Info,
            Some(Step::Queued),
            "retry_requested",
            if force {
                "Re-processing requested (force)"
            } else {
                "Retry requested"
            },
            json!({"by": by, "force": force, "previous_status": file.status.as_str()}),
        )
        .await?;
        let previous = file.status.as_str();
        let file = fetch_file(&mut tx, organization_id, store_id, file_id).await?;
        write_events(
            &mut tx,
            organization_id,
            vec![
                NewEvent::file(
                    EventType::FileRetried,
                    store_id,
                    file_id,
                    json!({"by": by, "force": force, "previous_status": previous}),
                ),
                NewEvent::file(
                    EventType::FileQueued,
                    store_id,
                    file_id,
                    json!({"reason": "retry"}),
                ),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(RetryOutcome::Queued(Box::new(file)))
    }

    /// Deletes files: hidden at once, queued jobs cancelled, a durable purge job each.
    /// Returns the IDs deleted (unknown or already deleted IDs are skipped).
    pub async fn delete_files(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_ids: &[FileId],
        by: &str,
    ) -> Result<Vec<FileId>> {
        let mut tx = self.write_tx().await?;
        require_store(&mut tx, organization_id, store_id).await?;
        let now = Timestamp::now().millis();
        let mut deleted = Vec::new();
        for file_id in file_ids {
            if !unlink(&mut tx, organization_id, store_id, file_id, now).await? {
                continue;
            }
            append_log(
                &mut tx,
                organization_id,
                file_id,
                0,
                LogLevel::Info,
                None,
                "deleted",
                "Deleted; its chunks and vectors are being purged, and its original unless another store holds the file",
                json!({"by": by}),
            )
            .await?;
            deleted.push(file_id.clone());
        }
        let events = deleted
            .iter()
            .map(|id| NewEvent::file(EventType::FileDeleted, store_id, id, json!({"by": by})))
            .collect();
        write_events(&mut tx, organization_id, events).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// A file's log, oldest first, optionally of one attempt.
    pub async fn file_logs(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
        file_id: &FileId,
        attempt: Option<i64>,
        window: PageRequest,
    ) -> Result<Page<LogEntry>> {
        let mut conn = self.read.acquire().await?;
        fetch_file(&mut conn, organization_id, store_id, file_id).await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM file_logs WHERE file_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR attempt = $2)",
        )
        .bind(file_id)
        .bind(attempt)
        .fetch_one(&mut *conn)
        .await?;
        let rows = sqlx::query(
            "SELECT ts, level, attempt, step, event, message, data FROM file_logs \
             WHERE file_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR attempt = $2) \
             ORDER BY seq LIMIT $3 OFFSET $4",
        )
        .bind(file_id)
        .bind(attempt)
        .bind(window.limit)
        .bind(window.skip)
        .fetch_all(&mut *conn)
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                let step: Option<String> = row.try_get("step")?;
                let data: String = row.try_get("data")?;
                Ok(LogEntry {
                    timestamp: ts(row, "ts")?,
                    level: enum_col(row, "level", LogLevel::parse)?,
                    attempt: row.try_get("attempt")?,
                    step: step.as_deref().and_then(Step::parse),
                    event: row.try_get("event")?,
                    message: row.try_get("message")?,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, total, window))
    }

    /// Usage of one store (contract §10): sums over its live files, exact.
    pub async fn store_usage(
        &self,
        organization_id: &OrgId,
        store_id: &StoreId,
    ) -> Result<UsageFigures> {
        let mut conn = self.read.acquire().await?;
        require_store(&mut conn, organization_id, store_id).await?;
        let rows = usage_rows(&mut conn, organization_id, Some(store_id)).await?;
        Ok(rows.into_iter().next().map(|(_, u)| u).unwrap_or_default())
    }

    /// Usage per store of an organization: `(store_id, figures)` for every store.
    pub async fn organization_usage(
        &self,
        organization_id: &OrgId,
    ) -> Result<Vec<(StoreId, String, UsageFigures)>> {
        let mut conn = self.read.acquire().await?;
        let figures = usage_rows(&mut conn, organization_id, None).await?;
        let stores = sqlx::query(
            "SELECT id, name FROM stores WHERE organization_id = $1 ORDER BY created_at, id",
        )
        .bind(organization_id)
        .fetch_all(&mut *conn)
        .await?;
        stores
            .iter()
            .map(|row| {
                let id: StoreId = row.try_get("id")?;
                let name: String = row.try_get("name")?;
                let usage = figures
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map(|(_, u)| u.clone())
                    .unwrap_or_default();
                Ok((id, name, usage))
            })
            .collect()
    }
}

async fn usage_rows(
    conn: &mut AnyConnection,
    organization_id: &OrgId,
    store_id: Option<&str>,
) -> Result<Vec<(String, UsageFigures)>> {
    let rows = sqlx::query(
        "SELECT store_id, \
         CAST(COUNT(*) AS BIGINT) AS n_total, \
         CAST(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS BIGINT) AS n_pending, \
         CAST(SUM(CASE WHEN status = 'processing' THEN 1 ELSE 0 END) AS BIGINT) AS n_processing, \
         CAST(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS BIGINT) AS n_completed, \
         CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS n_failed, \
         CAST(SUM(file_size) AS BIGINT) AS original_bytes, \
         CAST(SUM(extracted_text_bytes) AS BIGINT) AS extracted_text_bytes, \
         CAST(SUM(chunk_count) AS BIGINT) AS chunk_count, \
         CAST(SUM(vector_bytes) AS BIGINT) AS vector_bytes, \
         CAST(SUM(index_bytes) AS BIGINT) AS index_bytes \
         FROM files WHERE organization_id = $1 AND deleted_at IS NULL \
         AND (CAST($2 AS TEXT) IS NULL OR store_id = $2) GROUP BY store_id",
    )
    .bind(organization_id)
    .bind(store_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let mut u = UsageFigures {
                file_count: row.try_get("n_total")?,
                file_counts: FileCounts {
                    pending: row.try_get("n_pending")?,
                    processing: row.try_get("n_processing")?,
                    completed: row.try_get("n_completed")?,
                    failed: row.try_get("n_failed")?,
                    total: row.try_get("n_total")?,
                },
                original_bytes: row.try_get("original_bytes")?,
                extracted_text_bytes: row.try_get("extracted_text_bytes")?,
                chunk_count: row.try_get("chunk_count")?,
                vector_bytes: row.try_get("vector_bytes")?,
                index_bytes: row.try_get("index_bytes")?,
                total_bytes: 0,
            };
            u.total_bytes =
                u.original_bytes + u.extracted_text_bytes + u.vector_bytes + u.index_bytes;
            Ok((row.try_get("store_id")?, u))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status endpoint's read of the key and the file (on SQLite answered on the caller's
    /// thread: `inline`) finds what separate reads of each find, in every case the endpoint
    /// tells apart, on every backend; on SQLite the inline answer equals sqlx's, field for
    /// field, and needs no sqlx connection.
    #[tokio::test]
    async fn the_status_read_finds_the_key_and_the_file_as_separate_reads_do() {
        use kiln_core::types::Role;
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            assert_eq!(catalog.inline.is_some(), catalog.dialect == Dialect::Sqlite);
            let sqlx_only = Catalog {
                inline: None,
                ..catalog.clone()
            };
            let key = catalog
                .create_api_key(&org, Role::Editor, Some("k"))
                .await
                .unwrap()
                .value;
            let revoked = catalog
                .create_api_key(&org, Role::Admin, None)
                .await
                .unwrap();
            catalog.revoke_api_key(&revoked.info.id).await.unwrap();
            let (other_org, other_store) = crate::test_org_with_store(&catalog).await;
            let processing = crate::test_file(&catalog, &org, &store).await;
            let claimed = catalog
                .claim("w", std::time::Duration::from_secs(60))
                .await
                .unwrap();
            assert!(
                matches!(claimed, Some(crate::Claimed::Process(job)) if job.file.id == processing)
            );
            let pending = crate::test_file(&catalog, &org, &store).await;
            let deleted = crate::test_file(&catalog, &org, &store).await;
            catalog
                .delete_files(&org, &store, std::slice::from_ref(&deleted), "ak_x")
                .await
                .unwrap();
            let elsewhere = crate::test_file(&catalog, &other_org, &other_store).await;
            let cases = [
                (&key, &store, &processing, Some(FileStatus::Processing)),
                (&key, &store, &pending, Some(FileStatus::Pending)),
                (&key, &store, &deleted, None),
                (&key, &other_store, &elsewhere, None),
                (&key, &store, &elsewhere, None),
                (&revoked.value, &store, &pending, None),
                (&"kiln_not_a_key".to_string(), &store, &pending, None),
            ];
            for (value, store_id, file, status) in cases {
                let read = catalog
                    .key_and_file_status(value, &org, store_id, file)
                    .await
                    .unwrap();
                let via_sqlx = sqlx_only
                    .key_and_file_status(value, &org, store_id, file)
                    .await
                    .unwrap();
                assert_eq!(read, via_sqlx, "{file}");
                let Some(principal) = catalog.authenticate(value).await.unwrap() else {
                    assert_eq!(read, None, "an invalid key finds nothing");
                    continue;
                };
                let (found_key, found_file) = read.expect("a valid key is found");
                assert_eq!(found_key, principal);
                let file_read = catalog.get_file(&org, store_id, file).await.ok();
                assert_eq!(found_file.as_ref().map(|(f, _)| f), file_read.as_ref());
                assert_eq!(found_file.as_ref().map(|(f, _)| f.status), status);
                // Only the running job's file has a lease.
                let lease = found_file.and_then(|(_, lease)| lease);
                assert_eq!(lease.is_some(), status == Some(FileStatus::Processing));
            }
            // On SQLite the read goes past sqlx: with sqlx's read pool closed it still
            // answers, where the sqlx path cannot.
            if catalog.dialect == Dialect::Sqlite {
                catalog.read.close().await;
                assert!(
                    sqlx_only
                        .key_and_file_status(&key, &org, &store, &pending)
                        .await
                        .is_err()
                );
                let read = catalog
                    .key_and_file_status(&key, &org, &store, &pending)
                    .await
                    .unwrap();
                let (_, file) = read.expect("the key is found without sqlx's pool");
                assert_eq!(file.map(|(f, _)| f.id), Some(pending.clone()));
            }
        }
    }

    /// The records an upload answers with, and the file a claimed job carries, come from
    /// their statements' own `RETURNING`; each must be the row a later read finds, field for
    /// field, on every backend.
    #[tokio::test]
    async fn uploads_and_claims_carry_the_rows_as_stored() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let id = FileId::generate();
            let created = catalog
                .create_file(NewFile {
                    id: id.clone(),
                    organization_id: org.clone(),
                    store_id: store.clone(),
                    file_name: "notes.md".into(),
                    relative_path: Some("a/b/notes.md".into()),
                    mime_type: "text/markdown".into(),
                    file_size: 1234,
                    sha256: Some("ab".repeat(32)),
                    created_by: "ak_x".into(),
                    original_blob: format!("orgs/{org}/stores/{store}/files/{id}/original"),
                })
                .await
                .unwrap();
            assert_eq!(created, catalog.get_file(&org, &store, &id).await.unwrap());
            assert_eq!(
                (created.status, created.current_step, created.file_size),
                (FileStatus::Pending, Step::Queued, 1234)
            );
            let claimed = catalog
                .claim("w", std::time::Duration::from_secs(60))
                .await
                .unwrap();
            let Some(crate::Claimed::Process(job)) = claimed else {
                panic!("the upload's job is claimed: {claimed:?}");
            };
            assert_eq!(job.file, catalog.get_file(&org, &store, &id).await.unwrap());
            assert_eq!(
                (job.file.status, job.file.attempts, job.file.generation),
                (FileStatus::Processing, 1, created.generation + 1)
            );

            let org_file_id = FileId::generate();
            let new = crate::NewOrgFile {
                id: org_file_id.clone(),
                organization_id: org.clone(),
                file_name: "sheet.csv".into(),
                relative_path: None,
                mime_type: "text/csv".into(),
                file_size: 7,
                sha256: None,
                created_by: "ak_y".into(),
                blob_path: format!("orgs/{org}/files/{org_file_id}/original"),
            };
            let org_file = catalog.create_org_file(new.clone()).await.unwrap();
            assert_eq!(
                org_file,
                catalog.get_org_file(&org, &org_file_id).await.unwrap()
            );
            let linked_id = FileId::generate();
            let linked = catalog
                .create_org_file_in_store(
                    crate::NewOrgFile {
                        id: linked_id.clone(),
                        ..new
                    },
                    &store,
                )
                .await
                .unwrap();
            assert_eq!(
                linked,
                catalog.get_file(&org, &store, &linked.id).await.unwrap()
            );
        }
    }
}
