//! Reads a SQLite catalog answers on the caller's thread.
//!
//! sqlx runs each SQLite connection on a thread of its own: a statement is handed to that
//! thread and its rows handed back, two thread wake-ups. While the model's lanes hold both
//! cores, a woken thread sometimes waits for the scheduler's next tick (see
//! `docs/decisions/embedding-speed.md`, "Where the status tail comes from"), so every
//! hand-off is a chance of a few milliseconds more. The status endpoint, which clients poll
//! while their files process, reads one row by key; here it reads it on the request's own
//! thread through a connection of its own (rusqlite, on the same linked SQLite as sqlx's),
//! with no hand-off. It holds that thread for one indexed point read; a reader of a WAL
//! database does not wait for writers.
//!
//! PostgreSQL's reads cross a socket to another process either way; they keep sqlx.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::rows::Columns;
use crate::{CatalogError, Result};

/// Read-only connections to a SQLite catalog's file, used on the caller's thread. A read
/// holds its connection without awaiting anything, so no more are in use at once than threads
/// reading at once (the runtime's workers, in the server); each is kept for the next read.
pub(crate) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReads {
    /// For the SQLite catalog at `url`; `None` for an in-memory one (no other connection can
    /// see it).
    pub(crate) fn for_url(url: &str) -> Result<Option<InlineReads>> {
        use std::str::FromStr;
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        Ok(Some(InlineReads {
            path: options.get_filename().to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Runs `read` with a connection (a kept one, or a new one), then keeps it.
    pub(crate) fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match kept {
            Some(conn) => conn,
            None => open(&self.path)?,
        };
        let out = read(&conn);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        out
    }
}

fn open(path: &Path) -> Result<Connection> {
    // Read-write, so that it can join the WAL (`-shm`) like any reader; `query_only` keeps it
    // from writing. Never creates the file: the catalog has made it.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

impl From<rusqlite::Error> for CatalogError {
    fn from(err: rusqlite::Error) -> Self {
        let busy = matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if busy {
            CatalogError::Unavailable(sqlx::Error::Io(std::io::Error::other(err)))
        } else {
            CatalogError::Sqlite(err)
        }
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.get(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.get(col)?)
    }
}
