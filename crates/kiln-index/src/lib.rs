//! Kiln's embedded chunk index. Keyword search is BM25 over tantivy (English stemming);
//! vector search is an exact scan over unit vectors (dot product). Chunks carry
//! `(store, file, generation, chunk_index)`: the caller decides which generation of a file is
//! active (the catalog's flip) and the index filters by it, so replacing a file's chunks is
//! "write the new generation, flip, delete the old" with no window in which it is missing.
//!
//! Vectors are stored with the chunks and cached per store in memory on first use.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

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
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// One chunk to index.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub store_id: String,
    pub file_id: String,
    pub generation: u64,
    pub chunk_index: u32,
    pub text: String,
    pub page: Option<u32>,
    pub vector: Vec<f32>,
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub store_id: String,
    pub file_id: String,
    pub generation: u64,
    pub chunk_index: u32,
    pub text: String,
    pub page: Option<u32>,
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
    generation_key: Field,
    chunk_key: Field,
    generation: Field,
    chunk_index: Field,
    page: Field,
    text: Field,
    vector: Field,
}

/// One store's vectors, flat, with the chunk each row belongs to.
#[derive(Default, Clone)]
struct StoreVectors {
    keys: Vec<(Arc<str>, u64, u32)>,
    data: Vec<f32>,
}

pub struct ChunkIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    dimensions: usize,
    vectors: RwLock<HashMap<String, Arc<StoreVectors>>>,
}

const TEXT_TOKENIZER: &str = "en_stem";
const WRITER_HEAP: usize = 64 * 1024 * 1024;

fn generation_key(file_id: &str, generation: u64) -> String {
    format!("{file_id}/{generation}")
}

fn chunk_key(file_id: &str, generation: u64, chunk_index: u32) -> String {
    format!("{file_id}/{generation}/{chunk_index}")
}

