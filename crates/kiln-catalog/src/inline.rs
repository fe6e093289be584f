//! Reads and write transactions a SQLite catalog runs on the caller's thread.
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
//! The busiest write transactions (an upload's registration, a job's claim, progress and
//! completion: about three a file, of six to nine statements each) run here too
//! ([`InlineWriter`], through `write_inline!`): one connection, taken for the whole
//! transaction; its statements run on the caller's thread (a few hundred microseconds: they
//! change SQLite's cache of pages only) and its commit, which writes the log, on a blocking
//! thread (one hand-off a transaction). SQLite's write lock is taken at `BEGIN IMMEDIATE`
//! *without* waiting: when another connection holds it — sqlx's writer, or another process
//! such as `kiln admin` — the transaction runs through sqlx instead, whose connection thread
//! waits for the lock. So a runtime's thread never sleeps on SQLite's lock or on the disk.
//! Transactions that end while others wait for the writer share one commit (group commit,
//! see [`InlineTx::end`]): the files of one index commit complete together, dozens at once.
//!
//! PostgreSQL's reads cross a socket to another process either way; they keep sqlx.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::exec::LiteConn;
use crate::rows::Columns;
use crate::{CatalogError, Result};

/// Read-only connections to a SQLite catalog's file, used on the caller's thread. A read
/// holds its connection without awaiting anything, so no more are in use at once than threads
/// reading at once (the runtime's workers, in the server); each is kept for the next read.
pub(crate) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<LiteConn>>,
}

