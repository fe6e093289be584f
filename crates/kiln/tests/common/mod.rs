//! Starts the real server on a loopback port against a temporary data dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kiln::server::Server;
use kiln_core::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub key: String,
    pub org: String,
    pub client: reqwest::Client,
}

/// Whether the HTTP tests run against the cluster backends (`KILN_TEST_BACKEND=cluster`):
/// PostgreSQL for the catalog (`KILN_TEST_POSTGRES`) and S3 for blobs (`KILN_TEST_S3`), both
/// started by the test command. Otherwise the embedded default.
pub fn cluster() -> bool {
    match std::env::var("KILN_TEST_BACKEND").as_deref() {
        Ok("cluster") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => panic!("KILN_TEST_BACKEND is embedded or cluster, not {other}"),
    }
}

/// Points a configuration at the test cluster's services: a database and an S3 prefix of
/// its own, named after the data dir (so a server restarted on the same dir finds them).
pub fn use_cluster(config: &mut Config) {
    let tag = format!(
        "{:016x}",
        fnv1a(config.data_dir.to_string_lossy().as_bytes())
    );
    let server = kiln_catalog::testing::postgres_server()
        .expect("KILN_TEST_BACKEND=cluster needs KILN_TEST_POSTGRES (set by scripts/test.sh)");
    config.catalog.url = Some(kiln_catalog::testing::database(
        &server,
        &format!("kiln_t_{tag}"),
    ));
    let spec = std::env::var("KILN_TEST_S3")
        .expect("KILN_TEST_BACKEND=cluster needs KILN_TEST_S3 (set by scripts/test.sh)");
    let parts: Vec<&str> = spec.split(',').collect();
    let [endpoint, bucket, key, secret] = parts[..] else {
        panic!("KILN_TEST_S3 is endpoint,bucket,key,secret: {spec}");
    };
    config.blobs.url = Some(format!("s3://{bucket}/t-{tag}"));
    config.blobs.endpoint = Some(endpoint.into());
    config.blobs.access_key_id = Some(key.into());
    config.blobs.secret_access_key = Some(secret.into());
}

/// In the cluster run, the `KILN_*` variables that point a `kiln` process on `dir` at the
/// test cluster (as `use_cluster` does for a configuration); none otherwise.
pub fn cluster_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    if !cluster() {
        return Vec::new();
    }
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    use_cluster(&mut config);
    let b = config.blobs;
    [
        ("KILN_CATALOG__URL", config.catalog.url),
        ("KILN_BLOBS__URL", b.url),
        ("KILN_BLOBS__ENDPOINT", b.endpoint),
        ("KILN_BLOBS__ACCESS_KEY_ID", b.access_key_id),
        ("KILN_BLOBS__SECRET_ACCESS_KEY", b.secret_access_key),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn config_for(dir: &std::path::Path) -> Config {
    let mut config = embedded_config_for(dir);
    if cluster() {
        use_cluster(&mut config);
    }
    config
}

/// The tests' configuration on the embedded backend, whichever run this is.
pub fn embedded_config_for(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".to_string(),
        ..Config::default()
    };
    config.embedding.models_dir = Some(kiln_embed::fetch::shared_models_dir());
    config.workers.retry_base_ms = 200;
    config.workers.reap_every_secs = 1;
    config
}

