//! Assembling and running the server: catalog, blobs, first-start bootstrap, HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_api::{AppState, Metrics};
use kiln_blobs::Blobs;
use kiln_catalog::{Catalog, Dialect, NewApiKey};
use kiln_core::config::Config;
use kiln_core::config::EmbeddingProvider;
use kiln_embed::Embedder;
use kiln_embed::local::LocalEmbedder;
use kiln_index::ChunkIndex;
use kiln_pipeline::{IndexSink, Pipeline, PipelineConfig, Services};
use kiln_replica::Replica;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings;

/// The name of the organization created on a brand-new data dir.
pub const DEFAULT_ORGANIZATION: &str = "default";

/// Opens the catalog and blob store of a configuration (creating the data dir).
pub async fn open_storage(config: &Config) -> anyhow::Result<(Catalog, Blobs)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let catalog = Catalog::open(&config.catalog_url(), config.catalog.max_readers)
        .await
        .context("cannot open the catalog")?;
    let blobs = open_blobs(config).await?;
    Ok((catalog, blobs))
}

/// The configured blob storage: S3 when `blobs.url` is set, else the local folder.
pub async fn open_blobs(config: &Config) -> anyhow::Result<Blobs> {
    let blobs = match config.blobs.url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let b = &config.blobs;
            Blobs::open_s3(&kiln_blobs::S3Options {
                url: url.to_string(),
                endpoint: b.endpoint.clone(),
                region: b.region.clone(),
                access_key_id: b.access_key_id.clone(),
                secret_access_key: b.secret_access_key.clone(),
                allow_http: b.allow_http,
            })
            .await
        }
        None => Blobs::open_local(&config.blob_dir()).await,
    };
    blobs.context("cannot open blob storage")
}

/// On a catalog without organizations: creates `default` with an admin key and writes the
/// key to `DATA_DIR/initial-admin-key` (mode 0600).
pub async fn bootstrap(config: &Config, catalog: &Catalog) -> anyhow::Result<Option<NewApiKey>> {
    let Some((_org, key)) = catalog.bootstrap(DEFAULT_ORGANIZATION).await? else {
        return Ok(None);
    };
    let path = settings::initial_key_path(&config.data_dir);
    write_secret(&path, &format!("{}\n", key.value))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(key))
}

fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The embedder and the token counter the chunker measures with.
#[derive(Clone)]
pub struct Model {
    pub embedder: Arc<dyn Embedder>,
    /// The pipeline's counter: the local model keeps each text's tokens for the pass that
    /// embeds the same text soon after, which then does not tokenize it again.
    pub tokens: Arc<dyn kiln_pipeline::TokenCounter>,
    /// The same counts, keeping nothing: for sizing texts whose embedding must tokenize them
    /// as any caller's would (`kiln bench ingest`'s model-alone runs).
    pub counts_only: Arc<dyn kiln_pipeline::TokenCounter>,
}

/// The index's approximate-search settings from the configuration.
pub fn ann_options(config: &kiln_core::config::IndexConfig) -> kiln_index::AnnOptions {
    kiln_index::AnnOptions {
        threshold: config.ann_threshold,
        expansion_search: config.ann_expansion_search,
        fusion_expansion_search: config.ann_fusion_expansion_search,
        rescore_factor: config.ann_rescore_factor,
        ..kiln_index::AnnOptions::default()
    }
}

