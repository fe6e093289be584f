//! PDF: the text layer, page by page, read with `pdf_oxide` (chosen by measuring it against
//! `unpdf` and `pdf-extract` on real documents, see docs/architecture.md).
//!
//! Before trusting what the parser returns: a file cut short is refused (a parser would
//! "recover" whatever pages it reached), and an encrypted file is opened with the empty user
//! password (a PDF with only an owner password, which merely restricts printing or copying,
//! opens that way) or else reported as needing a password.

use crate::{Document, ExtractError, Section, SectionKind};

/// More pages than any real document has; a page tree claiming more is hostile.
const MAX_PAGES: usize = 100_000;

fn corrupt(reason: impl Into<String>) -> ExtractError {
    ExtractError::Corrupt(reason.into())
}

/// A complete PDF ends with `%%EOF` (followed at most by a little padding).
fn has_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(5).any(|w| w == b"%%EOF")
}

/// Pages are independent once the document is open: long files are read on up to one thread
/// per core (the caller's thread among them), pages dealt out in turn. In page order.
fn pages_in_parallel(
    document: &pdf_oxide::document::PdfDocument,
    pages: usize,
    options: &pdf_oxide::converters::ConversionOptions,
) -> Vec<(usize, Result<String, String>)> {
    let read = |index: usize| {
        let text = document
            .extract_text_with_options(index, options)
            .map_err(|e| e.to_string());
        (index, text)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(pages.div_ceil(PAGES_PER_THREAD))
        .max(1);
    if threads == 1 {
        return (0..pages).map(read).collect();
    }
    let mut out: Vec<(usize, Result<String, String>)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|k| {
                let read = &read;
                scope.spawn(move || (k..pages).step_by(threads).map(read).collect::<Vec<_>>())
            })
            .collect();
        let mut out: Vec<_> = (0..pages).step_by(threads).map(read).collect();
        for helper in helpers {
            // A panic in a helper is the parser's: carry it to the caller like its own.
            match helper.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    });
    out.sort_by_key(|(index, _)| *index);
    out
}

/// Below this many pages a second thread costs more than it saves.
const PAGES_PER_THREAD: usize = 8;

pub(crate) fn pdf(bytes: &[u8]) -> Result<Document, ExtractError> {
    if !has_end_marker(bytes) {
        return Err(corrupt(
            "The PDF is incomplete (it does not end with the end-of-file marker); upload the whole file.",
        ));
    }
    let document = pdf_oxide::document::PdfDocument::from_bytes(bytes.to_vec())
        .map_err(|e| corrupt(format!("The PDF cannot be read ({e}).")))?;
    if document.is_encrypted() {
        // The empty user password opens files that only restrict permissions.
        match document.authenticate(b"") {
            Ok(true) => {}
            Ok(false) => return Err(ExtractError::Encrypted),
            Err(e) => {
                return Err(corrupt(format!(
                    "The PDF's encryption cannot be read ({e})."
                )));
            }
        }
    }
    let pages = match document.page_count() {
        Ok(n) => n,
        Err(pdf_oxide::error::Error::EncryptedPdf) => return Err(ExtractError::Encrypted),
        Err(e) => return Err(corrupt(format!("The PDF has no readable pages ({e})."))),
    };
    if pages > MAX_PAGES {
        return Err(corrupt(format!(
            "The PDF claims {pages} pages, more than the {MAX_PAGES} Kiln reads."
        )));
    }
    // Plain text in reading order; tables are read as text (laying them out as aligned
    // columns cost time and did not change what the texts agree on).
    let options = pdf_oxide::converters::ConversionOptions {
        extract_tables: false,
        ..Default::default()
    };
    let mut sections = Vec::new();
    let mut unreadable = 0usize;
    let mut first_error = None;
    for (index, text) in pages_in_parallel(&document, pages, &options) {
        match text {
            Ok(text) => {
                if !text.trim().is_empty() {
                    sections.push(Section {
                        title: None,
                        page: Some(index as u32 + 1),
                        kind: SectionKind::Prose,
                        text,
                    });
                }
            }
            // One damaged page does not lose the others.
            Err(e) => {
                unreadable += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if pages > 0 && unreadable == pages {
        return Err(corrupt(format!(
            "No page of the PDF can be read ({}).",
            first_error.unwrap_or_default()
        )));
    }
    Ok(Document {
        sections,
        pages: Some(pages as u32),
        extractor: 0,
    })
}

#[cfg(test)]
mod tests {
    use crate::fixtures::{PdfPage as Page, pdf as build};
    use crate::{ExtractError, Format, extract};

    #[test]
    fn pages_in_order_with_their_numbers() {
        let bytes = build(
            &[
                Page::Text(&["Kilns fire clay (stoneware)", "at high heat."]),
                Page::Graphics,
                Page::Text(&["Glaze melts into glass."]),
            ],
            None,
        );
        let doc = extract(Format::Pdf, &bytes).unwrap();
        assert_eq!(doc.pages, Some(3));
        let pages: Vec<Option<u32>> = doc.sections.iter().map(|s| s.page).collect();
        assert_eq!(pages, [Some(1), Some(3)]);
        assert!(
            doc.sections[0].text.contains("Kilns fire clay (stoneware)"),
            "{doc:?}"
        );
        assert!(doc.sections[0].text.contains("at high heat."));
        assert!(doc.sections[1].text.contains("Glaze melts into glass."));
    }

    #[test]
    fn no_text_layer_is_no_text() {
        let bytes = build(&[Page::Graphics, Page::Graphics], None);
        assert_eq!(extract(Format::Pdf, &bytes), Err(ExtractError::NoText));
    }

    #[test]
    fn a_user_password_is_needed_an_owner_password_is_not() {
        let text = Page::Text(&["Confidential minutes of the kiln committee."]);
        let locked = build(std::slice::from_ref(&text), Some(("open sesame", "owner")));
        assert_eq!(extract(Format::Pdf, &locked), Err(ExtractError::Encrypted));
        let restricted = build(&[text], Some(("", "owner")));
        let doc = extract(Format::Pdf, &restricted).unwrap();
        assert!(
            doc.sections[0]
                .text
                .contains("Confidential minutes of the kiln committee."),
            "{doc:?}"
        );
    }

    #[test]
    fn truncated_and_garbage_are_corrupt() {
        let bytes = build(&[Page::Text(&["Some text on a page."])], None);
        let cut = &bytes[..bytes.len() * 2 / 3];
        assert!(matches!(
            extract(Format::Pdf, cut),
            Err(ExtractError::Corrupt(_))
        ));
        assert!(matches!(
            extract(Format::Pdf, b"%PDF-1.7\nnot really a pdf\n%%EOF\n"),
            Err(ExtractError::Corrupt(_))
        ));
    }
}
