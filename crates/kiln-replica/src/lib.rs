//! A cluster API node's chunk index: a local tantivy + vector index that replays the catalog's
//! index log (`kiln_catalog::index_log`) in sequence order. Nothing in it is the only copy:
//! every chunk and vector lives in the catalog, so a node can be lost, and a new one (or one
//! whose folder belongs to another log, or that fell behind the log's retention) starts from
//! the newest index snapshot in object storage (`snapshot.rs`), or else from a consistent
//! read of the catalog's chunks, and then replays the log after it.
//!
//! Read-your-writes: `catch_up` reads the log's head and waits until this replica has applied
//! it, so a file reported `completed` (its chunks were logged before) is found by the next
//! search on any node. How far behind a node is shows in `/ready` and `/metrics`.

mod snapshot;

pub use snapshot::{SnapshotRef, discard_all as discard_snapshots, latest as latest_snapshot};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_blobs::Blobs;
use kiln_catalog::{Catalog, IndexChange, LogEntry};
use kiln_index::{AnnOptions, ChunkIndex, ChunkRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

/// Log entries read and applied at once.
const BATCH: u32 = 500;
/// Chunks per commit while loading a snapshot.
const SNAPSHOT_BATCH: u32 = 4_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("catalog: {0}")]
    Catalog(#[from] kiln_catalog::CatalogError),
    #[error("index: {0}")]
    Index(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("index snapshot: {0}")]
    Snapshot(String),
    #[error(
        "this node's index is {behind} log entries behind after waiting {waited_ms} ms (applied {applied}, head {head})"
    )]
    Behind {
        behind: u64,
        applied: u64,
        head: u64,
        waited_ms: u64,
    },
    #[error(
        "the index log moved past this node (it has {applied}, the log starts after {first_kept}); restart the node to rebuild its index"
    )]
    Gap { applied: u64, first_kept: u64 },
}

pub type Result<T, E = ReplicaError> = std::result::Result<T, E>;

/// What the replica has applied, kept beside the index folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Watermark {
    epoch: String,
    seq: u64,
}

/// How a replica opened: from its own folder, or rebuilt (and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Opened {
    Resumed {
        seq: u64,
    },
    Rebuilt {
        reason: &'static str,
        chunks: u64,
        seq: u64,
    },
    /// From a snapshot in object storage, then the log after it.
    Restored {
        reason: &'static str,
        seq: u64,
        bytes: u64,
    },
}

impl Opened {
    /// The last log entry the index held when it opened.
    pub fn seq(&self) -> u64 {
        match self {
            Opened::Resumed { seq }
            | Opened::Rebuilt { seq, .. }
            | Opened::Restored { seq, .. } => *seq,
        }
    }
}

/// A local index kept in step with the catalog's index log.
pub struct Replica {
    catalog: Catalog,
    index: Arc<ChunkIndex>,
    /// The index folder.
    dir: PathBuf,
    /// Where snapshots are written and read (a cluster's object storage).
    blobs: Option<Blobs>,
    watermark_path: PathBuf,
    epoch: String,
    applied: watch::Sender<u64>,
    /// The highest head this node has seen (for the lag it reports).
    head_seen: AtomicU64,
    nudge: Notify,
    /// Held while applying: entries are applied by one task at a time.
    syncing: tokio::sync::Mutex<()>,
    /// Set when the log moved past this node while it ran.
    gap: std::sync::Mutex<Option<(u64, u64)>>,
    pub opened: Opened,
}

