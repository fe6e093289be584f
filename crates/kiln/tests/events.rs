//! The file-event stream (`GET …/events`) and webhooks, against the real server.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use common::{Sse, TestServer, assert_envelope};
use kiln_core::types::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Reads `reader` until every file of `files` has an event of a final type.
async fn until_settled(reader: &mut common::SseReader, files: &[&str]) -> Vec<Sse> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let done = files.iter().all(|f| {
            seen.iter().any(|e: &Sse| {
                e.data["file_id"] == *f && (e.event == "file.completed" || e.event == "file.failed")
            })
        });
        if done {
            return seen;
        }
        assert!(Instant::now() < deadline, "files never settled: {seen:?}");
        if let Some(event) = reader.next(Duration::from_secs(5)).await {
            seen.push(event);
        }
    }
}

fn types_of<'a>(events: &'a [Sse], file: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.data["file_id"] == file)
        .map(|e| e.event.as_str())
        .collect()
}

#[tokio::test]
async fn a_files_life_streams_live_in_order_and_replays_from_any_position() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let reader_key = t.key_with_role(Role::Reader).await;
    // A reader key follows from now.
    let mut live = t.events("", &reader_key).await;
    let good = t
        .upload_ok(
            &store,
            "notes.txt",
            &"Kilns fire clay at high heat. ".repeat(200),
        )
        .await;
    let bad = t.upload_ok(&store, "blank.txt", "   \n\t  ").await;
    let events = until_settled(&mut live, &[&good, &bad]).await;

    // Positions: consecutive, each event once, as the SSE id and in the data.
    for pair in events.windows(2) {
        assert_eq!(pair[1].id, pair[0].id + 1, "{events:?}");
    }
    for e in &events {
        assert_eq!(e.data["seq"], e.id);
        assert_eq!(e.data["id"], e.id.to_string());
        assert_eq!(e.data["type"], e.event);
        assert_eq!(e.data["organization_id"], t.org);
        assert_eq!(e.data["store_id"], store);
    }
    let good_types = types_of(&events, &good);
    assert_eq!(
        &good_types[..3],
        ["file.uploaded", "file.queued", "file.step_started"]
    );
    assert_eq!(good_types.last(), Some(&"file.completed"));
    let steps: Vec<&str> = events
        .iter()
        .filter(|e| e.data["file_id"] == good && e.event == "file.step_started")
        .map(|e| e.data["data"]["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["extracting", "chunking", "embedding", "indexing"]);
    let completed = events.iter().find(|e| e.event == "file.completed").unwrap();
    assert_eq!(completed.data["data"]["status"], "completed");
    assert_eq!(completed.data["data"]["progress_percent"], 100);
    assert_eq!(completed.data["data"]["file_name"], "notes.txt");
    assert!(completed.data["data"]["chunk_count"].as_i64().unwrap() > 0);
    let failed = events
        .iter()
        .find(|e| e.data["file_id"] == bad && e.event == "file.failed")
        .expect("the blank file fails");
    assert_eq!(failed.data["data"]["error_code"], "NO_TEXT_EXTRACTED");
    assert_eq!(failed.data["data"]["status"], "failed");
    assert!(failed.data["data"]["error_message"].as_str().unwrap().len() > 10);

    // Retry and delete stream too.
    let (s, b) = t
        .post(&t.files_path(&store, &format!("/{bad}/retry")), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let retried = live.next(WAIT).await.unwrap();
    assert_eq!(retried.event, "file.retried");
    assert_eq!(retried.data["data"]["previous_status"], "failed");
    assert_eq!(live.next(WAIT).await.unwrap().event, "file.queued");
    until_settled(&mut live, &[&bad]).await;
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &t.files_path(&store, &format!("/{good}")),
            Some(&t.key),
            None,
        )
        .await;
    assert!(s.is_success());
    let mut after_delete = Vec::new();
    while !after_delete.iter().any(|e: &Sse| e.event == "file.purged") {
        after_delete.push(live.next(WAIT).await.expect("deleted and purged"));
    }
    assert_eq!(
        after_delete
            .iter()
            .map(|e| e.event.as_str())
            .collect::<Vec<_>>(),
        ["file.deleted", "file.purged"]
    );
    let last = after_delete.last().unwrap().id;

    // Replay from the start, without following: the same events, in the same order.
    let mut replay = t.events("?after=0&follow=false", &reader_key).await;
    let all = replay.drain(Duration::from_secs(10)).await;
    assert_eq!(all.last().unwrap().id, last, "the replay ends at the head");
    assert_eq!(all.len() as i64, last);
    let live_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let replay_ids: Vec<i64> = all.iter().map(|e| e.id).take(live_ids.len()).collect();
    assert_eq!(replay_ids, live_ids);

    // Last-Event-ID resumes after its position (and wins over `after`).
    let response = t
        .client
        .get(t.url(&t.org_path("/events?after=0&follow=false")))
        .bearer_auth(&reader_key)
        .header("last-event-id", (last - 2).to_string())
        .send()
        .await
        .unwrap();
    let resumed = common::SseReader::new(response)
        .drain(Duration::from_secs(10))
        .await;
    assert_eq!(
        resumed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [last - 1, last]
    );

    // Filters: one file, some types.
    let mut one = t
        .events(
            &format!("?after=0&follow=false&file_id={bad}&types=file.failed,file.retried"),
            &reader_key,
        )
        .await;
    let filtered = one.drain(Duration::from_secs(10)).await;
    assert_eq!(
        filtered
            .iter()
            .map(|e| e.event.as_str())
            .collect::<Vec<_>>(),
        ["file.failed", "file.retried", "file.failed"]
    );
    let (s, b, _) = t
        .call(
            Method::GET,
            &t.org_path("/events?types=file.exploded"),
            Some(&reader_key),
            None,
        )
        .await;
    let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    assert!(error.to_string().contains("file.completed"), "{error}");
}

#[tokio::test]
async fn events_never_cross_organizations() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let (other_org, other_key) = t.new_org_with_key(Role::Reader).await;
    let other_path = format!("/v1/organizations/{other_org}/events");
    let response = t
        .client
        .get(t.url(&other_path))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    let mut theirs = common::SseReader::new(response);
    let mut ours = t.events("", &t.key).await;
    let file = t
        .upload_ok(&store, "a.txt", "Glaze recipes and cone charts.")
        .await;
    until_settled(&mut ours, &[&file]).await;
    assert!(
        theirs.next(Duration::from_secs(2)).await.is_none(),
        "another organization's stream saw our events"
    );
    // Neither key reaches the other's stream.
    let (s, b, _) = t.call(Method::GET, &other_path, Some(&t.key), None).await;
    assert_envelope(s, &b, 403, "ORGANIZATION_ACCESS_DENIED");
    let (s, b, _) = t
        .call(Method::GET, &t.org_path("/events"), Some(&other_key), None)
        .await;
    assert_envelope(s, &b, 403, "ORGANIZATION_ACCESS_DENIED");
    let (s, b, _) = t
        .call(Method::GET, &t.org_path("/events"), None, None)
        .await;
    assert_envelope(s, &b, 401, "AUTHENTICATION_REQUIRED");
}

