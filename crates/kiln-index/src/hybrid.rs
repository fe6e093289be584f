//! One search over the index: keyword (BM25), semantic (vectors) or hybrid, a weighted sum
//! of both lists' normalised scores. The HTTP API and the benchmarks call this, so what they
//! measure is what users get.

use std::collections::HashMap;

use crate::{Candidate, ChunkIndex, Hit, Result, Scope};

/// Which lists a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Keyword,
    Semantic,
    Hybrid,
}

/// Candidates taken from each list before fusion (at least `top_k`).
pub const FUSION_DEPTH: usize = 50;
/// The semantic list's weight in hybrid search; the keyword list has the rest. Chosen on
/// SciFact's training queries (`kiln eval`): nDCG@10 0.734–0.736 for weights 0.4–0.5 over
/// min-max-normalised scores, against 0.723 for reciprocal-rank fusion (k = 60).
pub const SEMANTIC_WEIGHT: f32 = 0.45;

impl ChunkIndex {
    /// The best `top_k` chunks of the scope for `query` (keyword and hybrid) and `vector`
    /// (semantic and hybrid). Semantic answers are rescored exactly against the stored
    /// vectors; hybrid fuses `FUSION_DEPTH` candidates of each list, computed side by side on
    /// this thread and one more.
    pub fn search(
        &self,
        scope: &Scope<'_>,
        mode: Mode,
        query: &str,
        vector: Option<&[f32]>,
        top_k: usize,
    ) -> Result<Vec<Hit>> {
        let depth = if mode == Mode::Hybrid {
            FUSION_DEPTH.max(top_k)
        } else {
            top_k
        };
        let keyword = || match mode {
            Mode::Semantic => Ok(Vec::new()),
            _ => self.keyword_candidates(scope, query, depth),
        };
        // Semantic answers are rescored exactly, so they take more candidates from a graph.
        let semantic = || match (mode, vector) {
            (Mode::Keyword, _) | (_, None) => Ok(Vec::new()),
            (_, Some(v)) => self.semantic_candidates(scope, v, depth, mode == Mode::Semantic),
        };
        let (keyword, semantic) = if mode == Mode::Hybrid {
            std::thread::scope(|threads| {
                let semantic = threads.spawn(semantic);
                let keyword = keyword();
                let semantic = semantic
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (keyword, semantic)
            })
        } else {
            (keyword(), semantic())
        };
        let (keyword, semantic) = (keyword?, semantic?);
        // Only the answer's chunks are read from the index; semantic scores made exact.
        match mode {
            Mode::Keyword => self.hydrate(&keyword, None, top_k),
            Mode::Semantic => self.hydrate(&semantic, vector, top_k),
            Mode::Hybrid => self.hydrate(&fuse(&keyword, &semantic), None, top_k),
        }
    }
}

/// Hybrid fusion: a weighted sum of each list's scores normalised to [0, 1] over that list
/// (min-max); a chunk missing from a list scores 0 there. BM25 and cosine scores live on
/// different scales, so they are compared by where they fall within their own list.
pub fn fuse(keyword: &[Candidate], semantic: &[Candidate]) -> Vec<Candidate> {
    let mut fused: HashMap<u64, f32> = HashMap::new();
    for (weight, list) in [
        (1.0 - SEMANTIC_WEIGHT, keyword),
        (SEMANTIC_WEIGHT, semantic),
    ] {
        let low = list.iter().map(|c| c.score).fold(f32::INFINITY, f32::min);
        let high = list
            .iter()
            .map(|c| c.score)
            .fold(f32::NEG_INFINITY, f32::max);
        for candidate in list {
            let normalised = if high > low {
                (candidate.score - low) / (high - low)
            } else {
                1.0
            };
            *fused.entry(candidate.key).or_default() += weight * normalised;
        }
    }
    let mut candidates: Vec<Candidate> = fused
        .into_iter()
        .map(|(key, score)| Candidate { key, score })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(u64, f32)]) -> Vec<Candidate> {
        pairs
            .iter()
            .map(|&(key, score)| Candidate { key, score })
            .collect()
    }

    /// Worked by hand with weights 0.55 (keyword) and 0.45 (semantic):
    /// keyword 12, 8, 2 → 1, 0.6, 0; semantic 0.9, 0.7, 0.5 → 1, 0.5, 0.
    #[test]
    fn fusion_weighs_normalised_scores() {
        let keyword = list(&[(1, 12.0), (2, 8.0), (3, 2.0)]);
        let semantic = list(&[(2, 0.9), (4, 0.7), (1, 0.5)]);
        let fused = fuse(&keyword, &semantic);
        let got: Vec<(u64, f32)> = fused.iter().map(|c| (c.key, c.score)).collect();
        // 2: 0.55·0.6 + 0.45·1 = 0.78; 1: 0.55·1 + 0 = 0.55; 4: 0.45·0.5 = 0.225; 3: 0.
        let want = [(2, 0.78), (1, 0.55), (4, 0.225), (3, 0.0)];
        assert_eq!(got.len(), want.len());
        for ((key, score), (want_key, want_score)) in got.iter().zip(want) {
            assert_eq!(*key, want_key);
            assert!((score - want_score).abs() < 1e-6, "{got:?}");
        }
        // One list alone keeps its order; a list of one scores as its best.
        let alone = fuse(&keyword, &[]);
        assert_eq!(
            alone.iter().map(|c| c.key).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(fuse(&[], &list(&[(9, 0.3)]))[0].score, SEMANTIC_WEIGHT);
    }
}
