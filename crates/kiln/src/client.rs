//! A small client of Kiln's own HTTP API, for the commands that measure Kiln from the outside
//! (`kiln bench ingest`, `kiln eval`): everything they do goes through the API a user calls.

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

    /// Sends and returns the JSON answer; a non-2xx answer is an error carrying its body.
    pub async fn call(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "HTTP {status}: {text}");
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

    /// Every file of a store (the list endpoint's items), page by page.
    pub async fn files(&self, store: &str) -> anyhow::Result<Vec<Value>> {
        let mut files = Vec::new();
        loop {
            let page = self
                .call(self.org_request(
                    Method::GET,
                    &format!("/stores/{store}/files?limit=100&skip={}", files.len()),
                ))
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let more = page["has_more"] == true && !items.is_empty();
            files.extend(items);
            if !more {
                return Ok(files);
            }
        }
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
            if counts["completed"].as_u64().unwrap_or(0) + failed >= expected {
                return Ok(failed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