/// The real model, loaded once per test binary.
pub async fn model() -> kiln::server::Model {
    static MODEL: tokio::sync::OnceCell<kiln::server::Model> = tokio::sync::OnceCell::const_new();
    MODEL
        .get_or_init(|| async {
            kiln::server::load_model(&config_for(std::path::Path::new("/nonexistent")))
                .await
                .expect("the model loads")
        })
        .await
        .clone()
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(axum::Router::new()).await
    }

    pub async fn start_with(extra: axum::Router<kiln_api::AppState>) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config_for, extra).await
    }

    /// Starts on `dir` with a configuration of `configure`.
    pub async fn start_in(
        dir: tempfile::TempDir,
        configure: impl Fn(&std::path::Path) -> Config,
        extra: axum::Router<kiln_api::AppState>,
    ) -> TestServer {
        let options = kiln::server::Options {
            extra,
            model: Some(model().await),
            // PDFs in child processes of the real binary, as `kiln serve` reads them.
            pdf_reader: Some(env!("CARGO_BIN_EXE_kiln").into()),
        };
        let server = Server::start_with(configure(dir.path()), options)
            .await
            .expect("server starts");
        Self::around(server, dir).await
    }

    /// Stops this server and starts another on the same data dir (and, in the cluster run,
    /// the same database and bucket) with `model`, keeping the key and organization.
    pub async fn restart_with(self, model: kiln::server::Model, config: Config) -> TestServer {
        let running = self.server;
        running.shutdown().await.unwrap();
        let options = kiln::server::Options {
            model: Some(model),
            pdf_reader: Some(env!("CARGO_BIN_EXE_kiln").into()),
            ..Default::default()
        };
        let server = Server::start_with(config, options)
            .await
            .expect("server restarts");
        assert!(server.initial_key.is_none(), "no second bootstrap");
        TestServer { server, ..self }
    }

    async fn around(server: Server, dir: tempfile::TempDir) -> TestServer {
        let key = server
            .initial_key
            .as_ref()
            .expect("a new data dir gets an admin key")
            .value
            .clone();
        let client = reqwest::Client::new();
        let org = client
            .get(format!("{}/v1/organizations", server.base_url()))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["organizations"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        TestServer {
            server,
            dir,
            key,
            org,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    /// `/v1/organizations/{org}` + `rest`.
    pub fn org_path(&self, rest: &str) -> String {
        format!("/v1/organizations/{}{}", self.org, rest)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json, headers)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::GET, path, Some(&self.key), None).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(Method::POST, path, Some(&self.key), Some(body))
            .await;
        (s, v)
    }

    pub async fn create_slice(&self, name: &str) -> Value {
        let (status, body) = self
            .post(
                &self.org_path("/knowledge/slices"),
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn create_store(&self, slice_id: &str, name: &str) -> Value {
        let (status, body) = self
            .post(
                &self.org_path(&format!("/knowledge/slices/{slice_id}/stores")),
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Opens the data dir's catalog as the operator tool does.
    pub async fn catalog(&self) -> kiln_catalog::Catalog {
        kiln::server::open_storage(&config_for(self.dir.path()))
            .await
            .unwrap()
            .0
    }

    /// A new organization with a key of `role`: (org id, key value).
    pub async fn new_org_with_key(&self, role: kiln_core::types::Role) -> (String, String) {
        let catalog = self.catalog().await;
        let org = kiln::admin::org_create(&catalog, "other").await.unwrap();
        let org_id = org["id"].as_str().unwrap().to_string();
        let key = kiln::admin::key_create(&catalog, &org_id.as_str().into(), role, None)
            .await
            .unwrap();
        (org_id, key["key"].as_str().unwrap().to_string())
    }

    /// A key of `role` in this server's organization.
    pub async fn key_with_role(&self, role: kiln_core::types::Role) -> String {
        let catalog = self.catalog().await;
        kiln::admin::key_create(&catalog, &self.org.as_str().into(), role, None)
            .await
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Asserts an error envelope with `status` and `code`; returns the envelope's `error`.
pub fn assert_envelope(status: StatusCode, body: &Value, expected: u16, code: &str) -> Value {
    assert_eq!(status.as_u16(), expected, "{body}");
    assert_eq!(body["success"], false, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["status"], expected, "{body}");
    assert_eq!(
        error["type"],
        if expected >= 500 {
            "server_error"
        } else {
            "client_error"
        }
    );
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["system_message"].is_string());
    assert!(error["details"].is_object(), "{body}");
    assert!(error["trace_id"].as_str().is_some_and(|t| !t.is_empty()));
    let ts = error["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    error.clone()
}

impl TestServer {
    /// A fresh slice with a store; returns the store ID.
    pub async fn store(&self) -> String {
        let slice = self.create_slice("files").await;
        self.create_store(slice["id"].as_str().unwrap(), "docs")
            .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn files_path(&self, store: &str, rest: &str) -> String {
        self.org_path(&format!("/stores/{store}/files{rest}"))
    }

    /// Uploads bytes as `name`; returns the status and the answer.
    pub async fn upload(
        &self,
        store: &str,
        name: &str,
        bytes: Vec<u8>,
        relative_path: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
        if let Some(path) = relative_path {
            form = form.text("relative_path", path.to_string());
        }
        let response = self
            .client
            .post(self.url(&self.files_path(store, "/upload")))
            .bearer_auth(&self.key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Uploads and returns the new file's ID, asserting 201.
    pub async fn upload_ok(&self, store: &str, name: &str, text: &str) -> String {
        let (status, body) = self
            .upload(store, name, text.as_bytes().to_vec(), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, store: &str, file: &str) -> Value {
        let (s, b) = self
            .get(&self.files_path(store, &format!("/{file}/status")))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    /// `POST .../files/{file}/retry?force=true`.
    pub async fn force_retry(&self, store: &str, file: &str) -> (StatusCode, Value) {
        self.post(
            &self.files_path(store, &format!("/{file}/retry?force=true")),
            serde_json::json!({}),
        )
        .await
    }

    /// Polls a file's status until it is `completed` or `failed` (60 s at most).
    pub async fn settle(&self, store: &str, file: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let status = self.status(store, file).await;
            if status["status"] == "completed" || status["status"] == "failed" {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "file never settled: {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn logs(&self, store: &str, file: &str) -> Vec<Value> {
        let (s, b) = self
            .get(&self.files_path(store, &format!("/{file}/logs?limit=100")))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["items"].as_array().unwrap().clone()
    }

    pub async fn search(&self, store: &str, body: Value) -> (StatusCode, Value) {
        self.post(&self.org_path(&format!("/stores/{store}/search")), body)
            .await
    }
}

impl TestServer {
    /// Starts with the model the configuration names (e.g. an HTTP provider).
    pub async fn start_without_model(
        dir: tempfile::TempDir,
        configure: impl Fn(&std::path::Path) -> Config,
    ) -> TestServer {
        let server = Server::start_with(configure(dir.path()), kiln::server::Options::default())
            .await
            .expect("server starts");
        Self::around(server, dir).await
    }
}

/// Starts `kiln serve` as a child process on a loopback port with `env` set (other `KILN_*`
/// variables removed). With a `wrapper`, runs `wrapper… kiln serve …` instead (the wrapper
/// ends by exec'ing its trailing arguments). Returns the child, the base URL and the admin
/// key printed on a first start. The caller kills and waits for the child.
pub fn spawn_kiln(
    dir: &std::path::Path,
    env: &[(&str, String)],
    wrapper: &[String],
) -> (Child, String, Option<String>) {
    spawn_kiln_as(&["serve", "--listen", "127.0.0.1:0"], dir, env, wrapper)
}

/// As `spawn_kiln`, running `kiln ARGS… --data-dir DIR` (e.g. `worker --listen …`); waits for
/// the line saying where it listens.
#[allow(clippy::zombie_processes)]
pub fn spawn_kiln_as(
    args: &[&str],
    dir: &std::path::Path,
    env: &[(&str, String)],
    wrapper: &[String],
) -> (Child, String, Option<String>) {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(kiln);
            command
        }
        None => Command::new(kiln),
    };
    for (name, _) in std::env::vars() {
        if name.starts_with("KILN_") {
            command.env_remove(name);
        }
    }
    command.args(args).arg("--data-dir").arg(dir).env(
        "KILN_EMBEDDING__MODELS_DIR",
        kiln_embed::fetch::shared_models_dir(),
    );
    for (name, value) in cluster_env(dir).iter().chain(env) {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    loop {
        let line = lines
            .next()
            .expect("the server prints where it listens")
            .unwrap();
        if line.starts_with("ak_") {
            key = Some(line.clone());
        }
        if let Some((_, url)) = line.split_once(" is listening on ") {
            // Keep draining stdout so the server never blocks on it.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (child, url.to_string(), key);
        }
    }
}

/// One Server-Sent Event as a test reads it.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Reads a `text/event-stream` answer event by event, waiting a bounded time for each.
pub struct SseReader(kiln::client::EventStream);

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        assert_eq!(response.status(), StatusCode::OK);
        let kind = response.headers()["content-type"].to_str().unwrap();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        SseReader(kiln::client::EventStream::new(response))
    }

    /// The next event; `None` when the stream ends or nothing comes within `wait`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<Sse> {
        match tokio::time::timeout(wait, self.0.next()).await {
            Ok(Ok(Some(e))) => Some(Sse {
                id: e.id,
                event: e.event,
                data: e.data,
            }),
            _ => None,
        }
    }

    /// Every event until the stream ends (or `wait` passes with nothing new).
    pub async fn drain(&mut self, wait: std::time::Duration) -> Vec<Sse> {
        let mut out = Vec::new();
        while let Some(event) = self.next(wait).await {
            out.push(event);
        }
        out
    }
}

impl TestServer {
    /// Opens the organization's event stream with `query` (e.g. `?after=0&follow=false`).
    pub async fn events(&self, query: &str, key: &str) -> SseReader {
        let response = self
            .client
            .get(self.url(&self.org_path(&format!("/events{query}"))))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        SseReader::new(response)
    }
}