impl Replica {
    /// Opens the replica in `dir`, rebuilding it from the catalog when it is new, made from
    /// another log, or behind the log's retention.
    pub async fn open(
        catalog: Catalog,
        dir: &Path,
        dimensions: usize,
        ann: AnnOptions,
        blobs: Option<Blobs>,
    ) -> Result<Replica> {
        let watermark_path = watermark_path(dir);
        let head = catalog.index_head().await?;
        let saved: Option<Watermark> = std::fs::read(&watermark_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let reason = match &saved {
            None => Some("no replica here yet"),
            Some(w) if w.epoch != head.epoch => Some("the folder replicates another index log"),
            Some(w) if w.seq > head.seq => Some("the folder is ahead of the index log"),
            Some(w) if !continues(&catalog, w.seq, head.seq).await? => {
                Some("the log's retention passed this node")
            }
            Some(_) => None,
        };
        let open = |dir: PathBuf| {
            ChunkIndex::open_with(&dir, dimensions, ann)
                .map(|index| {
                    Arc::new(
                        index
                            .with_group_window(Duration::ZERO)
                            .with_commit_spacing(Duration::ZERO),
                    )
                })
                .map_err(|e| ReplicaError::Index(e.to_string()))
        };
        let (index, opened) = match reason {
            None => {
                let seq = saved.map(|w| w.seq).unwrap_or_default();
                (open(dir.to_path_buf())?, Opened::Resumed { seq })
            }
            Some(reason) => {
                let _ = std::fs::remove_file(&watermark_path);
                if dir.exists() {
                    std::fs::remove_dir_all(dir)?;
                }
                let restored = match &blobs {
                    Some(blobs) => restore(&catalog, blobs, dir, &head, &open).await,
                    None => None,
                };
                let (index, epoch, opened) = match restored {
                    Some((index, snapshot)) => {
                        let opened = Opened::Restored {
                            reason,
                            seq: snapshot.seq,
                            bytes: snapshot.bytes(),
                        };
                        (index, snapshot.epoch, opened)
                    }
                    None => {
                        tracing::info!(reason, dir = %dir.display(), "rebuilding the index from the catalog");
                        let index = open(dir.to_path_buf())?;
                        let (epoch, chunks, seq) = rebuild(&catalog, &index).await?;
                        (
                            index,
                            epoch,
                            Opened::Rebuilt {
                                reason,
                                chunks,
                                seq,
                            },
                        )
                    }
                };
                let seq = opened.seq();
                write_watermark(&watermark_path, &Watermark { epoch, seq })?;
                tracing::info!(?opened, "index replica built; the log after it follows");
                (index, opened)
            }
        };
        let seq = opened.seq();
        Ok(Replica {
            catalog,
            index,
            dir: dir.to_path_buf(),
            blobs,
            watermark_path,
            epoch: head.epoch,
            applied: watch::Sender::new(seq),
            head_seen: AtomicU64::new(head.seq.max(seq)),
            nudge: Notify::new(),
            syncing: tokio::sync::Mutex::new(()),
            gap: std::sync::Mutex::new(None),
            opened,
        })
    }

    /// The local index searches read.
    pub fn index(&self) -> &Arc<ChunkIndex> {
        &self.index
    }

    /// The last log entry applied here.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// How many log entries this node had not applied at the last head it saw.
    pub fn behind(&self) -> u64 {
        self.head_seen
            .load(Ordering::Relaxed)
            .saturating_sub(self.applied())
    }

    /// Applies whatever the log holds beyond this replica, now. Returns the entries applied.
    pub async fn sync(&self) -> Result<u64> {
        let _one_at_a_time = self.syncing.lock().await;
        if let Some((applied, first_kept)) = *self.gap.lock().expect("not poisoned") {
            return Err(ReplicaError::Gap {
                applied,
                first_kept,
            });
        }
        let mut total = 0;
        loop {
            let head = self.catalog.index_head().await?;
            self.head_seen.fetch_max(head.seq, Ordering::Relaxed);
            let applied = self.applied();
            if head.seq <= applied {
                return Ok(total);
            }
            let entries = self.catalog.index_log_after(applied, BATCH).await?;
            match entries.first() {
                Some(first) if first.seq == applied + 1 => {}
                other => {
                    let first_kept = other.map_or(head.seq, |e| e.seq - 1);
                    *self.gap.lock().expect("not poisoned") = Some((applied, first_kept));
                    tracing::error!(applied, first_kept, "the index log moved past this node");
                    return Err(ReplicaError::Gap {
                        applied,
                        first_kept,
                    });
                }
            }
            let last = entries.last().expect("not empty").seq;
            self.apply(entries).await?;
            write_watermark(
                &self.watermark_path,
                &Watermark {
                    epoch: self.epoch.clone(),
                    seq: last,
                },
            )?;
            total += last - applied;
            self.applied.send_replace(last);
        }
    }

    /// Applies entries in order: runs of adds as one commit (generations already here are
    /// skipped, so replaying is harmless), deletes one by one.
    async fn apply(&self, entries: Vec<LogEntry>) -> Result<()> {
        let wanted: Vec<(String, u64)> = entries
            .iter()
            .filter_map(|e| match &e.change {
                IndexChange::Add {
                    file_id,
                    generation,
                    ..
                } => Some((file_id.clone(), *generation)),
                _ => None,
            })
            .collect();
        let mut chunks: HashMap<(String, u64), Vec<ChunkRecord>> = HashMap::new();
        if !wanted.is_empty() {
            for chunk in self.catalog.index_chunks_of(&wanted).await? {
                chunks
                    .entry((chunk.file_id.clone(), chunk.generation))
                    .or_default()
                    .push(chunk);
            }
        }
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || apply_entries(&index, entries, chunks))
            .await
            .map_err(|e| ReplicaError::Index(e.to_string()))?
            .map_err(|e| ReplicaError::Index(e.to_string()))
    }