#[tokio::test]
async fn a_position_removed_by_retention_asks_for_a_resync() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let mut live = t.events("", &t.key).await;
    let a = t
        .upload_ok(&store, "a.txt", "Stoneware and porcelain bodies.")
        .await;
    let events = until_settled(&mut live, &[&a]).await;
    let head = events.last().unwrap().id;
    // Keep only the newest two events (what `events.max_per_org` does over time).
    t.catalog()
        .await
        .purge_events(i64::MAX / 4, 2)
        .await
        .unwrap();
    let (s, b, _) = t
        .call(
            Method::GET,
            &t.org_path("/events?after=0"),
            Some(&t.key),
            None,
        )
        .await;
    let error = assert_envelope(s, &b, 410, "EVENTS_EXPIRED");
    assert!(
        error["system_message"].as_str().unwrap().contains("Resync"),
        "{error}"
    );
    assert_eq!(error["details"]["oldest_available_after"], head - 2);
    // From what is kept, it works.
    let mut kept = t
        .events(&format!("?after={}&follow=false", head - 2), &t.key)
        .await;
    assert_eq!(kept.drain(Duration::from_secs(5)).await.len(), 2);
}

#[tokio::test]
async fn open_streams_end_at_shutdown_without_waiting_out_the_grace_time() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start_in(
        dir,
        |d| {
            let mut c = common::config_for(d);
            c.http.shutdown_grace_secs = 60;
            c
        },
        axum::Router::new(),
    )
    .await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(t.events("", &t.key).await);
    }
    let started = Instant::now();
    t.server.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    for mut stream in streams {
        assert!(stream.next(Duration::from_secs(5)).await.is_none());
    }
}

