//! Effective configuration: defaults, then a TOML file, then `KILN_*` environment variables
//! (nested keys with `__`, e.g. `KILN_HTTP__REQUEST_TIMEOUT_SECS`), then command-line flags.

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
    figment = figment.merge(Env::prefixed("KILN_").split("__").ignore(&["config"]));
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
