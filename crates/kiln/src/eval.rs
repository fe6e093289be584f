//! `kiln eval`: the retrieval quality of Kiln's search on a BEIR-format dataset, measured from
//! the outside. A server is started on loopback, every document is uploaded through the HTTP
//! API as one file (`{id}.txt`, the title as its first line), and each judged query is run
//! through the search endpoint in each mode. Scores are `pytrec_eval`'s (trec_eval's
//! `ndcg_cut.10` and `recall.100`).
//!
//! Search answers chunks; a document's rank is that of its first (best) chunk, and later
//! chunks of the same document are skipped, as BEIR does with passages of one document.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use kiln_core::config::Config;
use reqwest::Method;
use serde_json::{Value, json};

use crate::bench::load_corpus;
use crate::client::ApiClient;
use crate::server::{Options, Server};
use crate::settings::initial_key_path;

/// Relevance judgments: query → document → grade (0 or less: not relevant).
pub type Qrels = HashMap<String, HashMap<String, i64>>;

/// The search modes, in the order they are reported.
pub const MODES: [&str; 3] = ["keyword", "semantic", "hybrid"];

/// The most results one search returns (contract §11), so Recall@100 is over one page.
const DEPTH: usize = 100;

/// nDCG at cut-off `k` as trec_eval's `ndcg_cut`: gain = the judged grade, discount
/// log2(rank + 1), the ideal ordering built from every judged relevant document of the query
/// (not only the retrieved ones). 0 when the query has no relevant document.
pub fn ndcg_at(ranking: &[String], judged: &HashMap<String, i64>, k: usize) -> f64 {
    let gain = |grade: i64| grade.max(0) as f64;
    let discount = |i: usize| ((i + 2) as f64).log2();
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, doc)| gain(judged.get(doc).copied().unwrap_or(0)) / discount(i))
        .sum();
    let mut ideal: Vec<i64> = judged.values().copied().filter(|g| *g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| gain(*g) / discount(i))
        .sum();
    if idcg > 0.0 { dcg / idcg } else { 0.0 }
}

/// Recall at cut-off `k` as trec_eval's `recall`: relevant documents among the first `k`,
/// over all judged relevant documents of the query.
pub fn recall_at(ranking: &[String], judged: &HashMap<String, i64>, k: usize) -> f64 {
    let relevant = judged.values().filter(|g| **g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranking
        .iter()
        .take(k)
        .filter(|doc| judged.get(*doc).is_some_and(|g| *g > 0))
        .count();
    found as f64 / relevant as f64
}

/// Mean scores over the judged queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
    /// Judged queries.
    pub queries: usize,
    /// Judged queries without any result (they count as 0).
    pub empty: usize,
}

/// Means of nDCG@10 and Recall@100 over every judged query. `pytrec_eval` scores only the
/// queries present in the run; here a judged query without results counts as 0 (and is
/// reported), which is the same whenever every query has results.
pub fn evaluate(qrels: &Qrels, runs: &HashMap<String, Vec<String>>) -> Scores {
    let mut scores = Scores {
        ndcg_at_10: 0.0,
        recall_at_100: 0.0,
        queries: qrels.len(),
        empty: 0,
    };
    for (query, judged) in qrels {
        match runs.get(query).filter(|r| !r.is_empty()) {
            Some(ranking) => {
                scores.ndcg_at_10 += ndcg_at(ranking, judged, 10);
                scores.recall_at_100 += recall_at(ranking, judged, 100);
            }
            None => scores.empty += 1,
        }
    }
    if scores.queries > 0 {
        scores.ndcg_at_10 /= scores.queries as f64;
        scores.recall_at_100 /= scores.queries as f64;
    }
    scores
}

/// Reads a BEIR qrels file (`query-id<TAB>corpus-id<TAB>score`, a header line, any line
/// endings).
pub fn load_qrels(path: &Path) -> anyhow::Result<Qrels> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut qrels = Qrels::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
        if fields.len() < 3 || (n == 0 && fields[2].parse::<i64>().is_err()) {
            continue;
        }
        let grade = fields[2]
            .trim()
            .parse::<i64>()
            .with_context(|| format!("{}:{}: bad score {:?}", path.display(), n + 1, fields[2]))?;
        qrels
            .entry(fields[0].to_string())
            .or_default()
            .insert(fields[1].to_string(), grade);
    }
    Ok(qrels)
}

