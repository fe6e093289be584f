//! What a SQLite statement's hand-off costs: sqlx runs each SQLite connection on a thread of
//! its own, so every statement a transaction awaits is handed to that thread and its answer
//! handed back. This runs the same write transactions (`BEGIN IMMEDIATE`, `STATEMENTS` small
//! inserts, `COMMIT`; like a file's completion) three ways on a catalog-like database (a WAL
//! file, one write connection, the catalog's pragmas), from a task on a two-thread tokio
//! runtime as in the server, and prints each way's CPU time, context switches and wall time
//! per transaction:
//!
//! - through sqlx, one statement at a time, as the catalog writes today;
//! - through sqlx, the transaction's inserts as one query string of several statements (sqlx
//!   runs them in one command of its connection's thread, binding every `$N` from one
//!   argument list), inside a sqlx transaction: three hand-offs (begin, the inserts, commit);
//! - through rusqlite on the task's own thread, no hand-off at all (as `inline.rs` reads).
//!
//! `cargo run --release -p kiln-catalog --example handoff_cost -- [TRANSACTIONS] [STATEMENTS]`
//! (defaults 2,000 and 8). Linux only (it reads `/proc`).

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Executor};

/// What the process has used: CPU seconds, and its live threads' context switches.
#[derive(Clone, Copy)]
struct Used {
    cpu: f64,
    switches: u64,
}

fn used() -> Used {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a number");
    let mut switches = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let status = std::fs::read_to_string(task.expect("a task").path().join("status"))
            .unwrap_or_default();
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Used {
        cpu: (ticks(11) + ticks(12)) / 100.0,
        switches,
    }
}

/// Runs `run` and prints what each of its `transactions` cost.
async fn measure<F: std::future::Future<Output = ()>>(
    way: &str,
    transactions: usize,
    run: impl FnOnce() -> F,
) {
    let (before, started) = (used(), Instant::now());
    run().await;
    let (after, wall) = (used(), started.elapsed());
    let each = transactions as f64;
    println!(
        "{way:<44} {:>7.1} µs CPU {:>6.1} switches {:>7.1} µs wall",
        (after.cpu - before.cpu) * 1e6 / each,
        (after.switches - before.switches) as f64 / each,
        wall.as_secs_f64() * 1e6 / each
    );
}

const INSERT: &str = "INSERT INTO lines (file_id, attempt, message, data, created_at) \
                      VALUES ($1, $2, $3, $4, $5)";

fn main() {
    let mut args = std::env::args().skip(1);
    let transactions: usize = args
        .next()
        .map_or(2000, |a| a.parse().expect("TRANSACTIONS"));
    let statements: usize = args.next().map_or(8, |a| a.parse().expect("STATEMENTS"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        tokio::spawn(run(transactions, statements))
            .await
            .expect("the measurement");
    });
}

async fn run(transactions: usize, statements: usize) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("catalog.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool: AnyPool = AnyPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(kiln_catalog::SQLITE_PRAGMAS).await?;
                Ok(())
            })
        })
        .connect_with(AnyConnectOptions::from_str(&url).expect("a URL"))
        .await
        .expect("the database");
    pool.execute(
        "CREATE TABLE lines (id INTEGER PRIMARY KEY, file_id TEXT NOT NULL, \
         attempt BIGINT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL, \
         created_at BIGINT NOT NULL); CREATE INDEX lines_file ON lines (file_id, id);",
    )
    .await
    .expect("the table");
    let message = "Embedding completed: 1 chunk";
    let data = r#"{"duration_ms":231,"chunks":1,"model":"all-MiniLM-L6-v2"}"#;
    println!(
        "{transactions} transactions of {statements} inserts each (BEGIN IMMEDIATE … COMMIT):"
    );

    measure("sqlx, one statement at a time", transactions, || async {
        for t in 0..transactions {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
            for s in 0..statements {
                sqlx::query(INSERT)
                    .bind(format!("file_{t}"))
                    .bind(s as i64)
                    .bind(message)
                    .bind(data)
                    .bind(t as i64)
                    .execute(&mut *tx)
                    .await
                    .expect("an insert");
            }
            tx.commit().await.expect("commit");
        }
    })
    .await;

    // The inserts as one string: each statement's placeholders numbered on from the last's.
    let compound: String = (0..statements)
        .map(|s| {
            let p = 5 * s;
            format!(
                "INSERT INTO lines (file_id, attempt, message, data, created_at) \
                 VALUES (${}, ${}, ${}, ${}, ${});",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            )
        })
        .collect();
    measure(
        "sqlx, the inserts as one query string",
        transactions,
        || async {
            for t in 0..transactions {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                let mut query = sqlx::query(AssertSqlSafe(compound.as_str()));
                for s in 0..statements {
                    query = query
                        .bind(format!("file_{t}"))
                        .bind(s as i64)
                        .bind(message)
                        .bind(data)
                        .bind(t as i64);
                }
                query.execute(&mut *tx).await.expect("the inserts");
                tx.commit().await.expect("commit");
            }
        },
    )
    .await;

    // rusqlite on this task's thread, while sqlx's write connection is held (so the two never
    // write at once, as a catalog would have to ensure).
    let held = pool.acquire().await.expect("the write connection");
    let conn = rusqlite::Connection::open(&path).expect("a second connection");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    measure(
        "rusqlite on the task's thread",
        transactions,
        move || async move {
            for t in 0..transactions {
                conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
                let mut insert = conn.prepare_cached(INSERT).expect("a statement");
                for s in 0..statements {
                    insert
                        .execute(rusqlite::params![
                            format!("file_{t}"),
                            s as i64,
                            message,
                            data,
                            t as i64
                        ])
                        .expect("an insert");
                }
                drop(insert);
                conn.execute_batch("COMMIT").expect("commit");
            }
        },
    )
    .await;
    drop(held);

    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lines")
        .fetch_one(&pool)
        .await
        .expect("a count");
    assert_eq!(
        rows as usize,
        3 * transactions * statements,
        "every way wrote every row"
    );
}