/// Loads the PDF engine: the configured library, or the pinned build in the models folder
/// (fetched if it is missing). With `reader` (the `kiln` binary), PDFs are read from now on in
/// a child process per file running it, killed at the extraction time limit.
pub async fn load_pdf_engine(config: &Config, reader: Option<PathBuf>) -> anyhow::Result<()> {
    let library = config.extract.pdfium_library.clone();
    let models_dir = config.models_dir();
    let library = tokio::task::spawn_blocking(move || match library {
        Some(library) => kiln_extract::pdfium::load(&library).map(|()| library),
        None => {
            tracing::info!(dir = %models_dir.display(), "making sure the PDF engine is present");
            kiln_extract::pdfium::ensure(&models_dir)
        }
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot load the PDF engine: {e}"))?;
    if let Some(program) = reader {
        let limit = Duration::from_secs(config.workers.extract_timeout_secs.max(1));
        kiln_extract::read_pdfs_in_children(kiln_extract::ChildCommand::kiln(
            program, &library, limit,
        ));
    }
    Ok(())
}

/// The local model's folder: the configured one, or the pinned model in the models dir,
/// fetched if it is missing (blocks meanwhile).
pub fn local_model_dir(config: &Config) -> anyhow::Result<PathBuf> {
    match &config.embedding.model_dir {
        Some(dir) => Ok(dir.clone()),
        None => {
            let models_dir = config.models_dir();
            tracing::info!(dir = %models_dir.display(), "making sure the embedding model is present");
            Ok(kiln_embed::fetch::ensure(&models_dir)?)
        }
    }
}

/// The local model's tokenizer as the chunker's counter. A count keeps the text's tokens for
/// the pass that embeds it when `keep` is set ([`kiln_embed::LocalModel::count_tokens`]); a
/// long section's spans come from one tokenizing.
pub struct ModelTokens {
    pub model: Arc<kiln_embed::LocalModel>,
    pub keep: bool,
}

impl kiln_pipeline::TokenCounter for ModelTokens {
    fn count(&self, text: &str) -> usize {
        match self.keep {
            true => self.model.count_tokens(text),
            false => self.model.count_tokens_only(text),
        }
    }

    fn spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
        self.model.token_spans(text)
    }
}

/// Loads the configured embedding model, fetching the local one if it is missing.
pub async fn load_model(config: &Config) -> anyhow::Result<Model> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Model> {
        let (embedding, models_dir) = (&config.embedding, config.models_dir());
        match embedding.provider {
            EmbeddingProvider::Local => {
                let dir = local_model_dir(&config)?;
                let model = Arc::new(
                    kiln_embed::LocalModel::load_for(&dir, embedding.precision, &models_dir)
                        .with_context(|| format!("cannot load the model from {}", dir.display()))?
                        .with_batch_size(embedding.batch_size),
                );
                let tokens = |keep| {
                    Arc::new(ModelTokens {
                        model: model.clone(),
                        keep,
                    })
                };
                Ok(Model {
                    tokens: tokens(true),
                    counts_only: tokens(false),
                    embedder: Arc::new(LocalEmbedder::new(model, embedding.pin_lanes)),
                })
            }
            EmbeddingProvider::Openai => {
                let embedder = kiln_embed::HttpEmbedder::new(embedding.openai.clone())?;
                // Without the provider's tokenizer, chunks are sized at ~4 characters a token.
                let counter: Arc<dyn kiln_pipeline::TokenCounter> =
                    Arc::new(|text: &str| text.chars().count().div_ceil(4));
                Ok(Model {
                    embedder: Arc::new(embedder),
                    tokens: counter.clone(),
                    counts_only: counter,
                })
            }
        }
    })
    .await?
}

/// How often an API node's replica looks at the index log when nothing wakes it.
const REPLICA_POLL: Duration = Duration::from_millis(500);

/// The index a server searches, where its pipeline writes chunks, and, for a cluster, the
/// replica keeping the local index in step with the catalog's index log. Chosen by the
/// catalog: with SQLite one process owns the data dir and writes its index directly; with
/// PostgreSQL any number of processes share the catalog, so chunks go to the catalog's log
/// and each API node replays it (a new one starting from the newest index snapshot in
/// `blobs`, when there is one).
pub async fn open_index(
    config: &Config,
    catalog: &Catalog,
    blobs: &Blobs,
    dims: usize,
) -> anyhow::Result<(Arc<ChunkIndex>, IndexSink, Option<Arc<Replica>>)> {
    let index_dir = config.data_dir.join("index");
    let ann = ann_options(&config.index);
    match catalog.dialect() {
        Dialect::Sqlite => {
            let index = Arc::new(
                // Opened on a background-priority thread: the index's own indexing and merge
                // threads inherit that priority, so merges never delay a request.
                kiln_background::background_thread("kiln-index-open", move || {
                    ChunkIndex::open_with(&index_dir, dims, ann)
                })
                .await?
                .context("cannot open the index")?,
            );
            Ok((index.clone(), IndexSink::Local(index), None))
        }
        Dialect::Postgres => {
            let replica = Arc::new(
                Replica::open(catalog.clone(), &index_dir, dims, ann, Some(blobs.clone()))
                    .await
                    .context("cannot open the index replica")?,
            );
            tracing::info!(opened = ?replica.opened, "index replica ready");
            Ok((
                replica.index().clone(),
                IndexSink::Log {
                    catalog: catalog.clone(),
                    blobs: blobs.clone(),
                },
                Some(replica),
            ))
        }
    }
}

