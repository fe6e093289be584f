//! `kiln bench search`: search speed at scale, over HTTP.
//!
//! Embedding a million chunks with the model would take days on a small machine, so the
//! bench writes chunks straight into a store's index (and their files into the catalog, as
//! completed files, the way the pipeline would): texts recombined from SciFact sentences, and
//! vectors that keep the real distribution — real SciFact chunk embeddings (read from a
//! Kiln data dir that ingested SciFact, e.g. `kiln eval --work-dir`, or embedded here) plus
//! small Gaussian noise, re-normalised. Queries are real SciFact claims, the claims cut to 5
//! words, and passages of 30 and 200 words from SciFact abstracts, each embedded once.
//!
//! Then a server is started on the data dir and measured over HTTP: time to open and answer
//! the first search, QPS at concurrency 1 and 16, p50/p99 latency for semantic, keyword and
//! hybrid searches with the vector supplied (keyword and hybrid for each query length) and
//! for hybrid with text to embed, the approximate
//! search's recall@10 against an exact scan, and the process's RSS while serving.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use kiln_catalog::{Claimed, Completion, Dialect, NewFile, ProcessJob};
use kiln_core::config::Config;
use kiln_index::{ChunkIndex, ChunkRecord, Scope};
use kiln_pipeline::IndexSink;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{load_corpus, peak_rss_mib, percentile};
use crate::client::ApiClient;
use crate::eval::load_queries;
use crate::server::{Server, load_model, open_storage};
use crate::settings::initial_key_path;

/// What `kiln bench search` runs (its command-line arguments).
#[derive(Debug, clap::Args)]
pub struct SearchBenchOptions {
    /// Chunks in the store.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    #[arg(long, default_value_t = 100)]
    pub chunks_per_file: usize,
    /// A Kiln data dir that ingested SciFact (e.g. `kiln eval --work-dir DIR`): its chunk
    /// vectors are the base vectors. Without it, --base-docs documents are embedded.
    #[arg(long)]
    pub vectors_from: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    pub base_docs: usize,
    /// SciFact (corpus and queries).
    #[arg(long, default_value = "../shared/evaldata/retrieval/scifact")]
    pub dataset: PathBuf,
    /// Keep the built store here; a second run with the same --chunks reuses it.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// How many SciFact queries (each run at concurrency 1 and 16).
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Standard deviation of the Gaussian noise per vector component.
    #[arg(long, default_value_t = 0.02)]
    pub noise: f32,
}

/// What a built data dir holds (`bench-search.json`).
#[derive(Serialize, Deserialize, PartialEq)]
struct Built {
    chunks: usize,
    store_id: String,
}

/// xorshift64* with Box–Muller: reproducible data without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

