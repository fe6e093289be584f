//! Failures of an OpenAI-compatible embedding provider, played by a small local server:
//! transient ones (429 with Retry-After, 5xx, timeouts) are retried with backoff and logged;
//! permanent ones fail the file at once.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::TestServer;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Reply {
    Ok,
    RateLimited(u64),
    ServerError,
    BadRequest,
    Slow(u64),
    /// Answers after this many milliseconds.
    Late(u64),
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    /// What to answer once the script is used up.
    then: Arc<Mutex<Option<Reply>>>,
    calls: Arc<Mutex<usize>>,
    /// Requests being answered now, and the most there were at once.
    in_flight: Arc<Mutex<(usize, usize)>>,
    /// When set, a request waits (up to 10 s) until this many are in flight, then all answer.
    gather: Arc<Mutex<Option<usize>>>,
}

/// Deterministic unit vectors: enough to exercise the queue, not a model.
fn fake_vector(text: &str) -> Vec<f32> {
    let mut state: u64 = text.bytes().fold(1469598103934665603, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    });
    let mut v: Vec<f32> = (0..384)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

async fn embeddings(State(script): State<Script>, Json(body): Json<Value>) -> Response {
    *script.calls.lock().unwrap() += 1;
    {
        let mut in_flight = script.in_flight.lock().unwrap();
        in_flight.0 += 1;
        in_flight.1 = in_flight.1.max(in_flight.0);
    }
    let gather = *script.gather.lock().unwrap();
    if let Some(wanted) = gather {
        let waited = std::time::Instant::now();
        while script.in_flight.lock().unwrap().1 < wanted
            && waited.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let response = answer(&script, body).await;
    script.in_flight.lock().unwrap().0 -= 1;
    response
}

async fn answer(script: &Script, body: Value) -> Response {
    let next = script.replies.lock().unwrap().pop_front();
    let reply = next.or(*script.then.lock().unwrap()).unwrap_or(Reply::Ok);
    match reply {
        Reply::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Reply::BadRequest => (StatusCode::BAD_REQUEST, "bad model").into_response(),
        Reply::Slow(secs) => {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            (StatusCode::INTERNAL_SERVER_ERROR, "late").into_response()
        }
        Reply::Late(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Box::pin(answer(&Script::default(), body)).await
        }
        Reply::Ok => {
            let inputs = body["input"].as_array().cloned().unwrap_or_default();
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"index": i, "embedding": fake_vector(t.as_str().unwrap_or(""))}))
                .collect();
            Json(json!({"data": data})).into_response()
        }
    }
}

async fn provider(replies: Vec<Reply>, then: Option<Reply>) -> (String, Script) {
    let script = Script::default();
    script.replies.lock().unwrap().extend(replies);
    *script.then.lock().unwrap() = then;
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, script)
}

async fn server_with(url: String) -> TestServer {
    server_configured(url, |_| {}).await
}

async fn server_configured(
    url: String,
    tune: impl Fn(&mut kiln_core::config::Config) + Send + Sync + 'static,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let configure = move |path: &std::path::Path| {
        let mut config = common::config_for(path);
        config.embedding.provider = kiln_core::config::EmbeddingProvider::Openai;
        config.embedding.openai.base_url = url.clone();
        config.embedding.openai.model = "fake-384".into();
        config.embedding.openai.timeout_secs = 1;
        tune(&mut config);
        config
    };
    // No shared model: the server builds its HTTP embedder from the configuration.
    TestServer::start_without_model(dir, configure).await
}

/// Uploads the files (name, bytes) all at once; their ids, in order.
async fn upload_together(
    t: &TestServer,
    store: &str,
    files: Vec<(String, Vec<u8>)>,
) -> Vec<String> {
    let uploads = files
        .into_iter()
        .map(|(name, bytes)| async move { t.upload(store, &name, bytes, None).await });
    let mut ids = Vec::new();
    for (status, body) in futures::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    ids
}

