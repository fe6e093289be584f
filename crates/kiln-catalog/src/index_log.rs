//! The shared index's durable half, for a cluster: every chunk with its vector
//! (`index_chunks`), and a log of changes in commit order (`index_log`) that each API node's
//! local index replays (`kiln-replica`). Writers (the pipeline, on any worker) change chunks
//! and append to the log in one transaction; the log's sequence has no gaps, so a reader that
//! sees `seq` N+2 without N+1 knows it fell behind the log's retention and must rebuild.

use kiln_core::{ChunkRecord, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Catalog, Dialect, Result};

/// Rows per `INSERT` (7 parameters each; PostgreSQL allows 65,535, SQLite 32,766).
const INSERT_ROWS: usize = 1_000;

/// The channel a PostgreSQL catalog notifies on each change of the index log.
pub const INDEX_CHANNEL: &str = "kiln_index";

/// One change of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChange {
    /// A file's generation was written; its chunks are in `index_chunks` (unless deleted
    /// since, in which case a later entry says so).
    Add {
        store_id: String,
        file_id: String,
        generation: u64,
    },
    DeleteGeneration {
        store_id: String,
        file_id: String,
        generation: u64,
    },
    DeleteFile {
        store_id: String,
        file_id: String,
    },
    DeleteStore {
        store_id: String,
    },
}

impl IndexChange {
    fn columns(&self) -> (&'static str, &str, Option<&str>, Option<i64>) {
        match self {
            IndexChange::Add {
                store_id,
                file_id,
                generation,
            } => ("add", store_id, Some(file_id), Some(*generation as i64)),
            IndexChange::DeleteGeneration {
                store_id,
                file_id,
                generation,
            } => (
                "delete_generation",
                store_id,
                Some(file_id),
                Some(*generation as i64),
            ),
            IndexChange::DeleteFile { store_id, file_id } => {
                ("delete_file", store_id, Some(file_id), None)
            }
            IndexChange::DeleteStore { store_id } => ("delete_store", store_id, None, None),
        }
    }

    fn from_row(row: &AnyRow) -> Result<IndexChange> {
        let op: String = row.try_get("op")?;
        let store_id: String = row.try_get("store_id")?;
        let file_id: Option<String> = row.try_get("file_id")?;
        let generation: Option<i64> = row.try_get("generation")?;
        let file_id = || file_id.clone().unwrap_or_default();
        let generation = generation.unwrap_or_default() as u64;
        Ok(match op.as_str() {
            "add" => IndexChange::Add {
                store_id,
                file_id: file_id(),
                generation,
            },
            "delete_generation" => IndexChange::DeleteGeneration {
                store_id,
                file_id: file_id(),
                generation,
            },
            "delete_file" => IndexChange::DeleteFile {
                store_id,
                file_id: file_id(),
            },
            _ => IndexChange::DeleteStore { store_id },
        })
    }
}

/// A change and its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub change: IndexChange,
}

/// Where the log stands: the last sequence number given, and the log's epoch (a random name
/// given when the catalog was created; a replica made from another log must rebuild).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHead {
    pub epoch: String,
    pub seq: u64,
}

/// A consistent copy of every chunk and the log position it corresponds to.
pub struct IndexSnapshot {
    pub head: IndexHead,
    pub chunks: u64,
}

