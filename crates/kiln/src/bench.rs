//! `kiln bench ingest`: documents through the real HTTP API of a server started on loopback,
//! against the model's raw batched throughput measured alone in the same run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use kiln_core::config::Config;
use reqwest::Method;
use serde_json::Value;

use crate::client::ApiClient;
use crate::server::{Server, load_model};

pub mod chroma;
pub mod embed;
pub mod events;
pub mod extract;
pub mod search;

/// SciFact-style documents: `(id, title + "\n" + text)`.
pub fn load_corpus(path: &Path, limit: usize) -> anyhow::Result<Vec<(String, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut docs = Vec::new();
    for line in BufReader::new(reader).lines() {
        let doc: Value = serde_json::from_str(&line?)?;
        let title = doc["title"].as_str().unwrap_or("");
        let text = doc["text"].as_str().unwrap_or("");
        docs.push((
            doc["_id"].as_str().unwrap_or("").to_string(),
            format!("{title}\n{text}"),
        ));
        if docs.len() == limit {
            break;
        }
    }
    Ok(docs)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The configuration of a server a measuring command starts: `settings`' catalog, blobs,
/// embedding, worker and index settings, on `data_dir`, listening on a free loopback port.
/// Models stay where the settings keep them, not in that data dir. (A cluster's catalog and
/// blobs are measured by naming them, e.g. `KILN_CATALOG__URL=postgres://…/new_db`: the
/// database must be new, as a data dir would be.)
pub(crate) fn loopback_config(settings: &Config, data_dir: PathBuf) -> Config {
    let mut config = Config {
        data_dir,
        listen: "127.0.0.1:0".into(),
        catalog: settings.catalog.clone(),
        blobs: settings.blobs.clone(),
        embedding: settings.embedding.clone(),
        workers: settings.workers.clone(),
        index: settings.index.clone(),
        ..Config::default()
    };
    config.embedding.models_dir = Some(settings.models_dir());
    config
}

/// Runs the ingest benchmark with `settings`' embedding and worker settings (its data dir and
/// listen address are replaced by a temporary folder and a loopback port).
pub async fn ingest(
    corpus: &Path,
    docs: usize,
    chroma: &chroma::ChromaOptions,
    settings: &Config,
) -> anyhow::Result<()> {
    let documents = load_corpus(corpus, docs)?;
    anyhow::ensure!(
        !documents.is_empty(),
        "no documents in {}",
        corpus.display()
    );
    let dir = tempfile::tempdir()?;
    let config = loopback_config(settings, dir.path().to_path_buf());
    let model = load_model(&config).await?;

    // The model alone, on the very chunks the pipeline will make (default chunking). Sized
    // without keeping their tokens, so the model-alone runs tokenize every chunk, as a caller
    // that embeds texts does (in the pipeline, the chunker's count does it for the pass).
    let options = kiln_chunk::ChunkOptions {
        max_tokens: 800,
        overlap_tokens: 400,
    };
    let mut chunk_texts = Vec::new();
    for (_, text) in &documents {
        let document = kiln_extract::extract(kiln_extract::Format::Text, text.as_bytes())?;
        chunk_texts.extend(
            kiln_chunk::chunk(&document, options, model.counts_only.as_ref())
                .into_iter()
                .map(|c| c.text),
        );
    }
    // The model alone, before and after the pipeline's run (this machine's speed drifts by
    // ±10 % over minutes; the mean of the two brackets the pipeline's run), each time through
    // the embedding lanes the pipeline uses.
    let embedder = model.embedder.clone();
    let before = model_alone(embedder.as_ref(), &chunk_texts, "before").await?;

    let server = Server::start_with_model(config, model).await?;
    let key = server
        .initial_key
        .clone()
        .context("a new data dir has a key")?
        .value;
    let base = server.base_url();
    let api = ApiClient::connect(&base, &key).await?;
    let store = api.create_store("bench").await?;
    let files = format!("/stores/{store}/files");

    // The client runs on threads of its own, each with its own runtime, as clients in other
    // processes would: its requests never wait for a turn on the server's tokio threads, and
    // the table of CPU by thread shows what it costs (`bench-uploader`, `bench-status`).
    // Status latency, sampled while ingesting; between two status reads, `/health`, which
    // reads nothing (the scheduler's and HTTP's share of a request, the floor under status).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let known: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let all_uploaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let all_uploaded = all_uploaded.clone();
        let (stop, known, files) = (stop.clone(), known.clone(), files.clone());
        let (base, key) = (base.clone(), key.clone());
        on_own_thread("bench-status", async move {
            let api = ApiClient::connect(&base, &key).await?;
            let timed = async |request: reqwest::RequestBuilder| {
                let started = Instant::now();
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                ok.then(|| started.elapsed().as_secs_f64() * 1000.0)
            };
            let (mut latencies, mut health) = (Vec::new(), Vec::new());
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = { known.lock().unwrap().get(n).cloned() };
                let Some(id) = id.or_else(|| known.lock().unwrap().first().cloned()) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let status = api.org_request(Method::GET, &format!("{files}/{id}/status"));
                if let Some(ms) = timed(status).await {
                    let uploading = !all_uploaded.load(std::sync::atomic::Ordering::Relaxed);
                    latencies.push((ms, uploading));
                }
                n = (n + 1) % known.lock().unwrap().len().max(1);
                // 20 status reads a second: a busy dashboard, not a load test of its own.
                tokio::time::sleep(Duration::from_millis(25)).await;
                health.extend(timed(api.request(Method::GET, "/health")).await);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok((latencies, health))
        })?
    };

    let started = Instant::now();
    let before_pipeline = ThreadUse::now();
    let lane_before = kiln_embed::lane::stats();
    let uploader = {
        let (known, all_uploaded, store) = (known.clone(), all_uploaded.clone(), store.clone());
        let (base, key) = (base.clone(), key.clone());
        let documents = documents.clone();
        on_own_thread("bench-uploader", async move {
            let api = ApiClient::connect(&base, &key).await?;
            let mut uploaded_at: HashMap<String, SystemTime> = HashMap::new();
            for (doc_id, text) in &documents {
                let id = api
                    .upload(&store, &format!("{doc_id}.txt"), text.clone().into_bytes())
                    .await?;
                known.lock().unwrap().push(id.clone());
                uploaded_at.insert(id, SystemTime::now());
            }
            all_uploaded.store(true, std::sync::atomic::Ordering::Relaxed);
            let upload_secs = started.elapsed().as_secs_f64();
            // Wait on the store's file counts, as a dashboard would (cheap, one small answer).
            let failed = api.wait_settled(&store, documents.len() as u64).await?;
            Ok((uploaded_at, upload_secs, failed))
        })?
    };
    let (uploaded, uploader_use) = uploader.await?;
    let (uploaded_at, upload_secs, failed) = uploaded?;
    let total = started.elapsed().as_secs_f64();
    let after_pipeline = ThreadUse::now();
    let pipeline_use = after_pipeline.total - before_pipeline.total;
    let pipeline_cpu = pipeline_use.seconds;
    let lanes_cpu = after_pipeline.of(kiln_embed::lane::THREAD_PREFIX)
        - before_pipeline.of(kiln_embed::lane::THREAD_PREFIX);
    let lane = kiln_embed::lane::stats();
    let commits = server.index.commits();
    // Then each file's chunks and completion time (the API gives whole seconds).
    let mut done_after: Vec<f64> = Vec::new();
    let mut chunks = 0u64;
    // Where a file's processing time went: each step's `duration_ms`, summed over files.
    let mut step_ms: std::collections::BTreeMap<String, f64> = Default::default();
    for f in api.files(&store).await? {
        chunks += f["chunk_count"].as_u64().unwrap_or(0);
        let id = f["id"].as_str().unwrap_or("");
        let logs = api
            .call(api.org_request(Method::GET, &format!("{files}/{id}/logs?limit=100")))
            .await?;
        for entry in logs["items"].as_array().into_iter().flatten() {
            if let (Some(step), Some(ms)) = (
                entry["step"].as_str(),
                entry["data"]["duration_ms"].as_f64(),
            ) {
                *step_ms.entry(step.to_string()).or_default() += ms;
            }
        }
        let finished = f["completed_at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        if let (Some(finished), Some(uploaded)) = (finished, uploaded_at.get(id)) {
            let waited = finished
                .duration_since(*uploaded)
                .unwrap_or_default()
                .as_secs_f64();
            done_after.push(waited);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, sampler_use) = sampler.await?;
    let (samples, mut health) = samples?;
    health.sort_by(f64::total_cmp);
    let sorted = |keep: &dyn Fn(bool) -> bool| {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|(_, uploading)| keep(*uploading))
            .map(|(ms, _)| *ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let latencies = sorted(&|_| true);
    let while_processing = sorted(&|uploading| !uploading);
    let while_uploading = sorted(&|uploading| uploading);
    let mut waits = done_after;
    waits.sort_by(f64::total_cmp);
    let threads = use_by_thread(
        &[
            ("bench-uploader (client)", uploader_use),
            ("bench-status (client)", sampler_use),
        ],
        &before_pipeline,
        &after_pipeline,
    );
    server.shutdown().await?;
    let after = model_alone(embedder.as_ref(), &chunk_texts, "after").await?;
    let raw_secs = (before.0 + after.0) / 2.0;
    let raw_cpu = (before.1 + after.1) / 2.0;
    let raw_rate = chunk_texts.len() as f64 / raw_secs;

    let pipeline_rate = chunks as f64 / total;
    println!("documents          {}", documents.len());
    println!("failed             {failed}");
    println!("chunks             {chunks}");
    println!("wall time          {total:.1} s");
    println!("files/s            {:.2}", documents.len() as f64 / total);
    println!("chunks/s           {pipeline_rate:.1}");
    println!(
        "model raw chunks/s {raw_rate:.1} (batched, alone, same chunks; {:.1} before, {:.1} after)",
        chunk_texts.len() as f64 / before.0,
        chunk_texts.len() as f64 / after.0
    );
    println!(
        "pipeline / raw     {:.0} %",
        100.0 * pipeline_rate / raw_rate
    );
    println!(
        "upload->completed  p50 {:.0} s, p99 {:.0} s (whole seconds)",
        percentile(&waits, 50.0),
        percentile(&waits, 99.0)
    );
    println!(
        "status latency     p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.len()
    );
    println!(
        "  while uploading  p50 {:.2} ms, p99 {:.2} ms ({} samples, first {upload_secs:.1} s)",
        percentile(&while_uploading, 50.0),
        percentile(&while_uploading, 99.0),
        while_uploading.len()
    );
    println!(
        "  after uploads    p50 {:.2} ms, p99 {:.2} ms ({} samples, files processing)",
        percentile(&while_processing, 50.0),
        percentile(&while_processing, 99.0),
        while_processing.len()
    );
    println!(
        "health (no read)   p50 {:.2} ms, p99 {:.2} ms ({} samples, between status reads)",
        percentile(&health, 50.0),
        percentile(&health, 99.0),
        health.len()
    );
    let (passes, texts) = (
        lane.passes - lane_before.passes,
        lane.texts - lane_before.texts,
    );
    println!(
        "model lanes        {} lanes, {passes} passes, {:.1} texts each, each busy {:.0} % of the wall time",
        lane.lanes,
        texts as f64 / passes.max(1) as f64,
        100.0 * (lane.busy - lane_before.busy).as_secs_f64() / lane.lanes.max(1) as f64 / total
    );
    println!(
        "index commits      {commits} for {} files ({:.1} files each)",
        documents.len(),
        documents.len() as f64 / commits.max(1) as f64
    );
    println!("step time, mean per file (from the logs' duration_ms):");
    for (step, ms) in &step_ms {
        println!("  {step:<28} {:>8.1} ms", ms / documents.len() as f64);
    }
    println!("peak RSS           {:.0} MiB", peak_rss_mib());
    println!(
        "CPU (all threads)  model alone {raw_cpu:.1} s ({:.0} % of a core), pipeline {pipeline_cpu:.1} s ({:.0} %; the bench's client {:.1} s of it)",
        100.0 * raw_cpu / raw_secs,
        100.0 * pipeline_cpu / total,
        uploader_use.seconds + sampler_use.seconds
    );
    // Where the cores' time went while the pipeline ran. The pipeline's ratio to the model
    // alone is about the lanes' share of it times the model alone's CPU a chunk over the
    // lanes' CPU a chunk in the pipeline.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let capacity = cores * total;
    println!(
        "cores' time        lanes {:.1} %, other threads {:.1} %, idle {:.1} % ({cores:.0} cores × {total:.1} s)",
        100.0 * lanes_cpu / capacity,
        100.0 * (pipeline_cpu - lanes_cpu) / capacity,
        100.0 * (capacity - pipeline_cpu).max(0.0) / capacity
    );
    let (alone_ms, piped_ms) = (
        1000.0 * raw_cpu / chunk_texts.len().max(1) as f64,
        1000.0 * lanes_cpu / chunks.max(1) as f64,
    );
    println!(
        "CPU a chunk        model alone {alone_ms:.1} ms (tokenizing included), lanes in the pipeline {piped_ms:.1} ms ({:+.1} %; the chunker tokenized)",
        100.0 * (piped_ms / alone_ms - 1.0)
    );
    // Context switches: each hand-off between threads (sqlx gives each SQLite statement to its
    // connection's thread and waits for the rows; blocking file operations go to tokio's pool)
    // is a wait on one side and a wake-up on the other, and in a VM each switch costs
    // microseconds of the cores' time; a thread woken on a busy core preempts what runs there.
    let per_file = |n: u64| n as f64 / documents.len().max(1) as f64;
    println!(
        "context switches   {:.1} a file while the pipeline ran ({:.1} waiting, {:.1} preempted; the whole process, the bench's client included)",
        per_file(pipeline_use.voluntary + pipeline_use.involuntary),
        per_file(pipeline_use.voluntary),
        per_file(pipeline_use.involuntary)
    );
    println!("by thread while the pipeline ran:  CPU s  switches a file: waiting  preempted");
    for (name, used) in threads {
        println!(
            "  {name:<28} {:>8.1} {:>24.1} {:>10.1}",
            used.seconds,
            per_file(used.voluntary),
            per_file(used.involuntary)
        );
    }
    // Chroma on the same documents, after Kiln's run (one at a time: they share the cores).
    let model_dir = crate::server::local_model_dir(settings)?;
    let run = chroma
        .run(corpus, documents.len(), &model_dir, &settings.models_dir())
        .await;
    println!("chroma add()       {run}");
    if let chroma::ChromaRun::Measured { texts_per_s, .. } = run {
        println!(
            "kiln / chroma      {:.2}× (files/s against Chroma's texts/s, the same documents)",
            documents.len() as f64 / total / texts_per_s
        );
    }
    Ok(())
}

/// What a thread of [`on_own_thread`] ends with: its task's result and what the thread used
/// (its runtime's work included).
type Finished<T> = (anyhow::Result<T>, Use);

/// Runs `task` on a new thread named `name`, on a runtime of its own; its result and what the
/// thread used arrive on the receiver.
fn on_own_thread<T: Send + 'static>(
    name: &str,
    task: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Finished<T>>> {
    let (send, receive) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(task));
            let _ = send.send((result, this_thread_use()));
        })
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(receive)
}

