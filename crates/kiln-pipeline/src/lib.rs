//! Kiln's processing pipeline: workers claim jobs from the catalog's durable queue and run
//! extract → chunk → embed → index → complete, with real progress, structured log entries,
//! automatic retries with backoff for transient errors, and purges of deleted files. A
//! reaper re-queues jobs whose worker stopped heartbeating.
//!
//! Workers hold nothing that is not in the catalog: any number of them, in any number of
//! processes sharing a catalog, can share the work.

mod error;
mod process;
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use error::{PipelineError, Result};
use kiln_blobs::{Blobs, Folder};
use kiln_catalog::{Catalog, Claimed, HeldJob, IndexChange};
pub use kiln_chunk::TokenCounter;
use kiln_core::FileId;
use kiln_embed::Embedder;
pub use sink::{Expecting, IndexSink};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

/// What the workers work with.
#[derive(Clone)]
pub struct Services {
    pub catalog: Catalog,
    pub blobs: Blobs,
    pub index: IndexSink,
    pub embedder: Arc<dyn Embedder>,
    pub tokens: Arc<dyn TokenCounter>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Claiming loops; also how many files may be read and parsed at once.
    pub workers: usize,
    /// Jobs each worker has at work at once; a file that only waits for its index commit no
    /// longer counts (see `Slot`). A job spends most of its life waiting for the shared
    /// embedding lanes; holding several keeps every lane fed and lets a lane take texts from
    /// many files at once. With the int8 model, 8 left the lanes idle a quarter of an ingest
    /// and 16 kept them busy 89–94 % (`kiln bench ingest --docs 1000`: 74.8 → 84.7 files/s);
    /// on a faster host, 32 held the cores' idle time to about 4 % against 8–11 % (both
    /// measured while files waiting for a commit still held their slots; see
    /// `docs/decisions/embedding-speed.md`). The CPU-heavy steps stay bounded by the cores:
    /// the model runs on one lane per core, chunking on the core-sized work pool, parsing in
    /// `workers` slots.
    pub jobs_per_worker: usize,
    /// Lease on a claimed job; a heartbeat renews it every third of it.
    pub lease: Duration,
    /// How often idle workers look for due jobs (they are also woken on new work).
    pub poll: Duration,
    /// How often the reaper looks for expired leases.
    pub reap_every: Duration,
    /// First automatic-retry delay; doubles per try, with ±25 % jitter.
    pub retry_base: Duration,
    /// Longest an extractor may run on one file.
    pub extract_timeout: Duration,
    /// Texts per embedding call (progress is reported between calls).
    pub embed_batch: usize,
    /// How long a re-processed file's previous generation stays in the index after the flip
    /// to the new one: a search that read the catalog just before the flip still answers with
    /// it (a cluster's search may wait up to 10 s for its node's replica).
    pub superseded_grace: Duration,
    /// A prefix for worker names (host and process by default).
    pub name: String,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            jobs_per_worker: 32,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(2),
            reap_every: Duration::from_secs(5),
            retry_base: Duration::from_secs(2),
            extract_timeout: Duration::from_secs(120),
            embed_batch: 32,
            superseded_grace: Duration::from_secs(15),
            // Unique among every process sharing the catalog (leases name their holder), even
            // where process IDs repeat (containers).
            name: format!(
                "kiln-{}-{}",
                std::process::id(),
                &kiln_core::ids::generate_secret()[..6].to_lowercase()
            ),
        }
    }
}

/// Wakes idle workers when work arrives. Cheap to clone.
///
/// Every worker waiting is woken, and none is missed: a worker takes its `notified()` before
/// it claims, and `notify_waiters` reaches such a future even before it is polled, while a
/// worker that holds none claims before it next waits. No permit is stored for later
/// (`notify_one`): it only sent a worker that had just found the queue empty to claim once
/// more for nothing, a write transaction for each job queued (30 files uploaded one by one
/// to `kiln serve`: 2.9 claims a file with it, 2.4 without).
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

/// The running workers and reaper.
pub struct Pipeline {
    waker: Waker,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    parsing: Arc<ParseSlots>,
    superseded: Arc<Superseded>,
}