pub(crate) async fn seed(pool: &sqlx::AnyPool) -> Result<()> {
    sqlx::query(
        "INSERT INTO index_head (id, seq, epoch) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING",
    )
    .bind(kiln_core::ids::generate_secret()[..20].to_lowercase())
    .execute(pool)
    .await?;
    Ok(())
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn vector_of(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

const CHUNK_COLUMNS: &str = "store_id, file_id, generation, chunk_index, text, page, vector";

fn chunk_of(row: &AnyRow) -> Result<ChunkRecord> {
    let page: Option<i64> = row.try_get("page")?;
    let vector: Vec<u8> = row.try_get("vector")?;
    Ok(ChunkRecord {
        store_id: row.try_get("store_id")?,
        file_id: row.try_get("file_id")?,
        generation: row.try_get::<i64, _>("generation")? as u64,
        chunk_index: row.try_get::<i64, _>("chunk_index")? as u32,
        text: row.try_get("text")?,
        page: page.map(|p| p as u32),
        vector: vector_of(&vector),
    })
}

impl Catalog {
    /// Writes chunks (of one or more file generations) and logs an `Add` for each
    /// generation, in one transaction. Writing the same chunks again changes nothing but
    /// the log. Returns the last log entry's sequence number.
    pub async fn index_add(&self, chunks: &[ChunkRecord]) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut added: Vec<IndexChange> = Vec::new();
        for batch in chunks.chunks(INSERT_ROWS) {
            let mut sql = format!("INSERT INTO index_chunks ({CHUNK_COLUMNS}) VALUES ");
            sql.push_str(&crate::value_rows(batch.len(), 7, |_, p| p));
            sql.push_str(" ON CONFLICT (file_id, generation, chunk_index) DO NOTHING");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for chunk in batch {
                query = query
                    .bind(chunk.store_id.clone())
                    .bind(chunk.file_id.clone())
                    .bind(chunk.generation as i64)
                    .bind(i64::from(chunk.chunk_index))
                    .bind(chunk.text.clone())
                    .bind(chunk.page.map(i64::from))
                    .bind(vector_bytes(&chunk.vector));
            }
            query.execute(&mut *tx).await?;
            for chunk in batch {
                let change = IndexChange::Add {
                    store_id: chunk.store_id.clone(),
                    file_id: chunk.file_id.clone(),
                    generation: chunk.generation,
                };
                if !added.contains(&change) {
                    added.push(change);
                }
            }
        }
        let seq = append(&mut tx, self.dialect, &added).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Removes chunks as `change` says (which must not be an `Add`) and logs it, in one
    /// transaction. Returns its sequence number.
    pub async fn index_delete(&self, change: IndexChange) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let delete = match &change {
            IndexChange::Add { .. } => None,
            IndexChange::DeleteGeneration {
                file_id,
                generation,
                ..
            } => Some(
                sqlx::query("DELETE FROM index_chunks WHERE file_id = $1 AND generation = $2")
                    .bind(file_id.clone())
                    .bind(*generation as i64),
            ),
            IndexChange::DeleteFile { file_id, .. } => Some(
                sqlx::query("DELETE FROM index_chunks WHERE file_id = $1").bind(file_id.clone()),
            ),
            IndexChange::DeleteStore { store_id } => Some(
                sqlx::query("DELETE FROM index_chunks WHERE store_id = $1").bind(store_id.clone()),
            ),
        };
        if let Some(delete) = delete {
            delete.execute(&mut *tx).await?;
        }
        let seq = append(&mut tx, self.dialect, std::slice::from_ref(&change)).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// The log's head.
    pub async fn index_head(&self) -> Result<IndexHead> {
        let row = sqlx::query("SELECT seq, epoch FROM index_head WHERE id = 1")
            .fetch_one(&self.read)
            .await?;
        Ok(IndexHead {
            seq: row.try_get::<i64, _>("seq")? as u64,
            epoch: row.try_get("epoch")?,
        })
    }

    /// Up to `limit` log entries after `seq`, in order.
    pub async fn index_log_after(&self, seq: u64, limit: u32) -> Result<Vec<LogEntry>> {
        let rows = sqlx::query(
            "SELECT seq, op, store_id, file_id, generation FROM index_log
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LogEntry {
                    seq: row.try_get::<i64, _>("seq")? as u64,
                    change: IndexChange::from_row(row)?,
                })
            })
            .collect()
    }

    /// The chunks of the given file generations, in chunk order.
    pub async fn index_chunks_of(&self, generations: &[(String, u64)]) -> Result<Vec<ChunkRecord>> {
        let mut chunks = Vec::new();
        for batch in generations.chunks(INSERT_ROWS) {
            let mut sql = format!("SELECT {CHUNK_COLUMNS} FROM index_chunks WHERE ");
            for i in 0..batch.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!(
                    "(file_id = ${} AND generation = ${})",
                    2 * i + 1,
                    2 * i + 2
                ));
            }
            sql.push_str(" ORDER BY file_id, generation, chunk_index");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (file_id, generation) in batch {
                query = query.bind(file_id.clone()).bind(*generation as i64);
            }
            for row in query.fetch_all(&self.read).await? {
                chunks.push(chunk_of(&row)?);
            }
        }
        Ok(chunks)
    }

    /// Every chunk, `batch` at a time to `each`, as of one moment, and the log head of that
    /// moment: a new replica loads this and then replays the log after `head.seq`.
    pub async fn index_snapshot(
        &self,
        batch: u32,
        mut each: impl FnMut(Vec<ChunkRecord>) -> std::result::Result<(), String>,
    ) -> Result<std::result::Result<IndexSnapshot, String>> {
        let mut tx = self.read.begin().await?;
        if self.dialect == Dialect::Postgres {
            // One snapshot for every statement of the transaction.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query("SELECT seq, epoch FROM index_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let head = IndexHead {
            seq: row.try_get::<i64, _>("seq")? as u64,
            epoch: row.try_get("epoch")?,
        };
        let mut after: Option<(String, i64, i64)> = None;
        let mut total = 0u64;
        loop {
            let sql = format!(
                "SELECT {CHUNK_COLUMNS} FROM index_chunks {} ORDER BY file_id, generation, chunk_index LIMIT $4",
                if after.is_some() {
                    "WHERE (file_id, generation, chunk_index) > ($1, $2, $3)"
                } else {
                    "WHERE $1 = $1 AND $2 = $2 AND $3 = $3"
                }
            );
            let (file, generation, index) = after.clone().unwrap_or_default();
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(file)
                .bind(generation)
                .bind(index)
                .bind(i64::from(batch.max(1)))
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                break;
            }
            let chunks = rows.iter().map(chunk_of).collect::<Result<Vec<_>>>()?;
            let last = chunks.last().expect("not empty");
            after = Some((
                last.file_id.clone(),
                last.generation as i64,
                i64::from(last.chunk_index),
            ));
            total += chunks.len() as u64;
            if let Err(e) = each(chunks) {
                return Ok(Err(e));
            }
        }
        tx.commit().await?;
        Ok(Ok(IndexSnapshot {
            head,
            chunks: total,
        }))
    }

    /// Removes log entries written before `before`, keeping the newest (replicas further
    /// behind than that rebuild from a snapshot). Returns how many went.
    pub async fn prune_index_log(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM index_log WHERE created_at < $1
             AND seq < (SELECT seq FROM index_head WHERE id = 1)",
        )
        .bind(before.millis())
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// Chunks of a file in the durable store, every generation (for tests and checks).
    pub async fn index_chunk_count(&self, file_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM index_chunks WHERE file_id = $1")
            .bind(file_id)
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }
}

