//! For Kiln's tests only. A test whose setup is missing (a service, the shared documents, a
//! kernel feature) cannot check anything; it must not pass as if it had. It calls
//! [`skipped`], which says so on stderr and appends a line to the file named by
//! `KILN_SKIP_LOG`; the test command (`scripts/test.sh`) prints that file at the end, so
//! every skip is reported with its reason. With `KILN_TEST_STRICT=1` a skip fails instead.
//!
//! A test that runs in the other backend's pass (`KILN_TEST_BACKEND`) is not missing
//! anything: it calls [`elsewhere`], reported apart.

use std::io::Write;

/// `test` could not run because of `reason` (a missing setup).
pub fn skipped(test: &str, reason: &str) {
    if std::env::var_os("KILN_TEST_STRICT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run (KILN_TEST_STRICT=1): {reason}");
    }
    record("SKIPPED", test, reason);
}

/// `test` runs in the other pass of the suite, not this one (`reason` says which).
pub fn elsewhere(test: &str, reason: &str) {
    record("ELSEWHERE", test, reason);
}

fn record(kind: &str, test: &str, reason: &str) {
    let line = format!("{kind} {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("KILN_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(err) = appended {
            panic!("cannot record a skip in {}: {err}", path.to_string_lossy());
        }
    }
}
