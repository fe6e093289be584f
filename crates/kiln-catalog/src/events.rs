//! The event outbox: every change of a file's state writes an event in the transaction that
//! makes the change, numbered per organization (`event_counters`). The counter row is taken
//! last (`write`, called just before commit), so an organization's events commit in
//! sequence order: a reader that tails `seq` never skips an event that commits late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_core::types::EventType;
use kiln_core::{FileId, OrgId, StoreId, Timestamp};
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::exec::{Exec, Q};
use crate::rows::Columns;
use crate::{Catalog, Dialect, Result};

/// The channel a PostgreSQL catalog notifies when events commit (payload: the organization).
pub const EVENTS_CHANNEL: &str = "kiln_events";

/// At most one `file.progress` event per file per this many milliseconds (step changes,
/// completions and failures are never held back).
pub const PROGRESS_EVENT_INTERVAL_MS: i64 = 250;

/// An event of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub organization_id: OrgId,
    pub seq: i64,
    pub event_type: String,
    pub store_id: Option<StoreId>,
    pub file_id: Option<FileId>,
    pub data: Value,
    pub created_at: Timestamp,
}

impl Event {
    /// The event as the stream and webhooks send it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.seq.to_string(),
            "seq": self.seq,
            "type": self.event_type,
            "organization_id": self.organization_id,
            "store_id": self.store_id,
            "file_id": self.file_id,
            "created_at": self.created_at.to_rfc3339(),
            "data": self.data,
        })
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub store_id: Option<StoreId>,
    pub file_id: Option<FileId>,
    /// Empty: every type.
    pub types: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.store_id
            .as_ref()
            .is_none_or(|s| event.store_id.as_ref() == Some(s))
            && self
                .file_id
                .as_ref()
                .is_none_or(|f| event.file_id.as_ref() == Some(f))
            && (self.types.is_empty() || self.types.contains(&event.event_type))
    }
}

/// Where an organization's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPosition {
    /// The last event written (0: none yet).
    pub last_seq: i64,
    /// Events up to here were removed by retention.
    pub purged_through: i64,
}

/// An event to write, collected during a transaction.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    kind: EventType,
    store_id: Option<StoreId>,
    file_id: Option<FileId>,
    /// Type-specific fields, merged over the file's state (for file events).
    extra: Value,
}

impl NewEvent {
    /// A file event: its data is the file's state after the change, plus `extra`.
    pub(crate) fn file(
        kind: EventType,
        store_id: &StoreId,
        file_id: &FileId,
        extra: Value,
    ) -> Self {
        NewEvent {
            kind,
            store_id: Some(store_id.clone()),
            file_id: Some(file_id.clone()),
            extra,
        }
    }

    pub(crate) fn store(kind: EventType, store_id: &StoreId, extra: Value) -> Self {
        NewEvent {
            kind,
            store_id: Some(store_id.clone()),
            file_id: None,
            extra,
        }
    }
}

/// The columns of `files` a file event's state is made of (see [`file_state_of`]).
pub(crate) const STATE_COLUMNS: &str = "file_name, status, current_step, progress_percent, \
     attempts, error_code, error_message, chunk_count";

/// The state fields a file event carries, read from the file's row.
async fn file_state(conn: &mut impl Exec, file_id: &FileId) -> Result<Map<String, Value>> {
    let row = conn
        .fetch_optional(
            Q::formatted(format!("SELECT {STATE_COLUMNS} FROM files WHERE id = $1")).bind(file_id),
        )
        .await?;
    match row {
        Some(row) => file_state_of(&row),
        None => Ok(Map::new()),
    }
}

