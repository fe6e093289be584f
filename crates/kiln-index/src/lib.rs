//! Kiln's embedded chunk index. Keyword search is BM25 over tantivy (English stemming);
//! vector search is by dot product over unit vectors: an exact scan for small stores, an HNSW
//! graph above a threshold (`vectors`). Chunks carry `(store, file, generation,
//! chunk_index)`: the caller decides which generation of a file is active (the catalog's flip)
//! and the index filters by it, so replacing a file's chunks is "write the new generation,
//! flip, delete the old" with no window in which it is missing.
//!
//! Every chunk is a tantivy document holding its text and its f32 vector, under a unique
//! `key`; per-store vector structures are derived from those documents on first use.

mod directory;
mod hybrid;
mod keyword;
mod maxscore;
mod vectors;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term, doc,
};

use directory::IndexDir;
pub use hybrid::{FUSION_DEPTH, Mode, SEMANTIC_WEIGHT, fuse};
use keyword::TEXT_TOKENIZER;
pub use vectors::AnnOptions;
use vectors::{Row, StoreVectors};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("vector of {got} dimensions, the index holds {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("the index writer is unavailable (a previous write panicked)")]
    Poisoned,
    #[error("vector graph: {0}")]
    Vectors(String),
    /// A failure of a write shared by several callers (adds committed together).
    #[error("{0}")]
    Shared(Arc<IndexError>),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

pub use kiln_core::ChunkRecord;

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The chunk's key in this index.
    pub key: u64,
    pub store_id: String,
    pub file_id: String,
    pub generation: u64,
    pub chunk_index: u32,
    pub text: String,
    pub page: Option<u32>,
    pub score: f32,
}

/// A chunk found by a search, before its document is read: its key and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The chunk's key in this index.
    pub key: u64,
    pub score: f32,
}

/// Which chunks a search may return: those of these stores whose `(file, generation)` the
/// caller says is active.
pub struct Scope<'a> {
    pub store_ids: &'a [String],
    pub active: &'a (dyn Fn(&str, u64) -> bool + Sync),
}

struct Fields {
    store: Field,
    file: Field,
    key: Field,
    generation_key: Field,
    chunk_key: Field,
    generation: Field,
    chunk_index: Field,
    page: Field,
    text: Field,
    vector: Field,
}

/// One store's vectors, behind its own lock so searches of one store never wait for another.
type SharedVectors = Arc<RwLock<StoreVectors>>;

pub struct ChunkIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    dimensions: usize,
    ann: AnnOptions,
    /// Where vector graphs are saved.
    graphs: PathBuf,
    vectors: RwLock<HashMap<String, SharedVectors>>,
    /// Held while vector structures change (adds, deletes, a store's first load), so a store
    /// being loaded never misses chunks added meanwhile. Searches do not take it.
    vector_writes: Mutex<()>,
    /// Adds waiting to be written, and whether one is writing (see `add`).
    adds: Mutex<Adds>,
    /// Signalled when a group of adds has been written.
    added: Condvar,
    /// Commits made (for benchmarks).
    commits: AtomicU64,
    /// How long an add that finds the writer free waits for others (`GROUP_WINDOW`).
    group_window: std::time::Duration,
    /// The least time from one commit's start to the next one's (`COMMIT_SPACING`).
    commit_spacing: std::time::Duration,
    next_key: AtomicU64,
}

/// The adds waiting to be written, and whether an add is writing a group now.
#[derive(Default)]
struct Adds {
    waiting: Vec<WaitingAdd>,
    writing: bool,
    /// When the last group began to be written.
    last_write: Option<std::time::Instant>,
    /// Adds announced and not yet made (`ChunkIndex::expect`).
    expected: usize,
}

/// An add on its way (`ChunkIndex::expect`): a file being processed whose chunks will come
/// here. While one is on its way, a group waits out the commit spacing for it; when none is,
/// the group is written without waiting longer than its window. Made by
/// [`Expected::deliver`], or given up by dropping it (a file that failed or stopped).
pub struct Expected {
    index: Arc<ChunkIndex>,
    /// Still counted in `Adds::expected`.
    pending: bool,
}

impl Expected {
    /// Makes the announced add (see [`ChunkIndex::add`]).
    pub fn deliver(mut self, chunks: &[ChunkRecord]) -> Result<()> {
        let index = self.index.clone();
        index.add_as(chunks, Some(&mut self))
    }

    /// No longer counted as on its way; wakes a group that may be waiting for it. Call with
    /// the adds' state locked.
    fn arrive(&mut self, adds: &mut Adds) {
        if std::mem::take(&mut self.pending) {
            adds.expected -= 1;
            if adds.expected == 0 {
                self.index.added.notify_all();
            }
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        if self.pending {
            let index = self.index.clone();
            let mut adds = index.lock_adds();
            self.arrive(&mut adds);
        }
    }
}

type AddOutcome = Arc<OnceLock<Result<(), Arc<IndexError>>>>;

/// An add waiting to be written, and where its outcome goes.
struct WaitingAdd {
    chunks: Vec<ChunkRecord>,
    outcome: AddOutcome,
}

/// Held by the add writing a group: when it ends, however it ends (a panic too), every add
/// of the group has an outcome and the next group may be written.
struct Writing<'a> {
    index: &'a ChunkIndex,
    group: Vec<WaitingAdd>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        for add in &self.group {
            let _ = add.outcome.set(Err(Arc::new(IndexError::Poisoned)));
        }
        let mut adds = self.index.lock_adds();
        adds.writing = false;
        drop(adds);
        self.index.added.notify_all();
    }
}

/// How long an add that finds the writer free waits for others before it commits, by
/// default. Files embedded in one forward pass reach the index a few milliseconds apart
/// (each first records its progress in the catalog); a commit costs tantivy ~20–40 ms of
/// CPU however few chunks it holds, and each segment it makes is merged again later.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);
/// The least time from one commit's start to the next one's. An add that finds the writer
/// free waits its window, or until this long after the last commit began if that is later:
/// on an idle index the first file still commits after the window, while under a stream of
/// files one commit a second takes them all, as Elasticsearch refreshes its indexes once a
/// second by default. Each commit costs tantivy a segment (its files written and synced) and
/// merges later, whatever it holds: `kiln bench ingest --docs 1000` on a 2-core Xeon made 62–75
/// commits at 250 ms and 16–19 at 1 s, tantivy's threads used about 0.9 CPU-s less, and the
/// model's lanes had 84.0–84.3 % of the cores' time against 80.5–82.7 %. Files waiting for a
/// commit give their worker's slot to the next file (`kiln_pipeline`), so the model stays
/// fed however long they wait. The spacing is waited out only while other adds are expected
/// (`ChunkIndex::expect`): the last files of a stream are written as soon as they have all
/// arrived, not up to a second later with the model idle.
const COMMIT_SPACING: std::time::Duration = std::time::Duration::from_secs(1);
const WRITER_HEAP: usize = 64 * 1024 * 1024;
/// Indexing threads of the writer that takes the pipeline's adds: one, so a commit makes
/// one segment. Tantivy hands the documents of a commit to all its threads and each makes a
/// segment of its own, so with a thread per core a commit of a few files' chunks made two
/// segments: twice the files written and synced, twice the merges (and, on ext4 without a
/// journal, twice the deleted files each new inode's allocation scans past). One thread:
/// `kiln bench ingest --docs 1000` (8 jobs per worker, 3 runs each) pipeline CPU 25.7 →
/// 24.8 s, 71.3 → 74.1 files/s; a bulk build of 100,000 chunks (`kiln bench search`) takes
/// 6 s either way.
const WRITER_THREADS: usize = 1;

