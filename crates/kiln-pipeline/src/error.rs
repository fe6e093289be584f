//! What stops the pipeline's own work (not a file's: a file's failure is recorded on the
//! file with its code and message). A job that ends with one of these is handed back to the
//! queue and tried again later.

/// An infrastructure failure while running a job.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("catalog: {0}")]
    Catalog(#[from] kiln_catalog::CatalogError),
    #[error("blob storage: {0}")]
    Blobs(#[from] kiln_blobs::BlobError),
    #[error("index: {0}")]
    Index(#[from] kiln_index::IndexError),
    #[error(transparent)]
    Task(#[from] kiln_background::TaskError),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
