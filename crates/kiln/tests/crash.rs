//! A killed process loses no file: 40 uploads, SIGKILL while they process, a restart on the
//! same data dir — every file ends `completed` with the chunk count of an uninterrupted run,
//! and the logs show the leases that expired.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

const FILES: usize = 40;

fn text_of(i: usize) -> String {
    let sentence = |j: usize| {
        format!(
            "Document {i} sentence {j} discusses topic {} with measurements of {} units and a conclusion about sample {}.",
            (i * 7 + j) % 13,
            i * 31 + j,
            j * 3
        )
    };
    (0..(8 + i % 5) * 4)
        .map(sentence)
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn(dir: &Path) -> (Child, String, Option<String>) {
    common::spawn_kiln(
        dir,
        &[
            ("KILN_WORKERS__LEASE_SECS", "3".into()),
            ("KILN_WORKERS__REAP_EVERY_SECS", "1".into()),
            ("KILN_WORKERS__COUNT", "2".into()),
        ],
        &[],
    )
}

async fn json_call(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn sigkill_while_processing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base, key) = spawn(dir.path());
    let key = key.expect("first start prints the key");
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&key);
    let orgs = json_call(auth(client.get(format!("{base}/v1/organizations")))).await;
    let org = orgs["organizations"][0]["id"].as_str().unwrap().to_string();
    let slice = json_call(auth(
        client
            .post(format!("{base}/v1/organizations/{org}/knowledge/slices"))
            .json(&json!({"name": "s"})),
    ))
    .await;
    let store = json_call(auth(
        client
            .post(format!(
                "{base}/v1/organizations/{org}/knowledge/slices/{}/stores",
                slice["id"].as_str().unwrap()
            ))
            .json(&json!({"name": "st"})),
    ))
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let files = format!("{base}/v1/organizations/{org}/stores/{store}/files");
    json_call(auth(client.patch(format!("{files}/config")).json(
        &json!({"chunking": {"max_chunk_tokens": 100, "chunk_overlap_tokens": 20}}),
    )))
    .await;

    let mut ids: HashMap<String, String> = HashMap::new();
    for i in 0..FILES {
        let name = format!("doc-{i:02}.txt");
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(text_of(i).into_bytes()).file_name(name.clone()),
        );
        let file = json_call(auth(client.post(format!("{files}/upload")).multipart(form))).await;
        ids.insert(file["id"].as_str().unwrap().to_string(), name);
    }
    // Kill it while files are in flight: some done, one in a worker's hands.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count = |status: &str| {
            let request = auth(client.get(format!("{files}?status={status}&limit=1")));
            async move { json_call(request).await["total"].as_u64().unwrap() }
        };
        let completed = count("completed").await;
        if completed >= 3 && count("processing").await >= 1 {
            assert!(completed < FILES as u64, "too late to interrupt anything");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();

    let (mut child, base, second_key) = spawn(dir.path());
    assert!(second_key.is_none());
    let files = format!("{base}/v1/organizations/{org}/stores/{store}/files");
    let deadline = Instant::now() + Duration::from_secs(300);
    let counts: HashMap<String, u64> = loop {
        let list = json_call(auth(client.get(format!("{files}?limit=100")))).await;
        let items = list["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), FILES, "no file is lost");
        if items.iter().all(|f| f["status"] == "completed") {
            break items
                .iter()
                .map(|f| {
                    (
                        f["file_name"].as_str().unwrap().to_string(),
                        f["chunk_count"].as_u64().unwrap(),
                    )
                })
                .collect();
        }
        assert!(
            items.iter().all(|f| f["status"] != "failed"),
            "a file failed: {items:?}"
        );
        assert!(Instant::now() < deadline, "files still not completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut lease_expired = 0;
    for id in ids.keys() {
        let logs = json_call(auth(client.get(format!("{files}/{id}/logs?limit=100")))).await;
        if logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "lease_expired")
        {
            lease_expired += 1;
        }
    }
    assert!(
        lease_expired >= 1,
        "the interrupted files' logs show lease_expired"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();

    // The same files, uninterrupted, give the same chunk counts.
    let t = TestServer::start().await;
    let reference_store = t.store().await;
    let (status, _, _) = t
        .call(
            reqwest::Method::PATCH,
            &t.files_path(&reference_store, "/config"),
            Some(&t.key),
            Some(json!({"chunking": {"max_chunk_tokens": 100, "chunk_overlap_tokens": 20}})),
        )
        .await;
    assert!(status.is_success());
    for i in 0..FILES {
        let id = t
            .upload_ok(&reference_store, &format!("doc-{i:02}.txt"), &text_of(i))
            .await;
        let done = t.settle(&reference_store, &id).await;
        let name = format!("doc-{i:02}.txt");
        assert_eq!(
            done["chunk_count"].as_u64().unwrap(),
            counts[&name],
            "{name}"
        );
    }
}
