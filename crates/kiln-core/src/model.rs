//! Domain records as the API shows them (contract §2, §4).

use serde::Serialize;
use utoipa::ToSchema;

use crate::time::Timestamp;
use crate::types::{AccessMode, OwnerType, Role, SliceStatus, SliceType};

/// Default chunk size, in tokens of the embedding model (OpenAI's default).
pub const DEFAULT_MAX_CHUNK_TOKENS: u32 = 800;
/// Default chunk overlap, in tokens.
pub const DEFAULT_CHUNK_OVERLAP_TOKENS: u32 = 400;

/// An organization. Kiln keeps no billing: the fields the Aitronos client requires beside the
/// name say so (`is_active` always, limits `0` = none).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Organization {
    pub id: crate::ids::OrgId,
    pub name: String,
    /// Always `organization`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub is_active: bool,
    /// `0`: Kiln sets no API usage limit.
    pub api_usage_limit: f64,
    /// `0`: Kiln sets no total usage limit.
    pub total_usage_limit: f64,
    /// `0`: Kiln keeps no storage allowance (usage is reported, never billed).
    pub storage_free_bytes_allowance: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Organization {
    pub fn new(
        id: crate::ids::OrgId,
        name: String,
        created_at: Timestamp,
        updated_at: Timestamp,
    ) -> Self {
        Organization {
            id,
            name,
            kind: "organization",
            is_active: true,
            api_usage_limit: 0.0,
            total_usage_limit: 0.0,
            storage_free_bytes_allowance: 0,
            created_at,
            updated_at,
        }
    }
}

/// An API key as listed by the operator tool; the key value itself is never stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub organization_id: crate::ids::OrgId,
    pub role: Role,
    pub name: Option<String>,
    /// The first characters of the key value, to recognise it.
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// The caller behind a valid API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub organization_id: crate::ids::OrgId,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Slice {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub slice_type: SliceType,
    pub is_composite: bool,
    pub owner_type: OwnerType,
    pub owner_id: Option<String>,
    pub status: SliceStatus,
    pub member_slice_ids: Vec<String>,
    pub store_count: i64,
    pub organization_id: crate::ids::OrgId,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub archived_at: Option<Timestamp>,
    pub archived_by: Option<String>,
}

/// Counts of a store's files by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileCounts {
    pub pending: i64,
    pub processing: i64,
    pub completed: i64,
    pub failed: i64,
    pub total: i64,
}

/// How a store's files are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Chunking {
    pub max_chunk_tokens: u32,
    pub chunk_overlap_tokens: u32,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            max_chunk_tokens: DEFAULT_MAX_CHUNK_TOKENS,
            chunk_overlap_tokens: DEFAULT_CHUNK_OVERLAP_TOKENS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Store {
    pub id: crate::ids::StoreId,
    pub name: String,
    pub description: Option<String>,
    pub slice_id: String,
    pub organization_id: crate::ids::OrgId,
    pub created_by: Option<String>,
    pub is_active: bool,
    pub access_mode: AccessMode,
    /// Number of files in the store (not deleted).
    pub file_count: i64,
    /// Bytes of the original files.
    pub data_size: i64,
    pub file_counts: FileCounts,
    pub chunking: Chunking,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One page of a list (contract §1).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub skip: i64,
    pub limit: i64,
    pub has_more: bool,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, window: PageRequest) -> Self {
        let has_more = window.skip + (items.len() as i64) < total;
        Page {
            items,
            total,
            skip: window.skip,
            limit: window.limit,
            has_more,
        }
    }
}

/// A validated `skip`/`limit` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub skip: i64,
    pub limit: i64,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: i64 = 20;
    pub const MAX_LIMIT: i64 = 100;
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            skip: 0,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_more_follows_the_contract() {
        let w = PageRequest { skip: 2, limit: 2 };
        assert!(Page::new(vec![1, 2], 5, w).has_more);
        assert!(!Page::new(vec![1, 2], 4, w).has_more);
        assert!(!Page::<i32>::new(vec![], 1, PageRequest { skip: 5, limit: 2 }).has_more);
    }
}

/// A file in a store (contract §5), as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FileRecord {
    pub id: crate::ids::FileId,
    pub store_id: crate::ids::StoreId,
    pub organization_id: crate::ids::OrgId,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub file_size: i64,
    pub sha256: Option<String>,
    pub status: crate::types::FileStatus,
    pub progress_percent: i64,
    pub current_step: crate::types::Step,
    pub error_code: Option<crate::types::FileErrorCode>,
    pub error_message: Option<String>,
    pub retryable: Option<bool>,
    pub attempts: i64,
    pub chunk_count: i64,
    pub embedding_model: Option<String>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    #[serde(skip)]
    pub queued_at: Option<Timestamp>,
    #[serde(skip)]
    pub generation: i64,
    #[serde(skip)]
    pub active_generation: i64,
    #[serde(skip)]
    pub extracted_text_bytes: i64,
    #[serde(skip)]
    pub vector_bytes: i64,
    #[serde(skip)]
    pub index_bytes: i64,
    /// The organization file this row processes (a knowledge-family upload: the same ID).
    #[serde(skip)]
    pub org_file_id: crate::ids::FileId,
    /// Where that file's original is in blob storage.
    #[serde(skip)]
    pub original_blob: String,
}

/// A file of an organization (the vector-stores family's `FileResponse`): the original,
/// which any number of stores may process. Knowledge-family uploads create one too.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgFile {
    pub id: crate::ids::FileId,
    pub organization_id: crate::ids::OrgId,
    pub file_name: String,
    pub relative_path: Option<String>,
    pub mime_type: String,
    pub file_size: i64,
    pub sha256: Option<String>,
    pub blob_path: String,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
}

/// A file's processing status (contract §5): the Aitronos fields first, then Kiln's.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FileStatusView {
    pub status: crate::types::FileStatus,
    pub progress_percent: i64,
    pub current_step: crate::types::Step,
    pub error_message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub error_code: Option<crate::types::FileErrorCode>,
    pub retryable: Option<bool>,
    pub attempt: i64,
    pub chunk_count: i64,
    pub embedding_model: Option<String>,
    pub queued_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
}

impl FileStatusView {
    pub fn of(file: &FileRecord, lease_expires_at: Option<Timestamp>) -> Self {
        FileStatusView {
            status: file.status,
            progress_percent: file.progress_percent,
            current_step: file.current_step,
            error_message: file.error_message.clone(),
            started_at: file.started_at,
            completed_at: file.completed_at,
            error_code: file.error_code,
            retryable: file.retryable,
            attempt: file.attempts,
            chunk_count: file.chunk_count,
            embedding_model: file.embedding_model.clone(),
            queued_at: file.queued_at,
            lease_expires_at,
        }
    }
}

/// One processing log entry (contract §9).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogEntry {
    pub timestamp: Timestamp,
    pub level: crate::types::LogLevel,
    pub attempt: i64,
    pub step: Option<crate::types::Step>,
    pub event: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Storage figures (contract §10), exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct UsageFigures {
    pub file_count: i64,
    pub file_counts: FileCounts,
    pub original_bytes: i64,
    pub extracted_text_bytes: i64,
    pub chunk_count: i64,
    pub vector_bytes: i64,
    pub index_bytes: i64,
    pub total_bytes: i64,
}
