//! Kiln's blob storage: original files and extracted text, through the `object_store` crate,
//! so a local folder (the default) and S3-compatible storage are the same code.
//!
//! Layout: one type, [`Folder`], spells every path (`orgs/{org}/stores/{store}/files/{file}/`
//! with `original`, `text.json` and `parts/`; `orgs/{org}/files/{file}/` for an organization
//! file).
//!
//! Backends: a local folder (the embedded default) or S3-compatible object storage
//! (`s3://BUCKET/PREFIX`, for a cluster). Large writes go up in parts (S3 multipart uploads).

use std::path::Path as FsPath;
use std::sync::Arc;

pub use bytes::Bytes;
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
    #[error("blob storage settings: {0}")]
    Config(String),
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

/// A folder of Kiln's blob layout, and the blobs it holds. Every blob path Kiln writes is
/// made here:
///
/// ```text
/// orgs/{org}/stores/{store}/                  a store (deleting it deletes the store's blobs)
/// orgs/{org}/stores/{store}/files/{file}/     a store's file (or a signed upload into a store)
/// orgs/{org}/files/{file}/                    an organization file (or a signed upload to it)
///     original                                the file as uploaded
///     text.json                               its extracted text (a store's file only)
///     parts/{offset}-{id}                     a resumable upload's pieces, until registered
/// index-snapshots/                            a cluster's index snapshots (kiln-replica)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder(Path);

impl Folder {
    /// A store's folder.
    pub fn store(organization_id: &str, store_id: &str) -> Folder {
        Folder(Path::from(format!(
            "orgs/{organization_id}/stores/{store_id}"
        )))
    }

    /// A store's file's folder.
    pub fn store_file(organization_id: &str, store_id: &str, file_id: &str) -> Folder {
        Folder(Path::from(format!(
            "orgs/{organization_id}/stores/{store_id}/files/{file_id}"
        )))
    }

    /// An organization file's folder (an organization upload: no store).
    pub fn org_file(organization_id: &str, file_id: &str) -> Folder {
        Folder(Path::from(format!(
            "orgs/{organization_id}/files/{file_id}"
        )))
    }

    /// A signed-URL upload's folder: its file's folder in its store, or (no store: an
    /// organization upload) the organization file's.
    pub fn upload(organization_id: &str, store_id: &str, upload_id: &str) -> Folder {
        if store_id.is_empty() {
            Folder::org_file(organization_id, upload_id)
        } else {
            Folder::store_file(organization_id, store_id, upload_id)
        }
    }

    /// Where cluster nodes keep snapshots of their index (`kiln-replica`'s layout).
    pub fn index_snapshots() -> Path {
        Path::from("index-snapshots")
    }

    /// The folder itself, as a prefix (to list or delete everything in it).
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The file as uploaded.
    pub fn original(&self) -> Path {
        self.0.clone().join("original")
    }

    /// The extracted text.
    pub fn text(&self) -> Path {
        self.0.clone().join("text.json")
    }

    /// A resumable upload's pieces.
    pub fn parts(&self) -> Path {
        self.0.clone().join("parts")
    }

    /// The piece of a resumable upload that starts at byte `offset` (`id` keeps a resent
    /// piece apart from the one it replaces); names sort by offset.
    pub fn part(&self, offset: u64, id: &str) -> Path {
        self.parts().join(format!("{offset:016}-{id}"))
    }
}

