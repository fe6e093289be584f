//! Files end to end against the real server and the real model: upload → extract → chunk →
//! embed → index → completed → searchable; status, retry, logs, delete, usage; bad input.

mod common;

use std::time::Duration;

use axum::extract::{Path, State};
use common::{TestServer, assert_envelope};
use kiln_core::types::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VITAMIN: &str = "Vitamin D deficiency is associated with an increased risk of hip \
    fractures in older adults. Supplementation with calcium and vitamin D reduced the \
    fracture rate in a randomised trial of nursing-home residents.";
const YEAST: &str = "Budding yeast cells regulate gene expression through chromatin \
    remodelling complexes. Mutations in the SWI/SNF complex change transcription of \
    hundreds of genes during the cell cycle.";

/// A route that tells how many chunks the index holds for a file (all generations).
fn index_probe() -> axum::Router<kiln_api::AppState> {
    axum::Router::new().route(
        "/v1/test/index/{file_id}",
        axum::routing::get(
            |State(app): State<kiln_api::AppState>, Path(file_id): Path<String>| async move {
                // A cluster node's index is a replica of the catalog's log: caught up first,
                // as a search is (read-your-writes), or a completion just seen may not be in
                // it yet.
                if let Some(replica) = &app.replica {
                    replica.catch_up(Duration::from_secs(10)).await.unwrap();
                }
                axum::Json(json!({ "chunks": app.index.count_file(&file_id).unwrap() }))
            },
        ),
    )
}

async fn index_chunks(t: &TestServer, file: &str) -> u64 {
    let (_, b, _) = t
        .call(Method::GET, &format!("/v1/test/index/{file}"), None, None)
        .await;
    b["chunks"].as_u64().unwrap()
}

