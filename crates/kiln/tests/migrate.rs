//! `kiln migrate-to` moves an embedded data dir into a cluster (PostgreSQL + S3) without
//! embedding again: the same key, files and search answers there, and the originals are there
//! (a forced re-processing on the cluster reads them and gives the same chunks).

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const TEXTS: [(&str, &str); 3] = [
    (
        "vitamin.txt",
        "Vitamin D deficiency is associated with an increased risk of hip fractures in older adults. Supplementation reduced falls in several trials.",
    ),
    (
        "yeast.txt",
        "Budding yeast cells regulate gene expression through chromatin remodelling complexes that slide nucleosomes along DNA.",
    ),
    (
        "tides.txt",
        "Tidal stream turbines convert the kinetic energy of moving seawater into electricity, much as wind turbines do with air.",
    ),
];

const QUERIES: [&str; 3] = [
    "hip fractures and vitamin D",
    "chromatin remodelling",
    "electricity from the sea",
];

async fn answers(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    org: &str,
    store: &str,
) -> Vec<Value> {
    let mut all = Vec::new();
    for mode in ["keyword", "semantic", "hybrid"] {
        for query in QUERIES {
            let found: Value = client
                .post(format!(
                    "{base}/v1/organizations/{org}/stores/{store}/search"
                ))
                .bearer_auth(key)
                .json(&json!({"query": query, "mode": mode, "top_k": 5}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let results = found["results"]
                .as_array()
                .unwrap_or_else(|| panic!("{found}"));
            all.push(json!(
                results
                    .iter()
                    .map(|r| json!([
                        r["file_id"],
                        r["chunk_index"],
                        (r["score"].as_f64().unwrap() * 1e4).round()
                    ]))
                    .collect::<Vec<_>>()
            ));
        }
    }
    all
}

#[tokio::test]
async fn an_embedded_data_dir_moves_into_a_cluster_with_the_same_answers() {
    if !common::cluster() {
        kiln_testkit::elsewhere(
            "an_embedded_data_dir_moves_into_a_cluster_with_the_same_answers",
            "runs in the cluster run (KILN_TEST_BACKEND=cluster)",
        );
        return;
    }
    // An embedded server, whichever run this is.
    let t = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        common::embedded_config_for,
        axum::Router::new(),
    )
    .await;
    let store = t.store().await;
    let mut ids = Vec::new();
    for (name, text) in TEXTS {
        let id = t.upload_ok(&store, name, text).await;
        assert_eq!(t.settle(&store, &id).await["status"], "completed");
        ids.push(id);
    }
    let client = reqwest::Client::new();
    let before = answers(&client, &t.server.base_url(), &t.key, &t.org, &store).await;
    assert!(
        before.iter().all(|a| !a.as_array().unwrap().is_empty()),
        "{before:?}"
    );
    let TestServer {
        server,
        dir,
        key,
        org,
        ..
    } = t;
    server.shutdown().await.unwrap();

    // Into the cluster named by another folder.
    let cluster = tempfile::tempdir().unwrap();
    let mut target = common::config_for(cluster.path());
    common::use_cluster(&mut target);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["migrate-to", "--data-dir"])
        .arg(dir.path())
        .args(["--catalog", target.catalog.url.as_deref().unwrap()])
        .args(["--blobs", target.blobs.url.as_deref().unwrap()])
        .args([
            "--blobs-endpoint",
            target.blobs.endpoint.as_deref().unwrap(),
        ])
        .env(
            "AWS_ACCESS_KEY_ID",
            target.blobs.access_key_id.clone().unwrap(),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            target.blobs.secret_access_key.clone().unwrap(),
        )
        .env(
            "KILN_EMBEDDING__MODELS_DIR",
            kiln_embed::fetch::shared_models_dir(),
        )
        .env_remove("KILN_TEST_BACKEND")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let moved: Value = serde_json::from_str(&printed).unwrap();
    assert!(moved["blobs"].as_u64().unwrap() >= 6, "{moved}");
    assert!(moved["chunks"].as_u64().unwrap() >= 3, "{moved}");

    // A cluster node on a new data dir: same key, same files, same answers.
    let node_dir = tempfile::tempdir().unwrap();
    let (mut child, base, printed_key) =
        common::spawn_kiln(node_dir.path(), &common::cluster_env(cluster.path()), &[]);
    assert!(
        printed_key.is_none(),
        "the moved catalog needs no bootstrap"
    );
    let after = answers(&client, &base, &key, &org, &store).await;
    assert_eq!(before, after);

    // The originals moved too: re-processing one there reads it and gives the same chunks.
    let file_url = |id: &str, rest: &str| {
        format!("{base}/v1/organizations/{org}/stores/{store}/files/{id}{rest}")
    };
    let status = |id: String| {
        let request = client.get(file_url(&id, "/status")).bearer_auth(&key);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let chunks = status(ids[0].clone()).await["chunk_count"].clone();
    let retried = client
        .request(Method::POST, file_url(&ids[0], "/retry?force=true"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(retried.status().is_success(), "{}", retried.status());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = status(ids[0].clone()).await;
        if now["status"] == "completed" && now["attempt"].as_u64() > Some(1) {
            assert_eq!(now["chunk_count"], chunks);
            break;
        }
        assert_ne!(now["status"], "failed", "{now}");
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}
