//! One store's vectors, searched exactly while the store is small and through an HNSW graph
//! (usearch, vectors kept as int8) once it holds `AnnOptions::threshold` chunks or more.
//!
//! The chunk documents in tantivy stay the source of truth (each keeps its f32 vector); this
//! is a derived structure. A graph is saved next to the index (`{store}.usearch`, with the
//! highest chunk key it holds in `{store}.json`) and loaded on first use; chunks added after
//! the save (a crash, or no shutdown yet) are read back from the documents, and chunks
//! deleted after it are never answered because every answer is checked against the live rows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{IndexError, Result, dot};

/// When a store switches to an approximate graph, and how the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnOptions {
    /// Stores with at least this many chunks are searched through the graph.
    pub threshold: usize,
    /// HNSW neighbours per node (usearch `connectivity`).
    pub connectivity: usize,
    /// Candidate list size while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidate list size while searching for semantic answers (`ef_search`); at least the
    /// `k` asked for. 0: chosen by the graph's size (`expansion_for`).
    pub expansion_search: usize,
    /// Candidate list size when the graph feeds hybrid fusion, which takes a longer list
    /// (50) and mixes it with the keyword list, so it needs less of the exact top 10.
    /// 0: chosen by the graph's size (`fusion_expansion_for`).
    pub fusion_expansion_search: usize,
    /// A semantic search of a graph takes `k × rescore_factor` candidates, rescored with
    /// exact vectors. 0: chosen by the graph's size (`rescore_for`).
    pub rescore_factor: usize,
}

impl Default for AnnOptions {
    fn default() -> Self {
        AnnOptions {
            threshold: 20_000,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 0,
            fusion_expansion_search: 0,
            rescore_factor: 0,
        }
    }
}

impl AnnOptions {
    /// The candidate list for searching a graph of `n` vectors: `expansion_search` when set;
    /// else 256 up to 100k vectors and `256 × (n / 100k)^0.8` beyond (1M: 1,615), at most
    /// 4,096. A fixed list finds less of the true top 10 as a graph grows: on `kiln bench
    /// search`'s store, 256 gave recall@10 0.9955 at 100k chunks but about 0.8 at 1M, where
    /// 1,024 gave 0.9405 and 1,536 gave 0.9505.
    pub fn expansion_for(&self, n: usize) -> usize {
        if self.expansion_search > 0 {
            return self.expansion_search;
        }
        let scale = (n as f64 / 100_000.0).max(1.0).powf(0.8);
        ((256.0 * scale).round() as usize).min(4096)
    }

    /// The candidate list for hybrid's semantic half on a graph of `n` vectors:
    /// `fusion_expansion_search` when set; else a quarter of `expansion_for(n)`, at least 256
    /// and at most `expansion_for(n)` (the same list up to 400k vectors; 403 at 1M).
    pub fn fusion_expansion_for(&self, n: usize) -> usize {
        if self.fusion_expansion_search > 0 {
            return self.fusion_expansion_search;
        }
        let semantic = self.expansion_for(n);
        (semantic / 4).max(256).min(semantic)
    }

    /// How many candidates per result a semantic search of a graph of `n` vectors rescores
    /// exactly: `rescore_factor` when set; else 2 below 500k vectors and 4 from there. The
    /// graph's int8 scores misorder near neighbours more as it grows: on `kiln bench search`'s
    /// 1M-chunk store (ef 1,615) recall@10 was 0.9505 rescoring 2 × k and 0.9730 rescoring
    /// 4 × k, semantic p50 8.8 → 9.5 ms; at 100k, 2 × k already gave 0.9955.
    pub fn rescore_for(&self, n: usize) -> usize {
        match self.rescore_factor {
            0 if n < 500_000 => 2,
            0 => 4,
            set => set,
        }
    }
}

/// Which chunk a vector belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub key: u64,
    pub file: Arc<str>,
    pub generation: u64,
}

