//! Cutting extracted text into chunks bounded by the embedding model's own tokens, with
//! overlap, cutting at structure (sections, headings, paragraphs, sentences; table rows with
//! their header) before it cuts mid-sentence. The token counter is passed in, so this crate
//! knows no model.

use kiln_extract::{Document, Section, SectionKind};
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

/// A chunk of a document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Chunk {
    pub index: u32,
    pub text: String,
    pub page: Option<u32>,
    pub tokens: usize,
}

/// Counts tokens of the embedding model.
pub trait TokenCounter: Send + Sync {
    fn count(&self, text: &str) -> usize;

    /// Where `text`'s tokens lie, as byte ranges in order, for a counter that can say (`None`
    /// by default). A section too long for one chunk is then tokenized once and the
    /// splitter's candidate pieces are sized from these spans, instead of each candidate
    /// being tokenized anew: text-splitter sizes a dozen or more candidates for every chunk
    /// it cuts.
    fn spans(&self, _text: &str) -> Option<Vec<(usize, usize)>> {
        None
    }
}

impl<F: Fn(&str) -> usize + Send + Sync> TokenCounter for F {
    fn count(&self, text: &str) -> usize {
        self(text)
    }
}

#[derive(Clone, Copy)]
struct Sizer<'a>(&'a dyn TokenCounter);

impl ChunkSizer for Sizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count(chunk)
    }
}

/// Sizes pieces of one text from its tokens' spans, made once (see [`TokenCounter::spans`]).
struct SpanSizer<'a> {
    text: &'a str,
    spans: Vec<(usize, usize)>,
    exact: &'a dyn TokenCounter,
}

impl<'a> SpanSizer<'a> {
    /// For `text`, if `counter` gives its spans in order (each starting no earlier, and
    /// ending no earlier, than the one before).
    fn new(text: &'a str, counter: &'a dyn TokenCounter) -> Option<SpanSizer<'a>> {
        let spans = counter.spans(text)?;
        let ordered = spans
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
        ordered.then_some(SpanSizer {
            text,
            spans,
            exact: counter,
        })
    }
}

impl ChunkSizer for SpanSizer<'_> {
    /// The tokens a piece overlaps. The splitter's pieces are slices of the text and cut at
    /// whitespace or punctuation, where a tokenizer that splits words there (WordPiece's
    /// BERT pre-tokenizer, as every counter that gives spans) tokenizes the piece alone as it
    /// tokenized the whole. A piece that cuts through a token counts one more at that edge (a
    /// word's fragment may tokenize differently alone); one that is not a slice of the text
    /// is tokenized itself.
    fn size(&self, chunk: &str) -> usize {
        let from = (chunk.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        if from > self.text.len() || chunk.len() > self.text.len() - from {
            return self.exact.count(chunk);
        }
        let to = from + chunk.len();
        let first = self.spans.partition_point(|&(_, end)| end <= from);
        let last = self.spans.partition_point(|&(start, _)| start < to);
        if first >= last {
            return 0;
        }
        let cut_at_start = usize::from(self.spans[first].0 < from);
        let cut_at_end = usize::from(self.spans[last - 1].1 > to);
        last - first + cut_at_start + cut_at_end
    }
}

/// Chunk size and overlap, in tokens. The overlap must be less than the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl ChunkOptions {
    fn overlap(self) -> usize {
        self.overlap_tokens.min(self.max_tokens.saturating_sub(1))
    }
}

/// Cuts a document into chunks; chunks never span two sections.
pub fn chunk(document: &Document, options: ChunkOptions, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for section in &document.sections {
        let pieces = match whole_section(section, options, counter) {
            Some(whole) => vec![whole],
            None => split_section(section, options, counter),
        };
        for (text, tokens) in pieces {
            if text.trim().is_empty() {
                continue;
            }
            chunks.push(Chunk {
                index: chunks.len() as u32,
                tokens,
                text,
                page: section.page,
            });
        }
    }
    chunks
}