/// Fewer, larger segments than tantivy's default (which merges 8 of a size at once and left
/// a million-chunk store in 18 segments): every search visits every segment, and BM25's
/// pruning starts afresh in each. Merging 3 at a time writes each chunk about twice more
/// over a store's life; searches at a million chunks were 1.5× faster on one segment.
///
/// Levels start at 100 documents: tantivy's default counts every segment under 10,000 as one
/// level, so while a store grew to 10,000 chunks each merge rewrote all of it, every other
/// commit (`kiln bench ingest --docs 3000`: merges took 23.5 CPU-s and ingest ran at 32.5
/// files/s; with these levels 5.9 CPU-s and 39.9 files/s). Levels are 2^1.5 ≈ 2.8× apart
/// (tantivy's 2^0.75, with levels from 100, would double the levels a million-chunk store
/// spans): a chunk is rewritten about once per level, and a store keeps at most two segments
/// a level (computed: about 20 at a million chunks, as before).
fn merge_policy() -> tantivy::merge_policy::LogMergePolicy {
    let mut policy = tantivy::merge_policy::LogMergePolicy::default();
    policy.set_min_num_segments(3);
    policy.set_min_layer_size(100);
    policy.set_level_log_size(1.5);
    policy
}

fn generation_key(file_id: &str, generation: u64) -> String {
    format!("{file_id}/{generation}")
}

fn chunk_key(file_id: &str, generation: u64, chunk_index: u32) -> String {
    format!("{file_id}/{generation}/{chunk_index}")
}

impl ChunkIndex {
    /// Opens (creating if needed) the index in `dir` for vectors of `dimensions`.
    pub fn open(dir: &Path, dimensions: usize) -> Result<ChunkIndex> {
        ChunkIndex::open_with(dir, dimensions, AnnOptions::default())
    }

