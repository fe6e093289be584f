//! `kiln sync DIR --store S`: makes a store hold what a folder holds.
//!
//! Files are matched by their path under DIR (the store's `relative_path` + `file_name`) and
//! compared by SHA-256 with the hash the store recorded. New and changed files are uploaded
//! (large ones through the resumable upload URL, resumed after a dropped connection); a
//! changed file's old version is deleted only once the new one has completed, so search
//! always finds one of them. `--delete` removes what left the folder. Then it waits for
//! processing, following the store's event stream (or polling a server without one).
//! Ctrl-C stops it cleanly: requests in flight are abandoned (an upload is one request, or a
//! session that is only registered at its end), and the next run skips what already arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::output::{bytes, file_key, text};
use super::{Exit, INTERRUPTED, SOME_FAILED, TIMED_OUT, connect};
use crate::client::{ApiClient, EventStream, HttpFailure};

/// Files up to this size go in one request; larger ones through the upload URL.
const DIRECT_MAX: u64 = 16 * 1024 * 1024;
/// Piece size of resumable uploads.
const PIECE: u64 = 8 * 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// The folder (its `.gitignore` and `.kilnignore` files are honoured; hidden files are
    /// skipped).
    dir: PathBuf,
    /// The store's name or ID (a name that does not exist yet is created).
    #[arg(long)]
    store: String,
    /// Also delete from the store what is no longer in the folder.
    #[arg(long)]
    delete: bool,
    /// Uploads at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Show what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not wait for processing.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for processing (e.g. `30m`, `2h`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// One JSON object per line for each event, then a summary.
    #[arg(long)]
    json: bool,
}

/// A file of the folder.
#[derive(Debug, Clone)]
struct Local {
    key: String,
    path: PathBuf,
    size: u64,
    sha256: String,
}

/// A file of the store.
#[derive(Debug, Clone)]
struct Remote {
    id: String,
    sha256: String,
    status: String,
    error_code: String,
    error_message: String,
}

/// What a run does.
#[derive(Default)]
struct Plan {
    /// Files to upload, with the store's older versions of each (deleted once it completes).
    uploads: Vec<(Local, Vec<String>)>,
    /// Files already in the store: key, the matching file, other versions to delete.
    unchanged: Vec<(String, Remote, Vec<String>)>,
    /// Files gone from the folder (with `--delete`): key, IDs.
    removals: Vec<(String, Vec<String>)>,
}

fn plan(local: &[Local], remote: &BTreeMap<String, Vec<Remote>>, delete: bool) -> Plan {
    let mut plan = Plan::default();
    let mut seen = HashSet::new();
    for file in local {
        seen.insert(file.key.as_str());
        let versions = remote.get(&file.key).cloned().unwrap_or_default();
        match versions.iter().position(|r| r.sha256 == file.sha256) {
            Some(i) => {
                let matching = versions[i].clone();
                let others = versions
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, r)| r.id.clone())
                    .collect();
                plan.unchanged.push((file.key.clone(), matching, others));
            }
            None => plan
                .uploads
                .push((file.clone(), versions.into_iter().map(|r| r.id).collect())),
        }
    }
    if delete {
        for (key, versions) in remote {
            if !seen.contains(key.as_str()) {
                plan.removals
                    .push((key.clone(), versions.iter().map(|r| r.id.clone()).collect()));
            }
        }
    }
    plan
}