impl AsRef<Path> for Folder {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

const PROBE: &str = "_kiln/probe";

/// Where S3-compatible object storage is and how to sign in; a setting left `None` comes from
/// the usual AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
}

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

    /// Blobs in S3-compatible object storage, under the URL's prefix.
    pub async fn open_s3(options: &S3Options) -> Result<Blobs> {
        use object_store::aws::AmazonS3Builder;
        let rest = options
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| BlobError::Config(format!("not an s3:// URL: {}", options.url)))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobError::Config(format!("no bucket in {}", options.url)));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if builder
            .get_config_value(&object_store::aws::AmazonS3ConfigKey::Region)
            .is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(endpoint) = &options.endpoint {
            // Servers other than AWS take the bucket in the path.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| endpoint.starts_with(p));
            if loopback {
                builder = builder.with_allow_http(true);
            }
        }
        if let Some(allow) = options.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let s3 = builder.build()?;
        // `with_url` would drop the prefix (object_store 0.14): wrap the store instead.
        let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                s3,
                prefix.trim_matches('/'),
            ))
        };
        Self::from_store(store).await
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

    /// Starts a streamed write: at most one part (5 MiB) is held in memory at a time. A blob
    /// that ends within one part is written with a single put when finished (one request to
    /// S3, one blocking file operation locally, instead of a multipart upload's three); a
    /// larger one goes up in parts as it comes.
    pub async fn writer(&self, path: &Path) -> Result<BlobWriter> {
        Ok(BlobWriter {
            store: self.store.clone(),
            path: path.clone(),
            writing: Writing::Held(Vec::new()),
        })
    }

    /// Deletes every blob under `prefix`; returns how many were deleted. Blobs that vanish
    /// meanwhile (another deleter, a concurrent cleanup of empty folders) count as deleted.
    /// Deletes go in bulk where the store has it (S3 deletes up to 1,000 keys a request).
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<usize> {
        self.delete_prefix_except(prefix, &[]).await
    }

    /// Deletes one blob; one that is not there counts as deleted.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// As [`Blobs::delete_prefix`], leaving the blobs at `keep`.
    pub async fn delete_prefix_except(&self, prefix: &Path, keep: &[Path]) -> Result<usize> {
        let mut deleted = 0;
        // A listing can trip over folders removed under it; list again until clean.
        for _ in 0..5 {
            let listed: Vec<object_store::Result<object_store::ObjectMeta>> =
                self.store.list(Some(prefix)).collect().await;
            let mut tripped = false;
            let mut locations = Vec::with_capacity(listed.len());
            for entry in listed {
                match entry {
                    Ok(meta) if keep.contains(&meta.location) => {}
                    Ok(meta) => locations.push(Ok(meta.location)),
                    Err(object_store::Error::NotFound { .. }) => tripped = true,
                    Err(err) => return Err(err.into()),
                }
            }
            let mut results = self
                .store
                .delete_stream(futures::stream::iter(locations).boxed());
            while let Some(result) = results.next().await {
                match result {
                    Ok(_) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            if !tripped {
                return Ok(deleted);
            }
        }
        Ok(deleted)
    }

    /// Copies every blob into `target`, each streamed; returns the blobs and bytes copied.
    pub async fn copy_to(&self, target: &Blobs) -> Result<(u64, u64)> {
        let (mut blobs, mut bytes) = (0, 0);
        let mut listed = self.store.list(None);
        while let Some(meta) = listed.try_next().await? {
            let mut reader = self.get_stream(&meta.location).await?;
            let mut writer = target.writer(&meta.location).await?;
            while let Some(piece) = reader.try_next().await? {
                bytes += piece.len() as u64;
                writer.write(&piece).await?;
            }
            writer.finish().await?;
            blobs += 1;
        }
        Ok((blobs, bytes))
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

/// The size of a multipart upload's parts, and the most a [`BlobWriter`] holds in memory.
const PART_BYTES: usize = 5 * 1024 * 1024;

/// A blob being written; it appears only when finished.
pub struct BlobWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    writing: Writing,
}

enum Writing {
    /// Everything written so far, while it fits in one part.
    Held(Vec<u8>),
    /// A multipart upload, once the blob outgrew one part.
    Parts(object_store::WriteMultipart),
}

impl BlobWriter {
    /// Writes bytes, waiting when too many parts are in flight.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.writing {
            Writing::Held(held) if held.len() + bytes.len() <= PART_BYTES => {
                held.extend_from_slice(bytes);
            }
            Writing::Held(held) => {
                let upload = self.store.put_multipart(&self.path).await?;
                let mut parts =
                    object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                parts.write(held);
                parts.write(bytes);
                self.writing = Writing::Parts(parts);
            }
            Writing::Parts(parts) => {
                parts.wait_for_capacity(8).await?;
                parts.write(bytes);
            }
        }
        Ok(())
    }

    pub async fn finish(self) -> Result<()> {
        match self.writing {
            Writing::Held(held) => {
                self.store
                    .put(&self.path, PutPayload::from(Bytes::from(held)))
                    .await?;
            }
            Writing::Parts(parts) => {
                parts.finish().await?;
            }
        }
        Ok(())
    }

    /// Abandons the write; nothing appears.
    pub async fn abort(self) {
        if let Writing::Parts(parts) = self.writing {
            let _ = parts.abort().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test S3 server (`KILN_TEST_S3`: endpoint, bucket, key, secret, set by the test
    /// command) under a prefix of its own.
    fn test_s3() -> Option<S3Options> {
        let spec = std::env::var("KILN_TEST_S3").ok()?;
        let parts: Vec<&str> = spec.split(',').collect();
        let [endpoint, bucket, key, secret] = parts[..] else {
            panic!("KILN_TEST_S3 is endpoint,bucket,key,secret: {spec}");
        };
        Some(S3Options {
            url: format!("s3://{bucket}/unit-{}", kiln_core::IdKind::File.generate()),
            endpoint: Some(endpoint.into()),
            region: None,
            access_key_id: Some(key.into()),
            secret_access_key: Some(secret.into()),
            allow_http: None,
        })
    }

    /// The backends to test: a local folder, and the test S3 server when there is one.
    async fn backends() -> Vec<(tempfile::TempDir, Blobs)> {
        let dir = tempfile::tempdir().unwrap();
        let local = Blobs::open_local(dir.path()).await.unwrap();
        let mut out = vec![(dir, local)];
        match test_s3() {
            Some(options) => out.push((
                tempfile::tempdir().unwrap(),
                Blobs::open_s3(&options).await.unwrap(),
            )),
            None => kiln_testkit::skipped("kiln-blobs tests on S3", "KILN_TEST_S3 is not set"),
        }
        out
    }

    #[tokio::test]
    async fn put_get_and_delete_a_prefix() {
        for (_dir, blobs) in backends().await {
            put_get_and_delete_a_prefix_in(blobs).await;
        }
    }

    #[tokio::test]
    async fn an_s3_url_needs_a_bucket_and_a_large_write_goes_up_in_parts() {
        for url in ["file:///x", "s3://"] {
            let options = S3Options {
                url: url.into(),
                ..S3Options::default()
            };
            assert!(matches!(
                Blobs::open_s3(&options).await,
                Err(BlobError::Config(_))
            ));
        }
        let Some(options) = test_s3() else {
            kiln_testkit::skipped("kiln-blobs S3 multipart test", "KILN_TEST_S3 is not set");
            return;
        };
        let blobs = Blobs::open_s3(&options).await.unwrap();
        // 12 MiB in 64 KiB writes: more than two of the writer's 5 MiB parts.
        let path = Path::from("big/original");
        let mut writer = blobs.writer(&path).await.unwrap();
        for i in 0..192u32 {
            writer.write(&[(i % 251) as u8; 65536]).await.unwrap();
        }
        writer.finish().await.unwrap();
        let back = blobs.get(&path).await.unwrap();
        assert_eq!(back.len(), 12 << 20);
        assert!(
            back.chunks(65536)
                .enumerate()
                .all(|(i, c)| c[0] == (i % 251) as u8)
        );
        assert_eq!(blobs.delete_prefix(&Path::from("big")).await.unwrap(), 1);
    }

    async fn put_get_and_delete_a_prefix_in(blobs: Blobs) {
        blobs.ping().await.unwrap();
        let a = Folder::store_file("org_a", "vs_a", "file_1").original();
        let b = Folder::store_file("org_a", "vs_a", "file_2").original();
        let other = Folder::store_file("org_a", "vs_b", "file_3").original();
        for p in [&a, &b, &other] {
            blobs.put(p, Bytes::from_static(b"hello")).await.unwrap();
        }
        assert_eq!(blobs.get(&a).await.unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(
            blobs
                .delete_prefix(Folder::store("org_a", "vs_a").path())
                .await
                .unwrap(),
            2
        );
        assert!(matches!(blobs.get(&a).await, Err(BlobError::NotFound(_))));
        assert!(
            blobs
                .list(Folder::store("org_a", "vs_a").path())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(blobs.get(&other).await.unwrap().len(), 5);

        let streamed = Folder::store_file("org_a", "vs_c", "file_4").original();
        let mut writer = blobs.writer(&streamed).await.unwrap();
        for _ in 0..3 {
            writer.write(&[7u8; 1000]).await.unwrap();
        }
        writer.finish().await.unwrap();
        assert_eq!(blobs.get(&streamed).await.unwrap().len(), 3000);
        let aborted = Folder::store_file("org_a", "vs_c", "file_5").original();
        let mut writer = blobs.writer(&aborted).await.unwrap();
        writer.write(b"partial").await.unwrap();
        writer.abort().await;
        assert!(matches!(
            blobs.get(&aborted).await,
            Err(BlobError::NotFound(_))
        ));

        // A write that crosses the first part's end: what was held goes up first, in order.
        let crossing = Folder::store_file("org_a", "vs_c", "file_6").original();
        let mut writer = blobs.writer(&crossing).await.unwrap();
        let (head, tail) = (vec![1u8; PART_BYTES - 10], vec![2u8; 100]);
        writer.write(&head).await.unwrap();
        writer.write(&tail).await.unwrap();
        writer.write(b"end").await.unwrap();
        writer.finish().await.unwrap();
        let back = blobs.get(&crossing).await.unwrap();
        assert_eq!(back.len(), PART_BYTES + 93);
        assert_eq!(&back[..PART_BYTES - 10], &head[..]);
        assert_eq!(&back[PART_BYTES - 10..PART_BYTES + 90], &tail[..]);
        assert_eq!(&back[PART_BYTES + 90..], b"end");
        // And one abandoned after it crossed leaves nothing either.
        let abandoned = Folder::store_file("org_a", "vs_c", "file_7").original();
        let mut writer = blobs.writer(&abandoned).await.unwrap();
        writer.write(&head).await.unwrap();
        writer.write(&tail).await.unwrap();
        writer.abort().await;
        assert!(matches!(
            blobs.get(&abandoned).await,
            Err(BlobError::NotFound(_))
        ));
        assert_eq!(
            blobs
                .delete_prefix(Folder::store("org_a", "vs_c").path())
                .await
                .unwrap(),
            2
        );
    }
}