pub(crate) enum StoreVectors {
    /// Rows and their vectors side by side (row `i` is `data[i * dims..(i + 1) * dims]`).
    Exact { rows: Vec<Row>, data: Vec<f32> },
    /// The live rows by key, and the graph over their vectors.
    Graph {
        rows: HashMap<u64, Row>,
        graph: usearch::Index,
    },
}

/// How a graph keeps its vectors: int8 (usearch scales each unit vector by 127), a quarter
/// of f32 and half of bf16 — at a million chunks 366 MiB instead of 732. The graph only picks
/// candidates; semantic answers are rescored with the stored f32 vectors. At 100k chunks
/// recall@10 against exact was 0.9955 with int8 and 0.9985 with bf16 (`kiln bench search`).
const GRAPH_SCALAR: usearch::ScalarKind = usearch::ScalarKind::I8;
const GRAPH_SCALAR_NAME: &str = "i8";

/// What is saved beside a graph.
#[derive(Serialize, Deserialize)]
struct GraphMeta {
    /// Every chunk with a key up to this one was in the graph when it was saved.
    through_key: u64,
    dimensions: usize,
    /// How its vectors are kept; graphs saved before this was recorded kept bf16.
    #[serde(default = "older_scalar")]
    scalar: String,
}

fn older_scalar() -> String {
    "bf16".into()
}

/// The highest key any graph saved in `dir` holds (0 when none).
pub(crate) fn highest_saved_key(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<GraphMeta>(&bytes).ok())
        .map(|meta| meta.through_key)
        .max()
        .unwrap_or(0)
}

/// Searches and inserts a graph serves at once. usearch gives each a per-thread context and
/// fails a call that finds none free, so calls beyond this wait for a permit instead.
const GRAPH_THREADS: usize = 64;

/// A counting semaphore for blocking threads.
struct Permits {
    free: std::sync::Mutex<usize>,
    returned: std::sync::Condvar,
}

static PERMITS: Permits = Permits {
    free: std::sync::Mutex::new(GRAPH_THREADS),
    returned: std::sync::Condvar::new(),
};

/// Runs `f` holding one of the graph permits.
fn with_permit<T>(f: impl FnOnce() -> T) -> T {
    {
        let mut free = PERMITS.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = PERMITS
                .returned
                .wait(free)
                .unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            *PERMITS.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            PERMITS.returned.notify_one();
        }
    }
    let _release = Release;
    f()
}

fn ann_error(e: impl std::fmt::Display) -> IndexError {
    IndexError::Vectors(e.to_string())
}

fn new_graph(dims: usize, options: &AnnOptions, capacity: usize) -> Result<usearch::Index> {
    let graph = usearch::Index::new(&usearch::IndexOptions {
        dimensions: dims,
        metric: usearch::MetricKind::IP,
        quantization: GRAPH_SCALAR,
        connectivity: options.connectivity,
        expansion_add: options.expansion_add,
        expansion_search: options.fusion_expansion_for(capacity),
        multi: false,
    })
    .map_err(ann_error)?;
    reserve(&graph, capacity)?;
    Ok(graph)
}

/// Makes room for `needed` vectors, growing by half again to keep reallocations rare.
fn reserve(graph: &usearch::Index, needed: usize) -> Result<()> {
    if needed > graph.capacity() {
        graph
            .reserve_capacity_and_threads(needed.max(1024) * 3 / 2, GRAPH_THREADS)
            .map_err(ann_error)?;
    }
    Ok(())
}

impl StoreVectors {
    pub fn empty() -> StoreVectors {
        StoreVectors::Exact {
            rows: Vec::new(),
            data: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            StoreVectors::Exact { rows, .. } => rows.len(),
            StoreVectors::Graph { rows, .. } => rows.len(),
        }
    }

    pub fn is_graph(&self) -> bool {
        matches!(self, StoreVectors::Graph { .. })
    }

    /// Sets a graph's own search candidate list, the shorter one hybrid fusion uses, for its
    /// current size; semantic searches ask for a longer one (`search`'s `list`).
    pub fn tune(&self, options: &AnnOptions) {
        if let StoreVectors::Graph { rows, graph } = self {
            graph.change_expansion_search(options.fusion_expansion_for(rows.len()));
        }
    }