pub async fn run(options: &SearchBenchOptions, settings: &Config) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let data_dir = options
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let config = super::loopback_config(settings, data_dir.clone());
    let model = load_model(&config).await?;

    let marker = data_dir.join("bench-search.json");
    let built: Option<Built> = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|b: &Built| b.chunks == options.chunks);
    let store_id = match built {
        Some(built) => {
            eprintln!("reusing {} chunks in {}", built.chunks, data_dir.display());
            built.store_id
        }
        None => {
            let store_id = build(options, &config, &model).await?;
            std::fs::write(
                &marker,
                serde_json::to_vec(&Built {
                    chunks: options.chunks,
                    store_id: store_id.clone(),
                })?,
            )?;
            store_id
        }
    };

    // Queries: real SciFact claims, the same cut to 5 words, and passages of 30 and 200
    // words from SciFact abstracts; each embedded once here.
    let mut texts: Vec<(String, String)> = load_queries(&options.dataset.join("queries.jsonl"))?
        .into_iter()
        .collect();
    texts.sort();
    texts.truncate(options.queries);
    let query_texts: Vec<String> = texts.into_iter().map(|(_, t)| t).collect();
    let abstracts = load_corpus(&corpus_path(&options.dataset), usize::MAX)?;
    let query_sets: Vec<(String, Vec<String>)> = vec![
        ("claims".to_string(), query_texts.clone()),
        (
            "5 words".to_string(),
            query_texts.iter().map(|q| first_words(q, 5)).collect(),
        ),
        (
            "30 words".to_string(),
            passages(&abstracts, 30, options.queries),
        ),
        (
            "200 words".to_string(),
            passages(&abstracts, 200, options.queries),
        ),
    ];
    let mut set_vectors = Vec::with_capacity(query_sets.len());
    for (_, texts) in &query_sets {
        set_vectors.push(model.embedder.embed(texts).await?);
    }
    let query_vectors = set_vectors[0].clone();

    // Measure over HTTP, sampling RSS meanwhile.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            // (total, anonymous, file-backed) at the sample with the largest total.
            let mut peak = (0.0f64, 0.0f64, 0.0f64);
            while sampling.load(Ordering::Relaxed) {
                let now = rss_mib();
                if now.0 > peak.0 {
                    peak = now;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let rss_before = rss_mib().0;
    let opened = Instant::now();
    // A cluster's node writes its snapshot when the bench says so (below), after its graph
    // is built, not on its own schedule.
    let mut node_config = config.clone();
    node_config.index.snapshot_every_secs = 0;
    let server = Server::start_with_model(node_config.clone(), model.clone()).await?;
    if let Some(replica) = &server.replica {
        // A node restarted on a work dir of an earlier run tails the log from where it was.
        replica.catch_up(Duration::from_secs(24 * 3600)).await?;
    }
    let start_secs = opened.elapsed().as_secs_f64();
    let warmed = Instant::now();
    if server.replica.is_some() {
        // Its graph is built now (and saved, so its snapshot carries it): a first search
        // building it would outlast the request timeout.
        let index = server.index.clone();
        tokio::task::block_in_place(|| index.warm(&store_id))?;
        println!(
            "vectors loaded     {:.1} s (graph built and saved)",
            warmed.elapsed().as_secs_f64()
        );
    }
    let key = std::fs::read_to_string(initial_key_path(&data_dir))?
        .trim()
        .to_string();
    let api = ApiClient::connect(&server.base_url(), &key).await?;
    let search_path = format!("/stores/{store_id}/search");
    let first = Instant::now();
    api.call(
        api.org_request(Method::POST, &search_path)
            .json(&json!({"query_vector": query_vectors[0], "mode": "semantic"})),
    )
    .await?;
    let first_secs = first.elapsed().as_secs_f64();
    println!(
        "chunks             {} (index segments: {})",
        options.chunks,
        server.index.segments()
    );
    println!("server start       {start_secs:.2} s (model, catalog, index open or rebuilt)");
    if let Some(replica) = &server.replica {
        println!("index replica      {:?}", replica.opened);
    }
    println!(
        "first search       {first_secs:.2} s (loads the store's vectors: reopen {:.2} s in all)",
        start_secs + first_secs
    );
    println!("mode / input                        query      conc   QPS    p50 ms  p99 ms");
    let mut approximate: Vec<Vec<(String, u64)>> = Vec::new();
    let mut hybrid_answers: Vec<Vec<(String, u64)>> = Vec::new();
    for (label, mode, with_vector, with_text, all_sets) in [
        ("semantic, vector given", "semantic", true, false, false),
        ("keyword", "keyword", false, true, true),
        ("hybrid, vector given", "hybrid", true, true, true),
        ("hybrid, text embedded", "hybrid", false, true, false),
    ] {
        let sets = if all_sets { query_sets.len() } else { 1 };
        for ((set, texts), vectors) in query_sets.iter().zip(&set_vectors).take(sets) {
            for concurrency in [1usize, 16] {
                // Bodies are serialised before the clock starts: the latency is the
                // server's and the connection's, not the client's JSON encoding.
                let bodies: Vec<Vec<u8>> = texts
                    .iter()
                    .zip(vectors)
                    .map(|(text, vector)| {
                        let mut body = json!({"mode": mode, "top_k": 10});
                        if with_vector {
                            body["query_vector"] = json!(vector);
                        }
                        if with_text {
                            body["query"] = json!(text);
                        }
                        serde_json::to_vec(&body).unwrap_or_default()
                    })
                    .collect();
                let started = Instant::now();
                let answers: Vec<(Value, f64)> = futures::stream::iter(bodies)
                    .map(|body| {
                        let (api, path) = (&api, &search_path);
                        async move {
                            let asked = Instant::now();
                            let answer = api
                                .call(
                                    api.org_request(Method::POST, path)
                                        .header("content-type", "application/json")
                                        .body(body),
                                )
                                .await?;
                            Ok::<_, anyhow::Error>((answer, asked.elapsed().as_secs_f64() * 1000.0))
                        }
                    })
                    .buffered(concurrency)
                    .try_collect()
                    .await?;
                let wall = started.elapsed().as_secs_f64();
                let mut latencies: Vec<f64> = answers.iter().map(|(_, ms)| *ms).collect();
                latencies.sort_by(f64::total_cmp);
                println!(
                    "{label:<35} {set:<10} {concurrency:>4} {:>6.1}  {:>6.2}  {:>6.2}",
                    answers.len() as f64 / wall,
                    percentile(&latencies, 50.0),
                    percentile(&latencies, 99.0)
                );
                if concurrency == 1 && with_vector && set == "claims" {
                    let keys = answers.iter().map(|(a, _)| result_keys(a)).collect();
                    match mode {
                        "semantic" => approximate = keys,
                        _ => hybrid_answers = keys,
                    }
                }
            }
        }
    }
    sampling.store(false, Ordering::Relaxed);
    let (peak, anonymous, mapped) = sampler.join().unwrap_or_default();
    println!(
        "RSS while serving  peak {peak:.0} MiB = {anonymous:.0} MiB anonymous + {mapped:.0} MiB \
         of mapped index files (sampled every 50 ms; {rss_before:.0} MiB before the server started)"
    );
    if let Some(replica) = server.replica.clone() {
        let written = Instant::now();
        let snapshot = replica
            .write_snapshot()
            .await?
            .context("the node wrote no snapshot")?;
        println!(
            "snapshot written   {:.1} s ({:.0} MiB to object storage)",
            written.elapsed().as_secs_f64(),
            snapshot.bytes() as f64 / 1048576.0
        );
        server.shutdown().await?;
        second_node(
            &node_config,
            model,
            &key,
            &store_id,
            &query_vectors,
            &approximate,
        )
        .await?;
    } else {
        server.shutdown().await?;
    }

    // Recall@10 of what was answered against an exact scan of the same store.
    let exact_started = Instant::now();
    let exact_index = ChunkIndex::open_with(
        &data_dir.join("index"),
        query_vectors[0].len(),
        kiln_index::AnnOptions {
            threshold: usize::MAX,
            ..kiln_index::AnnOptions::default()
        },
    )?;
    let stores = vec![store_id.clone()];
    let all = |_: &str, _: u64| true;
    let scope = Scope {
        store_ids: &stores,
        active: &all,
    };
    let truth = query_vectors
        .iter()
        .map(|vector| exact_index.semantic(&scope, vector, 10))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "recall@10          {:.4} (approximate vs exact, {} queries; exact pass {:.0} s)",
        agreement(&truth, &approximate),
        approximate.len(),
        exact_started.elapsed().as_secs_f64()
    );
    // Hybrid answers against hybrid computed with exact vectors (same keyword list, same
    // fusion): what the graph's shorter list for fusion costs.
    let truth = query_vectors
        .iter()
        .zip(&query_texts)
        .map(|(vector, text)| {
            exact_index.search(&scope, kiln_index::Mode::Hybrid, text, Some(vector), 10)
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "hybrid agreement   {:.4} (hybrid top 10 vs hybrid with exact vectors, {} queries)",
        agreement(&truth, &hybrid_answers),
        hybrid_answers.len()
    );
    println!("peak RSS (process) {:.0} MiB", peak_rss_mib());
    Ok(())
}

/// A cluster's new API node, on a data dir of its own: how long it takes to start from the
/// snapshot the first node wrote and answer, and whether it answers as the first did. (The
/// API key is the catalog's: the one the first node created works here too.)
async fn second_node(
    config: &Config,
    model: crate::server::Model,
    key: &str,
    store_id: &str,
    query_vectors: &[Vec<f32>],
    first_answers: &[Vec<(String, u64)>],
) -> anyhow::Result<()> {
    let own = tempfile::tempdir()?;
    // Models stay where the first node's configuration keeps them (`loopback_config`).
    let mut config = config.clone();
    config.data_dir = own.path().to_path_buf();
    let started = Instant::now();
    let server = Server::start_with_model(config, model).await?;
    let start_secs = started.elapsed().as_secs_f64();
    let opened = server.replica.as_ref().map(|r| format!("{:?}", r.opened));
    let api = ApiClient::connect(&server.base_url(), key).await?;
    let path = format!("/stores/{store_id}/search");
    let first = Instant::now();
    let mut answers = Vec::with_capacity(query_vectors.len());
    for (i, vector) in query_vectors.iter().enumerate() {
        let answer = api
            .call(
                api.org_request(Method::POST, &path)
                    .json(&json!({"query_vector": vector, "mode": "semantic", "top_k": 10})),
            )
            .await?;
        if i == 0 {
            println!(
                "new node           start {start_secs:.2} s, first search {:.2} s ({})",
                first.elapsed().as_secs_f64(),
                opened.as_deref().unwrap_or("-")
            );
        }
        answers.push(result_keys(&answer));
    }
    let same = answers
        .iter()
        .zip(first_answers)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "new node answers   {same} of {} semantic top 10s identical to the first node's",
        answers.len()
    );
    server.shutdown().await?;
    Ok(())
}

