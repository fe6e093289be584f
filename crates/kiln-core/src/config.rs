//! Configuration types. Loading (TOML file, `KILN_*` environment, flags) lives in the binary;
//! this module only defines the shape and the defaults, so `kiln config show` can print them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder for the catalog, blobs and the initial admin key.
    pub data_dir: PathBuf,
    /// Address the HTTP server listens on.
    pub listen: String,
    pub catalog: CatalogConfig,
    pub blobs: BlobsConfig,
    pub http: HttpConfig,
    pub embedding: EmbeddingConfig,
    pub extract: ExtractConfig,
    pub workers: WorkerConfig,
    pub index: IndexConfig,
    pub events: EventsConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./kiln-data"),
            listen: "127.0.0.1:8080".to_string(),
            catalog: CatalogConfig::default(),
            blobs: BlobsConfig::default(),
            http: HttpConfig::default(),
            embedding: EmbeddingConfig::default(),
            extract: ExtractConfig::default(),
            workers: WorkerConfig::default(),
            index: IndexConfig::default(),
            events: EventsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Config {
    /// The catalog URL: the configured one, or SQLite in the data dir.
    pub fn catalog_url(&self) -> String {
        match &self.catalog.url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("catalog.db").display()
            ),
        }
    }

    /// Where models and the PDF engine are kept (fetched into) when no folder is given.
    pub fn models_dir(&self) -> PathBuf {
        self.embedding
            .models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    /// The folder for blobs when no object-store URL is configured.
    pub fn blob_dir(&self) -> PathBuf {
        self.blobs
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// `sqlite://PATH` (default: `DATA_DIR/catalog.db`).
    pub url: Option<String>,
    /// Read connections in the pool (SQLite writes go through one connection).
    pub max_readers: u32,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            url: None,
            max_readers: 8,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobsConfig {
    /// Local folder for blobs (default: `DATA_DIR/blobs`), when no `url` is given.
    pub dir: Option<PathBuf>,
    /// S3-compatible object storage, `s3://BUCKET/PREFIX` (every server and worker of a
    /// cluster must name the same). The settings below, when unset, come from the usual AWS
    /// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
    pub url: Option<String>,
    /// The S3 endpoint for servers other than AWS (e.g. `http://127.0.0.1:8333`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Whether an `http://` endpoint is allowed (it is always allowed on loopback).
    pub allow_http: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest JSON request body, in bytes.
    pub max_json_body_bytes: u64,
    /// Time limit for a request (uploads excepted), in seconds.
    pub request_timeout_secs: u64,
    /// Whether `/metrics` needs an API key.
    pub metrics_require_key: bool,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// The base URL clients reach Kiln at (e.g. `https://kiln.example.com`), used in signed
    /// upload URLs. Default: derived from the request's `Host` header, over `http`.
    pub public_url: Option<String>,
    /// How long a signed upload URL (and its unregistered upload) lives, in seconds.
    pub upload_url_ttl_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_json_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            metrics_require_key: false,
            shutdown_grace_secs: 30,
            public_url: None,
            upload_url_ttl_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `kiln=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 in-process on the CPU.
    Local,
    /// An OpenAI-compatible `/embeddings` endpoint.
    Openai,
}

/// How the local model computes (see `docs/decisions/embedding-speed.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// candle in f32: the reference.
    F32,
    /// ONNX Runtime with 8-bit weights per output channel: about 3.5× faster, vectors at
    /// cosine ≥ 0.99 to f32's.
    Int8,
}

/// Text extraction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// A PDFium shared library to load instead of the pinned build fetched into the models
    /// folder (for a platform without a pinned build).
    pub pdfium_library: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingConfig {
    pub provider: EmbeddingProvider,
    /// Where the local model and the PDF engine are fetched to (default: `DATA_DIR/models`).
    pub models_dir: Option<PathBuf>,
    /// A folder already holding the local model's files (skips fetching).
    pub model_dir: Option<PathBuf>,
    /// Texts per batch for the local model (4–8 is fastest on small CPUs).
    pub batch_size: usize,
    /// The local model's arithmetic: `int8` (ONNX Runtime, 8-bit weights; the default) or
    /// `f32` (candle, the reference vectors). Files record the model and precision their
    /// vectors were made with.
    pub precision: Precision,
    /// Binds each of the local model's lanes (one forward pass per core) to a CPU of its own,
    /// when there is one lane for each CPU the process may run on (Linux). Off: the
    /// scheduler places them (and may leave a core idle while two lanes share the other).
    pub pin_lanes: bool,
    pub openai: OpenAiEmbeddingConfig,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            provider: EmbeddingProvider::Local,
            models_dir: None,
            model_dir: None,
            batch_size: 8,
            precision: Precision::Int8,
            pin_lanes: true,
            openai: OpenAiEmbeddingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiEmbeddingConfig {
    /// e.g. `http://127.0.0.1:11434/v1`
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub dimensions: usize,
    pub batch_size: usize,
    pub timeout_secs: u64,
    /// Requests in flight to the provider at once, over all files (a file's batches go out
    /// side by side too), to keep a GPU server busy without flooding it.
    pub concurrency: usize,
}

impl Default for OpenAiEmbeddingConfig {
    fn default() -> Self {
        OpenAiEmbeddingConfig {
            base_url: "http://127.0.0.1:11434/v1".to_string(),
            model: "all-minilm".to_string(),
            api_key: None,
            dimensions: 384,
            batch_size: 32,
            timeout_secs: 30,
            concurrency: 4,
        }
    }
}

/// The embedded index's vector search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Stores with at least this many chunks are searched through an HNSW graph; smaller
    /// ones exactly.
    pub ann_threshold: usize,
    /// HNSW candidate list while searching (`ef_search`): higher is slower and more exact.
    /// 0: by the store's size (256 up to 100k chunks, about 1,600 at 1M).
    pub ann_expansion_search: usize,
    /// The candidate list when the graph feeds hybrid search's fusion (which takes 50 and
    /// mixes them with keyword hits). 0: a quarter of the semantic list, at least 256.
    pub ann_fusion_expansion_search: usize,
    /// A semantic search of a graph takes `top_k × this` candidates and keeps the best by
    /// exact score. 0: by the store's size (2 below 500k chunks, 4 from there).
    pub ann_rescore_factor: usize,
    /// A cluster's API nodes write a snapshot of their index to object storage about this
    /// often (one node, whichever comes first), for new nodes to start from. 0: never.
    pub snapshot_every_secs: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            ann_threshold: 20_000,
            ann_expansion_search: 0,
            ann_fusion_expansion_search: 0,
            ann_rescore_factor: 0,
            snapshot_every_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Workers inside `kiln serve` (0: one per CPU core); also how many files are parsed at once.
    pub count: usize,
    /// Jobs each worker has at work at once (0: 32). Their embedding requests share the
    /// model's lanes, so more than one per core keeps them fed. A file whose vectors are made
    /// and that only waits for its index commit (up to a second) no longer counts.
    pub jobs_per_worker: usize,
    /// Lease on a claimed job, in seconds; a heartbeat renews it.
    pub lease_secs: u64,
    /// First automatic-retry delay in milliseconds (doubles per try, with jitter).
    pub retry_base_ms: u64,
    /// Longest text extraction of one file, in seconds.
    pub extract_timeout_secs: u64,
    /// How often the lease reaper runs, in seconds.
    pub reap_every_secs: u64,
    /// Whether `kiln serve` runs workers too (`--no-workers` turns them off: an API node of a
    /// cluster whose work is done by `kiln worker` processes).
    pub enabled: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            count: 0,
            jobs_per_worker: 0,
            lease_secs: 60,
            retry_base_ms: 2000,
            extract_timeout_secs: 120,
            reap_every_secs: 5,
            enabled: true,
        }
    }
}

/// File lifecycle events: the stream (`GET …/events`), webhooks and the outbox's retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events are kept this many seconds (default 7 days)…
    pub retention_secs: u64,
    /// …and at most this many per organization; a stream asking to resume before what is
    /// kept is told to resync.
    pub max_per_org: u64,
    /// How often a node reads new events for its streams, in milliseconds (PostgreSQL also
    /// wakes it at once by notification).
    pub poll_ms: u64,
    /// Time limit of one webhook request, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// First webhook retry's delay in milliseconds (doubling per try, at most an hour).
    pub webhook_retry_base_ms: u64,
    /// Longest delay between two tries of a webhook delivery, in milliseconds (default 1 h).
    pub webhook_max_delay_ms: u64,
    /// How long a failing webhook delivery is retried before it is abandoned, in seconds.
    pub webhook_retry_for_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_secs: 7 * 24 * 3600,
            max_per_org: 1_000_000,
            poll_ms: 100,
            webhook_timeout_ms: 10_000,
            webhook_retry_base_ms: 10_000,
            webhook_max_delay_ms: 3_600_000,
            webhook_retry_for_secs: 24 * 3600,
        }
    }
}
