//! Keyword search: how text becomes terms (the tokenizer, shared by chunks and queries), and
//! BM25's exact top `k` over every term of a query.
//!
//! A query is scored as tantivy scores a disjunction of all its terms: each distinct term
//! once, weighted by how often the query holds it (`query_term_weight`), with every other
//! part of the score tantivy's BM25 (k1 1.2, b 0.75, statistics over the whole index). The
//! top `k` comes from tantivy's block-max WAND, which skips only
//! documents that provably cannot enter it, with the store, the active generation and
//! deletions checked as each candidate arrives; so the answer is BM25's own top `k` among
//! the chunks the caller may see, whatever the query's length.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use tantivy::query::{Bm25Weight, EnableScoring, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{DocId, Index, Score, Searcher, SegmentReader, Term};
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::maxscore::{self, TermPostings};
use crate::{Candidate, ChunkIndex, Result, Scope};

/// The name chunk text is indexed under: [`WordTokenizer`], then tantivy's usual filters
/// (words over 40 bytes dropped, lower case, English stemming).
pub(crate) const TEXT_TOKENIZER: &str = "kiln_words";

/// Registers the text analyzer with an index (every `Index` value needs it before it writes
/// or searches text).
pub(crate) fn register_tokenizer(index: &Index) {
    index.tokenizers().register(TEXT_TOKENIZER, text_analyzer());
}

fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Splits text into words as tantivy's `SimpleTokenizer` does (runs of letters and digits),
/// and also makes each non-ASCII symbol a word of its own: emoji, ©, °, €, ✓, arrows, math
/// signs. So a spreadsheet cell holding only "🔥" is found by a search for "🔥". Emoji
/// skin-tone modifiers, joiners and variation selectors separate words like punctuation, so
/// "👍🏽" is found by "👍". ASCII symbols (`+`, `=`, `|`, `$`) stay separators: they fill code
/// and tables, and as words they would only lengthen chunks for BM25.
#[derive(Clone, Default)]
pub struct WordTokenizer {
    token: Token,
}

pub struct WordTokens<'a> {
    text: &'a str,
    /// Where the next word is looked for.
    offset: usize,
    token: &'a mut Token,
}

/// A character that is a word by itself.
fn is_symbol_word(c: char) -> bool {
    !c.is_ascii()
        && !c.is_alphanumeric()
        && !matches!(c, '\u{1F3FB}'..='\u{1F3FF}')
        && c.general_category_group() == GeneralCategoryGroup::Symbol
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordTokens<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordTokens<'a> {
        self.token.reset();
        WordTokens {
            text,
            offset: 0,
            token: &mut self.token,
        }
    }
}

impl WordTokens<'_> {
    fn emit(&mut self, from: usize, to: usize) -> bool {
        self.offset = to;
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.text.push_str(&self.text[from..to]);
        true
    }
}

impl TokenStream for WordTokens<'_> {
    fn advance(&mut self) -> bool {
        self.token.text.clear();
        self.token.position = self.token.position.wrapping_add(1);
        let start = self.offset;
        for (at, c) in self.text[start..].char_indices() {
            let from = start + at;
            if c.is_alphanumeric() {
                let rest = &self.text[from..];
                let len = rest
                    .find(|c: char| !c.is_alphanumeric())
                    .unwrap_or(rest.len());
                return self.emit(from, from + len);
            }
            if is_symbol_word(c) {
                return self.emit(from, from + c.len_utf8());
            }
        }
        self.offset = self.text.len();
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// English stop words (Lucene's default set, as Anserini's BM25 baselines use), dropped from
/// keyword queries: they match nearly every chunk and add cost, not relevance. Chunks keep
/// them, so lengths and BM25's normalisation are unchanged.
const STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The words of a text as the index splits it, before lower case and stemming.
pub(crate) fn words(text: &str) -> Vec<&str> {
    let mut tokenizer = WordTokenizer::default();
    let mut stream = tokenizer.token_stream(text);
    let mut words = Vec::new();
    while stream.advance() {
        let token = stream.token();
        words.push(&text[token.offset_from..token.offset_to]);
    }
    words
}

/// A keyword query's words: its stop words dropped, unless nothing else is left ("to be or
/// not to be"). Punctuation and query syntax (quotes, colons, brackets, `-`) are not words.
pub(crate) fn query_words(query: &str) -> Vec<&str> {
    let words = words(query);
    let kept: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !STOP_WORDS.contains(&w.to_lowercase().as_str()))
        .collect();
    if kept.is_empty() { words } else { kept }
}