impl ChunkIndex {
    /// Opens (creating if needed) the index in `dir` for vectors of `dimensions`.
    pub fn open(dir: &Path, dimensions: usize) -> Result<ChunkIndex> {
        std::fs::create_dir_all(dir)?;
        let mut builder = Schema::builder();
        let text_options = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            store: builder.add_text_field("store", STRING | STORED),
            file: builder.add_text_field("file", STRING | STORED),
            generation_key: builder.add_text_field("generation_key", STRING),
            chunk_key: builder.add_text_field("chunk_key", STRING),
            generation: builder.add_u64_field("generation", INDEXED | STORED | FAST),
            chunk_index: builder.add_u64_field("chunk_index", STORED),
            page: builder.add_u64_field("page", STORED),
            text: builder.add_text_field("text", text_options),
            vector: builder.add_bytes_field("vector", STORED),
        };
        let schema = builder.build();
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| IndexError::Io(std::io::Error::other(e.to_string())))?;
        let index = Index::open_or_create(directory, schema)?;
        let writer = index.writer(WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(ChunkIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            dimensions,
            vectors: RwLock::new(HashMap::new()),
        })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Adds chunks and commits: when this returns, they are durable and searchable (subject
    /// to the caller's active-generation filter).
    pub fn add(&self, chunks: &[ChunkRecord]) -> Result<()> {
        for chunk in chunks {
            if chunk.vector.len() != self.dimensions {
                return Err(IndexError::Dimensions {
                    expected: self.dimensions,
                    got: chunk.vector.len(),
                });
            }
        }
        let f = &self.fields;
        {
            let mut writer = self.writer.lock().map_err(|_| IndexError::Poisoned)?;
            for chunk in chunks {
                let mut document = doc!(
                    f.store => chunk.store_id.as_str(),
                    f.file => chunk.file_id.as_str(),
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
            writer.commit()?;
        }
        self.reader.reload()?;
        // Keep loaded vector caches in step.
        let mut cache = self.vectors.write().map_err(|_| IndexError::Poisoned)?;
        for chunk in chunks {
            if let Some(entry) = cache.get_mut(&chunk.store_id) {
                let store = Arc::make_mut(entry);
                store.keys.push((
                    Arc::from(chunk.file_id.as_str()),
                    chunk.generation,
                    chunk.chunk_index,
                ));
                store.data.extend_from_slice(&chunk.vector);
            }
        }
        Ok(())
    }

    /// Deletes one generation of a file.
    pub fn delete_generation(&self, file_id: &str, generation: u64) -> Result<()> {
        let term = Term::from_field_text(
            self.fields.generation_key,
            &generation_key(file_id, generation),
        );
        self.delete(term, |key| key.0.as_ref() == file_id && key.1 == generation)
    }

    /// Deletes every generation of a file.
    pub fn delete_file(&self, file_id: &str) -> Result<()> {
        let term = Term::from_field_text(self.fields.file, file_id);
        self.delete(term, |key| key.0.as_ref() == file_id)
    }

    /// Deletes everything of a store.
    pub fn delete_store(&self, store_id: &str) -> Result<()> {
        let term = Term::from_field_text(self.fields.store, store_id);
        self.delete(term, |_| true)?;
        self.vectors
            .write()
            .map_err(|_| IndexError::Poisoned)?
            .remove(store_id);
        Ok(())
    }

    fn delete(&self, term: Term, matches: impl Fn(&(Arc<str>, u64, u32)) -> bool) -> Result<()> {
        {
            let mut writer = self.writer.lock().map_err(|_| IndexError::Poisoned)?;
            writer.delete_term(term);
            writer.commit()?;
        }
        self.reader.reload()?;
        let mut cache = self.vectors.write().map_err(|_| IndexError::Poisoned)?;
        for entry in cache.values_mut() {
            if !entry.keys.iter().any(&matches) {
                continue;
            }
            let dims = self.dimensions;
            let mut kept = StoreVectors::default();
            for (i, key) in entry.keys.iter().enumerate() {
                if !matches(key) {
                    kept.keys.push(key.clone());
                    kept.data
                        .extend_from_slice(&entry.data[i * dims..(i + 1) * dims]);
                }
            }
            *entry = Arc::new(kept);
        }
        Ok(())
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

    /// BM25 top-`k` among active chunks of the scope's stores.
    pub fn keyword(&self, scope: &Scope<'_>, query: &str, k: usize) -> Result<Vec<Hit>> {
        if k == 0 || scope.store_ids.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        let (text_query, _errors) = parser.parse_query_lenient(&sanitize(query));
        let stores = TermSetQuery::new(
            scope
                .store_ids
                .iter()
                .map(|s| Term::from_field_text(self.fields.store, s)),
        );
        let combined = BooleanQuery::new(vec![
            (Occur::Must, text_query),
            (Occur::Must, Box::new(stores) as Box<dyn Query>),
        ]);
        // Stale generations are few (deleted right after a flip); over-fetch to cover them.
        let mut limit = k * 2 + 10;
        loop {
            let top = searcher.search(&combined, &TopDocs::with_limit(limit).order_by_score())?;
            let exhausted = top.len() < limit;
            let mut hits = Vec::with_capacity(k);
            for (score, address) in top {
                let document: TantivyDocument = searcher.doc(address)?;
                let hit = self.hit(&document, score);
                if (scope.active)(&hit.file_id, hit.generation) {
                    hits.push(hit);
                    if hits.len() == k {
                        break;
                    }
                }
            }
            if hits.len() == k || exhausted || limit > 100_000 {
                return Ok(hits);
            }
            limit *= 4;
        }
    }

    /// Exact nearest neighbours by dot product (vectors are unit length) among active chunks
    /// of the scope's stores.
    pub fn semantic(&self, scope: &Scope<'_>, vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        if vector.len() != self.dimensions {
            return Err(IndexError::Dimensions {
                expected: self.dimensions,
                got: vector.len(),
            });
        }
        let dims = self.dimensions;
        let mut best: Vec<(f32, Arc<StoreVectors>, usize)> = Vec::new();
        for store_id in scope.store_ids {
            let vectors = self.store_vectors(store_id)?;
            for (row, key) in vectors.keys.iter().enumerate() {
                if !(scope.active)(&key.0, key.1) {
                    continue;
                }
                let score = dot(vector, &vectors.data[row * dims..(row + 1) * dims]);
                best.push((score, vectors.clone(), row));
            }
        }
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        best.truncate(k);
        let searcher = self.reader.searcher();
        let mut hits = Vec::with_capacity(best.len());
        for (score, vectors, row) in best {
            let (file_id, generation, chunk_index) = &vectors.keys[row];
            let query = TermQuery::new(
                Term::from_field_text(
                    self.fields.chunk_key,
                    &chunk_key(file_id, *generation, *chunk_index),
                ),
                IndexRecordOption::Basic,
            );
            if let Some((_, address)) = searcher
                .search(&query, &TopDocs::with_limit(1).order_by_score())?
                .into_iter()
                .next()
            {
                let document: TantivyDocument = searcher.doc(address)?;
                hits.push(self.hit(&document, score));
            }
        }
        Ok(hits)
    }

    fn store_vectors(&self, store_id: &str) -> Result<Arc<StoreVectors>> {
        if let Some(v) = self
            .vectors
            .read()
            .map_err(|_| IndexError::Poisoned)?
            .get(store_id)
        {
            return Ok(v.clone());
        }
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.store, store_id),
            IndexRecordOption::Basic,
        );
        let addresses = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let mut loaded = StoreVectors::default();
        for address in addresses {
            let document: TantivyDocument = searcher.doc(address)?;
            let f = &self.fields;
            let file = document
                .get_first(f.file)
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let generation = document
                .get_first(f.generation)
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let chunk = document
                .get_first(f.chunk_index)
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as u32;
            let bytes = document
                .get_first(f.vector)
                .and_then(|v| v.as_bytes())
                .unwrap_or(&[]);
            let vector = bytes_vector(bytes);
            if vector.len() != self.dimensions {
                continue;
            }
            loaded.keys.push((Arc::from(file), generation, chunk));
            loaded.data.extend_from_slice(&vector);
        }
        let loaded = Arc::new(loaded);
        self.vectors
            .write()
            .map_err(|_| IndexError::Poisoned)?
            .insert(store_id.to_string(), loaded.clone());
        Ok(loaded)
    }

    fn hit(&self, document: &TantivyDocument, score: f32) -> Hit {
        let f = &self.fields;
        let text = |field| {
            document
                .get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Hit {
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

/// Keeps words; drops query syntax a user did not mean (quotes, colons, brackets, operators).
fn sanitize(query: &str) -> String {
    query
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .filter(|w| !matches!(*w, "AND" | "OR" | "NOT" | "IN"))
        .collect::<Vec<_>>()
        .join(" ")
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

    fn chunk(
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

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..384).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..384).map(|i| (i as f32).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
