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
use kiln_embed::LocalModel;
use kiln_embed::measure::{matrix_peak_gflops, useful_flops};

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
    /// Write this run's vectors here (one JSON array per line).
    #[arg(long)]
    pub save_vectors: Option<PathBuf>,
}

fn read_vectors(path: &PathBuf) -> anyhow::Result<Vec<Vec<f32>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

pub async fn run(options: &EmbedBenchOptions, settings: &Config) -> anyhow::Result<()> {
    let documents = load_corpus(&options.corpus, options.texts)?;
    anyhow::ensure!(
        !documents.is_empty(),
        "no texts in {}",
        options.corpus.display()
    );
    let texts: Vec<String> = documents.into_iter().map(|(_, text)| text).collect();
    let dir = match &settings.embedding.model_dir {
        Some(dir) => dir.clone(),
        None => kiln_embed::fetch::ensure(&settings.models_dir())?,
    };
    let model = Arc::new(
        LocalModel::load(&dir)
            .with_context(|| format!("cannot load the model from {}", dir.display()))?
            .with_batch_size(settings.embedding.batch_size),
    );
    // Tokens the model sees per text: truncated at its limit, special tokens included.
    let tokens: Vec<usize> = texts
        .iter()
        .map(|t| {
            let n = model
                .tokenizer()
                .encode(t.as_str(), true)
                .map_or(0, |e| e.len());
            n.min(kiln_embed::local::MAX_TOKENS)
        })
        .collect();
    let token_sum: usize = tokens.iter().sum();
    // What the passes compute when batches are padded to their longest text, in the order
    // the texts come (as a lane gets them).
    let padded: usize = tokens
        .chunks(model.batch_size())
        .map(|batch| batch.len() * batch.iter().max().copied().unwrap_or(0))
        .sum();
    let useful: f64 = tokens.iter().map(|&n| useful_flops(n)).sum();
    let lanes = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peak = tokio::task::spawn_blocking(move || matrix_peak_gflops(lanes)).await??;

    let embedder = kiln_embed::LocalEmbedder::with_lanes(model.clone(), lanes);
    // One warm-up pass, then the measured run through the lanes, as the pipeline sends them.
    kiln_embed::Embedder::embed(&embedder, &texts[..texts.len().min(16)]).await?;
    let started = Instant::now();
    let vectors = kiln_embed::Embedder::embed(&embedder, &texts).await?;
    let secs = started.elapsed().as_secs_f64();

    let cosines = match &options.reference {
        Some(path) => {
            let reference = read_vectors(path)?;
            anyhow::ensure!(
                reference.len() >= vectors.len(),
                "{} holds {} vectors, this run made {}",
                path.display(),
                reference.len(),
                vectors.len()
            );
            let mut c: Vec<f32> = vectors
                .iter()
                .zip(&reference)
                .map(|(a, b)| kiln_embed::cosine(a, b))
                .collect();
            c.sort_by(f32::total_cmp);
            Some((c.iter().sum::<f32>() / c.len() as f32, c[0]))
        }
        None => None,
    };
    if let Some(path) = &options.save_vectors {
        let lines: Vec<String> = vectors
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(path, lines.join("\n") + "\n")?;
    }

    let gflops = useful / secs / 1e9;
    println!(
        "texts              {} (SciFact documents; {token_sum} tokens, {:.0} per text)",
        texts.len(),
        token_sum as f64 / texts.len() as f64
    );
    println!(
        "padding            {:.1} % of the tokens in passes of {} are padding",
        100.0 * (padded - token_sum) as f64 / padded.max(1) as f64,
        model.batch_size()
    );
    println!(
        "matrix peak        {peak:.1} GFLOP/s (f32 1024³ products, {lanes} at once, one thread each)"
    );
    println!("flops per text     2 · 10.62 M · n + 24 · 384 · n² (n tokens; padding not counted)");
    println!(
        "{:<10} {:>8} {:>10} {:>9} {:>8} {:>16}",
        "precision", "texts/s", "tokens/s", "GFLOP/s", "of peak", "cosine mean/min"
    );
    let cosine = cosines.map_or("(no --reference)".to_string(), |(mean, min)| {
        format!("{mean:.4} / {min:.4}")
    });
    println!(
        "{:<10} {:>8.1} {:>10.0} {:>9.1} {:>7.0} % {:>16}",
        "f32",
        texts.len() as f64 / secs,
        token_sum as f64 / secs,
        gflops,
        100.0 * gflops / peak,
        cosine
    );
    println!(
        "(batch {} texts, {lanes} lanes; {:.1} s)",
        model.batch_size(),
        secs
    );
    Ok(())
}