/// Starts webhook delivery and the outbox's retention (on every node: both are safe to run
/// on many at once).
fn start_event_tasks(
    config: &Config,
    catalog: &Catalog,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let events = &config.events;
    let delivery = kiln_events::webhooks::DeliveryConfig {
        timeout: Duration::from_millis(events.webhook_timeout_ms.max(1)),
        retry_base: Duration::from_millis(events.webhook_retry_base_ms.max(1)),
        max_delay: Duration::from_millis(events.webhook_max_delay_ms.max(1)),
        retry_for: Duration::from_secs(events.webhook_retry_for_secs),
        ..Default::default()
    };
    let node = format!(
        "{}-{}",
        std::process::id(),
        &kiln_core::ids::generate_secret()[..8]
    );
    vec![
        tokio::spawn(kiln_events::webhooks::run(
            catalog.clone(),
            delivery,
            node,
            stop.clone(),
        )),
        tokio::spawn(kiln_events::run_retention(
            catalog.clone(),
            Duration::from_secs(events.retention_secs),
            i64::try_from(events.max_per_org).unwrap_or(i64::MAX),
            Duration::from_secs(60),
            stop.clone(),
        )),
    ]
}

/// Before workers start: queues every completed file whose vectors another embedding model
/// (or precision) made, so they are re-embedded with this one through a new generation.
async fn queue_reembedding(catalog: &Catalog, model: &Model) -> anyhow::Result<()> {
    let name = model.embedder.model();
    let queued = catalog
        .reembed_outdated(name)
        .await
        .context("queueing files made with another embedding model")?;
    if queued > 0 {
        tracing::info!(
            files = queued,
            model = name,
            "the embedding model changed: re-embedding files; their previous vectors stay searchable until each completes"
        );
    }
    Ok(())
}

/// Starts the workers and reaper of a configuration.
pub fn start_pipeline(config: &Config, services: Services) -> Pipeline {
    let workers = &config.workers;
    Pipeline::start(
        services,
        PipelineConfig {
            workers: if workers.count == 0 {
                PipelineConfig::default().workers
            } else {
                workers.count
            },
            jobs_per_worker: if workers.jobs_per_worker == 0 {
                PipelineConfig::default().jobs_per_worker
            } else {
                workers.jobs_per_worker
            },
            lease: Duration::from_secs(workers.lease_secs.max(1)),
            reap_every: Duration::from_secs(workers.reap_every_secs.max(1)),
            retry_base: Duration::from_millis(workers.retry_base_ms),
            extract_timeout: Duration::from_secs(workers.extract_timeout_secs.max(1)),
            ..PipelineConfig::default()
        },
    )
}

/// What a server can be started with besides its configuration.
#[derive(Default)]
pub struct Options {
    /// Extra routes behind the same layers (tests).
    pub extra: axum::Router<AppState>,
    /// A model already loaded (tests share one); otherwise the configured one is loaded.
    pub model: Option<Model>,
    /// The `kiln` binary, to read each PDF in a child process running it (`kiln serve`
    /// passes itself); `None` reads PDFs in this process.
    pub pdf_reader: Option<PathBuf>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin key created on this start, if the data dir was brand new.
    pub initial_key: Option<NewApiKey>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    pipeline: Option<Pipeline>,
    grace: Duration,
    /// The index replica's tailer and notification listener (a cluster's API node).
    background: Vec<JoinHandle<()>>,
    catalog: Catalog,
    /// The chunk index (benchmarks write straight into it).
    pub index: Arc<ChunkIndex>,
    /// The blob storage this server writes to.
    pub blobs: Blobs,
    /// The index replica (a cluster's API node; benchmarks write its snapshot).
    pub replica: Option<Arc<Replica>>,
}

