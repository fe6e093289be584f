//! Processing one file: extract → chunk → embed → index → complete.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_blobs::Folder;
use kiln_catalog::{
    CompleteOutcome, Completion, FailOutcome, IndexChange, JobState, Liveness, LogLine, ProcessJob,
};
use kiln_chunk::ChunkOptions;
use kiln_core::model::FileRecord;
use kiln_core::types::{FileErrorCode, Step};
use kiln_embed::EmbedError;
use kiln_extract::ExtractError;
use kiln_index::ChunkRecord;
use rand::Rng;
use serde_json::json;

use crate::{PipelineError, Result, Services, Slot, Worker, blocking};

/// Why processing stopped early.
enum Stop {
    Failed(Failure),
    Halted(Liveness),
}

struct Failure {
    step: Step,
    code: FileErrorCode,
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

fn permanent(step: Step, code: FileErrorCode, message: impl Into<String>) -> Stop {
    Stop::Failed(Failure {
        step,
        code,
        message: message.into(),
        transient: false,
        retry_after: None,
    })
}

fn transient(step: Step, code: FileErrorCode, message: impl Into<String>) -> Stop {
    Stop::Failed(Failure {
        step,
        code,
        message: message.into(),
        transient: true,
        retry_after: None,
    })
}

fn catalog_error(step: Step, err: impl std::fmt::Display) -> Stop {
    transient(
        step,
        FileErrorCode::InternalError,
        format!("The catalog could not record progress ({err}). Kiln retries automatically."),
    )
}

/// The original this store's file processes: its organization file's, wherever that was
/// stored (a store's upload folder, or the organization's).
pub(crate) fn original_path(file: &FileRecord) -> kiln_blobs::BlobPath {
    kiln_blobs::BlobPath::from(file.original_blob.as_str())
}

/// A store file's blob folder.
fn folder(file: &FileRecord) -> Folder {
    Folder::store_file(&file.organization_id, &file.store_id, &file.id)
}

fn text_path(file: &FileRecord) -> kiln_blobs::BlobPath {
    folder(file).text()
}

pub(crate) async fn run(worker: &Worker, job: &ProcessJob, slot: &mut Slot) -> Result<()> {
    let file = &job.file;
    let services = &worker.services;
    let mut report = Reporter::new(worker, job);
    let outcome = steps(worker, job, &mut report, slot).await;
    let generation = file.generation as u64;
    // Removes one generation of this file's chunks from the index.
    let drop_generation = |generation: u64| {
        services.index.delete(IndexChange::DeleteGeneration {
            store_id: file.store_id.to_string(),
            file_id: file.id.to_string(),
            generation,
        })
    };
    match outcome {
        Ok(done) => match services.catalog.complete(job, &worker.name, done).await {
            Ok(CompleteOutcome::Completed {
                previous_generation: previous,
            }) => {
                // The flip is committed. Generations between the one active before and this
                // one were written by attempts that never completed (a killed process): never
                // searchable, removed now.
                for stale in (previous as u64 + 1).max(1)..generation {
                    drop_generation(stale).await?;
                }
                // The one active before goes after a grace: a search that read the catalog
                // just before the flip still looks for it. (A process killed within the grace
                // leaves it in the index, never searched again; deleting the file removes it.)
                if previous > 0 {
                    worker.superseded.later(
                        Instant::now() + worker.config.superseded_grace,
                        IndexChange::DeleteGeneration {
                            store_id: file.store_id.to_string(),
                            file_id: file.id.to_string(),
                            generation: previous as u64,
                        },
                    );
                }
            }
            Ok(CompleteOutcome::Stopped(Liveness::Cancelled)) => {
                cleanup_deleted(worker, job).await?
            }
            Ok(CompleteOutcome::Stopped(_)) => drop_generation(generation).await?,
            Err(err) => {
                // Not recorded: nothing of this attempt may stay in the index.
                drop_generation(generation).await?;
                return Err(err.into());
            }
        },
        Err(Stop::Halted(Liveness::Cancelled)) => cleanup_deleted(worker, job).await?,
        Err(Stop::Halted(_)) => drop_generation(generation).await?,
        Err(Stop::Failed(failure)) => {
            // What the steps before the failure logged goes in first (a job no longer ours
            // records nothing, here or in `fail`).
            let _ = report.flush().await;
            drop_generation(generation).await?;
            let delay = backoff(worker.config.retry_base, job.held.attempt)
                .max(failure.retry_after.unwrap_or_default());
            let outcome = services
                .catalog
                .fail(
                    job,
                    &worker.name,
                    failure.step,
                    failure.code,
                    &failure.message,
                    failure.transient,
                    delay,
                )
                .await?;
            if let FailOutcome::RetryScheduled { delay, .. } = outcome {
                // Wake a worker when the retry is due.
                let waker = worker.waker.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    waker.wake();
                });
            }
        }
    }
    Ok(())
}