/// Reads BEIR queries (`{"_id", "text"}` per line).
pub fn load_queries(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut queries = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let query: Value = serde_json::from_str(line)?;
        if let (Some(id), Some(text)) = (query["_id"].as_str(), query["text"].as_str()) {
            queries.insert(id.to_string(), text.to_string());
        }
    }
    Ok(queries)
}

/// What `kiln eval` runs (its command-line arguments).
#[derive(Debug, clap::Args)]
pub struct EvalOptions {
    /// A BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv.
    #[arg(long, default_value = "../shared/evaldata/retrieval/scifact")]
    pub dataset: PathBuf,
    /// Which judgments to score (tune on `train` only).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Keep the server's data here; a second run reuses what is already ingested.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Only the first N documents (a smoke run: scores are then not comparable).
    #[arg(long)]
    pub docs: Option<usize>,
    /// Only the first N judged queries (by ID).
    #[arg(long)]
    pub queries: Option<usize>,
    /// Modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = MODES.map(String::from))]
    pub modes: Vec<String>,
    /// Searches in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Write a TREC run file per mode (MODE.trec) into this folder, for pytrec_eval or
    /// trec_eval.
    #[arg(long)]
    pub run_files: Option<PathBuf>,
    /// Paragraph queries derived from the dataset's documents instead of its own queries:
    /// see `paragraph_queries` (splits `train` and `test`).
    #[arg(long)]
    pub paragraph_queries: bool,
}

/// What one evaluation runs: the documents to ingest, the queries and their judgments.
struct Benchmark {
    name: String,
    documents: Vec<(String, String)>,
    queries: HashMap<String, String>,
    qrels: Qrels,
}

/// A document needs this many sentences to be cut into a paragraph query and its answer.
const PARAGRAPH_MIN_SENTENCES: usize = 6;

/// A benchmark of long queries in other words, made from a corpus of abstracts (`title\ntext`
/// per document): each document of at least six sentences is cut in two; the first half of
/// its text, a paragraph, becomes a query, and the title with the second half becomes the
/// one document judged relevant to it. Shorter documents stay whole, as distractors. The
/// query shares the answer's topic but none of its sentences, as when a user pastes a
/// paragraph to find what continues or discusses it. A query belongs to the `train` split
/// when its document's ID hashes even, else to `test`. A first half longer than the API's
/// 4,000 characters keeps as many whole sentences as fit.
fn paragraph_queries(
    documents: Vec<(String, String)>,
    split: &str,
) -> (Vec<(String, String)>, HashMap<String, String>, Qrels) {
    let mut corpus = Vec::with_capacity(documents.len());
    let mut queries = HashMap::new();
    let mut qrels = Qrels::new();
    for (id, text) in documents {
        let (title, body) = text.split_once('\n').unwrap_or(("", text.as_str()));
        let sentences = sentences(body);
        if sentences.len() < PARAGRAPH_MIN_SENTENCES {
            corpus.push((id, text));
            continue;
        }
        let half = sentences.len() / 2;
        corpus.push((
            id.clone(),
            format!("{title}\n{}", sentences[half..].join(" ")),
        ));
        let in_split = if fnv1a(&id).is_multiple_of(2) {
            "train"
        } else {
            "test"
        };
        if in_split == split {
            let query_id = format!("p{id}");
            queries.insert(query_id.clone(), paragraph(&sentences[..half]));
            qrels.insert(query_id, HashMap::from([(id, 1)]));
        }
    }
    (corpus, queries, qrels)
}

/// The longest query the search API takes, in characters (contract §11).
const MAX_QUERY_CHARS: usize = 4000;

/// Sentences joined into one paragraph, as many from the first as fit in a query.
fn paragraph(sentences: &[&str]) -> String {
    let mut text = String::new();
    for sentence in sentences {
        let sep = usize::from(!text.is_empty());
        if !text.is_empty()
            && text.chars().count() + sep + sentence.chars().count() > MAX_QUERY_CHARS
        {
            break;
        }
        if sep == 1 {
            text.push(' ');
        }
        text.push_str(sentence);
    }
    text
}

