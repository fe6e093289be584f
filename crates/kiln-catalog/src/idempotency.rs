//! `Idempotency-Key`: the first answer to a request, kept for a day and replayed to any
//! re-send with the same key from the same caller, so a client that re-sends a POST (the
//! Aitronos client does, on 408, 409, 429 and 5xx) does not create a second file.

use std::time::Duration;

use kiln_core::Timestamp;
use sqlx::Row;

use crate::{Catalog, CatalogError, Result};

/// How long an answer is kept.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// What a request carrying a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First of its key (or the first one's run was abandoned): run it, then `finish` it.
    Run,
    /// Answered before: send this again.
    Replay(StoredResponse),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for another request (method and path).
    Mismatch,
}

impl Catalog {
    /// Claims `key` of `scope` (the caller) for `request`. A claim still running after
    /// `abandoned_after` (its process died) is taken over.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        request: &str,
        abandoned_after: Duration,
    ) -> Result<IdempotencyClaim> {
        let now = Timestamp::now().millis();
        let attempt = async {
            let mut tx = self.write_tx().await?;
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(now - KEEP.as_millis() as i64)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(
                "SELECT request, state, status_code, body, created_at FROM idempotency_keys \
                 WHERE scope = $1 AND idem_key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            let claim = match row {
                None => {
                    sqlx::query(
                        "INSERT INTO idempotency_keys (scope, idem_key, request, state, created_at) \
                         VALUES ($1, $2, $3, 'running', $4)",
                    )
                    .bind(scope)
                    .bind(key)
                    .bind(request)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    IdempotencyClaim::Run
                }
                Some(row) => {
                    let stored: String = row.try_get("request")?;
                    let state: String = row.try_get("state")?;
                    let created: i64 = row.try_get("created_at")?;
                    if stored != request {
                        IdempotencyClaim::Mismatch
                    } else if state == "done" {
                        let status: i64 = row.try_get("status_code")?;
                        let body: Option<String> = row.try_get("body")?;
                        IdempotencyClaim::Replay(StoredResponse {
                            status: u16::try_from(status).unwrap_or(500),
                            body: body.unwrap_or_default(),
                        })
                    } else if created <= now - abandoned_after.as_millis() as i64 {
                        sqlx::query(
                            "UPDATE idempotency_keys SET created_at = $1 \
                             WHERE scope = $2 AND idem_key = $3",
                        )
                        .bind(now)
                        .bind(scope)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                        IdempotencyClaim::Run
                    } else {
                        IdempotencyClaim::InProgress
                    }
                }
            };
            tx.commit().await?;
            Ok(claim)
        };
        match attempt.await {
            // PostgreSQL: a concurrent first request inserted the key between our look and
            // our insert.
            Err(CatalogError::Db(sqlx::Error::Database(err))) if err.is_unique_violation() => {
                Ok(IdempotencyClaim::InProgress)
            }
            other => other,
        }
    }

    /// Stores the answer of a claimed key.
    pub async fn finish_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status_code = $1, body = $2 \
             WHERE scope = $3 AND idem_key = $4",
        )
        .bind(i64::from(response.status))
        .bind(&response.body)
        .bind(scope)
        .bind(key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Forgets a claimed key whose request failed in a way a re-send may fix (5xx, 429).
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(scope)
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_runs_once_then_replays_and_refuses_another_request() {
        for crate::TestCatalog { catalog, .. } in crate::test_catalogs().await {
            let claim = |key: &'static str, request: &'static str| {
                let catalog = catalog.clone();
                async move {
                    catalog
                        .claim_idempotency_key("scope", key, request, Duration::from_secs(600))
                        .await
                        .unwrap()
                }
            };
            assert_eq!(claim("k1", "POST /a").await, IdempotencyClaim::Run);
            assert_eq!(claim("k1", "POST /a").await, IdempotencyClaim::InProgress);
            let answer = StoredResponse {
                status: 201,
                body: "{\"id\":1}".into(),
            };
            catalog
                .finish_idempotency_key("scope", "k1", &answer)
                .await
                .unwrap();
            assert_eq!(
                claim("k1", "POST /a").await,
                IdempotencyClaim::Replay(answer)
            );
            assert_eq!(claim("k1", "POST /b").await, IdempotencyClaim::Mismatch);
            // Another scope (caller) has its own keys.
            assert_eq!(
                catalog
                    .claim_idempotency_key("other", "k1", "POST /b", Duration::from_secs(600))
                    .await
                    .unwrap(),
                IdempotencyClaim::Run
            );
            // A released key runs again; an abandoned claim is taken over.
            assert_eq!(claim("k2", "POST /a").await, IdempotencyClaim::Run);
            catalog
                .release_idempotency_key("scope", "k2")
                .await
                .unwrap();
            assert_eq!(claim("k2", "POST /a").await, IdempotencyClaim::Run);
            assert_eq!(
                catalog
                    .claim_idempotency_key("scope", "k2", "POST /a", Duration::ZERO)
                    .await
                    .unwrap(),
                IdempotencyClaim::Run
            );
        }
    }
}
