//! Webhook endpoints and their delivery state. Each endpoint follows its organization's
//! events in sequence order from a cursor; a node delivers for it while it holds the
//! endpoint's lease (so deliveries to one endpoint are in order and never blocked behind
//! processing). Every attempt is a row of the delivery log.

use std::time::Duration;

use kiln_core::{IdKind, OrgId, Timestamp};
use sqlx::{AnyConnection, Row};

use crate::{Catalog, CatalogError, Resource, Result};

/// A registered endpoint (its secret is read only by the deliverer).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub organization_id: OrgId,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub created_at: Timestamp,
    /// The last event handled (delivered, skipped or abandoned).
    pub cursor_seq: i64,
    /// Failed tries of the event after the cursor.
    pub attempt: i64,
    pub next_attempt_at: Timestamp,
}

/// An endpoint a deliverer holds, with what it needs to sign.
#[derive(Debug, Clone)]
pub struct ClaimedWebhook {
    pub hook: Webhook,
    pub secret: String,
    /// When the event after the cursor first failed, if it has.
    pub first_failed_at: Option<Timestamp>,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Tried and failed; tried again at `next_attempt`.
    Failed,
    /// Failed for longer than deliveries are retried: given up, the cursor moves on.
    Abandoned,
}

impl DeliveryOutcome {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Abandoned => "abandoned",
        }
    }
}

/// One attempt, for the delivery log.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_seq: i64,
    pub event_type: String,
    pub attempt: i64,
    pub outcome: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub created_at: Timestamp,
}

/// An attempt to record.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub event_seq: i64,
    pub event_type: &'a str,
    pub outcome: DeliveryOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
    /// For `Failed`: when to try again.
    pub retry_in: Duration,
}

const HOOK_COLUMNS: &str =
    "id, organization_id, url, event_types, created_at, cursor_seq, attempt, next_attempt_at";

fn webhook(row: &sqlx::any::AnyRow) -> Result<Webhook> {
    let types: String = row.try_get("event_types")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        url: row.try_get("url")?,
        event_types: types
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        created_at: Timestamp(row.try_get("created_at")?),
        cursor_seq: row.try_get("cursor_seq")?,
        attempt: row.try_get("attempt")?,
        next_attempt_at: Timestamp(row.try_get("next_attempt_at")?),
    })
}

async fn last_seq(conn: &mut AnyConnection, organization_id: &OrgId) -> Result<i64> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM event_counters WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(last.unwrap_or(0))
}

impl Catalog {
    /// Registers an endpoint for events from now on. Returns it and its signing secret.
    pub async fn create_webhook(
        &self,
        organization_id: &OrgId,
        url: &str,
        event_types: &[String],
        by: &str,
    ) -> Result<(Webhook, String)> {
        let id = IdKind::Webhook.generate();
        let secret = format!("whsec_{}", kiln_core::ids::generate_secret());
        let now = Timestamp::created().millis();
        let mut conn = self.write.acquire().await?;
        let cursor = last_seq(&mut conn, organization_id).await?;
        sqlx::query(
            "INSERT INTO webhooks (id, organization_id, url, event_types, secret, created_by, \
             created_at, cursor_seq, attempt, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $7)",
        )
        .bind(&id)
        .bind(organization_id)
        .bind(url)
        .bind(event_types.join(","))
        .bind(&secret)
        .bind(by)
        .bind(now)
        .bind(cursor)
        .execute(&mut *conn)
        .await?;
        drop(conn);
        Ok((self.get_webhook(organization_id, &id).await?, secret))
    }