impl InlineReads {
    /// For the SQLite catalog at `url`; `None` for an in-memory one (see [`file_of`]).
    pub(crate) fn for_url(url: &str) -> Result<Option<InlineReads>> {
        Ok(file_of(url)?.map(|path| InlineReads {
            path,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Runs `read` with a connection (a kept one, or a new one), then keeps it.
    pub(crate) fn with<T>(&self, read: impl FnOnce(&mut LiteConn) -> Result<T>) -> Result<T> {
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match kept {
            Some(conn) => conn,
            None => LiteConn(open(&self.path)?),
        };
        let out = read(&mut conn);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        out
    }
}

/// A SQLite catalog's connection for write transactions on the caller's thread.
pub(crate) struct InlineWriter {
    path: PathBuf,
    /// The connection and the group of transactions open on it, held for a whole
    /// transaction. An async lock: a thread whose transaction is running when the model's
    /// lanes preempt it keeps the lock until it runs again, and the other runtime threads
    /// must not sleep meanwhile (tasks that wait for the writer yield; requests on those
    /// threads go on).
    state: tokio::sync::Mutex<WriterState>,
    /// Transactions waiting for the writer: a transaction that ends while others wait
    /// leaves its commit to them (see [`InlineTx::end`]).
    waiting: AtomicUsize,
    /// Commits made here, to pace the checkpoints (see [`open_writer`]).
    commits: AtomicU64,
    /// Transactions sqlx ran instead, the write lock being taken (for tests and the log).
    fallbacks: AtomicU64,
    /// Transactions committed in a group with others (for tests).
    grouped: AtomicU64,
}

/// What the writer's lock guards. `group` is `Some` only while `conn` is in a transaction
/// that transactions already ended are part of, and waits for its commit. Its committer
/// task holds the group itself: if that task is dropped unrun (its runtime shutting down),
/// the members hear that their transaction was lost, and the next transaction finds the
/// group gone and rolls back what it left open.
#[derive(Default)]
struct WriterState {
    conn: Option<LiteConn>,
    group: Option<std::sync::Weak<Group>>,
}

/// Transactions that share one commit: each ran in the open transaction (inside a savepoint,
/// but the first) and waits for the outcome, which the group's committer sends.
struct Group {
    outcome: tokio::sync::watch::Sender<Option<std::result::Result<(), String>>>,
}

/// Inline commits between two checkpoints of the write-ahead log: an upload's, claim's or
/// completion's transaction writes around ten pages, so about SQLite's own default of a
/// checkpoint every 1,000 pages.
const COMMITS_PER_CHECKPOINT: u64 = 100;

/// The size the write-ahead log's file is cut back to when the log restarts: a few
/// checkpoint intervals' worth (an interval writes about 7 MB of log).
const JOURNAL_SIZE_LIMIT: i64 = 32 * 1024 * 1024;

/// Counts a transaction waiting for the writer while it lives (a cancelled wait included).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InlineWriter {
    /// For the SQLite catalog at `url`; `None` for an in-memory one (see [`file_of`]).
    pub(crate) fn for_url(url: &str) -> Result<Option<InlineWriter>> {
        Ok(file_of(url)?.map(|path| InlineWriter {
            path,
            state: tokio::sync::Mutex::new(WriterState::default()),
            waiting: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            grouped: AtomicU64::new(0),
        }))
    }

    /// Begins a write transaction holding the writer (other tasks' transactions wait for it);
    /// `None` if SQLite's write lock is held by another connection, or the connection cannot
    /// be opened (then sqlx runs the transaction, and reports what is wrong). If transactions
    /// that ended wait for their group's commit, this one joins their open transaction
    /// behind a savepoint.
    pub(crate) async fn begin(self: &Arc<Self>) -> Option<InlineTx<'_>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut held = {
            let _waiting = Waiting(&self.waiting);
            self.state.lock().await
        };
        if held.group.as_ref().is_some_and(|g| g.strong_count() == 0) {
            held.group = None;
            held.end_or_lose();
        }
        if held.group.is_some() {
            let joined = held
                .conn
                .as_ref()
                .map(|conn| conn.0.execute_batch("SAVEPOINT grouped"));
            match joined {
                Some(Ok(())) => {
                    return Some(InlineTx {
                        held,
                        writer: self,
                        joined: true,
                        ended: false,
                    });
                }
                _ => {
                    // The group's transaction is unusable: it fails, and this one goes
                    // through sqlx (its connection waits until the lock is free).
                    held.lose();
                    return None;
                }
            }
        }
        if held.conn.is_none() {
            match open_writer(&self.path) {
                Ok(conn) => held.conn = Some(LiteConn(conn)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the catalog's inline writer");
                    return None;
                }
            }
        }
        let conn = held.conn.as_ref().map(|c| &c.0)?;
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => Some(InlineTx {
                held,
                writer: self,
                joined: false,
                ended: false,
            }),
            Err(e) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "the catalog's write lock is taken; through sqlx");
                None
            }
        }
    }

    /// Commits the open transaction on a blocking thread, holding the writer: a file write
    /// can wait milliseconds for the file system (on a journaled ext4, for the journal's
    /// commit that another file's sync started), and a runtime thread never waits on the disk.
    ///
    /// Every `COMMITS_PER_CHECKPOINT` commits, the same thread then checkpoints the
    /// write-ahead log, still holding the writer: with no commit landing meanwhile, the
    /// checkpoint copies every page the log holds (bar what a reader's snapshot still
    /// needs), and the next transaction starts the log again from its beginning. (A
    /// checkpoint on another connection, beside the writer, never caught up with it under a
    /// steady stream of writes, and the log was never restarted: 212 MB of log for a 7 MB
    /// catalog after `kiln bench ingest --docs 1000`, with every page read searching its index.)
    /// Transactions arriving meanwhile wait for the writer without holding a thread, and then
    /// share a commit.
    async fn commit(&self, state: &mut WriterState) -> Result<()> {
        let conn = state
            .conn
            .take()
            .ok_or_else(|| lost("the catalog's inline writer lost its connection"))?;
        let checkpoint =
            (self.commits.load(Ordering::Relaxed) + 1).is_multiple_of(COMMITS_PER_CHECKPOINT);
        let (conn, committed) = tokio::task::spawn_blocking(move || {
            let committed = conn.0.execute_batch("COMMIT");
            if committed.is_ok() && checkpoint {
                let checkpointed =
                    conn.0
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(e) = checkpointed {
                    tracing::warn!(error = %e, "checkpoint of the catalog's write-ahead log failed");
                }
            }
            (conn, committed)
        })
        .await
        // The connection went with the thread; the next transaction opens another.
        .map_err(|e| lost(format!("the commit's thread failed: {e}")))?;
        state.conn = Some(conn);
        if let Err(e) = committed {
            // A connection still in its transaction is dropped; the next opens anew.
            state.end_or_lose();
            return Err(e.into());
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The group's committer: takes the writer after the transactions waiting for it when
    /// the group began (the lock is first come, first served), and commits them all.
    async fn commit_group(self: Arc<Self>, group: Arc<Group>) {
        let mut held = self.state.lock().await;
        let open = held
            .group
            .as_ref()
            .is_some_and(|g| std::ptr::eq(g.as_ptr(), Arc::as_ptr(&group)));
        if !open {
            // Lost with its connection: its members were told.
            return;
        }
        held.group = None;
        let committed = self.commit(&mut held).await;
        group
            .outcome
            .send_replace(Some(committed.map_err(|e| e.to_string())));
    }

    /// Transactions committed here, and run through sqlx instead.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }

    /// Transactions committed in a group with others.
    #[cfg(test)]
    pub(crate) fn grouped(&self) -> u64 {
        self.grouped.load(Ordering::Relaxed)
    }
}

fn lost(message: impl Into<String>) -> CatalogError {
    CatalogError::Db(sqlx::Error::Protocol(message.into()))
}

impl WriterState {
    /// Drops the connection, and with it its open transaction and the group waiting on it,
    /// whose members get an error (their committer finds the group gone, and drops the
    /// outcome's sender unsent).
    fn lose(&mut self) {
        self.conn = None;
        self.group = None;
    }

    /// Rolls back what is open; a connection that cannot end its transaction is dropped.
    fn end_or_lose(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if conn.0.is_autocommit() {
            return;
        }
        if conn.0.execute_batch("ROLLBACK").is_err() || !conn.0.is_autocommit() {
            self.lose();
        }
    }
}

/// A write transaction on the caller's thread; rolled back unless [`InlineTx::end`] commits.
pub(crate) struct InlineTx<'w> {
    held: tokio::sync::MutexGuard<'w, WriterState>,
    writer: &'w Arc<InlineWriter>,
    /// Runs inside a group's open transaction, behind the savepoint `grouped`.
    joined: bool,
    /// Committed, or left to its group: nothing to undo.
    ended: bool,
}