    /// The candidate list a semantic search of this store's graph walks with.
    pub fn semantic_list(&self, options: &AnnOptions) -> usize {
        options.expansion_for(self.len())
    }

    /// Candidates per result a semantic search of this store rescores (see `rescore_for`).
    pub fn rescore_factor(&self, options: &AnnOptions) -> usize {
        options.rescore_for(self.len())
    }

    /// Adds rows with their vectors (each `dims` long).
    pub fn insert(&mut self, new: Vec<(Row, Vec<f32>)>) -> Result<()> {
        match self {
            StoreVectors::Exact { rows, data } => {
                for (row, vector) in new {
                    rows.push(row);
                    data.extend_from_slice(&vector);
                }
            }
            StoreVectors::Graph { rows, graph } => {
                reserve(graph, graph.size() + new.len())?;
                add_all(graph, &new)?;
                for (row, _) in new {
                    rows.insert(row.key, row);
                }
            }
        }
        Ok(())
    }

    /// Removes the rows `matches` selects; returns how many.
    pub fn remove(&mut self, dims: usize, matches: impl Fn(&Row) -> bool) -> Result<usize> {
        match self {
            StoreVectors::Exact { rows, data } => {
                let before = rows.len();
                if !rows.iter().any(&matches) {
                    return Ok(0);
                }
                let mut kept_rows = Vec::with_capacity(rows.len());
                let mut kept_data = Vec::with_capacity(data.len());
                for (i, row) in rows.drain(..).enumerate() {
                    if !matches(&row) {
                        kept_data.extend_from_slice(&data[i * dims..(i + 1) * dims]);
                        kept_rows.push(row);
                    }
                }
                *rows = kept_rows;
                *data = kept_data;
                Ok(before - rows.len())
            }
            StoreVectors::Graph { rows, graph } => {
                let gone: Vec<u64> = rows
                    .values()
                    .filter(|r| matches(r))
                    .map(|r| r.key)
                    .collect();
                for key in &gone {
                    rows.remove(key);
                    with_permit(|| graph.remove(*key)).map_err(ann_error)?;
                }
                Ok(gone.len())
            }
        }
    }

