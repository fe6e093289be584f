//! Index snapshots in object storage: an API node copies its index folder (tantivy's files and
//! the saved vector graphs, as of a log position) to the blob store now and then, and a new
//! node starts from the newest one plus the log after it, instead of reading every chunk from
//! the catalog and indexing it again.
//!
//! Layout, under [`Folder::index_snapshots`]:
//!
//! ```text
//! {epoch}/{seq:020}/{file}   the folder's files at log position seq
//! latest.json                the newest complete snapshot (written after its files)
//! ```
//!
//! A snapshot holds chunks as they were at its position, so a deletion after it would outlive
//! the purge in the snapshot. Both sides see to it that none does: a purge removes every
//! snapshot after its deletion is logged ([`discard_all`]), and a writer checks the log for
//! deletions after its position once its snapshot is published, removing it if there are any.
//! Whichever of the two comes second removes the snapshot.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use kiln_blobs::{BlobPath, Blobs, Folder};
use kiln_catalog::{Catalog, IndexChange};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{ReplicaError, Result};

/// What `latest.json` says: a complete snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The index log the snapshot belongs to.
    pub epoch: String,
    /// The last log entry applied in it.
    pub seq: u64,
    /// Its files, relative to the index folder, with their sizes.
    pub files: Vec<(String, u64)>,
    /// When it was written (Unix milliseconds).
    pub written_at_ms: i64,
}

impl SnapshotRef {
    fn prefix(&self) -> BlobPath {
        snapshot_prefix(&self.epoch, self.seq)
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, size)| size).sum()
    }
}

fn snapshot_prefix(epoch: &str, seq: u64) -> BlobPath {
    Folder::index_snapshots()
        .join(epoch)
        .join(format!("{seq:020}"))
}

fn latest_path() -> BlobPath {
    Folder::index_snapshots().join("latest.json")
}

/// A file of the snapshot under `prefix` (`name` may hold folders: `vectors/…`).
fn file_path(prefix: &BlobPath, name: &str) -> BlobPath {
    name.split('/')
        .fold(prefix.clone(), |path, part| path.join(part))
}

fn blob_error(err: kiln_blobs::BlobError) -> ReplicaError {
    ReplicaError::Snapshot(err.to_string())
}

/// The newest complete snapshot, if any.
pub async fn latest(blobs: &Blobs) -> Result<Option<SnapshotRef>> {
    match blobs.get(&latest_path()).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ReplicaError::Snapshot(format!("latest.json: {e}"))),
        Err(kiln_blobs::BlobError::NotFound(_)) => Ok(None),
        Err(err) => Err(blob_error(err)),
    }
}

/// Removes every snapshot (after a purge: none may hold what was purged).
pub async fn discard_all(blobs: &Blobs) -> Result<usize> {
    blobs
        .delete_prefix(&Folder::index_snapshots())
        .await
        .map_err(blob_error)
}

/// Whether the log after `seq` deletes a file or a store (which a snapshot at `seq` holds).
async fn deleted_since(catalog: &Catalog, seq: u64) -> Result<bool> {
    let mut after = seq;
    loop {
        let entries = catalog.index_log_after(after, 1_000).await?;
        let Some(last) = entries.last() else {
            return Ok(false);
        };
        after = last.seq;
        if entries.iter().any(|e| {
            matches!(
                e.change,
                IndexChange::DeleteFile { .. } | IndexChange::DeleteStore { .. }
            )
        }) {
            return Ok(true);
        }
    }
}

