//! Kiln's catalog: organizations, API keys, slices, stores and files, behind one API.
//!
//! The catalog speaks portable SQL through sqlx's `Any` driver, so the same code path serves
//! SQLite (the embedded default) and PostgreSQL (a cluster: many servers and workers on one
//! database). The few places where the two differ branch on [`Dialect`]: how a write
//! transaction begins, row locks, the queue's claim, log sequence numbers. On SQLite, writes
//! go through a single connection (WAL mode, `busy_timeout`), reads through a pool; on
//! PostgreSQL one pool serves both. The busiest transactions and reads are written once
//! against `exec::Exec` instead, which on a SQLite file runs them on the caller's thread
//! through rusqlite (`write_inline!`, `read_inline!`; see `inline`).

/// Runs `$body` — an `async` expression using `$conn: &mut impl Exec`, borrowing what it
/// needs — in a write transaction, committed if it returns `Ok`: on a SQLite catalog on the
/// caller's thread when the write lock is free, the commit on a blocking thread (`inline`),
/// else through sqlx ([`Catalog::write_tx`]). The body is expanded once for each path.
macro_rules! write_inline {
    ($catalog:expr, |$conn:ident| $body:expr) => {{
        let catalog: &$crate::Catalog = $catalog;
        let began = match catalog.inline_writer.as_ref() {
            Some(writer) => writer.begin().await,
            None => None,
        };
        let inline = match began {
            Some(mut tx) => {
                let $conn = tx.conn();
                let out = $crate::exec::finish_now($body);
                Some(tx.end(out).await)
            }
            None => None,
        };
        match inline {
            Some(done) => done,
            None => {
                let mut tx = catalog.write_tx().await?;
                let $conn: &mut sqlx::AnyConnection = &mut *tx;
                let out = $body.await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }};
}

/// Runs `$body` — an `async` expression using `$conn: &mut impl Exec`, as `write_inline!`'s
/// — as a read: on a SQLite file's catalog on the caller's thread (`inline`), else on a
/// connection of sqlx's read pool. For the reads every request or upload makes (its key, its
/// store) and the status endpoint's.
macro_rules! read_inline {
    ($catalog:expr, |$conn:ident| $body:expr) => {{
        let catalog: &$crate::Catalog = $catalog;
        let inline = catalog.inline.as_deref().map(|reads| {
            reads.with(|$conn| {
                $crate::exec::finish_now($body).unwrap_or_else(|| Err($crate::exec::waited()))
            })
        });
        match inline {
            Some(done) => done,
            None => {
                let mut pooled = catalog.read.acquire().await?;
                let $conn: &mut sqlx::AnyConnection = &mut *pooled;
                $body.await
            }
        }
    }};
}

mod copy;
mod events;
mod exec;
mod files;
mod idempotency;
mod index_log;
mod inline;
mod keys;
mod migrate;
mod org_files;
mod queue;
mod reembed;
mod rows;
mod slices;
mod stores;
mod uploads;
mod webhooks;

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor};

pub use events::{EVENTS_CHANNEL, Event, EventFilter, EventPosition, PROGRESS_EVENT_INTERVAL_MS};
pub use files::{FileFilter, KeyAndFile, NewFile, RetryOutcome};
pub use idempotency::{IdempotencyClaim, StoredResponse};
pub use index_log::{INDEX_CHANNEL, IndexChange, IndexHead, IndexSnapshot, LogEntry};
pub use keys::NewApiKey;
pub use org_files::{LinkOutcome, NewOrgFile};
pub use queue::{
    Claimed, CompleteOutcome, Completion, FailOutcome, HeldJob, JobKind, JobState, Liveness,
    LogLine, ProcessJob, SearchableFile,
};
pub use slices::{NewSlice, SliceFilter, SlicePatch};
pub use stores::{NewStore, SearchStore, StorePatch, StoreQuery, StoreSort};
pub use uploads::{NewUpload, Upload, UploadPart};
pub use webhooks::{Attempt, ClaimedWebhook, Delivery, DeliveryOutcome, Webhook};

/// Everything that can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(Resource),
    #[error("the slice is archived")]
    SliceArchived,
    #[error("the target catalog is not empty (it has organizations)")]
    NotEmpty,
    #[error("unsupported catalog URL: {0}")]
    UnsupportedUrl(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    /// The database cannot be reached or its connections are all taken (try again later).
    #[error("the catalog is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("catalog error: {0}")]
    Db(sqlx::Error),
    /// An error of a read SQLite answered on the caller's thread (`inline`).
    #[error("catalog error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<sqlx::Error> for CatalogError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                CatalogError::Unavailable(err)
            }
            other => CatalogError::Db(other),
        }
    }
}

