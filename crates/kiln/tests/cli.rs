//! The `kiln` binary as an operator runs it: first start, admin commands against a data dir
//! while a server runs on it, SIGTERM, restart, `config show`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn kiln() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    // The tests' configuration comes from flags only.
    for (name, _) in std::env::vars() {
        if name.starts_with("KILN_") {
            command.env_remove(name);
        }
    }
    command
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    base_url: String,
    printed: Vec<String>,
}

fn serve(dir: &Path) -> Running {
    let mut child = kiln()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env(
            "KILN_EMBEDDING__MODELS_DIR",
            kiln_embed::fetch::shared_models_dir(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln serve starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let base_url = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the server says where it listens");
        if let Some(url) = line.strip_prefix("Kiln is listening on ") {
            break url.to_string();
        }
        printed.push(line);
    };
    Running {
        child,
        lines,
        base_url,
        printed,
    }
}

fn terminate(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "graceful exit on SIGTERM, got {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(running.lines);
}

fn admin(dir: &Path, args: &[&str]) -> Value {
    let output = kiln()
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kiln admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("admin output is JSON")
}

fn status_of(url: &str, key: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn first_start_admin_commands_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(dir.path());

    // The first start prints the key once and writes it, mode 0600.
    let key = running
        .printed
        .iter()
        .find(|line| line.starts_with("ak_"))
        .expect("the first start prints the admin key")
        .clone();
    assert_eq!(key.len(), 43);
    let key_file = dir.path().join("initial-admin-key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        status_of(&format!("{}/v1/organizations", running.base_url), &key),
        200
    );

    // Admin commands work on the data dir while the server runs.
    let orgs = admin(dir.path(), &["org", "list"]);
    assert_eq!(orgs.as_array().unwrap().len(), 1);
    assert_eq!(orgs[0]["name"], "default");
    let acme = admin(dir.path(), &["org", "create", "acme"]);
    let acme_id = acme["id"].as_str().unwrap();
    assert!(acme_id.starts_with("org_"));
    let created = admin(
        dir.path(),
        &[
            "key", "create", "--org", acme_id, "--role", "reader", "--name", "ci",
        ],
    );
    let reader_key = created["key"].as_str().unwrap();
    let reader_id = created["id"].as_str().unwrap();
    assert_eq!(created["role"], "reader");
    let org_url = format!("{}/v1/organizations/{acme_id}", running.base_url);
    assert_eq!(status_of(&org_url, reader_key), 200);
    // The default organization's key cannot read acme.
    assert_eq!(status_of(&org_url, &key), 403);

    let listed = admin(dir.path(), &["key", "list", "--org", acme_id]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], reader_id);
    assert!(
        listed[0].get("key").is_none(),
        "key values are never listed"
    );
    assert!(!listed.to_string().contains(reader_key));
    assert_eq!(
        admin(dir.path(), &["key", "list"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let revoked = admin(dir.path(), &["key", "revoke", reader_id]);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(status_of(&org_url, reader_key), 401);

    // Bad input to the operator tool fails with a message, not a panic.
    let output = kiln()
        .args([
            "admin",
            "key",
            "create",
            "--org",
            "org_missing",
            "--role",
            "admin",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));

    terminate(running);

    // A restart keeps everything and prints no new key.
    let running = serve(dir.path());
    assert!(
        running.printed.iter().all(|line| !line.contains("ak_")),
        "{:?}",
        running.printed
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    assert_eq!(
        status_of(&format!("{}/v1/organizations", running.base_url), &key),
        200
    );
    assert_eq!(
        admin(dir.path(), &["org", "list"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    terminate(running);
}

#[test]
fn config_show_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kiln.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9999\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let output = kiln()
        .args(["config", "show", "--data-dir", "/srv/kiln", "--config"])
        .arg(&file)
        .env("KILN_HTTP__REQUEST_TIMEOUT_SECS", "9")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: toml::Value = toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert_eq!(shown["data_dir"].as_str(), Some("/srv/kiln"));
    assert_eq!(shown["listen"].as_str(), Some("127.0.0.1:9999"));
    assert_eq!(shown["log"]["format"].as_str(), Some("json"));
    assert_eq!(shown["http"]["request_timeout_secs"].as_integer(), Some(9));
    assert_eq!(
        shown["http"]["max_json_body_bytes"].as_integer(),
        Some(1_048_576)
    );

    // A variable that names no server key (a client's, a test's, or a typo) is left out with a
    // warning naming it; a misspelt key inside a known section is refused.
    let output = kiln()
        .args(["config", "show"])
        .env("KILN_LISTEN_TYPO", "x")
        .env("KILN_API_KEY", "sk-client")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("KILN_API_KEY, KILN_LISTEN_TYPO") && stderr.contains("KILN_HTTP"),
        "{stderr}"
    );
    let output = kiln()
        .args(["config", "show"])
        .env("KILN_HTTP__REQUEST_TIMEOUT", "9")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "unknown settings are refused");
    assert!(stderr.contains("request_timeout"), "{stderr}");
}

#[test]
fn model_show_tells_whether_the_model_and_the_pdf_engine_are_intact() {
    let shared = kiln_embed::fetch::shared_models_dir();
    kiln_extract::pdfium::ensure(&shared).expect("the PDF engine can be fetched");
    kiln_embed::fetch::ensure(&shared).expect("the model can be fetched");
    let show = |models_dir: &Path| {
        let output = kiln()
            .args(["model", "show"])
            .env("KILN_EMBEDDING__MODELS_DIR", models_dir)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let ready = show(&shared);
    assert!(
        ready.contains("pdf engine: PDFium from PyPI pypdfium2==5.15.2")
            && ready.contains("pdf engine state: present, checksums verified"),
        "{ready}"
    );
    let empty = tempfile::tempdir().unwrap();
    let missing = show(empty.path());
    assert!(
        missing.contains("pdf engine state: not ready: libpdfium.so is missing"),
        "{missing}"
    );
}