/// Every file under `dir`, relative to it, but lock files and files being written.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let name = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(name);
            } else if ![".lock", ".partial", ".tmp"]
                .iter()
                .any(|end| entry.file_name().to_string_lossy().ends_with(end))
            {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hard-links the index folder's files into `staging` (instant, whatever their size; the
/// index's files are never changed in place, only replaced: tantivy's by design, the vector
/// graphs and their meta by `kiln-index`'s saves). Checks that every segment the
/// linked `meta.json` names is there: a merge finishing meanwhile may remove the files of the
/// segments it replaced, so the caller tries again.
pub(crate) fn link_folder(dir: &Path, staging: &Path) -> std::io::Result<bool> {
    if staging.exists() {
        std::fs::remove_dir_all(staging)?;
    }
    for relative in files_under(dir)? {
        let target = staging.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::hard_link(dir.join(&relative), &target) {
            Ok(()) => {}
            // Removed since it was listed (a merge's leftovers): not part of the index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let meta: serde_json::Value = match std::fs::read(staging.join("meta.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let linked: Vec<String> = files_under(staging)?
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let segments = meta["segments"].as_array().cloned().unwrap_or_default();
    Ok(segments.iter().all(|segment| {
        let id = segment["segment_id"]
            .as_str()
            .unwrap_or("")
            .replace('-', "");
        !id.is_empty() && linked.iter().any(|name| name.starts_with(&id))
    }))
}

/// Uploads a staged folder as the snapshot at `seq` and publishes it, unless a deletion
/// after `seq` was logged (then nothing stays). `None`: not published.
pub(crate) async fn upload(
    blobs: &Blobs,
    catalog: &Catalog,
    staging: &Path,
    epoch: &str,
    seq: u64,
) -> Result<Option<SnapshotRef>> {
    let prefix = snapshot_prefix(epoch, seq);
    let mut files = Vec::new();
    let mut buffer = vec![0u8; 8 << 20];
    for relative in files_under(staging)? {
        let name = relative.to_string_lossy().replace('\\', "/");
        let mut file = tokio::fs::File::open(staging.join(&relative)).await?;
        let mut writer = blobs
            .writer(&file_path(&prefix, &name))
            .await
            .map_err(blob_error)?;
        let mut size = 0u64;
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await?;
            if n == 0 {
                break;
            }
            size += n as u64;
            writer.write(&buffer[..n]).await.map_err(blob_error)?;
        }
        writer.finish().await.map_err(blob_error)?;
        files.push((name, size));
    }
    let snapshot = SnapshotRef {
        epoch: epoch.to_string(),
        seq,
        files,
        written_at_ms: kiln_core::Timestamp::now().millis(),
    };
    let discard = |snapshot: &SnapshotRef| {
        let prefix = snapshot.prefix();
        async move { blobs.delete_prefix(&prefix).await.map_err(blob_error) }
    };
    if deleted_since(catalog, seq).await? {
        discard(&snapshot).await?;
        return Ok(None);
    }
    let previous = latest(blobs).await?;
    let body = serde_json::to_vec(&snapshot).expect("serializes");
    blobs
        .put(&latest_path(), Bytes::from(body))
        .await
        .map_err(blob_error)?;
    // A purge logged since the check above: it may have discarded snapshots before this one
    // was published, so this one goes (and latest.json with it).
    if deleted_since(catalog, seq).await? {
        discard_all(blobs).await?;
        return Ok(None);
    }
    // Older snapshots are superseded, but the one before this: a node may be restoring it.
    let mut keep = vec![latest_path()];
    for kept in std::iter::once(&snapshot).chain(previous.as_ref()) {
        let prefix = kept.prefix();
        keep.extend(kept.files.iter().map(|(name, _)| file_path(&prefix, name)));
    }
    blobs
        .delete_prefix_except(&Folder::index_snapshots(), &keep)
        .await
        .map(|_| ())
        .or_else(|e| {
            tracing::warn!(error = %e, "older index snapshots could not be removed");
            Ok::<_, ReplicaError>(())
        })?;
    Ok(Some(snapshot))
}

/// Downloads `snapshot` into `dir` (which must not exist), checking each file's size.
pub(crate) async fn download(blobs: &Blobs, snapshot: &SnapshotRef, dir: &Path) -> Result<()> {
    let prefix = snapshot.prefix();
    for (name, size) in &snapshot.files {
        let target = dir.join(name);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut file = tokio::fs::File::create(&target).await?;
        let mut stream = blobs
            .get_stream(&file_path(&prefix, name))
            .await
            .map_err(blob_error)?;
        let mut written = 0u64;
        while let Some(piece) = stream.try_next().await.map_err(blob_error)? {
            written += piece.len() as u64;
            file.write_all(&piece).await?;
        }
        file.sync_all().await?;
        if written != *size {
            return Err(ReplicaError::Snapshot(format!(
                "{name}: {written} bytes, the snapshot says {size}"
            )));
        }
    }
    Ok(())
}