/// The kinds of records a lookup can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Organization,
    ApiKey,
    Slice,
    Store,
    File,
    /// A file of the organization (not of one store).
    OrgFile,
    Upload,
    Webhook,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Organization => "organization",
            Resource::ApiKey => "API key",
            Resource::Slice => "slice",
            Resource::Store => "store",
            Resource::File => "file",
            Resource::OrgFile => "organization file",
            Resource::Upload => "upload",
            Resource::Webhook => "webhook",
        })
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The database behind a catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn of_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    /// The dialect of an open connection.
    pub(crate) fn of(conn: &AnyConnection) -> Dialect {
        if conn.backend_name() == "PostgreSQL" {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    /// What a `SELECT` in a write transaction appends to lock the rows it read until the
    /// transaction ends: on PostgreSQL another transaction could change them in between;
    /// SQLite has one writer at a time (and no such clause).
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// The catalog. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    write: AnyPool,
    read: AnyPool,
    dialect: Dialect,
    url: String,
    progress_gate: events::ProgressGate,
    /// SQLite's reads on the caller's thread (a file's catalog only; see `inline`).
    inline: Option<std::sync::Arc<inline::InlineReads>>,
    /// SQLite's busiest write transactions on the caller's thread (`write_inline!`).
    inline_writer: Option<std::sync::Arc<inline::InlineWriter>>,
}

/// What each of a SQLite catalog's connections runs first: write-ahead logging (readers never
/// wait for the writer), a wait of up to 10 s for another writer's lock, a sync at each
/// checkpoint rather than each commit, and foreign keys enforced.
pub const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                                  PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

impl Catalog {
    /// Opens (creating if needed) the catalog at `url` and applies pending migrations.
    /// `max_readers` sizes SQLite's read pool; PostgreSQL gets one pool of
    /// `max_readers + 8` connections for reads and writes.
    pub async fn open(url: &str, max_readers: u32) -> Result<Catalog> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let Some(dialect) = Dialect::of_url(url) else {
            return Err(CatalogError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let (write, read) = match dialect {
            Dialect::Sqlite => {
                let pool = |max: u32| {
                    AnyPoolOptions::new()
                        .max_connections(max.max(1))
                        .min_connections(0)
                        .acquire_timeout(Duration::from_secs(30))
                        // A local file needs no liveness ping before each use (a round trip
                        // saved).
                        .test_before_acquire(false)
                        .after_connect(|conn, _meta| {
                            Box::pin(async move {
                                conn.execute(SQLITE_PRAGMAS).await?;
                                Ok(())
                            })
                        })
                        .connect_with(options.clone())
                };
                let write = pool(1).await?;
                migrate::run(&write, dialect).await?;
                (write, pool(max_readers).await?)
            }
            Dialect::Postgres => {
                let connect = || {
                    AnyPoolOptions::new()
                        .max_connections(max_readers.max(1) + 8)
                        .min_connections(1)
                        .acquire_timeout(Duration::from_secs(30))
                        .connect_with(options.clone())
                };
                let pool = match connect().await {
                    Err(e) if is_missing_database(&e) => {
                        // A new cluster: create its database (the role needs CREATEDB).
                        create_database(url).await?;
                        connect().await?
                    }
                    other => other?,
                };
                migrate::run(&pool, dialect).await?;
                (pool.clone(), pool)
            }
        };
        index_log::seed(&write).await?;
        let (inline, inline_writer) = match dialect {
            Dialect::Sqlite => (
                inline::InlineReads::for_url(url)?.map(std::sync::Arc::new),
                inline::InlineWriter::for_url(url)?.map(std::sync::Arc::new),
            ),
            Dialect::Postgres => (None, None),
        };
        Ok(Catalog {
            write,
            read,
            dialect,
            url: url.to_string(),
            progress_gate: events::ProgressGate::default(),
            inline,
            inline_writer,
        })
    }

    /// The database behind this catalog.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL this catalog was opened with (for connections of its own, e.g. to listen for
    /// notifications on PostgreSQL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes fails at once with "database is
    /// locked", whatever the busy timeout, when another process sharing the file (`kiln admin`
    /// on a served data dir) committed in between; an immediate one waits its turn. On
    /// PostgreSQL a plain transaction; what it reads to decide a write is locked with
    /// `Dialect::for_update` or decided by a conditional `UPDATE`.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.write.begin().await?,
        })
    }

    /// Checks that the catalog answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Closes all connections, waiting for in-flight queries.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// The channel a PostgreSQL catalog notifies when a job is queued.