/// The folder's files, hashed, in key order.
fn walk(dir: &Path) -> anyhow::Result<Vec<Local>> {
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .require_git(false)
        .add_custom_ignore_filename(".kilnignore")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        let entry = entry?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path().to_path_buf();
        let relative = path.strip_prefix(dir)?;
        let key = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buffer[..n]);
        }
        out.push(Local {
            key,
            path,
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// How a run shows what happens: bars on a terminal, lines otherwise, or JSON lines.
struct Reporter {
    mode: Mode,
    overall: Option<ProgressBar>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// The step last reported per file (`--json` reports each step once).
    steps: Mutex<HashMap<String, String>>,
}

enum Mode {
    Bars(MultiProgress),
    Lines,
    Json,
}

/// Bars shown at once for files being processed (the rest wait their turn unseen).
const MAX_PROCESSING_BARS: usize = 8;

impl Reporter {
    fn new(json: bool) -> Reporter {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Lines
        };
        Reporter {
            mode,
            overall: None,
            bars: Mutex::new(HashMap::new()),
            steps: Mutex::new(HashMap::new()),
        }
    }

    fn event(&self, event: &str, fields: Value) {
        match &self.mode {
            Mode::Json => {
                let mut line = json!({ "event": event });
                if let (Some(out), Value::Object(fields)) = (line.as_object_mut(), fields) {
                    out.extend(fields);
                }
                println!("{line}");
            }
            Mode::Lines | Mode::Bars(_) => {
                let path = text(&fields["path"]);
                let line = match event {
                    "uploaded" => format!(
                        "uploaded  {path} ({})",
                        bytes(fields["size"].as_u64().unwrap_or(0))
                    ),
                    "completed" => format!("completed {path} ({} chunks)", text(&fields["chunks"])),
                    "failed" => format!(
                        "failed    {path}: {} {}",
                        text(&fields["error_code"]),
                        text(&fields["error_message"])
                    ),
                    "deleted" => format!("deleted   {path}"),
                    "replaced" => format!("replaced  {path} (its older version deleted)"),
                    "would_upload" => format!("would upload {path} ({})", text(&fields["reason"])),
                    "would_delete" => format!("would delete {path}"),
                    "created_store" => format!("created store {}", text(&fields["store"])),
                    _ => return,
                };
                self.println(&line);
            }
        }
    }

    fn println(&self, line: &str) {
        match &self.mode {
            Mode::Bars(multi) => {
                let _ = multi.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }

    /// The overall bar: files settled out of `total`.
    fn start(&mut self, total: u64) {
        if let Mode::Bars(multi) = &self.mode {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} files {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix("sync");
            self.overall = Some(bar);
        }
    }

    fn settled(&self) {
        if let Some(bar) = &self.overall {
            bar.inc(1);
        }
    }

    fn note(&self, message: String) {
        if let Some(bar) = &self.overall {
            bar.set_message(message);
        }
    }

    fn upload_bar(&self, key: &str, size: u64) {
        if let Mode::Bars(multi) = &self.mode {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix("upload");
            bar.set_message(key.to_string());
            self.bars.lock().unwrap().insert(key.to_string(), bar);
        }
    }

    fn upload_progress(&self, key: &str, sent: u64) {
        if let Some(bar) = self.bars.lock().unwrap().get(key) {
            bar.set_position(sent);
        }
    }

    /// A file's bar shows the server's step and percent (made when one is free).
    fn processing(&self, key: &str, step: &str, percent: u64) {
        if let Mode::Json = self.mode {
            let mut steps = self.steps.lock().unwrap();
            if steps.get(key).map(String::as_str) != Some(step) {
                steps.insert(key.to_string(), step.to_string());
                drop(steps);
                self.event(
                    "progress",
                    json!({"path": key, "step": step, "percent": percent}),
                );
            }
            return;
        }
        let Mode::Bars(multi) = &self.mode else {
            return;
        };
        let mut bars = self.bars.lock().unwrap();
        if !bars.contains_key(key) {
            if bars.len() >= MAX_PROCESSING_BARS {
                return;
            }
            let bar = multi.add(ProgressBar::new(100));
            bars.insert(key.to_string(), bar);
        }
        let bar = &bars[key];
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos:>3}% {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(step.to_string());
        bar.set_length(100);
        bar.set_position(percent);
        bar.set_message(key.to_string());
    }

    fn drop_bar(&self, key: &str) {
        if let Some(bar) = self.bars.lock().unwrap().remove(key) {
            bar.finish_and_clear();
        }
    }

    fn finish(&self) {
        for (_, bar) in self.bars.lock().unwrap().drain() {
            bar.finish_and_clear();
        }
        if let Some(bar) = &self.overall {
            bar.finish_and_clear();
        }
    }
}

/// What the server says about the files being waited for.
#[derive(Debug, Clone, Default)]
struct State {
    status: String,
    step: String,
    percent: u64,
    chunks: i64,
    error_code: String,
    error_message: String,
}

impl State {
    fn settled(&self) -> bool {
        self.status == "completed" || self.status == "failed"
    }

    fn of(data: &Value) -> State {
        State {
            status: text(&data["status"]),
            step: text(&data["current_step"]),
            percent: data["progress_percent"].as_u64().unwrap_or(0),
            chunks: data["chunk_count"].as_i64().unwrap_or(0),
            error_code: text(&data["error_code"]),
            error_message: text(&data["error_message"]),
        }
    }
}

type States = Arc<Mutex<HashMap<String, State>>>;

/// Follows the store's events into `states` from now on. `false` if the server has no
/// event stream (polling then).
async fn follow_events(api: &ApiClient, store: &str, states: States) -> bool {
    let response = api
        .org_request(Method::GET, &format!("/events?store_id={store}"))
        .send()
        .await;
    let Ok(response) = response else { return false };
    if !response.status().is_success() {
        return false;
    }
    tokio::spawn(async move {
        let mut stream = EventStream::new(response);
        while let Ok(Some(event)) = stream.next().await {
            let Some(id) = event.data["file_id"].as_str() else {
                continue;
            };
            let state = State::of(&event.data["data"]);
            if !state.status.is_empty() {
                states.lock().unwrap().insert(id.to_string(), state);
            }
        }
    });
    true
}

/// Reads the states of `ids` from the store's file list (the fallback to events, and a
/// check now and then that none was missed).
async fn poll_states(api: &ApiClient, store: &str, ids: &HashSet<String>, states: &States) {
    if let Ok(files) = api.files(store).await {
        let mut states = states.lock().unwrap();
        for f in files {
            let id = text(&f["id"]);
            if ids.contains(&id) {
                states.insert(id, State::of(&f));
            }
        }
    }
}

/// Uploads one file; returns its new ID. `sent` reports bytes as they go.
async fn upload(
    api: &ApiClient,
    store: &str,
    file: &Local,
    sent: &(dyn Fn(u64) + Send + Sync),
) -> anyhow::Result<String> {
    let (dir, name) = match file.key.rsplit_once('/') {
        Some((dir, name)) => (Some(dir.to_string()), name.to_string()),
        None => (None, file.key.clone()),
    };
    if file.size <= DIRECT_MAX {
        let bytes = tokio::fs::read(&file.path).await?;
        sent(0);
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        if let Some(dir) = dir {
            form = form.text("relative_path", dir);
        }
        let answer = api
            .call(
                api.org_request(Method::POST, &format!("/stores/{store}/files/upload"))
                    .multipart(form),
            )
            .await?;
        sent(file.size);
        return Ok(text(&answer["id"]));
    }
    // Large: a signed URL, the bytes in pieces, then registration.
    let started = api
        .call(
            api.org_request(Method::POST, &format!("/stores/{store}/files/upload-url"))
                .json(&json!({
                    "file_name": name,
                    "file_size": file.size,
                    "mime_type": "application/octet-stream",
                    "sha256": file.sha256,
                })),
        )
        .await?;
    let url = text(&started["upload_url"]);
    let upload_id = text(&started["upload_id"]);
    let http = reqwest::Client::new();
    let mut offset = 0u64;
    let mut failures = 0u32;
    while offset < file.size {
        let end = (offset + PIECE).min(file.size);
        let piece = read_range(&file.path, offset, end).await?;
        let result = http
            .put(&url)
            .header(
                "content-range",
                format!("bytes {offset}-{}/{}", end - 1, file.size),
            )
            .body(piece)
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => offset = end,
            Ok(r) if r.status().as_u16() == 308 => offset = received(&r).unwrap_or(end),
            other => {
                // A dropped connection or a refused piece: ask what arrived, go on from there.
                failures += 1;
                if failures > 5 {
                    return match other {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            Err(
                                HttpFailure::new(status, &r.text().await.unwrap_or_default())
                                    .into(),
                            )
                        }
                        Err(err) => Err(err.into()),
                    };
                }
                tokio::time::sleep(Duration::from_millis(250 << failures)).await;
                let asked = http
                    .put(&url)
                    .header("content-range", format!("bytes */{}", file.size))
                    .send()
                    .await;
                if let Ok(r) = asked {
                    offset = if r.status().is_success() {
                        file.size
                    } else {
                        received(&r).unwrap_or(0)
                    };
                }
            }
        }
        sent(offset);
    }
    let mut body = json!({ "upload_id": upload_id });
    if let Some(dir) = dir {
        body["relative_path"] = json!(dir);
    }
    let answer = api
        .call(
            api.org_request(Method::POST, &format!("/stores/{store}/files/register"))
                .json(&body),
        )
        .await?;
    Ok(text(&answer["id"]))
}

/// The next byte the server wants, from a 308's `Range: bytes=0-N`.
fn received(response: &reqwest::Response) -> Option<u64> {
    let range = response.headers().get("range")?.to_str().ok()?;
    let last: u64 = range.strip_prefix("bytes=0-")?.parse().ok()?;
    Some(last + 1)
}

async fn read_range(path: &Path, start: u64, end: u64) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buffer = vec![0u8; (end - start) as usize];
    file.read_exact(&mut buffer).await?;
    Ok(buffer)
}

