//! Uploads through a signed URL (contract §5): `upload-url`, `PUT` whole or in
//! `Content-Range` pieces (308 with `Range` until complete, then 200), resuming after a
//! dropped connection, `register`, and every refusal on the way.

mod common;

use std::time::Duration;

use common::{TestServer, assert_envelope};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A text of about `n` bytes whose every line is distinct.
fn text_of(n: usize) -> Vec<u8> {
    let mut text = String::from("Signed uploads carry the tale of the amber lighthouse keeper.\n");
    let mut i = 0;
    while text.len() < n {
        text.push_str(&format!(
            "Line {i}: the keeper logged vessel {} passing the reef at hour {}.\n",
            i * 17 % 1000,
            i % 24
        ));
        i += 1;
    }
    text.truncate(n);
    text.into_bytes()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A client that shows 308s instead of following them.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn put(url: &str, body: Vec<u8>, range: Option<&str>) -> (StatusCode, Value, HeaderMap) {
    let mut request = raw_client().put(url).body(body);
    if let Some(range) = range {
        request = request.header("content-range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

fn range_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("range")
        .map(|v| v.to_str().unwrap().to_string())
}

async fn upload_url(t: &TestServer, store: &str, body: Value) -> (StatusCode, Value) {
    t.post(&t.files_path(store, "/upload-url"), body).await
}

async fn start_upload(t: &TestServer, store: &str, name: &str, bytes: &[u8]) -> Value {
    let (status, body) = upload_url(
        t,
        store,
        json!({"file_name": name, "file_size": bytes.len(), "mime_type": "text/plain",
               "relative_path": "big/./uploads/", "sha256": sha256(bytes)}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn pieces_resend_and_register_make_a_searchable_file() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let bytes = text_of(48_000);
    let total = bytes.len();
    let started = start_upload(&t, &store, "lighthouse.txt", &bytes).await;
    let id = started["upload_id"].as_str().unwrap();
    assert!(id.starts_with("file_") && id.len() == 25, "{started}");
    assert_eq!(started["method"], "PUT");
    assert_eq!(started["max_file_size"], 10 * 1024 * 1024);
    assert_eq!(started["chunk_size_recommended"], 8 * 1024 * 1024);
    assert!(started["expires_at"].as_str().unwrap().ends_with('Z'));
    let url = started["upload_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&t.url(&format!("/v1/uploads/{id}?"))),
        "{url}"
    );
    assert!(url.contains("signature="), "{url}");

    // First piece, with no API key at all: 308 and the range that arrived.
    let (status, body, headers) = put(
        &url,
        bytes[..16_000].to_vec(),
        Some(&format!("bytes 0-15999/{total}")),
    )
    .await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "{body}");
    assert_eq!(range_header(&headers).as_deref(), Some("bytes=0-15999"));
    assert_eq!(body["received_bytes"], 16_000);
    assert_eq!(body["complete"], false);

    // Registering now is refused: bytes are missing.
    let (status, body) = t
        .post(&t.files_path(&store, "/register"), json!({"upload_id": id}))
        .await;
    let error = assert_envelope(status, &body, 409, "UPLOAD_INCOMPLETE");
    assert_eq!(error["details"]["received_bytes"], 16_000);
    assert_eq!(error["details"]["file_size"], total);

    // A piece after a gap is refused and names where to continue.
    let (status, body, _) = put(
        &url,
        bytes[32_000..40_000].to_vec(),
        Some(&format!("bytes 32000-39999/{total}")),
    )
    .await;
    let error = assert_envelope(status, &body, 409, "CONFLICT");
    assert_eq!(error["details"]["received_bytes"], 16_000);

    // A resend that overlaps what arrived keeps only the new bytes.
    let (status, _, headers) = put(
        &url,
        bytes[8_000..24_000].to_vec(),
        Some(&format!("bytes 8000-23999/{total}")),
    )
    .await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(range_header(&headers).as_deref(), Some("bytes=0-23999"));

    // Asking for the state changes nothing.
    let (status, body, headers) = put(&url, Vec::new(), Some(&format!("bytes */{total}"))).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(range_header(&headers).as_deref(), Some("bytes=0-23999"));
    assert_eq!(body["received_bytes"], 24_000);

    // The rest: 200.
    let (status, body, _) = put(
        &url,
        bytes[24_000..].to_vec(),
        Some(&format!("bytes 24000-{}/{total}", total - 1)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["complete"], true);
    assert_eq!(body["received_bytes"], total);

    let (status, file) = t
        .post(&t.files_path(&store, "/register"), json!({"upload_id": id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(file["id"], id);
    assert_eq!(file["status"], "pending");
    assert_eq!(file["file_size"], total);
    assert_eq!(file["file_name"], "lighthouse.txt");
    assert_eq!(file["relative_path"], "big/uploads");
    let done = t.settle(&store, id).await;
    assert_eq!(done["status"], "completed", "{done}");

    // The file holds exactly the bytes sent, and its text is searchable.
    let (_, got) = t.get(&t.files_path(&store, &format!("/{id}"))).await;
    assert_eq!(got["sha256"], sha256(&bytes), "{got}");
    let (_, found) = t
        .search(
            &store,
            json!({"query": "amber lighthouse keeper", "mode": "keyword", "max_results": 3}),
        )
        .await;
    assert_eq!(found["results"][0]["file_id"], id, "{found}");
    let (_, usage) = t.get(&t.org_path(&format!("/stores/{store}/usage"))).await;
    assert_eq!(usage["original_bytes"], total, "{usage}");

    // The parts are gone; the upload is over: a second register or PUT finds nothing.
    let parts = kiln_blobs::Folder::store_file(&t.org, &store, id).parts();
    let left = t.server.blobs.list(&parts).await.unwrap();
    assert!(left.is_empty(), "parts left: {left:?}");
    let (status, body) = t
        .post(&t.files_path(&store, "/register"), json!({"upload_id": id}))
        .await;
    assert_envelope(status, &body, 404, "UPLOAD_NOT_FOUND");
    let (status, body, _) = put(
        &url,
        bytes[..10].to_vec(),
        Some(&format!("bytes 0-9/{total}")),
    )
    .await;
    assert_envelope(status, &body, 404, "UPLOAD_NOT_FOUND");
}

#[tokio::test]
async fn whole_put_bad_bytes_and_refusals() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let bytes = text_of(20_000);
    let total = bytes.len();

    // Validation of the announcement.
    let cases = [
        (
            json!({"file_name": "a.txt", "file_size": 0, "mime_type": "text/plain"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"file_size": 5, "mime_type": "text/plain"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"file_name": "a.txt", "file_size": 5, "mime_type": "text/plain", "relative_path": "../x"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"file_name": "a.txt", "file_size": 5, "mime_type": "text/plain", "sha256": "xyz"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"file_name": "a.exe", "file_size": 5, "mime_type": "application/octet-stream"}),
            415,
            "UNSUPPORTED_FILE_TYPE",
        ),
        (
            json!({"file_name": "a.txt", "file_size": 10 * 1024 * 1024 + 1, "mime_type": "text/plain"}),
            413,
            "FILE_TOO_LARGE",
        ),
    ];
    for (request, code, name) in cases {
        let (status, body) = upload_url(&t, &store, request.clone()).await;
        assert_envelope(status, &body, code, name);
    }
    let (status, body) = upload_url(
        &t,
        "vs_aaaaaaaaaaaaaaaaaaaa",
        json!({"file_name": "a.txt", "file_size": 5, "mime_type": "text/plain"}),
    )
    .await;
    assert_envelope(status, &body, 404, "VECTOR_STORE_NOT_FOUND");
    let reader = t.key_with_role(kiln_core::types::Role::Reader).await;
    let (status, body, _) = t
        .call(
            reqwest::Method::POST,
            &t.files_path(&store, "/upload-url"),
            Some(&reader),
            Some(json!({"file_name": "a.txt", "file_size": 5, "mime_type": "text/plain"})),
        )
        .await;
    assert_envelope(status, &body, 403, "INSUFFICIENT_PERMISSIONS");

    let started = start_upload(&t, &store, "whole.md", &bytes).await;
    let id = started["upload_id"].as_str().unwrap().to_string();
    let url = started["upload_url"].as_str().unwrap().to_string();

    // The URL is the permission: without or with a wrong signature nothing is accepted.
    let unsigned = url.split('?').next().unwrap().to_string();
    let (status, body, _) = put(&unsigned, bytes.clone(), None).await;
    assert_envelope(status, &body, 401, "AUTHENTICATION_REQUIRED");
    let mut forged = url.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (status, body, _) = put(&forged, bytes.clone(), None).await;
    assert_envelope(status, &body, 403, "INSUFFICIENT_PERMISSIONS");
    let later = url.replace("expires=", "expires=9");
    let (status, body, _) = put(&later, bytes.clone(), None).await;
    assert_envelope(status, &body, 403, "INSUFFICIENT_PERMISSIONS");

    // A PUT past the declared size: refused, nothing kept.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"one byte too many");
    let (status, body, _) = put(&url, longer, None).await;
    assert_envelope(status, &body, 413, "FILE_TOO_LARGE");
    let (status, body, _) = put(
        &url,
        bytes[..10].to_vec(),
        Some(&format!("bytes {}-{}/{total}", total - 5, total + 4)),
    )
    .await;
    assert_envelope(status, &body, 413, "FILE_TOO_LARGE");
    let (status, body, _) = put(&url, bytes[..10].to_vec(), Some("bytes 0-9/999999")).await;
    assert_envelope(status, &body, 413, "FILE_TOO_LARGE");
    let (status, body, headers) = put(&url, Vec::new(), Some(&format!("bytes */{total}"))).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(body["received_bytes"], 0);
    assert_eq!(range_header(&headers), None);
    let (status, body, _) = put(&url, bytes[..10].to_vec(), Some("bytes=0-9")).await;
    assert_envelope(status, &body, 400, "INVALID_REQUEST");

    // Wrong bytes of the right size: register refuses them and drops them...
    let mut wrong = bytes.clone();
    wrong[100] ^= 0x20;
    let (status, _, _) = put(&url, wrong, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = t
        .post(&t.files_path(&store, "/register"), json!({"upload_id": id}))
        .await;
    let error = assert_envelope(status, &body, 409, "UPLOAD_INCOMPLETE");
    assert_eq!(error["details"]["expected_sha256"], sha256(&bytes));
    // ...so the same URL takes the right ones, whole, and register succeeds.
    let (status, body, _) = put(&url, bytes.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, file) = t
        .post(
            &t.files_path(&store, "/register"),
            json!({"upload_id": id, "relative_path": "notes"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(file["relative_path"], "notes");
    assert_eq!(file["mime_type"], "text/markdown");
    assert_eq!(t.settle(&store, &id).await["status"], "completed");

    // Registering an unknown upload, or one of another store: 404 with details.
    let (status, body) = t
        .post(
            &t.files_path(&store, "/register"),
            json!({"upload_id": "file_aaaaaaaaaaaaaaaaaaaa"}),
        )
        .await;
    let error = assert_envelope(status, &body, 404, "UPLOAD_NOT_FOUND");
    assert_eq!(error["details"]["upload_id"], "file_aaaaaaaaaaaaaaaaaaaa");
    let other_store = t.store().await;
    let elsewhere = start_upload(&t, &other_store, "x.txt", &bytes).await;
    let (status, body) = t
        .post(
            &t.files_path(&store, "/register"),
            json!({"upload_id": elsewhere["upload_id"]}),
        )
        .await;
    assert_envelope(status, &body, 404, "UPLOAD_NOT_FOUND");

    // Binary content announced as text: refused at register, and the upload is over.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (_, started) = upload_url(
        &t,
        &store,
        json!({"file_name": "garbage.txt", "file_size": garbage.len(), "mime_type": "text/plain"}),
    )
    .await;
    let url = started["upload_url"].as_str().unwrap();
    assert_eq!(put(url, garbage, None).await.0, StatusCode::OK);
    let (status, body) = t
        .post(
            &t.files_path(&store, "/register"),
            json!({"upload_id": started["upload_id"]}),
        )
        .await;
    assert_envelope(status, &body, 415, "UNSUPPORTED_FILE_TYPE");
    let (status, body) = t
        .post(
            &t.files_path(&store, "/register"),
            json!({"upload_id": started["upload_id"]}),
        )
        .await;
    assert_envelope(status, &body, 404, "UPLOAD_NOT_FOUND");
}

#[tokio::test]
async fn an_expired_url_is_refused() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let bytes = text_of(1_000);
    let started = start_upload(&t, &store, "late.txt", &bytes).await;
    let id = started["upload_id"].as_str().unwrap();
    // A correctly signed URL whose time is up.
    let secret = t.catalog().await.server_secret("upload_url").await.unwrap();
    let expires = 1_000_000_000;
    let signature = kiln_api::UploadSigner::new(&secret).sign(id, expires);
    let url = t.url(&format!(
        "/v1/uploads/{id}?expires={expires}&signature={signature}"
    ));
    let (status, body, _) = put(&url, bytes.clone(), None).await;
    assert_envelope(status, &body, 404, "UPLOAD_NOT_FOUND");
    // The real URL still works.
    let (status, _, _) = put(started["upload_url"].as_str().unwrap(), bytes, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_dropped_connection_keeps_what_arrived_and_the_upload_resumes() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let bytes = text_of(40_000);
    let total = bytes.len();
    let started = start_upload(&t, &store, "resume.txt", &bytes).await;
    let id = started["upload_id"].as_str().unwrap();
    let url = started["upload_url"].as_str().unwrap().to_string();

    // Send 16 KiB, then break the connection before the rest.
    let first = bytes[..16_384].to_vec();
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(first),
        Err(std::io::Error::other("cable pulled")),
    ])
    .then(|item| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        item
    });
    let sent = raw_client()
        .put(&url)
        .header("content-length", total.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(sent.is_err(), "the request must break: {sent:?}");

    // The server keeps the 16 KiB that arrived (it notices the break asynchronously).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        let (status, body, _) = put(&url, Vec::new(), Some(&format!("bytes */{total}"))).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "{body}");
        let held = body["received_bytes"].as_u64().unwrap() as usize;
        if held > 0 || std::time::Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(held, 16_384, "the bytes before the break are kept");

    // Resume from there; the file is exactly the original.
    let (status, body, _) = put(
        &url,
        bytes[held..].to_vec(),
        Some(&format!("bytes {held}-{}/{total}", total - 1)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, file) = t
        .post(&t.files_path(&store, "/register"), json!({"upload_id": id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(file["sha256"], sha256(&bytes));
    assert_eq!(t.settle(&store, id).await["status"], "completed");
}

use futures::StreamExt as _;

#[tokio::test]
async fn the_reaper_removes_uploads_a_minute_after_they_expire() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let catalog = t.catalog().await;
    let expired_at = |secs_ago: i64| {
        kiln_core::Timestamp(kiln_core::Timestamp::now().millis() - secs_ago * 1000)
    };
    let new = |secs_ago: i64, store_id: &str| kiln_catalog::NewUpload {
        id: kiln_core::FileId::generate(),
        organization_id: t.org.as_str().into(),
        store_id: store_id.to_string(),
        file_name: "late.txt".into(),
        relative_path: None,
        mime_type: "text/plain".into(),
        file_size: 10,
        sha256: None,
        created_by: "ak_test".into(),
        expires_at: expired_at(secs_ago),
    };
    // Creating reads the row back, which an expired upload no longer shows: the row is there.
    // An organization upload (no store) keeps its parts in the organization's folder.
    let (old, recent, org_old) = (new(120, &store), new(10, &store), new(120, ""));
    for upload in [&old, &recent, &org_old] {
        let _ = catalog.create_upload(upload.clone()).await;
    }
    let blobs = &t.server.blobs;
    let stores: std::collections::HashMap<String, String> = [&old, &recent, &org_old]
        .iter()
        .map(|u| (u.id.to_string(), u.store_id.clone()))
        .collect();
    let folder = |id: &str| kiln_blobs::Folder::upload(&t.org, &stores[id], id).parts();
    let exists =
        |id: kiln_core::FileId| async move { !blobs.list(&folder(&id)).await.unwrap().is_empty() };
    for id in [&old.id, &recent.id, &org_old.id] {
        blobs
            .put(
                &folder(id).join("0000000000000000-x"),
                kiln_blobs::Bytes::from_static(b"0123456789"),
            )
            .await
            .unwrap();
    }
    let listed = |secs_ago: i64| {
        let catalog = catalog.clone();
        async move {
            catalog
                .expired_uploads(expired_at(secs_ago), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<_>>()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while exists(old.id.clone()).await
        || exists(org_old.id.clone()).await
        || listed(100).await.contains(&old.id)
        || listed(100).await.contains(&org_old.id)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old upload was never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Expired only ten seconds ago: kept for now (a register may still be finishing).
    assert!(exists(recent.id.clone()).await);
    assert!(listed(0).await.contains(&recent.id));
}

/// The declared name and type admit 50 MiB (a workbook), but the bytes are 10 MiB + 1 of plain
/// text: register reads the content, refuses the original as not what its name says (so no
/// file passes under a larger type's limit) and keeps nothing (a second register finds no
/// upload).
#[tokio::test]
async fn register_refuses_content_unlike_its_name_and_discards_it() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let bytes = text_of(10 * 1024 * 1024 + 1);
    let (status, started) = upload_url(
        &t,
        &store,
        json!({"file_name": "ledger.xlsx", "file_size": bytes.len(),
               "mime_type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["max_file_size"], 50 * 1024 * 1024);
    let id = started["upload_id"].as_str().unwrap();
    let (status, body, _) = put(started["upload_url"].as_str().unwrap(), bytes, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let register = t.files_path(&store, "/register");
    let (status, body) = t.post(&register, json!({"upload_id": id})).await;
    assert_envelope(status, &body, 415, "UNSUPPORTED_FILE_TYPE");
    let (status, body) = t.post(&register, json!({"upload_id": id})).await;
    assert_eq!(
        status.as_u16(),
        404,
        "the refused upload is discarded: {body}"
    );
    let (_, files) = t.get(&t.files_path(&store, "")).await;
    assert_eq!(files["total"], 0, "{files}");
}