/// Embeds `texts` alone; returns the wall and CPU seconds it took.
async fn model_alone(
    embedder: &dyn kiln_embed::Embedder,
    texts: &[String],
    when: &str,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    embedder.embed(texts).await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "model alone, {when}: {} chunks in {secs:.1} s = {:.1} chunks/s",
        texts.len(),
        texts.len() as f64 / secs
    );
    Ok((secs, process_cpu_seconds() - cpu_before))
}

/// A `/proc/…/stat` line's command name and its CPU time (user + system) in seconds. The
/// name sits in parentheses and may hold spaces; the fields after it are fixed: utime and
/// stime (fields 14 and 15) are the 12th and 13th after it.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let cpu = |i: usize| -> f64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0.0) };
    const USER_HZ: f64 = 100.0;
    Some((&stat[open + 1..close], (cpu(11) + cpu(12)) / USER_HZ))
}

/// CPU time of this whole process so far, ended threads included. Linux only (else 0).
fn process_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat")
}

/// CPU time from a `/proc/…/stat` file (the process's, or a thread's). Linux only (else 0).
fn cpu_seconds(stat_path: &str) -> f64 {
    std::fs::read_to_string(stat_path)
        .ok()
        .and_then(|stat| stat_cpu(&stat).map(|(_, seconds)| seconds))
        .unwrap_or(0.0)
}