/// Re-processed files' previous generations, waiting out their grace before they leave the
/// index (`PipelineConfig::superseded_grace`). The reaper removes those due; a shutdown
/// removes the rest once the jobs in hand are done.
pub(crate) struct Superseded {
    index: IndexSink,
    waiting: std::sync::Mutex<Vec<(std::time::Instant, kiln_catalog::IndexChange)>>,
}

impl Superseded {
    /// Removes `change` from the index at `due`.
    pub(crate) fn later(&self, due: std::time::Instant, change: kiln_catalog::IndexChange) {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((due, change));
    }

    /// Removes those due by `now` (every one without).
    async fn remove_due(&self, now: Option<std::time::Instant>) {
        let due: Vec<kiln_catalog::IndexChange> = {
            let mut waiting = self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (due, kept) = std::mem::take(&mut *waiting)
                .into_iter()
                .partition(|(at, _)| now.is_none_or(|now| *at <= now));
            *waiting = kept;
            due.into_iter().map(|(_, change)| change).collect()
        };
        for change in due {
            if let Err(e) = self.index.delete(change).await {
                tracing::warn!(error = %e, "a superseded generation could not be removed from the index");
            }
        }
    }
}

/// How many jobs a worker holds at most for each of its `jobs_per_worker` slots: the rest
/// of its jobs wait for an index commit (see [`Slot`]).
const HELD_PER_SLOT: usize = 4;

/// A job's place among the `jobs_per_worker` of its worker at work. A file gives it up when
/// its vectors are made: from then on it only waits for the index commit it shares with
/// other files (up to the index's commit spacing), and the next file's extraction and
/// embedding start meanwhile. Without this, the files waiting on a commit held slots the
/// model needed fed, so the spacing between commits (fewer commits: less of tantivy's fixed
/// cost and fewer merges) was bounded by how fast the model empties the slots. A worker
/// holds at most [`HELD_PER_SLOT`] jobs a slot in all, which bounds what waiting files keep in
/// memory (their chunks and vectors).
pub(crate) struct Slot(Option<tokio::sync::OwnedSemaphorePermit>);

impl Slot {
    /// Gives the place to the worker's next job; a job that never does gives it up at its end.
    pub(crate) fn release(&mut self) {
        self.0 = None;
    }
}

/// Slots for reading and parsing originals, shared by a process's workers: however many jobs
/// are held, at most `workers` originals are in memory being parsed. Keeps the most ever
/// taken at once.
pub(crate) struct ParseSlots {
    slots: Semaphore,
    busy: AtomicUsize,
    peak: AtomicUsize,
}

