//! The web console in a real browser: headless Chromium driven through ChromeDriver against
//! the real server. Screenshots of the pages it visits go under the target dir
//! (`console-screenshots/`), on failure too, named after the step.

mod common;
#[path = "console/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use webdriver::{Driver, Session};

const WAIT: Duration = Duration::from_secs(90);
const XSS_NAME: &str = "<img src=x onerror=alert(1)>.txt";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

#[tokio::test]
async fn the_console_runs_a_store_in_a_real_browser() {
    let (chromium, driver_path) = webdriver::binaries();
    let t = TestServer::start().await;

    // Served with a strict policy.
    let page = t.client.get(t.url("/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );

    let driver = Driver::start(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let session = Session::new(&driver, &chromium, profile.path()).await;
    let outcome = scenario(&t, &session).await;
    if let Err(failure) = &outcome {
        session.screenshot(&shots().join("failure.png")).await;
        eprintln!(
            "screenshot of the failure: {}",
            shots().join("failure.png").display()
        );
        let _ = failure;
    }
    session.close().await;
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

async fn scenario(t: &TestServer, s: &Session) -> Result<(), String> {
    let fail = |what: &str, got: &Value| Err(format!("{what}: {got}"));

    // Sign in with the key.
    s.goto(&t.url("/console/")).await;
    let key = s.wait_for("#api-key", WAIT).await?;
    s.type_into(&key, &t.key).await;
    s.click_on("#sign-in-form button", WAIT).await?;
    s.until(
        "the stores page",
        "return !document.getElementById('stores').hidden",
        WAIT,
    )
    .await?;
    // The key is in this tab's session storage, and no cookie was set.
    let stored = s
        .script(
            "return [sessionStorage.getItem('kiln.apiKey'), document.cookie]",
            vec![],
        )
        .await;
    if stored != json!([t.key, ""]) {
        return fail("the key's keeping", &stored);
    }
    // Marks this page load: still there at the end means nothing was reloaded.
    s.script("window.__sameLoad = true; return true", vec![])
        .await;
    s.screenshot(&shots().join("stores.png")).await;

    // Create a store.
    let name = s.wait_for("#new-store-name", WAIT).await?;
    s.type_into(&name, "Pottery notes").await;
    s.click_on("#create-store-form button", WAIT).await?;
    s.until(
        "the new store's page",
        "return document.getElementById('store-name').textContent === 'Pottery notes' \
         && !document.getElementById('store').hidden",
        WAIT,
    )
    .await?;
    let live = s
        .until(
            "the live event stream",
            "return document.getElementById('live').textContent === 'live'",
            WAIT,
        )
        .await;
    live?;

    // Upload three files: two that complete (one named to inject markup), one that fails.
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "glazes.txt",
            "Celadon glazes get their green from a little iron fired in reduction. ".repeat(40),
        ),
        (
            XSS_NAME,
            "Raku firing pulls pots from the kiln while they glow and cools them fast. ".repeat(40),
        ),
        ("blank.txt", "   \n  \t ".to_string()),
    ];
    let mut paths = Vec::new();
    for (name, text) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path.display().to_string());
    }
    let input = s.wait_for("#file-input", WAIT).await?;
    s.type_into(&input, &paths.join("\n")).await;

    // Without reloading, two reach completed and one failed with its code.
    let settled = s
        .until(
            "two completed and one failed",
            &format!(
                "const rows = {ROWS_AS_FN}; \
                 const c = rows.filter(r => r.status === 'completed').length; \
                 const f = rows.filter(r => r.status === 'failed' && r.error === 'NO_TEXT_EXTRACTED'); \
                 return rows.length === 3 && c === 2 && f.length === 1 ? rows : null;"
            ),
            WAIT,
        )
        .await?;
    let names: Vec<&str> = settled
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    if !names.contains(&XSS_NAME) {
        return fail("the markup-like name shown as text", &settled);
    }
    // It stayed text: no image element was made, no script ran.
    let injected = s
        .script("return document.querySelectorAll('img').length", vec![])
        .await;
    if injected != json!(0) {
        return fail("images on the page", &injected);
    }
    if let Some(alert) = s.alert_text().await {
        s.accept_alert().await;
        return Err(format!("a script from a file name ran: alert {alert:?}"));
    }
    s.screenshot(&shots().join("store.png")).await;

    // Retry the failed file from its row: it is queued, runs again and fails again.
    let blank_id = s
        .script(
            "return [...document.querySelectorAll('#files-body tr')]
               .find(tr => tr.querySelector('td.status').textContent === 'failed').dataset.file",
            vec![],
        )
        .await;
    let blank_id = blank_id.as_str().unwrap().to_string();
    s.click_on("#files-body button.retry", WAIT).await?;
    let store_id = s.script("return location.hash.split('/')[2]", vec![]).await;
    let store_id = store_id.as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = t.status(&store_id, &blank_id).await;
        if status["attempt"] == 2 && status["status"] == "failed" {
            break;
        }
        if std::time::Instant::now() > deadline {
            return fail("the retried file's second attempt", &status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.until(
        "the row failed again after the retry",
        &format!(
            "const rows = {ROWS_AS_FN}; return rows.filter(r => r.status === 'failed').length === 1 \
             && rows.filter(r => r.status === 'completed').length === 2"
        ),
        WAIT,
    )
    .await?;

    // Search, and see a result with its file, score and text.
    let query = s.wait_for("#query", WAIT).await?;
    s.type_into(&query, "green celadon glaze iron").await;
    s.click_on("#search-form button", WAIT).await?;
    let result = s
        .until(
            "a search result",
            "const r = document.querySelector('#results li'); return r && \
             [r.querySelector('.result-file').textContent, r.querySelector('.score').textContent, \
              r.querySelector('.text').textContent]",
            WAIT,
        )
        .await?;
    if result[0] != "glazes.txt" || !result[2].as_str().unwrap().contains("Celadon") {
        return fail("the top result", &result);
    }
    if result[1].as_str().unwrap().parse::<f64>().is_err() {
        return fail("the result's score", &result);
    }
    s.screenshot(&shots().join("search.png")).await;

    // The failed file's page: its error in words and its log by attempt.
    let link = format!("#files-body tr[data-file='{blank_id}'] td.name a");
    s.click_on(&link, WAIT).await?;
    let detail = s
        .until(
            "the file's page",
            "const box = document.getElementById('file-error'); \
             const heads = [...document.querySelectorAll('#file-log h3')].map(h => h.textContent); \
             return !document.getElementById('file').hidden && !box.hidden && heads.length >= 3 \
               && [box.textContent, heads]",
            WAIT,
        )
        .await?;
    let words = detail[0].as_str().unwrap();
    if !words.contains("NO_TEXT_EXTRACTED") || !words.contains("No text was found") {
        return fail("the error in words", &detail);
    }
    if !detail[1].to_string().contains("Attempt 1") || !detail[1].to_string().contains("Attempt 2")
    {
        return fail("the log by attempt", &detail);
    }
    s.screenshot(&shots().join("file.png")).await;

    // Back to the store; retry all failed queues the failed file again.
    s.script("history.back(); return true", vec![]).await;
    s.click_on("#retry-failed", WAIT).await?;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = t.status(&store_id, &blank_id).await;
        if status["attempt"] == 3 && status["status"] == "failed" {
            break;
        }
        if std::time::Instant::now() > deadline {
            return fail("retry all failed", &status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A large file goes through the resumable upload URL in pieces (9 MiB of blanks: it
    // fails at once, so nothing waits on the model), and a file dropped on the drop zone
    // uploads too.
    let big = dir.path().join("big-blank.txt");
    std::fs::write(&big, vec![b' '; 9 * 1024 * 1024]).unwrap();
    let input = s.wait_for("#file-input", WAIT).await?;
    s.type_into(&input, &big.display().to_string()).await;
    s.script(
        "const dt = new DataTransfer();          dt.items.add(new File(['Salt glazing vapour in the kiln. '.repeat(30)], 'dropped.txt', {type: 'text/plain'}));          document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));          return true",
        vec![],
    )
    .await;
    s.until(
        "the large file failed and the dropped one completed",
        &format!(
            "const rows = {ROWS_AS_FN};              return rows.some(r => r.name === 'big-blank.txt' && r.status === 'failed')                && rows.some(r => r.name === 'dropped.txt' && r.status === 'completed')"
        ),
        WAIT,
    )
    .await?;
    let requests = s
        .script(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await;
    let pieces = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u.as_str().unwrap().contains("/uploads/"))
        .count();
    let via_url = requests.to_string().contains("/files/upload-url");
    let registered = requests.to_string().contains("/files/register");
    if !(via_url && registered && pieces >= 3) {
        return fail(
            "the large file's resumable upload (URL, 3 pieces, register)",
            &requests,
        );
    }
    let (_, listed) = t.get(&t.files_path(&store_id, "?search=big-blank")).await;
    if listed["items"][0]["file_size"] != 9 * 1024 * 1024 {
        return fail("the large file's size", &listed);
    }

    // Delete it from its page (confirming), and it leaves the store.
    let big_id = listed["items"][0]["id"].as_str().unwrap().to_string();
    s.click_on(
        &format!("#files-body tr[data-file='{big_id}'] td.name a"),
        WAIT,
    )
    .await?;
    s.until(
        "the large file's page",
        "return !document.getElementById('file').hidden          && document.getElementById('file-name').textContent === 'big-blank.txt'",
        WAIT,
    )
    .await?;
    s.click_on("#file-delete", WAIT).await?;
    s.accept_alert().await;
    s.until(
        "the store without the deleted file",
        &format!(
            "return !document.getElementById('store').hidden && {ROWS_AS_FN}.length === 4              && !{ROWS_AS_FN}.some(r => r.name === 'big-blank.txt')"
        ),
        WAIT,
    )
    .await?;

    let same = s.script("return window.__sameLoad === true", vec![]).await;
    if same != json!(true) {
        return fail("one page load throughout", &same);
    }
    Ok(())
}

/// The rows of the files table: name, status and error code of each.
const ROWS_AS_FN: &str = "[...document.querySelectorAll('#files-body tr')].map(tr => ({ \
    name: tr.querySelector('td.name').textContent, \
    status: tr.querySelector('td.status').textContent, \
    error: tr.querySelector('td.error-code').textContent }))";
