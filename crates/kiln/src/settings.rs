//! Effective configuration: defaults, then a TOML file, then `KILN_*` environment variables
//! (nested keys with `__`, e.g. `KILN_HTTP__REQUEST_TIMEOUT_SECS`), then command-line flags.
//!
//! The `KILN_` prefix is shared: clients and tests read their own variables under it
//! (`KILN_URL`, `KILN_API_KEY`, `KILN_MODELS_DIR`, `KILN_TEST_POSTGRES`, ...). A variable whose
//! first word names no section or key of the server's configuration is therefore left out with a
//! warning that names it and lists the known keys, rather than stopping the server; a misspelt
//! key inside a known section (`KILN_HTTP__REQEST_TIMEOUT_SECS`) is still an error, as is any
//! unknown key in the configuration file.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use kiln_core::config::Config;

/// Flags that override the configuration.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
}

pub fn load(overrides: &Overrides) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = &overrides.config_file {
        if !file.is_file() {
            anyhow::bail!("configuration file {} does not exist", file.display());
        }
        figment = figment.merge(Toml::file(file));
    }
    let known = top_level_keys();
    let ignored = ignored_env_vars(std::env::vars().map(|(name, _)| name), &known);
    if !ignored.is_empty() {
        eprintln!(
            "warning: ignoring {}: not server configuration (known keys: KILN_{})",
            ignored.join(", "),
            known
                .iter()
                .map(|k| k.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(", KILN_")
        );
    }
    figment = figment.merge(
        Env::prefixed("KILN_")
            .ignore(&["config"])
            .filter(move |key| known.contains(&first_word(key.as_str())))
            .split("__"),
    );
    if let Some(dir) = &overrides.data_dir {
        figment = figment.merge(Serialized::default("data_dir", dir));
    }
    if let Some(listen) = &overrides.listen {
        figment = figment.merge(Serialized::default("listen", listen));
    }
    let config: Config = figment
        .extract()
        .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))?;
    Ok(config)
}

/// The configuration's top-level keys (`data_dir`, `http`, ...).
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The first word of an environment key after the prefix: `http__timeout` -> `http`.
fn first_word(key: &str) -> String {
    key.split("__")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The `KILN_*` variables that name no top-level configuration key (`KILN_CONFIG` excepted),
/// sorted.
fn ignored_env_vars(names: impl Iterator<Item = String>, known: &[String]) -> Vec<String> {
    let mut ignored: Vec<String> = names
        .filter(|name| {
            name.strip_prefix("KILN_").is_some_and(|key| {
                let word = first_word(key);
                word != "config" && !known.contains(&word)
            })
        })
        .collect();
    ignored.sort();
    ignored
}

/// The configuration as TOML, every default included.
pub fn render(config: &Config) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(config)?)
}

/// Where the first admin key is written on a brand-new data dir.
pub fn initial_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("initial-admin-key")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kiln.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\n[http]\nrequest_timeout_secs = 7\n",
            )?;
            jail.set_env("KILN_DATA_DIR", "/from/env");
            jail.set_env("KILN_HTTP__MAX_JSON_BODY_BYTES", "2048");
            let mut overrides = Overrides {
                config_file: Some("kiln.toml".into()),
                ..Default::default()
            };
            let config = load(&overrides).expect("loads");
            assert_eq!(config.listen, "127.0.0.1:9000");
            assert_eq!(config.data_dir, PathBuf::from("/from/env"));
            assert_eq!(config.http.request_timeout_secs, 7);
            assert_eq!(config.http.max_json_body_bytes, 2048);
            overrides.data_dir = Some("/from/flag".into());
            assert_eq!(
                load(&overrides).unwrap().data_dir,
                PathBuf::from("/from/flag")
            );
            let rendered = render(&config).unwrap();
            assert!(rendered.contains("request_timeout_secs = 7"), "{rendered}");
            Ok(())
        });
    }

    #[test]
    fn client_and_test_variables_are_ignored_but_misspelt_keys_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KILN_API_KEY", "sk-client");
            jail.set_env("KILN_TEST_BACKEND", "cluster");
            jail.set_env("KILN_LISTEN", "127.0.0.1:9100");
            let config = load(&Overrides::default()).expect("client variables do not break it");
            assert_eq!(config.listen, "127.0.0.1:9100");
            jail.set_env("KILN_HTTP__REQEST_TIMEOUT_SECS", "3");
            let err = load(&Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("reqest_timeout_secs"), "{err}");
            Ok(())
        });
        let known = top_level_keys();
        assert!(known.contains(&"http".to_string()), "{known:?}");
        let names = [
            "KILN_URL",
            "KILN_HTTP__X",
            "KILN_CONFIG",
            "PATH",
            "KILN_DATA_DIR",
            "KILN_MODELS_DIR",
        ];
        assert_eq!(
            ignored_env_vars(names.iter().map(|n| n.to_string()), &known),
            ["KILN_MODELS_DIR", "KILN_URL"]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("kiln.toml", "lisen = \"x\"\n")?;
            let overrides = Overrides {
                config_file: Some("kiln.toml".into()),
                ..Default::default()
            };
            let err = load(&overrides).unwrap_err().to_string();
            assert!(err.contains("lisen"), "{err}");
            Ok(())
        });
    }
}