    /// The `k` best rows for `query` among those `active` accepts: `(key, score)`, best
    /// first. Exact stores give exact dot products; graph scores are from int8 vectors (the
    /// caller rescores what it keeps). A graph walks with a candidate list of at least `list`
    /// (and at least its own, `tune`): usearch's list is the larger of its setting and the
    /// number of results asked for, so asking for `list` results and keeping `k` is a
    /// search with that list.
    pub fn search(
        &self,
        dims: usize,
        query: &[f32],
        k: usize,
        list: usize,
        active: &(dyn Fn(&str, u64) -> bool + Sync),
    ) -> Result<Vec<(u64, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        match self {
            StoreVectors::Exact { rows, data } => {
                let mut scored: Vec<(u64, f32)> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| active(&r.file, r.generation))
                    .map(|(i, r)| (r.key, dot(query, &data[i * dims..(i + 1) * dims])))
                    .collect();
                let by_score = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1);
                if scored.len() > k {
                    scored.select_nth_unstable_by(k - 1, by_score);
                    scored.truncate(k);
                }
                scored.sort_by(by_score);
                Ok(scored)
            }
            StoreVectors::Graph { rows, graph } => {
                let matches = with_permit(|| {
                    graph.filtered_search(query, k.max(list), |key| {
                        rows.get(&key)
                            .is_some_and(|r| active(&r.file, r.generation))
                    })
                })
                .map_err(ann_error)?;
                Ok(matches
                    .keys
                    .into_iter()
                    .zip(matches.distances)
                    .map(|(key, distance)| (key, 1.0 - distance))
                    .take(k)
                    .collect())
            }
        }
    }

    /// Turns an exact store into a graph over the same rows.
    pub fn build_graph(&mut self, dims: usize, options: &AnnOptions) -> Result<()> {
        let StoreVectors::Exact { rows, data } = self else {
            return Ok(());
        };
        let graph = new_graph(dims, options, rows.len())?;
        let pairs: Vec<(Row, Vec<f32>)> = rows
            .drain(..)
            .enumerate()
            .map(|(i, row)| (row, data[i * dims..(i + 1) * dims].to_vec()))
            .collect();
        add_all(&graph, &pairs)?;
        *self = StoreVectors::Graph {
            rows: pairs.into_iter().map(|(row, _)| (row.key, row)).collect(),
            graph,
        };
        self.tune(options);
        Ok(())
    }

    /// Saves a graph to `path` (and its meta beside it); exact stores save nothing.
    pub fn save(&self, path: &Path, dims: usize) -> Result<()> {
        let StoreVectors::Graph { rows, graph } = self else {
            return Ok(());
        };
        let meta = GraphMeta {
            through_key: rows.keys().copied().max().unwrap_or(0),
            dimensions: dims,
            scalar: GRAPH_SCALAR_NAME.into(),
        };
        let partial = path.with_extension("usearch.partial");
        graph
            .save(partial.to_str().ok_or_else(|| ann_error("path"))?)
            .map_err(ann_error)?;
        std::fs::rename(&partial, path)?;
        // Replaced, never rewritten in place: a hard link to the old file (an index snapshot
        // being uploaded) keeps the old contents.
        let meta_path = path.with_extension("json");
        let meta_partial = path.with_extension("json.partial");
        std::fs::write(&meta_partial, serde_json::to_vec(&meta).map_err(ann_error)?)?;
        std::fs::rename(&meta_partial, &meta_path)?;
        Ok(())
    }

    /// Loads a saved graph for `rows` (every live row of the store). Rows with keys past
    /// what the graph holds are returned so the caller can add their vectors; `None` when
    /// there is no usable saved graph.
    pub fn load(
        path: &Path,
        dims: usize,
        options: &AnnOptions,
        rows: Vec<Row>,
    ) -> Result<Option<(StoreVectors, Vec<Row>)>> {
        let Ok(meta) = std::fs::read(path.with_extension("json")) else {
            return Ok(None);
        };
        let Ok(meta) = serde_json::from_slice::<GraphMeta>(&meta) else {
            return Ok(None);
        };
        if meta.dimensions != dims || !path.exists() {
            return Ok(None);
        }
        if meta.scalar != GRAPH_SCALAR_NAME {
            tracing::info!(path = %path.display(), saved = %meta.scalar, now = GRAPH_SCALAR_NAME,
                "a saved vector graph keeps its vectors in another form; rebuilding it");
            return Ok(None);
        }
        let graph = new_graph(dims, options, 0)?;
        if let Err(e) = graph.load(path.to_str().ok_or_else(|| ann_error("path"))?) {
            tracing::warn!(path = %path.display(), error = %e, "a saved vector graph is unreadable; rebuilding it");
            return Ok(None);
        }
        // Loading sizes the graph to the file; thread contexts are set here.
        graph
            .reserve_capacity_and_threads(graph.size().max(1024) * 3 / 2, GRAPH_THREADS)
            .map_err(ann_error)?;
        let (held, missing): (Vec<Row>, Vec<Row>) =
            rows.into_iter().partition(|r| r.key <= meta.through_key);
        // A row at or below the mark that the graph lacks was added during a save; rare.
        let (held, lost): (Vec<Row>, Vec<Row>) =
            held.into_iter().partition(|r| graph.contains(r.key));
        let mut missing = missing;
        missing.extend(lost);
        let rows = held.into_iter().map(|r| (r.key, r)).collect();
        Ok(Some((StoreVectors::Graph { rows, graph }, missing)))
    }
}