    /// Read-your-writes: waits (at most `timeout`) until this replica has applied the log as
    /// it stands now.
    pub async fn catch_up(&self, timeout: Duration) -> Result<()> {
        let head = self.catalog.index_head().await?.seq;
        self.head_seen.fetch_max(head, Ordering::Relaxed);
        if self.applied() >= head {
            return Ok(());
        }
        self.nudge.notify_one();
        let mut applied = self.applied.subscribe();
        let waited = tokio::time::timeout(timeout, applied.wait_for(|seq| *seq >= head)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let applied = self.applied();
                Err(ReplicaError::Behind {
                    behind: head.saturating_sub(applied),
                    applied,
                    head,
                    waited_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Tails the log until `stop` turns true: applies new entries when nudged (a search
    /// waiting, a notification) or every `every`.
    pub async fn run(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "the index replica could not apply the log");
            }
            tokio::select! {
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Wakes the tailer (on a notification from the catalog).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Writes a snapshot of this node's index to object storage, as of the last log entry
    /// applied, for new nodes to start from. `None`: nothing was written (no object storage,
    /// nothing new since the newest snapshot, or a deletion was logged after this position).
    pub async fn write_snapshot(&self) -> Result<Option<SnapshotRef>> {
        let Some(blobs) = &self.blobs else {
            return Ok(None);
        };
        if let Some(latest) = snapshot::latest(blobs).await?
            && latest.epoch == self.epoch
            && latest.seq >= self.applied()
        {
            return Ok(None);
        }
        // Graphs saved first, so a new node need not build them.
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.persist())
            .await
            .map_err(|e| ReplicaError::Index(e.to_string()))?
            .map_err(|e| ReplicaError::Index(e.to_string()))?;
        let staging = self.dir.with_extension("snapshot");
        let seq = {
            // No entry is applied while the folder is linked: it is the index at `seq`.
            let _paused = self.syncing.lock().await;
            let (dir, staging) = (self.dir.clone(), staging.clone());
            let linked = tokio::task::spawn_blocking(move || {
                for _ in 0..5 {
                    if snapshot::link_folder(&dir, &staging)? {
                        return Ok(true);
                    }
                }
                Ok::<_, std::io::Error>(false)
            })
            .await
            .map_err(|e| ReplicaError::Index(e.to_string()))??;
            if !linked {
                return Err(ReplicaError::Snapshot(
                    "segments kept changing while the folder was linked".into(),
                ));
            }
            self.applied()
        };
        let written = snapshot::upload(blobs, &self.catalog, &staging, &self.epoch, seq).await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        written
    }

    /// Writes a snapshot every `every` until `stop` turns true, unless another node wrote
    /// one within that time (every API node runs this; roughly one writes). Two nodes that do
    /// write at the same moment may each remove the other's files while `latest.json` names
    /// one of them: until the next snapshot, a new node then finds it incomplete and rebuilds
    /// from the catalog instead.
    pub async fn write_snapshots(
        self: Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(blobs) = self.blobs.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let now = kiln_core::Timestamp::now().millis();
            let recent = match snapshot::latest(&blobs).await {
                Ok(Some(latest)) => now - latest.written_at_ms < every.as_millis() as i64 / 2,
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "the newest index snapshot could not be read");
                    continue;
                }
            };
            if recent {
                continue;
            }
            match self.write_snapshot().await {
                Ok(Some(written)) => tracing::info!(
                    seq = written.seq,
                    bytes = written.bytes(),
                    files = written.files.len(),
                    "index snapshot written"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "the index snapshot could not be written"),
            }
        }
    }
}

/// A new node's index from the newest snapshot, if there is one this node can continue
/// from (the same log, not ahead of it, and the log still holds everything after it), opened
/// with `open`. Anything amiss leaves `dir` absent and answers `None`, and the node rebuilds
/// from the catalog instead.
async fn restore(
    catalog: &Catalog,
    blobs: &Blobs,
    dir: &Path,
    head: &kiln_catalog::IndexHead,
    open: &impl Fn(PathBuf) -> Result<Arc<ChunkIndex>>,
) -> Option<(Arc<ChunkIndex>, SnapshotRef)> {
    let attempt = async {
        let Some(latest) = snapshot::latest(blobs).await? else {
            return Ok(None);
        };
        if latest.epoch != head.epoch
            || latest.seq > head.seq
            || !continues(catalog, latest.seq, head.seq).await?
        {
            return Ok(None);
        }
        snapshot::download(blobs, &latest, dir).await?;
        Ok::<_, ReplicaError>(Some((open(dir.to_path_buf())?, latest)))
    };
    let restored = attempt.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the index snapshot could not be restored; rebuilding from the catalog");
        None
    });
    if restored.is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
    restored
}