    /// Opens with explicit approximate-search settings.
    pub fn open_with(dir: &Path, dimensions: usize, ann: AnnOptions) -> Result<ChunkIndex> {
        std::fs::create_dir_all(dir)?;
        let mut builder = Schema::builder();
        let text_options = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            store: builder.add_text_field("store", STRING | STORED | FAST),
            file: builder.add_text_field("file", STRING | STORED | FAST),
            key: builder.add_u64_field("key", INDEXED | STORED | FAST),
            generation_key: builder.add_text_field("generation_key", STRING),
            chunk_key: builder.add_text_field("chunk_key", STRING),
            generation: builder.add_u64_field("generation", INDEXED | STORED | FAST),
            chunk_index: builder.add_u64_field("chunk_index", STORED | FAST),
            page: builder.add_u64_field("page", STORED),
            text: builder.add_text_field("text", text_options),
            vector: builder.add_bytes_field("vector", STORED),
        };
        let schema = builder.build();
        let open_dir = |dir: &Path| {
            IndexDir::open(dir).map_err(|e| IndexError::Io(std::io::Error::other(e.to_string())))
        };
        // One directory serves the checks and the open; a migration swaps the folder, so
        // the directory is opened again after one.
        let mut directory = open_dir(dir)?;
        let exists = Index::exists(&directory)
            .map_err(|e| IndexError::Io(std::io::Error::other(e.to_string())))?;
        if exists {
            let existing = Index::open(directory.clone())?;
            if existing.schema() != schema {
                drop(existing);
                migrate(dir, &schema)?;
                directory = open_dir(dir)?;
            }
        }
        let index = Index::open_or_create(directory, schema)?;
        keyword::register_tokenizer(&index);
        let graphs = dir.join("vectors");
        std::fs::create_dir_all(&graphs)?;
        let writer: IndexWriter = index.writer_with_num_threads(WRITER_THREADS, WRITER_HEAP)?;
        writer.set_merge_policy(Box::new(merge_policy()));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        // Keys never go back, even when the newest chunks were deleted: a saved graph may
        // still hold a deleted chunk's key, which must not come to mean another chunk.
        let mut max_key = vectors::highest_saved_key(&graphs);
        for segment in searcher.segment_readers() {
            max_key = max_key.max(segment.fast_fields().u64("key")?.max_value());
        }
        Ok(ChunkIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            dimensions,
            ann,
            graphs,
            vectors: RwLock::new(HashMap::new()),
            vector_writes: Mutex::new(()),
            adds: Mutex::default(),
            added: Condvar::new(),
            commits: AtomicU64::new(0),
            group_window: GROUP_WINDOW,
            commit_spacing: COMMIT_SPACING,
            next_key: AtomicU64::new(max_key + 1),
        })
    }

    /// How long an add that finds the writer free waits for others to commit with it.
    pub fn with_group_window(mut self, window: std::time::Duration) -> ChunkIndex {
        self.group_window = window;
        self
    }

    /// The least time between the starts of two commits (see `COMMIT_SPACING`).
    pub fn with_commit_spacing(mut self, spacing: std::time::Duration) -> ChunkIndex {
        self.commit_spacing = spacing;
        self
    }

    /// How many segments searches visit (for benchmarks).
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Adds chunks and commits: when this returns, they are durable and searchable (subject
    /// to the caller's active-generation filter).
    ///
    /// Adds are written in groups, one commit each: an add that finds the writer free waits
    /// the group window (10 ms by default), or, while other adds are expected
    /// ([`ChunkIndex::expect`]), until the commit spacing (250 ms) has passed since the last
    /// commit began if that is later, and then writes itself and every add that arrived
    /// meanwhile; adds that arrive while a group is being written wait for it, and then one
    /// of them writes them all. A commit costs about the same for one chunk as for hundreds
    /// (segment files, a synced meta file, a reader reload, later merges), so files
    /// processed side by side share it. If a group's write fails, every add in it gets the
    /// error.
    pub fn add(&self, chunks: &[ChunkRecord]) -> Result<()> {
        self.add_as(chunks, None)
    }

    /// Announces an add: until the returned [`Expected`] is delivered or dropped, a group
    /// waiting for the commit spacing waits for it too. Without any add announced, a group
    /// waits only its window.
    pub fn expect(self: &Arc<Self>) -> Expected {
        self.lock_adds().expected += 1;
        Expected {
            index: self.clone(),
            pending: true,
        }
    }

    fn add_as(&self, chunks: &[ChunkRecord], expected: Option<&mut Expected>) -> Result<()> {
        for chunk in chunks {
            if chunk.vector.len() != self.dimensions {
                return Err(IndexError::Dimensions {
                    expected: self.dimensions,
                    got: chunk.vector.len(),
                });
            }
        }
        let outcome: AddOutcome = Arc::new(OnceLock::new());
        let mut adds = self.lock_adds();
        adds.waiting.push(WaitingAdd {
            chunks: chunks.to_vec(),
            outcome: outcome.clone(),
        });
        if let Some(expected) = expected {
            expected.arrive(&mut adds);
        }
        loop {
            if let Some(written) = outcome.get() {
                return written.clone().map_err(IndexError::Shared);
            }
            if !adds.writing {
                break;
            }
            adds = self
                .added
                .wait(adds)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        // Nobody is writing and ours is not written: write all that waited, ours among them,
        // and those that arrive within the window.
        adds.writing = true;
        let mut writing = Writing {
            index: self,
            group: Vec::new(),
        };
        let spaced_until = adds.last_write.map(|at| at + self.commit_spacing);
        if !self.group_window.is_zero() {
            drop(adds);
            std::thread::sleep(self.group_window);
            adds = self.lock_adds();
        }
        // Then the rest of the spacing, while other adds are on their way.
        while let Some(left) = spaced_until
            .map(|until| until.saturating_duration_since(std::time::Instant::now()))
            .filter(|left| !left.is_zero() && adds.expected > 0)
        {
            adds = self
                .added
                .wait_timeout(adds, left)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(adds, _)| adds);
        }
        adds.last_write = Some(std::time::Instant::now());
        writing.group = std::mem::take(&mut adds.waiting);
        drop(adds);
        let written = self.write_group(&writing.group).map_err(Arc::new);
        for add in &writing.group {
            let _ = add.outcome.set(written.clone());
        }
        drop(writing);
        written.map_err(IndexError::Shared)
    }

    /// The adds' state. Nothing panics while holding it, so it is consistent even if a
    /// thread panicked meanwhile.
    fn lock_adds(&self) -> std::sync::MutexGuard<'_, Adds> {
        self.adds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_group(&self, group: &[WaitingAdd]) -> Result<()> {
        let _vectors = self
            .vector_writes
            .lock()
            .map_err(|_| IndexError::Poisoned)?;
        let all: Vec<&ChunkRecord> = group.iter().flat_map(|add| &add.chunks).collect();
        self.write_chunks(&all)
    }

    /// Commits made since this index was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Writes chunks in one commit and brings loaded vectors in step. Hold `vector_writes`.
    fn write_chunks(&self, chunks: &[&ChunkRecord]) -> Result<()> {
        let f = &self.fields;
        let first_key = self
            .next_key
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);
        {
            let mut writer = self.writer.lock().map_err(|_| IndexError::Poisoned)?;
            for (chunk, key) in chunks.iter().zip(first_key..) {
                let mut document = doc!(
                    f.store => chunk.store_id.as_str(),
                    f.file => chunk.file_id.as_str(),
                    f.key => key,
                    f.generation_key => generation_key(&chunk.file_id, chunk.generation),
                    f.chunk_key => chunk_key(&chunk.file_id, chunk.generation, chunk.chunk_index),
                    f.generation => chunk.generation,
                    f.chunk_index => u64::from(chunk.chunk_index),
                    f.text => chunk.text.as_str(),
                    f.vector => vector_bytes(&chunk.vector),
                );
                if let Some(page) = chunk.page {
                    document.add_u64(f.page, u64::from(page));
                }
                writer.add_document(document)?;
            }
            self.commit(&mut writer)?;
        }
        self.reader.reload()?;
        // Keep loaded vector structures in step.
        let mut by_store: HashMap<&str, Vec<(Row, Vec<f32>)>> = HashMap::new();
        for (chunk, key) in chunks.iter().zip(first_key..) {
            by_store.entry(&chunk.store_id).or_default().push((
                Row {
                    key,
                    file: Arc::from(chunk.file_id.as_str()),
                    generation: chunk.generation,
                },
                chunk.vector.clone(),
            ));
        }
        for (store_id, rows) in by_store {
            let Some(shared) = self.loaded(store_id)? else {
                continue;
            };
            let mut store = shared.write().map_err(|_| IndexError::Poisoned)?;
            store.insert(rows)?;
            if !store.is_graph() && store.len() >= self.ann.threshold {
                store.build_graph(self.dimensions, &self.ann)?;
                store.save(&self.graph_path(store_id), self.dimensions)?;
            }
            store.tune(&self.ann);
        }
        Ok(())
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<()> {
        writer.commit()?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Saves every loaded vector graph, so the next start opens them instead of rebuilding.
    /// Call at shutdown; chunks added after the last save are re-read from the documents.
    pub fn persist(&self) -> Result<()> {
        let _vectors = self
            .vector_writes
            .lock()
            .map_err(|_| IndexError::Poisoned)?;
        let loaded: Vec<(String, SharedVectors)> = self
            .vectors
            .read()
            .map_err(|_| IndexError::Poisoned)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (store_id, shared) in loaded {
            let store = shared.read().map_err(|_| IndexError::Poisoned)?;
            store.save(&self.graph_path(&store_id), self.dimensions)?;
        }
        Ok(())
    }

    /// Closes the index once the segment merges under way, and those they lead to, are done:
    /// for a caller that filled it and wants it settled (benchmarks). A server does not wait;
    /// merges left unfinished are taken up again after later commits.
    pub fn finish_merges(self) -> Result<()> {
        let writer = self.writer.into_inner().map_err(|_| IndexError::Poisoned)?;
        writer.wait_merging_threads()?;
        Ok(())
    }

    /// Loads a store's vectors now (building and saving its graph if it is large and has
    /// none), instead of at its first search.
    pub fn warm(&self, store_id: &str) -> Result<()> {
        self.store_vectors(store_id).map(|_| ())
    }

    /// How a store's vectors are searched right now: `Some(true)` through a graph,
    /// `Some(false)` exactly, `None` when not loaded yet.
    pub fn uses_graph(&self, store_id: &str) -> Result<Option<bool>> {
        Ok(match self.loaded(store_id)? {
            Some(shared) => Some(shared.read().map_err(|_| IndexError::Poisoned)?.is_graph()),
            None => None,
        })
    }

    fn graph_path(&self, store_id: &str) -> PathBuf {
        self.graphs.join(format!("{store_id}.usearch"))
    }

    fn loaded(&self, store_id: &str) -> Result<Option<SharedVectors>> {
        Ok(self
            .vectors
            .read()
            .map_err(|_| IndexError::Poisoned)?
            .get(store_id)
            .cloned())
    }

    /// Deletes one generation of a file.
    pub fn delete_generation(&self, file_id: &str, generation: u64) -> Result<()> {
        let term = Term::from_field_text(
            self.fields.generation_key,
            &generation_key(file_id, generation),
        );
        self.delete(term, |row| {
            row.file.as_ref() == file_id && row.generation == generation
        })
    }

    /// Deletes every generation of a file.
    pub fn delete_file(&self, file_id: &str) -> Result<()> {
        let term = Term::from_field_text(self.fields.file, file_id);
        self.delete(term, |row| row.file.as_ref() == file_id)
    }

    /// Deletes everything of a store.
    pub fn delete_store(&self, store_id: &str) -> Result<()> {
        let term = Term::from_field_text(self.fields.store, store_id);
        self.delete(term, |_| true)?;
        let _vectors = self
            .vector_writes
            .lock()
            .map_err(|_| IndexError::Poisoned)?;
        self.vectors
            .write()
            .map_err(|_| IndexError::Poisoned)?
            .remove(store_id);
        let graph = self.graph_path(store_id);
        for path in [graph.clone(), graph.with_extension("json")] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(e.into());
            }
        }
        Ok(())
    }

    fn delete(&self, term: Term, matches: impl Fn(&Row) -> bool) -> Result<()> {
        let _vectors = self
            .vector_writes
            .lock()
            .map_err(|_| IndexError::Poisoned)?;
        {
            let mut writer = self.writer.lock().map_err(|_| IndexError::Poisoned)?;
            writer.delete_term(term);
            self.commit(&mut writer)?;
        }
        self.reader.reload()?;
        let loaded: Vec<SharedVectors> = self
            .vectors
            .read()
            .map_err(|_| IndexError::Poisoned)?
            .values()
            .cloned()
            .collect();
        for shared in loaded {
            let mut store = shared.write().map_err(|_| IndexError::Poisoned)?;
            store.remove(self.dimensions, &matches)?;
        }
        Ok(())
    }

    /// Every chunk in the index, all stores and generations (for tools: benchmarks, exports).
    pub fn export(&self) -> Result<Vec<ChunkRecord>> {
        let searcher = self.reader.searcher();
        let addresses = searcher.search(
            &tantivy::query::AllQuery,
            &tantivy::collector::DocSetCollector,
        )?;
        let mut chunks = Vec::with_capacity(addresses.len());
        for address in addresses {
            let document: TantivyDocument = searcher.doc(address)?;
            let vector = self.stored_vector(&document);
            let key = document
                .get_first(self.fields.key)
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let hit = self.hit(&document, key, 0.0);
            chunks.push(ChunkRecord {
                store_id: hit.store_id,
                file_id: hit.file_id,
                generation: hit.generation,
                chunk_index: hit.chunk_index,
                text: hit.text,
                page: hit.page,
                vector,
            });
        }
        Ok(chunks)
    }

    /// Number of chunks stored for a file's generation.
    pub fn count(&self, file_id: &str, generation: u64) -> Result<usize> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(
                self.fields.generation_key,
                &generation_key(file_id, generation),
            ),
            IndexRecordOption::Basic,
        );
        Ok(searcher.search(&query, &tantivy::collector::Count)?)
    }

    /// Number of chunks of a file, all generations.
    pub fn count_file(&self, file_id: &str) -> Result<usize> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.file, file_id),
            IndexRecordOption::Basic,
        );
        Ok(searcher.search(&query, &tantivy::collector::Count)?)
    }

    /// BM25 top-`k` among active chunks of the scope's stores, with their documents.
    pub fn keyword(&self, scope: &Scope<'_>, query: &str, k: usize) -> Result<Vec<Hit>> {
        let candidates = self.keyword_candidates(scope, query, k)?;
        self.hydrate(&candidates, None, k)
    }

    /// Nearest neighbours by dot product among active chunks of the scope's stores, with
    /// their documents and exact scores.
    pub fn semantic(&self, scope: &Scope<'_>, vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        let candidates = self.semantic_candidates(scope, vector, k, true)?;
        self.hydrate(&candidates, Some(vector), k)
    }

    /// Nearest neighbours by dot product (vectors are unit length) among active chunks of the
    /// scope's stores: exact for small stores, through the store's graph for large ones
    /// (scores then from int8 vectors; `hydrate` with the query gives exact ones). With
    /// `for_rescoring`, a graph gives `k × rescore_for(its size)` candidates, so that rescoring them
    /// exactly yields a good top `k`; exact stores always give `k`.
    pub fn semantic_candidates(
        &self,
        scope: &Scope<'_>,
        vector: &[f32],
        k: usize,
        for_rescoring: bool,
    ) -> Result<Vec<Candidate>> {
        if vector.len() != self.dimensions {
            return Err(IndexError::Dimensions {
                expected: self.dimensions,
                got: vector.len(),
            });
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut wanted_in_all = k;
        for store_id in scope.store_ids {
            let shared = self.store_vectors(store_id)?;
            let store = shared.read().map_err(|_| IndexError::Poisoned)?;
            // Semantic answers walk the graph with the long list their recall needs; hybrid's
            // semantic half with the graph's own, shorter one (`AnnOptions`).
            let (wanted, list) = if for_rescoring && store.is_graph() {
                (
                    k * store.rescore_factor(&self.ann),
                    store.semantic_list(&self.ann),
                )
            } else {
                (k, 0)
            };
            wanted_in_all = wanted_in_all.max(wanted);
            candidates.extend(
                store
                    .search(self.dimensions, vector, wanted, list, scope.active)?
                    .into_iter()
                    .map(|(key, score)| Candidate { key, score }),
            );
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        candidates.truncate(wanted_in_all);
        Ok(candidates)
    }

    /// The documents of the best `limit` candidates (`candidates` are sorted by score), best
    /// first. With `rescore`, every candidate's score is the exact dot product of that vector
    /// and the chunk's stored vector instead, and the best `limit` by it are kept. Equal
    /// scores are ordered by file and chunk, never by this index's internal keys, so every
    /// replica of the same chunks gives the same answer.
    pub fn hydrate(
        &self,
        candidates: &[Candidate],
        rescore: Option<&[f32]>,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let candidates = match rescore {
            Some(_) => candidates,
            None => {
                // Candidates tied with the last one kept are read too, to choose among them
                // by file and chunk.
                let mut end = limit.min(candidates.len());
                while end > 0
                    && end < candidates.len()
                    && candidates[end].score == candidates[end - 1].score
                {
                    end += 1;
                }
                &candidates[..end]
            }
        };
        let searcher = self.reader.searcher();
        let mut hits = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let Some(address) = self.address_of(&searcher, candidate.key)? else {
                continue;
            };
            let document: TantivyDocument = searcher.doc(address)?;
            let score = match rescore {
                Some(vector) => dot(vector, &self.stored_vector(&document)),
                None => candidate.score,
            };
            hits.push(self.hit(&document, candidate.key, score));
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.file_id.cmp(&b.file_id))
                .then(a.generation.cmp(&b.generation))
                .then(a.chunk_index.cmp(&b.chunk_index))
        });
        hits.truncate(limit);
        Ok(hits)
    }

    fn address_of(&self, searcher: &Searcher, key: u64) -> Result<Option<DocAddress>> {
        let query = TermQuery::new(
            Term::from_field_u64(self.fields.key, key),
            IndexRecordOption::Basic,
        );
        Ok(searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())?
            .into_iter()
            .next()
            .map(|(_, address)| address))
    }

    fn stored_vector(&self, document: &TantivyDocument) -> Vec<f32> {
        bytes_vector(
            document
                .get_first(self.fields.vector)
                .and_then(|v| v.as_bytes())
                .unwrap_or(&[]),
        )
    }

    /// A store's vector structure, loaded on first use: its live rows are read from the
    /// documents' fast fields; a large store reopens its saved graph (adding what came after
    /// the save) or builds one; a small one reads its vectors into memory.
    fn store_vectors(&self, store_id: &str) -> Result<SharedVectors> {
        if let Some(v) = self.loaded(store_id)? {
            return Ok(v);
        }
        let _vectors = self
            .vector_writes
            .lock()
            .map_err(|_| IndexError::Poisoned)?;
        if let Some(v) = self.loaded(store_id)? {
            return Ok(v);
        }
        let searcher = self.reader.searcher();
        let rows = self.live_rows(&searcher, store_id)?;
        let dims = self.dimensions;
        let path = self.graph_path(store_id);
        let mut store = StoreVectors::empty();
        if rows.len() >= self.ann.threshold
            && let Some((graph, missing)) = StoreVectors::load(
                &path,
                dims,
                &self.ann,
                rows.iter().map(|(row, _)| row.clone()).collect(),
            )?
        {
            let wanted: std::collections::HashSet<u64> = missing.iter().map(|r| r.key).collect();
            store = graph;
            let pending = rows
                .into_iter()
                .filter(|(row, _)| wanted.contains(&row.key));
            store.insert(self.with_vectors(&searcher, pending)?)?;
        } else {
            store.insert(self.with_vectors(&searcher, rows.into_iter())?)?;
            if store.len() >= self.ann.threshold {
                store.build_graph(dims, &self.ann)?;
                store.save(&path, dims)?;
            }
        }
        store.tune(&self.ann);
        let shared = Arc::new(RwLock::new(store));
        self.vectors
            .write()
            .map_err(|_| IndexError::Poisoned)?
            .insert(store_id.to_string(), shared.clone());
        Ok(shared)
    }

    /// Every chunk of a store with where its document is, from the fast fields (no document
    /// is read).
    fn live_rows(&self, searcher: &Searcher, store_id: &str) -> Result<Vec<(Row, DocAddress)>> {
        let query = TermQuery::new(
            Term::from_field_text(self.fields.store, store_id),
            IndexRecordOption::Basic,
        );
        let mut addresses: Vec<DocAddress> = searcher
            .search(&query, &tantivy::collector::DocSetCollector)?
            .into_iter()
            .collect();
        addresses.sort();
        let mut rows = Vec::with_capacity(addresses.len());
        let mut segment = None;
        for address in addresses {
            if segment
                .as_ref()
                .is_none_or(|(ord, _)| *ord != address.segment_ord)
            {
                let fast = searcher.segment_reader(address.segment_ord).fast_fields();
                let files = fast
                    .str("file")?
                    .ok_or_else(|| IndexError::Vectors("the index has no file column".into()))?;
                let columns = (
                    fast.u64("key")?,
                    fast.u64("generation")?,
                    files,
                    HashMap::<u64, Arc<str>>::new(),
                );
                segment = Some((address.segment_ord, columns));
            }
            let Some((_, (keys, generations, files, names))) = segment.as_mut() else {
                continue;
            };
            let doc = address.doc_id;
            let Some(ord) = files.ords().first(doc) else {
                continue;
            };
            let file = match names.get(&ord) {
                Some(name) => name.clone(),
                None => {
                    let mut name = String::new();
                    files.ord_to_str(ord, &mut name)?;
                    let name: Arc<str> = Arc::from(name.as_str());
                    names.insert(ord, name.clone());
                    name
                }
            };
            rows.push((
                Row {
                    key: keys.first(doc).unwrap_or(0),
                    file,
                    generation: generations.first(doc).unwrap_or(0),
                },
                address,
            ));
        }
        Ok(rows)
    }

    /// Reads the stored vectors of `rows`' documents.
    fn with_vectors(
        &self,
        searcher: &Searcher,
        rows: impl Iterator<Item = (Row, DocAddress)>,
    ) -> Result<Vec<(Row, Vec<f32>)>> {
        let mut out = Vec::new();
        for (row, address) in rows {
            let document: TantivyDocument = searcher.doc(address)?;
            let vector = self.stored_vector(&document);
            if vector.len() == self.dimensions {
                out.push((row, vector));
            }
        }
        Ok(out)
    }

    fn hit(&self, document: &TantivyDocument, key: u64, score: f32) -> Hit {
        let f = &self.fields;
        let text = |field| {
            document
                .get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Hit {
            key,
            store_id: text(f.store),
            file_id: text(f.file),
            generation: document
                .get_first(f.generation)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            chunk_index: document
                .get_first(f.chunk_index)
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as u32,
            text: text(f.text),
            page: document
                .get_first(f.page)
                .and_then(|v| v.as_u64())
                .map(|p| p as u32),
            score,
        }
    }
}

