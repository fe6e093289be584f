//! Kiln's catalog: organizations, API keys, slices, stores and files, behind one API.
//!
//! The catalog speaks portable SQL through sqlx's `Any` driver, so the same code path serves
//! SQLite (the embedded default) and, later, PostgreSQL. On SQLite, writes go through a single
//! connection (WAL mode, `busy_timeout`), reads through a pool.

mod files;
mod keys;
mod migrate;
mod queue;
mod rows;
mod slices;
mod stores;
mod uploads;

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use files::{FileFilter, NewFile, RetryOutcome};
pub use keys::NewApiKey;
pub use queue::{Claimed, Completion, FailOutcome, JobKind, Liveness, LogLine, SearchableFile};
pub use slices::{NewSlice, SliceFilter, SlicePatch};
pub use stores::{NewStore, SearchStore, StorePatch};
pub use uploads::{NewUpload, Upload, UploadPart};

/// Everything that can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(Resource),
    #[error("the slice is archived")]
    SliceArchived,
    #[error("unsupported catalog URL: {0}")]
    UnsupportedUrl(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error("catalog error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The kinds of records a lookup can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Organization,
    ApiKey,
    Slice,
    Store,
    File,
    Upload,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Organization => "organization",
            Resource::ApiKey => "API key",
            Resource::Slice => "slice",
            Resource::Store => "store",
            Resource::File => "file",
            Resource::Upload => "upload",
        })
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The catalog. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    write: AnyPool,
    read: AnyPool,
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `url` and applies pending migrations.
    pub async fn open(url: &str, max_readers: u32) -> Result<Catalog> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        if !url.starts_with("sqlite:") {
            return Err(CatalogError::UnsupportedUrl(redact_url(url)));
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max.max(1))
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(30))
                // A local file needs no liveness ping before each use (a round trip saved).
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let write = pool(1).await?;
        migrate::run(&write).await?;
        let read = pool(max_readers).await?;
        Ok(Catalog { write, read })
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes fails at once with "database is
    /// locked", whatever the busy timeout, when another process sharing the file (`kiln admin`
    /// on a served data dir) committed in between; an immediate one waits its turn.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
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

/// A URL with any password removed, safe to print.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A catalog in a temporary folder with one organization, slice and store, for tests.
#[cfg(test)]
pub(crate) async fn test_catalog() -> (tempfile::TempDir, Catalog, String, String) {
    use kiln_core::types::{AccessMode, OwnerType, SliceType};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let catalog = Catalog::open(&url, 4).await.unwrap();
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
    (dir, catalog, org.id, store.id)
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