/// The file was deleted while it was processed: make sure nothing written by this attempt
/// outlives the purge (which may already have run).
async fn cleanup_deleted(worker: &Worker, job: &ProcessJob) -> Result<()> {
    let file = &job.file;
    let services = &worker.services;
    services
        .index
        .delete(IndexChange::DeleteFile {
            store_id: file.store_id.to_string(),
            file_id: file.id.to_string(),
        })
        .await?;
    services.blobs.delete_prefix(folder(file).path()).await?;
    services
        .catalog
        .finish_job(&job.held.job_id, JobState::Cancelled)
        .await?;
    Ok(())
}

/// Exponential backoff with ±25 % jitter, capped at five minutes.
fn backoff(base: Duration, attempt: i64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.clamp(0, 10) as u32);
    let jitter = rand::rng().random_range(0.75..1.25);
    exp.mul_f64(jitter).min(Duration::from_secs(300))
}

/// How long a file's step changes and log lines may wait to be written together. A small
/// file passes all its steps within this time and is written twice (claimed, completed)
/// instead of six times, which spares the catalog's writer about 30 statements a file; a
/// step that takes longer shows within this time of its start.
const REPORT_DELAY: Duration = Duration::from_secs(1);

/// A job's progress on its way to the catalog: step changes and log lines are kept until
/// they are [`REPORT_DELAY`] old (checked while the steps' work runs) or the job ends, and
/// then written in one transaction with the events they make.
struct Reporter<'a> {
    worker: &'a Worker,
    job: &'a ProcessJob,
    pending: Option<Pending>,
}

struct Pending {
    step: Step,
    percent: i64,
    logs: Vec<LogLine>,
    /// When the oldest of it happened.
    since: Instant,
}

impl<'a> Reporter<'a> {
    fn new(worker: &'a Worker, job: &'a ProcessJob) -> Self {
        Reporter {
            worker,
            job,
            pending: None,
        }
    }

    /// The file is at `step` and `percent`, with `logs` to add; written now if what waits is
    /// old enough.
    async fn report(&mut self, step: Step, percent: i64, logs: Vec<LogLine>) -> Result<(), Stop> {
        let pending = self.pending.get_or_insert_with(|| Pending {
            step,
            percent,
            logs: Vec::new(),
            since: Instant::now(),
        });
        pending.step = step;
        pending.percent = percent;
        pending.logs.extend(logs);
        if pending.since.elapsed() >= REPORT_DELAY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Runs a step's work; if it outlasts what waits to be written, writes that meanwhile.
    /// If that write finds the job stopped (the file was deleted), the work is still awaited
    /// to its end before the stop is returned: an index add commits on a thread of its own
    /// and extraction's text blob is written by a blocking task, so a dropped future would
    /// not stop them, and what they wrote would arrive after the cleanup had removed the
    /// file's chunks and blobs (a deleted file's chunks were found in the index a minute
    /// later). At most one step's work (an embedding batch, say) is done for nothing.
    async fn during<T>(&mut self, work: impl std::future::Future<Output = T>) -> Result<T, Stop> {
        let mut work = std::pin::pin!(work);
        if let Some(pending) = &self.pending {
            let due = tokio::time::Instant::from_std(pending.since + REPORT_DELAY);
            tokio::select! {
                done = &mut work => return Ok(done),
                () = tokio::time::sleep_until(due) => {
                    if let Err(stop) = self.flush().await {
                        let _ = work.await;
                        return Err(stop);
                    }
                }
            }
        }
        Ok(work.await)
    }

    /// Writes what waits, checking that the job is still this worker's.
    async fn flush(&mut self) -> Result<(), Stop> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let (worker, job, step) = (self.worker, self.job, pending.step);
        match worker
            .services
            .catalog
            .record_progress(job, &worker.name, step, pending.percent, pending.logs)
            .await
        {
            Ok(Liveness::Alive) => Ok(()),
            Ok(other) => Err(Stop::Halted(other)),
            Err(err) => Err(catalog_error(step, err)),
        }
    }