/// What a thread or a process used: CPU seconds, and the times it left its core because it
/// had to wait (`voluntary`: e.g. for another thread to hand it work or an answer) or because
/// the core was given to another thread (`involuntary`: preempted).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Use {
    seconds: f64,
    voluntary: u64,
    involuntary: u64,
}

impl std::ops::Sub for Use {
    type Output = Use;
    fn sub(self, before: Use) -> Use {
        Use {
            seconds: self.seconds - before.seconds,
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }
}

impl std::ops::AddAssign for Use {
    fn add_assign(&mut self, other: Use) {
        self.seconds += other.seconds;
        self.voluntary += other.voluntary;
        self.involuntary += other.involuntary;
    }
}

/// A `/proc/…/status` file's context switches: `(voluntary, involuntary)`.
fn status_switches(status: &str) -> (u64, u64) {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// What the calling thread has used so far. Linux only (else nothing).
fn this_thread_use() -> Use {
    let (voluntary, involuntary) = std::fs::read_to_string("/proc/thread-self/status")
        .map(|status| status_switches(&status))
        .unwrap_or_default();
    Use {
        seconds: cpu_seconds("/proc/thread-self/stat"),
        voluntary,
        involuntary,
    }
}

/// What this whole process has used so far, ended threads included (`/proc` tells a thread's
/// switches only while it lives; `getrusage` keeps the ended ones').
fn process_use() -> Use {
    // SAFETY: `getrusage` fills the zeroed struct it is given and reads nothing else.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    };
    Use {
        seconds: process_cpu_seconds(),
        voluntary: usage.map_or(0, |u| u.ru_nvcsw as u64),
        involuntary: usage.map_or(0, |u| u.ru_nivcsw as u64),
    }
}

/// What this process used between two readings, by thread name with digits removed (a pool's
/// threads are one group), most CPU first; then `clients` (the bench's own threads, named,
/// with what they report); and last what the threads that ended in between used (tantivy
/// starts its indexing threads anew for each commit).
/// Groups under 0.1 CPU-s are left out. Linux only; empty elsewhere.
fn use_by_thread(
    clients: &[(&str, Use)],
    since: &ThreadUse,
    until: &ThreadUse,
) -> Vec<(String, Use)> {
    let mut groups: HashMap<String, Use> = HashMap::new();
    for (tid, (name, used)) in &until.threads {
        if clients
            .iter()
            .any(|(client, _)| client.starts_with(name.as_str()))
        {
            continue;
        }
        let before = since
            .threads
            .get(tid)
            .map_or_else(Use::default, |(_, u)| *u);
        *groups.entry(name.clone()).or_default() += *used - before;
    }
    let mut accounted = Use::default();
    for used in groups.values().chain(clients.iter().map(|(_, u)| u)) {
        accounted += *used;
    }
    let others = (until.total - since.total) - accounted;
    let mut sorted: Vec<(String, Use)> = groups
        .into_iter()
        .filter(|(_, u)| u.seconds >= 0.1)
        .collect();
    sorted.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    sorted.extend(clients.iter().map(|(name, used)| (name.to_string(), *used)));
    if others.seconds >= 0.1 {
        sorted.push(("(threads that ended)".to_string(), others));
    }
    sorted
}

/// A reading of what this process has used: each live thread's (by thread id, with its name
/// without digits) and the whole process's, ended threads included.
struct ThreadUse {
    threads: HashMap<u64, (String, Use)>,
    total: Use,
}

impl ThreadUse {
    fn now() -> ThreadUse {
        let total = process_use();
        let mut threads = HashMap::new();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (voluntary, involuntary) = std::fs::read_to_string(task.path().join("status"))
                .map(|status| status_switches(&status))
                .unwrap_or_default();
            if let Some((name, seconds)) = stat_cpu(&stat) {
                let name = name.chars().filter(|c| !c.is_ascii_digit()).collect();
                let used = Use {
                    seconds,
                    voluntary,
                    involuntary,
                };
                threads.insert(tid, (name, used));
            }
        }
        ThreadUse { threads, total }
    }

    /// CPU seconds of the live threads whose name starts with `prefix`.
    fn of(&self, prefix: &str) -> f64 {
        self.threads
            .values()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, used)| used.seconds)
            .sum()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Burns about `seconds` of this thread's CPU.
    fn burn(seconds: f64) {
        let start = cpu_seconds("/proc/thread-self/stat");
        let mut x = 0u64;
        while cpu_seconds("/proc/thread-self/stat") - start < seconds {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    /// Sleeps `times` times, each a wait that gives up the core (a voluntary switch).
    fn wait_often(times: u32) {
        for _ in 0..times {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What a thread used between two readings goes to its name's group, not what it used
    /// before the first; a thread that ended in between is counted with the ended ones (its
    /// switches too, which only the process's total keeps); the clients are shown by what
    /// they report, not twice.
    #[test]
    fn use_between_two_readings_goes_to_the_threads_that_used_it() {
        let (resume, wait) = std::sync::mpsc::channel::<()>();
        let (ready, ready_wait) = std::sync::mpsc::channel::<()>();
        let alive = std::thread::Builder::new()
            .name("kiln-test-live".into())
            .spawn(move || {
                // Before the first reading: not counted.
                burn(0.3);
                wait_often(60);
                ready.send(()).unwrap();
                wait.recv().unwrap();
                burn(0.2);
                wait_often(30);
                ready.send(()).unwrap();
                wait.recv().unwrap();
            })
            .unwrap();
        ready_wait.recv().unwrap();
        let since = ThreadUse::now();
        resume.send(()).unwrap();
        ready_wait.recv().unwrap();
        std::thread::Builder::new()
            .name("kiln-test-gone".into())
            .spawn(|| {
                burn(0.2);
                wait_often(40);
            })
            .unwrap()
            .join()
            .unwrap();
        let until = ThreadUse::now();
        resume.send(()).unwrap();
        alive.join().unwrap();

        let client = Use {
            seconds: 0.2,
            voluntary: 7,
            involuntary: 1,
        };
        let table = use_by_thread(&[("kiln-test-live (client)", client)], &since, &until);
        let row = |name: &str| table.iter().find(|(n, _)| n == name).map(|(_, u)| *u);
        assert_eq!(
            row("kiln-test-live (client)"),
            Some(client),
            "a client is shown with what it reports: {table:?}"
        );
        assert_eq!(row("kiln-test-live"), None, "and not as a thread too");
        let ended = row("(threads that ended)");
        assert!(
            ended.is_some_and(|u| u.seconds >= 0.15 && u.voluntary >= 40),
            "the ended thread's 0.2 s and 40 waits: {table:?}"
        );

        let table = use_by_thread(&[], &since, &until);
        let live = table
            .iter()
            .find(|(n, _)| n == "kiln-test-live")
            .map(|(_, u)| *u);
        assert!(
            live.is_some_and(|u| (0.15..0.29).contains(&u.seconds)),
            "0.2 s between the readings, not the 0.3 s before: {table:?}"
        );
        // 30 sleeps, and at most a wait on each channel either side of the readings.
        assert!(
            live.is_some_and(|u| (30..=34).contains(&u.voluntary)),
            "30 waits between the readings, not the 60 before: {table:?}"
        );
        assert_eq!(
            stat_cpu("1 (a (b) c) S 0 0 0 0 0 0 0 0 0 0 250 50"),
            Some(("a (b) c", 3.0))
        );
        assert_eq!(
            status_switches(
                "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n"
            ),
            (12, 3)
        );
    }
}
