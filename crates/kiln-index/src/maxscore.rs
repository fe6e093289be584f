//! MaxScore (Turtle and Flood, 1995): the exact top `k` of a sum of term scores, for queries
//! of any length.
//!
//! The terms are ordered by the most each can add to a score. The weakest ones, whose bounds
//! together cannot beat the k-th best score found so far, are *non-essential*: a document
//! holding only those cannot enter the top `k`, so their postings are never walked. The
//! others' postings are walked a window of documents at a time, summing each document's
//! scores; then each document of the window looks up the non-essential terms, strongest
//! first, only while its score plus what they could still add beats the k-th best. As that
//! score rises, more terms become non-essential.
//!
//! tantivy's block-max WAND is exact too, but keeps its terms sorted by document and
//! re-sorts them for every document it scores; with a paragraph as the query (a hundred
//! terms and more, many of them common) it spent most of a search doing that (at a million
//! chunks, 200-word queries took 0.8 s at the median). A long query is where MaxScore is at
//! its best: its common words have the longest postings and the lowest bounds, so they are
//! the first to be only looked up.

use tantivy::query::Scorer;
use tantivy::{DocId, DocSet, Score, TERMINATED};

/// Documents summed at a time.
const WINDOW: u32 = 4096;

/// One term's scorer in a segment, with the most it can add to a document's score.
pub(crate) struct TermPostings {
    pub scorer: Box<dyn Scorer>,
    pub bound: Score,
}

/// Calls `admit(doc, score)` for documents in increasing order whose score may enter the
/// top `k`, that is beats `threshold`; `admit` returns the new threshold (the k-th best
/// score so far, or the old one). Documents for which `may_answer` is false are skipped
/// before their non-essential terms are looked up. Every score given to `admit` is the
/// document's full sum.
pub(crate) fn top_scores(
    mut scorers: Vec<TermPostings>,
    mut threshold: Score,
    may_answer: &mut dyn FnMut(DocId) -> bool,
    admit: &mut dyn FnMut(DocId, Score) -> Score,
) {
    scorers.retain(|s| s.scorer.doc() != TERMINATED);
    scorers.sort_by(|a, b| a.bound.total_cmp(&b.bound));
    // bound[i]: the most terms 0..=i can add together.
    let bound: Vec<Score> = scorers
        .iter()
        .scan(0.0, |sum, s| {
            *sum += s.bound;
            Some(*sum)
        })
        .collect();
    // Terms before `first` are non-essential: together they cannot beat the threshold.
    let essential_from = |threshold: Score| bound.partition_point(|&b| b <= threshold);
    let mut first = essential_from(threshold);
    let mut sums = vec![0.0 as Score; WINDOW as usize];
    let mut present = vec![0u64; (WINDOW / 64) as usize];
    while first < scorers.len() {
        let Some(start) = scorers[first..].iter().map(|s| s.scorer.doc()).min() else {
            break;
        };
        if start == TERMINATED {
            break;
        }
        let end = start + WINDOW;
        for term in &mut scorers[first..] {
            let scorer = &mut term.scorer;
            let mut doc = scorer.doc();
            while doc < end {
                let at = (doc - start) as usize;
                sums[at] += scorer.score();
                present[at / 64] |= 1 << (at % 64);
                doc = scorer.advance();
            }
        }
        for (word, slot) in present.iter_mut().enumerate() {
            let mut bits = std::mem::take(slot);
            while bits != 0 {
                let at = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let mut score = std::mem::take(&mut sums[at]);
                let doc = start + at as DocId;
                if !may_answer(doc) {
                    continue;
                }
                // Look up the non-essential terms, strongest first, while they could still
                // lift the score over the threshold. (A term that became non-essential during
                // this window has already moved past it and adds nothing again.)
                let mut next = first;
                while next > 0 && score + bound[next - 1] > threshold {
                    next -= 1;
                    let scorer = &mut scorers[next].scorer;
                    if scorer.doc() < doc {
                        scorer.seek(doc);
                    }
                    if scorer.doc() == doc {
                        score += scorer.score();
                    }
                }
                if next == 0 && score > threshold {
                    threshold = admit(doc, score);
                    first = first.max(essential_from(threshold));
                }
            }
        }
    }
}
