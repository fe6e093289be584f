//! all-MiniLM-L6-v2 in-process on the CPU: BERT (candle) + mean pooling over the attention
//! mask + L2 normalisation, exactly as sentence-transformers computes it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use futures::future::BoxFuture;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::fetch::{self, DIMENSIONS, MODEL_NAME};
use crate::onnx::{Int8Kernel, OnnxModel, Shape3, Weights};
use crate::{EmbedError, Embedder, normalize};
use kiln_core::config::Precision;

/// sentence-transformers' `max_seq_length` for this model.
pub const MAX_TOKENS: usize = 256;
/// Batches larger than this get slower on small CPUs (the activations stop fitting in cache).
pub const DEFAULT_BATCH_SIZE: usize = 8;

/// [`LocalModel::name`] for 8-bit weights.
pub const INT8_NAME: &str = "all-MiniLM-L6-v2@int8";

/// What runs the forward pass.
enum Engine {
    /// candle, f32: the reference.
    Candle(Box<BertModel>),
    /// ONNX Runtime, on a graph built from the same weights (see [`crate::onnx`]).
    Onnx(OnnxModel, Weights),
}

/// The loaded model. Cheap to share behind an `Arc`.
pub struct LocalModel {
    engine: Engine,
    /// Truncates at 256 tokens and pads to the longest text in a batch.
    batch_tokenizer: Tokenizer,
    /// The same vocabulary without truncation or padding, for measuring chunks.
    tokenizer: Tokenizer,
    batch_size: usize,
    /// Texts measured by [`LocalModel::count_tokens`], with their tokens, until a pass takes
    /// them (see [`Measured`]).
    measured: Measured,
    /// What the batch tokenizer puts around a text's tokens: `[CLS]` before, `[SEP]` after.
    specials: (u32, u32),
}

/// The tokens of texts the chunker measured, kept for the pass that embeds the same text: a
/// chunk is tokenized once, not once to be sized and again to be embedded (about 1 ms of CPU
/// for a chunk of 250 tokens, on the threads the model needs). Bounded: the oldest go first,
/// so texts measured but never embedded (pieces the chunker merged) cost nothing for long.
#[derive(Default)]
struct Measured(Mutex<MeasuredTexts>);

#[derive(Default)]
struct MeasuredTexts {
    tokens: HashMap<Arc<str>, Vec<u32>>,
    order: VecDeque<Arc<str>>,
}

/// Bytes of text [`LocalModel::token_spans`] tokenizes at a time (about 15,000 tokens).
pub const SPAN_BLOCK: usize = 64 * 1024;

/// Where the block of `text` that starts at `start` ends: just after the last ASCII
/// whitespace within [`SPAN_BLOCK`] bytes, or after the first one beyond if that stretch has
/// none, or at the text's end. Only ASCII whitespace: the tokenizer's normalizer deletes some
/// characters Unicode calls whitespace (control characters such as U+0085), which may join
/// the words around them.
fn span_block_end(text: &str, start: usize) -> usize {
    let rest = &text[start..];
    if rest.len() <= SPAN_BLOCK {
        return text.len();
    }
    let blank = |c: char| matches!(c, ' ' | '\n' | '\t' | '\r');
    let mut limit = SPAN_BLOCK;
    while !rest.is_char_boundary(limit) {
        limit -= 1;
    }
    let cut = rest[..limit]
        .rfind(blank)
        .or_else(|| rest[limit..].find(blank).map(|at| limit + at));
    // The whitespace is one byte: the block ends after it.
    cut.map_or(text.len(), |at| start + at + 1)
}

/// Texts [`Measured`] holds at most (about 2.5 KB each for a chunk of 250 tokens; a text
/// taken keeps its place in the order until it comes round).
const MEASURED_TEXTS: usize = 2048;

