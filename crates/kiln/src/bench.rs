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
use crate::server::{Options, Server, load_model};

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

/// The configuration of a server a measuring command starts: `settings`' embedding, worker
/// and index settings, on `data_dir`, listening on a free loopback port. Models stay where
/// the settings keep them, not in that data dir.
pub(crate) fn loopback_config(settings: &Config, data_dir: PathBuf) -> Config {
    let mut config = Config {
        data_dir,
        listen: "127.0.0.1:0".into(),
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
pub async fn ingest(corpus: &Path, docs: usize, settings: &Config) -> anyhow::Result<()> {
    let documents = load_corpus(corpus, docs)?;
    anyhow::ensure!(
        !documents.is_empty(),
        "no documents in {}",
        corpus.display()
    );
    let dir = tempfile::tempdir()?;
    let config = loopback_config(settings, dir.path().to_path_buf());
    let model = load_model(&config).await?;

    // The model alone, on the very chunks the pipeline will make (default chunking).
    let options = kiln_chunk::ChunkOptions {
        max_tokens: 800,
        overlap_tokens: 400,
    };
    let mut chunk_texts = Vec::new();
    for (_, text) in &documents {
        let document = kiln_extract::extract(kiln_extract::Format::Text, text.as_bytes())?;
        chunk_texts.extend(
            kiln_chunk::chunk(&document, options, model.tokens.as_ref())
                .into_iter()
                .map(|c| c.text),
        );
    }
    let raw_started = Instant::now();
    model.embedder.embed(&chunk_texts).await?;
    let raw_secs = raw_started.elapsed().as_secs_f64();
    let raw_rate = chunk_texts.len() as f64 / raw_secs;
    eprintln!(
        "model alone: {} chunks in {raw_secs:.1} s = {raw_rate:.1} chunks/s",
        chunk_texts.len()
    );

    let server = Server::start_with(
        config,
        Options {
            model: Some(model),
            ..Options::default()
        },
    )
    .await?;
    let key = server
        .initial_key
        .clone()
        .context("a new data dir has a key")?
        .value;
    let api = ApiClient::connect(&server.base_url(), &key).await?;
    let store = api.create_store("bench").await?;
    let files = format!("/stores/{store}/files");

    // Status latency, sampled while ingesting.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let known: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let all_uploaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let all_uploaded = all_uploaded.clone();
        let (stop, known, api, files) = (stop.clone(), known.clone(), api.clone(), files.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = { known.lock().unwrap().get(n).cloned() };
                let Some(id) = id.or_else(|| known.lock().unwrap().first().cloned()) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let started = Instant::now();
                let ok = api
                    .org_request(Method::GET, &format!("{files}/{id}/status"))
                    .send()
                    .await
                    .map(|r| r.status().is_success());
                if ok.unwrap_or(false) {
                    let uploading = !all_uploaded.load(std::sync::atomic::Ordering::Relaxed);
                    latencies.push((started.elapsed().as_secs_f64() * 1000.0, uploading));
                }
                n = (n + 1) % known.lock().unwrap().len().max(1);
                // 20 requests a second: a busy dashboard, not a load test of its own.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            latencies
        })
    };

    let started = Instant::now();
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
    let total = started.elapsed().as_secs_f64();
    // Then each file's chunks and completion time (the API gives whole seconds).
    let mut done_after: Vec<f64> = Vec::new();
    let mut chunks = 0u64;
    for f in api.files(&store).await? {
        chunks += f["chunk_count"].as_u64().unwrap_or(0);
        let id = f["id"].as_str().unwrap_or("");
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
    let samples = sampler.await?;
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
    server.shutdown().await?;

    let pipeline_rate = chunks as f64 / total;
    println!("documents          {}", documents.len());
    println!("failed             {failed}");
    println!("chunks             {chunks}");
    println!("wall time          {total:.1} s");
    println!("files/s            {:.2}", documents.len() as f64 / total);
    println!("chunks/s           {pipeline_rate:.1}");
    println!("model raw chunks/s {raw_rate:.1} (batched, alone, same chunks)");
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
    println!("peak RSS           {:.0} MiB", peak_rss_mib());
    println!("CPU seconds by thread (this process):");
    for (name, seconds) in cpu_by_thread() {
        println!("  {name:<28} {seconds:>8.1}");
    }
    Ok(())
}

/// CPU time (user + system) of this process's threads, grouped by name with digits removed,
/// largest first. Linux only; empty elsewhere.
fn cpu_by_thread() -> Vec<(String, f64)> {
    let mut groups: HashMap<String, f64> = HashMap::new();
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces; fields after it are fixed.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name: String = stat[open + 1..close]
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the comm.
        *groups.entry(name).or_default() += (cpu(11) + cpu(12)) / ticks;
    }
    let mut sorted: Vec<(String, f64)> = groups.into_iter().filter(|(_, s)| *s >= 0.1).collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    sorted
}
