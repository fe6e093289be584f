//! Decoding catalog rows into domain records.

use kiln_core::Timestamp;
use kiln_core::model::{Chunking, FileCounts, Organization, Slice, Store};
use kiln_core::types::{AccessMode, OwnerType, SliceStatus, SliceType};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Result;

/// A result row read by column name: sqlx's rows, and the rows of the reads SQLite answers on
/// the caller's thread ([`crate::inline`]). Records that both kinds of read return decode
/// through this, so the two paths cannot disagree on a field.
pub(crate) trait Columns {
    fn text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<Option<i64>>;
    /// The column as `T` (a text, an integer, a typed ID, or an `Option` of one).
    fn col<T: FromColumn>(&self, col: &str) -> Result<T>
    where
        Self: Sized,
    {
        T::from_column(self, col)
    }
}

impl Columns for AnyRow {
    fn text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
}

/// A value [`Columns::col`] can decode.
pub(crate) trait FromColumn: Sized {
    fn from_column(row: &impl Columns, col: &str) -> Result<Self>;
}

fn null(col: &str) -> crate::CatalogError {
    sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: "unexpected NULL".into(),
    }
    .into()
}

impl FromColumn for Option<String> {
    fn from_column(row: &impl Columns, col: &str) -> Result<Self> {
        row.text(col)
    }
}

impl FromColumn for String {
    fn from_column(row: &impl Columns, col: &str) -> Result<Self> {
        row.text(col)?.ok_or_else(|| null(col))
    }
}

impl FromColumn for Option<i64> {
    fn from_column(row: &impl Columns, col: &str) -> Result<Self> {
        row.int(col)
    }
}

impl FromColumn for i64 {
    fn from_column(row: &impl Columns, col: &str) -> Result<Self> {
        row.int(col)?.ok_or_else(|| null(col))
    }
}

macro_rules! id_column {
    ($($id:ty),*) => {$(
        impl FromColumn for $id {
            fn from_column(row: &impl Columns, col: &str) -> Result<Self> {
                String::from_column(row, col).map(<$id>::from)
            }
        }
    )*};
}
id_column!(kiln_core::FileId, kiln_core::StoreId, kiln_core::OrgId);

pub(crate) fn ts(row: &impl Columns, col: &str) -> Result<Timestamp> {
    Ok(Timestamp(row.col(col)?))
}

pub(crate) fn opt_ts(row: &impl Columns, col: &str) -> Result<Option<Timestamp>> {
    Ok(row.col::<Option<i64>>(col)?.map(Timestamp))
}

/// Decodes a column holding one of a string enum's values.
pub(crate) fn enum_col<T>(
    row: &impl Columns,
    col: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T> {
    let text: String = row.col(col)?;
    parse(&text).ok_or_else(|| {
        sqlx::Error::ColumnDecode {
            index: col.to_string(),
            source: format!("unexpected value {text:?}").into(),
        }
        .into()
    })
}

pub(crate) const ORG_COLUMNS: &str = "id, name, created_at, updated_at";

pub(crate) fn organization(row: &AnyRow) -> Result<Organization> {
    Ok(Organization::new(
        row.try_get("id")?,
        row.try_get("name")?,
        ts(row, "created_at")?,
        ts(row, "updated_at")?,
    ))
}

/// Selects a slice with its live store count; append `WHERE ...` on alias `sl`.
pub(crate) const SLICE_SELECT: &str = "SELECT sl.id, sl.organization_id, sl.name, sl.description, \
     sl.slice_type, sl.owner_type, sl.owner_id, sl.status, sl.created_by, sl.created_at, \
     sl.updated_at, sl.archived_at, sl.archived_by, \
     (SELECT COUNT(*) FROM stores st WHERE st.slice_id = sl.id) AS store_count \
     FROM slices sl";

pub(crate) fn slice(row: &AnyRow) -> Result<Slice> {
    Ok(Slice {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        slice_type: enum_col(row, "slice_type", SliceType::parse)?,
        is_composite: false,
        owner_type: enum_col(row, "owner_type", OwnerType::parse)?,
        owner_id: row.try_get("owner_id")?,
        status: enum_col(row, "status", SliceStatus::parse)?,
        member_slice_ids: Vec::new(),
        store_count: row.try_get("store_count")?,
        organization_id: row.try_get("organization_id")?,
        created_by: row.try_get("created_by")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        archived_at: opt_ts(row, "archived_at")?,
        archived_by: row.try_get("archived_by")?,
    })
}

/// Selects a store with its file figures, computed from the files table; append
/// `WHERE ... GROUP BY s.id` on alias `s`. Every column it reads of `files` is in the index
/// `files_store_figures`, so the count never visits a file's row: `COUNT(f.status)` counts
/// the joined files (a file's status is never NULL) where `COUNT(f.id)` would read each row.
pub(crate) const STORE_SELECT: &str = "SELECT s.id, s.organization_id, s.slice_id, s.name, \
     s.description, s.access_mode, s.max_chunk_tokens, s.chunk_overlap_tokens, s.created_by, \
     s.created_at, s.updated_at, \
     CAST(COALESCE(SUM(CASE WHEN f.status = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS n_pending, \
     CAST(COALESCE(SUM(CASE WHEN f.status = 'processing' THEN 1 ELSE 0 END), 0) AS BIGINT) AS n_processing, \
     CAST(COALESCE(SUM(CASE WHEN f.status = 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS n_completed, \
     CAST(COALESCE(SUM(CASE WHEN f.status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS n_failed, \
     CAST(COUNT(f.status) AS BIGINT) AS n_total, \
     CAST(COALESCE(SUM(f.file_size), 0) AS BIGINT) AS data_size \
     FROM stores s LEFT JOIN files f ON f.store_id = s.id AND f.deleted_at IS NULL";

pub(crate) fn store(row: &AnyRow) -> Result<Store> {
    let file_counts = FileCounts {
        pending: row.try_get("n_pending")?,
        processing: row.try_get("n_processing")?,
        completed: row.try_get("n_completed")?,
        failed: row.try_get("n_failed")?,
        total: row.try_get("n_total")?,
    };
    Ok(Store {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        slice_id: row.try_get("slice_id")?,
        organization_id: row.try_get("organization_id")?,
        created_by: row.try_get("created_by")?,
        is_active: true,
        access_mode: enum_col(row, "access_mode", AccessMode::parse)?,
        file_count: file_counts.total,
        data_size: row.try_get("data_size")?,
        file_counts,
        chunking: Chunking {
            max_chunk_tokens: row.try_get::<i64, _>("max_chunk_tokens")? as u32,
            chunk_overlap_tokens: row.try_get::<i64, _>("chunk_overlap_tokens")? as u32,
        },
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

/// A `LIKE` pattern (escape character: backslash) matching `text` anywhere, case-insensitively
/// when compared with `LOWER(column)`; its own `%`, `_` and backslashes taken literally.
pub(crate) fn contains_pattern(text: &str) -> String {
    format!("%{}%", escape_like(&text.to_lowercase()))
}

/// `text` with `LIKE`'s special characters escaped by a backslash.
pub(crate) fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
