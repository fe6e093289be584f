//! Where the pipeline writes chunks: straight into the local index (the embedded backend), or
//! into the catalog's durable index log (a cluster), which every API node's replica replays.
//! Workers of a cluster hold no index at all.

use std::sync::Arc;

use kiln_blobs::{Blobs, Folder};
use kiln_catalog::{Catalog, IndexChange};
use kiln_index::{ChunkIndex, ChunkRecord, Expected};

use crate::{Result, blocking};

#[derive(Clone)]
pub enum IndexSink {
    /// This process's own index.
    Local(Arc<ChunkIndex>),
    /// The catalog's index log (PostgreSQL), and the object storage holding the API nodes'
    /// index snapshots.
    Log { catalog: Catalog, blobs: Blobs },
}

/// A file's chunks on their way to the index (`IndexSink::expect`).
pub struct Expecting(Option<Expected>);

impl IndexSink {
    /// Announces that a file's chunks are on their way (`add` takes what this returns):
    /// the local index spaces its commits only while files are on their way to it, so the
    /// last files of a stream are committed as soon as they arrive. Dropping it without
    /// adding (a file that failed or stopped) gives the announcement up.
    pub fn expect(&self) -> Expecting {
        Expecting(match self {
            IndexSink::Local(index) => Some(index.expect()),
            IndexSink::Log { .. } => None,
        })
    }

    /// Writes chunks; when this returns they are durable, and searchable once their
    /// generation is active (on a cluster, on each node as soon as its replica has caught up,
    /// which every search waits for).
    pub async fn add(&self, chunks: Vec<ChunkRecord>, expecting: Expecting) -> Result<()> {
        match self {
            IndexSink::Local(index) => {
                let index = index.clone();
                // On a thread of its own, not the work pool: an add waits for the adds of
                // other files to be committed with it (`ChunkIndex::add`), and would hold a
                // pool thread meanwhile.
                kiln_background::background_thread("kiln-index", move || match expecting.0 {
                    Some(expected) => expected.deliver(&chunks),
                    None => index.add(&chunks),
                })
                .await??;
                Ok(())
            }
            IndexSink::Log { catalog, .. } => {
                catalog.index_add(&chunks).await?;
                Ok(())
            }
        }
    }

    /// Removes a file's generation, a whole file, or a whole store.
    pub async fn delete(&self, change: IndexChange) -> Result<()> {
        match self {
            IndexSink::Local(index) => {
                let index = index.clone();
                blocking(move || match change {
                    IndexChange::Add { .. } => Ok(()),
                    IndexChange::DeleteGeneration {
                        file_id,
                        generation,
                        ..
                    } => index.delete_generation(&file_id, generation),
                    IndexChange::DeleteFile { file_id, .. } => index.delete_file(&file_id),
                    IndexChange::DeleteStore { store_id } => index.delete_store(&store_id),
                })
                .await
            }
            IndexSink::Log { catalog, blobs } => {
                let purge = matches!(
                    change,
                    IndexChange::DeleteFile { .. } | IndexChange::DeleteStore { .. }
                );
                catalog.index_delete(change).await?;
                if purge {
                    // Snapshots made before this deletion hold what it removed: none may
                    // stay (`kiln-replica`'s snapshot module; a writer publishing one meanwhile
                    // sees the deletion in the log and removes its own).
                    blobs.delete_prefix(&Folder::index_snapshots()).await?;
                }
                Ok(())
            }
        }
    }
}