    /// The lines not written yet, for the completion to write.
    fn take_logs(&mut self) -> Vec<LogLine> {
        self.pending.take().map(|p| p.logs).unwrap_or_default()
    }
}

fn started(step: Step) -> LogLine {
    LogLine::info(
        Some(step),
        "step_started",
        format!("{} started", step_name(step)),
        json!({}),
    )
}

fn completed(step: Step, message: String, data: serde_json::Value) -> LogLine {
    LogLine::info(Some(step), "step_completed", message, data)
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Queued => "Queueing",
        Step::Extracting => "Extraction",
        Step::Chunking => "Chunking",
        Step::Embedding => "Embedding",
        Step::Indexing => "Indexing",
        Step::Completed => "Completion",
    }
}

/// The text stored by an earlier extraction of this file by the same extractor version.
async fn stored_text(
    services: &Services,
    file: &FileRecord,
) -> Option<(kiln_extract::Document, i64)> {
    let bytes = services.blobs.get(&text_path(file)).await.ok()?;
    let document: kiln_extract::Document = serde_json::from_slice(&bytes).ok()?;
    (document.extractor == kiln_extract::EXTRACTOR_VERSION)
        .then_some((document, bytes.len() as i64))
}

/// Runs an extractor on a thread of its own under the time limit, and turns each way it can
/// end (too slow, panicked, an extraction error) into the file's error code and message.
async fn guarded_extraction(
    limit: Duration,
    format: kiln_extract::Format,
    extractor: impl FnOnce() -> Result<kiln_extract::Document, ExtractError> + Send + 'static,
) -> Result<kiln_extract::Document, Stop> {
    let step = Step::Extracting;
    let extraction = tokio::time::timeout(
        limit,
        // A thread of its own: a parser stuck on hostile input is abandoned at the time limit
        // without holding up the shared pool.
        kiln_background::background_thread("kiln-extract", extractor),
    )
    .await;
    match extraction {
        // The extractor's own limit (a PDF's child process, killed) is the same limit.
        Err(_) | Ok(Ok(Err(ExtractError::Timeout))) => Err(permanent(
            step,
            FileErrorCode::Timeout,
            format!(
                "Extracting the text took longer than {} s. Split the file into smaller files and upload them.",
                limit.as_secs()
            ),
        )),
        Ok(Err(_panic)) => Err(permanent(
            step,
            FileErrorCode::CorruptFile,
            "The file could not be parsed (the parser failed on it). Check that it opens correctly, then upload it again.",
        )),
        Ok(Ok(Err(ExtractError::NoText))) => {
            let why = if format == kiln_extract::Format::Pdf {
                "No text could be extracted: the PDF has no text layer (a scan or images of text). Kiln does not run OCR; run OCR on the file first, then upload it again."
            } else {
                "No text could be extracted: the file is empty or contains only whitespace or invisible content."
            };
            Err(permanent(step, FileErrorCode::NoTextExtracted, why))
        }
        Ok(Ok(Err(ExtractError::Corrupt(reason)))) => Err(permanent(
            step,
            FileErrorCode::CorruptFile,
            format!("The file is damaged or malformed: {reason}"),
        )),
        Ok(Ok(Err(ExtractError::Encrypted))) => Err(permanent(
            step,
            FileErrorCode::EncryptedFile,
            "The file is protected by a password. Remove the password (save an unprotected copy), then upload it again.",
        )),
        Ok(Ok(Err(ExtractError::Unsupported(reason)))) => {
            Err(permanent(step, FileErrorCode::UnsupportedFormat, reason))
        }
        Ok(Ok(Err(ExtractError::Engine(reason)))) => Err(permanent(
            step,
            FileErrorCode::InternalError,
            format!("{reason} Retry the file once the server is fixed."),
        )),
        Ok(Ok(Ok(document))) => Ok(document),
    }
}