/// Fills a new index from a consistent read of the catalog's chunks: the log's epoch, the
/// chunks and the log position the read matches.
async fn rebuild(catalog: &Catalog, index: &Arc<ChunkIndex>) -> Result<(String, u64, u64)> {
    // A node loads its index before it serves; the adds block, so on a multi-threaded runtime
    // this thread's other tasks move elsewhere meanwhile.
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let snapshot = catalog
        .index_snapshot(SNAPSHOT_BATCH, |chunks| {
            let add = || index.add(&chunks).map_err(|e| e.to_string());
            if multi_thread {
                tokio::task::block_in_place(add)
            } else {
                add()
            }
        })
        .await?
        .map_err(ReplicaError::Index)?;
    Ok((snapshot.head.epoch, snapshot.chunks, snapshot.head.seq))
}

fn apply_entries(
    index: &ChunkIndex,
    entries: Vec<LogEntry>,
    mut chunks: HashMap<(String, u64), Vec<ChunkRecord>>,
) -> kiln_index::Result<()> {
    let mut adding: Vec<ChunkRecord> = Vec::new();
    for entry in entries {
        match entry.change {
            IndexChange::Add {
                file_id,
                generation,
                ..
            } => {
                if let Some(add) = chunks.remove(&(file_id.clone(), generation))
                    && index.count(&file_id, generation)? == 0
                {
                    adding.extend(add);
                }
            }
            change => {
                if !adding.is_empty() {
                    index.add(&std::mem::take(&mut adding))?;
                }
                match change {
                    IndexChange::DeleteGeneration {
                        file_id,
                        generation,
                        ..
                    } => index.delete_generation(&file_id, generation)?,
                    IndexChange::DeleteFile { file_id, .. } => index.delete_file(&file_id)?,
                    IndexChange::DeleteStore { store_id } => index.delete_store(&store_id)?,
                    IndexChange::Add { .. } => unreachable!("matched above"),
                }
            }
        }
    }
    if !adding.is_empty() {
        index.add(&adding)?;
    }
    Ok(())
}

