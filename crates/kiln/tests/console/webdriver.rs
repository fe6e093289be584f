//! Just enough of the W3C WebDriver protocol (JSON over HTTP) to drive Chromium through
//! ChromeDriver in tests: a session, navigation, elements, keys, scripts, screenshots.
//! Written here instead of taking a WebDriver crate: a dozen endpoints over the `reqwest`
//! the tests already use, where the crates bring their own HTTP stacks.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process; killed when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the browser and its driver are: `KILN_CHROMIUM` / `KILN_CHROMEDRIVER`, else Debian's
/// paths. Missing ones fail the test (the test command installs them).
pub fn binaries() -> (String, String) {
    let chromium = std::env::var("KILN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("KILN_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for path in [&chromium, &driver] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser tests need Chromium and ChromeDriver \
             (scripts/test.sh installs Debian's chromium and chromium-driver)"
        );
    }
    (chromium, driver)
}

impl Driver {
    /// Starts ChromeDriver on a free loopback port and waits until it is ready.
    pub async fn start(path: &str) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver { child, url };
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A browser session.
pub struct Session {
    client: reqwest::Client,
    base: String,
}

#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    /// A headless Chromium with a fresh profile in `profile`.
    pub async fn new(driver: &Driver, chromium: &str, profile: &Path) -> Session {
        let client = reqwest::Client::new();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,860",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer: Value = client
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_string();
        Session {
            client,
            base: format!("{}/session/{id}", driver.url),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let value = self.call(method, path, body).await;
        if let Some(error) = value.get("error") {
            panic!("webdriver {path}: {error} {}", value["message"]);
        }
        value
    }

    pub async fn goto(&self, url: &str) {
        self.ok(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let value = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        value[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    /// Waits up to `wait` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, wait: Duration) -> Result<Element, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(element) = self.find(css).await {
                return Ok(element);
            }
            if Instant::now() > deadline {
                return Err(format!("no element {css} after {wait:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element matching `css`, waiting up to `wait` for it; found again when the
    /// page re-drew it between finding and clicking (a live page does).
    pub async fn click_on(&self, css: &str, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            let element = self.wait_for(css, wait).await?;
            let value = self
                .call(
                    reqwest::Method::POST,
                    &format!("/element/{}/click", element.0),
                    Some(json!({})),
                )
                .await;
            match value.get("error").and_then(Value::as_str) {
                None => return Ok(()),
                Some("stale element reference") if Instant::now() < deadline => {}
                Some(error) => return Err(format!("clicking {css}: {error} {}", value["message"])),
            }
        }
    }

    /// Types `text` into an element (for a file input: paths, one per line).
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Runs a script (its `return` value comes back); `args` are its `arguments`.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.ok(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits up to `wait` until `script` returns something truthy; returns it.
    pub async fn until(&self, what: &str, script: &str, wait: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + wait;
        loop {
            let value = self.script(script, vec![]).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(format!("{what}: not within {wait:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of an open alert, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        let value = self.call(reqwest::Method::GET, "/alert/text", None).await;
        value.as_str().map(str::to_string)
    }

    pub async fn accept_alert(&self) {
        self.ok(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await;
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&self, path: &Path) {
        let value = self.ok(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.delete(&self.base).send().await;
    }
}
