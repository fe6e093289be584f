//! `kiln bench embed`: the embedding model's raw speed on SciFact texts, through the lanes the
//! pipeline uses: texts/s, tokens/s, useful GFLOP/s and their share of this machine's matrix
//! peak, and each vector's cosine to the reference f32 vectors.
//!
//! The formula and the peak: `kiln_embed::measure`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use kiln_core::config::Config;
use kiln_embed::measure::{matrix_peak_gflops, useful_flops};
use kiln_embed::{Embedder, LocalModel};

use super::load_corpus;

#[derive(Debug, clap::Args)]
pub struct EmbedBenchOptions {
    /// A BEIR corpus (.jsonl or .jsonl.gz with _id, title, text).
    #[arg(
        long,
        default_value = "../shared/evaldata/retrieval/scifact/corpus.jsonl.gz"
    )]
    pub corpus: PathBuf,
    /// How many texts (documents: title and abstract).
    #[arg(long, default_value_t = 1000)]
    pub texts: usize,
    /// Vectors to compare against (one JSON array per line, as this command writes with
    /// --save-vectors): the cosine column then compares with them.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Write the first row's vectors here (one JSON array per line).
    #[arg(long)]
    pub save_vectors: Option<PathBuf>,
    #[command(flatten)]
    pub chroma: super::chroma::ChromaOptions,
    /// The rows, in order; the cosine column compares each with the first (or --reference).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [EngineChoice::CandleF32, EngineChoice::OnnxF32, EngineChoice::OnnxInt8])]
    pub engines: Vec<EngineChoice>,
}

fn read_vectors(path: &PathBuf) -> anyhow::Result<Vec<Vec<f32>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// What runs the model in one row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// candle, f32: today's reference vectors.
    CandleF32,
    /// ONNX Runtime on the graph built from the same weights, f32.
    OnnxF32,
    /// ONNX Runtime, 8-bit weights per output channel, activations quantised per pass.
    OnnxInt8,
    /// The configured OpenAI-compatible provider (`embedding.openai`: its URL, model, batch
    /// size and requests in flight), e.g. a server started by `scripts/openai-server-bench.sh`.
    Openai,
}

impl EngineChoice {
    fn label(self) -> &'static str {
        match self {
            EngineChoice::CandleF32 => "candle f32",
            EngineChoice::OnnxF32 => "onnx f32",
            EngineChoice::OnnxInt8 => "onnx int8",
            EngineChoice::Openai => "openai http",
        }
    }
}

fn load(
    engine: EngineChoice,
    dir: &std::path::Path,
    settings: &Config,
    lanes: usize,
) -> anyhow::Result<LocalModel> {
    let weights = match engine {
        EngineChoice::CandleF32 => return Ok(LocalModel::load(dir)?),
        EngineChoice::Openai => {
            anyhow::bail!("the OpenAI-compatible provider is not a local model")
        }
        EngineChoice::OnnxF32 => kiln_embed::onnx::Weights::F32,
        EngineChoice::OnnxInt8 => {
            kiln_embed::onnx::Weights::Int8(kiln_embed::onnx::Int8Kernel::for_this_cpu())
        }
    };
    let runtime = kiln_embed::onnx::ensure_runtime(&settings.models_dir())?;
    Ok(LocalModel::load_onnx(dir, &runtime, weights, lanes)?)
}

/// What embeds one row: a local model on the lanes the pipeline uses, or the provider.
async fn embedder(
    engine: EngineChoice,
    dir: &std::path::Path,
    settings: &Config,
    lanes: usize,
) -> anyhow::Result<Box<dyn Embedder>> {
    if engine == EngineChoice::Openai {
        let provider = kiln_embed::HttpEmbedder::new(settings.embedding.openai.clone())?;
        return Ok(Box::new(provider));
    }
    let (dir, settings) = (dir.to_path_buf(), settings.clone());
    let batch_size = settings.embedding.batch_size.max(1);
    let model = tokio::task::spawn_blocking(move || load(engine, &dir, &settings, lanes))
        .await?
        .with_context(|| format!("cannot load the model for {}", engine.label()))?
        .with_batch_size(batch_size);
    Ok(Box::new(kiln_embed::LocalEmbedder::with_lanes(
        Arc::new(model),
        lanes,
    )))
}

/// One row: the vectors and the seconds the measured run took.
async fn measure(
    embedder: &dyn Embedder,
    texts: &[String],
) -> anyhow::Result<(Vec<Vec<f32>>, f64)> {
    // One warm-up request, then the measured run, as the pipeline sends them.
    embedder.embed(&texts[..texts.len().min(16)]).await?;
    let started = Instant::now();
    let vectors = embedder.embed(texts).await?;
    Ok((vectors, started.elapsed().as_secs_f64()))
}

