//! PDF: the text layer, page by page, read with PDFium (chosen by measuring it against
//! `pdf_oxide`, `unpdf` and `pdf-extract` on real documents, see docs/decisions/pdf-engine.md).
//!
//! Before trusting what the engine returns: a file cut short is refused (an engine would
//! "recover" whatever pages it reached), and an encrypted file is opened with the empty user
//! password (a PDF with only an owner password, which merely restricts printing or copying,
//! opens that way) or else reported as needing a password.

use crate::pdfium::{Glyphs, OpenError, Pdf};
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

/// The text after a sub- or superscript is set at least this much larger than the script.
const SCRIPT_RATIO: f64 = 1.15;
/// A gap wider than this share of the script's size after it ends a word.
const SCRIPT_GAP: f64 = 0.02;

/// A page's text from its characters in the engine's order, with one thing added: a word
/// ends where a smaller sub- or superscript returns to the text's size across a gap. PDFium
/// breaks no word there, so it writes TeX's `x₁ y₁` ("x1y1") and a footnote's marker and
/// first word ("¹Diese" → "1Diese", which a search for "Diese" misses) as one word;
/// `pdftotext` breaks both. A script that touches what follows (`H₂O` set without a kern)
/// stays one word; TeX's `\ce{H2O}` has the same gap after its script as a footnote marker
/// and reads "H2 O", as in `pdftotext`.
fn assemble(glyphs: &dyn Glyphs) -> String {
    let count = glyphs.count();
    let mut out = String::with_capacity(count);
    // The last character on the line that was not a space: its index and font size.
    let mut last: Option<(usize, f64)> = None;
    let mut high_surrogate: Option<u32> = None;
    for index in 0..count {
        let code = glyphs.code(index);
        let c = match code {
            0xD800..=0xDBFF => {
                if high_surrogate.replace(code).is_some() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
                continue;
            }
            0xDC00..=0xDFFF => high_surrogate
                .take()
                .map_or(char::REPLACEMENT_CHARACTER, |high| {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00);
                    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                }),
            _ => {
                if high_surrogate.take().is_some() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
        };
        if c.is_whitespace() || c == '\u{fffe}' {
            last = None;
        } else if !c.is_control() {
            let size = glyphs.size(index);
            if let Some((before, script)) = last
                && script > 0.0
                && size > script * SCRIPT_RATIO
                && let (Some((_, end)), Some((start, _))) =
                    (glyphs.span(before), glyphs.span(index))
                && f64::from(start - end) > SCRIPT_GAP * script
            {
                out.push(' ');
            }
            last = Some((index, size));
        }
        out.push(c);
    }
    if high_surrogate.is_some() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    out
}

/// PDFium's text as plain text: `\n` line ends, no control characters, and words broken
/// across lines made whole again — PDFium marks a hyphen it recognises as a line-end break
/// with U+FFFE and keeps the two halves together; a plain hyphen at the end of a line between
/// a letter and a lower-case letter is such a break too (as `pdftotext` reads it). Search then
/// finds "exploitation", not "ex-" and "ploitation".
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{fffe}' => {
                if chars.peek() == Some(&'\r') {
                    chars.next();
                }
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '-' if out.chars().next_back().is_some_and(char::is_alphabetic)
                && line_break_then_lowercase(chars.clone()) =>
            {
                while chars.next_if(|c| matches!(c, '\r' | '\n')).is_some() {}
            }
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether `rest` starts with one line break followed by a lower-case letter.
fn line_break_then_lowercase(mut rest: impl Iterator<Item = char>) -> bool {
    let mut next = rest.next();
    if next == Some('\r') {
        next = rest.next();
    }
    next == Some('\n') && rest.next().is_some_and(char::is_lowercase)
}

/// Reads a PDF: in a child process when the process asked for that
/// ([`crate::read_pdfs_in_children`]), else here.
pub(crate) fn pdf(bytes: &[u8]) -> Result<Document, ExtractError> {
    match crate::child::installed() {
        Some(command) => crate::child::run(command, bytes),
        None => read(bytes),
    }
}

/// Reads a PDF in this process.
pub(crate) fn read(bytes: &[u8]) -> Result<Document, ExtractError> {
    read_part(bytes, Part::WHOLE)
}

/// Which pages a reader takes: every `of`-th page from the `index`-th (0-based), so that
/// `of` readers share a file's pages evenly wherever its heavy pages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub of: usize,
}

impl Part {
    pub const WHOLE: Part = Part { index: 0, of: 1 };
}

