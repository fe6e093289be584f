//! Profiles: a server's URL and an API key under a name, kept in the user's config dir
//! (`$XDG_CONFIG_HOME/kiln/profiles.toml`, else `~/.config/kiln/profiles.toml`), readable by
//! the user alone (mode 0600). `KILN_PROFILE` picks one; `KILN_URL` and `KILN_API_KEY`
//! override what it holds.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{Exit, USAGE};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub api_key: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProfilesFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// The profile name in effect: the flag, else `KILN_PROFILE`, else `default`.
pub fn name(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("KILN_PROFILE").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "default".to_string())
}

/// The profiles file.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("kiln").join("profiles.toml"))
}

fn read() -> anyhow::Result<ProfilesFile> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProfilesFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves `profile` as `name` (replacing one of that name); the file is written whole with
/// mode 0600 and moved into place. Returns its path.
pub fn save(name: &str, profile: &Profile) -> anyhow::Result<PathBuf> {
    let mut all = read()?;
    all.profiles.insert(name.to_string(), profile.clone());
    let path = path()?;
    let dir = path.parent().context("the profiles file has a folder")?;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let temp = dir.join(".profiles.toml.tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(toml::to_string(&all)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

/// The URL and key to use: the profile's, with `KILN_URL` and `KILN_API_KEY` over them.
pub fn resolve(flag: Option<&str>) -> anyhow::Result<Profile> {
    let name = name(flag);
    let stored = read()?.profiles.remove(&name);
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let url = env("KILN_URL").or_else(|| stored.as_ref().map(|p| p.url.clone()));
    let key = env("KILN_API_KEY").or_else(|| stored.as_ref().map(|p| p.api_key.clone()));
    match (url, key) {
        (Some(url), Some(api_key)) => Ok(Profile { url, api_key }),
        _ => Err(Exit::new(
            USAGE,
            format!(
                "no server for profile '{name}': run `kiln login --url URL` (or set KILN_URL and KILN_API_KEY)"
            ),
        )
        .into()),
    }
}

/// Asks for the key on the terminal without echoing it.
pub fn ask_key() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Exit::new(
            USAGE,
            "standard input is not a terminal: pass the key with --key-stdin",
        )
        .into());
    }
    eprint!("API key: ");
    std::io::stderr().flush()?;
    let before = rustix::termios::tcgetattr(&stdin)?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &before)?;
    eprintln!();
    read?;
    Ok(line.trim().to_string())
}
