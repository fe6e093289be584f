//! Reading a PDF in a child process of its own. The engine is C++: a crash in it ends the
//! child, not the server; a file that takes too long is killed at the time limit instead of
//! being abandoned while it holds the engine; a file that would take all memory makes the
//! child's allocation fail at its cap (Linux), not the machine's; and each worker's file is
//! read on a core of its own (the engine serialises every call within a process). A large
//! file is shared by several children (one per MiB, at most one per core), each taking every
//! N-th page.
//!
//! The child is the `kiln` binary's hidden `extract-pdf` command ([`child_main`]): the PDF on
//! its stdin, the JSON of an [`Answer`] on its stdout.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pdf::Part;
use crate::{Document, ExtractError};

/// How to start a child, and how long it may take.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub limit: Duration,
}

impl ChildCommand {
    /// `program extract-pdf --library LIBRARY`: the `kiln` binary's command for a child.
    pub fn kiln(program: PathBuf, library: &Path, limit: Duration) -> Self {
        ChildCommand {
            program,
            args: vec![
                "extract-pdf".into(),
                "--library".into(),
                library.as_os_str().to_owned(),
            ],
            limit,
        }
    }
}

static CHILD: OnceLock<ChildCommand> = OnceLock::new();

/// What a child writes: its result, and the most memory it held.
#[derive(serde::Serialize, serde::Deserialize)]
struct Answer {
    result: Result<Document, ExtractError>,
    /// Peak resident set (`VmHWM`), KiB.
    peak_rss_kib: Option<u64>,
}

static LARGEST_CHILD_KIB: AtomicU64 = AtomicU64::new(0);

/// The largest peak resident set of a child since the last call, KiB (0: none reported);
/// a bench takes it after each file.
pub fn take_largest_child_rss_kib() -> u64 {
    LARGEST_CHILD_KIB.swap(0, Ordering::Relaxed)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// From now on every PDF of this process is read in a child started by `command` (the first
/// call decides).
pub fn read_pdfs_in_children(command: ChildCommand) {
    let _ = CHILD.set(command);
}

pub(crate) fn installed() -> Option<&'static ChildCommand> {
    CHILD.get()
}

/// A file of this many bytes or more per extra child is read by several at once.
const BYTES_PER_CHILD: usize = 1 << 20;

/// How many children read a file of `len` bytes: one per MiB, at most one per core.
fn children_for(len: usize) -> usize {
    (1 + len / BYTES_PER_CHILD).clamp(1, cores())
}

/// The cores this process may use, asked once (std reads the cgroup's quota files each time).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Reads `bytes` in children started by `command`: a large file in several at once, each
/// taking its share of the pages, their sections put back in page order.
pub(crate) fn run(command: &ChildCommand, bytes: &[u8]) -> Result<Document, ExtractError> {
    let of = children_for(bytes.len());
    if of == 1 {
        return run_part(command, bytes, Part::WHOLE);
    }
    let parts: Vec<_> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..of)
            .map(|index| scope.spawn(move || run_part(command, bytes, Part { index, of })))
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader.join().unwrap_or_else(|_| {
                    Err(ExtractError::Engine("A PDF reader thread failed.".into()))
                })
            })
            .collect()
    });
    merge(parts)
}

/// The parts of one file as one document; any part's error is the file's (the same file
/// fails the same way whichever pages a reader took).
fn merge(parts: Vec<Result<Document, ExtractError>>) -> Result<Document, ExtractError> {
    let mut documents = Vec::with_capacity(parts.len());
    for part in parts {
        documents.push(part?);
    }
    let pages = documents.iter().filter_map(|d| d.pages).max();
    let mut sections: Vec<_> = documents.into_iter().flat_map(|d| d.sections).collect();
    sections.sort_by_key(|s| s.page);
    Ok(Document {
        sections,
        pages,
        extractor: 0,
    })
}

/// Reads the pages of `part` of `bytes` in one child.
fn run_part(command: &ChildCommand, bytes: &[u8], part: Part) -> Result<Document, ExtractError> {
    let mut child = Command::new(&command.program);
    child
        .args(&command.args)
        .arg("--part")
        .arg(part.to_string());
    cap_memory(&mut child, memory_cap(bytes.len()));
    let mut child = child
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            ExtractError::Engine(format!(
                "The PDF reader ({}) could not be started: {e}.",
                command.program.display()
            ))
        })?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ExtractError::Engine("The PDF reader has no pipes.".into()));
    };
    let (done, output) = std::sync::mpsc::channel();
    let output = std::thread::scope(|scope| {
        // A child that dies early closes its end: the write fails, and that is all.
        scope.spawn(move || {
            let _ = stdin.write_all(bytes);
        });
        scope.spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let _ = done.send(out);
        });
        let output = output.recv_timeout(command.limit).ok();
        if output.is_none() {
            // Too slow: killed, which also ends both pipes and so both threads.
            let _ = child.kill();
        }
        output
    });
    let status = child.wait();
    let Some(output) = output else {
        return Err(ExtractError::Timeout);
    };
    match serde_json::from_slice::<Answer>(&output) {
        Ok(answer) => {
            if let Some(kib) = answer.peak_rss_kib {
                LARGEST_CHILD_KIB.fetch_max(kib, Ordering::Relaxed);
            }
            answer.result
        }
        Err(_) => Err(ExtractError::Corrupt(match status {
            Ok(status) => format!("the PDF engine failed on it ({status})"),
            Err(e) => format!("the PDF engine failed on it ({e})"),
        })),
    }
}