/// A taken parse slot; given back when dropped.
pub(crate) struct ParseSlot<'a> {
    slots: &'a ParseSlots,
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl ParseSlots {
    fn new(slots: usize) -> ParseSlots {
        ParseSlots {
            slots: Semaphore::new(slots),
            busy: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Waits for a free slot.
    pub(crate) async fn take(&self) -> ParseSlot<'_> {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.slots.acquire().await.ok();
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        ParseSlot {
            slots: self,
            _permit: permit,
        }
    }
}

impl Drop for ParseSlot<'_> {
    fn drop(&mut self) {
        self.slots.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pipeline {
    pub fn start(services: Services, config: PipelineConfig) -> Pipeline {
        let waker = Waker::default();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let config = Arc::new(config);
        let parsing = Arc::new(ParseSlots::new(config.workers.max(1)));
        let superseded = Arc::new(Superseded {
            index: services.index.clone(),
            waiting: std::sync::Mutex::default(),
        });
        for n in 0..config.workers.max(1) {
            let worker = Worker {
                name: format!("{}-w{n}", config.name),
                services: services.clone(),
                config: config.clone(),
                waker: waker.clone(),
                parsing: parsing.clone(),
                superseded: superseded.clone(),
            };
            tasks.spawn(Arc::new(worker).run(stopped.clone()));
        }
        tasks.spawn(reaper(
            services.clone(),
            config.clone(),
            waker.clone(),
            superseded.clone(),
            stopped.clone(),
        ));
        // Jobs queued by other processes (PostgreSQL): woken at once, not at the next poll.
        let woken = waker.clone();
        if let Some(listening) = services
            .catalog
            .listen(kiln_catalog::JOBS_CHANNEL, move || woken.wake())
        {
            let mut stopped = stopped;
            tasks.spawn(async move {
                let _ = stopped.wait_for(|s| *s).await;
                listening.abort();
            });
        }
        waker.wake();
        Pipeline {
            waker,
            stop,
            tasks,
            parsing,
            superseded,
        }
    }

    /// The most originals this pipeline has had read and being parsed at once.
    pub fn parsing_peak(&self) -> usize {
        self.parsing.peak.load(Ordering::SeqCst)
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Stops claiming new jobs and waits up to `grace` for jobs in hand; a job still running
    /// then is abandoned, and its lease expiry hands it to another worker.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        self.waker.wake();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("workers still busy after the grace period; their leases will expire");
            self.tasks.abort_all();
        }
        // No search of this process remains to look for them.
        self.superseded.remove_due(None).await;
    }
}

async fn reaper(
    services: Services,
    config: Arc<PipelineConfig>,
    waker: Waker,
    superseded: Arc<Superseded>,
    mut stopped: watch::Receiver<bool>,
) {
    let catalog = &services.catalog;
    loop {
        superseded.remove_due(Some(std::time::Instant::now())).await;
        if let Err(err) = drop_expired_uploads(&services).await {
            tracing::error!(error = %err, "cleaning up expired uploads failed");
        }
        // Replicas further behind than a day rebuild from a snapshot instead.
        let day_ago = kiln_core::Timestamp(kiln_core::Timestamp::now().millis() - 86_400_000);
        if let Err(err) = catalog.prune_index_log(day_ago).await {
            tracing::error!(error = %err, "pruning the index log failed");
        }
        match catalog.reap_expired().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(jobs = n, "re-queued jobs whose lease expired");
                waker.wake();
            }
            Err(err) => tracing::error!(error = %err, "lease reaper failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.reap_every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Deletes uploads whose signed URL expired a minute ago or more: blobs, then rows. (No file
/// has an expired upload's id: registering removes the upload in the same transaction.)
async fn drop_expired_uploads(services: &Services) -> Result<()> {
    let before = kiln_core::Timestamp(kiln_core::Timestamp::now().millis() - 60_000);
    let expired = services.catalog.expired_uploads(before, 100).await?;
    for upload in expired {
        let folder = Folder::upload(&upload.organization_id, &upload.store_id, &upload.id);
        services.blobs.delete_prefix(folder.path()).await?;
        services.catalog.discard_upload(&upload.id).await?;
        tracing::info!(upload = %upload.id, "discarded an expired, unregistered upload");
    }
    Ok(())
}

struct Worker {
    name: String,
    services: Services,
    config: Arc<PipelineConfig>,
    waker: Waker,
    /// Slots for reading and parsing originals, shared by the process's workers.
    parsing: Arc<ParseSlots>,
    superseded: Arc<Superseded>,
}

impl Worker {
    /// Claims jobs while fewer than `jobs_per_worker` of its jobs are at work (see [`Slot`]),
    /// each run as a task of its own; at a stop, claims no more and finishes the jobs in hand.
    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let most = self.config.jobs_per_worker.max(1);
        let slots = Arc::new(Semaphore::new(most));
        let mut jobs = JoinSet::new();
        loop {
            while jobs.try_join_next().is_some() {}
            if *stopped.borrow() {
                break;
            }
            if jobs.len() >= most * HELD_PER_SLOT {
                tokio::select! {
                    _ = jobs.join_next() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                continue;
            }
            let permit = tokio::select! {
                biased;
                // The semaphore is never closed.
                permit = slots.clone().acquire_owned() => permit.ok(),
                _ = stopped.wait_for(|s| *s) => break,
            };
            let notified = self.waker.0.notified();
            match self
                .services
                .catalog
                .claim(&self.name, self.config.lease)
                .await
            {
                Ok(Some(job)) => {
                    let worker = self.clone();
                    let slot = Slot(permit);
                    jobs.spawn(async move { worker.handle(job, slot).await });
                    continue;
                }
                Ok(None) => {}
                Err(err) => tracing::error!(worker = %self.name, error = %err, "claim failed"),
            }
            drop(permit);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        while jobs.join_next().await.is_some() {}
    }

    async fn handle(&self, job: Claimed, mut slot: Slot) {
        // The heartbeat runs beside the work for as long as the job is held.
        let (done_tx, mut done_rx) = watch::channel(false);
        let heartbeat = {
            let catalog = self.services.catalog.clone();
            let name = self.name.clone();
            let job_id = job.job().job_id.clone();
            let lease = self.config.lease;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(lease / 3) => {}
                        _ = done_rx.wait_for(|d| *d) => return,
                    }
                    match catalog.heartbeat(&job_id, &name, lease).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
                    }
                }
            })
        };
        let result = match &job {
            Claimed::Process(process) => process::run(self, process, &mut slot).await,
            Claimed::Purge { job, file_id } => self.purge_file(job, file_id).await,
            Claimed::PurgeStore { job } => self.purge_store(job).await,
            Claimed::PurgeOrgFile { job, org_file_id } => {
                self.purge_org_file(job, org_file_id).await
            }
        };
        let _ = done_tx.send(true);
        let _ = heartbeat.await;
        if let Err(err) = result {
            let kind = job.kind().as_str();
            let job = job.job();
            tracing::error!(worker = %self.name, job = %job.job_id, kind, error = %err, "job failed; re-queued");
            // Purges (and anything that failed outside a file's own error handling) are
            // tried again later rather than left to the lease reaper.
            let delay = self.config.retry_base.max(Duration::from_millis(500));
            if let Err(err) = self
                .services
                .catalog
                .requeue(&job.job_id, &self.name, delay, &err.to_string())
                .await
            {
                tracing::error!(error = %err, "could not re-queue a failed job");
            }
            let waker = self.waker.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                waker.wake();
            });
        }
    }

    async fn purge_file(&self, job: &HeldJob, file_id: &FileId) -> Result<()> {
        let services = &self.services;
        services
            .index
            .delete(IndexChange::DeleteFile {
                store_id: job.store_id.to_string(),
                file_id: file_id.to_string(),
            })
            .await?;
        // An original stored in this file's folder stays while its organization file lives
        // (another store holds it).
        let keep = services.catalog.live_original_of_link(file_id).await?;
        let keep: Vec<kiln_blobs::BlobPath> = keep.iter().map(|p| p.as_str().into()).collect();
        let folder = Folder::store_file(&job.organization_id, &job.store_id, file_id);
        services
            .blobs
            .delete_prefix_except(folder.path(), &keep)
            .await?;
        services.catalog.forget_file(&job.job_id, file_id).await?;
        Ok(())
    }

    async fn purge_store(&self, job: &HeldJob) -> Result<()> {
        let services = &self.services;
        services
            .index
            .delete(IndexChange::DeleteStore {
                store_id: job.store_id.to_string(),
            })
            .await?;
        purge_store_blobs(
            &services.catalog,
            &services.blobs,
            &job.organization_id,
            &job.store_id,
        )
        .await?;
        services
            .catalog
            .forget_store(&job.job_id, &job.store_id)
            .await?;
        Ok(())
    }

    async fn purge_org_file(&self, job: &HeldJob, org_file_id: &str) -> Result<()> {
        let catalog = &self.services.catalog;
        let blobs = &self.services.blobs;
        if let Some(original) = catalog.deleted_org_file_blob(org_file_id).await? {
            blobs.delete(&original.as_str().into()).await?;
        }
        blobs
            .delete_prefix(Folder::org_file(&job.organization_id, org_file_id).path())
            .await?;
        catalog.forget_org_file(&job.job_id, org_file_id).await?;
        Ok(())
    }
}

/// Deletes a deleted store's blobs, leaving the originals of organization files that live on
/// in other stores (a file uploaded here and then added elsewhere).
pub async fn purge_store_blobs(
    catalog: &kiln_catalog::Catalog,
    blobs: &kiln_blobs::Blobs,
    organization_id: &str,
    store_id: &str,
) -> Result<()> {
    let folder = Folder::store(organization_id, store_id);
    let keep: Vec<kiln_blobs::BlobPath> = catalog
        .live_originals_under(folder.path().as_ref())
        .await?
        .iter()
        .map(|p| p.as_str().into())
        .collect();
    blobs.delete_prefix_except(folder.path(), &keep).await?;
    Ok(())
}

/// Runs blocking work off the async threads on the background pool; a panic becomes an
/// error.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T>
where
    PipelineError: From<E>,
{
    // Background priority: processing yields the cores to request handling.
    Ok(kiln_background::background(f).await??)
}