/// Rewrites an index written with an older schema into the current one, in place: every
/// chunk is copied (a new key each), then the folders are swapped. Vector graphs, derived
/// from keys, are dropped and rebuilt on first use.
fn migrate(dir: &Path, schema: &Schema) -> Result<()> {
    let started = std::time::Instant::now();
    let old = Index::open(IndexDir::open(dir)?)?;
    let old_schema = old.schema();
    let field = |name: &str| old_schema.get_field(name).ok();
    let target = dir.with_extension("migrating");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::create_dir_all(&target)?;
    let new = Index::create(
        IndexDir::open(&target)?,
        schema.clone(),
        tantivy::IndexSettings::default(),
    )?;
    keyword::register_tokenizer(&new);
    let mut writer: IndexWriter = new.writer(WRITER_HEAP)?;
    let reader = old.reader()?;
    let searcher = reader.searcher();
    let addresses = searcher.search(
        &tantivy::query::AllQuery,
        &tantivy::collector::DocSetCollector,
    )?;
    let mut next_key = 1u64;
    for address in &addresses {
        let document: TantivyDocument = searcher.doc(*address)?;
        let mut copy = TantivyDocument::default();
        for (name, new_field) in schema.fields().map(|(f, entry)| (entry.name(), f)) {
            if name == "key" {
                copy.add_u64(new_field, next_key);
                next_key += 1;
                continue;
            }
            let Some(old_field) = field(name) else {
                continue;
            };
            for value in document.get_all(old_field) {
                let value: tantivy::schema::OwnedValue = value.into();
                copy.add_field_value(new_field, &value);
            }
        }
        writer.add_document(copy)?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    drop(reader);
    drop(old);
    let previous = dir.with_extension("previous");
    if previous.exists() {
        std::fs::remove_dir_all(&previous)?;
    }
    std::fs::rename(dir, &previous)?;
    std::fs::rename(&target, dir)?;
    std::fs::remove_dir_all(&previous)?;
    tracing::info!(
        chunks = addresses.len(),
        seconds = started.elapsed().as_secs_f64(),
        "the index was rewritten in the current format"
    );
    Ok(())
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Dot product with eight independent accumulators (lets the compiler vectorise).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for lane in 0..8 {
            acc[lane] += a[i * 8 + lane] * b[i * 8 + lane];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: usize, dims: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims)
            .map(|i| (((i + 1) * (seed + 3)) % 17) as f32 - 8.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A store's big segment is not merged again with each small new one: small segments
    /// merge among themselves, three at a time, and sizes a few times apart stay apart.
    #[test]
    fn the_merge_policy_leaves_a_big_segment_alone_while_small_ones_arrive() {
        use tantivy::index::SegmentId;
        use tantivy::merge_policy::MergePolicy;
        let index = tantivy::Index::create_in_ram(Schema::builder().build());
        let metas = |sizes: &[u32]| -> Vec<tantivy::index::SegmentMeta> {
            sizes
                .iter()
                .map(|&n| index.new_segment_meta(SegmentId::generate_random(), n))
                .collect()
        };
        let merged = |sizes: &[u32]| -> Vec<Vec<u32>> {
            let segments = metas(sizes);
            merge_policy()
                .compute_merge_candidates(&segments)
                .into_iter()
                .map(|candidate| {
                    let mut sizes: Vec<u32> = candidate
                        .0
                        .iter()
                        .map(|id| segments.iter().find(|s| s.id() == *id).unwrap().max_doc())
                        .collect();
                    sizes.sort_unstable();
                    sizes
                })
                .collect()
        };
        // tantivy's default levels would merge all three (every size under 10,000 is one).
        assert_eq!(merged(&[5000, 15, 15]), Vec::<Vec<u32>>::new());
        assert_eq!(merged(&[5000, 15, 15, 15]), vec![vec![15, 15, 15]]);
        assert_eq!(merged(&[5000, 2000, 15]), Vec::<Vec<u32>>::new());
        assert_eq!(merged(&[5000, 2500, 2000]), vec![vec![2000, 2500, 5000]]);
    }

    pub(crate) fn chunk(
        store: &str,
        file: &str,
        generation: u64,
        index: u32,
        text: &str,
        seed: usize,
    ) -> ChunkRecord {
        ChunkRecord {
            store_id: store.into(),
            file_id: file.into(),
            generation,
            chunk_index: index,
            text: text.into(),
            page: index.is_multiple_of(2).then_some(index + 1),
            vector: unit(seed, 8),
        }
    }

    #[test]
    fn adds_that_wait_for_the_writer_are_written_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(ChunkIndex::open(dir.path(), 8).unwrap());
        index
            .add(&[chunk("vs_a", "f0", 1, 0, "A lone add about yeast", 9)])
            .unwrap();
        assert_eq!(
            index.commits(),
            1,
            "an add that finds the writer free commits"
        );

        // Four files' adds arrive while a group is being written.
        index.adds.lock().unwrap().writing = true;
        let adders: Vec<_> = (1..=4usize)
            .map(|i| {
                let index = index.clone();
                std::thread::spawn(move || {
                    let file = format!("f{i}");
                    index.add(&[
                        chunk("vs_a", &file, 1, 0, &format!("yeast study {i}"), i),
                        chunk("vs_a", &file, 1, 1, &format!("second part {i}"), i + 10),
                    ])
                })
            })
            .collect();
        while index.adds.lock().unwrap().waiting.len() < 4 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        index.adds.lock().unwrap().writing = false;
        index.added.notify_all();
        for adder in adders {
            adder.join().unwrap().unwrap();
        }
        assert_eq!(index.commits(), 2, "the four waiting adds share one commit");

        // Each returned only once its chunks were searchable, none twice, keys all distinct.
        let stores = vec!["vs_a".to_string()];
        let all = |_: &str, _: u64| true;
        let scope = Scope {
            store_ids: &stores,
            active: &all,
        };
        let hits = index.keyword(&scope, "yeast", 10).unwrap();
        let mut files: Vec<&str> = hits.iter().map(|h| h.file_id.as_str()).collect();
        files.sort_unstable();
        assert_eq!(files, ["f0", "f1", "f2", "f3", "f4"]);
        assert_eq!(index.keyword(&scope, "second part", 20).unwrap().len(), 4);
        let mut keys: Vec<u64> = index
            .semantic(&scope, &unit(1, 8), 20)
            .unwrap()
            .iter()
            .map(|h| h.key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 9);
    }

    /// Tantivy's list of the files it manages is never written to the folder; made from the
    /// folder when the index opens, it lets garbage collection remove what a crash between
    /// writing a segment and committing it leaves, and every committed chunk stays.
    #[test]
    fn the_managed_files_are_the_folders_and_uncommitted_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let listed = dir.path().join(".managed.json");
        {
            let index = ChunkIndex::open(dir.path(), 8)
                .unwrap()
                .with_group_window(std::time::Duration::ZERO)
                .with_commit_spacing(std::time::Duration::ZERO);
            for i in 0..5 {
                let file = format!("f{i}");
                index
                    .add(&[chunk("vs_a", &file, 1, 0, "kept words", i)])
                    .unwrap();
            }
            assert!(index.commits() >= 5);
            index.finish_merges().unwrap();
        }
        assert!(!listed.exists(), "no list written");
        // A segment file that no commit names, and a list an earlier version left (which
        // does not name it: tantivy alone would never collect it).
        let leftover = dir.path().join("0123456789abcdef0123456789abcdef.idx");
        std::fs::write(&leftover, b"never committed").unwrap();
        std::fs::write(&listed, b"[]\n").unwrap();
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        assert!(!listed.exists(), "the old list is removed at open");
        index
            .add(&[chunk("vs_a", "f9", 1, 0, "more words", 9)])
            .unwrap();
        assert!(!leftover.exists(), "collected after the next commit");
        assert!(!listed.exists());
        let stores = vec!["vs_a".to_string()];
        let all = |_: &str, _: u64| true;
        let scope = Scope {
            store_ids: &stores,
            active: &all,
        };
        assert_eq!(index.keyword(&scope, "words", 10).unwrap().len(), 6);
    }

    #[test]
    fn an_add_that_finds_the_writer_free_waits_its_window_for_others() {
        for (window, commits) in [(2000, 1), (0, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let index = Arc::new(
                ChunkIndex::open(dir.path(), 8)
                    .unwrap()
                    .with_group_window(std::time::Duration::from_millis(window)),
            );
            let first = {
                let index = index.clone();
                std::thread::spawn(move || index.add(&[chunk("vs_a", "f1", 1, 0, "one", 1)]))
            };
            // The second add comes 50 ms later: inside a 2 s window, after a zero one.
            std::thread::sleep(std::time::Duration::from_millis(50));
            index.add(&[chunk("vs_a", "f2", 1, 0, "two", 2)]).unwrap();
            first.join().unwrap().unwrap();
            assert_eq!(index.commits(), commits, "window {window} ms");
        }
    }

    #[test]
    fn commits_are_spaced_and_the_adds_that_wait_share_one() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(
            ChunkIndex::open(dir.path(), 8)
                .unwrap()
                .with_group_window(Duration::ZERO)
                .with_commit_spacing(Duration::from_millis(400)),
        );
        let started = Instant::now();
        index.add(&[chunk("vs_a", "f0", 1, 0, "first", 1)]).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "the first add of an idle index does not wait for the spacing"
        );
        // Two more adds right after, while a third file is on its way: both wait for the
        // spacing and share one commit.
        let third = index.expect();
        let adders: Vec<_> = (1..=2usize)
            .map(|i| {
                let index = index.clone();
                std::thread::spawn(move || {
                    index.add(&[chunk("vs_a", &format!("f{i}"), 1, 0, "later", i)])
                })
            })
            .collect();
        for adder in adders {
            adder.join().unwrap().unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "the next commit began no sooner than the spacing after the first"
        );
        assert_eq!(index.commits(), 2, "the two waiting adds share a commit");
        third
            .deliver(&[chunk("vs_a", "f3", 1, 0, "third", 3)])
            .unwrap();
        assert_eq!(index.commits(), 3);
    }

    /// The spacing batches a stream of files; its last files are written as soon as no
    /// other file is on its way (added, or given up), not when the spacing ends.
    #[test]
    fn the_spacing_ends_when_no_add_is_on_its_way() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(
            ChunkIndex::open(dir.path(), 8)
                .unwrap()
                .with_group_window(Duration::ZERO)
                .with_commit_spacing(Duration::from_secs(5)),
        );
        let started = Instant::now();
        index.add(&[chunk("vs_a", "f0", 1, 0, "first", 1)]).unwrap();
        assert_eq!(index.commits(), 1);

        // Three files on their way. The first to arrive waits: the others may still come.
        let (one, two, three) = (index.expect(), index.expect(), index.expect());
        let first = std::thread::spawn(move || one.deliver(&[chunk("vs_a", "f1", 1, 0, "one", 1)]));
        while index.adds.lock().unwrap().waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(index.commits(), 1, "waits while two files are on their way");
        // One gives up (its file failed), the last arrives: one commit holds both adds.
        drop(two);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(index.commits(), 1, "waits while one file is on its way");
        three
            .deliver(&[chunk("vs_a", "f3", 1, 0, "three", 3)])
            .unwrap();
        first.join().unwrap().unwrap();
        assert_eq!(index.commits(), 2, "the two adds share the commit");

        // An add while none is announced, and one whose only companion gives up.
        index.add(&[chunk("vs_a", "f4", 1, 0, "four", 4)]).unwrap();
        let gives_up = index.expect();
        let last = {
            let index = index.clone();
            std::thread::spawn(move || index.add(&[chunk("vs_a", "f5", 1, 0, "five", 5)]))
        };
        while index.adds.lock().unwrap().waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(gives_up);
        last.join().unwrap().unwrap();
        assert_eq!(index.commits(), 4);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "no add waited for the spacing"
        );
        assert_eq!(index.lock_adds().expected, 0);
    }

    #[test]
    fn keyword_and_vector_search_with_generations_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        index
            .add(&[
                chunk(
                    "vs_a",
                    "f1",
                    1,
                    0,
                    "Vitamin D deficiency and bone fractures",
                    1,
                ),
                chunk("vs_a", "f1", 1, 1, "Fracture risk rises with age", 2),
                chunk("vs_a", "f2", 1, 0, "Gene expression in yeast cells", 3),
                chunk("vs_b", "f3", 1, 0, "Vitamin supplements in other store", 4),
            ])
            .unwrap();
        let stores = vec!["vs_a".to_string()];
        let all = |_: &str, _: u64| true;
        let scope = Scope {
            store_ids: &stores,
            active: &all,
        };

        let hits = index.keyword(&scope, "vitamin: \"fractures\"", 10).unwrap();
        assert_eq!(hits[0].file_id, "f1");
        assert_eq!(hits[0].chunk_index, 0);
        assert!(hits.iter().all(|h| h.store_id == "vs_a"), "store filter");
        // Stemming: "fracture" finds "fractures".
        assert_eq!(index.keyword(&scope, "fracture", 10).unwrap().len(), 2);

        let hits = index.semantic(&scope, &unit(3, 8), 2).unwrap();
        assert_eq!(hits[0].file_id, "f2");
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        assert_eq!(hits.len(), 2);

        // A second generation of f1: only the active one is visible.
        index
            .add(&[chunk("vs_a", "f1", 2, 0, "Rewritten text about calcium", 5)])
            .unwrap();
        let gen2 = |f: &str, g: u64| f != "f1" || g == 2;
        let scope2 = Scope {
            store_ids: &stores,
            active: &gen2,
        };
        assert!(index.keyword(&scope2, "vitamin", 10).unwrap().is_empty());
        assert_eq!(index.keyword(&scope2, "calcium", 10).unwrap().len(), 1);
        assert!(
            index
                .semantic(&scope2, &unit(1, 8), 10)
                .unwrap()
                .iter()
                .all(|h| h.file_id != "f1" || h.generation == 2)
        );
        index.delete_generation("f1", 1).unwrap();
        assert_eq!(index.count("f1", 1).unwrap(), 0);
        assert_eq!(index.count("f1", 2).unwrap(), 1);
        assert_eq!(index.semantic(&scope, &unit(1, 8), 10).unwrap().len(), 2);

        index.delete_file("f2").unwrap();
        assert_eq!(index.count_file("f2").unwrap(), 0);
        assert!(
            index
                .semantic(&scope, &unit(3, 8), 10)
                .unwrap()
                .iter()
                .all(|h| h.file_id != "f2")
        );
        assert!(index.keyword(&scope, "yeast", 10).unwrap().is_empty());

        // Reopening keeps what was committed.
        drop(index);
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        assert_eq!(index.count_file("f1").unwrap(), 1);
        assert_eq!(
            index.semantic(&scope, &unit(5, 8), 1).unwrap()[0].text,
            "Rewritten text about calcium"
        );
        index.delete_store("vs_b").unwrap();
        assert_eq!(index.count_file("f3").unwrap(), 0);
        assert!(matches!(
            index.semantic(&scope, &[1.0], 1),
            Err(IndexError::Dimensions { .. })
        ));
    }

    /// A store past the threshold is searched through a graph that agrees with the exact
    /// scan, never answers a superseded generation or a deleted file, and is saved and
    /// reopened (with chunks added after the save read back from the documents).
    #[test]
    fn a_large_store_uses_a_graph_that_agrees_with_exact_search_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let dims = 8;
        let ann = AnnOptions {
            threshold: 300,
            ..AnnOptions::default()
        };
        let index = ChunkIndex::open_with(dir.path(), dims, ann).unwrap();
        let records: Vec<ChunkRecord> = (0..400)
            .map(|i| {
                let mut record = chunk(
                    "vs_big",
                    &format!("f{}", i / 10),
                    1,
                    i % 10,
                    "text",
                    i as usize,
                );
                // Spread the vectors: `unit` repeats with period 17.
                record.vector[(i % 8) as usize] += (i as f32 * 0.7).sin();
                let n = record.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                record.vector.iter_mut().for_each(|x| *x /= n);
                record
            })
            .collect();
        index.add(&records[..200]).unwrap();
        let stores = vec!["vs_big".to_string()];
        let all = |_: &str, _: u64| true;
        let scope = Scope {
            store_ids: &stores,
            active: &all,
        };
        index.warm("vs_big").unwrap();
        assert_eq!(index.uses_graph("vs_big").unwrap(), Some(false));
        index.add(&records[200..]).unwrap();
        assert_eq!(
            index.uses_graph("vs_big").unwrap(),
            Some(true),
            "crossed the threshold"
        );
        assert!(dir.path().join("vectors/vs_big.usearch").exists());

        let exact_dir = tempfile::tempdir().unwrap();
        let exact = ChunkIndex::open_with(
            exact_dir.path(),
            dims,
            AnnOptions {
                threshold: usize::MAX,
                ..AnnOptions::default()
            },
        )
        .unwrap();
        exact.add(&records).unwrap();
        let keys = |hits: Vec<Hit>| -> Vec<(String, u32)> {
            hits.into_iter()
                .map(|h| (h.file_id, h.chunk_index))
                .collect()
        };
        let mut same = 0;
        for record in records.iter().step_by(10) {
            let truth = keys(exact.semantic(&scope, &record.vector, 10).unwrap());
            let found = keys(index.semantic(&scope, &record.vector, 10).unwrap());
            same += found.iter().filter(|k| truth.contains(k)).count();
        }
        assert!(same >= 380, "recall@10 of the graph: {same}/400");

        // A second generation of f3 and the deletion of f4: neither old f3 nor f4 appears.
        let mut replaced = records[30].clone();
        replaced.generation = 2;
        index.add(&[replaced.clone()]).unwrap();
        index.delete_file("f4").unwrap();
        let active = |file: &str, generation: u64| file != "f3" || generation == 2;
        let scope2 = Scope {
            store_ids: &stores,
            active: &active,
        };
        let hits = index.semantic(&scope2, &records[30].vector, 10).unwrap();
        assert_eq!((hits[0].file_id.as_str(), hits[0].generation), ("f3", 2));
        assert!(
            hits.iter()
                .all(|h| h.file_id != "f4" && (h.file_id != "f3" || h.generation == 2))
        );

        // Saved at persist; a chunk added after the save comes back from the documents.
        index.persist().unwrap();
        let mut late = records[0].clone();
        late.file_id = "f-late".into();
        index.add(&[late.clone()]).unwrap();
        drop(index);
        // Reopened with other search lists: the loaded graph keeps hybrid's as its own (the
        // semantic one is asked for per search, from the options).
        let reopened = AnnOptions {
            expansion_search: 300,
            fusion_expansion_search: 77,
            ..ann
        };
        let index = ChunkIndex::open_with(dir.path(), dims, reopened).unwrap();
        let hits = index.semantic(&scope, &late.vector, 2).unwrap();
        assert_eq!(index.uses_graph("vs_big").unwrap(), Some(true));
        {
            let shared = index.store_vectors("vs_big").unwrap();
            let store = shared.read().unwrap();
            let vectors::StoreVectors::Graph { graph, .. } = &*store else {
                panic!("a graph after the reopen");
            };
            assert_eq!(graph.expansion_search(), 77);
        }
        let files: Vec<&str> = hits.iter().map(|h| h.file_id.as_str()).collect();
        assert!(
            files.contains(&"f-late") && files.contains(&"f0"),
            "{files:?}"
        );
        assert!(
            index
                .semantic(&scope, &records[45].vector, 400)
                .unwrap()
                .iter()
                .all(|h| h.file_id != "f4")
        );
        index.delete_store("vs_big").unwrap();
        assert!(!dir.path().join("vectors/vs_big.usearch").exists());
        assert!(index.semantic(&scope, &late.vector, 5).unwrap().is_empty());
    }

    /// An index written with an older schema (here: without keys) is rewritten on open, and
    /// everything in it stays searchable.
    #[test]
    fn an_index_in_an_older_format_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut builder = Schema::builder();
            let store = builder.add_text_field("store", STRING | STORED);
            let file = builder.add_text_field("file", STRING | STORED);
            let generation = builder.add_u64_field("generation", INDEXED | STORED | FAST);
            let chunk_index = builder.add_u64_field("chunk_index", STORED);
            let text = builder.add_text_field("text", tantivy::schema::TEXT | STORED);
            let vector = builder.add_bytes_field("vector", STORED);
            let old = Index::create_in_dir(dir.path(), builder.build()).unwrap();
            let mut writer: IndexWriter = old.writer(15_000_000).unwrap();
            for i in 0..3u64 {
                writer
                    .add_document(doc!(
                        store => "vs_a", file => format!("f{i}"), generation => 1u64,
                        chunk_index => 0u64, text => format!("old text number {i} about yeast"),
                        vector => vector_bytes(&unit(i as usize, 8)),
                    ))
                    .unwrap();
            }
            writer.commit().unwrap();
        }
        let index = ChunkIndex::open(dir.path(), 8).unwrap();
        let stores = vec!["vs_a".to_string()];
        let all = |_: &str, _: u64| true;
        let scope = Scope {
            store_ids: &stores,
            active: &all,
        };
        assert_eq!(index.keyword(&scope, "yeast", 10).unwrap().len(), 3);
        let hit = &index.semantic(&scope, &unit(2, 8), 1).unwrap()[0];
        assert_eq!((hit.file_id.as_str(), hit.generation), ("f2", 1));
        // New chunks get keys after the migrated ones.
        index
            .add(&[chunk("vs_a", "f9", 1, 0, "new yeast text", 9)])
            .unwrap();
        assert_eq!(index.keyword(&scope, "yeast", 10).unwrap().len(), 4);
        assert!(index.export().unwrap().iter().all(|c| c.vector.len() == 8));
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..384).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..384).map(|i| (i as f32).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