/// The state fields a file event carries, from a row with [`STATE_COLUMNS`] (a file row
/// that a change's own statement returned, so that its events need not read it again).
pub(crate) fn file_state_of(row: &impl Columns) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    out.insert("file_name".into(), json!(row.col::<String>("file_name")?));
    out.insert("status".into(), json!(row.col::<String>("status")?));
    out.insert(
        "current_step".into(),
        json!(row.col::<Option<String>>("current_step")?),
    );
    out.insert(
        "progress_percent".into(),
        json!(row.col::<i64>("progress_percent")?),
    );
    out.insert("attempt".into(), json!(row.col::<i64>("attempts")?));
    let code: Option<String> = row.col("error_code")?;
    if code.is_some() {
        out.insert("error_code".into(), json!(code));
        out.insert(
            "error_message".into(),
            json!(row.col::<Option<String>>("error_message")?),
        );
    }
    out.insert("chunk_count".into(), json!(row.col::<i64>("chunk_count")?));
    Ok(out)
}

/// Event rows an insert carries at most (7 parameters each: well under SQLite's 32,766 and
/// PostgreSQL's 65,535).
const EVENT_ROWS_PER_STATEMENT: usize = 500;

/// Writes `events` of one organization inside the caller's transaction. Call it last, just
/// before commit: it locks the organization's counter until the transaction ends. Each file's
/// state is read once however many of its events there are (they are written at one moment
/// of one transaction), and the rows go in as few inserts as they fit: each statement is a
/// round trip to the database (through sqlx on SQLite, to its connection's thread and back;
/// inline, a statement prepared and run).
pub(crate) async fn write(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    events: Vec<NewEvent>,
) -> Result<()> {
    write_with_state(conn, organization_id, events, None).await
}

/// As [`write`], with one file's state after the change already in hand ([`file_state_of`]
/// on the row the change's statement returned), so that file is not read again.
pub(crate) async fn write_with_state(
    conn: &mut impl Exec,
    organization_id: &OrgId,
    events: Vec<NewEvent>,
    known: Option<(&FileId, Map<String, Value>)>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now().millis();
    let mut states: HashMap<FileId, Map<String, Value>> = HashMap::new();
    if let Some((file_id, state)) = known {
        states.insert(file_id.clone(), state);
    }
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let mut data = match &event.file_id {
            Some(file_id) => match states.get(file_id) {
                Some(state) => state.clone(),
                None => {
                    let state = file_state(&mut *conn, file_id).await?;
                    states.insert(file_id.clone(), state.clone());
                    state
                }
            },
            None => Map::new(),
        };
        if let Value::Object(extra) = &event.extra {
            data.extend(extra.clone());
        }
        rows.push((event, Value::Object(data).to_string()));
    }
    let n = rows.len() as i64;
    let last: i64 = conn
        .fetch_one(
            Q::new(
                "INSERT INTO event_counters (organization_id, last_seq) VALUES ($1, $2) \
                 ON CONFLICT (organization_id) DO UPDATE SET last_seq = event_counters.last_seq + $2 \
                 RETURNING last_seq",
            )
            .bind(organization_id)
            .bind(n),
        )
        .await?
        .col("last_seq")?;
    let mut seq = last - n;
    for batch in rows.chunks(EVENT_ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO events (organization_id, seq, type, store_id, file_id, data, created_at) \
             VALUES {}",
            crate::value_rows(batch.len(), 7, |_, p| p)
        );
        let mut query = Q::formatted(sql);
        for (event, data) in batch {
            seq += 1;
            query = query
                .bind(organization_id)
                .bind(seq)
                .bind(event.kind.as_str())
                .bind(&event.store_id)
                .bind(&event.file_id)
                .bind(data)
                .bind(now);
        }
        conn.execute(query).await?;
    }
    if conn.dialect() == Dialect::Postgres {
        conn.execute(
            Q::new("SELECT pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind(organization_id),
        )
        .await?;
    }
    Ok(())
}