impl Measured {
    fn keep(&self, text: &str, ids: Vec<u32>) {
        let mut texts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if texts.tokens.contains_key(text) {
            return;
        }
        while texts.order.len() >= MEASURED_TEXTS {
            if let Some(oldest) = texts.order.pop_front() {
                texts.tokens.remove(&oldest);
            }
        }
        let text: Arc<str> = Arc::from(text);
        texts.order.push_back(text.clone());
        texts.tokens.insert(text, ids);
    }

    fn take(&self, text: &str) -> Option<Vec<u32>> {
        let mut texts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        texts.tokens.remove(text)
    }
}

fn permanent(context: &str) -> impl Fn(Box<dyn std::fmt::Display>) -> EmbedError + '_ {
    move |err| EmbedError::Permanent(format!("{context}: {err}"))
}

impl LocalModel {
    /// Loads the model from a folder holding `model.safetensors`, `tokenizer.json` and
    /// `config.json` with their pinned checksums.
    pub fn load(dir: &Path) -> Result<LocalModel, EmbedError> {
        kiln_background::background_compute_pool();
        let (config, weights) = read_files(dir)?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| permanent("cannot load the model")(Box::new(e)))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| permanent("cannot load the model")(Box::new(e)))?;
        LocalModel::with_engine(dir, Engine::Candle(Box::new(model)))
    }

    /// Loads the same files into ONNX Runtime (the library at `runtime`), with `weights` for
    /// the matrix products and `sessions` sessions (a pass holds one; one per lane at least).
    pub fn load_onnx(
        dir: &Path,
        runtime: &Path,
        weights: Weights,
        sessions: usize,
    ) -> Result<LocalModel, EmbedError> {
        let (shape, bytes) = read_shape(dir)?;
        let model = OnnxModel::load(runtime, &bytes, shape, weights, sessions)?;
        LocalModel::with_engine(dir, Engine::Onnx(model, weights))
    }

    /// Writes the model in `dir` as an f32 ONNX file at `path` (see
    /// [`OnnxModel::export_f32`]), run by the library at `runtime`.
    pub fn export_onnx(dir: &Path, runtime: &Path, path: &Path) -> Result<(), EmbedError> {
        let (shape, bytes) = read_shape(dir)?;
        OnnxModel::export_f32(runtime, &bytes, shape, path)
    }

    fn with_engine(dir: &Path, engine: Engine) -> Result<LocalModel, EmbedError> {
        let load_err = permanent("cannot load the tokenizer");
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
        let framed = batch_tokenizer
            .encode("", true)
            .map_err(|e| load_err(Box::new(e)))?;
        let specials = match framed.get_ids() {
            &[first, last] => (first, last),
            other => {
                return Err(EmbedError::Permanent(format!(
                    "the tokenizer frames a text with {} tokens, not [CLS] and [SEP]",
                    other.len()
                )));
            }
        };
        Ok(LocalModel {
            engine,
            batch_tokenizer,
            tokenizer,
            batch_size: DEFAULT_BATCH_SIZE,
            measured: Measured::default(),
            specials,
        })
    }

    /// Loads the model for `precision`: f32 in candle, int8 in ONNX Runtime (fetched into
    /// `models_dir` when missing), with one session per core and one more, so a search
    /// query's embedding (which skips the lanes' queue) never waits for an ingest pass to
    /// free a session.
    pub fn load_for(
        dir: &Path,
        precision: Precision,
        models_dir: &Path,
    ) -> Result<LocalModel, EmbedError> {
        match precision {
            Precision::F32 => LocalModel::load(dir),
            Precision::Int8 => {
                let runtime = crate::onnx::ensure_runtime(models_dir)
                    .map_err(|e| EmbedError::Permanent(format!("ONNX Runtime: {e}")))?;
                let lanes = std::thread::available_parallelism().map_or(1, |n| n.get());
                LocalModel::load_onnx(
                    dir,
                    &runtime,
                    Weights::Int8(Int8Kernel::for_this_cpu()),
                    lanes + 1,
                )
            }
        }
    }

    /// The name recorded with every vector: the model, and its precision when it is not f32
    /// (so a file embedded at another precision is told apart).
    pub fn name(&self) -> &'static str {
        match &self.engine {
            Engine::Onnx(_, Weights::Int8(_)) => INT8_NAME,
            _ => MODEL_NAME,
        }
    }

    /// What runs the model, e.g. "candle f32" or "ONNX Runtime int8".
    pub fn engine(&self) -> &'static str {
        match &self.engine {
            Engine::Candle(_) => "candle f32",
            Engine::Onnx(_, Weights::F32) => "ONNX Runtime f32",
            Engine::Onnx(_, Weights::Int8(_)) => "ONNX Runtime int8",
        }
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

    /// A text's length in the model's tokens (without truncation or special tokens), for
    /// sizing chunks. The tokens are kept for a while, so a pass that embeds this very text
    /// soon after does not tokenize it again.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.count(text, matches!(self.engine, Engine::Onnx(..)))
    }

    /// The same count as [`LocalModel::count_tokens`], keeping nothing: for texts that no
    /// pass is about to embed, or whose pass must tokenize them as any caller's would (a
    /// benchmark of the model alone).
    pub fn count_tokens_only(&self, text: &str) -> usize {
        self.count(text, false)
    }

    /// Where each of a text's tokens lies in it (byte ranges, in order; the tokenizing
    /// [`LocalModel::count_tokens`] does, keeping nothing): the chunker sizes the pieces of a
    /// long section from them instead of tokenizing each candidate piece.
    ///
    /// The text is tokenized [`SPAN_BLOCK`] bytes at a time, each block ending at ASCII
    /// whitespace: WordPiece's pre-tokenizer splits words there, so the blocks' tokens are the
    /// whole text's, and the tokenizer's own record of a block (about 100 bytes a token, 0.3
    /// GB for a 3 MB book at once) is dropped before the next; a span keeps 16 bytes.
    pub fn token_spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
        let mut spans = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = span_block_end(text, start);
            let encoding = self.tokenizer.encode(&text[start..end], false).ok()?;
            let offsets = encoding.get_offsets().iter();
            spans.extend(offsets.map(|&(from, to)| (start + from, start + to)));
            start = end;
        }
        Some(spans)
    }

    fn count(&self, text: &str, keep: bool) -> usize {
        let Ok(encoding) = self.tokenizer.encode(text, false) else {
            return text.len() / 4;
        };
        if keep {
            self.measured.keep(text, encoding.get_ids().to_vec());
        }
        encoding.len()
    }

    /// How many measured texts wait for their pass (see [`LocalModel::count_tokens`]).
    pub fn measured_texts(&self) -> usize {
        let texts = self
            .measured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        texts.tokens.len()
    }

    /// The ids a pass feeds the model for `text`: what the batch tokenizer gives (truncated
    /// to [`MAX_TOKENS`], framed by `[CLS]` and `[SEP]`), from the tokens kept by
    /// [`LocalModel::count_tokens`] when it measured this text.
    fn pass_ids(&self, text: &str) -> Result<Vec<i64>, tokenizers::Error> {
        let (first, last) = self.specials;
        if let Some(tokens) = self.measured.take(text) {
            let body = &tokens[..tokens.len().min(MAX_TOKENS - 2)];
            let mut ids = Vec::with_capacity(body.len() + 2);
            ids.push(i64::from(first));
            ids.extend(body.iter().map(|&id| i64::from(id)));
            ids.push(i64::from(last));
            return Ok(ids);
        }
        let encoding = self.batch_tokenizer.encode(text, true)?;
        Ok(encoding.get_ids().iter().map(|&v| i64::from(v)).collect())
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
        let model = match &self.engine {
            Engine::Candle(model) => model,
            // One text per pass: ONNX Runtime's attention runs unmasked (see `crate::onnx`).
            Engine::Onnx(model, _) => {
                return texts
                    .iter()
                    .map(|text| {
                        let ids = self.pass_ids(text)?;
                        let seq = ids.len();
                        let hidden = model.forward(ids)?;
                        Ok(mean_pool(&hidden, &vec![1; seq], seq).remove(0))
                    })
                    .collect();
            }
        };
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
        let hidden = model.forward(&ids, &type_ids, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let mut vectors: Vec<Vec<f32>> = mean.to_vec2()?;
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

/// The model's files: its configuration and the safetensors bytes, checked against their pins.
fn read_files(dir: &Path) -> Result<(Config, Vec<u8>), EmbedError> {
    fetch::verify(dir).map_err(|e| EmbedError::Permanent(e.to_string()))?;
    let load_err = permanent("cannot load the model");
    let config: Config = serde_json::from_slice(
        &std::fs::read(dir.join("config.json")).map_err(|e| load_err(Box::new(e)))?,
    )
    .map_err(|e| load_err(Box::new(e)))?;
    let weights =
        std::fs::read(dir.join("model.safetensors")).map_err(|e| load_err(Box::new(e)))?;
    Ok((config, weights))
}

/// The model's shape (from `config.json`) and its weights' bytes.
pub(crate) fn read_shape(dir: &Path) -> Result<(Shape3, Vec<u8>), EmbedError> {
    let (config, bytes) = read_files(dir)?;
    let shape = Shape3 {
        layers: config.num_hidden_layers,
        hidden: config.hidden_size,
        heads: config.num_attention_heads,
        intermediate: config.intermediate_size,
        layer_norm_eps: config.layer_norm_eps as f32,
    };
    Ok((shape, bytes))
}

/// Mean of each row's token vectors where the mask is 1 (`hidden` is `[rows, seq, dim]`),
/// L2-normalised: sentence-transformers' pooling.
fn mean_pool(hidden: &[f32], mask: &[i64], seq: usize) -> Vec<Vec<f32>> {
    let rows = mask.len() / seq.max(1);
    let dim = hidden.len() / mask.len().max(1);
    (0..rows)
        .map(|r| {
            let mut sum = vec![0.0f32; dim];
            let mut count = 0.0f32;
            for s in 0..seq {
                if mask[r * seq + s] != 0 {
                    count += 1.0;
                    let token = &hidden[(r * seq + s) * dim..(r * seq + s + 1) * dim];
                    sum.iter_mut().zip(token).for_each(|(a, b)| *a += b);
                }
            }
            sum.iter_mut().for_each(|v| *v /= count.max(1e-9));
            normalize(&mut sum);
            sum
        })
        .collect()
}

/// The local model as an [`Embedder`]: batches run on the embedding lanes, one
/// background-priority thread per core off the async threads (see [`crate::lane`]).
#[derive(Clone)]
pub struct LocalEmbedder {
    model: Arc<LocalModel>,
    lane: crate::lane::Lane,
}

impl LocalEmbedder {
    /// An embedder with one lane per core, each bound to its CPU with `pin_lanes` (see
    /// [`LocalEmbedder::lane_cpus`]).
    pub fn new(model: Arc<LocalModel>, pin_lanes: bool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LocalEmbedder {
            lane: crate::lane::Lane::start(model.clone(), cores, pin_lanes),
            model,
        }
    }

    /// An embedder running `lanes` forward passes at once (at least one), on lanes the
    /// scheduler places.
    pub fn with_lanes(model: Arc<LocalModel>, lanes: usize) -> Self {
        LocalEmbedder {
            lane: crate::lane::Lane::start(model.clone(), lanes, false),
            model,
        }
    }

    /// Per lane, the CPU it is bound to: lanes are bound when asked and there is one lane for
    /// each CPU the process may run on (Linux), else `None`.
    pub fn lane_cpus(&self) -> Vec<Option<usize>> {
        self.lane.bound_cpus()
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
        self.model.name()
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
