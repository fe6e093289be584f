//! Kiln's blob storage: original files and extracted text, through the `object_store` crate,
//! so a local folder (the default) and S3-compatible storage are the same code.
//!
//! Layout: `orgs/{org}/stores/{store}/files/{file}/original` and `.../text.json`.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found: {0}")]
    NotFound(String),
    #[error("blob storage I/O error: {0}")]
    Io(#[source] object_store::Error),
    #[error("cannot prepare blob folder: {0}")]
    Setup(#[source] std::io::Error),
}

impl From<object_store::Error> for BlobError {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
            other => BlobError::Io(other),
        }
    }
}

impl BlobError {
    /// Whether the storage ran out of space (`ENOSPC`, or a quota).
    pub fn is_storage_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = cause {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            {
                return true;
            }
            cause = err.source();
        }
        false
    }
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// A blob's path.
pub type BlobPath = Path;

/// Where a store's blobs live.
pub fn store_prefix(organization_id: &str, store_id: &str) -> Path {
    Path::from(format!("orgs/{organization_id}/stores/{store_id}"))
}

/// Where one file's blobs live.
pub fn file_prefix(organization_id: &str, store_id: &str, file_id: &str) -> Path {
    Path::from(format!(
        "orgs/{organization_id}/stores/{store_id}/files/{file_id}"
    ))
}

const PROBE: &str = "_kiln/probe";

/// The blob store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl Blobs {
    /// Blobs in a local folder, created if missing.
    pub async fn open_local(dir: &FsPath) -> Result<Blobs> {
        std::fs::create_dir_all(dir).map_err(BlobError::Setup)?;
        let local = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Self::from_store(Arc::new(local)).await
    }

    /// Blobs in any object store; writes a probe object to check it is writable.
    pub async fn from_store(store: Arc<dyn ObjectStore>) -> Result<Blobs> {
        let blobs = Blobs { store };
        blobs
            .put(&Path::from(PROBE), Bytes::from_static(b"kiln"))
            .await?;
        Ok(blobs)
    }

    /// Checks that the storage answers.
    pub async fn ping(&self) -> Result<()> {
        self.store.head(&Path::from(PROBE)).await?;
        Ok(())
    }

    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// Reads a blob as a stream of pieces, never whole in memory.
    pub async fn get_stream(
        &self,
        path: &Path,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let stream = self.store.get(path).await?.into_stream();
        Ok(stream.map_err(BlobError::from).boxed())
    }

    /// Starts a streamed write: bytes are written as they come, never held whole in memory.
    pub async fn writer(&self, path: &Path) -> Result<BlobWriter> {
        let upload = self.store.put_multipart(path).await?;
        Ok(BlobWriter {
            inner: object_store::WriteMultipart::new(upload),
        })
    }

    /// Deletes every blob under `prefix`; returns how many were deleted. Blobs that vanish
    /// meanwhile (another deleter, a concurrent cleanup of empty folders) count as deleted.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<usize> {
        let mut deleted = 0;
        // A listing can trip over folders removed under it; list again until clean.
        for _ in 0..5 {
            let listed: Vec<object_store::Result<object_store::ObjectMeta>> =
                self.store.list(Some(prefix)).collect().await;
            let mut tripped = false;
            for entry in listed {
                match entry {
                    Ok(meta) => match self.store.delete(&meta.location).await {
                        Ok(()) => deleted += 1,
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(err) => return Err(err.into()),
                    },
                    Err(object_store::Error::NotFound { .. }) => tripped = true,
                    Err(err) => return Err(err.into()),
                }
            }
            if !tripped {
                return Ok(deleted);
            }
        }
        Ok(deleted)
    }

    /// Paths under `prefix` (for tests and audits).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>> {
        Ok(self
            .store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?)
    }
}

/// A blob being written; it appears only when finished.
pub struct BlobWriter {
    inner: object_store::WriteMultipart,
}

impl BlobWriter {
    /// Writes bytes, waiting when too many parts are in flight.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.wait_for_capacity(8).await?;
        self.inner.write(bytes);
        Ok(())
    }

    pub async fn finish(self) -> Result<()> {
        self.inner.finish().await?;
        Ok(())
    }

    /// Abandons the write; nothing appears.
    pub async fn abort(self) {
        let _ = self.inner.abort().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_and_delete_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open_local(dir.path()).await.unwrap();
        blobs.ping().await.unwrap();
        let a = file_prefix("org_a", "vs_a", "file_1")
            .clone()
            .join("original");
        let b = file_prefix("org_a", "vs_a", "file_2")
            .clone()
            .join("original");
        let other = file_prefix("org_a", "vs_b", "file_3")
            .clone()
            .join("original");
        for p in [&a, &b, &other] {
            blobs.put(p, Bytes::from_static(b"hello")).await.unwrap();
        }
        assert_eq!(blobs.get(&a).await.unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(
            blobs
                .delete_prefix(&store_prefix("org_a", "vs_a"))
                .await
                .unwrap(),
            2
        );
        assert!(matches!(blobs.get(&a).await, Err(BlobError::NotFound(_))));
        assert!(
            blobs
                .list(&store_prefix("org_a", "vs_a"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(blobs.get(&other).await.unwrap().len(), 5);

        let streamed = file_prefix("org_a", "vs_c", "file_4")
            .clone()
            .join("original");
        let mut writer = blobs.writer(&streamed).await.unwrap();
        for _ in 0..3 {
            writer.write(&[7u8; 1000]).await.unwrap();
        }
        writer.finish().await.unwrap();
        assert_eq!(blobs.get(&streamed).await.unwrap().len(), 3000);
        let aborted = file_prefix("org_a", "vs_c", "file_5")
            .clone()
            .join("original");
        let mut writer = blobs.writer(&aborted).await.unwrap();
        writer.write(b"partial").await.unwrap();
        writer.abort().await;
        assert!(matches!(
            blobs.get(&aborted).await,
            Err(BlobError::NotFound(_))
        ));
    }
}
