//! `kiln migrate-to`: moves an embedded data dir (SQLite catalog, blob folder, local index)
//! into a cluster's PostgreSQL catalog and S3 blobs, without embedding anything again: rows
//! are copied as they are, blobs streamed, and the index's chunks and vectors written to the
//! catalog's index log, from which every API node of the cluster builds its index.

use std::sync::Arc;

use anyhow::Context;
use kiln_catalog::Dialect;
use kiln_core::config::Config;
use kiln_index::ChunkIndex;

use crate::server::{ann_options, load_model, open_storage};

/// Chunks written to the catalog per transaction.
const CHUNKS_PER_WRITE: usize = 2_000;

/// What moved.
#[derive(Debug, Default, serde::Serialize)]
pub struct Moved {
    pub rows: Vec<(&'static str, u64)>,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub chunks: u64,
}

/// Moves `source` (an embedded configuration; its server must be stopped) into `target`
/// (the same configuration with the cluster's catalog and blobs), whose catalog must be new.
pub async fn migrate(source: &Config, target: &Config) -> anyhow::Result<Moved> {
    let (from_catalog, from_blobs) = open_storage(source).await?;
    anyhow::ensure!(
        from_catalog.dialect() == Dialect::Sqlite,
        "the source is not an embedded data dir (its catalog is not SQLite)"
    );
    let (to_catalog, to_blobs) = open_storage(target).await?;
    anyhow::ensure!(
        to_catalog.dialect() == Dialect::Postgres,
        "the target catalog must be PostgreSQL (postgres://…)"
    );
    // The index's vectors are as wide as the model makes them.
    let dims = load_model(source).await?.embedder.dimensions();
    let index_dir = source.data_dir.join("index");
    let ann = ann_options(&source.index);
    let index = Arc::new(
        tokio::task::spawn_blocking(move || ChunkIndex::open_with(&index_dir, dims, ann))
            .await?
            .context("cannot open the data dir's index")?,
    );

    let rows = from_catalog
        .copy_to(&to_catalog)
        .await
        .context("copying the catalog")?;
    let (blobs, blob_bytes) = from_blobs
        .copy_to(&to_blobs)
        .await
        .context("copying the blobs")?;
    let exported = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.export())
            .await?
            .context("reading the index")?
    };
    for batch in exported.chunks(CHUNKS_PER_WRITE) {
        to_catalog
            .index_add(batch)
            .await
            .context("writing chunks to the catalog")?;
    }
    from_catalog.close().await;
    to_catalog.close().await;
    Ok(Moved {
        rows,
        blobs,
        blob_bytes,
        chunks: exported.len() as u64,
    })
}