/// Whether the log still holds every entry after `seq` up to `head`.
async fn continues(catalog: &Catalog, seq: u64, head: u64) -> Result<bool> {
    if seq == head {
        return Ok(true);
    }
    let next = catalog.index_log_after(seq, 1).await?;
    Ok(next.first().is_some_and(|e| e.seq == seq + 1))
}

fn watermark_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".replica.json");
    dir.with_file_name(name)
}

/// Written after the entries it names are committed to the index: a crash in between
/// replays them, which changes nothing.
fn write_watermark(path: &Path, watermark: &Watermark) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(watermark).expect("serializes"))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_catalog::testing;
    use kiln_index::Scope;

    const DIMS: usize = 3;

    /// SQLite in a folder, and PostgreSQL when the test command started one.
    fn catalog_urls(dir: &Path) -> Vec<String> {
        let mut urls = vec![format!(
            "sqlite://{}?mode=rwc",
            dir.join("catalog.db").display()
        )];
        match testing::postgres_server() {
            Some(server) => urls.push(testing::database(
                &server,
                &format!(
                    "kiln_replica_{}",
                    kiln_core::ids::generate_secret()[..12].to_lowercase()
                ),
            )),
            None => kiln_testkit::skipped(
                "kiln-replica tests on PostgreSQL",
                "KILN_TEST_POSTGRES is not set",
            ),
        }
        urls
    }

    fn chunks(store: &str, file: &str, generation: u64, n: u32, word: &str) -> Vec<ChunkRecord> {
        (0..n)
            .map(|i| ChunkRecord {
                store_id: store.into(),
                file_id: file.into(),
                generation,
                chunk_index: i,
                text: format!("{word} number {i}"),
                page: None,
                vector: vec![1.0, i as f32, 0.5],
            })
            .collect()
    }

    async fn add(catalog: &Catalog, store: &str, file: &str, generation: u64, n: u32, word: &str) {
        catalog
            .index_add(&chunks(store, file, generation, n, word))
            .await
            .unwrap();
    }

    fn keyword(index: &ChunkIndex, store: &str, word: &str) -> Vec<(String, u64, u32)> {
        let stores = [store.to_string()];
        let scope = Scope {
            store_ids: &stores,
            active: &|_: &str, _: u64| true,
        };
        let mut hits: Vec<_> = index
            .keyword(&scope, word, 100)
            .unwrap()
            .into_iter()
            .map(|h| (h.file_id, h.generation, h.chunk_index))
            .collect();
        hits.sort();
        hits
    }

    /// Closes a replica's index once its merges are done, as a process exit would, so the
    /// folder can be opened again at once.
    fn close(replica: Replica) {
        let Replica { index, .. } = replica;
        Arc::into_inner(index)
            .expect("the only handle")
            .finish_merges()
            .unwrap();
    }

    async fn delete_file(catalog: &Catalog, store: &str, file: &str) {
        catalog
            .index_delete(IndexChange::DeleteFile {
                store_id: store.into(),
                file_id: file.into(),
            })
            .await
            .unwrap();
    }

    async fn open(catalog: &Catalog, dir: &Path) -> Replica {
        open_with(catalog, dir, None).await
    }

    async fn open_with(catalog: &Catalog, dir: &Path, blobs: Option<&Blobs>) -> Replica {
        Replica::open(
            catalog.clone(),
            dir,
            DIMS,
            AnnOptions::default(),
            blobs.cloned(),
        )
        .await
        .unwrap()
    }

    /// A new node starts from the newest snapshot and the log after it; a deletion logged
    /// after a snapshot's position leaves no snapshot behind, whichever side comes second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_node_starts_from_a_snapshot_and_purges_leave_none() {
        let dir = tempfile::tempdir().unwrap();
        for url in catalog_urls(dir.path()) {
            let catalog = Catalog::open(&url, 4).await.unwrap();
            let storage = tempfile::tempdir().unwrap();
            let blobs = Blobs::open_local(storage.path()).await.unwrap();
            let folder = tempfile::tempdir().unwrap();
            add(&catalog, "s1", "f1", 1, 3, "amber").await;
            add(&catalog, "s1", "f2", 1, 2, "cobalt").await;
            let a = open_with(&catalog, &folder.path().join("a"), Some(&blobs)).await;
            a.sync().await.unwrap();
            let written = a.write_snapshot().await.unwrap().expect("written");
            assert_eq!(written.seq, 2);
            assert!(written.files.iter().any(|(name, _)| name == "meta.json"));
            assert!(a.write_snapshot().await.unwrap().is_none(), "nothing new");

            // Changes after the snapshot; a new node starts from it and follows the log.
            add(&catalog, "s1", "f3", 1, 2, "amber").await;
            let b = open_with(&catalog, &folder.path().join("b"), Some(&blobs)).await;
            assert!(
                matches!(b.opened, Opened::Restored { seq: 2, bytes, .. } if bytes > 0),
                "{:?}",
                b.opened
            );
            assert_eq!(keyword(b.index(), "s1", "amber").len(), 3, "{url}");
            b.sync().await.unwrap();
            a.sync().await.unwrap();
            assert_eq!(
                keyword(b.index(), "s1", "amber"),
                keyword(a.index(), "s1", "amber")
            );
            assert_eq!(keyword(b.index(), "s1", "amber").len(), 5);
            assert_eq!(keyword(b.index(), "s1", "cobalt").len(), 2);

            // A purge after a snapshot: the sink's rule (delete logged, then snapshots gone).
            let second = b.write_snapshot().await.unwrap().expect("written");
            a.sync().await.unwrap();
            add(&catalog, "s1", "f4", 1, 1, "amber").await;
            a.sync().await.unwrap();
            let third = a.write_snapshot().await.unwrap().expect("written");
            // The oldest is gone; the one before the newest stays (a node may be restoring it).
            let kept = blobs
                .list(&kiln_blobs::Folder::index_snapshots())
                .await
                .unwrap();
            let names = [format!("{:020}", second.seq), format!("{:020}", third.seq)];
            assert!(
                kept.iter()
                    .all(|p| names.iter().any(|n| p.as_ref().contains(n))
                        || p.as_ref().ends_with("latest.json")),
                "{kept:?}"
            );
            assert!(kept.iter().any(|p| p.as_ref().contains(&names[0])));
            assert!(
                !kept
                    .iter()
                    .any(|p| p.as_ref().contains(&format!("{:020}", written.seq)))
            );
            delete_file(&catalog, "s1", "f2").await;
            discard_snapshots(&blobs).await.unwrap();
            let before_delete = a.applied();
            assert_eq!(latest_snapshot(&blobs).await.unwrap(), None);
            // A writer behind that deletion (it has not applied it) publishes nothing, and
            // leaves nothing: its snapshot would hold the purged file.
            assert!(a.write_snapshot().await.unwrap().is_none());
            let left = blobs
                .list(&kiln_blobs::Folder::index_snapshots())
                .await
                .unwrap();
            assert!(left.is_empty(), "{left:?}");
            // Once it has applied the deletion it may.
            a.sync().await.unwrap();
            assert!(a.write_snapshot().await.unwrap().is_some());
            let c = open_with(&catalog, &folder.path().join("c"), Some(&blobs)).await;
            assert!(
                matches!(c.opened, Opened::Restored { seq, .. } if seq == before_delete + 1),
                "{:?}",
                c.opened
            );
            assert!(keyword(c.index(), "s1", "cobalt").is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_replays_the_log_resumes_and_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        for url in catalog_urls(dir.path()) {
            let catalog = Catalog::open(&url, 4).await.unwrap();
            let folder = tempfile::tempdir().unwrap();
            let index_dir = folder.path().join("index");
            // Written before the node exists: it rebuilds from the snapshot.
            add(&catalog, "s1", "f1", 1, 3, "amber").await;
            let replica = open(&catalog, &index_dir).await;
            assert!(
                matches!(
                    replica.opened,
                    Opened::Rebuilt {
                        chunks: 3,
                        seq: 1,
                        ..
                    }
                ),
                "{:?}",
                replica.opened
            );
            assert_eq!(keyword(replica.index(), "s1", "amber").len(), 3, "{url}");

            // Changes after it: adds, a re-processed generation, deletes.
            add(&catalog, "s1", "f2", 1, 2, "amber").await;
            add(&catalog, "s1", "f1", 2, 4, "cobalt").await;
            catalog
                .index_delete(IndexChange::DeleteGeneration {
                    store_id: "s1".into(),
                    file_id: "f1".into(),
                    generation: 1,
                })
                .await
                .unwrap();
            add(&catalog, "s2", "f3", 1, 2, "amber").await;
            assert_eq!(replica.behind(), 0, "not seen yet");
            // Read-your-writes: catching up applies everything logged so far.
            replica.catch_up(Duration::ZERO).await.unwrap_err();
            replica.sync().await.unwrap();
            replica.catch_up(Duration::ZERO).await.unwrap();
            assert_eq!(replica.applied(), 5);
            let amber = keyword(replica.index(), "s1", "amber");
            assert_eq!(amber, [("f2".into(), 1, 0), ("f2".into(), 1, 1)], "{url}");
            assert_eq!(keyword(replica.index(), "s1", "cobalt").len(), 4);
            assert_eq!(keyword(replica.index(), "s2", "amber").len(), 2);
            // Replaying the same entries changes nothing.
            replica.applied.send_replace(0);
            replica.sync().await.unwrap();
            assert_eq!(keyword(replica.index(), "s1", "cobalt").len(), 4);
            assert_eq!(keyword(replica.index(), "s1", "amber").len(), 2);
            close(replica);

            // Reopened: resumes where it was, then applies a store delete.
            let replica = open(&catalog, &index_dir).await;
            assert_eq!(replica.opened, Opened::Resumed { seq: 5 });
            catalog
                .index_delete(IndexChange::DeleteStore {
                    store_id: "s2".into(),
                })
                .await
                .unwrap();
            delete_file(&catalog, "s1", "f2").await;
            replica.sync().await.unwrap();
            assert!(keyword(replica.index(), "s2", "amber").is_empty());
            assert!(keyword(replica.index(), "s1", "amber").is_empty());
            assert_eq!(keyword(replica.index(), "s1", "cobalt").len(), 4);
            close(replica);

            // Down while the log was pruned past it: rebuilt, with the same answers.
            add(&catalog, "s1", "f4", 1, 1, "cobalt").await;
            add(&catalog, "s1", "f5", 1, 1, "cobalt").await;
            catalog
                .prune_index_log(kiln_core::Timestamp(
                    kiln_core::Timestamp::now().millis() + 1000,
                ))
                .await
                .unwrap();
            let replica = open(&catalog, &index_dir).await;
            assert!(
                matches!(
                    replica.opened,
                    Opened::Rebuilt {
                        reason: "the log's retention passed this node",
                        chunks: 6,
                        seq: 9
                    }
                ),
                "{:?}",
                replica.opened
            );
            assert_eq!(keyword(replica.index(), "s1", "cobalt").len(), 6);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_replica_follows_and_a_search_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        for url in catalog_urls(dir.path()) {
            let catalog = Catalog::open(&url, 4).await.unwrap();
            let folder = tempfile::tempdir().unwrap();
            let replica = Arc::new(open(&catalog, &folder.path().join("index")).await);
            let (stop, stopped) = watch::channel(false);
            // Polls only once a minute: only a nudge from `catch_up` can make it apply.
            let tail = tokio::spawn(replica.clone().run(Duration::from_secs(60), stopped));
            for g in 1..=20u64 {
                catalog
                    .index_add(&chunks("s", &format!("f{g}"), g, 2, "quartz"))
                    .await
                    .unwrap();
                replica.catch_up(Duration::from_secs(10)).await.unwrap();
                assert_eq!(
                    keyword(replica.index(), "s", "quartz").len(),
                    2 * g as usize,
                    "{url}"
                );
            }
            stop.send_replace(true);
            tail.await.unwrap();
        }
    }
}
