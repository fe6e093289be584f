//! The client commands as people run them: the real `kiln` binary (`login`, `sync`,
//! `search`, `files`, `stores`, `usage`) against a real server on loopback.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::TestServer;
use serde_json::{Value, json};

/// `kiln` with a home of its own and no `KILN_*` variables from the test's environment.
fn kiln(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KILN_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null());
    command
}

/// Runs `kiln ARGS` to the end (off the async runtime, which serves the server).
async fn run(home: &Path, args: &[&str]) -> Output {
    let mut command = kiln(home);
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON lines of a `--json` run; the last must be the summary.
fn json_lines(output: &Output) -> (Vec<Value>, Value) {
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let summary = lines.last().expect("a summary").clone();
    assert_eq!(summary["event"], "summary", "{lines:?}");
    (lines, summary)
}

fn count(lines: &[Value], event: &str) -> usize {
    lines.iter().filter(|l| l["event"] == event).count()
}

async fn login(t: &TestServer, home: &Path) {
    let mut command = kiln(home);
    command
        .args(["login", "--url", &t.server.base_url(), "--key-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let key = t.key.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
}

/// Every file of a store by its path: IDs, statuses.
async fn store_files(t: &TestServer, store: &str) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    let mut skip = 0;
    loop {
        let (_, page) = t
            .get(&t.files_path(store, &format!("?limit=100&skip={skip}")))
            .await;
        let items = page["items"].as_array().unwrap().clone();
        skip += items.len();
        for f in items {
            let key = match f["relative_path"].as_str().filter(|p| !p.is_empty()) {
                Some(dir) => format!("{dir}/{}", f["file_name"].as_str().unwrap()),
                None => f["file_name"].as_str().unwrap().to_string(),
            };
            out.entry(key).or_default().push(f);
        }
        if page["has_more"] != true {
            return out;
        }
    }
}

async fn store_named(t: &TestServer, name: &str) -> String {
    let (_, stores) = t.get(&t.org_path("/knowledge/stores?limit=100")).await;
    stores["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .expect("the store exists")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A folder of generated documents, plus a few of the shared documents when present.
fn folder(root: &Path) -> usize {
    let topics = [
        "kilns",
        "glazes",
        "clay bodies",
        "firing schedules",
        "wheel throwing",
    ];
    let mut n = 0;
    for (i, topic) in topics.iter().enumerate() {
        for j in 0..4 {
            write(
                &root.join(format!("notes/{i}/doc{j}.txt")),
                &format!("Notes {i}.{j} on {topic}. ").repeat(20),
            );
            n += 1;
        }
    }
    write(
        &root.join("readme.md"),
        "# Studio handbook\n\nHow the studio works.",
    );
    write(&root.join("scratch.tmp"), "ignored by .kilnignore");
    write(&root.join(".kilnignore"), "*.tmp\n");
    n += 1;
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/evaldata/documents");
    for sub in ["markdown", "csv"] {
        let Ok(entries) = std::fs::read_dir(shared.join(sub)) else {
            kiln_testkit::skipped(
                "sync of the shared documents (generated ones still sync)",
                &format!("{} is missing", shared.join(sub).display()),
            );
            continue;
        };
        // The small ones: the model's time on the large ones would only slow the test.
        for entry in entries.flatten() {
            if entry.metadata().map_or(true, |m| m.len() > 16 * 1024) {
                continue;
            }
            let target = root.join("shared").join(sub).join(entry.file_name());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(entry.path(), target).unwrap();
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn sync_uploads_what_changed_deletes_what_left_and_reports_failures() {
    let t = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    login(&t, home.path()).await;
    let profile = home.path().join(".config/kiln/profiles.toml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the profile holds a key: only its owner may read it"
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("studio");
    let files = folder(&root);
    let root_arg = root.to_str().unwrap();

    // First sync: everything goes up, waits, and is reported.
    let out = run(
        home.path(),
        &["sync", root_arg, "--store", "studio", "--json"],
    )
    .await;
    let (lines, summary) = json_lines(&out);
    assert_eq!(summary["files"], files, "{summary}");
    assert_eq!(summary["uploaded"], files);
    assert_eq!(count(&lines, "created_store"), 1);
    let failures = summary["failures"].as_array().unwrap();
    for f in failures {
        assert!(
            f["error_code"].as_str().is_some_and(|c| !c.is_empty()),
            "{f}"
        );
    }
    assert_eq!(
        summary["completed"].as_u64().unwrap() + failures.len() as u64,
        files as u64
    );
    assert_eq!(
        code(&out),
        if failures.is_empty() { 0 } else { 3 },
        "{}",
        stderr(&out)
    );
    let store = store_named(&t, "studio").await;
    let held = store_files(&t, &store).await;
    assert_eq!(held.len(), files);
    assert!(held.values().all(|v| v.len() == 1), "each file once");
    assert!(!held.contains_key("scratch.tmp"), ".kilnignore is honoured");
    assert!(held.contains_key("notes/2/doc3.txt"));

    // A change, a deletion and an addition.
    write(
        &root.join("notes/0/doc0.txt"),
        "Rewritten: the quokka kiln fires at cone ten.",
    );
    std::fs::remove_file(root.join("notes/1/doc1.txt")).unwrap();
    write(
        &root.join("notes/new.txt"),
        "A new page about zanzibar wood ash.",
    );
    let before = store_files(&t, &store).await;

    // A dry run says so and changes nothing.
    let out = run(
        home.path(),
        &[
            "sync",
            root_arg,
            "--store",
            "studio",
            "--delete",
            "--dry-run",
            "--json",
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (lines, summary) = json_lines(&out);
    assert_eq!(count(&lines, "would_upload"), 2, "{lines:?}");
    assert_eq!(count(&lines, "would_delete"), 1);
    assert_eq!(summary["upload"], 2);
    let after_dry: HashMap<String, Vec<String>> = store_files(&t, &store)
        .await
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|f| f["id"].to_string()).collect()))
        .collect();
    let before_ids: HashMap<String, Vec<String>> = before
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|f| f["id"].to_string()).collect()))
        .collect();
    assert_eq!(after_dry, before_ids, "a dry run changed the store");

    // Only those three move.
    let out = run(
        home.path(),
        &["sync", root_arg, "--store", "studio", "--delete", "--json"],
    )
    .await;
    let (lines, summary) = json_lines(&out);
    assert_eq!(summary["uploaded"], 2, "{summary}");
    assert_eq!(summary["deleted"], 1);
    assert_eq!(summary["replaced"], 1);
    assert_eq!(summary["unchanged"], files - 2);
    let uploaded: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "uploaded")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert!(uploaded.contains(&"notes/0/doc0.txt") && uploaded.contains(&"notes/new.txt"));
    let held = store_files(&t, &store).await;
    assert!(
        held.values().all(|v| v.len() == 1),
        "the old version was replaced"
    );
    assert!(!held.contains_key("notes/1/doc1.txt"));
    // Search finds the new text and not the old.
    let (_, found) = t
        .search(&store, json!({"query": "quokka", "mode": "keyword"}))
        .await;
    assert_eq!(found["results"][0]["file_name"], "doc0.txt", "{found}");
    let (_, old) = t
        .search(
            &store,
            json!({"query": "Notes 0.0", "mode": "keyword", "top_k": 100}),
        )
        .await;
    assert!(
        old["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["text"].as_str().unwrap().contains("Notes 0.0 on")),
        "the old version is still searchable: {old}"
    );

    // Files that fail — one empty, one over its type's limit, one large enough to go through
    // the upload URL (in pieces) that is no PDF inside: exit 3, each with its code.
    write(&root.join("blank.txt"), "  \n ");
    std::fs::write(root.join("big-blank.txt"), vec![b' '; 11 * 1024 * 1024]).unwrap();
    let mut fake = b"%PDF-1.4\n".to_vec();
    fake.resize(17 * 1024 * 1024, b' ');
    std::fs::write(root.join("big.pdf"), fake).unwrap();
    let out = run(home.path(), &["sync", root_arg, "--store", "studio"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("failed: blank.txt: NO_TEXT_EXTRACTED"),
        "{text}"
    );
    assert!(
        text.contains("failed: big-blank.txt: FILE_TOO_LARGE"),
        "{text}"
    );
    assert!(text.contains("failed: big.pdf: "), "{text}");
    let held = store_files(&t, &store).await;
    assert_eq!(held["big.pdf"][0]["file_size"], 17 * 1024 * 1024);
    assert_eq!(held["big.pdf"][0]["status"], "failed");
    assert!(
        !held.contains_key("big-blank.txt"),
        "a refused upload leaves nothing"
    );
    std::fs::remove_file(root.join("big-blank.txt")).unwrap();
    std::fs::remove_file(root.join("big.pdf")).unwrap();

    // The other commands.
    let out = run(
        home.path(),
        &["files", "retry", "--store", "studio", "--all-failed"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("queued again"), "{}", stderr(&out));
    let out = run(
        home.path(),
        &["search", "zanzibar wood ash", "--store", "studio", "--json"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["results"][0]["file_name"], "new.txt");
    let out = run(
        home.path(),
        &[
            "files",
            "status",
            "--store",
            "studio",
            "notes/new.txt",
            "--json",
        ],
    )
    .await;
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "completed");
    let out = run(
        home.path(),
        &["files", "rm", "--store", "studio", "blank.txt"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(home.path(), &["files", "ls", "--store", "studio"]).await;
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.starts_with("ID") && listing.contains("notes/new.txt"),
        "{listing}"
    );
    assert!(
        !listing.contains("blank.txt\n") && !listing.contains(" blank.txt "),
        "{listing}"
    );
    let out = run(home.path(), &["stores", "ls"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("studio"));
    let out = run(home.path(), &["usage", "--json"]).await;
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(usage["total_bytes"].as_u64().unwrap() > 0, "{usage}");
}

#[tokio::test]
async fn exit_codes_say_what_went_wrong() {
    let t = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    // No profile yet: a usage error that says what to do.
    let out = run(home.path(), &["stores", "ls"]).await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("kiln login"), "{}", stderr(&out));
    // Bad arguments.
    let out = run(home.path(), &["sync"]).await;
    assert_eq!(code(&out), 2);
    login(&t, home.path()).await;
    // A refused key (KILN_API_KEY overrides the profile's).
    let mut command = kiln(home.path());
    command
        .args(["stores", "ls"])
        .env("KILN_API_KEY", format!("ak_{}", "x".repeat(40)));
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    // Nobody listening (KILN_URL overrides the profile's).
    let mut command = kiln(home.path());
    command
        .args(["stores", "ls"])
        .env("KILN_URL", "http://127.0.0.1:9");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    // Stores come and go by name.
    let out = run(home.path(), &["stores", "create", "scratch"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("vs_"), "{id}");
    let out = run(home.path(), &["stores", "ls", "--json"]).await;
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str())
    );
    let out = run(home.path(), &["stores", "rm", "scratch"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(home.path(), &["stores", "rm", "scratch"]).await;
    assert_eq!(code(&out), 1, "a store that is gone: {}", stderr(&out));
    // A named profile.
    let out = run(home.path(), &["--profile", "nope", "stores", "ls"]).await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("'nope'"), "{}", stderr(&out));
}

#[tokio::test]
async fn an_interrupted_sync_and_a_second_one_leave_every_file_exactly_once() {
    let t = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    login(&t, home.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let n = 150;
    for i in 0..n {
        write(
            &dir.path().join(format!("f{i:03}.txt")),
            &format!("File number {i} of the interrupted sync. ").repeat(10),
        );
    }
    let mut command = kiln(home.path());
    command
        .args([
            "sync",
            dir.path().to_str().unwrap(),
            "--store",
            "cut",
            "--json",
            "--concurrency",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, seen) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = command.spawn().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut uploaded = 0;
        let mut lines = stdout.lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("\"event\":\"uploaded\"") {
                uploaded += 1;
            }
            if uploaded == 10 {
                // Ctrl-C, mid-upload.
                rustix::process::kill_process(
                    rustix::process::Pid::from_child(&child),
                    rustix::process::Signal::INT,
                )
                .unwrap();
                break;
            }
        }
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        (child.wait().unwrap(), rest)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(130), "{seen:?}");
    let summary: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(
        summary["uploaded"].as_u64().unwrap() < n as u64,
        "{summary}"
    );

    let out = run(
        home.path(),
        &[
            "sync",
            dir.path().to_str().unwrap(),
            "--store",
            "cut",
            "--json",
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (_, summary) = json_lines(&out);
    assert_eq!(
        summary["uploaded"].as_u64().unwrap() + summary["unchanged"].as_u64().unwrap(),
        n as u64
    );
    let held = store_files(&t, &store_named(&t, "cut").await).await;
    assert_eq!(held.len(), n);
    for (key, versions) in &held {
        assert_eq!(
            versions.len(),
            1,
            "{key} is in the store {} times",
            versions.len()
        );
        assert_eq!(versions[0]["status"], "completed", "{key}");
    }
}

#[tokio::test]
async fn progress_is_bars_on_a_terminal_lines_otherwise_and_json_on_request() {
    let t = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    login(&t, home.path()).await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        write(
            &dir.path().join(format!("p{i}.txt")),
            &format!("Progress file {i}. ").repeat(300),
        );
    }
    let folder = dir.path().to_str().unwrap().to_string();

    // Under a pseudo-terminal (util-linux `script`): bars redrawn in place.
    let mut command = Command::new("script");
    command
        .args(["-qfec"])
        .arg(format!(
            "{} sync {folder} --store bars",
            env!("CARGO_BIN_EXE_kiln")
        ))
        .arg("/dev/null")
        .env("HOME", home.path())
        .stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("KILN_") {
            command.env_remove(name);
        }
    }
    let out = tokio::task::spawn_blocking(move || command.output().expect("`script` runs"))
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 0, "{screen}");
    assert!(screen.contains("\x1b[2K"), "no bar was redrawn: {screen:?}");
    assert!(screen.contains("files"), "{screen:?}");
    assert!(screen.contains("6 files: 6 uploaded"), "{screen:?}");

    // Not a terminal: plain lines, no escape codes.
    for i in 0..3 {
        write(
            &dir.path().join(format!("q{i}.txt")),
            &format!("Plain {i}. ").repeat(50),
        );
    }
    let out = run(home.path(), &["sync", &folder, "--store", "bars"]).await;
    let text = stderr(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert_eq!(text.matches("uploaded  q").count(), 3, "{text}");
    assert_eq!(text.matches("completed q").count(), 3, "{text}");

    // --json: one object per line, a summary last.
    for i in 0..2 {
        write(
            &dir.path().join(format!("r{i}.txt")),
            &format!("Json {i}. ").repeat(3000),
        );
    }
    let out = run(home.path(), &["sync", &folder, "--store", "bars", "--json"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (lines, summary) = json_lines(&out);
    assert_eq!(count(&lines, "uploaded"), 2);
    assert_eq!(count(&lines, "completed"), 2);
    assert_eq!(summary["unchanged"], 9);
    assert!(lines.iter().all(|l| l["event"].is_string()));
}

/// A loopback proxy to `upstream` that cuts the first connection carrying a `PUT` after
/// about 1 MiB of its body: a dropped connection mid-upload. Returns its address, whether it
/// has cut one, and whether a client then asked what arrived (`Content-Range: bytes */N`).
async fn cutting_proxy(
    upstream: std::net::SocketAddr,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    let asked = std::sync::Arc::new(AtomicBool::new(false));
    let (flag, asked_flag) = (cut.clone(), asked.clone());
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let (flag, asked) = (flag.clone(), asked_flag.clone());
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let mut first = vec![0u8; 64 * 1024];
                let n = client.read(&mut first).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                server.write_all(&first[..n]).await.unwrap();
                let head = String::from_utf8_lossy(&first[..n]).to_ascii_lowercase();
                if flag.load(Ordering::SeqCst) && head.contains("content-range: bytes */") {
                    asked.store(true, Ordering::SeqCst);
                }
                if first.starts_with(b"PUT ") && !flag.swap(true, Ordering::SeqCst) {
                    // Pass on about a megabyte, then drop both sides.
                    let mut passed = n;
                    while passed < 1024 * 1024 {
                        let n = client.read(&mut first).await.unwrap_or(0);
                        if n == 0 || server.write_all(&first[..n]).await.is_err() {
                            break;
                        }
                        passed += n;
                    }
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (format!("http://{addr}"), cut, asked)
}

#[tokio::test]
async fn a_large_upload_resumes_after_its_connection_drops() {
    let t = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let (proxy, cut, asked) = cutting_proxy(t.server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    // 20 MiB: through the upload URL, in three pieces (no PDF inside: it fails processing,
    // which is not what this test is about).
    let mut fake = b"%PDF-1.4\n".to_vec();
    fake.resize(20 * 1024 * 1024, b'x');
    std::fs::write(dir.path().join("large.pdf"), &fake).unwrap();
    let mut command = kiln(home.path());
    command
        .args([
            "sync",
            dir.path().to_str().unwrap(),
            "--store",
            "resume",
            "--json",
        ])
        .env("KILN_URL", &proxy)
        .env("KILN_API_KEY", &t.key);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy never cut a PUT"
    );
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        "after the cut the client never asked what had arrived (it did not resume)"
    );
    let (lines, summary) = json_lines(&out);
    assert_eq!(summary["uploaded"], 1, "{lines:?} {}", stderr(&out));
    let held = store_files(&t, &store_named(&t, "resume").await).await;
    let file = &held["large.pdf"][0];
    assert_eq!(file["file_size"], 20 * 1024 * 1024);
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&fake))
    };
    assert_eq!(
        file["sha256"], expected,
        "the bytes arrived whole and in order"
    );
}
