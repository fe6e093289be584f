//! `kiln bench extract DIR`: extraction speed per format (pages/s, MB/s) over a folder, and for
//! PDFs the same files through poppler's `pdftotext` in the same run: its speed, and how far
//! the two texts agree (token-set similarity).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_extract::{Document, Format};

#[derive(Default)]
struct Tally {
    files: usize,
    failed: usize,
    bytes: u64,
    pages: u64,
    seconds: f64,
}

impl Tally {
    fn add(&mut self, bytes: u64, pages: u64, seconds: f64) {
        self.files += 1;
        self.bytes += bytes;
        self.pages += pages;
        self.seconds += seconds;
    }

    fn row(&self, label: &str) -> String {
        let secs = self.seconds.max(1e-9);
        format!(
            "{label:<12} {:>5} {:>6} {:>7} {:>9.3} {:>9.1} {:>8.2}",
            self.files,
            self.failed,
            self.pages,
            self.seconds,
            self.pages as f64 / secs,
            self.bytes as f64 / 1e6 / secs,
        )
    }
}

fn files_under(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        files_under(&entry?.path(), out)?;
    }
    Ok(())
}

/// Words, lowercased: the unit both texts are compared in.
fn token_set(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// |A ∩ B| / |A ∪ B| over the two texts' sets of words.
pub fn token_set_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (token_set(a), token_set(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// `pdftotext`'s text and its page count (pages end with a form feed), or why it failed.
fn pdftotext(path: &Path) -> Result<(String, u64), String> {
    let output = Command::new("pdftotext")
        .args(["-q", "-enc", "UTF-8"])
        .arg(path)
        .arg("-")
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(output.status.to_string());
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let pages = text.matches('\u{c}').count() as u64;
    Ok((text, pages))
}

fn text_of(document: &Document) -> String {
    let texts: Vec<&str> = document.sections.iter().map(|s| s.text.as_str()).collect();
    texts.join("\n")
}

pub fn extract(dir: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    files_under(dir, &mut files)?;
    files.sort();
    let have_pdftotext = Command::new("pdftotext").arg("-v").output().is_ok();
    if !have_pdftotext {
        println!(
            "pdftotext not found: PDFs are measured without the comparison \
             (scripts/bench-extract.sh installs Debian's poppler-utils)"
        );
    }
    let mut by_format: BTreeMap<String, Tally> = BTreeMap::new();
    let mut ours_vs = Tally::default();
    let mut poppler = Tally::default();
    let mut similarities = Vec::new();
    let mut largest_child_kib = 0;
    println!(
        "{:<48} {:>5} {:>9} {:>9} {:>6} {:>9}  outcome",
        "PDF", "pages", "kiln ms", "poppler", "sim", "child MiB"
    );
    for path in &files {
        let bytes = std::fs::read(path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Ok(file_type) = kiln_extract::detect(name, &bytes[..bytes.len().min(8192)]) else {
            continue;
        };
        let format = serde_json::to_value(file_type.format)?
            .as_str()
            .unwrap_or("?")
            .to_string();
        let started = Instant::now();
        let result = kiln_extract::extract(file_type.format, &bytes);
        let seconds = started.elapsed().as_secs_f64();
        let child_kib = kiln_extract::take_largest_child_rss_kib();
        largest_child_kib = largest_child_kib.max(child_kib);
        let child_mib = if child_kib > 0 {
            format!("{:.0}", child_kib as f64 / 1024.0)
        } else {
            "-".to_string()
        };
        let tally = by_format.entry(format).or_default();
        let (document, outcome) = match result {
            Ok(document) => {
                let pages = u64::from(document.pages.unwrap_or(1));
                tally.add(bytes.len() as u64, pages, seconds);
                (Some(document), "ok".to_string())
            }
            Err(error) => {
                tally.failed += 1;
                (None, format!("{error:?}"))
            }
        };
        if file_type.format != Format::Pdf {
            continue;
        }
        let label: String = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .display()
            .to_string()
            .chars()
            .take(48)
            .collect();
        if !have_pdftotext {
            println!(
                "{label:<48} {:>5} {:>9.1} {:>9} {:>6} {child_mib:>9}",
                "",
                seconds * 1e3,
                "",
                ""
            );
            continue;
        }
        let started = Instant::now();
        let reference = pdftotext(path);
        let poppler_seconds = started.elapsed().as_secs_f64();
        match (&document, reference) {
            (Some(document), Ok((text, pages))) if !text.trim().is_empty() => {
                let similarity = token_set_similarity(&text_of(document), &text);
                let ours_pages = u64::from(document.pages.unwrap_or(1));
                ours_vs.add(bytes.len() as u64, ours_pages, seconds);
                poppler.add(bytes.len() as u64, pages, poppler_seconds);
                if pages >= 2 {
                    similarities.push((label.clone(), similarity));
                }
                println!(
                    "{label:<48} {ours_pages:>5} {:>9.1} {:>9.1} {similarity:>6.3} {child_mib:>9}  {outcome}",
                    seconds * 1e3,
                    poppler_seconds * 1e3
                );
            }
            (_, reference) => println!(
                "{label:<48} {:>5} {:>9.1} {:>9.1} {:>6} {child_mib:>9}  kiln: {outcome}; pdftotext: {}",
                "",
                seconds * 1e3,
                poppler_seconds * 1e3,
                "-",
                match reference {
                    Ok((text, _)) if text.trim().is_empty() => "no text".to_string(),
                    Ok(_) => "ok".to_string(),
                    Err(e) => e,
                }
            ),
        }
    }
    println!();
    println!(
        "{:<12} {:>5} {:>6} {:>7} {:>9} {:>9} {:>8}",
        "format", "files", "failed", "pages", "seconds", "pages/s", "MB/s"
    );
    for (format, tally) in &by_format {
        println!("{}", tally.row(format));
    }
    if have_pdftotext && ours_vs.files > 0 {
        println!();
        println!("PDFs both extracted ({} files):", ours_vs.files);
        println!("{}", ours_vs.row("kiln"));
        println!("{}", poppler.row("pdftotext"));
        let ratio = (ours_vs.pages as f64 / ours_vs.seconds.max(1e-9))
            / (poppler.pages as f64 / poppler.seconds.max(1e-9));
        println!("kiln pages/s ÷ pdftotext pages/s: {ratio:.2}×");
        if !similarities.is_empty() {
            let min = similarities
                .iter()
                .map(|(_, s)| *s)
                .fold(f64::INFINITY, f64::min);
            let mean = similarities.iter().map(|(_, s)| s).sum::<f64>() / similarities.len() as f64;
            let below: Vec<&str> = similarities
                .iter()
                .filter(|(_, s)| *s < 0.95)
                .map(|(l, _)| l.as_str())
                .collect();
            println!(
                "token-set similarity on {} multi-page PDFs: min {min:.3}, mean {mean:.3}; below 0.95: {below:?}",
                similarities.len()
            );
        }
    }
    println!(
        "peak RSS: this process {:.0} MiB; largest PDF child process {:.0} MiB",
        super::peak_rss_mib(),
        largest_child_kib as f64 / 1024.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::token_set_similarity;

    #[test]
    fn similarity_is_jaccard_over_lowercased_words() {
        assert_eq!(
            token_set_similarity("The cat, the hat.", "the CAT hat"),
            1.0
        );
        assert_eq!(token_set_similarity("a b c d", "a b"), 0.5);
        assert_eq!(token_set_similarity("", ""), 1.0);
        assert_eq!(token_set_similarity("x", ""), 0.0);
    }
}