impl Server {
    /// Opens storage, bootstraps a new data dir, binds and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        Self::start_with(config, Options::default()).await
    }

    /// As `start`, with a model already loaded (benchmarks start several servers on one).
    pub async fn start_with_model(config: Config, model: Model) -> anyhow::Result<Server> {
        let options = Options {
            model: Some(model),
            ..Options::default()
        };
        Self::start_with(config, options).await
    }

    /// As `start`, with options.
    pub async fn start_with(config: Config, options: Options) -> anyhow::Result<Server> {
        let model = match options.model {
            Some(model) => model,
            None => load_model(&config).await?,
        };
        load_pdf_engine(&config, options.pdf_reader).await?;
        let (catalog, blobs) = open_storage(&config).await?;
        let dims = model.embedder.dimensions();
        let (index, sink, replica) = open_index(&config, &catalog, &blobs, dims).await?;
        let initial_key = bootstrap(&config, &catalog).await?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let grace = Duration::from_secs(config.http.shutdown_grace_secs);
        if config.workers.enabled {
            queue_reembedding(&catalog, &model).await?;
        }
        let pipeline = config.workers.enabled.then(|| {
            start_pipeline(
                &config,
                Services {
                    catalog: catalog.clone(),
                    blobs: blobs.clone(),
                    index: sink,
                    embedder: model.embedder.clone(),
                    tokens: model.tokens.clone(),
                },
            )
        });
        let (shutdown, mut stop) = watch::channel(false);
        let mut background = Vec::new();
        if let Some(replica) = &replica {
            background.push(tokio::spawn(
                replica.clone().run(REPLICA_POLL, stop.clone()),
            ));
            if config.index.snapshot_every_secs > 0 {
                let every = Duration::from_secs(config.index.snapshot_every_secs);
                background.push(tokio::spawn(
                    replica.clone().write_snapshots(every, stop.clone()),
                ));
            }
            let nudged = replica.clone();
            background.extend(catalog.listen(kiln_catalog::INDEX_CHANNEL, move || nudged.nudge()));
        }
        background.extend(start_event_tasks(&config, &catalog, &stop));
        let events = kiln_events::EventHub::new(
            catalog.clone(),
            Duration::from_millis(config.events.poll_ms.max(1)),
            stop.clone(),
        );
        let upload_secret = catalog
            .server_secret("upload_url")
            .await
            .context("reading the upload-URL signing secret")?;
        let state = AppState {
            upload_signer: Arc::new(kiln_api::UploadSigner::new(&upload_secret)),
            catalog: catalog.clone(),
            blobs: blobs.clone(),
            index: index.clone(),
            embedder: model.embedder.clone(),
            // Without workers here, jobs are announced through the catalog (PostgreSQL).
            waker: pipeline.as_ref().map(Pipeline::waker).unwrap_or_default(),
            replica: replica.clone(),
            metrics: Arc::new(Metrics::new()),
            http: Arc::new(config.http.clone()),
            searchable: Arc::default(),
            events,
        };
        let app = kiln_api::router_with(state, options.extra);
        let task = tokio::spawn(async move {
            let mut stop_serving = stop.clone();
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_serving.wait_for(|stop| *stop).await;
                })
                .into_future();
            tokio::pin!(serve);
            tokio::select! {
                result = &mut serve => result?,
                _ = async {
                    let _ = stop.wait_for(|stop| *stop).await;
                    tokio::time::sleep(grace).await;
                } => tracing::warn!("shutdown grace period over; dropping open connections"),
            }
            Ok(())
        });
        tracing::info!(%addr, "Kiln is listening");
        Ok(Server {
            addr,
            initial_key,
            shutdown,
            task,
            pipeline,
            grace,
            catalog,
            index,
            blobs,
            background,
            replica,
        })
    }

    /// `http://ADDR`.
    /// The most originals this server's pipeline has had read and being parsed at once.
    pub fn parsing_peak(&self) -> usize {
        self.pipeline.as_ref().map_or(0, Pipeline::parsing_peak)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, finishes in-flight requests and closes storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.task.await.context("server task failed")?;
        if let Some(pipeline) = self.pipeline {
            pipeline.shutdown(self.grace).await;
        }
        for task in self.background {
            task.abort();
        }
        // Vector graphs saved now reopen at the next start without being rebuilt.
        let index = self.index.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || index.persist()).await? {
            tracing::warn!(error = %e, "could not save the vector graphs");
        }
        self.catalog.close().await;
        served
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// A running `kiln worker`: claims and processes jobs of a shared (PostgreSQL) catalog, and
/// answers only `/health`, `/ready` and `/metrics` on its own address. It holds no index: the
/// chunks it writes go to the catalog's index log, which the API nodes replay.
pub struct WorkerNode {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    pipeline: Pipeline,
    grace: Duration,
    catalog: Catalog,
    /// Webhook delivery and event retention.
    background: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct WorkerState {
    catalog: Catalog,
    blobs: Blobs,
}

impl WorkerNode {
    /// Opens storage, starts the workers and serves the operations endpoints on `listen`.
    pub async fn start(
        config: Config,
        listen: &str,
        options: Options,
    ) -> anyhow::Result<WorkerNode> {
        let model = match options.model {
            Some(model) => model,
            None => load_model(&config).await?,
        };
        load_pdf_engine(&config, options.pdf_reader).await?;
        let (catalog, blobs) = open_storage(&config).await?;
        if catalog.dialect() != Dialect::Postgres {
            anyhow::bail!(
                "kiln worker needs a catalog that every node shares: set catalog.url to postgres://… \
                 (on the embedded SQLite catalog, `kiln serve` runs the workers itself)"
            );
        }
        if config.blobs.url.as_deref().is_none_or(str::is_empty) {
            tracing::warn!(
                dir = %config.blob_dir().display(),
                "blobs are in a local folder: every node must see the same folder (set blobs.url to s3://… for a cluster)"
            );
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        queue_reembedding(&catalog, &model).await?;
        let pipeline = start_pipeline(
            &config,
            Services {
                catalog: catalog.clone(),
                blobs: blobs.clone(),
                index: IndexSink::Log {
                    catalog: catalog.clone(),
                    blobs: blobs.clone(),
                },
                embedder: model.embedder.clone(),
                tokens: model.tokens.clone(),
            },
        );
        let app = axum::Router::new()
            .route(
                "/health",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({"status": "ok", "role": "worker"}))
                }),
            )
            .route("/ready", axum::routing::get(worker_ready))
            .route("/metrics", axum::routing::get(worker_metrics))
            .with_state(WorkerState {
                catalog: catalog.clone(),
                blobs,
            });
        let (shutdown, mut stop) = watch::channel(false);
        let background = start_event_tasks(&config, &catalog, &stop);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await?;
            Ok(())
        });
        tracing::info!(%addr, "Kiln worker is running");
        Ok(WorkerNode {
            addr,
            shutdown,
            task,
            pipeline,
            grace: Duration::from_secs(config.http.shutdown_grace_secs),
            catalog,
            background,
        })
    }

    /// Stops claiming, lets jobs in hand finish within the grace time (the rest are
    /// re-queued when their lease runs out), and stops serving.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.pipeline.shutdown(self.grace).await;
        let served = self.task.await.context("worker task failed")?;
        for task in self.background {
            task.abort();
        }
        self.catalog.close().await;
        served
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