/// A text's sentences: it is cut after `.`, `?` or `!` where a space and an upper-case
/// letter or a digit follow.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for window in chars.windows(3) {
        let [(_, end), (space_at, space), (_, next)] = window else {
            continue;
        };
        if matches!(end, '.' | '?' | '!')
            && space.is_whitespace()
            && (next.is_uppercase() || next.is_ascii_digit())
        {
            let sentence = text[start..*space_at].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = *space_at;
        }
    }
    let last = text[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// FNV-1a, 64 bits: a split that does not depend on the ID's form.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Benchmark {
    fn load(options: &EvalOptions) -> anyhow::Result<Benchmark> {
        let corpus = ["corpus.jsonl.gz", "corpus.jsonl"]
            .iter()
            .map(|name| options.dataset.join(name))
            .find(|p| p.exists())
            .with_context(|| format!("no corpus.jsonl[.gz] in {}", options.dataset.display()))?;
        let documents = load_corpus(&corpus, options.docs.unwrap_or(usize::MAX))?;
        let dataset = options
            .dataset
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("dataset");
        let (name, documents, queries, mut qrels) = if options.paragraph_queries {
            let (documents, queries, qrels) = paragraph_queries(documents, &options.split);
            (
                format!("eval-{dataset}-paragraphs"),
                documents,
                queries,
                qrels,
            )
        } else {
            let qrels = load_qrels(
                &options
                    .dataset
                    .join("qrels")
                    .join(format!("{}.tsv", options.split)),
            )?;
            let queries = load_queries(&options.dataset.join("queries.jsonl"))?;
            (format!("eval-{dataset}"), documents, queries, qrels)
        };
        qrels.retain(|query, _| queries.contains_key(query));
        if let Some(limit) = options.queries {
            let mut ids: Vec<String> = qrels.keys().cloned().collect();
            ids.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), id.clone()));
            let keep: HashSet<String> = ids.into_iter().take(limit).collect();
            qrels.retain(|query, _| keep.contains(query));
        }
        anyhow::ensure!(!qrels.is_empty(), "no judged query to run");
        Ok(Benchmark {
            name,
            documents,
            queries,
            qrels,
        })
    }
}