/// A prose, code or Markdown section that fits in one chunk, as that chunk (trimmed, as the
/// splitters trim) with its token count. The splitters would return the same chunk, but only
/// after sizing candidate pieces: ~38 tokenizations of a one-chunk SciFact abstract, where
/// this takes one.
fn whole_section(
    section: &Section,
    options: ChunkOptions,
    counter: &dyn TokenCounter,
) -> Option<(String, usize)> {
    if matches!(section.kind, SectionKind::Rows { .. }) {
        return None;
    }
    let text = section.text.trim();
    // Every word is at least one token: a section of more words cannot fit, and is not
    // tokenized whole for nothing.
    if text
        .split_whitespace()
        .nth(options.max_tokens.max(1))
        .is_some()
    {
        return None;
    }
    let tokens = counter.count(text);
    (tokens <= options.max_tokens.max(1)).then(|| (text.to_string(), tokens))
}

fn config<S: ChunkSizer>(max: usize, overlap: usize, sizer: S) -> ChunkConfig<S> {
    ChunkConfig::new(max.max(1))
        .with_sizer(sizer)
        .with_overlap(overlap.min(max.saturating_sub(1)))
        .expect("overlap is less than the chunk size")
}

/// Prose, code or Markdown cut by text-splitter, sized by `sizer`.
fn split_text<S: ChunkSizer>(
    kind: &SectionKind,
    text: &str,
    max: usize,
    overlap: usize,
    sizer: S,
) -> Vec<String> {
    let config = config(max, overlap, sizer);
    let pieces: Vec<&str> = match kind {
        SectionKind::Markdown => MarkdownSplitter::new(config).chunks(text).collect(),
        _ => TextSplitter::new(config).chunks(text).collect(),
    };
    pieces.into_iter().map(str::to_string).collect()
}

/// A section's pieces with their token counts (each piece tokenized once, by `counter`).
fn split_section(
    section: &Section,
    options: ChunkOptions,
    counter: &dyn TokenCounter,
) -> Vec<(String, usize)> {
    let max = options.max_tokens;
    let overlap = options.overlap();
    let counted = |text: String| {
        let tokens = counter.count(&text);
        (text, tokens)
    };
    let kind = &section.kind;
    match kind {
        SectionKind::Rows { header } => rows(header, &section.text, options, counter)
            .into_iter()
            .map(counted)
            .collect(),
        _ => match SpanSizer::new(&section.text, counter) {
            // Sized from the spans; a piece they sized too small (a cut through a word that
            // tokenizes longer alone) is cut again, counting exactly.
            Some(spans) => split_text(kind, &section.text, max, overlap, spans)
                .into_iter()
                .map(counted)
                .flat_map(|(text, tokens)| match tokens > max.max(1) {
                    false => vec![(text, tokens)],
                    true => split_text(kind, &text, max, overlap, Sizer(counter))
                        .into_iter()
                        .map(counted)
                        .collect(),
                })
                .collect(),
            None => split_text(kind, &section.text, max, overlap, Sizer(counter))
                .into_iter()
                .map(counted)
                .collect(),
        },
    }
}

