//! The official Aitronos Python client (`aitronos-sdk` 5.0.0, installed by
//! `scripts/sdk-venv.sh` into a venv under the cache) against a real `kiln serve` process,
//! through all 22 endpoints of the vector-stores and organization-files family
//! (`tests/sdk/client.py` checks each answer's values). Then, from here: the deleted
//! organization file's original is purged from blob storage.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{config_for, spawn_kiln};

fn sdk_python() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/sdk-venv.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("bash runs scripts/sdk-venv.sh");
    assert!(
        out.status.success(),
        "installing aitronos-sdk 5.0.0 into the cache's venv failed (PyPI must be reachable): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_works_through_every_endpoint_of_its_family() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, key) = spawn_kiln(dir.path(), &[], &[]);
    let key = key.expect("a new data dir prints its admin key");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("KILN_URL", &url)
            .env("KILN_API_KEY", &key)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let finished = out.status.success();
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(finished, "the client script failed:\n{stderr}\n{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("the script's JSON report");
    eprintln!("aitronos-sdk: {report}");
    assert!(report["checks"].as_u64().unwrap() >= 75, "{report}");

    // The deleted organization file's original is purged by its job.
    let (_, blobs) = kiln::server::open_storage(&config_for(dir.path()))
        .await
        .unwrap();
    let path: kiln_blobs::BlobPath = report["deleted_storage_path"].as_str().unwrap().into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while blobs.get(&path).await.is_ok() {
        assert!(Instant::now() < deadline, "{path} was not purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
