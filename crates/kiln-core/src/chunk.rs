//! A chunk as the index holds it.

/// One chunk of a file's generation: its text and its vector.
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