/// Reads the original, extracts its text under the time limit and stores it as `text.json`:
/// the document, the stored size, the original's size and its format.
async fn extract(
    worker: &Worker,
    file: &FileRecord,
) -> Result<(kiln_extract::Document, i64, usize, kiln_extract::Format), Stop> {
    let services = &worker.services;
    let config = &worker.config;
    let step = Step::Extracting;
    // Held until the document is stored: the original and the parser's memory stay bounded
    // by the number of slots, not by the number of jobs held.
    let _slot = worker.parsing.take().await;
    let original: Bytes = match services.blobs.get(&original_path(file)).await {
        Ok(bytes) => bytes,
        Err(kiln_blobs::BlobError::NotFound(_)) => {
            return Err(permanent(
                step,
                FileErrorCode::InternalError,
                "The stored original is missing. Upload the file again.",
            ));
        }
        Err(err) => {
            return Err(transient(
                step,
                FileErrorCode::InternalError,
                format!("Blob storage could not be read ({err}). Kiln retries automatically."),
            ));
        }
    };
    let file_type = kiln_extract::detect(
        &file.file_name,
        &original[..original.len().min(kiln_extract::SNIFF_BYTES)],
    )
    .map_err(|reason| permanent(step, FileErrorCode::UnsupportedFormat, reason))?;
    let format = file_type.format;
    let bytes_read = original.len();
    let document = guarded_extraction(config.extract_timeout, format, move || {
        kiln_extract::extract(format, &original)
    })
    .await?;
    let text_json = serde_json::to_vec(&document)
        .map_err(|e| permanent(step, FileErrorCode::InternalError, e.to_string()))?;
    let extracted_text_bytes = text_json.len() as i64;
    services
        .blobs
        .put(&text_path(file), Bytes::from(text_json))
        .await
        .map_err(|err| {
            let why = if err.is_storage_full() {
                "Blob storage is full".to_string()
            } else {
                format!("Blob storage could not be written ({err})")
            };
            transient(
                step,
                FileErrorCode::InternalError,
                format!("{why}. Kiln retries automatically; if this persists, free space and retry the file."),
            )
        })?;
    Ok((document, extracted_text_bytes, bytes_read, format))
}