impl InlineTx<'_> {
    pub(crate) fn conn(&mut self) -> &mut LiteConn {
        self.held
            .conn
            .as_mut()
            .expect("a transaction holds its connection")
    }

    /// Commits if the body (`None`: it waited for something, which an inline body must not)
    /// succeeded; else undoes it (on drop). The body's statements ran on the caller's
    /// thread, changing only SQLite's cache of pages; the commit writes them to the log, on
    /// a blocking thread ([`InlineWriter::commit`]).
    ///
    /// Group commit: if other transactions wait for the writer when this one ends, it does
    /// not commit but leaves its transaction open to them, and they run in it one after
    /// another, each behind a savepoint (a failing one undoes only its own statements); a
    /// committer task takes the writer after them and commits once for all, and each returns
    /// when that commit is made. When files complete together (those of one index commit,
    /// dozens at a time), and slots for the next ones are claimed meanwhile, their
    /// transactions so share commits, log writes and hand-offs.
    pub(crate) async fn end<T>(mut self, body: Option<Result<T>>) -> Result<T> {
        let out = body.unwrap_or_else(|| Err(crate::exec::waited()))?;
        if self.joined {
            self.conn().0.execute_batch("RELEASE grouped")?;
        } else if self.held.group.is_none() && self.writer.waiting.load(Ordering::SeqCst) == 0 {
            // Nobody to share the commit with.
            self.ended = true;
            let writer = self.writer;
            writer.commit(&mut self.held).await?;
            return Ok(out);
        }
        let mut outcome = match self.held.group.as_ref().map(std::sync::Weak::upgrade) {
            Some(Some(group)) => group.outcome.subscribe(),
            Some(None) => {
                // The group's committer is gone (see `WriterState`): nothing of its
                // transaction may be committed now.
                self.held.group = None;
                self.held.end_or_lose();
                self.ended = true;
                return Err(lost("the group's transaction was lost before its commit"));
            }
            None => {
                let (outcome, waiting) = tokio::sync::watch::channel(None);
                let group = Arc::new(Group { outcome });
                self.held.group = Some(Arc::downgrade(&group));
                tokio::spawn(self.writer.clone().commit_group(group));
                waiting
            }
        };
        self.ended = true;
        let writer = self.writer;
        drop(self);
        let committed = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| lost("the group's transaction was lost before its commit"))?
            .clone()
            .unwrap_or(Ok(()));
        committed.map_err(lost)?;
        writer.grouped.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }
}