/// `K/N`: the K-th of N parts, counted from 0.
impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a part K/N with K < N");
        let (index, of) = s.split_once('/').ok_or_else(bad)?;
        let part = Part {
            index: index.parse().map_err(|_| bad())?,
            of: of.parse().map_err(|_| bad())?,
        };
        if part.index < part.of {
            Ok(part)
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

/// Reads the pages of `part` in this process; the document's page count is the file's.
pub(crate) fn read_part(bytes: &[u8], part: Part) -> Result<Document, ExtractError> {
    if !has_end_marker(bytes) {
        return Err(corrupt(
            "The PDF is incomplete (it does not end with the end-of-file marker); upload the whole file.",
        ));
    }
    let document = match Pdf::open(bytes) {
        Ok(document) => document,
        Err(OpenError::Password) => return Err(ExtractError::Encrypted),
        Err(OpenError::Damaged(code)) => {
            let why = match code {
                3 => "not a PDF, or damaged beyond repair",
                5 => "an unsupported security handler",
                _ => "damaged",
            };
            return Err(corrupt(format!("The PDF cannot be read ({why}).")));
        }
        Err(OpenError::NotLoaded) => {
            return Err(ExtractError::Engine(
                "The PDF engine is not loaded on this server.".into(),
            ));
        }
    };
    let pages = document.pages();
    if pages > MAX_PAGES {
        return Err(corrupt(format!(
            "The PDF claims {pages} pages, more than the {MAX_PAGES} Kiln reads."
        )));
    }
    let mut sections = Vec::new();
    let mut unreadable = 0usize;
    let mine = (part.index..pages).step_by(part.of.max(1));
    let taken = mine.len();
    for index in mine {
        match document.read_page(index, |glyphs| tidy(&assemble(glyphs))) {
            Some(text) => {
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
            None => unreadable += 1,
        }
    }
    if taken > 0 && unreadable == taken {
        return Err(corrupt("No page of the PDF can be read."));
    }
    Ok(Document {
        sections,
        pages: Some(pages as u32),
        extractor: 0,
    })
}

#[cfg(test)]
mod tests {
    use crate::fixtures::{PdfPage as Page, pdf as build, pdf_engine};
    use crate::{ExtractError, Format, extract};

    #[test]
    fn pages_in_order_with_their_numbers() {
        pdf_engine();
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
    fn words_broken_across_lines_are_whole_again_and_line_ends_are_newlines() {
        use super::tidy;
        // PDFium's mark for a line-end hyphen it recognised, with or without the line end.
        assert_eq!(tidy("rhon\u{fffe}cus sem"), "rhoncus sem");
        assert_eq!(tidy("ex\u{fffe}\r\nploitation"), "exploitation");
        // A plain hyphen ending a line between letters, lower case after it.
        assert_eq!(
            tidy("l\u{2019}ex-\r\nploitation et"),
            "l\u{2019}exploitation et"
        );
        assert_eq!(tidy("opé-\nrations"), "opérations");
        // Not a broken word: a capital, a digit, or no letter before the hyphen.
        assert_eq!(tidy("Stoke-\r\nOn-Trent"), "Stoke-\nOn-Trent");
        assert_eq!(tidy("COVID-\n19"), "COVID-\n19");
        assert_eq!(tidy("pages 3-\nand"), "pages 3-\nand");
        // Line ends become \n; control characters other than tab go.
        assert_eq!(tidy("a\r\nb\rc\td\u{2}e\0"), "a\nb\nc\tde");
    }

    /// Characters as a test lays them out: code point, font size, start and end across.
    struct Laid(Vec<(u32, f64, f32, f32)>);

    impl crate::pdfium::Glyphs for Laid {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn code(&self, index: usize) -> u32 {
            self.0[index].0
        }
        fn size(&self, index: usize) -> f64 {
            self.0[index].1
        }
        fn span(&self, index: usize) -> Option<(f32, f32)> {
            Some((self.0[index].2, self.0[index].3))
        }
    }

    /// `text` set left to right, each character 6 pt wide at 12 pt, or 4 pt at 8 pt where
    /// `sizes` says `s`, with `gap` points after each script.
    fn laid(text: &str, sizes: &str, gap: f32) -> Laid {
        let mut x = 0.0;
        let mut after_script = false;
        let glyphs = text
            .chars()
            .zip(sizes.chars())
            .map(|(c, size)| {
                let (size, width) = if size == 's' { (8.0, 4.0) } else { (12.0, 6.0) };
                if after_script && size > 8.0 {
                    x += gap;
                }
                after_script = size == 8.0;
                x += width;
                (c as u32, size, x - width, x)
            })
            .collect();
        Laid(glyphs)
    }

    #[test]
    fn characters_become_text_with_a_break_where_a_script_ends_across_a_gap() {
        use super::assemble;
        assert_eq!(assemble(&laid("x1y1 z", "NsNsNN", 0.5)), "x1 y1 z");
        assert_eq!(assemble(&laid("x1y1 z", "NsNsNN", 0.0)), "x1y1 z");
        // Only where the size grows: a script's own start stays in the word.
        assert_eq!(assemble(&laid("H2O", "NsN", 0.0)), "H2O");
        assert_eq!(assemble(&laid("1Diese", "sNNNNN", 0.5)), "1 Diese");
        // A space in between already breaks the word.
        assert_eq!(assemble(&laid("1 Diese", "s NNNNN", 0.5)), "1 Diese");
        // Code points outside the basic plane, whole or as surrogate pairs; a lone half is
        // a replacement character.
        let codes = |codes: &[u32]| Laid(codes.iter().map(|&c| (c, 12.0, 0.0, 6.0)).collect());
        assert_eq!(assemble(&codes(&[0x1D465, 0x41])), "\u{1D465}A");
        assert_eq!(assemble(&codes(&[0xD835, 0xDC65, 0x41])), "\u{1D465}A");
        assert_eq!(
            assemble(&codes(&[0xD835, 0x41, 0xDC65, 0xD835])),
            "\u{FFFD}A\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn a_word_ends_where_a_script_returns_to_the_text_size_across_a_gap() {
        pdf_engine();
        // Helvetica: 12 pt text, 8 pt scripts raised or lowered by `Ts`. `[(1) -150] TJ`
        // moves on 150/1000 em after the script, as TeX's \scriptspace does.
        let page = |content: &str| {
            let bytes = build(&[Page::Content(content)], None);
            let doc = extract(Format::Pdf, &bytes).unwrap();
            doc.sections[0].text.trim().to_string()
        };
        let script = |before: &str, rise: i32, mark: &str, kern: i32, after: &str| {
            page(&format!(
                "BT /F1 12 Tf 72 700 Td ({before}) Tj /F1 8 Tf {rise} Ts [({mark}) {kern}] TJ \
                 /F1 12 Tf 0 Ts ({after}) Tj ET"
            ))
        };
        // TeX's x₁y₁, and a footnote's marker before its first word.
        assert_eq!(
            script("Then x", -3, "1", -150, "y holds."),
            "Then x1 y holds."
        );
        assert_eq!(script("", 4, "1", -150, "Diese Metrik"), "1 Diese Metrik");
        // A script touching what follows stays in its word, and so does a gap between
        // letters of one size.
        assert_eq!(script("Water is H", -3, "2", 0, "O."), "Water is H2O.");
        assert_eq!(
            page("BT /F1 12 Tf 72 700 Td [(Kil) -20 (n) -20 (s)] TJ ET"),
            "Kilns"
        );
    }

    #[test]
    fn a_part_takes_every_nth_page_and_knows_the_files_page_count() {
        pdf_engine();
        let bytes = build(
            &[
                Page::Text(&["one"]),
                Page::Text(&["two"]),
                Page::Text(&["three"]),
                Page::Text(&["four"]),
                Page::Text(&["five"]),
            ],
            None,
        );
        let pages = |part: &str| {
            let document = super::read_part(&bytes, part.parse().unwrap()).unwrap();
            assert_eq!(document.pages, Some(5));
            let read: Vec<(u32, String)> = document
                .sections
                .iter()
                .map(|s| (s.page.unwrap(), s.text.trim().to_string()))
                .collect();
            read
        };
        assert_eq!(
            pages("0/2"),
            [(1, "one".into()), (3, "three".into()), (5, "five".into())]
        );
        assert_eq!(pages("1/2"), [(2, "two".into()), (4, "four".into())]);
        assert_eq!(pages("0/1").len(), 5);
        for bad in ["2/2", "1", "a/2", "1/0"] {
            assert!(bad.parse::<super::Part>().is_err(), "{bad}");
        }
    }

    #[test]
    fn no_text_layer_is_no_text() {
        pdf_engine();
        let bytes = build(&[Page::Graphics, Page::Graphics], None);
        assert_eq!(extract(Format::Pdf, &bytes), Err(ExtractError::NoText));
    }

    #[test]
    fn a_user_password_is_needed_an_owner_password_is_not() {
        pdf_engine();
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
        pdf_engine();
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