/// How much a word the query repeats weighs: Robertson's query-term saturation,
/// `(k3 + 1) · n / (k3 + n)` for a word said `n` times — 1 once, 1.5 twice, at most 3. A
/// repeated word says the query is about it, but a paragraph that names its subject five
/// times is not five times about it. `k3` was chosen on training queries only (keyword
/// nDCG@10 on SciFact-train and on paragraph queries made from SciFact-train documents):
/// 0 (each word once) 0.7012 / 0.9409, 1: 0.7019 / 0.9545, 2: 0.7015 / 0.9584,
/// 3: 0.6993 / 0.9590, no saturation (a word said twice counts twice): 0.6965 / 0.9597.
const QUERY_TERM_SATURATION: Score = 2.0;

/// The weight of a query word said `count` times (see `QUERY_TERM_SATURATION`).
pub(crate) fn query_term_weight(count: u32) -> Score {
    let (k3, n) = (QUERY_TERM_SATURATION, count as Score);
    (k3 + 1.0) * n / (k3 + n)
}

impl ChunkIndex {
    /// The terms a keyword query is scored by, each with how many times the query holds it,
    /// in the order they first appear.
    pub(crate) fn query_terms(&self, query: &str) -> Result<Vec<(Term, u32)>> {
        let mut analyzer = self.index.tokenizer_for_field(self.fields.text)?;
        let mut terms: Vec<(Term, u32)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for word in query_words(query) {
            let mut stream = analyzer.token_stream(word);
            while let Some(token) = stream.next() {
                match seen.get(&token.text) {
                    Some(&at) => terms[at].1 += 1,
                    None => {
                        seen.insert(token.text.clone(), terms.len());
                        terms.push((Term::from_field_text(self.fields.text, &token.text), 1));
                    }
                }
            }
        }
        Ok(terms)
    }

    /// BM25's top `k` among active chunks of the scope's stores for every term of `query`
    /// (see the module's notes). Whether a chunk may be answered is read from the fast
    /// fields; no document is loaded.
    pub fn keyword_candidates(
        &self,
        scope: &Scope<'_>,
        query: &str,
        k: usize,
    ) -> Result<Vec<Candidate>> {
        if k == 0 || scope.store_ids.is_empty() {
            return Ok(Vec::new());
        }
        let terms = self.query_terms(query)?;
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        self.top_active(&searcher, scope, &terms, k)
    }

    /// The best `k` active chunks of the scope's stores for the BM25 of `terms` (each with
    /// how often the query holds it), best first (ties: the lower key first).
    pub(crate) fn top_active(
        &self,
        searcher: &Searcher,
        scope: &Scope<'_>,
        terms: &[(Term, u32)],
        k: usize,
    ) -> Result<Vec<Candidate>> {
        let scoring = EnableScoring::enabled_from_searcher(searcher);
        // Each term's weight (BM25 statistics of the whole index) and its bound: the most it
        // adds to any chunk's score, as tantivy's own pruning bounds it.
        let mut weights = Vec::with_capacity(terms.len());
        for (term, count) in terms {
            let boost = query_term_weight(*count);
            let weight =
                TermQuery::new(term.clone(), IndexRecordOption::WithFreqs).weight(scoring)?;
            let bound = Bm25Weight::for_terms(searcher, std::slice::from_ref(term))?
                .boost_by(boost)
                .max_score();
            weights.push((weight, boost, bound));
        }
        let mut top = TopK::new(k);
        for segment in searcher.segment_readers() {
            let Some((stores, mut active)) = segment_scope(segment, scope)? else {
                continue;
            };
            let mut postings = Vec::with_capacity(weights.len());
            for (weight, boost, bound) in &weights {
                postings.push(TermPostings {
                    scorer: weight.scorer(segment, *boost)?,
                    bound: *bound,
                });
            }
            let mut failed = None;
            // The threshold carries over from segment to segment: a chunk must beat the k-th
            // best found anywhere so far.
            maxscore::top_scores(
                postings,
                top.threshold(),
                &mut |doc| stores.may_answer(doc),
                &mut |doc, score| {
                    match active.key(doc, scope) {
                        Ok(Some(key)) => top.push(score, key),
                        Ok(None) => {}
                        Err(e) => {
                            failed.get_or_insert(e);
                            return Score::MAX;
                        }
                    }
                    top.threshold()
                },
            );
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(top.into_sorted())
    }
}

/// A segment's view of a scope: `None` when the segment holds no chunk of its stores.
fn segment_scope<'a>(
    segment: &'a SegmentReader,
    scope: &Scope<'_>,
) -> Result<Option<(StoreCheck<'a>, ActiveCheck)>> {
    let fast = segment.fast_fields();
    let (Some(stores), Some(files)) = (fast.str("store")?, fast.str("file")?) else {
        return Ok(None);
    };
    let mut store_ords = Vec::with_capacity(scope.store_ids.len());
    for store in scope.store_ids {
        if let Some(ord) = stores.dictionary().term_ord(store)? {
            store_ords.push(ord);
        }
    }
    if store_ords.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        StoreCheck {
            segment,
            stores,
            store_ords,
        },
        ActiveCheck {
            keys: fast.u64("key")?,
            generations: fast.u64("generation")?,
            files,
            active: HashMap::new(),
            name: String::new(),
        },
    )))
}

