//! `kiln bench events`: the event stream under load — N subscribers on a loopback server
//! while M files ingest (events delivered per second, each subscriber checked to get every
//! event once, in order) — and what writing the outbox adds to a status change.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_core::config::Config;
use kiln_core::types::Step;
use reqwest::Method;

use super::{load_corpus, loopback_config, percentile};
use crate::client::ApiClient;
use crate::server::{Server, load_model};

#[derive(clap::Args, Debug)]
pub struct EventsBenchOptions {
    /// A BEIR corpus for the files' texts; generated texts when it is missing.
    #[arg(
        long,
        default_value = "../shared/evaldata/retrieval/scifact/corpus.jsonl.gz"
    )]
    corpus: PathBuf,
    /// Files ingested while the subscribers listen.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Concurrent event-stream subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Status changes timed for the outbox's cost (each kind).
    #[arg(long, default_value_t = 2000)]
    changes: usize,
}

/// What one subscriber saw: positions in arrival order, and when each arrived.
struct Seen {
    ids: Vec<i64>,
    at: Vec<Instant>,
}

pub async fn run(options: &EventsBenchOptions, settings: &Config) -> anyhow::Result<()> {
    let texts: Vec<String> = match load_corpus(&options.corpus, options.files) {
        Ok(docs) if docs.len() == options.files => docs.into_iter().map(|(_, t)| t).collect(),
        _ => {
            eprintln!(
                "{} not available: generated texts instead",
                options.corpus.display()
            );
            (0..options.files)
                .map(|i| format!("Document {i}. ") + &"Kilns fire clay into stoneware. ".repeat(40))
                .collect()
        }
    };
    outbox_cost(settings, options.changes).await?;

    let dir = tempfile::tempdir()?;
    let config = loopback_config(settings, dir.path().to_path_buf());
    let model = load_model(&config).await?;
    let server = Server::start_with_model(config, model).await?;
    let key = server
        .initial_key
        .clone()
        .context("a new data dir has a key")?
        .value;
    let api = ApiClient::connect(&server.base_url(), &key).await?;
    let store = api.create_store("events").await?;

    // The subscribers, each following from now, until told the last position.
    let (last_tx, last_rx) = tokio::sync::watch::channel(i64::MAX);
    let mut subscribers = Vec::new();
    for _ in 0..options.subscribers {
        let response = api
            .org_request(Method::GET, "/events")
            .send()
            .await?
            .error_for_status()?;
        let last_rx = last_rx.clone();
        subscribers.push(tokio::spawn(follow(response, last_rx)));
    }

    let started = Instant::now();
    let mut ids = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        ids.push(
            api.upload(&store, &format!("doc{i}.txt"), text.clone().into_bytes())
                .await?,
        );
    }
    let failed = api.wait_settled(&store, texts.len() as u64).await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let head = last_position(&api).await?;
    let _ = last_tx.send(head);
    let mut seen = Vec::new();
    for subscriber in subscribers {
        seen.push(
            tokio::time::timeout(Duration::from_secs(120), subscriber)
                .await
                .context("a subscriber never caught up")???,
        );
    }
    let delivered: usize = seen.iter().map(|s| s.ids.len()).sum();
    let complete = seen
        .iter()
        .filter(|s| s.ids == (1..=head).collect::<Vec<_>>())
        .count();
    let last_arrival = seen
        .iter()
        .filter_map(|s| s.at.last())
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let window = last_arrival.duration_since(started).as_secs_f64();
    // Fan-out spread: for each event, from its first subscriber to its last.
    let mut spread = Vec::new();
    for i in 0..head as usize {
        let times: Vec<Instant> = seen.iter().filter_map(|s| s.at.get(i).copied()).collect();
        if let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) {
            spread.push(last.duration_since(*first).as_secs_f64() * 1000.0);
        }
    }
    spread.sort_by(f64::total_cmp);

    // The stream's own ceiling: every subscriber replays the whole history at once.
    let replay_started = Instant::now();
    let mut replays = Vec::new();
    for _ in 0..options.subscribers {
        let request = api.org_request(Method::GET, "/events?after=0&follow=false");
        replays.push(tokio::spawn(async move {
            let mut reader = EventReader::new(request.send().await?.error_for_status()?);
            let mut n = 0usize;
            while reader.next().await?.is_some() {
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut replayed = 0;
    for replay in replays {
        replayed += replay.await??;
    }
    let replay_secs = replay_started.elapsed().as_secs_f64();
    server.shutdown().await?;

    println!("files              {} ({failed} failed)", texts.len());
    println!(
        "events written     {head} ({:.1} per file)",
        head as f64 / texts.len() as f64
    );
    println!("subscribers        {}", options.subscribers);
    println!(
        "complete streams   {complete} of {} (every event once, in order)",
        options.subscribers
    );
    println!("ingest wall time   {ingest_secs:.1} s");
    println!(
        "events delivered   {delivered} in {window:.1} s = {:.0} events/s to all subscribers",
        delivered as f64 / window
    );
    println!(
        "replay burst       {replayed} events in {replay_secs:.2} s = {:.0} events/s ({} subscribers reading all {head} at once)",
        replayed as f64 / replay_secs,
        options.subscribers
    );
    println!(
        "fan-out spread     p50 {:.2} ms, p99 {:.2} ms (first to last subscriber, per event)",
        percentile(&spread, 50.0),
        percentile(&spread, 99.0)
    );
    Ok(())
}

/// The organization's last event position.
async fn last_position(api: &ApiClient) -> anyhow::Result<i64> {
    let mut reader = EventReader::new(
        api.org_request(Method::GET, "/events?after=0&follow=false")
            .send()
            .await?
            .error_for_status()?,
    );
    let mut head = 0;
    while let Some(id) = reader.next().await? {
        head = id;
    }
    Ok(head)
}

async fn follow(
    response: reqwest::Response,
    last: tokio::sync::watch::Receiver<i64>,
) -> anyhow::Result<Seen> {
    let mut reader = EventReader::new(response);
    let mut seen = Seen {
        ids: Vec::new(),
        at: Vec::new(),
    };
    loop {
        if seen.ids.last().is_some_and(|id| *id >= *last.borrow()) {
            return Ok(seen);
        }
        let next = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
        match next {
            Ok(Ok(Some(id))) => {
                seen.ids.push(id);
                seen.at.push(Instant::now());
            }
            Ok(Ok(None)) => return Ok(seen),
            Ok(Err(err)) => return Err(err),
            Err(_) => {}
        }
    }
}

/// Reads event positions off a `text/event-stream`.
struct EventReader(crate::client::EventStream);

impl EventReader {
    fn new(response: reqwest::Response) -> Self {
        EventReader(crate::client::EventStream::new(response))
    }

    async fn next(&mut self) -> anyhow::Result<Option<i64>> {
        Ok(self.0.next().await?.map(|e| e.id))
    }
}

/// Times status changes that write an event (a step change each time) against the same
/// change without one (progress inside a step, held back by the coalescing), on the
/// configured catalog (SQLite in a temporary folder unless `catalog.url` names another).
async fn outbox_cost(settings: &Config, changes: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = loopback_config(settings, dir.path().to_path_buf());
    // A database of its own on PostgreSQL (the server's must be new for its bootstrap).
    let url = match config.catalog_url() {
        url if url.starts_with("postgres") => match url.split_once('?') {
            Some((base, query)) => format!("{base}_outbox?{query}"),
            None => format!("{url}_outbox"),
        },
        url => url,
    };
    let catalog = kiln_catalog::Catalog::open(&url, 4).await?;
    let org = crate::admin::org_create(&catalog, "bench").await?;
    let org = kiln_core::OrgId::from(org["id"].as_str().context("an organization ID")?);
    let slice = catalog
        .create_slice(
            &org,
            kiln_catalog::NewSlice {
                name: "bench".into(),
                description: None,
                slice_type: kiln_core::types::SliceType::Standard,
                owner_type: kiln_core::types::OwnerType::Organization,
                owner_id: None,
            },
            "bench",
        )
        .await?;
    let store = catalog
        .create_store(
            &org,
            &slice.id,
            kiln_catalog::NewStore {
                name: "bench".into(),
                description: None,
                access_mode: kiln_core::types::AccessMode::Organization,
            },
            "bench",
        )
        .await?;
    let id = kiln_core::FileId::generate();
    catalog
        .create_file(kiln_catalog::NewFile {
            id: id.clone(),
            organization_id: org.clone(),
            store_id: store.id.clone(),
            file_name: "f.txt".into(),
            relative_path: None,
            mime_type: "text/plain".into(),
            file_size: 1,
            sha256: None,
            created_by: "bench".into(),
            original_blob: "unused".into(),
        })
        .await?;
    let job = catalog
        .claim("bench", Duration::from_secs(3600))
        .await?
        .and_then(kiln_catalog::Claimed::into_process)
        .context("the file's processing job")?;
    let events_before = catalog.event_position(&org).await?.last_seq;
    let mut with_event = Vec::with_capacity(changes);
    for i in 0..changes {
        let step = if i % 2 == 0 {
            Step::Chunking
        } else {
            Step::Embedding
        };
        let started = Instant::now();
        catalog
            .record_progress(&job, "bench", step, 50, Vec::new())
            .await?;
        with_event.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let events_mid = catalog.event_position(&org).await?.last_seq;
    let mut without = Vec::with_capacity(changes);
    for _ in 0..changes {
        let started = Instant::now();
        catalog
            .record_progress(&job, "bench", Step::Embedding, 50, Vec::new())
            .await?;
        without.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let events_after = catalog.event_position(&org).await?.last_seq;
    with_event.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "outbox cost on {:?}: a status change with its event vs without (same update and log)",
        catalog.dialect()
    );
    println!(
        "  with event       p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms ({} events written)",
        percentile(&with_event, 50.0),
        percentile(&with_event, 99.0),
        mean(&with_event),
        events_mid - events_before
    );
    println!(
        "  without          p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms ({} events written)",
        percentile(&without, 50.0),
        percentile(&without, 99.0),
        mean(&without),
        events_after - events_mid
    );
    println!(
        "  added by outbox  p50 {:+.3} ms, mean {:+.3} ms",
        percentile(&with_event, 50.0) - percentile(&without, 50.0),
        mean(&with_event) - mean(&without)
    );
    catalog.close().await;
    Ok(())
}
