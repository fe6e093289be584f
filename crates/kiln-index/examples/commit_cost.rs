//! What the index's commits cost: 1,020 chunks (384-dimensional vectors) added in groups of
//! `GROUP` (default 14, what the pipeline commits together under load), each group one
//! commit, and the process's CPU time for it, merges included.
//!
//! `cargo run --release -p kiln-index --example commit_cost -- [GROUP] [TEXTS]`, where TEXTS
//! is a file of one text per line (without it: generated texts of 200 words).

use kiln_core::ChunkRecord;
use kiln_index::ChunkIndex;

/// The process's CPU time (user + system) in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a number");
    (ticks(11) + ticks(12)) / 100.0
}

/// A deterministic stream of numbers (a linear congruential generator).
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn generated_texts(n: usize, numbers: &mut Numbers) -> Vec<String> {
    (0..n)
        .map(|_| {
            (0..200)
                .map(|_| {
                    // Small numbers more often than large ones: common and rare words.
                    let word = numbers.next() % 5000 * (numbers.next() % 5000) / 5000;
                    format!("w{word}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let group: usize = args.next().map_or(14, |a| a.parse().expect("GROUP"));
    let mut numbers = Numbers(1);
    let texts: Vec<String> = match args.next() {
        Some(path) => std::fs::read_to_string(path)
            .expect("TEXTS")
            .lines()
            .take(1020)
            .map(String::from)
            .collect(),
        None => generated_texts(1020, &mut numbers),
    };
    let records: Vec<ChunkRecord> = texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| ChunkRecord {
            store_id: "vs_bench".into(),
            file_id: format!("file_{i:024}"),
            generation: 1,
            chunk_index: 0,
            text,
            page: None,
            vector: (0..384)
                .map(|_| (numbers.next() % 2000) as f32 / 1000.0 - 1.0)
                .collect(),
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let index = ChunkIndex::open(dir.path(), 384)
        .expect("the index opens")
        .with_group_window(std::time::Duration::ZERO)
        .with_commit_spacing(std::time::Duration::ZERO);
    let (cpu, started) = (cpu_seconds(), std::time::Instant::now());
    for chunks in records.chunks(group.max(1)) {
        index.add(chunks).expect("an add");
    }
    let commits = index.commits();
    index.finish_merges().expect("merges finish");
    let (cpu, wall) = (cpu_seconds() - cpu, started.elapsed().as_secs_f64());
    println!(
        "{} chunks in {commits} commits of {group}: CPU {cpu:.2} s ({:.1} ms a commit), wall {wall:.2} s, merges included",
        records.len(),
        1000.0 * cpu / commits as f64,
    );
}