/// Mean and least cosine of `vectors` to `reference`, pairwise.
fn cosines(vectors: &[Vec<f32>], reference: &[Vec<f32>]) -> (f32, f32) {
    let c: Vec<f32> = vectors
        .iter()
        .zip(reference)
        .map(|(a, b)| kiln_embed::cosine(a, b))
        .collect();
    let min = c.iter().copied().fold(f32::INFINITY, f32::min);
    (c.iter().sum::<f32>() / c.len().max(1) as f32, min)
}

pub async fn run(options: &EmbedBenchOptions, settings: &Config) -> anyhow::Result<()> {
    let documents = load_corpus(&options.corpus, options.texts)?;
    anyhow::ensure!(
        !documents.is_empty(),
        "no texts in {}",
        options.corpus.display()
    );
    let texts: Vec<String> = documents.into_iter().map(|(_, text)| text).collect();
    let dir = crate::server::local_model_dir(settings)?;
    let lanes = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch_size = settings.embedding.batch_size.max(1);
    let counter = LocalModel::load(&dir)
        .with_context(|| format!("cannot load the model from {}", dir.display()))?;
    // Tokens the model sees per text: truncated at its limit, special tokens included.
    let tokens: Vec<usize> = texts
        .iter()
        .map(|t| {
            let n = counter
                .tokenizer()
                .encode(t.as_str(), true)
                .map_or(0, |e| e.len());
            n.min(kiln_embed::local::MAX_TOKENS)
        })
        .collect();
    drop(counter);
    let token_sum: usize = tokens.iter().sum();
    // What the passes compute when batches are padded to their longest text, with the texts
    // ordered by length as the lanes split a request.
    let ordered: Vec<usize> = kiln_embed::lane::by_length(&texts)
        .into_iter()
        .map(|i| tokens[i])
        .collect();
    let padded: usize = ordered
        .chunks(batch_size)
        .map(|batch| batch.len() * batch.iter().max().copied().unwrap_or(0))
        .sum();
    let useful: f64 = tokens.iter().map(|&n| useful_flops(n)).sum();
    let peak = tokio::task::spawn_blocking(move || matrix_peak_gflops(lanes)).await??;
    let reference = options.reference.as_ref().map(read_vectors).transpose()?;
    if let Some(reference) = &reference {
        anyhow::ensure!(
            reference.len() >= texts.len(),
            "the reference holds {} vectors, this run makes {}",
            reference.len(),
            texts.len()
        );
    }

    println!(
        "texts              {} (SciFact documents; {token_sum} tokens, {:.0} per text)",
        texts.len(),
        token_sum as f64 / texts.len() as f64
    );
    println!(
        "padding            {:.1} % of the tokens in candle's passes of {batch_size} (ONNX Runtime's passes hold one text each: none)",
        100.0 * (padded - token_sum) as f64 / padded.max(1) as f64,
    );
    println!(
        "matrix peak        {peak:.1} GFLOP/s (f32 1024³ products, {lanes} at once, one thread each)"
    );
    println!("flops per text     2 · 10.62 M · n + 24 · 384 · n² (n tokens; padding not counted)");
    println!(
        "int8 kernel        {}",
        kiln_embed::onnx::Int8Kernel::for_this_cpu().describe()
    );
    println!(
        "cosine             to {}",
        match (&reference, options.engines.first()) {
            (Some(_), _) => "the --reference vectors".to_string(),
            (None, Some(first)) => format!("the first row's ({}) vectors", first.label()),
            (None, None) => "nothing".to_string(),
        }
    );
    println!(
        "{:<11} {:>8} {:>10} {:>9} {:>8} {:>16}",
        "engine", "texts/s", "tokens/s", "GFLOP/s", "of peak", "cosine mean/min"
    );
    let mut first: Option<Vec<Vec<f32>>> = None;
    for &engine in &options.engines {
        let embedder = embedder(engine, &dir, settings, lanes).await?;
        let (vectors, secs) = measure(embedder.as_ref(), &texts)
            .await
            .with_context(|| format!("{} failed", engine.label()))?;
        let against = reference.as_deref().or(first.as_deref());
        let cosine = against.map_or("-".to_string(), |r| {
            let (mean, min) = cosines(&vectors, r);
            format!("{mean:.4} / {min:.4}")
        });
        let gflops = useful / secs / 1e9;
        println!(
            "{:<11} {:>8.1} {:>10.0} {:>9.1} {:>7.0} % {:>16}",
            engine.label(),
            texts.len() as f64 / secs,
            token_sum as f64 / secs,
            gflops,
            100.0 * gflops / peak,
            cosine
        );
        if let Some(path) = &options.save_vectors
            && first.is_none()
        {
            let lines: Vec<String> = vectors
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?;
            std::fs::write(path, lines.join("\n") + "\n")?;
        }
        first.get_or_insert(vectors);
    }
    println!("(batch {batch_size} texts, {lanes} lanes)");
    let chroma = options
        .chroma
        .run(&options.corpus, options.texts, &dir, &settings.models_dir())
        .await;
    println!("chroma      {chroma}");
    Ok(())
}
