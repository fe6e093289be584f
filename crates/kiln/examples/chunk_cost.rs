//! What chunking a long text costs: the model's tokenizer over the whole text once, then the
//! chunker with every candidate piece tokenized anew (as before) and with the pieces sized
//! from the text's token spans (as the server does), with their wall times and whether the
//! two cut the same chunks.
//!
//! `cargo run --release -p kiln --example chunk_cost -- [FILE] [MAX_TOKENS] [OVERLAP]`; FILE
//! defaults to War and Peace from `../shared/evaldata` (3.2 MB), MAX_TOKENS and OVERLAP to
//! the API's defaults (800, 400). The model is fetched as the tests fetch it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kiln::server::ModelTokens;
use kiln_chunk::{ChunkOptions, chunk};
use kiln_embed::LocalModel;
use kiln_extract::{Document, Section, SectionKind};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/evaldata/documents/text/book-war-and-peace-1225p.txt")
    });
    let max_tokens = args.next().map(|a| a.parse()).transpose()?.unwrap_or(800);
    let overlap_tokens = args.next().map(|a| a.parse()).transpose()?.unwrap_or(400);
    let text = std::fs::read_to_string(&file)?;
    let models = kiln_embed::fetch::shared_models_dir();
    let model = Arc::new(LocalModel::load(&kiln_embed::fetch::ensure(&models)?)?);
    let document = Document {
        sections: vec![Section {
            title: None,
            page: None,
            kind: SectionKind::Prose,
            text: text.clone(),
        }],
        pages: None,
        extractor: 0,
    };
    let options = ChunkOptions {
        max_tokens,
        overlap_tokens,
    };
    println!("{}: {} bytes", file.display(), text.len());

    let clock = Instant::now();
    let tokens = model.count_tokens_only(&text);
    println!(
        "the text tokenized once   {tokens} tokens in {:.2} s",
        secs(clock)
    );

    let clock = Instant::now();
    let exact = chunk(&document, options, &|t: &str| model.count_tokens_only(t));
    let exact_secs = secs(clock);
    println!(
        "each piece tokenized      {} chunks in {exact_secs:.2} s",
        exact.len()
    );

    let clock = Instant::now();
    let server_counter = ModelTokens {
        model: model.clone(),
        keep: false,
    };
    let spanned = chunk(&document, options, &server_counter);
    let spans_secs = secs(clock);
    println!(
        "sized from the spans      {} chunks in {spans_secs:.2} s ({:.1}× faster), {}",
        spanned.len(),
        exact_secs / spans_secs,
        match spanned == exact {
            true => "the same chunks",
            false => "DIFFERENT chunks",
        }
    );
    Ok(())
}

fn secs(clock: Instant) -> f64 {
    clock.elapsed().as_secs_f64()
}
