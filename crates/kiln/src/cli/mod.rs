//! The client commands, for the people and scripts that use a running Kiln: `login`, `sync`,
//! `search`, `files`, `stores`, `usage`. They speak only the public HTTP API (through
//! [`crate::client::ApiClient`]), with the URL and key of a profile (`kiln login`).
//!
//! Exit codes: 0 done (every synced file completed), 1 any other error, 2 usage (bad
//! arguments, no profile), 3 some files failed, 4 timed out waiting for processing, 5 the
//! server is unreachable, 6 the key was refused, 130 interrupted (Ctrl-C).

mod commands;
mod output;
pub mod profile;
mod sync;

pub use commands::{
    FilesCommand, SearchArgs, StoresCommand, UsageArgs, files, search, stores, usage,
};
pub use sync::{SyncArgs, sync};

use crate::client::{ApiClient, HttpFailure};

pub const USAGE: u8 = 2;
pub const SOME_FAILED: u8 = 3;
pub const TIMED_OUT: u8 = 4;
pub const UNREACHABLE: u8 = 5;
pub const AUTH_REFUSED: u8 = 6;
pub const INTERRUPTED: u8 = 130;

/// An outcome that ends the program with a given exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code an error ends the program with.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return exit.code;
        }
        if let Some(failure) = cause.downcast_ref::<HttpFailure>() {
            return match failure.status {
                401 | 403 => AUTH_REFUSED,
                _ => 1,
            };
        }
        if let Some(err) = cause.downcast_ref::<reqwest::Error>()
            && (err.is_connect() || err.is_timeout())
        {
            return UNREACHABLE;
        }
    }
    1
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    url: String,
    /// Read the key from standard input (else it is asked for on the terminal).
    #[arg(long)]
    key_stdin: bool,
}

/// `kiln login`: checks the key against the server and saves the profile.
pub async fn login(args: LoginArgs, profile_name: Option<String>) -> anyhow::Result<()> {
    let key = if args.key_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_string()
    } else {
        profile::ask_key()?
    };
    if key.is_empty() {
        return Err(Exit::new(USAGE, "no API key given").into());
    }
    let api = ApiClient::connect(&args.url, &key).await?;
    let name = profile::name(profile_name.as_deref());
    let path = profile::save(
        &name,
        &profile::Profile {
            url: args.url.trim_end_matches('/').to_string(),
            api_key: key,
        },
    )?;
    eprintln!(
        "Signed in to {} (organization {}); profile '{name}' saved in {}",
        args.url,
        api.org,
        path.display()
    );
    Ok(())
}

/// A client of the server the profile (or `KILN_URL` / `KILN_API_KEY`) names.
pub async fn connect(profile_name: Option<&str>) -> anyhow::Result<ApiClient> {
    let profile = profile::resolve(profile_name)?;
    ApiClient::connect(&profile.url, &profile.api_key)
        .await
        .map_err(|err| {
            let code = exit_code(&err);
            let hint = match code {
                UNREACHABLE => format!("cannot reach {}: {err:#}", profile.url),
                AUTH_REFUSED => format!("{} refused the key: {err:#}", profile.url),
                _ => format!("{err:#}"),
            };
            Exit::new(code, hint).into()
        })
}
