//! A cluster on one PostgreSQL and one S3 server (started by the test command): two API nodes
//! (`kiln serve --no-workers`) and two `kiln worker`s, each its own process with its own data
//! dir. 200 files are uploaded round-robin to both API nodes and complete; both nodes answer
//! every search alike. Then 200 more, while one worker and one API node are killed with
//! SIGKILL: every file still ends `completed` with the chunk count of the first, undisturbed
//! round, nothing is left twice in the shared index, and a third API node started afterwards
//! (from the index snapshot the API nodes keep in S3, plus the log after it) answers the same
//! searches.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FILES: usize = 200;

fn text_of(i: usize) -> String {
    let topics = [
        "glacier melt and sea level",
        "sourdough fermentation",
        "tidal power turbines",
        "honeybee navigation",
        "volcanic soil minerals",
        "medieval bookbinding",
        "coral reef bleaching",
        "jet engine bearings",
    ];
    let topic = topics[i % topics.len()];
    (0..3 + i % 4)
        .map(|j| {
            format!(
                "Report {i} part {j} on {topic}: sample {} measured {} units, and the team noted item {} again.",
                i * 13 + j,
                (i * 7 + j * 3) % 97,
                j * 11 + i % 5
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const QUERIES: [&str; 6] = [
    "glacier melt sea level",
    "how do bees find their way home",
    "fermentation of bread dough",
    "sample 1301 measured",
    "turbines in tidal currents",
    "bleaching of coral reefs report 45",
];

struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn kill(self) {
        self.signal("-KILL");
    }

    fn stop(self) {
        self.signal("-TERM");
    }

    fn signal(mut self, signal: &str) {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
    }
}

/// Starts `kiln ARGS` on its own data dir, pointed at the cluster named by `shared`.
fn start(args: &[&str], dir: &Path, shared: &Path) -> (Node, Option<String>) {
    let mut env = common::cluster_env(shared);
    env.extend([
        ("KILN_WORKERS__LEASE_SECS", "3".into()),
        ("KILN_WORKERS__REAP_EVERY_SECS", "1".into()),
        ("KILN_WORKERS__COUNT", "2".into()),
        // API nodes write index snapshots often here (hourly by default).
        ("KILN_INDEX__SNAPSHOT_EVERY_SECS", "2".into()),
    ]);
    let (child, base, key) = common::spawn_kiln_as(args, dir, &env, &[]);
    (Node { child, base }, key)
}

struct Api {
    client: reqwest::Client,
    key: String,
    org: String,
}

impl Api {
    async fn call(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.bearer_auth(&self.key).send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    fn org_url(&self, node: &Node, rest: &str) -> String {
        format!("{}/v1/organizations/{}{rest}", node.base, self.org)
    }

    async fn new_store(&self, node: &Node, name: &str) -> String {
        let slice = self
            .call(
                self.client
                    .post(self.org_url(node, "/knowledge/slices"))
                    .json(&json!({"name": name})),
            )
            .await;
        let store = self
            .call(
                self.client
                    .post(self.org_url(
                        node,
                        &format!("/knowledge/slices/{}/stores", slice["id"].as_str().unwrap()),
                    ))
                    .json(&json!({"name": name})),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.call(
            self.client
                .patch(self.org_url(node, &format!("/stores/{store}/files/config")))
                .json(&json!({"chunking": {"max_chunk_tokens": 100, "chunk_overlap_tokens": 20}})),
        )
        .await;
        store
    }

    async fn upload(&self, node: &Node, store: &str, i: usize) -> String {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(text_of(i).into_bytes())
                .file_name(format!("report-{i:03}.txt")),
        );
        self.call(
            self.client
                .post(self.org_url(node, &format!("/stores/{store}/files/upload")))
                .multipart(form),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn count(&self, node: &Node, store: &str, status: &str) -> u64 {
        self.call(self.client.get(self.org_url(
            node,
            &format!("/stores/{store}/files?status={status}&limit=1"),
        )))
        .await["total"]
            .as_u64()
            .unwrap()
    }

    /// Waits until every file of the store is completed; returns each name's chunk count.
    async fn completed(&self, node: &Node, store: &str) -> HashMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let mut items = Vec::new();
            for page in 0..FILES.div_ceil(100) {
                let list = self
                    .call(self.client.get(self.org_url(
                        node,
                        &format!("/stores/{store}/files?limit=100&skip={}", page * 100),
                    )))
                    .await;
                items.extend(list["items"].as_array().unwrap().clone());
            }
            assert_eq!(items.len(), FILES, "no file is lost");
            assert!(
                items.iter().all(|f| f["status"] != "failed"),
                "a file failed: {:?}",
                items.iter().find(|f| f["status"] == "failed")
            );
            if items.iter().all(|f| f["status"] == "completed") {
                return items
                    .iter()
                    .map(|f| {
                        (
                            f["file_name"].as_str().unwrap().to_string(),
                            f["chunk_count"].as_u64().unwrap(),
                        )
                    })
                    .collect();
            }
            assert!(Instant::now() < deadline, "files still not completed");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A search's answer as (file, chunk, score rounded to 1e-4).
    async fn search(&self, node: &Node, stores: &[&str], query: &str) -> Vec<(String, u64, i64)> {
        let found = self
            .call(
                self.client
                    .post(self.org_url(node, "/knowledge/search"))
                    .json(&json!({"query": query, "store_ids": stores, "mode": "hybrid", "top_k": 10})),
            )
            .await;
        found["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{found}"))
            .iter()
            .map(|r| {
                (
                    r["file_id"].as_str().unwrap().to_string(),
                    r["chunk_index"].as_u64().unwrap(),
                    (r["score"].as_f64().unwrap() * 1e4).round() as i64,
                )
            })
            .collect()
    }

    async fn same_answers(&self, a: &Node, b: &Node, stores: &[&str]) {
        for query in QUERIES {
            let (left, right) = (
                self.search(a, stores, query).await,
                self.search(b, stores, query).await,
            );
            assert!(!left.is_empty(), "{query}: nothing found");
            assert_eq!(
                agreed(&left),
                agreed(&right),
                "{query}: the nodes disagree\n{left:?}\n{right:?}"
            );
        }
    }
}

/// An answer as both nodes must give it: the score at each rank (to 1e-4), and the chunks
/// at each score. Chunks whose scores differ by less than that may come in either order (BM25
/// counts deleted chunks until their segment is merged, and a node's segments are its own),
/// and of those tied at the last rank only how many.
fn agreed(answer: &[(String, u64, i64)]) -> (Vec<i64>, Vec<Vec<(String, u64)>>) {
    let scores: Vec<i64> = answer.iter().map(|(_, _, score)| *score).collect();
    let mut groups: Vec<Vec<(String, u64)>> = Vec::new();
    for (i, (file, chunk, score)) in answer.iter().enumerate() {
        if i == 0 || answer[i - 1].2 != *score {
            groups.push(Vec::new());
        }
        groups.last_mut().unwrap().push((file.clone(), *chunk));
    }
    if let Some(last) = groups.last_mut() {
        last.clear();
    }
    for group in &mut groups {
        group.sort();
    }
    (scores, groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_and_two_workers_survive_sigkill_and_a_new_node_agrees() {
    if !common::cluster() {
        kiln_testkit::elsewhere(
            "two_api_nodes_and_two_workers_survive_sigkill_and_a_new_node_agrees",
            "runs in the cluster run (KILN_TEST_BACKEND=cluster)",
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("cluster");
    let dir = |name: &str| root.path().join(name);
    let (a, key) = start(
        &["serve", "--no-workers", "--listen", "127.0.0.1:0"],
        &dir("a"),
        &shared,
    );
    let key = key.expect("the first node bootstraps the catalog and prints the key");
    let (b, second) = start(
        &["serve", "--no-workers", "--listen", "127.0.0.1:0"],
        &dir("b"),
        &shared,
    );
    assert!(second.is_none(), "one bootstrap per cluster");
    let (w1, _) = start(&["worker", "--listen", "127.0.0.1:0"], &dir("w1"), &shared);
    let (w2, _) = start(&["worker", "--listen", "127.0.0.1:0"], &dir("w2"), &shared);
    let mut api = Api {
        client: reqwest::Client::new(),
        key,
        org: String::new(),
    };
    let health = api
        .call(api.client.get(format!("{}/health", w1.base)))
        .await;
    assert_eq!(health["role"], "worker");
    let orgs = api
        .call(api.client.get(format!("{}/v1/organizations", a.base)))
        .await;
    api.org = orgs["organizations"][0]["id"].as_str().unwrap().to_string();

    // Round one, undisturbed: uploads alternate between the API nodes.
    let first = api.new_store(&a, "first").await;
    for i in 0..FILES {
        let node = if i % 2 == 0 { &a } else { &b };
        api.upload(node, &first, i).await;
    }
    let reference = api.completed(&b, &first).await;
    api.same_answers(&a, &b, &[&first]).await;
    // Each node's replica has applied at least one log entry per file, and is not behind.
    for node in [&a, &b] {
        let metrics = api
            .client
            .get(format!("{}/metrics", node.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let gauge = |name: &str| -> u64 {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {metrics}"))
                .parse()
                .unwrap()
        };
        assert!(gauge("kiln_index_replica_applied") >= FILES as u64);
        assert_eq!(gauge("kiln_index_replica_behind"), 0);
    }

    // Round two: SIGKILL a worker mid-batch, and an API node once the uploads are in.
    let second = api.new_store(&b, "second").await;
    for i in 0..FILES {
        let node = if i % 2 == 0 { &a } else { &b };
        api.upload(node, &second, i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = api.count(&a, &second, "completed").await;
        if done >= 20 && api.count(&a, &second, "processing").await >= 1 {
            assert!(done < FILES as u64, "too late to interrupt anything");
            break;
        }
        assert!(Instant::now() < deadline, "round two never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w1.kill();
    b.kill();
    let counts = api.completed(&a, &second).await;
    assert_eq!(counts, reference, "the same chunks as an undisturbed run");

    // The shared index holds each file's chunks once: no leftovers of killed attempts.
    let mut config = kiln_core::config::Config {
        data_dir: shared.clone(),
        ..Default::default()
    };
    common::use_cluster(&mut config);
    let catalog = kiln_catalog::Catalog::open(config.catalog.url.as_deref().unwrap(), 2)
        .await
        .unwrap();
    let mut checked = 0;
    for (store, skip) in [(&first, 0), (&first, 100), (&second, 0), (&second, 100)] {
        let list = api
            .call(
                api.client
                    .get(api.org_url(&a, &format!("/stores/{store}/files?limit=100&skip={skip}"))),
            )
            .await;
        for file in list["items"].as_array().unwrap() {
            checked += 1;
            let id = file["id"].as_str().unwrap();
            assert_eq!(
                catalog.index_chunk_count(id).await.unwrap(),
                file["chunk_count"].as_u64().unwrap(),
                "{file}"
            );
        }
    }
    assert_eq!(checked, 2 * FILES);

    // A third API node, started now, restores the index snapshot a running node wrote to S3,
    // then follows the log after it, and agrees.
    let mut config = kiln_core::config::Config {
        data_dir: shared.clone(),
        ..Default::default()
    };
    common::use_cluster(&mut config);
    let blobs = kiln::server::open_blobs(&config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let snapshot = loop {
        if let Some(snapshot) = kiln_replica::latest_snapshot(&blobs).await.unwrap() {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "no index snapshot was written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (c, _) = start(
        &["serve", "--no-workers", "--listen", "127.0.0.1:0"],
        &dir("c"),
        &shared,
    );
    let ready = api.call(api.client.get(format!("{}/ready", c.base))).await;
    let opened = &ready["checks"]["index"]["opened"];
    assert_eq!(opened["from"], "restored", "{ready}");
    assert!(opened["seq"].as_u64().unwrap() >= snapshot.seq, "{ready}");
    api.same_answers(&a, &c, &[&first, &second]).await;
    for node in [a, c, w2] {
        node.stop();
    }
}