/// What the test's webhook receiver does with the requests it gets, in turn.
#[derive(Default)]
struct Receiver {
    /// Answer 500 while true.
    failing: bool,
    /// Then hang this many requests past Kiln's time limit.
    hang: usize,
    calls: Vec<&'static str>,
    /// Accepted deliveries: (event ID, the event).
    accepted: Vec<(i64, Value)>,
    signatures_ok: bool,
    secret: String,
}

async fn receive(
    State(state): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let hang = {
        let mut r = state.lock().unwrap();
        let signature = headers["kiln-signature"].to_str().unwrap();
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        let expected = kiln_events::webhooks::signature(&r.secret, t, &body);
        r.signatures_ok &= signature == expected;
        if r.failing {
            r.calls.push("500");
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        if r.hang > 0 {
            r.hang -= 1;
            r.calls.push("hang");
            true
        } else {
            false
        }
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return StatusCode::OK;
    }
    let event: Value = serde_json::from_str(&body).unwrap();
    let id: i64 = headers["kiln-event-id"].to_str().unwrap().parse().unwrap();
    assert_eq!(event["id"], id.to_string());
    let mut r = state.lock().unwrap();
    r.calls.push("200");
    r.accepted.push((id, event));
    StatusCode::OK
}

#[tokio::test]
async fn webhooks_get_every_event_once_in_order_through_failures_and_timeouts() {
    let receiver = Arc::new(Mutex::new(Receiver {
        failing: true,
        hang: 1,
        signatures_ok: true,
        ..Receiver::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start_in(
        dir,
        |d| {
            let mut c = common::config_for(d);
            c.events.webhook_timeout_ms = 500;
            c.events.webhook_retry_base_ms = 100;
            c.events.webhook_max_delay_ms = 800;
            c
        },
        axum::Router::new(),
    )
    .await;
    let store = t.store().await;

    // Registering needs admin; the secret is shown once.
    let editor = t.key_with_role(Role::Editor).await;
    let body = json!({"url": hook_url});
    let (s, b, _) = t
        .call(
            Method::POST,
            &t.org_path("/webhooks"),
            Some(&editor),
            Some(body.clone()),
        )
        .await;
    assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");
    let (s, b, _) = t
        .call(
            Method::POST,
            &t.org_path("/webhooks"),
            Some(&t.key),
            Some(json!({"url": "ftp://x"})),
        )
        .await;
    assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    let (s, hook) = t.post(&t.org_path("/webhooks"), body).await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    receiver.lock().unwrap().secret = secret;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let (_, listed) = t.get(&t.org_path("/webhooks")).await;
    assert_eq!(listed["items"][0]["id"], hook_id);
    assert!(listed["items"][0].get("secret").is_none(), "{listed}");

    // Files are processed while the endpoint fails: delivery never holds processing up.
    let files = [
        t.upload_ok(&store, "a.txt", &"Cone 6 oxidation firing. ".repeat(50))
            .await,
        t.upload_ok(&store, "b.txt", &"Wood kilns and ash glazes. ".repeat(50))
            .await,
        t.upload_ok(&store, "blank.txt", " ").await,
    ];
    for f in &files {
        t.settle(&store, f).await;
    }
    // (and keeps failing a few more tries).
    let deadline = Instant::now() + WAIT;
    while receiver.lock().unwrap().calls.len() < 3 {
        assert!(Instant::now() < deadline, "no delivery was tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.lock().unwrap().accepted.is_empty());
    receiver.lock().unwrap().failing = false;

    // Every event of the outbox arrives, once per ID, in position order.
    let mut replay = t.events("?after=0&follow=false", &t.key).await;
    let outbox: Vec<i64> = replay
        .drain(Duration::from_secs(10))
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(outbox.len() >= 3 * 4, "{outbox:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let got = receiver.lock().unwrap().accepted.len();
        if got >= outbox.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {} events arrived",
            outbox.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let r = receiver.lock().unwrap();
        let ids: Vec<i64> = r.accepted.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, outbox, "each event once, in order");
        let mut per_file: HashMap<String, Vec<i64>> = HashMap::new();
        for (id, event) in &r.accepted {
            per_file
                .entry(event["file_id"].to_string())
                .or_default()
                .push(*id);
        }
        assert!(
            per_file
                .values()
                .all(|ids| ids.windows(2).all(|w| w[0] < w[1]))
        );
        assert!(r.signatures_ok, "a signature did not verify");
        assert!(
            r.calls.contains(&"500") && r.calls.contains(&"hang"),
            "{:?}",
            r.calls
        );
    }

    // The delivery log shows the failures, the timeout and the deliveries.
    let (s, log) = t
        .get(&t.org_path(&format!("/webhooks/{hook_id}/deliveries?limit=1000")))
        .await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let items = log["items"].as_array().unwrap();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for item in items {
        *outcomes
            .entry(item["outcome"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(outcomes["delivered"], outbox.len(), "{outcomes:?}");
    assert!(
        items
            .iter()
            .any(|i| i["status_code"] == 500 && i["outcome"] == "failed")
    );
    assert!(items.iter().any(|i| i["error"] == "timed out"));
    let first = items
        .iter()
        .rev()
        .find(|i| i["outcome"] == "delivered")
        .unwrap();
    assert!(first["attempt"].as_i64().unwrap() >= 3, "{first}");

    // Deleted: gone, and nothing more is sent.
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &t.org_path(&format!("/webhooks/{hook_id}")),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = t.get(&t.org_path(&format!("/webhooks/{hook_id}"))).await;
    assert_envelope(s, &b, 404, "WEBHOOK_NOT_FOUND");
    let before = receiver.lock().unwrap().accepted.len();
    t.upload_ok(&store, "c.txt", "After the endpoint was removed.")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.lock().unwrap().accepted.len(), before);
}

#[tokio::test]
async fn the_openapi_document_lists_the_event_endpoints() {
    let t = TestServer::start().await;
    let (s, doc) = t.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let events = &paths["/v1/organizations/{organization_id}/events"]["get"];
    assert!(
        events["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{events}"
    );
    assert!(events["responses"]["410"].is_object(), "{events}");
    let hooks = &paths["/v1/organizations/{organization_id}/webhooks"];
    assert!(hooks["get"].is_object() && hooks["post"].is_object());
    let hook = &paths["/v1/organizations/{organization_id}/webhooks/{webhook_id}"];
    assert!(hook["get"].is_object() && hook["delete"].is_object());
    assert!(
        paths["/v1/organizations/{organization_id}/webhooks/{webhook_id}/deliveries"]["get"]
            .is_object()
    );
}