    pub async fn get_webhook(&self, organization_id: &OrgId, id: &str) -> Result<Webhook> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks \
             WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL"
        )))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref()
            .map(webhook)
            .transpose()?
            .ok_or(CatalogError::NotFound(Resource::Webhook))
    }

    pub async fn list_webhooks(&self, organization_id: &OrgId) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks \
             WHERE organization_id = $1 AND deleted_at IS NULL ORDER BY created_at"
        )))
        .bind(organization_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(webhook).collect()
    }

    /// Removes an endpoint: nothing more is delivered to it.
    pub async fn delete_webhook(&self, organization_id: &OrgId, id: &str) -> Result<()> {
        let n = sqlx::query(
            "UPDATE webhooks SET deleted_at = $1 \
             WHERE organization_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(Timestamp::now().millis())
        .bind(organization_id)
        .bind(id)
        .execute(&self.write)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(CatalogError::NotFound(Resource::Webhook));
        }
        Ok(())
    }

    /// An endpoint's delivery log, newest first.
    pub async fn webhook_deliveries(
        &self,
        organization_id: &OrgId,
        id: &str,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        self.get_webhook(organization_id, id).await?;
        let rows = sqlx::query(
            "SELECT id, webhook_id, event_seq, event_type, attempt, outcome, status_code, error, \
             duration_ms, created_at FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY created_at DESC, event_seq DESC, attempt DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    webhook_id: row.try_get("webhook_id")?,
                    event_seq: row.try_get("event_seq")?,
                    event_type: row.try_get("event_type")?,
                    attempt: row.try_get("attempt")?,
                    outcome: row.try_get("outcome")?,
                    status_code: row.try_get("status_code")?,
                    error: row.try_get("error")?,
                    duration_ms: row.try_get("duration_ms")?,
                    created_at: Timestamp(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// Takes the lease of an endpoint that has events to deliver and is due, if any. Safe
    /// from every node at once: the conditional update gives each endpoint to one holder.
    pub async fn claim_webhook(
        &self,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedWebhook>> {
        let now = Timestamp::now().millis();
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT w.id FROM webhooks w JOIN event_counters c \
               ON c.organization_id = w.organization_id \
             WHERE w.deleted_at IS NULL AND c.last_seq > w.cursor_seq \
               AND w.next_attempt_at <= $1 \
               AND (w.lease_expires_at IS NULL OR w.lease_expires_at < $1) \
             ORDER BY w.next_attempt_at LIMIT 8",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        for id in due {
            let n = sqlx::query(
                "UPDATE webhooks SET lease_owner = $1, lease_expires_at = $2 \
                 WHERE id = $3 AND deleted_at IS NULL \
                   AND (lease_expires_at IS NULL OR lease_expires_at < $4)",
            )
            .bind(worker)
            .bind(now + lease.as_millis() as i64)
            .bind(&id)
            .bind(now)
            .execute(&self.write)
            .await?
            .rows_affected();
            if n == 0 {
                continue;
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {HOOK_COLUMNS}, secret, first_failed_at FROM webhooks WHERE id = $1"
            )))
            .bind(&id)
            .fetch_one(&self.write)
            .await?;
            return Ok(Some(ClaimedWebhook {
                hook: webhook(&row)?,
                secret: row.try_get("secret")?,
                first_failed_at: row
                    .try_get::<Option<i64>, _>("first_failed_at")?
                    .map(Timestamp),
            }));
        }
        Ok(None)
    }

    /// Records an attempt for an endpoint this worker holds and moves its cursor (delivered,
    /// abandoned) or schedules the next try (failed). `false`: the lease was lost (nothing
    /// recorded; the new holder sends the event again).
    pub async fn record_delivery(
        &self,
        hook: &ClaimedWebhook,
        worker: &str,
        attempt: Attempt<'_>,
    ) -> Result<bool> {
        let now = Timestamp::now().millis();
        let mut tx = self.write_tx().await?;
        let moved = match attempt.outcome {
            DeliveryOutcome::Delivered | DeliveryOutcome::Abandoned => sqlx::query(
                "UPDATE webhooks SET cursor_seq = $1, attempt = 0, first_failed_at = NULL, \
                 next_attempt_at = $2 WHERE id = $3 AND lease_owner = $4 AND cursor_seq < $1",
            )
            .bind(attempt.event_seq)
            .bind(now)
            .bind(&hook.hook.id)
            .bind(worker),
            DeliveryOutcome::Failed => sqlx::query(
                "UPDATE webhooks SET attempt = attempt + 1, \
                 first_failed_at = COALESCE(first_failed_at, $1), next_attempt_at = $2 \
                 WHERE id = $3 AND lease_owner = $4 AND cursor_seq < $5",
            )
            .bind(now)
            .bind(now + attempt.retry_in.as_millis() as i64)
            .bind(&hook.hook.id)
            .bind(worker)
            .bind(attempt.event_seq),
        }
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        let tries: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND event_seq = $2",
        )
        .bind(&hook.hook.id)
        .bind(attempt.event_seq)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_seq, \
             event_type, attempt, outcome, status_code, error, duration_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(IdKind::WebhookDelivery.generate())
        .bind(&hook.hook.id)
        .bind(&hook.hook.organization_id)
        .bind(attempt.event_seq)
        .bind(attempt.event_type)
        .bind(tries + 1)
        .bind(attempt.outcome.as_str())
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.error)
        .bind(attempt.duration.as_millis() as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves an endpoint's cursor past events it does not subscribe to.
    pub async fn skip_webhook_events(
        &self,
        hook: &ClaimedWebhook,
        worker: &str,
        through: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhooks SET cursor_seq = $1 \
             WHERE id = $2 AND lease_owner = $3 AND cursor_seq < $1 AND attempt = 0",
        )
        .bind(through)
        .bind(&hook.hook.id)
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Gives an endpoint's lease back.
    pub async fn release_webhook(&self, id: &str, worker: &str) -> Result<()> {
        sqlx::query(
            "UPDATE webhooks SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