async fn steps(
    worker: &Worker,
    job: &ProcessJob,
    report: &mut Reporter<'_>,
    slot: &mut Slot,
) -> Result<Completion, Stop> {
    let file = &job.file;
    let services = &worker.services;
    let config = &worker.config;
    // This file's chunks are on their way to the index until they are added or the steps
    // end without them.
    let expecting = services.index.expect();

    // Extract, or reuse the text extracted before (a re-process after a chunking change).
    let step = Step::Extracting;
    report.report(step, 0, vec![started(step)]).await?;
    let clock = Instant::now();
    // `parsed`: the original's size and format when it was parsed now, None when reused.
    // Text is stored by a generation's processing, and each claim starts a new generation:
    // the first has none to reuse (and asks storage for nothing: on S3 a request less a file).
    let reading = async {
        let stored = if file.generation > 1 {
            stored_text(services, file).await
        } else {
            None
        };
        match stored {
            Some((document, stored_bytes)) => Ok((document, stored_bytes, None)),
            None => {
                let (document, stored_bytes, bytes_read, format) = extract(worker, file).await?;
                Ok((document, stored_bytes, Some((bytes_read, format))))
            }
        }
    };
    let (document, extracted_text_bytes, parsed) = report.during(reading).await??;
    let characters = document.characters();
    let message = match parsed {
        Some(_) => format!("Extracted {characters} characters"),
        None => format!("Reused the {characters} characters extracted before"),
    };
    let data = json!({
        "duration_ms": clock.elapsed().as_millis() as u64, "characters": characters,
        "sections": document.sections.len(), "pages": document.pages, "reused": parsed.is_none(),
        "bytes": parsed.map(|(bytes, _)| bytes), "format": parsed.map(|(_, format)| format),
    });
    report
        .report(
            Step::Chunking,
            10,
            vec![completed(step, message, data), started(Step::Chunking)],
        )
        .await?;

    // Chunk.
    let step = Step::Chunking;
    let clock = Instant::now();
    let options = ChunkOptions {
        max_tokens: job.chunking.max_chunk_tokens as usize,
        overlap_tokens: job.chunking.chunk_overlap_tokens as usize,
    };
    let tokens = services.tokens.clone();
    let chunking = blocking(move || {
        Ok::<_, PipelineError>(kiln_chunk::chunk(&document, options, tokens.as_ref()))
    });
    let chunks = report
        .during(chunking)
        .await?
        .map_err(|e| permanent(step, FileErrorCode::InternalError, e.to_string()))?;
    if chunks.is_empty() {
        return Err(permanent(
            step,
            FileErrorCode::NoTextExtracted,
            "No text could be extracted: nothing remained to index.",
        ));
    }
    let total = chunks.len();
    let token_sum: usize = chunks.iter().map(|c| c.tokens).sum();
    report.report(Step::Embedding, 20, vec![
        completed(step, format!("Cut into {total} chunks"), json!({
            "duration_ms": clock.elapsed().as_millis() as u64, "chunks": total, "tokens": token_sum,
            "max_chunk_tokens": options.max_tokens, "chunk_overlap_tokens": options.overlap_tokens,
        })),
        started(Step::Embedding),
    ])
    .await?;

    // Embed, in batches, reporting progress between them.
    let step = Step::Embedding;
    let clock = Instant::now();
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(total);
    let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
    for batch in texts.chunks(config.embed_batch.max(1)) {
        let embedded = report
            .during(services.embedder.embed(batch))
            .await?
            .map_err(|err| embed_failure(step, err))?;
        vectors.extend(embedded);
        // Between batches only: after the last, the next step's entry says as much.
        if vectors.len() < total {
            let percent = 20 + (70 * vectors.len() / total) as i64;
            report.report(step, percent, Vec::new()).await?;
        }
    }
    // The rest waits for an index commit shared with other files: the next file's work
    // starts meanwhile.
    slot.release();
    let seconds = clock.elapsed().as_secs_f64();
    report.report(Step::Indexing, 90, vec![
        completed(step, format!("Embedded {total} chunks"), json!({
            "duration_ms": (seconds * 1000.0) as u64, "chunks": total, "model": services.embedder.model(),
            "chunks_per_s": if seconds > 0.0 { total as f64 / seconds } else { 0.0 },
        })),
        started(Step::Indexing),
    ])
    .await?;

    // Index under this attempt's generation; the catalog flips to it on completion.
    let step = Step::Indexing;
    let clock = Instant::now();
    let index_bytes: i64 = chunks.iter().map(|c| c.text.len() as i64).sum();
    let records: Vec<ChunkRecord> = chunks
        .into_iter()
        .zip(vectors)
        .map(|(chunk, vector)| ChunkRecord {
            store_id: file.store_id.to_string(),
            file_id: file.id.to_string(),
            generation: file.generation as u64,
            chunk_index: chunk.index,
            text: chunk.text,
            page: chunk.page,
            vector,
        })
        .collect();
    report
        .during(services.index.add(records, expecting))
        .await?
        .map_err(|e| {
            transient(
                step,
                FileErrorCode::IndexFailed,
                format!("The index could not be written ({e}). Kiln retries automatically."),
            )
        })?;
    let dims = services.embedder.dimensions() as i64;
    Ok(Completion {
        chunk_count: total as i64,
        extracted_text_bytes,
        vector_bytes: total as i64 * dims * 4,
        index_bytes,
        embedding_model: services.embedder.model().to_string(),
        data: json!({"duration_ms": clock.elapsed().as_millis() as u64, "chunks": total, "generation": file.generation}),
        logs: report.take_logs(),
    })
}