/// Deletes files by ID (those already gone are skipped by the server).
async fn remove(api: &ApiClient, store: &str, ids: &[String]) -> anyhow::Result<()> {
    for batch in ids.chunks(1000) {
        api.call(
            api.org_request(Method::POST, &format!("/stores/{store}/files/remove-bulk"))
                .json(&json!({ "file_ids": batch })),
        )
        .await?;
    }
    Ok(())
}

pub async fn sync(args: SyncArgs, profile: Option<&str>) -> anyhow::Result<()> {
    let started = Instant::now();
    let api = connect(profile).await?;
    let mut reporter = Reporter::new(args.json);
    let dir = args.dir.clone();
    let local = tokio::task::spawn_blocking(move || walk(&dir)).await??;

    // The store: found, or made (not in a dry run).
    let found = if args.store.starts_with("vs_") {
        Some(super::commands::store_id(&api, &args.store).await?)
    } else {
        api.find_store(&args.store).await?
    };
    let store = match (found, args.dry_run) {
        (Some(id), _) => Some(id),
        (None, true) => None,
        (None, false) => {
            let answer = api
                .call(
                    api.org_request(Method::POST, "/vector-stores")
                        .json(&json!({ "name": args.store })),
                )
                .await?;
            let id = text(&answer["data"]["id"]);
            reporter.event(
                "created_store",
                json!({"store": args.store, "store_id": id}),
            );
            Some(id)
        }
    };
    let mut remote: BTreeMap<String, Vec<Remote>> = BTreeMap::new();
    if let Some(store) = &store {
        for f in api.files(store).await? {
            remote.entry(file_key(&f)).or_default().push(Remote {
                id: text(&f["id"]),
                sha256: text(&f["sha256"]),
                status: text(&f["status"]),
                error_code: text(&f["error_code"]),
                error_message: text(&f["error_message"]),
            });
        }
    }
    let plan = plan(&local, &remote, args.delete);
    let upload_bytes: u64 = plan.uploads.iter().map(|(f, _)| f.size).sum();

    if args.dry_run {
        for (file, old) in &plan.uploads {
            let reason = if old.is_empty() { "new" } else { "changed" };
            reporter.event(
                "would_upload",
                json!({"path": file.key, "size": file.size, "reason": reason}),
            );
        }
        for (key, _) in &plan.removals {
            reporter.event("would_delete", json!({"path": key}));
        }
        let summary = json!({
            "dry_run": true, "files": local.len(), "upload": plan.uploads.len(),
            "upload_bytes": upload_bytes, "unchanged": plan.unchanged.len(),
            "delete": plan.removals.len(),
        });
        if args.json {
            reporter.event("summary", summary);
        } else {
            eprintln!(
                "dry run: {} files; would upload {} ({}), leave {} unchanged, delete {}",
                local.len(),
                plan.uploads.len(),
                bytes(upload_bytes),
                plan.unchanged.len(),
                plan.removals.len()
            );
        }
        return Ok(());
    }
    let store = store.expect("a store exists outside a dry run");

    // Follow the store's events before anything changes, so none is missed.
    let states: States = Arc::default();
    let streaming = follow_events(&api, &store, states.clone()).await;

    // Ctrl-C: stop starting work, abandon requests in flight, report, exit 130.
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel_tx.send(true);
        }
    });
    let interrupted = || *cancel.borrow();

    // Removals first: what left the folder leaves the store.
    let mut deleted = 0usize;
    for (key, ids) in &plan.removals {
        if interrupted() {
            break;
        }
        remove(&api, &store, ids).await?;
        deleted += 1;
        reporter.event("deleted", json!({"path": key, "file_ids": ids}));
    }

    // Then uploads, N at a time.
    let waiting_unchanged: Vec<(String, String)> = plan
        .unchanged
        .iter()
        .filter(|(_, r, _)| r.status == "pending" || r.status == "processing")
        .map(|(k, r, _)| (r.id.clone(), k.clone()))
        .collect();
    reporter.start((plan.uploads.len() + waiting_unchanged.len()) as u64);
    reporter.note(format!(
        "uploading {} ({})",
        plan.uploads.len(),
        bytes(upload_bytes)
    ));
    let reporter = Arc::new(reporter);
    let mut uploaded: Vec<(String, String, Vec<String>)> = Vec::new(); // (id, key, old IDs)
    let mut failures: Vec<Value> = Vec::new();
    {
        let mut cancel = cancel.clone();
        let jobs = futures::stream::iter(plan.uploads.iter().map(|(file, old)| {
            let (api, store, reporter) = (api.clone(), store.clone(), reporter.clone());
            async move {
                reporter.upload_bar(&file.key, file.size);
                let key = file.key.clone();
                let progress = {
                    let reporter = reporter.clone();
                    move |n: u64| reporter.upload_progress(&key, n)
                };
                let result = upload(&api, &store, file, &progress).await;
                reporter.drop_bar(&file.key);
                (file, old, result)
            }
        }))
        .buffer_unordered(usize::from(args.concurrency));
        tokio::pin!(jobs);
        loop {
            let next = tokio::select! {
                next = jobs.next() => next,
                _ = cancel.wait_for(|c| *c) => None,
            };
            let Some((file, old, result)) = next else {
                break;
            };
            match result {
                Ok(id) => {
                    reporter.event(
                        "uploaded",
                        json!({"path": file.key, "file_id": id, "size": file.size,
                               "replaces": old}),
                    );
                    uploaded.push((id, file.key.clone(), old.clone()));
                }
                Err(err) => {
                    // Refused by the server (e.g. an unsupported type): a failed file.
                    let (code, message) = match err.downcast_ref::<HttpFailure>() {
                        Some(f) => (f.code.clone(), f.message.clone()),
                        None => ("UPLOAD_FAILED".to_string(), format!("{err:#}")),
                    };
                    if super::exit_code(&err) != 1 {
                        reporter.finish();
                        return Err(err);
                    }
                    reporter.settled();
                    let failure = json!({"path": file.key, "file_id": null,
                                         "error_code": code, "error_message": message});
                    reporter.event("failed", failure.clone());
                    failures.push(failure);
                }
            }
        }
    }

    // Wait for processing: what was uploaded, and what an earlier run left in progress.
    let mut waiting: HashMap<String, String> = uploaded
        .iter()
        .map(|(id, key, _)| (id.clone(), key.clone()))
        .chain(waiting_unchanged)
        .collect();
    let mut completed = 0usize;
    let mut timed_out = Vec::new();
    if !args.no_wait && !interrupted() {
        reporter.note("processing".to_string());
        let deadline = Instant::now() + args.timeout;
        let ids: HashSet<String> = waiting.keys().cloned().collect();
        let mut last_poll = Instant::now();
        // With the event stream, a poll now and then only guards against a dropped stream.
        let poll_every = if streaming {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(1)
        };
        if !streaming {
            poll_states(&api, &store, &ids, &states).await;
        }
        while !waiting.is_empty() {
            let snapshot: Vec<(String, State)> = {
                let states = states.lock().unwrap();
                waiting
                    .keys()
                    .filter_map(|id| states.get(id).map(|s| (id.clone(), s.clone())))
                    .collect()
            };
            for (id, state) in snapshot {
                let key = waiting[&id].clone();
                if !state.settled() {
                    if state.status == "processing" {
                        reporter.processing(&key, &state.step, state.percent);
                    }
                    continue;
                }
                waiting.remove(&id);
                reporter.drop_bar(&key);
                reporter.settled();
                if state.status == "completed" {
                    completed += 1;
                    reporter.event(
                        "completed",
                        json!({"path": key, "file_id": id, "chunks": state.chunks}),
                    );
                } else {
                    let failure = json!({"path": key, "file_id": id,
                        "error_code": state.error_code, "error_message": state.error_message});
                    reporter.event("failed", failure.clone());
                    failures.push(failure);
                }
            }
            if waiting.is_empty() || interrupted() {
                break;
            }
            if Instant::now() > deadline {
                timed_out = waiting.values().cloned().collect();
                break;
            }
            if last_poll.elapsed() >= poll_every {
                poll_states(&api, &store, &ids, &states).await;
                last_poll = Instant::now();
            }
            let mut cancel = cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = cancel.wait_for(|c| *c) => {}
            }
        }
    }

    // Replace: an older version goes once its successor completed (search finds one of them
    // throughout); duplicates an earlier run left behind likewise.
    let mut replaced = 0usize;
    if !interrupted() {
        let states = states.lock().unwrap().clone();
        let done = |id: &str, before: &str| {
            states.get(id).map(|s| s.status.as_str()).unwrap_or(before) == "completed"
        };
        let mut drop: Vec<(String, Vec<String>)> = Vec::new();
        for (id, key, old) in &uploaded {
            if !old.is_empty() && done(id, "") {
                drop.push((key.clone(), old.clone()));
            }
        }
        for (key, matching, others) in &plan.unchanged {
            if !others.is_empty() && done(&matching.id, &matching.status) {
                drop.push((key.clone(), others.clone()));
            }
        }
        for (key, ids) in drop {
            remove(&api, &store, &ids).await?;
            replaced += 1;
            reporter.event("replaced", json!({"path": key, "deleted": ids}));
        }
    }
    // Files the store already held that failed stay failed: say so.
    for (key, remote, _) in &plan.unchanged {
        if remote.status == "failed" {
            let failure = json!({"path": key, "file_id": remote.id,
                "error_code": remote.error_code, "error_message": remote.error_message,
                "unchanged": true});
            failures.push(failure);
        }
    }
    reporter.finish();

    let summary = json!({
        "files": local.len(),
        "uploaded": uploaded.len(),
        "unchanged": plan.unchanged.len(),
        "deleted": deleted,
        "replaced": replaced,
        "completed": completed,
        "failed": failures.len(),
        "timed_out": timed_out.len(),
        "interrupted": interrupted(),
        "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "failures": failures,
    });
    if args.json {
        reporter.event("summary", summary.clone());
    } else {
        eprintln!(
            "{} files: {} uploaded, {} unchanged, {} deleted, {} replaced; {} completed, {} failed{} in {:.1} s",
            local.len(),
            uploaded.len(),
            plan.unchanged.len(),
            deleted,
            replaced,
            completed,
            failures.len(),
            if timed_out.is_empty() {
                String::new()
            } else {
                format!(", {} still processing", timed_out.len())
            },
            started.elapsed().as_secs_f64()
        );
        for f in &failures {
            eprintln!(
                "  failed: {}: {} {}",
                text(&f["path"]),
                text(&f["error_code"]),
                text(&f["error_message"])
            );
        }
    }
    if interrupted() {
        return Err(Exit::new(
            INTERRUPTED,
            "interrupted: what arrived is kept; run the same sync again to finish",
        )
        .into());
    }
    if !timed_out.is_empty() {
        return Err(Exit::new(
            TIMED_OUT,
            format!(
                "{} files were still processing after {}",
                timed_out.len(),
                humantime::format_duration(args.timeout)
            ),
        )
        .into());
    }
    if !failures.is_empty() {
        return Err(Exit::new(SOME_FAILED, format!("{} files failed", failures.len())).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(key: &str, sha: &str) -> Local {
        Local {
            key: key.into(),
            path: PathBuf::from(key),
            size: 1,
            sha256: sha.into(),
        }
    }

    fn remote(id: &str, sha: &str) -> Remote {
        Remote {
            id: id.into(),
            sha256: sha.into(),
            status: "completed".into(),
            error_code: String::new(),
            error_message: String::new(),
        }
    }

    #[test]
    fn the_plan_uploads_new_and_changed_keeps_the_rest_and_deletes_only_when_asked() {
        let here = [
            local("a.txt", "1"),
            local("d/b.txt", "2"),
            local("c.txt", "3"),
        ];
        let mut there = BTreeMap::new();
        there.insert("a.txt".to_string(), vec![remote("f_a", "1")]);
        there.insert("d/b.txt".to_string(), vec![remote("f_b", "old")]);
        there.insert("gone.txt".to_string(), vec![remote("f_g", "9")]);
        // An earlier run's new version of c.txt, and its old one.
        there.insert(
            "c.txt".to_string(),
            vec![remote("f_c_old", "0"), remote("f_c", "3")],
        );
        let p = plan(&here, &there, false);
        let uploads: Vec<(&str, &Vec<String>)> = p
            .uploads
            .iter()
            .map(|(f, old)| (f.key.as_str(), old))
            .collect();
        assert_eq!(uploads, [("d/b.txt", &vec!["f_b".to_string()])]);
        let unchanged: Vec<(&str, &str, &Vec<String>)> = p
            .unchanged
            .iter()
            .map(|(k, r, others)| (k.as_str(), r.id.as_str(), others))
            .collect();
        assert_eq!(
            unchanged,
            [
                ("a.txt", "f_a", &vec![]),
                ("c.txt", "f_c", &vec!["f_c_old".to_string()])
            ]
        );
        assert!(p.removals.is_empty());
        let p = plan(&here, &there, true);
        assert_eq!(
            p.removals,
            [("gone.txt".to_string(), vec!["f_g".to_string()])]
        );
    }

    #[test]
    fn the_walk_honours_gitignore_and_kilnignore_and_keys_by_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/drafts")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("docs/b.md"), "b").unwrap();
        std::fs::write(root.join("docs/drafts/c.md"), "c").unwrap();
        std::fs::write(root.join("build.log"), "x").unwrap();
        std::fs::write(root.join(".hidden"), "h").unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(root.join(".kilnignore"), "drafts/\n").unwrap();
        let files = walk(root).unwrap();
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["a.txt", "docs/b.md"]);
        assert_eq!(
            files[0].sha256,
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        assert_eq!(files[1].size, 1);
    }
}
