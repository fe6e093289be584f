//! all-MiniLM-L6-v2 in-process on the CPU: BERT (candle) + mean pooling over the attention
//! mask + L2 normalisation, exactly as sentence-transformers computes it.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use futures::future::BoxFuture;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::fetch::{self, DIMENSIONS, MODEL_NAME};
use crate::{EmbedError, Embedder, normalize};

/// sentence-transformers' `max_seq_length` for this model.
pub const MAX_TOKENS: usize = 256;
/// Batches larger than this get slower on small CPUs (the activations stop fitting in cache).
pub const DEFAULT_BATCH_SIZE: usize = 8;

/// The loaded model. Cheap to share behind an `Arc`.
pub struct LocalModel {
    model: BertModel,
    /// Truncates at 256 tokens and pads to the longest text in a batch.
    batch_tokenizer: Tokenizer,
    /// The same vocabulary without truncation or padding, for measuring chunks.
    tokenizer: Tokenizer,
    batch_size: usize,
}

fn permanent(context: &str) -> impl Fn(Box<dyn std::fmt::Display>) -> EmbedError + '_ {
    move |err| EmbedError::Permanent(format!("{context}: {err}"))
}

impl LocalModel {
    /// Loads the model from a folder holding `model.safetensors`, `tokenizer.json` and
    /// `config.json` with their pinned checksums.
    pub fn load(dir: &Path) -> Result<LocalModel, EmbedError> {
        kiln_background::background_compute_pool();
        fetch::verify(dir).map_err(|e| EmbedError::Permanent(e.to_string()))?;
        let load_err = permanent("cannot load the model");
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| load_err(Box::new(e)))?,
        )
        .map_err(|e| load_err(Box::new(e)))?;
        let weights =
            std::fs::read(dir.join("model.safetensors")).map_err(|e| load_err(Box::new(e)))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| load_err(Box::new(e)))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_err(Box::new(e)))?;

        let mut batch_tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| load_err(Box::new(e)))?;
        let mut tokenizer = batch_tokenizer.clone();
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_err(Box::new(e)))?;
        tokenizer.with_padding(None);
        batch_tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err(Box::new(e)))?;
        batch_tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        Ok(LocalModel {
            model,
            batch_tokenizer,
            tokenizer,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The tokenizer without truncation or padding, for sizing chunks in model tokens.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds texts on the calling thread, in batches.
    pub fn embed_sync<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            let batch: Vec<&str> = batch.iter().map(AsRef::as_ref).collect();
            out.extend(
                self.embed_batch(&batch).map_err(|e| {
                    EmbedError::Permanent(format!("the model failed on a batch: {e}"))
                })?,
            );
        }
        Ok(out)
    }

    fn embed_batch(
        &self,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.batch_tokenizer.encode_batch(texts.to_vec(), true)?;
        let device = Device::Cpu;
        let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)
        };
        let ids = rows(|e| e.get_ids())?;
        let mask = rows(|e| e.get_attention_mask())?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let mut vectors: Vec<Vec<f32>> = mean.to_vec2()?;
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

/// The local model as an [`Embedder`]: batches run on the embedding lanes, one
/// background-priority thread per core off the async threads (see [`crate::lane`]).
#[derive(Clone)]
pub struct LocalEmbedder {
    model: Arc<LocalModel>,
    lane: crate::lane::Lane,
}

impl LocalEmbedder {
    /// An embedder with one lane per core.
    pub fn new(model: Arc<LocalModel>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_lanes(model, cores)
    }

    /// An embedder running `lanes` forward passes at once (at least one).
    pub fn with_lanes(model: Arc<LocalModel>, lanes: usize) -> Self {
        LocalEmbedder {
            lane: crate::lane::Lane::start(model.clone(), lanes),
            model,
        }
    }

    /// The most forward passes this embedder has run at once.
    pub fn peak_passes(&self) -> u64 {
        self.lane.peak_passes()
    }

    pub fn model_handle(&self) -> &Arc<LocalModel> {
        &self.model
    }
}

impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        MODEL_NAME
    }

    fn dimensions(&self) -> usize {
        DIMENSIONS
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(self.lane.embed(texts.to_vec()))
    }
}