/// Packs whole rows under the header; a row too long for a chunk on its own is cut as prose
/// (each piece still under the header). Overlap repeats trailing rows.
fn rows(
    header: &str,
    body: &str,
    options: ChunkOptions,
    counter: &dyn TokenCounter,
) -> Vec<String> {
    let budget = options
        .max_tokens
        .saturating_sub(counter.count(header) + 1)
        .max(options.max_tokens / 2)
        .max(1);
    let mut pieces: Vec<(String, usize)> = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let tokens = counter.count(line);
        if tokens <= budget {
            pieces.push((line.to_string(), tokens));
        } else {
            for part in TextSplitter::new(config(budget, 0, Sizer(counter))).chunks(line) {
                pieces.push((part.to_string(), counter.count(part)));
            }
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < pieces.len() {
        let mut end = start;
        let mut used = 0;
        while end < pieces.len() && (end == start || used + pieces[end].1 < budget) {
            used += pieces[end].1 + 1;
            end += 1;
        }
        let lines: Vec<&str> = pieces[start..end].iter().map(|(t, _)| t.as_str()).collect();
        out.push(format!("{header}\n{}", lines.join("\n")));
        if end >= pieces.len() {
            break;
        }
        // Step back over trailing rows that fit in the overlap, but always move forward.
        let mut next = end;
        let mut carried = 0;
        while next > start + 1 && carried + pieces[next - 1].1 <= options.overlap() {
            carried += pieces[next - 1].1;
            next -= 1;
        }
        start = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_extract::Section;

    /// One token per whitespace-separated word.
    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn doc(kind: SectionKind, text: &str) -> Document {
        Document {
            sections: vec![Section {
                title: None,
                page: Some(3),
                kind,
                text: text.to_string(),
            }],
            pages: None,
            extractor: 0,
        }
    }

    #[test]
    fn a_section_that_fits_is_one_chunk_counted_once_as_the_splitters_cut_it() {
        let options = ChunkOptions {
            max_tokens: 60,
            overlap_tokens: 20,
        };
        let sections = [
            (
                SectionKind::Prose,
                "\n  First paragraph here.\n\nSecond one, short.  \n",
            ),
            (
                SectionKind::Markdown,
                "# Title\n\nSome *text* under it.\n\n## Sub\n\n- a\n- b\n",
            ),
            (
                SectionKind::Code,
                "fn main() {\n    println!(\"hi\");\n}\n\n",
            ),
        ];
        for (kind, text) in sections {
            let calls = std::sync::atomic::AtomicUsize::new(0);
            let counting = |t: &str| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                words(t)
            };
            let chunks = chunk(&doc(kind.clone(), text), options, &counting);
            assert_eq!(calls.into_inner(), 1, "{kind:?}: tokenized once");
            let section = &doc(kind.clone(), text).sections[0];
            let split = split_section(section, options, &words);
            let got: Vec<(String, usize)> =
                chunks.into_iter().map(|c| (c.text, c.tokens)).collect();
            assert_eq!(got, split, "{kind:?}: the splitter's own cut");
        }
        // Too many words to fit: split, never counted whole.
        let long = vec!["word"; 200].join(" ");
        let counted_whole = std::sync::atomic::AtomicBool::new(false);
        let watching = |t: &str| {
            if t == long {
                counted_whole.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            words(t)
        };
        let chunks = chunk(&doc(SectionKind::Prose, &long), options, &watching);
        assert!(chunks.len() > 3 && chunks.iter().all(|c| c.tokens <= 60));
        assert!(!counted_whole.into_inner());
    }

    /// Words as tokens, like [`words`], with their spans when `spans` is set; counts the
    /// calls. With `long_counts_two`, a word over 12 bytes counts as two tokens when counted
    /// but has one span: a counter whose spans size some pieces too small.
    #[derive(Default)]
    struct Words {
        spans: bool,
        long_counts_two: bool,
        counted: std::sync::atomic::AtomicUsize,
        spanned: std::sync::atomic::AtomicUsize,
    }

    impl TokenCounter for Words {
        fn count(&self, text: &str) -> usize {
            self.counted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            text.split_whitespace()
                .map(|w| 1 + usize::from(self.long_counts_two && w.len() > 12))
                .sum()
        }

        fn spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
            self.spanned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let spans = text.split_whitespace().map(|w| {
                let at = w.as_ptr() as usize - text.as_ptr() as usize;
                (at, at + w.len())
            });
            self.spans.then(|| spans.collect())
        }
    }

    fn calls(words: &Words) -> (usize, usize) {
        (
            words.counted.load(std::sync::atomic::Ordering::Relaxed),
            words.spanned.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    #[test]
    fn a_long_section_is_tokenized_once_and_cut_as_counting_each_piece_would() {
        let prose = (0..120)
            .map(|i| format!("Sentence number {i} says a little, and then a little more."))
            .collect::<Vec<_>>()
            .join("\n\n");
        let markdown = (0..30)
            .map(|i| format!("## Part {i}\n\nSome text of part {i}, with a [link](x) in it.\n"))
            .collect::<Vec<_>>()
            .join("\n");
        let code = (0..80)
            .map(|i| format!("fn f{i}() {{\n    let x = {i};\n}}\n"))
            .collect::<Vec<_>>()
            .join("\n");
        for (kind, text) in [
            (SectionKind::Prose, prose),
            (SectionKind::Markdown, markdown),
            (SectionKind::Code, code),
        ] {
            for (max, overlap) in [(40, 10), (64, 0), (17, 8)] {
                let options = ChunkOptions {
                    max_tokens: max,
                    overlap_tokens: overlap,
                };
                let document = doc(kind.clone(), &text);
                let exact = Words::default();
                let spanned = Words {
                    spans: true,
                    ..Words::default()
                };
                let want = chunk(&document, options, &exact);
                let got = chunk(&document, options, &spanned);
                assert!(want.len() > 5, "{kind:?} {max}: {}", want.len());
                assert_eq!(got, want, "{kind:?} {max}/{overlap}: the same cut");
                // Each chunk tokenized once, and the section once for its spans; counting
                // each candidate tokenizes several times as many.
                assert_eq!(calls(&spanned), (want.len(), 1), "{kind:?} {max}");
                assert!(
                    calls(&exact).0 > 3 * want.len(),
                    "{kind:?}: {:?}",
                    calls(&exact)
                );
            }
        }
    }

    #[test]
    fn a_piece_its_spans_sized_too_small_is_cut_again_by_exact_counts() {
        let text = (0..200)
            .map(|i| match i % 3 {
                0 => format!("extraordinarily{i}"),
                _ => format!("w{i}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let options = ChunkOptions {
            max_tokens: 30,
            overlap_tokens: 5,
        };
        let counter = Words {
            spans: true,
            long_counts_two: true,
            ..Words::default()
        };
        let chunks = chunk(&doc(SectionKind::Prose, &text), options, &counter);
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(c.tokens <= 30, "{c:?}");
            assert_eq!(c.tokens, counter.count(&c.text));
        }
        // Every word is in some chunk.
        let joined = chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>();
        for word in text.split_whitespace() {
            assert!(
                joined
                    .iter()
                    .any(|c| c.split_whitespace().any(|w| w == word)),
                "{word} lost"
            );
        }
    }

    #[test]
    fn chunks_respect_the_token_bound_and_cut_at_sentences() {
        let sentence = "The quick brown fox jumps over the lazy dog.";
        let text = vec![sentence; 40].join(" ");
        let options = ChunkOptions {
            max_tokens: 30,
            overlap_tokens: 0,
        };
        let chunks = chunk(&doc(SectionKind::Prose, &text), options, &words);
        assert!(chunks.len() >= 12);
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.tokens <= 30, "{c:?}");
            assert_eq!(c.index as usize, i);
            assert_eq!(c.page, Some(3));
            assert!(c.text.ends_with('.'), "cut mid-sentence: {:?}", c.text);
        }
    }

    #[test]
    fn overlap_repeats_text_between_neighbours() {
        let text = (0..200)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let options = ChunkOptions {
            max_tokens: 50,
            overlap_tokens: 10,
        };
        let chunks = chunk(&doc(SectionKind::Prose, &text), options, &words);
        assert!(chunks.len() > 4);
        for pair in chunks.windows(2) {
            let last_of_first = pair[0].text.split_whitespace().last().unwrap();
            assert!(
                pair[1].text.split_whitespace().any(|w| w == last_of_first),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn markdown_cuts_at_headings() {
        let md = "# One\n\nalpha beta gamma delta.\n\n# Two\n\nepsilon zeta eta theta.\n";
        let options = ChunkOptions {
            max_tokens: 8,
            overlap_tokens: 0,
        };
        let chunks = chunk(&doc(SectionKind::Markdown, md), options, &words);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert!(chunks[0].text.starts_with("# One") && chunks[1].text.starts_with("# Two"));
    }

    #[test]
    fn table_chunks_carry_their_header() {
        let body = (0..30)
            .map(|i| format!("row{i} | value{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let section = SectionKind::Rows {
            header: "name | value".into(),
        };
        let options = ChunkOptions {
            max_tokens: 20,
            overlap_tokens: 0,
        };
        let chunks = chunk(&doc(section, &body), options, &words);
        assert!(chunks.len() > 3);
        let mut seen = 0;
        for c in &chunks {
            assert!(c.text.starts_with("name | value\n"), "{c:?}");
            assert!(c.tokens <= 20, "{c:?}");
            seen += c.text.lines().count() - 1;
        }
        assert_eq!(seen, 30, "every row exactly once without overlap");
    }
}