/// Whether a document of a segment is alive and of one of the scope's stores.
struct StoreCheck<'a> {
    segment: &'a SegmentReader,
    stores: tantivy::columnar::StrColumn,
    store_ords: Vec<u64>,
}

impl StoreCheck<'_> {
    fn may_answer(&self, doc: DocId) -> bool {
        !self.segment.is_deleted(doc)
            && self
                .stores
                .ords()
                .first(doc)
                .is_some_and(|ord| self.store_ords.contains(&ord))
    }
}

/// Whether a document of a segment is of its file's active generation, and its key.
struct ActiveCheck {
    keys: tantivy::columnar::Column<u64>,
    generations: tantivy::columnar::Column<u64>,
    files: tantivy::columnar::StrColumn,
    /// Whether `(file ordinal, generation)` is active, as the scope said.
    active: HashMap<(u64, u64), bool>,
    name: String,
}

impl ActiveCheck {
    /// The document's key if its file's generation is the active one.
    fn key(&mut self, doc: DocId, scope: &Scope<'_>) -> Result<Option<u64>> {
        let (Some(file), Some(generation)) =
            (self.files.ords().first(doc), self.generations.first(doc))
        else {
            return Ok(None);
        };
        let active = match self.active.get(&(file, generation)) {
            Some(&active) => active,
            None => {
                self.name.clear();
                self.files.ord_to_str(file, &mut self.name)?;
                let active = (scope.active)(&self.name, generation);
                self.active.insert((file, generation), active);
                active
            }
        };
        Ok(active.then(|| self.keys.first(doc)).flatten())
    }
}

