//! The vector-stores family beside the knowledge family: re-sent requests create nothing twice
//! (`Idempotency-Key`; adds idempotent per store and file), and one organization file in
//! stores of both families keeps its original until its last store lets it go. (The official
//! client's own run through every endpoint is `tests/sdk.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const TEXT: &str = "Glaciers carve U-shaped valleys as they flow, scraping the bedrock with the \
                    stones frozen into their base.\n";

impl TestServer {
    async fn org_upload(
        &self,
        name: &str,
        bytes: &[u8],
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value, bool) {
        let form = reqwest::multipart::Form::new().part(
            "files",
            reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
        );
        let mut request = self
            .client
            .post(self.url(&self.org_path("/files/upload")))
            .header("x-api-key", &self.key)
            .multipart(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        (status, response.json().await.unwrap(), replayed)
    }

    async fn vector_store(&self, name: &str) -> String {
        let (status, body) = self
            .post(&self.org_path("/vector-stores"), json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["id"].as_str().unwrap().to_string()
    }

    async fn process_jobs(&self) -> i64 {
        let catalog = self.catalog().await;
        catalog
            .job_counts()
            .await
            .unwrap()
            .iter()
            .filter(|(kind, _, _)| kind == "process")
            .map(|(_, _, n)| n)
            .sum()
    }
}

#[tokio::test]
async fn a_resent_upload_with_the_same_idempotency_key_creates_one_file() {
    let t = TestServer::start().await;
    let (s1, first, replayed1) = t
        .org_upload("a.txt", TEXT.as_bytes(), Some("upload-1"))
        .await;
    let (s2, second, replayed2) = t
        .org_upload("a.txt", TEXT.as_bytes(), Some("upload-1"))
        .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{first} {second}"
    );
    assert!(!replayed1 && replayed2);
    assert_eq!(first, second, "the re-send gets the first answer");
    let (_, list) = t.get(&t.org_path("/files")).await;
    assert_eq!(list["total"], 1, "{list}");
    // Without a key, a re-send is a new file (the README says so).
    t.org_upload("a.txt", TEXT.as_bytes(), None).await;
    let (_, list) = t.get(&t.org_path("/files")).await;
    assert_eq!(list["total"], 2, "{list}");
    // The same key on another route is refused, naming the request it was used for.
    let store = t.vector_store("s").await;
    let (status, body, _) = t
        .call_with_key(
            reqwest::Method::POST,
            &t.org_path(&format!("/vector-stores/{store}/files")),
            json!({ "file_id": first["files"][0]["id"] }),
            "upload-1",
        )
        .await;
    common::assert_envelope(status, &body, 422, "IDEMPOTENCY_KEY_MISMATCH");
    // Another caller's identical key is its own.
    let other = t.key_with_role(kiln_core::types::Role::Editor).await;
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(TEXT.as_bytes().to_vec()).file_name("b.txt"),
    );
    let response = t
        .client
        .post(t.url(&t.org_path("/files/upload")))
        .header("x-api-key", &other)
        .header("Idempotency-Key", "upload-1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let (_, list) = t.get(&t.org_path("/files")).await;
    assert_eq!(list["total"], 3, "{list}");
}

impl TestServer {
    async fn call_with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        idempotency_key: &str,
    ) -> (StatusCode, Value, bool) {
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            replayed,
        )
    }
}