pub const JOBS_CHANNEL: &str = "kiln_jobs";

impl Catalog {
    /// On PostgreSQL, calls `on` for each notification on `channel` (see `JOBS_CHANNEL`,
    /// `INDEX_CHANNEL`) until the task is aborted, reconnecting after a lost connection
    /// (and calling `on` then too: notifications may have been missed meanwhile). `None` on
    /// SQLite, whose writers share this process or poll.
    pub fn listen(
        &self,
        channel: &'static str,
        on: impl Fn() + Send + Sync + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.dialect != Dialect::Postgres {
            return None;
        }
        let url = self.url.clone();
        Some(tokio::spawn(async move {
            loop {
                let listened: std::result::Result<(), sqlx::Error> = async {
                    let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                    listener.listen(channel).await?;
                    on();
                    loop {
                        listener.recv().await?;
                        on();
                    }
                }
                .await;
                if let Err(e) = listened {
                    tracing::warn!(channel, error = %e, "lost the catalog's notifications; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

/// The placeholders of a multi-row `VALUES` list: `($1, $2), ($3, $4)` for 2 rows of 2
/// columns. `column(index, placeholder)` gives a column's expression (a placeholder may be
/// wrapped, e.g. in a default from a sequence).
pub(crate) fn value_rows(
    rows: usize,
    columns: usize,
    column: impl Fn(usize, String) -> String,
) -> String {
    (0..rows)
        .map(|row| {
            let values: Vec<String> = (0..columns)
                .map(|c| column(c, format!("${}", row * columns + c + 1)))
                .collect();
            format!("({})", values.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether connecting failed because the database does not exist (PostgreSQL's 3D000).
fn is_missing_database(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("3D000"))
}

/// Creates the database a PostgreSQL URL names, connecting to the server's `postgres`
/// database to do so. Another process creating it at the same time is no error.
async fn create_database(url: &str) -> Result<()> {
    use sqlx::Connection;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .ok_or_else(|| CatalogError::UnsupportedUrl(redact_url(url)))?
        .to_string();
    let mut admin = sqlx::PgConnection::connect_with(&options.database("postgres")).await?;
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await;
    admin.close().await?;
    match created {
        // 42P04: it exists (created meanwhile by another process).
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
        Err(e) => Err(e.into()),
        Ok(_) => {
            tracing::info!(database = %name, "created the catalog database");
            Ok(())
        }
    }
}

/// A URL with any password removed, safe to print.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// For tests on PostgreSQL: databases of their own on a test server.
pub mod testing {
    /// The PostgreSQL server tests may use (`KILN_TEST_POSTGRES`, a URL of its `postgres`
    /// database, set by the test command), if any.
    pub fn postgres_server() -> Option<String> {
        std::env::var("KILN_TEST_POSTGRES")
            .ok()
            .filter(|url| !url.is_empty())
    }

    /// A URL like `server`'s, of the database `name` (created when a catalog opens it).
    pub fn database(server: &str, name: &str) -> String {
        let (base, _) = server.rsplit_once('/').unwrap_or((server, ""));
        format!("{base}/{name}")
    }
}

/// The catalogs tests run against: SQLite in a temporary folder, and a new database on the
/// test PostgreSQL server when there is one (said once on stderr when there is not).
#[cfg(test)]
pub(crate) async fn test_urls() -> Vec<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let mut urls = vec![(dir, sqlite)];
    match testing::postgres_server() {
        Some(server) => {
            let name = format!(
                "kiln_unit_{}",
                kiln_core::ids::generate_secret()[..16].to_lowercase()
            );
            let url = testing::database(&server, &name);
            urls.push((tempfile::tempdir().unwrap(), url));
        }
        None => {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                kiln_testkit::skipped(
                    "kiln-catalog tests on PostgreSQL",
                    "KILN_TEST_POSTGRES is not set",
                )
            });
        }
    }
    urls
}

/// A catalog for a test, with one organization, slice and store.
#[cfg(test)]
pub(crate) struct TestCatalog {
    /// Holds the SQLite file.
    pub _dir: tempfile::TempDir,
    pub url: String,
    pub catalog: Catalog,
    pub org: kiln_core::OrgId,
    pub store: kiln_core::StoreId,
}

/// Catalogs (see `test_urls`) with one organization, slice and store each, for tests.
#[cfg(test)]
pub(crate) async fn test_catalogs() -> Vec<TestCatalog> {
    let mut out = Vec::new();
    for (dir, url) in test_urls().await {
        let catalog = Catalog::open(&url, 4).await.unwrap();
        let (org, store) = test_org_with_store(&catalog).await;
        out.push(TestCatalog {
            _dir: dir,
            url,
            catalog,
            org,
            store,
        });
    }
    out
}

/// A new organization with one slice and store in `catalog`: their IDs.
#[cfg(test)]
pub(crate) async fn test_org_with_store(
    catalog: &Catalog,
) -> (kiln_core::OrgId, kiln_core::StoreId) {
    use kiln_core::types::{AccessMode, OwnerType, SliceType};
    let org = catalog.create_organization("o").await.unwrap();
    let slice = catalog
        .create_slice(
            &org.id,
            NewSlice {
                name: "s".into(),
                description: None,
                slice_type: SliceType::Standard,
                owner_type: OwnerType::Organization,
                owner_id: None,
            },
            "ak_x",
        )
        .await
        .unwrap();
    let store = catalog
        .create_store(
            &org.id,
            &slice.id,
            NewStore {
                name: "st".into(),
                description: None,
                access_mode: AccessMode::Organization,
            },
            "ak_x",
        )
        .await
        .unwrap();
    (org.id, store.id)
}

/// Registers a one-byte text file in a store, as an upload does: its ID.
#[cfg(test)]
pub(crate) async fn test_file(
    catalog: &Catalog,
    org: &kiln_core::OrgId,
    store: &kiln_core::StoreId,
) -> kiln_core::FileId {
    let id = kiln_core::FileId::generate();
    catalog
        .create_file(NewFile {
            id: id.clone(),
            organization_id: org.clone(),
            store_id: store.clone(),
            file_name: "f.txt".into(),
            relative_path: None,
            mime_type: "text/plain".into(),
            file_size: 1,
            sha256: None,
            created_by: "ak_x".into(),
            original_blob: format!("orgs/{org}/stores/{store}/files/{id}/original"),
        })
        .await
        .unwrap();
    id
}

/// SQLite's plan for `sql` (a query with its values written in), one line per step. (Plans
/// are checked on SQLite only: PostgreSQL's planner picks by the table's statistics, and on a
/// test's few rows any index, or none, is right.)
#[cfg(test)]
pub(crate) async fn test_sqlite_plan(catalog: &Catalog, sql: &str) -> String {
    use sqlx::Row;
    assert_eq!(catalog.dialect, Dialect::Sqlite);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(&catalog.read)
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String, _>("detail").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("postgres://u:secret@host/db"),
            "postgres://***@host/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