/// A candidate in the top-`k` heap: a higher score ranks higher, and of equal scores the
/// lower key.
#[derive(PartialEq)]
struct Ranked(Score, u64);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// The best `k` candidates seen, with the score a new one must beat (tight at every step,
/// so block-max WAND prunes as much as it can).
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn push(&mut self, score: Score, key: u64) {
        let ranked = Ranked(score, key);
        if self.heap.len() < self.k {
            self.heap.push(Reverse(ranked));
        } else if self
            .heap
            .peek()
            .is_some_and(|Reverse(worst)| ranked > *worst)
        {
            self.heap.pop();
            self.heap.push(Reverse(ranked));
        }
    }

    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(Reverse(worst)) if self.heap.len() == self.k => worst.0,
            _ => Score::MIN,
        }
    }

    fn into_sorted(self) -> Vec<Candidate> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(Ranked(score, key))| Candidate { key, score })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tantivy::DocAddress;

    use super::*;
    use crate::ChunkRecord;
    use crate::tests::chunk;

    #[test]
    fn words_are_runs_of_letters_and_digits_and_each_symbol_alone() {
        assert_eq!(
            words("Hello, wörld™! 🔥🏺 👍🏽 x+y=z €5 ©2024 \"quoted\" H₂O 東京"),
            [
                "Hello", "wörld", "™", "🔥", "🏺", "👍", "x", "y", "z", "€", "5", "©", "2024",
                "quoted", "H₂O", "東京"
            ]
        );
        // Joined emoji are their parts; variation selectors and joiners separate.
        assert_eq!(
            words("👨\u{200D}👩\u{200D}👧 ❤\u{FE0F}"),
            ["👨", "👩", "👧", "❤"]
        );
        assert!(words("-- ... || ").is_empty());
        // Offsets and positions are those of the text.
        let mut tokenizer = WordTokenizer::default();
        let mut stream = tokenizer.token_stream("a🔥b");
        let mut seen = Vec::new();
        while let Some(token) = stream.next() {
            seen.push((
                token.text.clone(),
                token.offset_from,
                token.offset_to,
                token.position,
            ));
        }
        assert_eq!(
            seen,
            [
                ("a".to_string(), 0, 1, 0),
                ("🔥".to_string(), 1, 5, 1),
                ("b".to_string(), 5, 6, 2)
            ]
        );
    }

    #[test]
    fn queries_lose_syntax_and_stop_words_but_never_everything() {
        assert_eq!(
            query_words("The effect of vitamin D: \"on\" (bones) AND -fractures"),
            ["effect", "vitamin", "D", "bones", "fractures"]
        );
        assert_eq!(
            query_words("to be or not to be"),
            ["to", "be", "or", "not", "to", "be"]
        );
        assert!(query_words("?!").is_empty());
        assert_eq!(query_words("the 🔥"), ["🔥"]);
    }

    #[test]
    fn a_repeated_word_weighs_more_but_saturates() {
        assert_eq!(query_term_weight(1), 1.0);
        assert_eq!(query_term_weight(2), 1.5);
        assert_eq!(query_term_weight(4), 2.0);
        assert!(query_term_weight(1000) < 3.0);
    }

    #[test]
    fn repeated_words_weigh_more_and_stems_merge() {
        let dir = tempfile::tempdir().unwrap();
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        let terms = |q: &str| -> Vec<(String, u32)> {
            index
                .query_terms(q)
                .unwrap()
                .into_iter()
                .map(|(t, n)| (t.value().as_str().unwrap().to_string(), n))
                .collect()
        };
        assert_eq!(
            terms("Fractures and the fracture of bones; BONES 🔥"),
            [
                ("fractur".to_string(), 2),
                ("bone".to_string(), 2),
                ("🔥".to_string(), 1)
            ]
        );
    }

    #[test]
    fn a_cell_of_emoji_is_found_by_its_emoji() {
        let dir = tempfile::tempdir().unwrap();
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        index
            .add(&[
                chunk("vs_a", "f1", 1, 0, "Status | 🔥🏺 | ✓", 1),
                chunk("vs_a", "f2", 1, 0, "Temperature 1300 °C, price 20 €", 2),
                chunk("vs_a", "f3", 1, 0, "Nothing but words here", 3),
            ])
            .unwrap();
        let stores = vec!["vs_a".to_string()];
        let all = |_: &str, _: u64| true;
        let scope = Scope {
            store_ids: &stores,
            active: &all,
        };
        let files = |q: &str| -> Vec<String> {
            index
                .keyword(&scope, q, 10)
                .unwrap()
                .into_iter()
                .map(|h| h.file_id)
                .collect()
        };
        assert_eq!(files("🔥"), ["f1"]);
        assert_eq!(files("🏺 pottery"), ["f1"]);
        assert_eq!(files("✓"), ["f1"]);
        assert_eq!(files("°C"), ["f2"]);
        assert_eq!(files("€"), ["f2"]);
        assert!(files("👍").is_empty());
    }

    /// xorshift: reproducible text without a dependency.
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
        /// A word of a Zipf-like vocabulary of `n` words: a few very common, most rare.
        fn word(&mut self, n: usize) -> String {
            let rank = (n as f64).powf(self.below(1_000_000) as f64 / 1_000_000.0) as usize;
            format!("w{rank}")
        }
        fn text(&mut self, words: usize, vocabulary: usize) -> String {
            (0..words)
                .map(|_| self.word(vocabulary))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    /// Every `(key, score)` the reference gives: each of the query's distinct terms scored
    /// by tantivy's BM25 on every document holding it (no pruning, every posting), times
    /// its weight, summed per document; restricted to what the scope may answer, best first.
    fn reference(index: &ChunkIndex, scope: &Scope<'_>, query: &str) -> Vec<(u64, f32)> {
        let searcher = index.reader.searcher();
        let mut analyzer = index.index.tokenizer_for_field(index.fields.text).unwrap();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for word in query_words(query) {
            let mut stream = analyzer.token_stream(word);
            while let Some(token) = stream.next() {
                *counts.entry(token.text.clone()).or_default() += 1;
            }
        }
        let mut scores: HashMap<DocAddress, f32> = HashMap::new();
        for (text, count) in counts {
            let term = Term::from_field_text(index.fields.text, &text);
            let weight = TermQuery::new(term, IndexRecordOption::WithFreqs)
                .weight(EnableScoring::enabled_from_searcher(&searcher))
                .unwrap();
            for (ord, segment) in searcher.segment_readers().iter().enumerate() {
                weight
                    .for_each(segment, &mut |doc, score| {
                        if !segment.is_deleted(doc) {
                            *scores.entry(DocAddress::new(ord as u32, doc)).or_default() +=
                                query_term_weight(count) * score;
                        }
                    })
                    .unwrap();
            }
        }
        let mut answer: Vec<(u64, f32)> = scores
            .into_iter()
            .filter_map(|(address, score)| {
                let document: tantivy::TantivyDocument = searcher.doc(address).unwrap();
                let hit = index.hit(&document, 0, score);
                let key = document
                    .get_first(index.fields.key)
                    .and_then(|v| tantivy::schema::Value::as_u64(&v))
                    .unwrap();
                (scope.store_ids.contains(&hit.store_id)
                    && (scope.active)(&hit.file_id, hit.generation))
                .then_some((key, score))
            })
            .collect();
        answer.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        answer
    }

    /// The keyword top k equals the reference's for queries of 5, 30 and 200 words (with
    /// repeated words), over several segments, with deletions, superseded generations and
    /// a store that holds most of the index as well as one that holds little of it.
    #[test]
    fn keyword_top_k_is_bm25_over_every_word_of_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        // One segment per add, so the threshold carries from segment to segment.
        index
            .writer
            .lock()
            .unwrap()
            .set_merge_policy(Box::new(tantivy::merge_policy::NoMergePolicy));
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        for batch in 0..4 {
            let chunks: Vec<ChunkRecord> = (0..500)
                .map(|i| {
                    let n: usize = batch * 500 + i;
                    let store = if n.is_multiple_of(10) {
                        "vs_small"
                    } else {
                        "vs_big"
                    };
                    let length = 5 + random.below(120);
                    chunk(store, &format!("f{n}"), 1, 0, &random.text(length, 3000), n)
                })
                .collect();
            index.add(&chunks).unwrap();
        }
        // A second generation of some files (the first stays in the index, inactive), and
        // deleted files.
        let rewritten: Vec<ChunkRecord> = (0..2000usize)
            .step_by(7)
            .map(|n| {
                let store = if n.is_multiple_of(10) {
                    "vs_small"
                } else {
                    "vs_big"
                };
                chunk(store, &format!("f{n}"), 2, 0, &random.text(60, 3000), n)
            })
            .collect();
        index.add(&rewritten).unwrap();
        for n in (3..2000).step_by(11) {
            index.delete_file(&format!("f{n}")).unwrap();
        }
        assert!(index.segments() >= 5, "several segments");
        let active = |file: &str, generation: u64| {
            let n: usize = file[1..].parse().unwrap();
            generation == if n.is_multiple_of(7) { 2 } else { 1 }
        };
        let mut compared = 0;
        for store in ["vs_big", "vs_small"] {
            let stores = vec![store.to_string()];
            let scope = Scope {
                store_ids: &stores,
                active: &active,
            };
            for words in [5, 30, 200] {
                for _ in 0..15 {
                    let query = random.text(words, 3000);
                    let truth = reference(&index, &scope, &query);
                    for k in [10, 50] {
                        let found = index.keyword_candidates(&scope, &query, k).unwrap();
                        assert_eq!(found.len(), k.min(truth.len()), "{store} {words} words");
                        let kth = truth[found.len() - 1].1;
                        for (got, want) in found.iter().zip(&truth) {
                            assert!(
                                (got.score - want.1).abs() < 1e-4,
                                "{store}, {words} words, k {k}: {} vs {}",
                                got.score,
                                want.1
                            );
                        }
                        // The same chunks, but for ties with the k-th.
                        let sure = |list: Vec<(u64, f32)>| -> HashSet<u64> {
                            list.into_iter()
                                .filter(|(_, s)| *s > kth + 1e-4)
                                .map(|(key, _)| key)
                                .collect()
                        };
                        let got = sure(found.iter().map(|c| (c.key, c.score)).collect());
                        let want = sure(truth.iter().take(k).copied().collect());
                        assert_eq!(got, want, "{store}, {words} words, k {k}");
                        compared += found.len();
                    }
                }
            }
        }
        assert!(compared > 2_000, "{compared} results compared");
    }
}
