//! Assembling and running the server: catalog, blobs, first-start bootstrap, HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_api::{AppState, Metrics};
use kiln_blobs::Blobs;
use kiln_catalog::{Catalog, NewApiKey};
use kiln_core::config::Config;
use kiln_core::config::EmbeddingProvider;
use kiln_embed::Embedder;
use kiln_embed::local::LocalEmbedder;
use kiln_index::ChunkIndex;
use kiln_pipeline::{Pipeline, PipelineConfig, Services};
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
    let blobs = Blobs::open_local(&config.blob_dir())
        .await
        .context("cannot open blob storage")?;
    Ok((catalog, blobs))
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
    pub tokens: Arc<dyn kiln_pipeline::TokenCounter>,
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

/// Loads the configured embedding model, fetching the local one if it is missing.
pub async fn load_model(config: &Config) -> anyhow::Result<Model> {
    let embedding = config.embedding.clone();
    let models_dir = config.models_dir();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Model> {
        match embedding.provider {
            EmbeddingProvider::Local => {
                let dir = match &embedding.model_dir {
                    Some(dir) => dir.clone(),
                    None => {
                        tracing::info!(dir = %models_dir.display(), "making sure the embedding model is present");
                        kiln_embed::fetch::ensure(&models_dir)?
                    }
                };
                let model = Arc::new(
                    kiln_embed::LocalModel::load(&dir)
                        .with_context(|| format!("cannot load the model from {}", dir.display()))?
                        .with_batch_size(embedding.batch_size),
                );
                let counter = model.clone();
                Ok(Model {
                    embedder: Arc::new(LocalEmbedder::new(model)),
                    tokens: Arc::new(move |text: &str| {
                        counter
                            .tokenizer()
                            .encode(text, false)
                            .map(|e| e.len())
                            .unwrap_or(text.len() / 4)
                    }),
                })
            }
            EmbeddingProvider::Openai => {
                let embedder = kiln_embed::HttpEmbedder::new(embedding.openai)?;
                // Without the provider's tokenizer, chunks are sized at ~4 characters a token.
                Ok(Model {
                    embedder: Arc::new(embedder),
                    tokens: Arc::new(|text: &str| text.chars().count().div_ceil(4)),
                })
            }
        }
    })
    .await?
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
    pipeline: Pipeline,
    grace: Duration,
    catalog: Catalog,
    /// The chunk index (benchmarks write straight into it).
    pub index: Arc<ChunkIndex>,
}

impl Server {
    /// Opens storage, bootstraps a new data dir, binds and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        Self::start_with(config, Options::default()).await
    }

    /// As `start`, with options.
    pub async fn start_with(config: Config, options: Options) -> anyhow::Result<Server> {
        let model = match options.model {
            Some(model) => model,
            None => load_model(&config).await?,
        };
        load_pdf_engine(&config, options.pdf_reader).await?;
        let (catalog, blobs) = open_storage(&config).await?;
        let index_dir = config.data_dir.join("index");
        let dims = model.embedder.dimensions();
        let ann = ann_options(&config.index);
        let index = Arc::new(
            // Opened on a background-priority thread: the index's own indexing and merge
            // threads inherit that priority, so merges never delay a request.
            kiln_embed::lane::background_thread("kiln-index-open", move || {
                ChunkIndex::open_with(&index_dir, dims, ann)
            })
            .await
            .map_err(anyhow::Error::msg)?
            .context("cannot open the index")?,
        );
        let initial_key = bootstrap(&config, &catalog).await?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let grace = Duration::from_secs(config.http.shutdown_grace_secs);
        let workers = &config.workers;
        let pipeline = Pipeline::start(
            Services {
                catalog: catalog.clone(),
                blobs: blobs.clone(),
                index: index.clone(),
                embedder: model.embedder.clone(),
                tokens: model.tokens.clone(),
            },
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
        );
        let upload_secret = catalog
            .server_secret("upload_url")
            .await
            .context("reading the upload-URL signing secret")?;
        let state = AppState {
            upload_signer: Arc::new(kiln_api::UploadSigner::new(&upload_secret)),
            catalog: catalog.clone(),
            blobs,
            index: index.clone(),
            embedder: model.embedder.clone(),
            waker: pipeline.waker(),
            metrics: Arc::new(Metrics::new()),
            http: Arc::new(config.http.clone()),
            searchable: Arc::default(),
        };
        let app = kiln_api::router_with(state, options.extra);
        let (shutdown, mut stop) = watch::channel(false);
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
        })
    }

    /// `http://ADDR`.
    /// The most originals this server's pipeline has had read and being parsed at once.
    pub fn parsing_peak(&self) -> usize {
        self.pipeline.parsing_peak()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, finishes in-flight requests and closes storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.task.await.context("server task failed")?;
        self.pipeline.shutdown(self.grace).await;
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
