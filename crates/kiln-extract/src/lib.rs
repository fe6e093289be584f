//! Kiln's text extraction: type detection from content (not only the name), decoding of any
//! common text encoding, and per-format extraction into sections that the chunker respects.
//!
//! This crate knows nothing of storage, HTTP or the catalog: bytes in, text out.

mod child;
mod decode;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod formats;
mod office;
mod pdf;
pub mod pdfium;
mod types;
mod xls;

pub use child::{ChildCommand, child_main, read_pdfs_in_children, take_largest_child_rss_kib};
pub use decode::decode_text;
pub use pdf::Part;
pub use types::{FileType, Format, SNIFF_BYTES, SUPPORTED_TYPES, detect};

/// The extractors' version: raised when a change would extract different text, so text stored
/// by an older version is extracted again instead of reused.
pub const EXTRACTOR_VERSION: u32 = 4;

/// What extraction produced: sections in reading order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Document {
    pub sections: Vec<Section>,
    /// Pages (PDF) or slides (PowerPoint) in the file, for formats that have them.
    #[serde(default)]
    pub pages: Option<u32>,
    /// The `EXTRACTOR_VERSION` that produced it.
    #[serde(default)]
    pub extractor: u32,
}

impl Document {
    /// Characters of text across sections.
    pub fn characters(&self) -> usize {
        self.sections.iter().map(|s| s.text.chars().count()).sum()
    }

    /// Whether any section holds visible text.
    pub fn has_text(&self) -> bool {
        self.sections.iter().any(|s| !s.text.trim().is_empty())
    }
}

/// A stretch of text with one structure: chunks never span two sections.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    /// A heading, sheet or slide title, if the format has one.
    pub title: Option<String>,
    /// 1-based page number, for formats with pages.
    pub page: Option<u32>,
    pub kind: SectionKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SectionKind {
    /// Prose: split at paragraphs, then sentences.
    Prose,
    /// Markdown: split at headings, then blocks.
    Markdown,
    /// Source code: split at blank lines, then lines.
    Code,
    /// Table rows, one per line; every chunk repeats the header line.
    Rows { header: String },
}

/// Why a file yields no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ExtractError {
    #[error("{0}")]
    Corrupt(String),
    #[error("the file contains no text")]
    NoText,
    #[error("the file is protected by a password")]
    Encrypted,
    #[error("{0}")]
    Unsupported(String),
    /// The file could not be read for a reason of the server's, not the file's (the PDF
    /// engine is not loaded).
    #[error("{0}")]
    Engine(String),
    /// Reading it took longer than the time limit (a PDF read in a child process, which is
    /// then killed).
    #[error("reading the file took too long")]
    Timeout,
}

/// Extracts the text of a file of a detected format.
///
/// Never panics: a parser that panics on a hostile or broken file (a bug of the parser, such
/// as an index out of bounds) makes it `Corrupt`.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Document, ExtractError> {
    let mut document = guarded(|| formats::extract(format, bytes))?;
    document.extractor = EXTRACTOR_VERSION;
    if document.has_text() {
        Ok(document)
    } else {
        Err(ExtractError::NoText)
    }
}

/// Runs a parser, a panic in it (a bug of the parser on a hostile or broken file) made
/// `Corrupt`.
fn guarded(
    parse: impl FnOnce() -> Result<Document, ExtractError> + std::panic::UnwindSafe,
) -> Result<Document, ExtractError> {
    std::panic::catch_unwind(parse).unwrap_or_else(|_| {
        Err(ExtractError::Corrupt(
            "the parser stopped on an inconsistency in the file".into(),
        ))
    })
}