async fn worker_ready(
    axum::extract::State(state): axum::extract::State<WorkerState>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let catalog = state.catalog.ping().await.is_ok();
    let storage = state.blobs.ping().await.is_ok();
    let status = if catalog && storage {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let checks = serde_json::json!({"catalog": catalog, "storage": storage});
    (
        status,
        axum::Json(
            serde_json::json!({"status": if catalog && storage { "ready" } else { "not_ready" }, "checks": checks}),
        ),
    )
}

/// The queue as this worker's catalog sees it, in the OpenMetrics text format.
async fn worker_metrics(
    axum::extract::State(state): axum::extract::State<WorkerState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut text = String::from(
        "# TYPE kiln_jobs gauge\n# HELP kiln_jobs Jobs in the queue by kind and state.\n",
    );
    match state.catalog.job_counts().await {
        Ok(counts) => {
            for (kind, job_state, n) in counts {
                text.push_str(&format!(
                    "kiln_jobs{{kind=\"{kind}\",state=\"{job_state}\"}} {n}\n"
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count jobs"),
    }
    text.push_str("# EOF\n");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_chunk::{ChunkOptions, chunk};
    use kiln_extract::{Document, Section, SectionKind};

    /// Sentences in several scripts, with accents, CJK without spaces, code, a URL, numbers,
    /// an emoji and a word longer than WordPiece's longest: what the model's tokenizer splits
    /// and normalizes in every way it can.
    fn mixed_text(paragraphs: usize) -> String {
        let lines = [
            "Les élèves étudient l'économie à Zürich, puis à Besançon.",
            "日本語の文章は空白なしで続きます。中文句子也是如此。",
            "Ελληνικά κείμενα με τόνους και ΚΕΦΑΛΑΙΑ.",
            "fn area(r: f64) -> f64 { 3.14159 * r.powi(2) } // see https://example.com/a_b?c=d",
            "Pneumonoultramicroscopicsilicovolcanoconiosis is long; so is this: 🔥🔥 naïve café.",
            &"x".repeat(130),
            "Ünïcödé — “quotes”, ‘more’, and… ellipses; tabs\tand  double  spaces.",
        ];
        (0..paragraphs)
            .map(|i| format!("{i}. {}", lines[i % lines.len()]))
            .collect::<Vec<_>>()
            .join(if paragraphs.is_multiple_of(2) {
                "\n\n"
            } else {
                "\n"
            })
    }

    /// The real tokenizer's spans (byte offsets, WordPiece's pre-tokenizer) cut long sections
    /// exactly as tokenizing every candidate piece does.
    #[test]
    fn the_models_spans_cut_long_sections_as_counting_every_piece_would() {
        let models = kiln_embed::fetch::shared_models_dir();
        let dir = kiln_embed::fetch::ensure(&models).expect("the model can be fetched");
        let model = Arc::new(kiln_embed::LocalModel::load(&dir).expect("the model loads"));
        let tokens = ModelTokens {
            model: model.clone(),
            keep: false,
        };
        let exact = |text: &str| model.count_tokens_only(text);
        // The counter gives the spans (the chunker sizes from them only if it does).
        let sample = mixed_text(20);
        let spans = kiln_pipeline::TokenCounter::spans(&tokens, &sample);
        assert_eq!(spans.map(|s| s.len()), Some(exact(&sample)));
        for (kind, paragraphs) in [
            (SectionKind::Prose, 240),
            (SectionKind::Prose, 241),
            (SectionKind::Markdown, 120),
            (SectionKind::Code, 90),
        ] {
            let document = Document {
                sections: vec![Section {
                    title: None,
                    page: None,
                    kind: kind.clone(),
                    text: mixed_text(paragraphs),
                }],
                pages: None,
                extractor: 0,
            };
            for (max_tokens, overlap_tokens) in [(256, 50), (800, 400), (40, 0)] {
                let options = ChunkOptions {
                    max_tokens,
                    overlap_tokens,
                };
                let want = chunk(&document, options, &exact);
                let got = chunk(&document, options, &tokens);
                assert!(want.len() > 3, "{kind:?} {max_tokens}: {}", want.len());
                assert_eq!(got, want, "{kind:?} {max_tokens}/{overlap_tokens}");
                assert!(got.iter().all(|c| c.tokens <= max_tokens));
            }
        }
    }
}
