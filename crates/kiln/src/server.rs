//! Assembling and running the server: catalog, blobs, first-start bootstrap, HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_api::{AppState, Metrics};
use kiln_blobs::Blobs;
use kiln_catalog::{Catalog, NewApiKey};
use kiln_core::config::Config;
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

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin key created on this start, if the data dir was brand new.
    pub initial_key: Option<NewApiKey>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens storage, bootstraps a new data dir, binds and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        Self::start_with(config, axum::Router::new()).await
    }

    /// As `start`, with extra routes behind the same layers (for tests).
    pub async fn start_with(
        config: Config,
        extra: axum::Router<AppState>,
    ) -> anyhow::Result<Server> {
        let (catalog, blobs) = open_storage(&config).await?;
        let initial_key = bootstrap(&config, &catalog).await?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let grace = Duration::from_secs(config.http.shutdown_grace_secs);
        let state = AppState {
            catalog: catalog.clone(),
            blobs,
            metrics: Arc::new(Metrics::new()),
            http: Arc::new(config.http.clone()),
        };
        let app = kiln_api::router_with(state, extra);
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
            catalog.close().await;
            Ok(())
        });
        tracing::info!(%addr, "Kiln is listening");
        Ok(Server {
            addr,
            initial_key,
            shutdown,
            task,
        })
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, finishes in-flight requests and closes storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task failed")?
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
