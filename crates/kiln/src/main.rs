use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kiln::server::{self, Server};
use kiln::{admin, settings};
use kiln_core::config::{Config, LogFormat};
use kiln_core::types::Role;
use tracing_subscriber::EnvFilter;

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
    },
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage organizations and API keys.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
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
        org: String,
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = settings::Overrides {
        config_file: cli.config,
        data_dir: cli.data_dir,
        listen: None,
    };
    match cli.command {
        Command::Serve { listen } => {
            overrides.listen = listen;
            let config = settings::load(&overrides)?;
            init_logging(&config);
            let server = Server::start(config.clone()).await?;
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