/// Appends `changes` to the log at the end of a writing transaction and returns the last
/// sequence number. The head row stays locked until the transaction ends, so numbers are
/// given in commit order and without gaps.
async fn append(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    changes: &[IndexChange],
) -> Result<u64> {
    let now = Timestamp::now().millis();
    let mut seq = 0i64;
    for change in changes {
        seq = sqlx::query_scalar("UPDATE index_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut **tx)
            .await?;
        let (op, store_id, file_id, generation) = change.columns();
        sqlx::query(
            "INSERT INTO index_log (seq, op, store_id, file_id, generation, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seq)
        .bind(op)
        .bind(store_id.to_string())
        .bind(file_id.map(str::to_string))
        .bind(generation)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if dialect == Dialect::Postgres && !changes.is_empty() {
        // Delivered on commit, to every replica listening.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(INDEX_CHANNEL)
            .bind(seq.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(seq as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_catalogs;

    fn chunk(store: &str, file: &str, generation: u64, index: u32) -> ChunkRecord {
        ChunkRecord {
            store_id: store.into(),
            file_id: file.into(),
            generation,
            chunk_index: index,
            text: format!("chunk {index} of {file}"),
            page: index.is_multiple_of(2).then_some(index + 1),
            vector: vec![index as f32, -1.5, 0.25],
        }
    }

    #[tokio::test]
    async fn the_log_numbers_changes_in_order_and_chunks_come_back_whole() {
        for t in test_catalogs().await {
            let c = &t.catalog;
            let start = c.index_head().await.unwrap();
            assert_eq!(start.seq, 0, "{}", t.url);
            assert_eq!(start.epoch.len(), 20);
            let f1: Vec<ChunkRecord> = (0..3).map(|i| chunk("s1", "f1", 1, i)).collect();
            assert_eq!(c.index_add(&f1).await.unwrap(), 1);
            // The same chunks again: no duplicate rows, one more log entry.
            assert_eq!(c.index_add(&f1).await.unwrap(), 2);
            let f2: Vec<ChunkRecord> = (0..2).map(|i| chunk("s2", "f2", 4, i)).collect();
            assert_eq!(c.index_add(&f2).await.unwrap(), 3);
            let back = c
                .index_chunks_of(&[("f1".into(), 1), ("f2".into(), 4)])
                .await
                .unwrap();
            assert_eq!(back, [f1.clone(), f2.clone()].concat());
            let deleted = IndexChange::DeleteFile {
                store_id: "s1".into(),
                file_id: "f1".into(),
            };
            assert_eq!(c.index_delete(deleted.clone()).await.unwrap(), 4);
            assert_eq!(c.index_chunk_count("f1").await.unwrap(), 0);
            assert_eq!(c.index_chunk_count("f2").await.unwrap(), 2);
            let log = c.index_log_after(1, 10).await.unwrap();
            assert_eq!(
                log.iter().map(|e| e.seq).collect::<Vec<_>>(),
                [2, 3, 4],
                "{}",
                t.url
            );
            assert_eq!(log[2].change, deleted);
            assert_eq!(
                log[1].change,
                IndexChange::Add {
                    store_id: "s2".into(),
                    file_id: "f2".into(),
                    generation: 4
                }
            );
            let head = c.index_head().await.unwrap();
            assert_eq!((head.seq, &head.epoch), (4, &start.epoch));

            // A snapshot in batches: everything left, and the head it matches.
            let mut seen = Vec::new();
            let snapshot = c
                .index_snapshot(1, |batch| {
                    seen.extend(batch);
                    Ok(())
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!((snapshot.head.seq, snapshot.chunks), (4, 2));
            assert_eq!(seen, f2);

            // Pruning keeps the newest entry; a store delete takes its chunks.
            let pruned = c
                .prune_index_log(Timestamp(Timestamp::now().millis() + 1_000))
                .await
                .unwrap();
            assert_eq!(pruned, 3);
            assert_eq!(c.index_log_after(0, 10).await.unwrap().len(), 1);
            c.index_delete(IndexChange::DeleteStore {
                store_id: "s2".into(),
            })
            .await
            .unwrap();
            assert_eq!(c.index_chunk_count("f2").await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn concurrent_writers_get_gapless_numbers_in_commit_order() {
        for t in test_catalogs().await {
            let c = t.catalog.clone();
            // A reader tailing the log meanwhile never sees a number before a smaller one.
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let (c, done) = (c.clone(), done.clone());
                tokio::spawn(async move {
                    let mut seen = 0;
                    loop {
                        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                        for entry in c.index_log_after(seen, 1000).await.unwrap() {
                            assert_eq!(entry.seq, seen + 1, "a number skipped");
                            seen = entry.seq;
                        }
                        if finished {
                            return seen;
                        }
                        tokio::task::yield_now().await;
                    }
                })
            };
            let writers = (0..8u32).map(|w| {
                let c = c.clone();
                tokio::spawn(async move {
                    for g in 0..5u64 {
                        let chunks: Vec<ChunkRecord> = (0..20)
                            .map(|i| chunk("s", &format!("f{w}"), g, i))
                            .collect();
                        c.index_add(&chunks).await.unwrap();
                    }
                })
            });
            for w in writers.collect::<Vec<_>>() {
                w.await.unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(reader.await.unwrap(), 40);
            let log = c.index_log_after(0, 1000).await.unwrap();
            let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "{}", t.url);
            assert_eq!(c.index_head().await.unwrap().seq, 40);
        }
    }
}
