//! The local model against sentence-transformers' own vectors (computed once with Python and
//! kept in `fixtures/reference-vectors.json`).

use std::sync::Arc;

use kiln_embed::local::LocalEmbedder;
use kiln_embed::{Embedder, LocalModel, cosine, fetch};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("fixtures/reference-vectors.json")).unwrap()
}

fn model() -> LocalModel {
    let dir = fetch::ensure(&fetch::shared_models_dir()).expect("the model can be fetched");
    LocalModel::load(&dir).expect("the model loads")
}

#[test]
fn vectors_match_sentence_transformers() {
    let model = model();
    let reference = reference();
    let ours = model.embed_sync(&reference.sentences).unwrap();
    assert_eq!(ours.len(), reference.vectors.len());
    for ((sentence, theirs), ours) in reference
        .sentences
        .iter()
        .zip(&reference.vectors)
        .zip(&ours)
    {
        assert_eq!(ours.len(), 384);
        let norm: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let similarity = cosine(ours, theirs);
        assert!(
            similarity >= 0.999,
            "cosine {similarity} < 0.999 for {:?}",
            &sentence[..sentence.len().min(60)]
        );
    }
    // Unrelated sentences are far apart, paraphrases close: the vectors carry meaning.
    let v = model
        .embed_sync(&[
            "A man is playing a guitar.",
            "Someone plays an instrument.",
            "Stock markets fell sharply today.",
        ])
        .unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.3);
}

#[test]
fn padding_and_batching_do_not_change_vectors() {
    let model = model().with_batch_size(4);
    let texts = [
        "short",
        "a somewhat longer sentence that needs padding for the short one",
        "mid length text",
    ];
    let batched = model.embed_sync(&texts).unwrap();
    for (text, batched) in texts.iter().zip(&batched) {
        let alone = &model.embed_sync(&[*text]).unwrap()[0];
        assert!(cosine(alone, batched) > 0.99999, "{text}");
    }
    assert!(model.embed_sync::<&str>(&[]).unwrap().is_empty());
}

#[test]
fn the_chunking_tokenizer_neither_truncates_nor_pads() {
    let model = model();
    let tokens = |t: &str| model.tokenizer().encode(t, false).unwrap().len();
    assert_eq!(tokens("hello world"), 2);
    let long = "word ".repeat(600);
    assert_eq!(tokens(&long), 600);
}

#[tokio::test]
async fn the_embedder_runs_off_the_async_threads() {
    let embedder = LocalEmbedder::new(Arc::new(model()));
    assert_eq!(embedder.model(), "all-MiniLM-L6-v2");
    assert_eq!(embedder.dimensions(), 384);
    let texts = vec!["The cat sits outside.".to_string()];
    let v = embedder.embed(&texts).await.unwrap();
    assert!(cosine(&v[0], &reference().vectors[0]) >= 0.999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_each_get_their_own_vectors() {
    let embedder = LocalEmbedder::new(Arc::new(model()));
    let reference = reference();
    // Many requests at once: the long sentence's go through the lanes (which batch what queues
    // up together), the short ones run at once on the query pool.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..3 {
        for (i, sentence) in reference.sentences.iter().enumerate() {
            let embedder = embedder.clone();
            let texts = vec![sentence.clone(); 1 + (i + round) % 3];
            tasks.spawn(async move { (i, texts.len(), embedder.embed(&texts).await.unwrap()) });
        }
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, n, vectors) = joined.unwrap();
        assert_eq!(vectors.len(), n);
        for v in vectors {
            let similarity = cosine(&v, &reference.vectors[i]);
            assert!(
                similarity >= 0.999,
                "request {i} got another's vector: {similarity}"
            );
        }
        answered += 1;
    }
    assert_eq!(answered, 3 * reference.sentences.len());
}

#[tokio::test]
async fn a_request_of_several_batches_is_spread_over_the_lanes_in_order() {
    let model = Arc::new(model());
    let batch = model.batch_size();
    let embedder = LocalEmbedder::with_lanes(model, 2);
    let reference = reference();
    let n = reference.sentences.len();
    // Four batches' worth in one request, each text a reference sentence in turn.
    let texts: Vec<String> = (0..4 * batch)
        .map(|i| reference.sentences[i % n].clone())
        .collect();
    let vectors = embedder.embed(&texts).await.unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (i, v) in vectors.iter().enumerate() {
        let similarity = cosine(v, &reference.vectors[i % n]);
        assert!(
            similarity >= 0.999,
            "text {i} got another's vector: {similarity}"
        );
    }
    assert_eq!(
        embedder.peak_passes(),
        2,
        "both lanes ran a pass of the request at once"
    );
}

#[tokio::test]
async fn a_request_of_one_batch_is_shared_by_the_lanes() {
    let model = Arc::new(model());
    let batch = model.batch_size();
    assert!(batch >= 2, "a batch of one cannot be shared");
    let embedder = LocalEmbedder::with_lanes(model, 2);
    let reference = reference();
    let n = reference.sentences.len();
    // One batch's worth (a file of that many chunks): both lanes take half of it.
    let texts: Vec<String> = (0..batch)
        .map(|i| reference.sentences[i % n].clone())
        .collect();
    let vectors = embedder.embed(&texts).await.unwrap();
    for (i, v) in vectors.iter().enumerate() {
        assert!(cosine(v, &reference.vectors[i % n]) >= 0.999, "text {i}");
    }
    assert_eq!(vectors.len(), batch);
    assert_eq!(
        embedder.peak_passes(),
        2,
        "one lane ran it while the other idled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_query_does_not_wait_behind_queued_batches() {
    let model = Arc::new(model());
    let batch = model.batch_size();
    let embedder = LocalEmbedder::with_lanes(model, 1);
    let reference = reference();
    // Four batches of long texts (about 250 tokens each) keep the one lane busy for seconds.
    let long = reference.sentences[1].repeat(25);
    let texts = vec![long; 4 * batch];
    let busy = {
        let embedder = embedder.clone();
        tokio::spawn(async move { embedder.embed(&texts).await.unwrap().len() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let query = vec![reference.sentences[0].clone()];
    let vector = embedder.embed(&query).await.unwrap();
    assert!(cosine(&vector[0], &reference.vectors[0]) >= 0.999);
    assert!(
        !busy.is_finished(),
        "the query was answered only after the batches queued before it"
    );
    assert_eq!(busy.await.unwrap(), 4 * batch);
}
