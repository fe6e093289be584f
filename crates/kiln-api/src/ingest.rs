//! Receiving an original: its bytes streamed into blob storage while they are hashed, its
//! type detected from its first bytes, its size held to the type's limit. The upload
//! handlers of both families (multipart, base64) call this.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kiln_blobs::BlobPath;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;
use crate::routes::{too_large, unsupported};

// Bytes looked at to detect a file's type.
pub(crate) use kiln_extract::SNIFF_BYTES;

/// An original now in blob storage.
pub(crate) struct Received {
    pub file_type: &'static kiln_extract::FileType,
    pub size: u64,
    pub sha256: String,
}

/// Streams `body` (a file named `name`) to `path`: refused, with nothing left behind, if it is
/// empty, of a type Kiln cannot read, or larger than its type allows or `max_bytes`.
/// `field` names the request field in errors.
pub(crate) async fn receive<S>(
    app: &AppState,
    path: &BlobPath,
    name: &str,
    field: &str,
    max_bytes: u64,
    mut body: S,
) -> Result<Received, ApiError>
where
    S: Stream<Item = Result<Bytes, ApiError>> + Unpin,
{
    // Buffer just enough to detect the type, then stream the rest.
    let mut head = Vec::new();
    let mut pending: Vec<Bytes> = Vec::new();
    while head.len() < SNIFF_BYTES {
        match body.next().await.transpose()? {
            Some(chunk) => {
                head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
                pending.push(chunk);
            }
            None => break,
        }
    }
    if pending.iter().all(|c| c.is_empty()) {
        return Err(ApiError::field(
            field,
            "is empty (0 bytes); there is nothing to index",
        ));
    }
    let file_type = kiln_extract::detect(name, &head).map_err(unsupported)?;
    let limit = file_type.max_size_bytes.min(max_bytes);
    let mut writer = app.blobs.writer(path).await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut rest = futures::stream::iter(pending.into_iter().map(Ok)).chain(body);
    let streamed: Result<(), ApiError> = async {
        while let Some(chunk) = rest.next().await.transpose()? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(
                    limit,
                    &format!("A .{} file", file_type.extension),
                ));
            }
            hasher.update(&chunk);
            writer.write(&chunk).await?;
        }
        Ok(())
    }
    .await;
    match streamed {
        Ok(()) => writer.finish().await?,
        Err(err) => {
            writer.abort().await;
            return Err(err);
        }
    }
    Ok(Received {
        file_type,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}