fn long_text(paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|i| format!("Paragraph {i}. {VITAMIN} {YEAST}"))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[tokio::test]
async fn an_upload_completes_and_is_searchable_in_every_mode() {
    let t = TestServer::start_with(index_probe()).await;
    let store = t.store().await;
    let (status, file) = t
        .upload(
            &store,
            "vitamin.md",
            format!("# Bones\n\n{VITAMIN}").into_bytes(),
            Some("papers/2025"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let id = file["id"].as_str().unwrap();
    assert!(id.starts_with("file_") && id.len() == 25);
    assert_eq!(file["status"], "pending");
    assert_eq!(file["current_step"], "queued");
    assert_eq!(file["progress_percent"], 0);
    assert_eq!(file["relative_path"], "papers/2025");
    assert_eq!(file["mime_type"], "text/markdown");
    assert_eq!(file["file_size"], (VITAMIN.len() + 9) as i64);
    assert_eq!(file["sha256"].as_str().unwrap().len(), 64);
    let other = t.upload_ok(&store, "yeast.txt", YEAST).await;

    let done = t.settle(&store, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress_percent"], 100);
    assert_eq!(done["current_step"], "completed");
    assert_eq!(done["embedding_model"], "all-MiniLM-L6-v2@int8");
    assert!(done["chunk_count"].as_i64().unwrap() >= 1);
    assert!(done["completed_at"].is_string() && done["started_at"].is_string());
    assert!(done["error_code"].is_null() && done["lease_expires_at"].is_null());
    assert_eq!(t.settle(&store, &other).await["status"], "completed");
    assert_eq!(
        index_chunks(&t, id).await,
        done["chunk_count"].as_u64().unwrap()
    );

    for mode in ["hybrid", "semantic", "keyword"] {
        let (s, b) = t
            .search(
                &store,
                json!({"query": "does vitamin D prevent hip fractures", "mode": mode}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let first = &b["results"][0];
        assert_eq!(first["file_id"], id, "{mode}: {b}");
        assert_eq!(first["file_name"], "vitamin.md");
        assert_eq!(first["relative_path"], "papers/2025");
        assert_eq!(first["store_id"], store.as_str());
        assert!(first["text"].as_str().unwrap().contains("Vitamin D"));
        assert_eq!(b["mode"], mode);
        let (_, b) = t
            .search(
                &store,
                json!({"query": "chromatin remodelling and transcription in yeast", "mode": mode}),
            )
            .await;
        assert_eq!(b["results"][0]["file_id"], other.as_str(), "{mode}: {b}");
    }
    // Filters.
    let (_, b) = t
        .search(
            &store,
            json!({"query": "vitamin", "filters": {"relative_path_prefix": "other/"}}),
        )
        .await;
    assert_eq!(b["results"], json!([]));
    let (_, b) = t
        .search(&store, json!({"query": "fractures yeast", "mode": "keyword", "filters": {"mime_types": ["text/plain"]}}))
        .await;
    let filtered = b["results"].as_array().unwrap();
    assert!(!filtered.is_empty(), "{b}");
    assert!(
        filtered.iter().all(|r| r["file_id"] == other.as_str()),
        "{b}"
    );
    // Without the filter the same query finds the Markdown file too.
    let (_, b) = t
        .search(
            &store,
            json!({"query": "fractures yeast", "mode": "keyword"}),
        )
        .await;
    assert!(
        b["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["file_id"] == id),
        "{b}"
    );

    // The log tells the story, oldest first, with real figures.
    let logs = t.logs(&store, id).await;
    let events: Vec<&str> = logs.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in [
        "uploaded",
        "queued",
        "started",
        "step_started",
        "step_completed",
        "completed",
    ] {
        assert!(events.contains(&expected), "{events:?}");
    }
    assert_eq!(events.first(), Some(&"uploaded"));
    assert_eq!(events.last(), Some(&"completed"));
    let started = logs.iter().find(|e| e["event"] == "started").unwrap();
    assert!(started["data"]["worker"].is_string());
    let chunked = logs
        .iter()
        .find(|e| e["event"] == "step_completed" && e["step"] == "chunking")
        .unwrap();
    assert_eq!(chunked["data"]["chunks"], done["chunk_count"]);
    assert!(chunked["data"]["tokens"].as_u64().unwrap() > 20);
    let extracted = logs
        .iter()
        .find(|e| e["event"] == "step_completed" && e["step"] == "extracting")
        .unwrap();
    assert!(extracted["data"]["characters"].as_u64().unwrap() > 100);
    assert!(extracted["data"]["duration_ms"].is_u64());

    // Lists and gets.
    let (_, list) = t.get(&t.files_path(&store, "?search=VITA")).await;
    assert_eq!(list["total"], 1);
    let (_, list) = t.get(&t.files_path(&store, "?status=completed")).await;
    assert_eq!(list["total"], 2);
    let (s, got) = t.get(&t.files_path(&store, &format!("/{id}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["status"], "completed");
    let (_, store_obj) = t
        .get(&t.org_path(&format!("/knowledge/stores/{store}")))
        .await;
    assert_eq!(store_obj["file_counts"]["completed"], 2);
}

#[tokio::test]
async fn retry_contract() {
    let t = TestServer::start().await;
    let store = t.store().await;
    // A whitespace-only file fails NO_TEXT_EXTRACTED, permanently.
    let failed = t.upload_ok(&store, "blank.txt", " \n\t \n").await;
    let status = t.settle(&store, &failed).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error_code"], "NO_TEXT_EXTRACTED");
    assert_eq!(status["retryable"], false);
    assert_eq!(status["current_step"], "extracting");
    assert!(
        status["error_message"]
            .as_str()
            .unwrap()
            .contains("No text")
    );

    // The seed's example: only an Authorization header.
    let url = t.url(&t.files_path(&store, &format!("/{failed}/retry")));
    let response = t
        .client
        .post(&url)
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["progress_percent"], 0);
    assert_eq!(body["current_step"], "queued");
    assert!(body["error_message"].is_null());
    assert!(body["started_at"].is_null());
    assert!(body["completed_at"].is_null());
    assert!(body["error_code"].is_null());
    let logs = t.logs(&store, &failed).await;
    let requested = logs
        .iter()
        .find(|e| e["event"] == "retry_requested")
        .unwrap();
    assert!(requested["data"]["by"].as_str().unwrap().starts_with("ak_"));
    // It fails again, for the same reason, in a second attempt.
    let again = t.settle(&store, &failed).await;
    assert_eq!(again["error_code"], "NO_TEXT_EXTRACTED");
    assert_eq!(again["attempt"], 2);

    // Unknown file, unknown store, other organization's file.
    let missing = "file_00000000000000000000";
    let (s, b) = t
        .post(
            &t.files_path(&store, &format!("/{missing}/retry")),
            json!({}),
        )
        .await;
    let error = assert_envelope(s, &b, 404, "FILE_NOT_IN_STORE");
    assert_eq!(
        error["details"],
        json!({"file_id": missing, "store_id": store})
    );
    let (s, b) = t
        .post(
            &t.org_path(&format!(
                "/stores/vs_00000000000000000000/files/{failed}/retry"
            )),
            json!({}),
        )
        .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    let (org_b, key_b) = t.new_org_with_key(Role::Admin).await;
    let (s, b, _) = t
        .call(
            Method::POST,
            &format!("/v1/organizations/{org_b}/stores/{store}/files/{failed}/retry"),
            Some(&key_b),
            None,
        )
        .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");

    // Completed: 409 unless forced.
    let done = t.upload_ok(&store, "v.txt", VITAMIN).await;
    let first = t.settle(&store, &done).await;
    assert_eq!(first["status"], "completed");
    let (s, b) = t
        .post(
            &t.files_path(&store, &format!("/{done}/retry")),
            json!({"reset_error": true}),
        )
        .await;
    let error = assert_envelope(s, &b, 409, "FILE_ALREADY_PROCESSED");
    assert_eq!(error["details"]["status"], "completed");

    // Pending: 409 and nothing changes.
    let pending = t.upload_ok(&store, "p.txt", &long_text(30)).await;
    let (s, b) = t
        .post(
            &t.files_path(&store, &format!("/{pending}/retry")),
            json!({}),
        )
        .await;
    let error = assert_envelope(s, &b, 409, "FILE_PROCESSING_IN_PROGRESS");
    assert!(matches!(
        error["details"]["status"].as_str(),
        Some("pending" | "processing")
    ));
    t.settle(&store, &pending).await;

    // Deleted: 404.
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &t.files_path(&store, &format!("/{failed}")),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = t
        .post(
            &t.files_path(&store, &format!("/{failed}/retry")),
            json!({}),
        )
        .await;
    assert_envelope(s, &b, 404, "FILE_NOT_IN_STORE");

    // A reader may not retry.
    let reader = t.key_with_role(Role::Reader).await;
    let (s, b, _) = t
        .call(
            Method::POST,
            &t.files_path(&store, &format!("/{done}/retry")),
            Some(&reader),
            None,
        )
        .await;
    assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");
}

/// The status endpoint reads the key and the file in one query; it must still answer every
/// caller as any other endpoint does, in the same order: credentials, organization, store,
/// file (every role may read a status).
#[tokio::test]
async fn the_status_endpoint_checks_keys_organizations_and_files_as_every_endpoint_does() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let file = t.upload_ok(&store, "blank.txt", " \n ").await;
    t.settle(&store, &file).await;
    let path = t.files_path(&store, &format!("/{file}/status"));
    let get = |path: String, key: Option<String>| {
        let t = &t;
        async move { t.call(Method::GET, &path, key.as_deref(), None).await }
    };

    let (s, b, _) = get(path.clone(), None).await;
    assert_envelope(s, &b, 401, "AUTHENTICATION_REQUIRED");
    let (s, b, _) = get(path.clone(), Some("garbage".into())).await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");
    let (s, b, _) = get(path.clone(), Some(format!("ak_{}", "A".repeat(40)))).await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");
    // An unknown key is refused before the file is looked at, even a missing one.
    let missing = "file_00000000000000000000";
    let missing_path = t.files_path(&store, &format!("/{missing}/status"));
    let (s, b, _) = get(missing_path.clone(), Some(format!("ak_{}", "A".repeat(40)))).await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");

    // A reader may poll it; the answer is the file's.
    let catalog = t.catalog().await;
    let created = kiln::admin::key_create(
        &catalog,
        &t.org.as_str().into(),
        Role::Reader,
        Some("poller"),
    )
    .await
    .unwrap();
    let reader = created["key"].as_str().unwrap().to_string();
    let (s, b, _) = get(path.clone(), Some(reader.clone())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["status"], &b["error_code"]),
        (&json!("failed"), &json!("NO_TEXT_EXTRACTED"))
    );
    // Revoked: refused at once.
    kiln::admin::key_revoke(&catalog, created["id"].as_str().unwrap())
        .await
        .unwrap();
    let (s, b, _) = get(path.clone(), Some(reader)).await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");

    // Another organization's key: 403 on this organization's path, and in its own
    // organization the store is not there.
    let (org_b, key_b) = t.new_org_with_key(Role::Admin).await;
    let (s, b, _) = get(path.clone(), Some(key_b.clone())).await;
    assert_envelope(s, &b, 403, "ORGANIZATION_ACCESS_DENIED");
    let (s, b, _) = get(
        format!("/v1/organizations/{org_b}/stores/{store}/files/{file}/status"),
        Some(key_b),
    )
    .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    let (s, b, _) = get(
        format!("/v1/organizations/not-an-org/stores/{store}/files/{file}/status"),
        Some(t.key.clone()),
    )
    .await;
    assert_envelope(s, &b, 404, "ORGANIZATION_NOT_FOUND");

    // A missing file and a missing store are told apart; a deleted file is gone.
    let (s, b, _) = get(missing_path, Some(t.key.clone())).await;
    let error = assert_envelope(s, &b, 404, "FILE_NOT_IN_STORE");
    assert_eq!(
        error["details"],
        json!({"file_id": missing, "store_id": store})
    );
    let (s, b, _) = get(
        t.org_path(&format!(
            "/stores/vs_00000000000000000000/files/{file}/status"
        )),
        Some(t.key.clone()),
    )
    .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &t.files_path(&store, &format!("/{file}")),
            Some(&t.key),
            None,
        )
        .await;
    assert!(s.is_success(), "{s}");
    let (s, b, _) = get(path, Some(t.key.clone())).await;
    assert_envelope(s, &b, 404, "FILE_NOT_IN_STORE");
}

#[tokio::test]
async fn sixteen_concurrent_retries_make_exactly_one_job() {
    // No workers: a retried file stays pending (a worker could fail this file again within
    // milliseconds, and a later retry would then rightly succeed too). It fails here through
    // the queue, as a worker would fail it.
    let t = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        |dir| {
            let mut config = common::config_for(dir);
            config.workers.enabled = false;
            config
        },
        axum::Router::new(),
    )
    .await;
    let store = t.store().await;
    let failed = t.upload_ok(&store, "blank.txt", "   ").await;
    let catalog = t.catalog().await;
    let lease = Duration::from_secs(60);
    let claim = || async {
        let claimed = catalog.claim("test-worker", lease).await.unwrap();
        claimed.map(|job| job.into_process().expect("a processing job"))
    };
    let job = claim().await.unwrap();
    catalog
        .fail(
            &job,
            "test-worker",
            kiln_core::types::Step::Extracting,
            kiln_core::types::FileErrorCode::NoTextExtracted,
            "No text",
            false,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(t.status(&store, &failed).await["status"], "failed");
    let url = t.url(&t.files_path(&store, &format!("/{failed}/retry")));
    let calls = (0..16).map(|_| {
        let request = t.client.post(&url).bearer_auth(&t.key);
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflict = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflict), (1, 15), "{statuses:?}");
    let logs = t.logs(&store, &failed).await;
    assert_eq!(
        logs.iter()
            .filter(|e| e["event"] == "retry_requested")
            .count(),
        1
    );
    let queued: i64 = catalog
        .job_counts()
        .await
        .unwrap()
        .iter()
        .filter(|(kind, state, _)| kind == "process" && state == "queued")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(queued, 1, "one job for the one retry that was taken");
    assert_eq!(claim().await.unwrap().file.id, failed);
    assert!(claim().await.is_none());
}

#[tokio::test]
async fn forced_reprocessing_keeps_the_file_searchable_and_never_duplicates() {
    let t = TestServer::start_with(index_probe()).await;
    let store = t.store().await;
    let id = t.upload_ok(&store, "long.txt", &long_text(40)).await;
    let first = t.settle(&store, &id).await;
    let chunks = first["chunk_count"].as_u64().unwrap();
    assert!(chunks > 1, "{first}");

    let (s, b) = t.force_retry(&store, &id).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "pending");
    // While it re-processes, search keeps finding it and never sees two copies.
    let mut observations = 0;
    loop {
        let (_, found) = t
            .search(
                &store,
                json!({"query": "vitamin D hip fractures", "mode": "keyword", "top_k": 100}),
            )
            .await;
        let results = found["results"].as_array().unwrap();
        assert!(
            !results.is_empty(),
            "a gap: the file was unsearchable during re-processing"
        );
        let mut seen: Vec<u64> = results
            .iter()
            .map(|r| r["chunk_index"].as_u64().unwrap())
            .collect();
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "duplicated chunks in results");
        observations += 1;
        let status = t.status(&store, &id).await;
        if status["status"] == "completed" && observations > 1 {
            break;
        }
        assert_ne!(status["status"], "failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = t.settle(&store, &id).await;
    assert_eq!(second["chunk_count"].as_u64().unwrap(), chunks);
    assert_eq!(second["attempt"], 2);
    // Right after the flip the previous generation is still in the index, for searches that
    // read the catalog before it.
    assert_eq!(index_chunks(&t, &id).await, 2 * chunks);
    // The old generation is gone from the index (after the pipeline's grace of 15 s, which
    // searches begun before the flip rely on).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while index_chunks(&t, &id).await != chunks {
        assert!(std::time::Instant::now() < deadline, "stale chunks remain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_uploads_get_clear_envelopes_and_leave_nothing_behind() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let (s, b) = t.upload(&store, "empty.txt", Vec::new(), None).await;
    let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    assert_eq!(error["details"]["fields"][0]["field"], "file");

    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (s, b) = t.upload(&store, "notes.txt", garbage, None).await;
    let error = assert_envelope(s, &b, 415, "UNSUPPORTED_FILE_TYPE");
    assert!(
        error["details"]["supported_types"]
            .as_array()
            .unwrap()
            .len()
            > 5
    );

    let (s, b) = t
        .upload(
            &store,
            "letter.rtf",
            b"{\\rtf1\\ansi Dear reader}".to_vec(),
            None,
        )
        .await;
    let error = assert_envelope(s, &b, 415, "UNSUPPORTED_FILE_TYPE");
    assert!(error.to_string().contains("RTF"), "{error}");
    let (s, b) = t
        .upload(
            &store,
            "old.doc",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1rest".to_vec(),
            None,
        )
        .await;
    assert_envelope(s, &b, 415, "UNSUPPORTED_FILE_TYPE");

    let (s, b) = t
        .upload(&store, "big.txt", vec![b'a'; 10 * 1024 * 1024 + 1], None)
        .await;
    let error = assert_envelope(s, &b, 413, "FILE_TOO_LARGE");
    assert!(
        error["system_message"]
            .as_str()
            .unwrap()
            .contains("upload-url")
    );

    for bad in ["../../etc", "/abs/path", "a\\b", "x/../../y"] {
        let (s, b) = t
            .upload(&store, "ok.txt", b"hello".to_vec(), Some(bad))
            .await;
        let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
        assert_eq!(
            error["details"]["fields"][0]["field"], "relative_path",
            "{bad}"
        );
    }

    // A multipart body without `file`.
    let form = reqwest::multipart::Form::new().text("relative_path", "x");
    let response = t
        .client
        .post(t.url(&t.files_path(&store, "/upload")))
        .bearer_auth(&t.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let s = response.status();
    let b: Value = response.json().await.unwrap();
    let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    assert_eq!(error["details"]["fields"][0]["field"], "file");

    // Not multipart at all.
    let (s, b) = t
        .post(&t.files_path(&store, "/upload"), json!({"file": "x"}))
        .await;
    assert_envelope(s, &b, 400, "INVALID_REQUEST");

    // Unknown store; reader role.
    let (s, b) = t
        .upload("vs_00000000000000000000", "a.txt", b"hi".to_vec(), None)
        .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");

    // Nothing was kept: no file rows, no blobs.
    let (_, list) = t.get(&t.files_path(&store, "")).await;
    assert_eq!(list["total"], 0, "{list}");
    let blobs = t.server.blobs.clone();
    let org_prefix = object_store_path(&format!("orgs/{}", t.org));
    assert!(blobs.list(&org_prefix).await.unwrap().is_empty());
}

fn object_store_path(p: &str) -> kiln_blobs::BlobPath {
    kiln_blobs::BlobPath::from(p)
}

#[tokio::test]
async fn delete_during_processing_purges_everything_and_usage_drops_back() {
    let t = TestServer::start_with(index_probe()).await;
    let store = t.store().await;
    let keep = t.upload_ok(&store, "keep.txt", YEAST).await;
    t.settle(&store, &keep).await;
    let usage_path = t.org_path(&format!("/stores/{store}/usage"));
    let (_, before) = t.get(&usage_path).await;

    let id = t.upload_ok(&store, "big.txt", &long_text(150)).await;
    // Wait until it is being processed, then delete it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = t.status(&store, &id).await;
        if status["status"] == "processing" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &t.files_path(&store, &format!("/{id}")),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Gone at once.
    let (s, b) = t.get(&t.files_path(&store, &format!("/{id}"))).await;
    assert_envelope(s, &b, 404, "FILE_NOT_IN_STORE");
    let (_, now) = t.get(&usage_path).await;
    assert_eq!(now, before, "usage drops at once");
    // Purged in the background: no chunk, vector or blob remains.
    let blobs = t.server.blobs.clone();
    let prefix = kiln_blobs::Folder::store_file(&t.org, &store, &id);
    let prefix = prefix.path();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let catalog = t.catalog().await;
    loop {
        // In this node's index, and (a cluster) in the catalog's durable copy of the chunks.
        let chunks = index_chunks(&t, &id).await + catalog.index_chunk_count(&id).await.unwrap();
        let left = blobs.list(prefix).await.unwrap();
        let jobs = catalog.job_counts().await.unwrap();
        let jobs_done = jobs
            .iter()
            .all(|(_, state, n)| !matches!(state.as_str(), "queued" | "running") || *n == 0);
        if chunks == 0 && left.is_empty() && jobs_done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not purged: {chunks} chunks, {left:?}, jobs {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mode in ["keyword", "semantic", "hybrid"] {
        let (_, found) = t
            .search(
                &store,
                json!({"query": "vitamin fractures paragraph", "mode": mode, "top_k": 100}),
            )
            .await;
        assert!(
            found["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["file_id"] != id.as_str())
        );
    }
    let (_, after) = t.get(&usage_path).await;
    assert_eq!(after, before);
    // The kept file is intact.
    assert_eq!(t.status(&store, &keep).await["status"], "completed");
}

#[tokio::test]
async fn usage_is_the_sum_over_files_to_the_byte() {
    let t = TestServer::start_with(index_probe()).await;
    let store = t.store().await;
    let a = t.upload_ok(&store, "a.txt", VITAMIN).await;
    let b = t.upload_ok(&store, "b.md", &long_text(12)).await;
    let c = t.upload_ok(&store, "c.txt", "  ").await;
    let d = t
        .upload_ok(&store, "d.csv", "name,team\nAda,Core\nLin,API\n")
        .await;
    for f in [&a, &b, &c, &d] {
        t.settle(&store, f).await;
    }
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &t.files_path(&store, &format!("/{d}")),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (_, files) = t.get(&t.files_path(&store, "?limit=100")).await;
    let items = files["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let sum = |field: &str| {
        items
            .iter()
            .map(|f| f[field].as_i64().unwrap())
            .sum::<i64>()
    };
    let (_, usage) = t.get(&t.org_path(&format!("/stores/{store}/usage"))).await;
    assert_eq!(usage["store_id"], store.as_str());
    assert_eq!(usage["file_count"], 3);
    assert_eq!(
        usage["file_counts"],
        json!({"pending": 0, "processing": 0, "completed": 2, "failed": 1, "total": 3})
    );
    assert_eq!(usage["original_bytes"], sum("file_size"));
    assert_eq!(
        usage["original_bytes"],
        (VITAMIN.len() + long_text(12).len() + 2) as i64
    );
    assert_eq!(usage["chunk_count"], sum("chunk_count"));
    assert_eq!(usage["vector_bytes"], sum("chunk_count") * 384 * 4);
    let chunk_total = index_chunks(&t, &a).await + index_chunks(&t, &b).await;
    assert_eq!(usage["chunk_count"].as_u64().unwrap(), chunk_total);
    // Extracted text is stored and counted exactly.
    let blobs = t.server.blobs.clone();
    let mut text_bytes = 0;
    for f in [&a, &b] {
        let path = kiln_blobs::Folder::store_file(&t.org, &store, f).text();
        text_bytes += blobs.get(&path).await.unwrap().len() as i64;
    }
    assert_eq!(usage["extracted_text_bytes"], text_bytes);
    let total = usage["original_bytes"].as_i64().unwrap()
        + usage["extracted_text_bytes"].as_i64().unwrap()
        + usage["vector_bytes"].as_i64().unwrap()
        + usage["index_bytes"].as_i64().unwrap();
    assert_eq!(usage["total_bytes"], total);
    assert!(usage["index_bytes"].as_i64().unwrap() > 0);

    let (s, org) = t.get(&t.org_path("/knowledge/usage")).await;
    assert_eq!(s, StatusCode::OK, "{org}");
    assert_eq!(org["original_bytes"], usage["original_bytes"]);
    assert_eq!(org["stores"][0]["store_id"], store.as_str());
    assert_eq!(org["stores"][0]["name"], "docs");
    assert_eq!(org["stores"][0]["chunk_count"], usage["chunk_count"]);
}

#[tokio::test]
async fn file_config_and_chunking() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let (s, config) = t.get(&t.files_path(&store, "/config")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(config["max_direct_upload_bytes"], 32_505_856);
    assert_eq!(config["embedding_model"], "all-MiniLM-L6-v2@int8");
    assert_eq!(config["embedding_dimensions"], 384);
    assert_eq!(
        config["chunking"],
        json!({"max_chunk_tokens": 800, "chunk_overlap_tokens": 400})
    );
    let types = config["supported_types"].as_array().unwrap();
    let txt = types.iter().find(|t| t["extension"] == "txt").unwrap();
    assert_eq!(txt["max_size_bytes"], 10 * 1024 * 1024);
    assert!(types.iter().any(|t| t["extension"] == "html"));
    for (extension, mime) in [
        ("pdf", "application/pdf"),
        (
            "docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    ] {
        let entry = types.iter().find(|t| t["extension"] == extension).unwrap();
        assert_eq!(entry["mime_type"], mime);
        assert_eq!(entry["max_size_bytes"], 50 * 1024 * 1024);
    }

    let path = t.files_path(&store, "/config");
    for bad in [
        json!({"chunking": {"max_chunk_tokens": 99}}),
        json!({"chunking": {"max_chunk_tokens": 4097}}),
        json!({"chunking": {"max_chunk_tokens": 200, "chunk_overlap_tokens": 101}}),
    ] {
        let (s, b, _) = t.call(Method::PATCH, &path, Some(&t.key), Some(bad)).await;
        assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    }
    let set_max_tokens = |max: u32| {
        let body = json!({"chunking": {"max_chunk_tokens": max, "chunk_overlap_tokens": 0}});
        t.call(Method::PATCH, &path, Some(&t.key), Some(body))
    };
    let (s, b, _) = set_max_tokens(100).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["chunking"]["max_chunk_tokens"], 100);
    let editor = t.key_with_role(Role::Editor).await;
    let (s, b, _) = t
        .call(Method::PATCH, &path, Some(&editor), Some(json!({})))
        .await;
    assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");

    // Files processed afterwards use it: small chunks, each within 100 model tokens.
    let id = t.upload_ok(&store, "long.txt", &long_text(10)).await;
    let done = t.settle(&store, &id).await;
    assert!(done["chunk_count"].as_i64().unwrap() >= 10, "{done}");
    let logs = t.logs(&store, &id).await;
    let chunked = logs
        .iter()
        .find(|e| e["event"] == "step_completed" && e["step"] == "chunking")
        .unwrap();
    assert_eq!(chunked["data"]["max_chunk_tokens"], 100);

    // A new chunking config and a forced re-process: re-chunked from the stored text, which
    // is not extracted again.
    let small = done["chunk_count"].as_i64().unwrap();
    let usage_path = t.org_path(&format!("/stores/{store}/usage"));
    let (_, before) = t.get(&usage_path).await;
    assert!(
        before["extracted_text_bytes"].as_i64().unwrap() > 0,
        "{before}"
    );
    let (s, b, _) = set_max_tokens(400).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = t.force_retry(&store, &id).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let again = t.settle(&store, &id).await;
    assert_eq!(again["attempt"], 2, "{again}");
    assert!(again["chunk_count"].as_i64().unwrap() < small, "{again}");
    let logs = t.logs(&store, &id).await;
    let extractions: Vec<&Value> = logs
        .iter()
        .filter(|e| e["event"] == "step_completed" && e["step"] == "extracting")
        .collect();
    assert_eq!(extractions.len(), 2);
    assert_eq!(
        extractions[0]["data"]["format"], "text",
        "{:?}",
        extractions[0]
    );
    assert_eq!(extractions[0]["data"]["reused"], false);
    assert_eq!(
        extractions[1]["data"]["reused"], true,
        "{:?}",
        extractions[1]
    );
    assert_eq!(
        extractions[1]["data"]["characters"],
        extractions[0]["data"]["characters"]
    );
    let (_, after) = t.get(&usage_path).await;
    assert_eq!(
        after["extracted_text_bytes"], before["extracted_text_bytes"],
        "the same stored text: {after}"
    );
}

/// The best semantic score of `query` in `store`, and the file it came from.
async fn best_semantic(t: &TestServer, store: &str, query: &str) -> (f64, String) {
    let (s, b) = t
        .search(store, json!({"query": query, "mode": "semantic"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let first = &b["results"][0];
    (
        first["score"].as_f64().expect("a result"),
        first["file_id"].as_str().unwrap().to_string(),
    )
}

/// Each file records the model and precision its vectors were made with; a server started
/// with another precision re-embeds every completed file through a new generation (the old
/// one searchable until the flip), and a restart with the same model queues nothing.
#[tokio::test]
async fn a_new_embedding_precision_reembeds_completed_files_through_generations() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let id = t.upload_ok(&store, "vitamin.txt", VITAMIN).await;
    let done = t.settle(&store, &id).await;
    assert_eq!(done["embedding_model"], "all-MiniLM-L6-v2@int8", "{done}");
    let failed = t.upload(&store, "empty.txt", b"   ".to_vec(), None).await.1;
    let failed = failed["id"].as_str().unwrap().to_string();
    assert_eq!(t.settle(&store, &failed).await["status"], "failed");

    // The same server, now with f32 vectors.
    let mut config = common::config_for(t.dir.path());
    config.embedding.precision = kiln_core::config::Precision::F32;
    let f32_model = kiln::server::load_model(&config).await.unwrap();
    let t = t.restart_with(f32_model.clone(), config.clone()).await;
    // Queued at start, before any worker ran: pending (or already further along).
    let status = t.status(&store, &id).await;
    assert_ne!(status["status"], "failed", "{status}");
    // Searchable all along: before the flip through the int8 generation, after it the f32 one.
    let (_, found) = best_semantic(&t, &store, VITAMIN).await;
    assert_eq!(found, id);
    let again = t.settle(&store, &id).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["embedding_model"], "all-MiniLM-L6-v2", "{again}");
    assert_eq!(again["chunk_count"], done["chunk_count"]);
    assert_eq!(again["attempt"], 2);
    let logs = t.logs(&store, &id).await;
    let asked: Vec<&Value> = logs
        .iter()
        .filter(|l| l["event"] == "reembed_requested")
        .collect();
    assert_eq!(asked.len(), 1, "{logs:?}");
    assert_eq!(asked[0]["data"]["from"], "all-MiniLM-L6-v2@int8");
    assert_eq!(asked[0]["data"]["to"], "all-MiniLM-L6-v2");
    let completed: Vec<&Value> = logs.iter().filter(|l| l["event"] == "completed").collect();
    assert_eq!(
        completed.last().unwrap()["data"]["generation"],
        2,
        "{logs:?}"
    );
    // The text is the one extracted before, not parsed again.
    assert!(
        logs.iter()
            .any(|l| l["event"] == "step_completed" && l["data"]["reused"] == true),
        "{logs:?}"
    );
    // The stored vector is the f32 model's now: the text's own f32 embedding matches it
    // exactly (the int8 one is ≈ 0.995 from it).
    let (score, _) = best_semantic(&t, &store, VITAMIN).await;
    assert!(score > 0.9999, "{score}");
    // A failed file is not the re-embedding's to retry.
    assert_eq!(t.status(&store, &failed).await["status"], "failed");

    // Started again with the same model: nothing is queued.
    let t = t.restart_with(f32_model, config).await;
    let status = t.status(&store, &id).await;
    assert_eq!(status["status"], "completed", "{status}");
    let logs = t.logs(&store, &id).await;
    let asked = logs.iter().filter(|l| l["event"] == "reembed_requested");
    assert_eq!(asked.count(), 1);
    // The int8 generation, kept for the pipeline's grace after the flip, went at the shutdown
    // before this start: the index holds the f32 chunks only.
    let chunks = again["chunk_count"].as_u64().unwrap() as usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.server.index.count_file(&id).unwrap() != chunks {
        assert!(
            std::time::Instant::now() < deadline,
            "the superseded generation outlived the shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
