//! A small client of Kiln's own HTTP API, for the commands that use Kiln from the outside
//! (the client commands — `kiln sync`, `kiln search`, … — and `kiln bench`, `kiln eval`):
//! everything they do goes through the API a user calls.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: String,
    /// The organization the key belongs to.
    pub org: String,
}

impl ApiClient {
    /// Connects to `base` with `key` and finds the key's organization.
    pub async fn connect(base: &str, key: &str) -> anyhow::Result<ApiClient> {
        let mut client = ApiClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            org: String::new(),
        };
        let orgs = client
            .call(client.request(Method::GET, "/v1/organizations"))
            .await?;
        client.org = orgs["organizations"][0]["id"]
            .as_str()
            .context("the key sees no organization")?
            .to_string();
        Ok(client)
    }

    /// A request to `path` (from the root, e.g. `/v1/...`) with the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// A request to `/v1/organizations/{org}` + `rest`.
    pub fn org_request(&self, method: Method, rest: &str) -> RequestBuilder {
        self.request(method, &format!("/v1/organizations/{}{rest}", self.org))
    }

    /// Sends and returns the JSON answer; a non-2xx answer is an [`HttpFailure`].
    pub async fn call(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(HttpFailure::new(status.as_u16(), &text).into());
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// A new slice holding one store, both called `name`; returns the store's ID.
    pub async fn create_store(&self, name: &str) -> anyhow::Result<String> {
        let slice = self
            .call(
                self.org_request(Method::POST, "/knowledge/slices")
                    .json(&json!({ "name": name })),
            )
            .await?;
        let slice_id = slice["id"].as_str().context("a slice has an id")?;
        let store = self
            .call(
                self.org_request(
                    Method::POST,
                    &format!("/knowledge/slices/{slice_id}/stores"),
                )
                .json(&json!({ "name": name })),
            )
            .await?;
        Ok(store["id"]
            .as_str()
            .context("a store has an id")?
            .to_string())
    }

    /// The ID of the organization's newest store called `name`, if there is one.
    pub async fn find_store(&self, name: &str) -> anyhow::Result<Option<String>> {
        let mut skip = 0;
        loop {
            let page = self
                .call(self.org_request(
                    Method::GET,
                    &format!("/knowledge/stores?limit=100&skip={skip}"),
                ))
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if let Some(store) = items.iter().find(|s| s["name"] == name) {
                return Ok(store["id"].as_str().map(str::to_string));
            }
            if page["has_more"] != true {
                return Ok(None);
            }
            skip += 100;
        }
    }

    /// Uploads `bytes` as a file called `name`; returns the file's ID.
    pub async fn upload(&self, store: &str, name: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
        let file = self
            .call(
                self.org_request(Method::POST, &format!("/stores/{store}/files/upload"))
                    .multipart(form),
            )
            .await?;
        Ok(file["id"].as_str().context("a file has an id")?.to_string())
    }

    /// Every item of a list endpoint (`path` under the organization, with or without a
    /// query), page by page.
    pub async fn all_pages(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let joiner = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        loop {
            let page = self
                .call(self.org_request(
                    Method::GET,
                    &format!("{path}{joiner}limit=100&skip={}", all.len()),
                ))
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let more = page["has_more"] == true && !items.is_empty();
            all.extend(items);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Every file of a store (the list endpoint's items), page by page.
    pub async fn files(&self, store: &str) -> anyhow::Result<Vec<Value>> {
        self.all_pages(&format!("/stores/{store}/files")).await
    }

    /// Waits until `expected` files of the store are `completed` or `failed`, watching the
    /// store's file counts as a dashboard would; returns how many failed.
    pub async fn wait_settled(&self, store: &str, expected: u64) -> anyhow::Result<u64> {
        loop {
            let figures = self
                .call(self.org_request(Method::GET, &format!("/knowledge/stores/{store}")))
                .await?;
            let counts = &figures["file_counts"];
            let failed = counts["failed"].as_u64().unwrap_or(0);
            let settled = counts["completed"].as_u64().unwrap_or(0) + failed;
            if settled >= expected {
                return Ok(failed);
            }
            // Every 250 ms, and every 20 ms once the last eighth of the files (at least 32)
            // are processing, so that a caller timing the run (`kiln bench ingest`) sees its
            // end within 20 ms: the index commits up to a quarter second's files at once
            // (about 34 in `kiln bench ingest --docs 1000`), so "the last 32" could be seen
            // only after the last commit, up to 250 ms late.
            let pause = if expected - settled <= (expected / 8).max(32) {
                20
            } else {
                250
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// A non-2xx answer: its status and, from the error envelope, its code and message.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl HttpFailure {
    pub fn new(status: u16, body: &str) -> HttpFailure {
        let envelope: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let error = &envelope["error"];
        let message = error["system_message"]
            .as_str()
            .or(error["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.chars().take(300).collect());
        HttpFailure {
            status,
            code: error["code"].as_str().unwrap_or("").to_string(),
            message,
        }
    }
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code.is_empty() {
            write!(f, "HTTP {}: {}", self.status, self.message)
        } else {
            write!(f, "HTTP {} {}: {}", self.status, self.code, self.message)
        }
    }
}

impl std::error::Error for HttpFailure {}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Reads a `text/event-stream` answer event by event (comments and keep-alives skipped).
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> anyhow::Result<Option<StreamEvent>> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    return Ok(Some(StreamEvent { id, event, data }));
                }
            }
            match self.response.chunk().await? {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}
