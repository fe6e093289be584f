//! Knowledge slices.

use kiln_core::model::{Page, PageRequest, Slice};
use kiln_core::types::{OwnerType, SliceStatus, SliceType};
use kiln_core::{IdKind, OrgId, Timestamp};
use sqlx::AssertSqlSafe;

use crate::rows::{self, SLICE_SELECT};
use crate::{Catalog, CatalogError, Resource, Result};

#[derive(Debug, Clone)]
pub struct NewSlice {
    pub name: String,
    pub description: Option<String>,
    pub slice_type: SliceType,
    pub owner_type: OwnerType,
    pub owner_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SlicePatch {
    pub name: Option<String>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
}

/// Which slices a list shows: archived ones only when asked for by status.
#[derive(Debug, Clone, Copy)]
pub struct SliceFilter {
    pub status: SliceStatus,
    pub slice_type: Option<SliceType>,
}

fn slice_sql(tail: &'static str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("{SLICE_SELECT} {tail}"))
}

impl Catalog {
    /// The organization's default slice, made on first use: where stores created without a
    /// slice go (the vector-stores family has no slices). Its ID follows from the
    /// organization's, so concurrent first uses make one.
    pub async fn default_slice(&self, organization_id: &OrgId, created_by: &str) -> Result<String> {
        let suffix = organization_id
            .strip_prefix(IdKind::Organization.prefix())
            .unwrap_or(organization_id);
        let id = format!("{}{suffix}", IdKind::Slice.prefix());
        let now = Timestamp::created().millis();
        sqlx::query(
            "INSERT INTO slices (id, organization_id, name, description, slice_type, owner_type, \
             owner_id, status, created_by, created_at, updated_at) \
             VALUES ($1, $2, 'Default', 'Stores created without a slice', 'standard', \
             'organization', NULL, 'active', $3, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(organization_id)
        .bind(created_by)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(id)
    }

    pub async fn create_slice(
        &self,
        organization_id: &OrgId,
        new: NewSlice,
        created_by: &str,
    ) -> Result<Slice> {
        let id = IdKind::Slice.generate();
        let now = Timestamp::created().millis();
        sqlx::query(
            "INSERT INTO slices (id, organization_id, name, description, slice_type, owner_type, \
             owner_id, status, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(organization_id)
        .bind(new.name)
        .bind(new.description)
        .bind(new.slice_type.as_str())
        .bind(new.owner_type.as_str())
        .bind(new.owner_id)
        .bind(SliceStatus::Active.as_str())
        .bind(created_by)
        .bind(now)
        .bind(now)
        .execute(&self.write)
        .await?;
        self.fetch_slice(&self.write, organization_id, &id).await
    }

    pub async fn list_slices(
        &self,
        organization_id: &OrgId,
        filter: SliceFilter,
        window: PageRequest,
    ) -> Result<Page<Slice>> {
        let kind = filter.slice_type.map(SliceType::as_str);
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM slices sl WHERE sl.organization_id = $1 AND sl.status = $2 \
             AND (CAST($3 AS TEXT) IS NULL OR sl.slice_type = $3)",
        )
        .bind(organization_id)
        .bind(filter.status.as_str())
        .bind(kind)
        .fetch_one(&self.read)
        .await?;
        let rows = sqlx::query(slice_sql(
            "WHERE sl.organization_id = $1 AND sl.status = $2 \
             AND (CAST($3 AS TEXT) IS NULL OR sl.slice_type = $3) \
             ORDER BY sl.created_at DESC, sl.id DESC LIMIT $4 OFFSET $5",
        ))
        .bind(organization_id)
        .bind(filter.status.as_str())
        .bind(kind)
        .bind(window.limit)
        .bind(window.skip)
        .fetch_all(&self.read)
        .await?;
        let items = rows.iter().map(rows::slice).collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, total, window))
    }

    pub async fn get_slice(&self, organization_id: &OrgId, id: &str) -> Result<Slice> {
        self.fetch_slice(&self.read, organization_id, id).await
    }

    pub(crate) async fn fetch_slice<'e, E>(
        &self,
        executor: E,
        organization_id: &OrgId,
        id: &str,
    ) -> Result<Slice>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let row = sqlx::query(slice_sql("WHERE sl.organization_id = $1 AND sl.id = $2"))
            .bind(organization_id)
            .bind(id)
            .fetch_optional(executor)
            .await?
            .ok_or(CatalogError::NotFound(Resource::Slice))?;
        rows::slice(&row)
    }

    /// Renames or re-describes a slice. Archived slices are read-only.
    pub async fn update_slice(
        &self,
        organization_id: &OrgId,
        id: &str,
        patch: SlicePatch,
    ) -> Result<Slice> {
        let mut tx = self.write_tx().await?;
        let current = self.fetch_slice(&mut *tx, organization_id, id).await?;
        if current.status == SliceStatus::Archived {
            return Err(CatalogError::SliceArchived);
        }
        let name = patch.name.unwrap_or(current.name);
        let description = patch.description.unwrap_or(current.description);
        sqlx::query(
            "UPDATE slices SET name = $1, description = $2, updated_at = $3 \
             WHERE organization_id = $4 AND id = $5",
        )
        .bind(name)
        .bind(description)
        .bind(Timestamp::now().millis())
        .bind(organization_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let updated = self.fetch_slice(&mut *tx, organization_id, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Archives a slice; archiving an archived slice changes nothing.
    pub async fn archive_slice(
        &self,
        organization_id: &OrgId,
        id: &str,
        by: &str,
    ) -> Result<Slice> {
        let now = Timestamp::now().millis();
        sqlx::query(
            "UPDATE slices SET status = $1, archived_at = $2, archived_by = $3, updated_at = $2 \
             WHERE organization_id = $4 AND id = $5 AND status <> $1",
        )
        .bind(SliceStatus::Archived.as_str())
        .bind(now)
        .bind(by)
        .bind(organization_id)
        .bind(id)
        .execute(&self.write)
        .await?;
        self.fetch_slice(&self.write, organization_id, id).await
    }
}