/// The first `n` words of a text.
fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Up to `count` passages of exactly `words` words: the start of each abstract (after its
/// title line) that has that many, in corpus order.
fn passages(documents: &[(String, String)], words: usize, count: usize) -> Vec<String> {
    documents
        .iter()
        .map(|(_, text)| {
            text.split_once('\n')
                .map_or(text.as_str(), |(_, body)| body)
        })
        .filter(|body| body.split_whitespace().count() >= words)
        .map(|body| first_words(body, words))
        .take(count)
        .collect()
}

/// The share of the true answers' chunks that the answers hold.
fn agreement(truth: &[Vec<kiln_index::Hit>], answers: &[Vec<(String, u64)>]) -> f64 {
    let (mut found, mut wanted) = (0usize, 0usize);
    for (truth, answered) in truth.iter().zip(answers) {
        let truth: HashSet<(&str, u64)> = truth
            .iter()
            .map(|h| (h.file_id.as_str(), u64::from(h.chunk_index)))
            .collect();
        wanted += truth.len();
        found += answered
            .iter()
            .filter(|(file, chunk)| truth.contains(&(file.as_str(), *chunk)))
            .count();
    }
    found as f64 / wanted.max(1) as f64
}

fn result_keys(answer: &Value) -> Vec<(String, u64)> {
    answer["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["file_id"].as_str().unwrap_or("").to_string(),
                r["chunk_index"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// This process's resident memory: (total, anonymous, file-backed) in MiB.
fn rss_mib() -> (f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// Real chunk embeddings: from a Kiln data dir's index, or by embedding SciFact documents.
async fn base_vectors(
    options: &SearchBenchOptions,
    model: &crate::server::Model,
) -> anyhow::Result<Vec<Vec<f32>>> {
    if let Some(dir) = &options.vectors_from {
        let index = ChunkIndex::open(&dir.join("index"), model.embedder.dimensions())
            .with_context(|| format!("cannot open the index in {}", dir.display()))?;
        let vectors: Vec<Vec<f32>> = index.export()?.into_iter().map(|c| c.vector).collect();
        anyhow::ensure!(!vectors.is_empty(), "no chunks in {}", dir.display());
        eprintln!(
            "{} real chunk vectors from {}",
            vectors.len(),
            dir.display()
        );
        return Ok(vectors);
    }
    let docs = load_corpus(&corpus_path(&options.dataset), options.base_docs)?;
    let texts: Vec<String> = docs.into_iter().map(|(_, text)| text).collect();
    eprintln!(
        "embedding {} SciFact documents for base vectors",
        texts.len()
    );
    Ok(model.embedder.embed(&texts).await?)
}

fn corpus_path(dataset: &Path) -> PathBuf {
    let gz = dataset.join("corpus.jsonl.gz");
    if gz.exists() {
        gz
    } else {
        dataset.join("corpus.jsonl")
    }
}

/// Creates the store (through a short-lived server, which also bootstraps the data dir) and
/// writes the chunks and their completed files; returns the store's ID.
async fn build(
    options: &SearchBenchOptions,
    config: &Config,
    model: &crate::server::Model,
) -> anyhow::Result<String> {
    let bases = base_vectors(options, model).await?;
    let sentences: Vec<String> = load_corpus(&corpus_path(&options.dataset), usize::MAX)?
        .into_iter()
        .flat_map(|(_, text)| {
            text.split(". ")
                .filter(|s| s.len() > 20)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();

    let server = Server::start_with_model(config.clone(), model.clone()).await?;
    let key = std::fs::read_to_string(initial_key_path(&config.data_dir))?
        .trim()
        .to_string();
    let api = ApiClient::connect(&server.base_url(), &key).await?;
    let store_id = api.create_store("bench-search").await?;
    let organization_id = kiln_core::OrgId::from(api.org.as_str());
    let store = kiln_core::StoreId::from(store_id.as_str());
    server.shutdown().await?;

    let (catalog, blobs) = open_storage(config).await?;
    // Embedded: straight into the data dir's index. A cluster: into the catalog's index log,
    // which the measured server's replica then rebuilds its index from, as a new API node does.
    let local = match catalog.dialect() {
        Dialect::Sqlite => Some(Arc::new(ChunkIndex::open_with(
            &config.data_dir.join("index"),
            model.embedder.dimensions(),
            kiln_index::AnnOptions {
                // The graph is built when the store is first searched, not while filling it.
                threshold: usize::MAX,
                ..kiln_index::AnnOptions::default()
            },
        )?)),
        Dialect::Postgres => None,
    };
    let sink = match &local {
        Some(index) => IndexSink::Local(index.clone()),
        None => IndexSink::Log {
            catalog: catalog.clone(),
            blobs,
        },
    };
    let started = Instant::now();
    let mut random = Random(0x005E_ED0F_C4A1_u64);
    let files = options.chunks.div_ceil(options.chunks_per_file);
    // Files are registered and claimed one by one, their chunks indexed in one commit per
    // batch, then completed: what the pipeline does, minus extraction and embedding.
    const FILES_PER_COMMIT: usize = 100;
    let mut written = 0usize;
    let mut n = 0usize;
    while n < files {
        let mut jobs: Vec<(ProcessJob, usize, usize)> = Vec::new();
        let mut records: Vec<ChunkRecord> = Vec::new();
        for _ in 0..FILES_PER_COMMIT.min(files - n) {
            let file_id = kiln_core::FileId::generate();
            let count = options.chunks_per_file.min(options.chunks - written);
            let first = records.len();
            for chunk_index in 0..count {
                let text = (0..4)
                    .map(|_| sentences[random.below(sentences.len())].as_str())
                    .collect::<Vec<_>>()
                    .join(". ");
                let base = &bases[random.below(bases.len())];
                let mut vector: Vec<f32> = base
                    .iter()
                    .map(|x| x + options.noise * random.gaussian())
                    .collect();
                kiln_embed::normalize(&mut vector);
                records.push(ChunkRecord {
                    store_id: store_id.clone(),
                    file_id: file_id.to_string(),
                    generation: 0,
                    chunk_index: chunk_index as u32,
                    text,
                    page: None,
                    vector,
                });
            }
            let text_bytes: usize = records[first..].iter().map(|c| c.text.len()).sum();
            catalog
                .create_file(NewFile {
                    id: file_id.clone(),
                    organization_id: organization_id.clone(),
                    store_id: store.clone(),
                    file_name: format!("bench-{n:06}.txt"),
                    relative_path: None,
                    mime_type: "text/plain".into(),
                    file_size: text_bytes as i64,
                    sha256: None,
                    created_by: "bench".into(),
                    original_blob: kiln_blobs::Folder::store_file(
                        &organization_id,
                        &store,
                        &file_id,
                    )
                    .original()
                    .to_string(),
                })
                .await?;
            let job = catalog
                .claim("bench", Duration::from_secs(3600))
                .await?
                .and_then(Claimed::into_process)
                .context("the file's processing job is claimable")?;
            let generation = job.file.generation as u64;
            records[first..]
                .iter_mut()
                .for_each(|c| c.generation = generation);
            jobs.push((job, count, text_bytes));
            written += count;
            n += 1;
        }
        sink.add(records, sink.expect()).await?;
        for (job, count, text_bytes) in jobs {
            let outcome = catalog
                .complete(
                    &job,
                    "bench",
                    Completion {
                        chunk_count: count as i64,
                        extracted_text_bytes: text_bytes as i64,
                        vector_bytes: (count * bases[0].len() * 4) as i64,
                        index_bytes: 0,
                        embedding_model: model.embedder.model().to_string(),
                        data: json!({"bench": true}),
                        logs: Vec::new(),
                    },
                )
                .await?;
            if let kiln_catalog::CompleteOutcome::Stopped(state) = outcome {
                anyhow::bail!("the bench job was taken away: {state:?}");
            }
        }
        eprintln!(
            "built {written} chunks in {n} files, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    catalog.close().await;
    drop(sink);
    let Some(index) = local else {
        // The short-lived server's replica holds the store's creation only: the measured node
        // is to start as a new one, rebuilding its index from the catalog.
        std::fs::remove_dir_all(config.data_dir.join("index"))?;
        std::fs::remove_file(config.data_dir.join("index.replica.json"))?;
        return Ok(store_id);
    };
    let index = Arc::into_inner(index).context("the bench holds its index's only handle")?;
    let merging = Instant::now();
    let segments = index.segments();
    tokio::task::block_in_place(move || index.finish_merges())?;
    eprintln!(
        "segment merges finished in {:.1} s ({segments} segments before)",
        merging.elapsed().as_secs_f64()
    );
    // Open as the server will and build the store's vector structure now (a graph above
    // the threshold, saved beside the index), so the measured start is a reopen.
    let warm = Instant::now();
    let index = ChunkIndex::open_with(
        &config.data_dir.join("index"),
        model.embedder.dimensions(),
        crate::server::ann_options(&config.index),
    )?;
    tokio::task::block_in_place(|| index.warm(&store_id))?;
    eprintln!(
        "vectors loaded ({}) in {:.1} s",
        if index.uses_graph(&store_id)? == Some(true) {
            "HNSW graph built and saved"
        } else {
            "exact"
        },
        warm.elapsed().as_secs_f64()
    );
    Ok(store_id)
}