fn events(logs: &[Value], event: &str) -> Vec<Value> {
    logs.iter()
        .filter(|e| e["event"] == event)
        .cloned()
        .collect()
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_honouring_retry_after() {
    let (url, script) = provider(vec![Reply::RateLimited(2), Reply::ServerError], None).await;
    let t = server_with(url).await;
    let store = t.store().await;
    let id = t
        .upload_ok(&store, "a.txt", "Some text worth embedding.")
        .await;
    let done = t.settle(&store, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["embedding_model"], "fake-384");
    assert_eq!(*script.calls.lock().unwrap(), 3);
    let logs = t.logs(&store, &id).await;
    let retries = events(&logs, "auto_retry_scheduled");
    assert_eq!(retries.len(), 2, "{logs:?}");
    assert_eq!(retries[0]["data"]["error_code"], "EMBEDDING_RATE_LIMITED");
    assert!(
        retries[0]["data"]["delay_ms"].as_u64().unwrap() >= 2000,
        "Retry-After honoured: {}",
        retries[0]
    );
    assert_eq!(retries[1]["data"]["error_code"], "EMBEDDING_FAILED");
    assert_eq!(retries[0]["level"], "warning");
    assert_eq!(events(&logs, "started").len(), 3);
}

#[tokio::test]
async fn a_provider_that_keeps_failing_fails_the_file_as_retryable() {
    let (url, script) = provider(vec![], Some(Reply::ServerError)).await;
    let t = server_with(url).await;
    let store = t.store().await;
    let id = t
        .upload_ok(&store, "a.txt", "Some text worth embedding.")
        .await;
    let done = t.settle(&store, &id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error_code"], "EMBEDDING_FAILED");
    assert_eq!(done["retryable"], true);
    assert_eq!(done["current_step"], "embedding");
    assert_eq!(*script.calls.lock().unwrap(), 3, "three tries in all");
    let logs = t.logs(&store, &id).await;
    assert_eq!(events(&logs, "auto_retry_scheduled").len(), 2);
    assert_eq!(events(&logs, "failed").len(), 1);
}

#[tokio::test]
async fn a_permanent_provider_error_fails_at_once() {
    let (url, script) = provider(vec![], Some(Reply::BadRequest)).await;
    let t = server_with(url).await;
    let store = t.store().await;
    let id = t
        .upload_ok(&store, "a.txt", "Some text worth embedding.")
        .await;
    let done = t.settle(&store, &id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error_code"], "EMBEDDING_FAILED");
    assert_eq!(done["retryable"], false);
    assert_eq!(*script.calls.lock().unwrap(), 1);
    assert!(events(&t.logs(&store, &id).await, "auto_retry_scheduled").is_empty());
}

#[tokio::test]
async fn a_provider_timeout_is_retried_then_fails_with_timeout() {
    let (url, script) = provider(vec![], Some(Reply::Slow(3))).await;
    let t = server_with(url).await;
    let store = t.store().await;
    let id = t
        .upload_ok(&store, "a.txt", "Some text worth embedding.")
        .await;
    let done = t.settle(&store, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error_code"], "TIMEOUT");
    assert_eq!(done["retryable"], true);
    assert_eq!(*script.calls.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_worker_holds_several_jobs_at_once_so_their_embedding_requests_overlap() {
    let (url, script) = provider(vec![], None).await;
    // Each request waits until four are in flight: with one worker, that happens only if the
    // worker holds four jobs at once (else every request waits out the 10 s and answers alone).
    *script.gather.lock().unwrap() = Some(4);
    let t = server_configured(url, |config| {
        config.workers.count = 1;
        config.workers.jobs_per_worker = 4;
        config.embedding.openai.timeout_secs = 30;
    })
    .await;
    let store = t.store().await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let text = format!("Document number {n} has some text worth embedding.");
        ids.push(t.upload_ok(&store, &format!("{n}.txt"), &text).await);
    }
    for id in &ids {
        let done = t.settle(&store, id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(
        script.in_flight.lock().unwrap().1,
        4,
        "four jobs embedded at once"
    );
    assert_eq!(*script.calls.lock().unwrap(), 4);
}

#[tokio::test]
async fn one_files_batches_go_to_the_provider_side_by_side_up_to_the_concurrency() {
    // Every answer takes 50 ms, so the two files' embedding overlaps.
    let (url, script) = provider(vec![], Some(Reply::Late(50))).await;
    // Each request waits until three are in flight: a file's batches reach three at once only
    // if they go out side by side. Two files are held at once, each with many batches: the
    // cap of three holds over both (without it they would reach six).
    *script.gather.lock().unwrap() = Some(3);
    let t = server_configured(url, |config| {
        config.workers.count = 1;
        config.workers.jobs_per_worker = 2;
        config.embedding.openai.batch_size = 1;
        config.embedding.openai.concurrency = 3;
        config.embedding.openai.timeout_secs = 30;
    })
    .await;
    let store = t.store().await;
    let paragraphs: Vec<String> = (0..40)
        .map(|n| format!("Paragraph {n} talks about topic number {n} at some length. ").repeat(20))
        .collect();
    let mut ids = Vec::new();
    for name in ["a.txt", "b.txt"] {
        ids.push(t.upload_ok(&store, name, &paragraphs.join("\n\n")).await);
    }
    let mut chunks = 0;
    for id in &ids {
        let done = t.settle(&store, id).await;
        assert_eq!(done["status"], "completed", "{done}");
        chunks += done["chunk_count"].as_u64().unwrap();
    }
    assert!(chunks >= 12, "enough batches to overlap: {chunks}");
    assert_eq!(
        script.in_flight.lock().unwrap().1,
        3,
        "three batches at once, never more"
    );
    assert_eq!(*script.calls.lock().unwrap() as u64, chunks);
}

#[tokio::test]
async fn however_many_jobs_a_worker_holds_it_parses_one_original_at_a_time() {
    let (url, _script) = provider(vec![], None).await;
    let t = server_configured(url, |config| {
        config.workers.count = 1;
        config.workers.jobs_per_worker = 4;
    })
    .await;
    let store = t.store().await;
    // Four large originals arriving together, each long enough to parse (whitespace only,
    // so each fails NO_TEXT_EXTRACTED without reaching the embedder): the worker claims all
    // four at once, and only the parse slot keeps them from being read and parsed together.
    let original = " \n\t ".repeat(2 << 20).into_bytes();
    let files = (0..4).map(|n| (format!("blank-{n}.txt"), original.clone()));
    let ids = upload_together(&t, &store, files.collect()).await;
    for id in &ids {
        let done = t.settle(&store, id).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["error_code"], "NO_TEXT_EXTRACTED", "{done}");
    }
    assert_eq!(t.server.parsing_peak(), 1, "one worker, one parse slot");
}

#[tokio::test]
async fn a_file_waiting_for_its_index_commit_lets_the_next_file_start() {
    let (url, _script) = provider(vec![], None).await;
    // One worker with one slot: a file gives the slot up once its vectors are made, so the
    // next file is claimed and announced while the first waits for its commit, and they
    // share it. If a file held its slot until it completed, no two files would ever be in
    // hand at once and each would make a commit of its own.
    let t = server_configured(url, |config| {
        config.workers.count = 1;
        config.workers.jobs_per_worker = 1;
    })
    .await;
    let store = t.store().await;
    let before = t.server.index.commits();
    let files = (0..6).map(|n| {
        let text = format!("Document number {n} is short and says little else.");
        (format!("{n}.txt"), text.into_bytes())
    });
    let ids = upload_together(&t, &store, files.collect()).await;
    for id in &ids {
        let done = t.settle(&store, id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    // A cluster's workers write to the catalog's index log, where nothing waits for a commit.
    if !common::cluster() {
        let commits = t.server.index.commits() - before;
        assert!(
            commits <= 3,
            "six files streaming through one slot share commits: {commits}"
        );
    }
}