fn embed_failure(step: Step, err: EmbedError) -> Stop {
    let retry_after = err.retry_after();
    let (code, message) = match &err {
        EmbedError::Timeout(d) => (
            FileErrorCode::Timeout,
            format!(
                "The embedding provider did not answer within {} s.",
                d.as_secs()
            ),
        ),
        EmbedError::RateLimited { .. } => (
            FileErrorCode::EmbeddingRateLimited,
            "The embedding provider is rate-limiting requests.".to_string(),
        ),
        EmbedError::Unavailable(m) => (
            FileErrorCode::EmbeddingFailed,
            format!("The embedding provider is unavailable: {m}."),
        ),
        EmbedError::Permanent(m) => (
            FileErrorCode::EmbeddingFailed,
            format!(
                "Embedding failed: {m}. Check the embedding configuration, then retry the file."
            ),
        ),
    };
    let transient = err.is_transient();
    let message = if transient {
        format!("{message} Kiln retries automatically; if it keeps failing, retry the file later.")
    } else {
        message
    };
    Stop::Failed(Failure {
        step,
        code,
        message,
        transient,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_extract::Format;

    /// The code, message and whether it is retried of a guarded extraction's failure.
    async fn failure(
        limit: Duration,
        format: Format,
        extractor: impl FnOnce() -> Result<kiln_extract::Document, ExtractError> + Send + 'static,
    ) -> (FileErrorCode, String, bool) {
        match guarded_extraction(limit, format, extractor).await {
            Err(Stop::Failed(f)) => (f.code, f.message, f.transient),
            Err(Stop::Halted(_)) => panic!("halted"),
            Ok(_) => panic!("extraction succeeded"),
        }
    }

    #[tokio::test]
    async fn every_way_an_extractor_ends_becomes_a_reason() {
        // A parser that never returns: TIMEOUT at the limit, and the worker goes on.
        let started = Instant::now();
        let (code, message, transient) = failure(Duration::from_millis(200), Format::Pdf, || {
            std::thread::sleep(Duration::from_secs(30));
            Err(ExtractError::NoText)
        })
        .await;
        assert_eq!(code, FileErrorCode::Timeout);
        assert!(message.contains("took longer"), "{message}");
        assert!(!transient);
        assert!(started.elapsed() < Duration::from_secs(5));
        // An extractor that enforces the limit itself (a PDF's child process, killed): the same.
        let (code, message, _) = failure(Duration::from_secs(5), Format::Pdf, || {
            Err(ExtractError::Timeout)
        })
        .await;
        assert_eq!(code, FileErrorCode::Timeout);
        assert!(message.contains("took longer"), "{message}");
        // A parser that panics: CORRUPT_FILE.
        let (code, _, _) = failure(Duration::from_secs(5), Format::Docx, || {
            panic!("index out of bounds in a hostile file")
        })
        .await;
        assert_eq!(code, FileErrorCode::CorruptFile);
        // Extraction errors, each with its message.
        let (code, message, _) = failure(Duration::from_secs(5), Format::Pdf, || {
            Err(ExtractError::NoText)
        })
        .await;
        assert_eq!(code, FileErrorCode::NoTextExtracted);
        assert!(message.contains("OCR"), "{message}");
        let (_, message, _) = failure(Duration::from_secs(5), Format::Text, || {
            Err(ExtractError::NoText)
        })
        .await;
        assert!(message.contains("whitespace"), "{message}");
        let (code, message, _) = failure(Duration::from_secs(5), Format::Xlsx, || {
            Err(ExtractError::Encrypted)
        })
        .await;
        assert_eq!(code, FileErrorCode::EncryptedFile);
        assert!(message.contains("Remove the password"), "{message}");
        let (code, message, _) = failure(Duration::from_secs(5), Format::Pdf, || {
            Err(ExtractError::Corrupt("no trailer".into()))
        })
        .await;
        assert_eq!(code, FileErrorCode::CorruptFile);
        assert!(message.contains("no trailer"), "{message}");
        // The server's fault, not the file's: INTERNAL_ERROR, and it says how to go on.
        let (code, message, _) = failure(Duration::from_secs(5), Format::Pdf, || {
            Err(ExtractError::Engine(
                "The PDF engine is not loaded on this server.".into(),
            ))
        })
        .await;
        assert_eq!(code, FileErrorCode::InternalError);
        assert!(
            message.contains("not loaded") && message.contains("Retry"),
            "{message}"
        );
    }
}