/// Runs the evaluation with `settings`' embedding and worker settings and prints the scores.
pub async fn run(options: &EvalOptions, settings: &Config) -> anyhow::Result<()> {
    let Benchmark {
        name,
        documents,
        queries: texts,
        qrels,
    } = Benchmark::load(options)?;

    let temporary = tempfile::tempdir()?;
    let data_dir = options
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let config = crate::bench::loopback_config(settings, data_dir.clone());
    let server = Server::start_with(config, Options::default()).await?;
    let key = match &server.initial_key {
        Some(key) => key.value.clone(),
        None => std::fs::read_to_string(initial_key_path(&data_dir))
            .context("a reused work dir keeps its initial admin key")?
            .trim()
            .to_string(),
    };
    let api = ApiClient::connect(&server.base_url(), &key).await?;

    let store = match api.find_store(&name).await? {
        Some(store) => store,
        None => api.create_store(&name).await?,
    };
    let present: HashSet<String> = api
        .files(&store)
        .await?
        .iter()
        .filter_map(|f| f["file_name"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&(String, String)> = documents
        .iter()
        .filter(|(id, _)| !present.contains(&file_name(id)))
        .collect();
    let started = Instant::now();
    eprintln!(
        "{} documents: {} in the store, uploading {}",
        documents.len(),
        present.len(),
        missing.len()
    );
    futures::stream::iter(missing)
        .map(|(id, text)| {
            let (api, store) = (&api, &store);
            async move {
                api.upload(store, &file_name(id), text.clone().into_bytes())
                    .await
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let failed = api.wait_settled(&store, documents.len() as u64).await?;
    eprintln!(
        "ingested in {:.1} s ({failed} failed)",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{} on {}: {} documents, {} judged queries ({} split)",
        name,
        options.dataset.display(),
        documents.len(),
        qrels.len(),
        options.split
    );
    println!("mode      nDCG@10  Recall@100  no result  p50 ms  p99 ms");
    for mode in &options.modes {
        let started = Instant::now();
        let answers: Vec<(String, Vec<String>, f64)> = futures::stream::iter(qrels.keys().cloned())
            .map(|query| {
                let api = &api;
                let text = texts[&query].clone();
                let store = store.clone();
                async move {
                    let asked = Instant::now();
                    let body = api
                        .call(
                            api.org_request(Method::POST, &format!("/stores/{store}/search"))
                                .json(&json!({"query": text, "mode": mode, "top_k": DEPTH})),
                        )
                        .await?;
                    let ms = asked.elapsed().as_secs_f64() * 1000.0;
                    Ok::<_, anyhow::Error>((query, ranked_documents(&body), ms))
                }
            })
            .buffer_unordered(options.concurrency.max(1))
            .try_collect()
            .await?;
        let wall = started.elapsed().as_secs_f64();
        let mut latencies: Vec<f64> = answers.iter().map(|(_, _, ms)| *ms).collect();
        latencies.sort_by(f64::total_cmp);
        let runs: HashMap<String, Vec<String>> =
            answers.into_iter().map(|(q, r, _)| (q, r)).collect();
        let scores = evaluate(&qrels, &runs);
        println!(
            "{mode:<8}  {:.4}   {:.4}      {:>5}    {:>6.1}  {:>6.1}   ({:.0} queries/s)",
            scores.ndcg_at_10,
            scores.recall_at_100,
            scores.empty,
            crate::bench::percentile(&latencies, 50.0),
            crate::bench::percentile(&latencies, 99.0),
            runs.len() as f64 / wall
        );
        if let Some(dir) = &options.run_files {
            write_run_file(&dir.join(format!("{mode}.trec")), mode, &runs)?;
        }
    }
    server.shutdown().await?;
    Ok(())
}

fn file_name(doc_id: &str) -> String {
    format!("{doc_id}.txt")
}

/// The documents of a search answer in rank order, each once.
fn ranked_documents(answer: &Value) -> Vec<String> {
    let mut seen = HashSet::new();
    answer["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["file_name"].as_str())
        .map(|name| name.strip_suffix(".txt").unwrap_or(name).to_string())
        .filter(|doc| seen.insert(doc.clone()))
        .collect()
}

/// A TREC run file. Scores are `n - rank`, so that trec_eval, which orders by score and
/// breaks ties by document ID, sees exactly Kiln's order.
fn write_run_file(
    path: &Path,
    mode: &str,
    runs: &HashMap<String, Vec<String>>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut queries: Vec<&String> = runs.keys().collect();
    queries.sort();
    let mut out = String::new();
    for query in queries {
        let ranking = &runs[query];
        for (rank, doc) in ranking.iter().enumerate() {
            let score = ranking.len() - rank;
            out.push_str(&format!(
                "{query} Q0 {doc} {} {score} kiln-{mode}\n",
                rank + 1
            ));
        }
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn ranking(docs: &[&str]) -> Vec<String> {
        docs.iter().map(|d| d.to_string()).collect()
    }

    /// Worked by hand, and the same figures `pytrec_eval` 0.5 gives for this run
    /// (`RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})`).
    #[test]
    fn scores_of_a_hand_checked_example() {
        // q1: relevant d1, d3; ranked d3 (hit), d2, d1 (hit).
        // DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.63093; nDCG = 0.91972.
        let q1 = judged(&[("d1", 1), ("d3", 1)]);
        let r1 = ranking(&["d3", "d2", "d1"]);
        assert!((ndcg_at(&r1, &q1, 10) - 0.919_720_789_148_187_6).abs() < 1e-12);
        assert_eq!(recall_at(&r1, &q1, 100), 1.0);
        // q2: graded; d2 (grade 2) missed, d4 (grade 1) first.
        // DCG = 1; IDCG = 2 + 1/log2(3) = 2.63093; nDCG = 0.38009. Recall 1 of 2.
        let q2 = judged(&[("d2", 2), ("d4", 1)]);
        let r2 = ranking(&["d4", "d5"]);
        assert!((ndcg_at(&r2, &q2, 10) - 0.380_093_766_715_934_26).abs() < 1e-12);
        assert_eq!(recall_at(&r2, &q2, 100), 0.5);
        // The cut-off: the only relevant document at rank 11 counts for recall, not nDCG@10.
        let mut late = ranking(&["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"]);
        late.push("d1".into());
        assert_eq!(ndcg_at(&late, &judged(&[("d1", 1)]), 10), 0.0);
        assert_eq!(recall_at(&late, &judged(&[("d1", 1)]), 100), 1.0);
        assert_eq!(recall_at(&late, &judged(&[("d1", 1)]), 10), 0.0);
        // A judgment of 0 is not relevant.
        assert_eq!(ndcg_at(&r1, &judged(&[("d3", 0)]), 10), 0.0);

        // Means over judged queries; q3 has no results and counts as 0.
        let qrels: Qrels = [("q1", q1), ("q2", q2), ("q3", judged(&[("d9", 1)]))]
            .into_iter()
            .map(|(q, j)| (q.to_string(), j))
            .collect();
        let runs: HashMap<String, Vec<String>> = [("q1", r1), ("q2", r2)]
            .into_iter()
            .map(|(q, r)| (q.to_string(), r))
            .collect();
        let scores = evaluate(&qrels, &runs);
        assert!((scores.ndcg_at_10 - (0.919_720_789 + 0.380_093_767) / 3.0).abs() < 1e-8);
        assert!((scores.recall_at_100 - 0.5).abs() < 1e-12);
        assert_eq!((scores.queries, scores.empty), (3, 1));
    }

    #[test]
    fn qrels_with_a_header_and_crlf_line_endings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.tsv");
        std::fs::write(
            &path,
            "query-id\tcorpus-id\tscore\r\n0\t31715818\t1\r\n0\t42\t2\r\n2\t13734012\t1\r\n",
        )
        .unwrap();
        let qrels = load_qrels(&path).unwrap();
        assert_eq!(qrels.len(), 2);
        assert_eq!(qrels["0"], judged(&[("31715818", 1), ("42", 2)]));
        assert_eq!(qrels["2"], judged(&[("13734012", 1)]));
    }

    #[test]
    fn paragraph_queries_are_first_halves_judged_against_their_second_halves() {
        assert_eq!(
            sentences("One is here. Two follows e.g. this. 3 starts with a digit! Last one"),
            [
                "One is here.",
                "Two follows e.g. this.",
                "3 starts with a digit!",
                "Last one"
            ]
        );
        let long = (1..=7)
            .map(|i| format!("Sentence number {i} says something."))
            .collect::<Vec<_>>()
            .join(" ");
        let documents = vec![
            ("10".to_string(), format!("Title ten\n{long}")),
            ("11".to_string(), format!("Title eleven\n{long}")),
            (
                "12".to_string(),
                "Short\nOnly one sentence. And two.".to_string(),
            ),
        ];
        let mut seen = Vec::new();
        for split in ["train", "test"] {
            let (corpus, queries, qrels) = paragraph_queries(documents.clone(), split);
            // Every document is in the corpus of both splits; long ones keep their second half.
            assert_eq!(corpus.len(), 3);
            assert_eq!(
                corpus[0].1,
                "Title ten\nSentence number 4 says something. Sentence number 5 says something. \
                 Sentence number 6 says something. Sentence number 7 says something."
            );
            assert_eq!(corpus[2], documents[2], "a short document stays whole");
            for (query, judged) in &qrels {
                let document = query.strip_prefix('p').unwrap();
                assert_eq!(judged, &HashMap::from([(document.to_string(), 1)]));
                assert_eq!(
                    queries[query],
                    "Sentence number 1 says something. Sentence number 2 says something. \
                     Sentence number 3 says something."
                );
                seen.push(document.to_string());
            }
        }
        // A first half longer than a query may be keeps the sentences that fit.
        let long = "x".repeat(3000);
        assert_eq!(paragraph(&[&long, &long]), long);
        // Each long document's query is in exactly one split.
        seen.sort();
        assert_eq!(seen, ["10", "11"]);
    }

    #[test]
    fn a_document_ranks_by_its_best_chunk_and_counts_once() {
        let answer = json!({"results": [
            {"file_name": "7.txt"}, {"file_name": "3.txt"}, {"file_name": "7.txt"}, {"file_name": "9.txt"}
        ]});
        assert_eq!(ranked_documents(&answer), ranking(&["7", "3", "9"]));
    }
}