/// The address space a child may use: 1 GiB (the binary, the engine, their threads and a
/// page's objects fit in a quarter of that) plus four times the file.
fn memory_cap(file_bytes: usize) -> u64 {
    (1u64 << 30).saturating_add(4 * file_bytes as u64)
}

/// Caps the address space of the process `command` starts, from its first instruction on.
/// (Capping it after the start raced with the child's allocator, which reserves a 1 GiB
/// arena at its first allocation: a child is at 1.10 GB of address space before it reads
/// its input, over a 2 MB file's cap, and one full bench run in about twenty lost a file.)
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn cap_memory(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = rustix::process::Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe work is allowed: it makes one system call (setrlimit, through
    // rustix's raw syscall backend) and allocates nothing. Without a cap the child still
    // runs, bounded by the time limit.
    unsafe {
        command.pre_exec(move || {
            let _ = rustix::process::setrlimit(rustix::process::Resource::As, limit);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn cap_memory(_command: &mut Command, _bytes: u64) {}

/// The child's side: loads the engine from `library`, reads a PDF from stdin and writes the
/// result to stdout. Returns the process's exit code.
pub fn child_main(library: &Path, part: Part) -> i32 {
    let result = crate::pdfium::load(library)
        .map_err(|e| ExtractError::Engine(format!("The PDF engine cannot be loaded: {e}")))
        .and_then(|()| {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| ExtractError::Engine(format!("The PDF could not be read: {e}")))?;
            crate::guarded(|| crate::pdf::read_part(&bytes, part))
        });
    let answer = Answer {
        result,
        peak_rss_kib: peak_rss_kib(),
    };
    let Ok(json) = serde_json::to_vec(&answer) else {
        return 2;
    };
    match std::io::stdout().lock().write_all(&json) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str, limit: Duration) -> ChildCommand {
        ChildCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            limit,
        }
    }

    #[test]
    fn the_childs_answer_comes_back_and_its_input_is_the_file() {
        // A child that answers with what it was given, as a one-section document.
        let echo = shell(
            r#"printf '{"result":{"Ok":{"sections":[{"title":null,"page":1,"kind":{"type":"prose"},"text":"%s"}],"pages":1}},"peak_rss_kib":4242}' "$(cat)""#,
            Duration::from_secs(10),
        );
        let document = run(&echo, b"kiln glaze").unwrap();
        assert_eq!(document.sections[0].text, "kiln glaze");
        assert_eq!(document.pages, Some(1));
        assert!(take_largest_child_rss_kib() >= 4242);
        let refusal = shell(
            r#"cat >/dev/null; printf '{"result":{"Err":"Encrypted"},"peak_rss_kib":null}'"#,
            Duration::from_secs(10),
        );
        assert_eq!(run(&refusal, b"%PDF-"), Err(ExtractError::Encrypted));
    }

    #[test]
    fn parts_come_back_in_page_order_and_any_parts_error_is_the_files() {
        let section = |page: u32| crate::Section {
            title: None,
            page: Some(page),
            kind: crate::SectionKind::Prose,
            text: format!("page {page}"),
        };
        let part = |pages: &[u32]| {
            Ok(Document {
                sections: pages.iter().copied().map(section).collect(),
                pages: Some(5),
                extractor: 0,
            })
        };
        let merged = merge(vec![part(&[1, 3, 5]), part(&[2, 4])]).unwrap();
        let order: Vec<_> = merged.sections.iter().map(|s| s.page.unwrap()).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
        assert_eq!(merged.pages, Some(5));
        assert_eq!(
            merge(vec![part(&[1]), Err(ExtractError::Timeout)]),
            Err(ExtractError::Timeout)
        );
        // One child per MiB, never more than the cores.
        assert_eq!(children_for(1000), 1);
        let available = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(children_for(3 << 20), available.min(4));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_may_use_a_gibibyte_and_four_times_the_file() {
        let report = shell(
            // The limit as the child starts, before it has read anything.
            r#"v=$(ulimit -v); cat >/dev/null; printf '{"result":{"Ok":{"sections":[{"title":null,"page":1,"kind":{"type":"prose"},"text":"%s"}],"pages":1}},"peak_rss_kib":null}' "$v""#,
            Duration::from_secs(10),
        );
        let document = run(&report, &[0u8; 1000]).unwrap();
        // `ulimit -v` counts KiB.
        assert_eq!(
            document.sections[0].text,
            (((1u64 << 30) + 4 * 1000) / 1024).to_string()
        );
    }

    #[test]
    fn a_crashed_child_is_a_corrupt_file_and_a_slow_one_is_killed_at_the_limit() {
        let crash = shell("kill -SEGV $$", Duration::from_secs(10));
        match run(&crash, &[0u8; 1 << 20]) {
            Err(ExtractError::Corrupt(why)) => assert!(why.contains("signal"), "{why}"),
            other => panic!("{other:?}"),
        }
        let started = std::time::Instant::now();
        let slow = shell("exec sleep 30", Duration::from_millis(300));
        assert_eq!(run(&slow, b"%PDF-"), Err(ExtractError::Timeout));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let missing = ChildCommand {
            program: "/nonexistent/kiln".into(),
            args: Vec::new(),
            limit: Duration::from_secs(1),
        };
        assert!(matches!(run(&missing, b""), Err(ExtractError::Engine(_))));
    }
}