#[tokio::test]
async fn sixteen_concurrent_adds_of_one_file_leave_one_link_and_one_job() {
    let t = TestServer::start().await;
    let (_, uploaded, _) = t.org_upload("g.txt", TEXT.as_bytes(), None).await;
    let file_id = uploaded["files"][0]["id"].as_str().unwrap().to_string();
    let store = t.vector_store("glaciers").await;
    let before = t.process_jobs().await;
    let path = t.org_path(&format!("/vector-stores/{store}/files"));
    let adds = (0..16).map(|_| t.post(&path, json!({ "file_id": file_id })));
    let answers = futures::future::join_all(adds).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let existing = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((created, existing), (1, 15), "{answers:?}");
    let links: std::collections::HashSet<&str> = answers
        .iter()
        .map(|(_, b)| b["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(links.iter().all(|l| l.starts_with("vsf_")));
    let (_, list) = t.get(&format!("{path}?page_size=100")).await;
    assert_eq!(list["data"]["total"], 1, "{list}");
    assert_eq!(t.process_jobs().await - before, 1, "one processing job");
    // Once processed, the link is searchable in that store.
    let link = links.into_iter().next().unwrap().to_string();
    let status = t.settle(&store, &link).await;
    assert_eq!(status["status"], "completed", "{status}");
}

#[tokio::test]
async fn a_knowledge_upload_added_to_a_vector_store_keeps_its_original_until_its_last_store_lets_go()
 {
    let t = TestServer::start().await;
    let first = t.store().await;
    let id = t.upload_ok(&first, "g.txt", TEXT).await;
    let vector_store = t.vector_store("second").await;
    let (status, added) = t
        .post(
            &t.org_path(&format!("/vector-stores/{vector_store}/files")),
            json!({ "file_id": id }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let link = added["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(t.settle(&first, &id).await["status"], "completed");
    // Deleted in the knowledge family: gone from its store, purged there...
    let (s, _, _) = t
        .call(
            reqwest::Method::DELETE,
            &t.files_path(&first, &format!("/{id}")),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let blobs = t.server.blobs.clone();
    let folder = kiln_blobs::Folder::store_file(&t.org, &first, &id);
    let original = folder.original();
    let folder = folder.path();
    let deadline = Instant::now() + Duration::from_secs(60);
    while blobs.list(folder).await.unwrap().len() > 1 {
        assert!(Instant::now() < deadline, "text.json not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...but the original stays for the other store, which processes it.
    assert!(blobs.get(&original).await.is_ok());
    let (s, org_file) = t.get(&t.org_path(&format!("/files/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{org_file}");
    assert_eq!(t.settle(&vector_store, &link).await["status"], "completed");
    let (_, results) = t
        .search(
            &vector_store,
            json!({"query": "glaciers carve valleys", "top_k": 3}),
        )
        .await;
    assert_eq!(results["results"][0]["file_id"], link.as_str(), "{results}");
    // Removed from its last store, the knowledge upload goes, original and all.
    let (s, _, _) = t
        .call(
            reqwest::Method::DELETE,
            &t.org_path(&format!("/vector-stores/{vector_store}/files/{id}")),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = t.get(&t.org_path(&format!("/files/{id}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let deadline = Instant::now() + Duration::from_secs(60);
    while blobs.get(&original).await.is_ok() {
        assert!(Instant::now() < deadline, "the original was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_openapi_document_lists_both_families() {
    let t = TestServer::start().await;
    let (s, openapi, _) = t
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let org = "/v1/organizations/{organization_id}";
    let vs = format!("{org}/vector-stores/{{vector_store_id}}");
    let file = format!("{vs}/files/{{file_id}}");
    let org_file = format!("{org}/files/{{file_id}}");
    let expected = [
        // The knowledge family (a few).
        ("post", format!("{org}/stores/{{store_id}}/files/upload")),
        (
            "post",
            format!("{org}/stores/{{store_id}}/files/{{file_id}}/retry"),
        ),
        ("get", format!("{org}/knowledge/usage")),
        // The vector-stores family: all 22.
        ("get", format!("{org}/vector-stores")),
        ("post", format!("{org}/vector-stores")),
        ("get", format!("{org}/vector-stores/usage")),
        ("get", vs.clone()),
        ("patch", vs.clone()),
        ("delete", vs.clone()),
        ("get", format!("{vs}/files")),
        ("post", format!("{vs}/files")),
        ("post", format!("{vs}/files/upload-base64")),
        ("get", format!("{file}/status")),
        ("post", format!("{file}/retry")),
        ("get", file.clone()),
        ("delete", file.clone()),
        ("get", format!("{file}/logs")),
        ("post", format!("{org}/files/upload")),
        ("post", format!("{org}/files/upload-url")),
        ("get", format!("{org}/files")),
        ("post", format!("{org}/files")),
        ("get", org_file.clone()),
        ("delete", org_file.clone()),
        ("get", format!("{org_file}/content")),
        ("get", format!("{org_file}/download")),
    ];
    for (method, path) in &expected {
        assert!(
            openapi["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn a_batch_over_ten_files_keeps_ten_and_refuses_the_rest_by_name() {
    let t = TestServer::start().await;
    let mut form = reqwest::multipart::Form::new();
    for i in 0..11 {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(format!("{TEXT} {i}").into_bytes())
                .file_name(format!("f{i}.txt")),
        );
    }
    let response = t
        .client
        .post(t.url(&t.org_path("/files/upload")))
        .bearer_auth(&t.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["total_uploaded"], 10, "{body}");
    assert_eq!(body["total_failed"], 1, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["errors"][0]["filename"], "f10.txt", "{body}");
    assert_eq!(
        body["errors"][0]["error_code"], "VALIDATION_ERROR",
        "{body}"
    );
    let (_, list) = t.get(&t.org_path("/files?limit=100")).await;
    assert_eq!(list["total"], 10, "{list}");
    // A batch of which nothing is accepted answers its (first) file's error.
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(Vec::new()).file_name("empty.txt"),
    );
    let response = t
        .client
        .post(t.url(&t.org_path("/files/upload")))
        .bearer_auth(&t.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    let error = common::assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    assert_eq!(
        error["details"]["errors"][0]["filename"], "empty.txt",
        "{body}"
    );
}