fn event(row: &sqlx::any::AnyRow) -> Result<Event> {
    let data: String = row.try_get("data")?;
    Ok(Event {
        organization_id: row.try_get("organization_id")?,
        seq: row.try_get("seq")?,
        event_type: row.try_get("type")?,
        store_id: row.try_get("store_id")?,
        file_id: row.try_get("file_id")?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

/// Throttles `file.progress` events per file (a file's job runs on one worker at a time, so
/// a process-local gate suffices; after a lease moves, a few more events at worst).
#[derive(Clone, Default)]
pub(crate) struct ProgressGate(Arc<Mutex<HashMap<FileId, i64>>>);

impl ProgressGate {
    /// Whether a progress event for `file_id` may be written now.
    pub(crate) fn admit(&self, file_id: &FileId) -> bool {
        let now = Timestamp::now().millis();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(file_id) {
            Some(&at) if now - at < PROGRESS_EVENT_INTERVAL_MS => false,
            _ => {
                last.insert(file_id.clone(), now);
                true
            }
        }
    }

    /// A step started (always written): the next progress waits its interval from now.
    pub(crate) fn reset(&self, file_id: &FileId) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(file_id.clone(), Timestamp::now().millis());
    }

    pub(crate) fn forget(&self, file_id: &FileId) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(file_id);
    }
}

impl Catalog {
    /// Events of an organization after `after`, oldest first, at most `limit` (readers filter
    /// them with [`EventFilter::matches`]: a stream's cursor moves past what it skips).
    pub async fn events_after(
        &self,
        organization_id: &OrgId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT organization_id, seq, type, store_id, file_id, data, created_at FROM events \
             WHERE organization_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(organization_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event).collect()
    }

    /// Where an organization's event stream stands.
    pub async fn event_position(&self, organization_id: &OrgId) -> Result<EventPosition> {
        let row = sqlx::query(
            "SELECT last_seq, purged_through FROM event_counters WHERE organization_id = $1",
        )
        .bind(organization_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(match row {
            Some(row) => EventPosition {
                last_seq: row.try_get("last_seq")?,
                purged_through: row.try_get("purged_through")?,
            },
            None => EventPosition {
                last_seq: 0,
                purged_through: 0,
            },
        })
    }

    /// Retention: removes events older than `max_age_ms`, and beyond the newest `max_per_org`
    /// of each organization, with the webhook delivery log of the same age. Safe on every
    /// node at once. Returns how many events were removed.
    pub async fn purge_events(&self, max_age_ms: i64, max_per_org: i64) -> Result<u64> {
        let cutoff = Timestamp::now().millis() - max_age_ms;
        let orgs = sqlx::query("SELECT organization_id, last_seq FROM event_counters")
            .fetch_all(&self.read)
            .await?;
        let mut removed = 0;
        for row in orgs {
            let org: String = row.try_get("organization_id")?;
            let last: i64 = row.try_get("last_seq")?;
            let old: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(seq) FROM events WHERE organization_id = $1 AND created_at < $2",
            )
            .bind(&org)
            .bind(cutoff)
            .fetch_one(&self.read)
            .await?;
            let through = old.unwrap_or(0).max(last - max_per_org);
            if through <= 0 {
                continue;
            }
            let mut tx = self.write_tx().await?;
            removed += sqlx::query("DELETE FROM events WHERE organization_id = $1 AND seq <= $2")
                .bind(&org)
                .bind(through)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "UPDATE event_counters SET purged_through = $1 \
                 WHERE organization_id = $2 AND purged_through < $1",
            )
            .bind(through)
            .bind(&org)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        sqlx::query("DELETE FROM webhook_deliveries WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.write)
            .await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn all(catalog: &Catalog, org: &OrgId) -> Vec<Event> {
        catalog.events_after(org, 0, 1000).await.unwrap()
    }

    /// The next processing job, claimed by worker `w` for a minute.
    async fn claimed(catalog: &Catalog) -> crate::ProcessJob {
        catalog
            .claim("w", Duration::from_secs(60))
            .await
            .unwrap()
            .and_then(crate::Claimed::into_process)
            .unwrap()
    }

    fn types(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[tokio::test]
    async fn a_files_life_is_written_as_events_numbered_per_organization() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let (org_b, store_b) = crate::test_org_with_store(&catalog).await;
            let file = crate::test_file(&catalog, &org, &store).await;
            crate::test_file(&catalog, &org_b, &store_b).await;
            let job = claimed(&catalog).await;
            let job = if job.file.id == file {
                job
            } else {
                claimed(&catalog).await
            };
            catalog
                .fail(
                    &job,
                    "w",
                    kiln_core::types::Step::Extracting,
                    kiln_core::types::FileErrorCode::CorruptFile,
                    "bad file",
                    false,
                    Duration::ZERO,
                )
                .await
                .unwrap();
            catalog
                .retry_file(&org, &store, &file, false, "ak_x")
                .await
                .unwrap();
            catalog
                .delete_files(&org, &store, std::slice::from_ref(&file), "ak_x")
                .await
                .unwrap();
            let events = all(&catalog, &org).await;
            assert_eq!(
                types(&events),
                [
                    "file.uploaded",
                    "file.queued",
                    "file.step_started",
                    "file.failed",
                    "file.retried",
                    "file.queued",
                    "file.deleted"
                ]
            );
            assert_eq!(
                events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (1..=7).collect::<Vec<_>>()
            );
            assert_eq!(events[3].data["status"], "failed");
            assert_eq!(events[3].data["error_code"], "CORRUPT_FILE");
            assert_eq!(events[2].data["current_step"], "extracting");
            // The other organization has its own numbering and sees none of these.
            // (Its file may have been claimed first: 2 or 3 events.)
            let other = all(&catalog, &org_b).await;
            assert_eq!(&types(&other)[..2], ["file.uploaded", "file.queued"]);
            assert_eq!(
                other.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (1..=other.len() as i64).collect::<Vec<_>>()
            );
            assert!(other.iter().all(|e| e.organization_id == org_b));
            // Filters.
            let only_failed = EventFilter {
                types: vec!["file.failed".into()],
                ..EventFilter::default()
            };
            let failed: Vec<Event> = all(&catalog, &org)
                .await
                .into_iter()
                .filter(|e| only_failed.matches(e))
                .collect();
            assert_eq!(failed.len(), 1);
            let by_file = EventFilter {
                file_id: Some(file.clone()),
                ..EventFilter::default()
            };
            let after_5 = catalog.events_after(&org, 5, 100).await.unwrap();
            assert_eq!(after_5.iter().filter(|e| by_file.matches(e)).count(), 2);

            // Retention: everything but the newest event goes, and the position says so.
            catalog.purge_events(i64::MAX / 4, 1).await.unwrap();
            let position = catalog.event_position(&org).await.unwrap();
            assert_eq!(
                position,
                EventPosition {
                    last_seq: 7,
                    purged_through: 6
                }
            );
            assert_eq!(all(&catalog, &org).await.len(), 1);
        }
    }

    /// One write of many events (more than one insert holds, for two files and the store):
    /// every row is numbered in order, each file event carries its own file's state with only
    /// its own extra fields (a state read once serves all of that file's events), and a store
    /// event carries no file state.
    #[tokio::test]
    async fn a_write_of_many_events_numbers_every_row_and_keeps_each_files_state() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let first = crate::test_file(&catalog, &org, &store).await;
            let second = crate::test_file(&catalog, &org, &store).await;
            // Both were uploaded within the same instant, so either may be claimed first.
            let processing = claimed(&catalog).await.file.id;
            assert!(
                processing == first || processing == second,
                "{processing:?}"
            );
            let pending = if processing == first { second } else { first };
            let before = catalog.event_position(&org).await.unwrap().last_seq;
            let n = EVENT_ROWS_PER_STATEMENT + 7;
            let events: Vec<NewEvent> = (0..n)
                .map(|i| match i % 3 {
                    0 => NewEvent::file(
                        EventType::FileProgress,
                        &store,
                        &processing,
                        json!({"i": i}),
                    ),
                    1 if i % 2 == 1 => NewEvent::file(
                        EventType::FileProgress,
                        &store,
                        &pending,
                        json!({"i": i, "only_here": true}),
                    ),
                    1 => NewEvent::file(EventType::FileProgress, &store, &pending, json!({"i": i})),
                    _ => NewEvent::store(EventType::StoreDeleted, &store, json!({"i": i})),
                })
                .collect();
            let mut tx = catalog.write_tx().await.unwrap();
            write(&mut tx, &org, events).await.unwrap();
            tx.commit().await.unwrap();

            let written = catalog.events_after(&org, before, 10_000).await.unwrap();
            assert_eq!(written.len(), n);
            for (i, event) in written.iter().enumerate() {
                assert_eq!(event.seq, before + 1 + i as i64);
                assert_eq!(event.data["i"], i, "{event:?}");
                match i % 3 {
                    0 => {
                        assert_eq!(event.file_id.as_ref(), Some(&processing));
                        assert_eq!(event.data["status"], "processing");
                        assert_eq!(event.data["current_step"], "extracting");
                        assert!(event.data.get("only_here").is_none(), "{event:?}");
                    }
                    1 => {
                        assert_eq!(event.file_id.as_ref(), Some(&pending));
                        assert_eq!(event.data["status"], "pending");
                        let marked = event.data.get("only_here") == Some(&json!(true));
                        assert_eq!(marked, i % 2 == 1, "{event:?}");
                    }
                    _ => {
                        assert_eq!(
                            (event.file_id.as_ref(), event.event_type.as_str()),
                            (None, "store.deleted")
                        );
                        assert!(event.data.get("status").is_none(), "{event:?}");
                    }
                }
            }
            let position = catalog.event_position(&org).await.unwrap();
            assert_eq!(position.last_seq, before + n as i64);
        }
    }

    /// The upload's, the claim's and the completion's events carry the state their own
    /// statement returned instead of reading the file again; each must be the state a read
    /// right after the change finds, field for field, on every backend.
    #[tokio::test]
    async fn events_carry_the_state_their_change_returned() {
        use kiln_core::types::Step;
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let state_now = |file: FileId| {
                let catalog = &catalog;
                async move {
                    let mut conn = catalog.read.acquire().await.unwrap();
                    file_state(&mut *conn, &file).await.unwrap()
                }
            };
            let check = |events: &[Event], state: &Map<String, Value>| {
                assert!(!events.is_empty());
                for event in events {
                    for (field, value) in state {
                        assert_eq!(event.data.get(field), Some(value), "{field} of {event:?}");
                    }
                }
            };
            let file = crate::test_file(&catalog, &org, &store).await;
            let uploaded = all(&catalog, &org).await;
            assert_eq!(types(&uploaded), ["file.uploaded", "file.queued"]);
            check(&uploaded, &state_now(file.clone()).await);

            let job = claimed(&catalog).await;
            let claim = catalog.events_after(&org, 2, 100).await.unwrap();
            assert_eq!(types(&claim), ["file.step_started"]);
            check(&claim, &state_now(file.clone()).await);

            let lines = vec![
                crate::LogLine::info(Some(Step::Chunking), "step_started", "Chunking", json!({})),
                crate::LogLine::info(
                    Some(Step::Embedding),
                    "step_started",
                    "Embedding",
                    json!({}),
                ),
            ];
            let done = crate::Completion {
                chunk_count: 3,
                extracted_text_bytes: 10,
                vector_bytes: 12,
                index_bytes: 10,
                embedding_model: "m".into(),
                data: json!({}),
                logs: lines,
            };
            catalog.complete(&job, "w", done).await.unwrap();
            let completion = catalog.events_after(&org, 3, 100).await.unwrap();
            assert_eq!(
                types(&completion),
                ["file.step_started", "file.step_started", "file.completed"]
            );
            let state = state_now(file.clone()).await;
            assert_eq!(
                (&state["status"], &state["chunk_count"]),
                (&json!("completed"), &json!(3))
            );
            check(&completion, &state);
        }
    }

    #[tokio::test]
    async fn progress_is_coalesced_but_step_changes_never_are() {
        use kiln_core::types::Step;
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            crate::test_file(&catalog, &org, &store).await;
            let job = claimed(&catalog).await;
            let before = all(&catalog, &org).await.len();
            // 50 progress reports in a burst, then a new step.
            let burst = std::time::Instant::now();
            for percent in 0..50 {
                catalog
                    .record_progress(&job, "w", Step::Embedding, 20 + percent, Vec::new())
                    .await
                    .unwrap();
            }
            let took = burst.elapsed().as_millis() as usize;
            catalog
                .record_progress(&job, "w", Step::Indexing, 90, Vec::new())
                .await
                .unwrap();
            let events = all(&catalog, &org).await;
            let new = types(&events[before..]);
            assert_eq!(new.first(), Some(&"file.step_started"), "{new:?}");
            assert_eq!(new.last(), Some(&"file.step_started"), "{new:?}");
            let progress = new.iter().filter(|t| **t == "file.progress").count();
            // At most one per interval the burst lasted (it is far shorter than 50 of them).
            let allowed = took / PROGRESS_EVENT_INTERVAL_MS as usize + 1;
            assert!(
                progress <= allowed && allowed < 25,
                "{progress} progress events in {took} ms: {new:?}"
            );
            assert_eq!(events.last().unwrap().data["current_step"], "indexing");
        }
    }

    /// A worker writes a file's quick steps together: each step the lines start still gets
    /// its `file.step_started`, in order, and each line keeps the time it happened — through
    /// a progress write and through the completion.
    #[tokio::test]
    async fn steps_written_together_each_get_their_event_and_keep_their_times() {
        use crate::{Completion, LogLine};
        use kiln_core::Timestamp;
        use kiln_core::model::PageRequest;
        use kiln_core::types::Step;
        let line = |step: Step, event: &'static str, at: i64| LogLine {
            at: Timestamp(at),
            ..LogLine::info(
                Some(step),
                event,
                format!("{event} {}", step.as_str()),
                json!({}),
            )
        };
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            for through_completion in [false, true] {
                let file = crate::test_file(&catalog, &org, &store).await;
                let job = claimed(&catalog).await;
                assert_eq!(job.file.id, file);
                let before = all(&catalog, &org).await.len();
                let lines = vec![
                    line(Step::Extracting, "step_started", 1_000),
                    line(Step::Extracting, "step_completed", 1_001),
                    line(Step::Chunking, "step_started", 1_002),
                    line(Step::Chunking, "step_completed", 1_007),
                    line(Step::Embedding, "step_started", 1_008),
                    line(Step::Embedding, "step_completed", 1_400),
                    line(Step::Indexing, "step_started", 1_401),
                ];
                if through_completion {
                    let done = Completion {
                        chunk_count: 1,
                        extracted_text_bytes: 1,
                        vector_bytes: 4,
                        index_bytes: 1,
                        embedding_model: "m".into(),
                        data: json!({}),
                        logs: lines,
                    };
                    catalog.complete(&job, "w", done).await.unwrap();
                } else {
                    catalog
                        .record_progress(&job, "w", Step::Indexing, 90, lines)
                        .await
                        .unwrap();
                }
                let events = all(&catalog, &org).await;
                let new = &events[before..];
                // `extracting` was announced by the claim.
                let started: Vec<&str> = new
                    .iter()
                    .filter(|e| e.event_type == "file.step_started")
                    .map(|e| e.data["step"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    started,
                    ["chunking", "embedding", "indexing"],
                    "{through_completion}"
                );
                assert_eq!(
                    new.last().unwrap().event_type,
                    if through_completion {
                        "file.completed"
                    } else {
                        "file.step_started"
                    }
                );
                let window = PageRequest {
                    skip: 0,
                    limit: 100,
                };
                let logs = catalog
                    .file_logs(&org, &store, &file, None, window)
                    .await
                    .unwrap();
                let written: Vec<(i64, &str)> = logs
                    .items
                    .iter()
                    .filter(|l| l.timestamp.millis() < 2_000)
                    .map(|l| (l.timestamp.millis(), l.event.as_str()))
                    .collect();
                assert_eq!(
                    written,
                    [
                        (1_000, "step_started"),
                        (1_001, "step_completed"),
                        (1_002, "step_started"),
                        (1_007, "step_completed"),
                        (1_008, "step_started"),
                        (1_400, "step_completed"),
                        (1_401, "step_started"),
                    ]
                );
            }
        }
    }

    /// More lines written at once than one insert takes (three inserts' worth) are all kept,
    /// in order, each with its time, message and data. (That they go in few statements shows
    /// only in the context switches of `kiln bench ingest`'s uploads, not here.)
    #[tokio::test]
    async fn more_lines_than_one_insert_takes_are_all_kept_in_order() {
        use crate::LogLine;
        use kiln_core::Timestamp;
        use kiln_core::model::PageRequest;
        use kiln_core::types::Step;
        let count = 2 * crate::files::LOG_ROWS_PER_STATEMENT + 3;
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let file = crate::test_file(&catalog, &org, &store).await;
            let job = claimed(&catalog).await;
            let lines: Vec<LogLine> = (0..count)
                .map(|i| LogLine {
                    at: Timestamp(10_000 + i as i64),
                    ..LogLine::info(
                        Some(Step::Extracting),
                        "note",
                        format!("line {i}"),
                        json!({ "i": i }),
                    )
                })
                .collect();
            catalog
                .record_progress(&job, "w", Step::Extracting, 5, lines)
                .await
                .unwrap();
            let mut written = Vec::new();
            for skip in (0..count + 100).step_by(100) {
                let window = PageRequest {
                    skip: skip as i64,
                    limit: 100,
                };
                let page = catalog
                    .file_logs(&org, &store, &file, None, window)
                    .await
                    .unwrap();
                written.extend(
                    page.items
                        .into_iter()
                        .filter(|l| l.event == "note")
                        .map(|l| (l.timestamp.millis(), l.message, l.data["i"].clone())),
                );
            }
            let expected: Vec<(i64, String, serde_json::Value)> = (0..count)
                .map(|i| (10_000 + i as i64, format!("line {i}"), json!(i)))
                .collect();
            assert_eq!(written, expected);
        }
    }

    #[tokio::test]
    async fn a_lost_worker_requeues_with_an_event_and_a_deleted_file_gets_none() {
        for crate::TestCatalog {
            catalog,
            org,
            store,
            ..
        } in crate::test_catalogs().await
        {
            let kept = crate::test_file(&catalog, &org, &store).await;
            let gone = crate::test_file(&catalog, &org, &store).await;
            for _ in 0..2 {
                catalog
                    .claim("w", Duration::from_millis(1))
                    .await
                    .unwrap()
                    .unwrap();
            }
            catalog
                .delete_files(&org, &store, std::slice::from_ref(&gone), "ak_x")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(catalog.reap_expired().await.unwrap(), 2);
            let events = all(&catalog, &org).await;
            let requeued: Vec<&Event> = events
                .iter()
                .filter(|e| e.event_type == "file.queued" && e.data["reason"] == "worker_lost")
                .collect();
            assert_eq!(requeued.len(), 1, "{events:?}");
            assert_eq!(requeued[0].file_id.as_deref(), Some(kept.as_str()));
            assert_eq!(requeued[0].data["status"], "pending");
            let last_of_gone = events
                .iter()
                .rfind(|e| e.file_id.as_deref() == Some(gone.as_str()))
                .unwrap();
            assert_eq!(last_of_gone.event_type, "file.deleted");
        }
    }
}
