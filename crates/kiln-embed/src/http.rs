//! An OpenAI-compatible embedding provider (`POST {base_url}/embeddings`), for deployments
//! with a GPU server (Ollama, TEI, vLLM, OpenAI). Timeouts, 429 and 5xx are transient (429
//! carries `Retry-After`); other 4xx answers are permanent.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::{EmbedError, Embedder, normalize};

/// The provider's settings are the configuration's own.
pub use kiln_core::config::OpenAiEmbeddingConfig as HttpEmbedderConfig;

pub struct HttpEmbedder {
    config: HttpEmbedderConfig,
    client: reqwest::Client,
    /// One permit per request in flight (`concurrency`).
    in_flight: tokio::sync::Semaphore,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl HttpEmbedder {
    pub fn new(config: HttpEmbedderConfig) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| EmbedError::Permanent(format!("HTTP client: {e}")))?;
        let in_flight = tokio::sync::Semaphore::new(config.concurrency.max(1));
        Ok(HttpEmbedder {
            config,
            client,
            in_flight,
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| EmbedError::Permanent("the embedder is shutting down".into()))?;
        let url = format!("{}/embeddings", self.config.base_url.trim_end_matches('/'));
        let mut request = self
            .client
            .post(&url)
            .json(&serde_json::json!({ "model": self.config.model, "input": texts }));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                EmbedError::Timeout(Duration::from_secs(self.config.timeout_secs))
            } else {
                EmbedError::Unavailable(format!("cannot reach the provider: {e}"))
            }
        })?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(EmbedError::RateLimited { retry_after });
        }
        if status.is_server_error() {
            return Err(EmbedError::Unavailable(format!(
                "the provider answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(EmbedError::Permanent(format!(
                "the provider answered {status}"
            )));
        }
        let body: Response = response.json().await.map_err(|e| {
            if e.is_timeout() {
                EmbedError::Timeout(Duration::from_secs(self.config.timeout_secs))
            } else {
                EmbedError::Permanent(format!("unreadable answer from the provider: {e}"))
            }
        })?;
        if body.data.len() != texts.len() {
            return Err(EmbedError::Permanent(format!(
                "the provider returned {} vectors for {} texts",
                body.data.len(),
                texts.len()
            )));
        }
        let mut items = body.data;
        items.sort_by_key(|item| item.index.unwrap_or(0));
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if item.embedding.len() != self.config.dimensions {
                return Err(EmbedError::Permanent(format!(
                    "the provider returned {} dimensions, expected {}",
                    item.embedding.len(),
                    self.config.dimensions
                )));
            }
            let mut v = item.embedding;
            normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }
}

impl Embedder for HttpEmbedder {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            // The batches side by side (in order), as many at once as the permits allow.
            let mut pending = Vec::new();
            for batch in texts.chunks(self.config.batch_size.max(1)) {
                pending.push(self.embed_batch(batch));
            }
            let batches: Vec<Vec<Vec<f32>>> = futures::stream::iter(pending)
                .buffered(self.config.concurrency.max(1))
                .try_collect()
                .await?;
            Ok(batches.into_iter().flatten().collect())
        })
    }
}