impl Drop for InlineTx<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if self.joined {
            // Undoes this transaction's statements only; the group's go on.
            let undone = self.held.conn.as_ref().is_some_and(|conn| {
                conn.0
                    .execute_batch("ROLLBACK TO grouped; RELEASE grouped")
                    .is_ok()
            });
            if !undone {
                self.held.lose();
            }
        } else {
            self.held.end_or_lose();
        }
    }
}

/// The inline writer's connection: SQLite's pragmas as the catalog's (`SQLITE_PRAGMAS`),
/// except that it never waits for the write lock (see [`InlineWriter::begin`]) and does not
/// checkpoint the write-ahead log inside a commit, on the commit's own schedule: the writer
/// checkpoints every `COMMITS_PER_CHECKPOINT` commits after the commit instead
/// ([`InlineWriter::commit`]). A log that grew in a burst is cut back to `journal_size_limit`
/// when it restarts.
fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    // Events and log lines insert a statement per row count: room for all of them.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The file of the SQLite catalog at `url`; `None` for an in-memory one (no other connection
/// can see it).
fn file_of(url: &str) -> Result<Option<PathBuf>> {
    use std::str::FromStr;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(Some(options.get_filename().to_path_buf()))
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::exec::{Exec, Q};
    use crate::rows::Columns;
    use crate::{CatalogError, Resource, Result};

    /// `$N` takes the N-th value wherever and however often it appears.
    async fn numbered(conn: &mut impl Exec) -> Result<(String, String, String, i64)> {
        let row = conn
            .fetch_one(
                Q::new("SELECT $2 AS b, $1 AS a, $2 || $1 AS ba, $3 + $3 AS twice")
                    .bind("x")
                    .bind("y")
                    .bind(21),
            )
            .await?;
        Ok((
            row.col("b")?,
            row.col("a")?,
            row.col("ba")?,
            row.col("twice")?,
        ))
    }

    #[tokio::test]
    async fn statements_bind_numbered_values_on_every_kind_of_connection() {
        let expected = ("y".to_string(), "x".to_string(), "yx".to_string(), 42);
        for test in crate::test_catalogs().await {
            let catalog = &test.catalog;
            // Inline on SQLite, sqlx's on PostgreSQL.
            let got = async { write_inline!(catalog, |conn| numbered(conn)) }
                .await
                .unwrap();
            assert_eq!(got, expected, "{}", test.url);
            // sqlx's connection, on both.
            let mut conn = catalog.write.acquire().await.unwrap();
            assert_eq!(
                numbered(&mut *conn).await.unwrap(),
                expected,
                "{}",
                test.url
            );
        }
    }

    #[tokio::test]
    async fn a_failed_write_transaction_leaves_nothing_and_the_next_one_commits() {
        for test in crate::test_catalogs().await {
            let catalog = &test.catalog;
            let failed: Result<()> = async {
                write_inline!(catalog, |conn| async {
                    conn.execute(Q::new(
                        "INSERT INTO organizations (id, name, created_at, updated_at) \
                         VALUES ('org_rolled_back', 'r', 0, 0)",
                    ))
                    .await?;
                    Err::<(), _>(CatalogError::NotFound(Resource::File))
                })
            }
            .await;
            assert!(matches!(
                failed,
                Err(CatalogError::NotFound(Resource::File))
            ));
            let left: Option<(String,)> =
                sqlx::query_as("SELECT id FROM organizations WHERE id = 'org_rolled_back'")
                    .fetch_optional(&catalog.read)
                    .await
                    .unwrap();
            assert_eq!(left, None, "{}", test.url);
            // The writer is out of its transaction: the next one commits.
            let file = crate::test_file(catalog, &test.org, &test.store).await;
            catalog
                .get_file(&test.org, &test.store, &file)
                .await
                .unwrap();
        }
    }

    /// Transactions that end while others wait for the writer share one commit (SQLite's
    /// inline writer); one that fails among them undoes its own statements only, and each
    /// returns once what it wrote is committed. On every backend.
    #[tokio::test]
    async fn waiting_write_transactions_share_a_commit_and_a_failing_one_is_undone_alone() {
        for test in crate::test_catalogs().await {
            let catalog = &test.catalog;
            let counts = || {
                catalog
                    .inline_writer
                    .as_ref()
                    .map(|w| (w.counts().0, w.grouped()))
            };
            let before = counts();
            // Twenty at once (the first has the writer to itself; the others queue for it).
            let results = futures::future::join_all((0..20).map(|i| async move {
                write_inline!(catalog, |conn| async {
                    conn.execute(
                        Q::new(
                            "INSERT INTO organizations (id, name, created_at, updated_at) \
                             VALUES ($1, 'grouped', 0, 0)",
                        )
                        .bind(format!("org_group_{i}")),
                    )
                    .await?;
                    if i == 7 {
                        return Err(CatalogError::NotFound(Resource::File));
                    }
                    Ok(i)
                })
            }))
            .await;
            for (i, result) in results.iter().enumerate() {
                match result {
                    Ok(got) => assert_eq!(*got, i, "{}", test.url),
                    Err(e) => assert_eq!(i, 7, "{}: {e}", test.url),
                }
            }
            assert!(results[7].is_err(), "{}", test.url);
            // Committed as each returned: a new connection sees them all, and not the failed one.
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM organizations WHERE name = 'grouped' ORDER BY id",
            )
            .fetch_all(&catalog.read)
            .await
            .unwrap();
            let mut expected: Vec<String> = (0..20)
                .filter(|&i| i != 7)
                .map(|i| format!("org_group_{i}"))
                .collect();
            expected.sort();
            assert_eq!(ids, expected, "{}", test.url);
            if let (Some((commits, grouped)), Some((commits_after, grouped_after))) =
                (before, counts())
            {
                let (commits, grouped) = (commits_after - commits, grouped_after - grouped);
                assert!(grouped >= 10, "{grouped} transactions committed in a group");
                assert!(commits <= 5, "19 transactions took {commits} commits");
            }
            // And the writer goes on alone.
            let file = crate::test_file(catalog, &test.org, &test.store).await;
            catalog
                .get_file(&test.org, &test.store, &file)
                .await
                .unwrap();
        }
    }

    /// A group whose committer task never runs (its runtime shut down first): its members
    /// hear nothing committed, and the writer's next transaction rolls back what the group
    /// left open and commits alone; nothing of the group is ever committed.
    #[test]
    fn a_group_whose_committer_never_ran_is_rolled_back_and_the_writer_goes_on() {
        use futures::FutureExt;
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let main = runtime();
        let (test, writer) = main.block_on(sqlite_catalog());
        let catalog = &test.catalog;
        let insert = |id: &'static str| async move {
            write_inline!(catalog, |conn| async {
                conn.execute(
                    Q::new(
                        "INSERT INTO organizations (id, name, created_at, updated_at) \
                         VALUES ($1, 'orphaned', 0, 0)",
                    )
                    .bind(id),
                )
                .await?;
                Ok::<(), CatalogError>(())
            })
        };
        let doomed = runtime();
        doomed.block_on(async {
            // Both wait for the writer; the first then ends while the second waits, so it
            // leaves its transaction to a group, which the second joins.
            let held = writer.state.lock().await;
            let mut first = std::pin::pin!(insert("org_orphan_1"));
            let mut second = std::pin::pin!(insert("org_orphan_2"));
            assert!(first.as_mut().now_or_never().is_none());
            assert!(second.as_mut().now_or_never().is_none());
            drop(held);
            assert!(
                first.as_mut().now_or_never().is_none(),
                "waits for the group"
            );
            assert!(
                second.as_mut().now_or_never().is_none(),
                "waits for the group"
            );
            assert!(writer.state.lock().await.group.is_some(), "a group is open");
        });
        // The committer task was spawned on this runtime and never polled.
        drop(doomed);
        main.block_on(async {
            let file = crate::test_file(catalog, &test.org, &test.store).await;
            catalog
                .get_file(&test.org, &test.store, &file)
                .await
                .unwrap();
            let left: Vec<String> =
                sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'orphaned'")
                    .fetch_all(&catalog.read)
                    .await
                    .unwrap();
            assert_eq!(left, Vec::<String>::new());
            assert!(writer.state.lock().await.group.is_none());
        });
    }

    /// The test catalog on SQLite, and its inline writer.
    async fn sqlite_catalog() -> (crate::TestCatalog, std::sync::Arc<super::InlineWriter>) {
        let test = crate::test_catalogs().await.remove(0);
        let writer = test
            .catalog
            .inline_writer
            .clone()
            .expect("a SQLite file's catalog");
        (test, writer)
    }

    #[tokio::test]
    async fn sqlite_writes_run_inline_and_through_sqlx_while_another_connection_writes() {
        let (test, writer) = sqlite_catalog().await;
        let catalog = &test.catalog;
        crate::test_file(catalog, &test.org, &test.store).await;
        let (commits, fallbacks) = writer.counts();
        assert!(commits >= 1, "the upload's transaction ran inline");
        assert_eq!(fallbacks, 0);

        // Another connection (as `kiln admin` on a served data dir) holds the write lock for
        // 300 ms: the upload waits for it through sqlx, and neither fails nor blocks this
        // (single-threaded) runtime, which the lock's holder does not need.
        let path = writer.path.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            conn.execute_batch("COMMIT").unwrap();
        });
        locked_rx.recv().unwrap();
        let started = Instant::now();
        let file = crate::test_file(catalog, &test.org, &test.store).await;
        let waited = started.elapsed();
        other.join().unwrap();
        assert!(
            waited.as_millis() >= 250,
            "it waited for the lock: {waited:?}"
        );
        assert_eq!(writer.counts(), (commits, 1), "through sqlx, once");
        catalog
            .get_file(&test.org, &test.store, &file)
            .await
            .unwrap();
        // And the next one is inline again.
        crate::test_file(catalog, &test.org, &test.store).await;
        assert_eq!(writer.counts(), (commits + 1, 1));
    }

    /// Under a steady stream of writes (two tasks writing back to back on two threads, as
    /// uploads and the pipeline do), the write-ahead log is checkpointed and restarted, so
    /// its file stays the size of a few checkpoints' worth of commits instead of growing
    /// with every commit (a checkpoint beside the writer never caught up with it: 212 MB of
    /// log for a 7 MB catalog after `kiln bench ingest --docs 1000`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_is_restarted_while_writes_go_on() {
        let (test, writer) = sqlite_catalog().await;
        let wal = {
            let mut name = writer.path.clone().into_os_string();
            name.push("-wal");
            std::path::PathBuf::from(name)
        };
        let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let interval = super::COMMITS_PER_CHECKPOINT as usize;
        let write = |n: usize| {
            let (catalog, org, store) =
                (test.catalog.clone(), test.org.clone(), test.store.clone());
            tokio::spawn(async move {
                for _ in 0..n {
                    crate::test_file(&catalog, &org, &store).await;
                }
            })
        };
        let run = |n: usize| async move {
            let (a, b) = (write(n / 2), write(n / 2));
            a.await.unwrap();
            b.await.unwrap();
        };
        // A checkpoint interval's worth, then ten more.
        run(interval).await;
        let first = size();
        run(10 * interval).await;
        let last = size();
        assert!(first > 0, "the log is in use");
        assert!(
            last < 3 * first,
            "the log grew from {first} to {last} bytes over ten checkpoint intervals"
        );
    }

    #[tokio::test]
    async fn inline_commits_get_the_write_ahead_log_checkpointed() {
        let (test, writer) = sqlite_catalog().await;
        let catalog = &test.catalog;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&catalog.write)
            .await
            .unwrap();
        let size = || std::fs::metadata(&writer.path).unwrap().len();
        let before = size();
        // The inline writer never checkpoints itself: until the catalog's checkpoint after
        // `COMMITS_PER_CHECKPOINT` commits, every page stays in the log.
        for _ in 0..super::COMMITS_PER_CHECKPOINT + 5 {
            crate::test_file(catalog, &test.org, &test.store).await;
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while size() == before && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            size() > before,
            "the database file grew from the log: {before} bytes, still {}",
            size()
        );
    }
}