/// Adds vectors to a graph one at a time. usearch's `add` is thread-safe but concurrent adds
/// can leave a node stored yet unreachable by any search (unum-cloud/USearch#735, open in
/// 2.26): built from 8 threads, a graph of 600 vectors missed a vector's own nearest
/// neighbour — itself — in about 1 run in 10 (`graph_and_exact_agree…` flaked 4–5 in 50);
/// added one at a time, 0 in 100.
fn add_all(graph: &usearch::Index, pairs: &[(Row, Vec<f32>)]) -> Result<()> {
    pairs
        .iter()
        .try_for_each(|(row, vector)| with_permit(|| graph.add(row.key, vector)).map_err(ann_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_graphs_rescore_more_candidates_unless_the_factor_is_set() {
        let by_size = AnnOptions::default();
        assert_eq!(by_size.rescore_for(20_000), 2);
        assert_eq!(by_size.rescore_for(499_999), 2);
        assert_eq!(by_size.rescore_for(500_000), 4);
        assert_eq!(by_size.rescore_for(1_000_000), 4);
        let set = AnnOptions {
            rescore_factor: 3,
            ..AnnOptions::default()
        };
        assert_eq!(set.rescore_for(10), 3);
        assert_eq!(set.rescore_for(1_000_000), 3);
    }

    /// `n` unit vectors from a fixed xorshift sequence, spread over ten files.
    /// Two stores of the same rows, both searched exactly until the second builds a graph.
    fn two_stores(data: &[(Row, Vec<f32>)]) -> (StoreVectors, StoreVectors) {
        let store = || {
            let mut store = StoreVectors::empty();
            store.insert(data.to_vec()).unwrap();
            store
        };
        (store(), store())
    }

    fn rows(n: usize, dims: usize) -> Vec<(Row, Vec<f32>)> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|i| {
                let mut v: Vec<f32> = (0..dims).map(|_| next()).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                let row = Row {
                    key: i as u64 + 1,
                    file: Arc::from(format!("f{}", i % 10).as_str()),
                    generation: 1,
                };
                (row, v)
            })
            .collect()
    }

    #[test]
    fn the_search_list_grows_with_the_graph_unless_set() {
        let auto = AnnOptions::default();
        assert_eq!(auto.expansion_for(600), 256);
        assert_eq!(auto.expansion_for(100_000), 256);
        assert_eq!(auto.expansion_for(1_000_000), 1615);
        assert_eq!(auto.expansion_for(100_000_000), 4096);
        let set = AnnOptions {
            expansion_search: 100,
            ..AnnOptions::default()
        };
        assert_eq!(set.expansion_for(1_000_000), 100);
        // Hybrid's list: a quarter of that, at least 256, never more than the semantic list.
        assert_eq!(auto.fusion_expansion_for(100_000), 256);
        assert_eq!(auto.fusion_expansion_for(400_000), 256);
        assert_eq!(auto.fusion_expansion_for(1_000_000), 403);
        assert_eq!(auto.fusion_expansion_for(100_000_000), 1024);
        assert_eq!(set.fusion_expansion_for(1_000_000), 100);
        let fusion_set = AnnOptions {
            fusion_expansion_search: 50,
            ..AnnOptions::default()
        };
        assert_eq!(fusion_set.fusion_expansion_for(1_000_000), 50);
        assert_eq!(fusion_set.expansion_for(1_000_000), 1615);

        // A graph takes hybrid's list for its size when built, and again when told to.
        let dims = 8;
        let mut store = StoreVectors::empty();
        store.insert(rows(600, dims)).unwrap();
        store.build_graph(dims, &set).unwrap();
        let StoreVectors::Graph { graph, .. } = &store else {
            panic!("a graph was built");
        };
        assert_eq!(graph.expansion_search(), 100);
        store.tune(&fusion_set);
        let StoreVectors::Graph { graph, .. } = &store else {
            panic!("still a graph");
        };
        assert_eq!(graph.expansion_search(), 50);
        assert_eq!(store.semantic_list(&fusion_set), 256);
    }

    #[test]
    fn a_search_asking_for_a_longer_list_walks_with_it() {
        // A graph whose own list is as short as it gets (1): asked for the best 10 it walks
        // with a list of 10 and misses most of the true top 10 of 2,000 vectors in 48
        // dimensions; asked with a list of 2,000 it finds nearly all of it.
        let dims = 48;
        let data = rows(2000, dims);
        let (exact, mut graph) = two_stores(&data);
        let short = AnnOptions {
            connectivity: 4,
            expansion_add: 16,
            fusion_expansion_search: 1,
            ..AnnOptions::default()
        };
        graph.build_graph(dims, &short).unwrap();
        let all = |_: &str, _: u64| true;
        let recall = |list: usize| {
            let mut found = 0;
            for (_, query) in data.iter().step_by(40) {
                let truth = exact.search(dims, query, 10, 0, &all).unwrap();
                let answer = graph.search(dims, query, 10, list, &all).unwrap();
                assert_eq!(answer.len(), 10, "only the best k come back");
                found += answer
                    .iter()
                    .filter(|(k, _)| truth.iter().any(|t| t.0 == *k))
                    .count();
            }
            found as f64 / 500.0
        };
        let (with_own, with_long) = (recall(0), recall(2000));
        // Measured: about 0.4 and 0.97 (the graph's build differs a little run to run).
        assert!(
            with_long >= 0.9,
            "recall@10 with a list of 2,000: {with_long}"
        );
        assert!(
            with_own < with_long - 0.3,
            "recall@10 with the graph's own list {with_own}, with 2,000 {with_long}"
        );
    }

    #[test]
    fn graph_and_exact_agree_and_a_saved_graph_comes_back() {
        let dims = 16;
        let data = rows(600, dims);
        let (exact, mut graph) = two_stores(&data);
        let options = AnnOptions::default();
        graph.build_graph(dims, &options).unwrap();
        assert!(graph.is_graph() && graph.len() == 600);

        let all = |_: &str, _: u64| true;
        let mut agree = 0;
        for (_, query) in data.iter().step_by(20) {
            let truth = exact.search(dims, query, 10, 0, &all).unwrap();
            let found = graph.search(dims, query, 10, 0, &all).unwrap();
            assert_eq!(found[0].0, truth[0].0, "a vector finds itself first");
            agree += found
                .iter()
                .filter(|(k, _)| truth.iter().any(|t| t.0 == *k))
                .count();
        }
        assert!(agree as f64 / 300.0 >= 0.95, "recall@10 {agree}/300");

        // Filters apply inside the graph search.
        let only_f3 = |f: &str, _: u64| f == "f3";
        let found = graph.search(dims, &data[3].1, 10, 0, &only_f3).unwrap();
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|(k, _)| (k - 1) % 10 == 3));

        // Removed rows are never answered.
        assert_eq!(graph.remove(dims, |r| r.key == 4).unwrap(), 1);
        assert!(
            graph
                .search(dims, &data[3].1, 10, 0, &all)
                .unwrap()
                .iter()
                .all(|(k, _)| *k != 4)
        );

        // Saved and loaded: rows added after the save come back as missing.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vs_a.usearch");
        graph.save(&path, dims).unwrap();
        assert_eq!(
            highest_saved_key(dir.path()),
            600,
            "keys never go back below a saved graph's"
        );
        let mut live: Vec<Row> = data
            .iter()
            .map(|(r, _)| r.clone())
            .filter(|r| r.key != 4)
            .collect();
        live.push(Row {
            key: 10_000,
            file: Arc::from("f-new"),
            generation: 1,
        });
        let (loaded, missing) = StoreVectors::load(&path, dims, &options, live)
            .unwrap()
            .unwrap();
        assert_eq!(
            missing.iter().map(|r| r.key).collect::<Vec<_>>(),
            vec![10_000]
        );
        assert_eq!(loaded.len(), 599);
        assert_eq!(loaded.search(dims, &data[7].1, 1, 0, &all).unwrap()[0].0, 8);
        // No graph of another width.
        assert!(
            StoreVectors::load(&path, 8, &options, Vec::new())
                .unwrap()
                .is_none()
        );
        // A graph saved before the scalar kind was recorded kept bf16: rebuilt, not reused.
        std::fs::write(
            path.with_extension("json"),
            format!(r#"{{"through_key":600,"dimensions":{dims}}}"#),
        )
        .unwrap();
        assert!(
            StoreVectors::load(&path, dims, &options, Vec::new())
                .unwrap()
                .is_none()
        );
        assert_eq!(highest_saved_key(dir.path()), 600);
    }
}
