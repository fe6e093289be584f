//! Chroma's row in `kiln bench embed` and `kiln bench ingest`: `scripts/chroma-bench.py` adds
//! the same SciFact texts to an in-memory Chroma collection with Chroma's default embedder and
//! reports texts/s. Chroma fetches its model file from its own server; where that cannot be
//! reached, the script runs the same embedder class on Kiln's f32 export of the same weights
//! (written here once) and says so.

use std::path::{Path, PathBuf};

use kiln_embed::LocalModel;

#[derive(Debug, Clone, clap::Args)]
pub struct ChromaOptions {
    /// Chroma's row: this script, run with --python when present (it reports Chroma
    /// unavailable when the package is missing).
    #[arg(long, default_value = "scripts/chroma-bench.py")]
    pub chroma_script: PathBuf,
    /// The Python that has `chromadb` (e.g. a virtual environment's `bin/python`).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
}

/// What Chroma's run answered.
pub enum ChromaRun {
    /// Texts per second, and which model file ran.
    Measured { texts_per_s: f64, model: String },
    /// Not measured, and why.
    NotRun(String),
}

impl std::fmt::Display for ChromaRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChromaRun::Measured { texts_per_s, model } => write!(
                f,
                "{texts_per_s:>8.1} texts/s (a whole add() with its ONNX f32 embedder; model file: {model})"
            ),
            ChromaRun::NotRun(why) => f.write_str(why),
        }
    }
}

impl ChromaOptions {
    /// Chroma's `add()` of the first `texts` texts of `corpus`, or why not. `model_dir` is
    /// Kiln's model (exported for Chroma into `models_dir` if Chroma cannot fetch its own).
    pub async fn run(
        &self,
        corpus: &Path,
        texts: usize,
        model_dir: &Path,
        models_dir: &Path,
    ) -> ChromaRun {
        if !self.chroma_script.is_file() {
            return ChromaRun::NotRun(format!("not run: no {}", self.chroma_script.display()));
        }
        let export = tokio::task::spawn_blocking({
            let (dir, models_dir) = (model_dir.to_path_buf(), models_dir.to_path_buf());
            move || chroma_model(&dir, &models_dir)
        })
        .await;
        let exported = match export {
            Ok(Ok(dir)) => dir,
            Ok(Err(err)) => return ChromaRun::NotRun(format!("not run: {err:#}")),
            Err(err) => return ChromaRun::NotRun(format!("not run: {err}")),
        };
        let mut command = std::process::Command::new(&self.python);
        command
            .arg(&self.chroma_script)
            .arg("--corpus")
            .arg(corpus)
            .arg("--texts")
            .arg(texts.to_string())
            .arg("--model-dir")
            .arg(exported);
        let python = self.python.display().to_string();
        let output = match tokio::task::spawn_blocking(move || command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => return ChromaRun::NotRun(format!("not run: {python}: {err}")),
            Err(err) => return ChromaRun::NotRun(format!("not run: {err}")),
        };
        let line = String::from_utf8_lossy(&output.stdout);
        let answer: serde_json::Value = match line.lines().last().map(serde_json::from_str) {
            Some(Ok(answer)) => answer,
            _ => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let last = stderr.lines().last().unwrap_or("no output");
                return ChromaRun::NotRun(format!("failed: {last}"));
            }
        };
        match (
            answer["texts_per_s"].as_f64(),
            answer["unavailable"].as_str(),
        ) {
            (Some(texts_per_s), _) => ChromaRun::Measured {
                texts_per_s,
                model: answer["model"].as_str().unwrap_or("?").to_string(),
            },
            (None, Some(why)) => ChromaRun::NotRun(format!("unavailable: {why}")),
            _ => ChromaRun::NotRun(format!("unreadable answer: {answer}")),
        }
    }
}

/// The folder Chroma's embedder is pointed at when its own download fails: Kiln's f32 export
/// of the model (`onnx/model.onnx`, written once) and its tokenizer.
fn chroma_model(model_dir: &Path, models_dir: &Path) -> anyhow::Result<PathBuf> {
    let out = models_dir.join("chroma-all-MiniLM-L6-v2");
    let onnx = out.join("onnx");
    std::fs::create_dir_all(&onnx)?;
    let model = onnx.join("model.onnx");
    if !model.is_file() {
        let runtime = kiln_embed::onnx::ensure_runtime(models_dir)?;
        // Written beside and renamed, so an interrupted export is never taken for a model.
        let partial = onnx.join("model.onnx.partial");
        LocalModel::export_onnx(model_dir, &runtime, &partial)?;
        std::fs::rename(&partial, &model)?;
    }
    std::fs::copy(
        model_dir.join("tokenizer.json"),
        onnx.join("tokenizer.json"),
    )?;
    Ok(out)
}
