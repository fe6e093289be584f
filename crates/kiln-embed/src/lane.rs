//! The embedding lanes: one thread per core, each running whole forward passes on its own
//! (no parallelism inside a pass), taking requests from one queue; they and the compute pool
//! run at background CPU priority (`SCHED_IDLE` on Linux, else nice 10).
//!
//! Embedding is the only work in Kiln that keeps every core busy for long. Run at normal
//! priority, it makes everything else wait for a core: status reads, searches, uploads. At
//! background priority the scheduler hands a core to those first, and the model still gets
//! every cycle nobody else wants. Lanes (instead of a blocking task per worker) keep forward
//! passes from contending for the same cores and caches, and let requests that queue up
//! together share one batch.
//!
//! One pass per core, each on one thread, rather than one pass at a time split across the
//! cores: a pass split across threads hands work out and back for every matrix product and
//! every large element-wise step, its helper threads park and wake hundreds of times a
//! second, and each such wake-up can hold a core away from a request thread for up to a
//! scheduler tick (measured: a two-thread ping-pong's p99 went from 0.09 to 2.5–3 ms while
//! the model ran). A lane that computes alone never parks mid-pass. It is also faster:
//! 5.7–6.4 chunks/s against 3.6–3.9 on this 2-core machine. The binary asks candle for no
//! helper threads (`CANDLE_NUM_THREADS=1`, set in `main`); each lane runs inside a rayon pool
//! of its own one thread, so the matrix kernels' and the tokenizer's rayon parallelism stays
//! on that thread too. Only a request of a few hundred bytes (a search query) is run
//! otherwise: at once, not queued, split across the cores on a pool of its own, because a
//! searcher waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use kiln_background::lower_current_thread_priority;
use tokio::sync::oneshot;

use crate::EmbedError;
use crate::local::LocalModel;

/// The lanes' thread names: this, then the lane's number.
pub const THREAD_PREFIX: &str = "kiln-embed-";

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

static PASSES: AtomicU64 = AtomicU64::new(0);
static TEXTS: AtomicU64 = AtomicU64::new(0);
static BUSY_MICROS: AtomicU64 = AtomicU64::new(0);
static LANES: AtomicU64 = AtomicU64::new(0);

/// What the lanes of this process have done so far: forward passes, texts embedded, and the
/// time spent in them (for the ingest benchmark: how full the batches were, how busy the lane).
#[derive(Debug, Clone, Copy, Default)]
pub struct LaneStats {
    pub passes: u64,
    pub texts: u64,
    /// Summed over the lanes.
    pub busy: std::time::Duration,
    /// Lane threads started.
    pub lanes: u64,
}

pub fn stats() -> LaneStats {
    LaneStats {
        passes: PASSES.load(Ordering::Relaxed),
        texts: TEXTS.load(Ordering::Relaxed),
        busy: std::time::Duration::from_micros(BUSY_MICROS.load(Ordering::Relaxed)),
        lanes: LANES.load(Ordering::Relaxed),
    }
}

/// Embeds the texts of several requests in one call and hands each its own vectors.
fn run(model: &LocalModel, jobs: Vec<(Vec<String>, Reply)>) {
    if jobs.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let all: Vec<&str> = jobs
        .iter()
        .flat_map(|(texts, _)| texts.iter().map(String::as_str))
        .collect();
    // A panic in the model fails these requests, not the lane.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed_sync(&all)))
        .unwrap_or_else(|_| {
            Err(EmbedError::Permanent(
                "the model failed on this batch".into(),
            ))
        });
    PASSES.fetch_add(
        all.len().div_ceil(model.batch_size()) as u64,
        Ordering::Relaxed,
    );
    TEXTS.fetch_add(all.len() as u64, Ordering::Relaxed);
    BUSY_MICROS.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match result {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for (texts, reply) in jobs {
                let _ = reply.send(Ok(vectors.by_ref().take(texts.len()).collect()));
            }
        }
        Err(err) => {
            for (_, reply) in jobs {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// What one set of lanes shares: the queue, how many texts wait in it, and how many passes
/// run at once.
struct Shared {
    queue: std::sync::Mutex<mpsc::Receiver<(Vec<String>, Reply)>>,
    queued: AtomicU64,
    lanes: u64,
    running: AtomicU64,
    peak: AtomicU64,
}

/// How many texts each part of a request of `texts` should hold so that `lanes` lanes share
/// it evenly in as few rounds of `batch`-sized passes as it needs: 6 texts on 2 lanes run as
/// 3 + 3 at once rather than 6 on one lane while the other idles; 20 with batches of 8 as
/// four parts of 5 (two rounds) rather than 8 + 8 + 4 (two rounds, one lane idle in the
/// second).
fn part_size(texts: usize, lanes: usize, batch: usize) -> usize {
    let (lanes, batch) = (lanes.max(1), batch.max(1));
    let rounds = texts.div_ceil(lanes * batch).max(1);
    texts.div_ceil(lanes * rounds).clamp(1, batch)
}

/// How many texts a lane that has just become free takes: a batch at most, and no more than
/// its share of what waits among the lanes free now, so the last few requests of a run are
/// spread over the lanes instead of making up one lane's batch while another idles.
fn fair_share(waiting: u64, free_lanes: u64, batch: usize) -> u64 {
    waiting
        .div_ceil(free_lanes.max(1))
        .clamp(1, batch.max(1) as u64)
}

/// The CPU each lane is bound to, when there is one lane for each CPU the process may run
/// on and binding is asked for; `None` otherwise (the scheduler places the lanes).
///
/// Why: the lanes run at background priority, and the kernel balances such threads between
/// CPUs lazily. While a request thread preempted one lane, the scheduler could leave both
/// lanes queued on one CPU and the other idle for a while: in `kiln bench ingest` (1,000
/// files, 2 cores) the cores were idle 2.9–4.1 % of the pipeline's run with the lanes free,
/// 1.9–2.7 % with them bound, and the lanes' share of the cores rose from 78.3–79.2 % to
/// 79.2–80.4 %, higher in each of six pairs. With fewer lanes than CPUs (a CPU quota, or
/// `lanes` set lower) nothing is bound: a lane may then need to move.
fn lane_cpus(lanes: usize, allowed: Option<Vec<usize>>, pin: bool) -> Option<Vec<usize>> {
    allowed.filter(|cpus| pin && cpus.len() == lanes)
}

/// A handle on the lanes; cheap to clone. The threads end when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Lane {
    jobs: mpsc::Sender<(Vec<String>, Reply)>,
    model: Arc<LocalModel>,
    shared: Arc<Shared>,
    /// Per lane, the CPU it was bound to, as the lane read its own affinity back (`None`:
    /// not bound).
    bound: Arc<[Option<usize>]>,
}

impl Lane {
    /// Starts `lanes` threads (at least one) embedding with `model`; with `pin`, each is bound
    /// to a CPU of its own when there is one lane per CPU the caller may run on
    /// ([`lane_cpus`]). Returns once every lane runs.
    pub(crate) fn start(model: Arc<LocalModel>, lanes: usize, pin: bool) -> Lane {
        let lanes = lanes.max(1);
        let cpus = lane_cpus(lanes, kiln_background::current_thread_cpus(), pin);
        let (jobs, queue) = mpsc::channel::<(Vec<String>, Reply)>();
        let shared = Arc::new(Shared {
            queue: std::sync::Mutex::new(queue),
            queued: AtomicU64::new(0),
            lanes: lanes as u64,
            running: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        });
        let (started, bound) = mpsc::channel::<(usize, Option<usize>)>();
        for i in 0..lanes {
            LANES.fetch_add(1, Ordering::Relaxed);
            let (model, shared, started) = (model.clone(), shared.clone(), started.clone());
            let cpu = cpus.as_ref().map(|cpus| cpus[i]);
            std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}{i}"))
                .spawn(move || {
                    lower_current_thread_priority();
                    if let Some(cpu) = cpu
                        && let Err(err) = kiln_background::pin_current_thread(cpu)
                    {
                        tracing::warn!(error = %err, cpu, "an embedding lane could not be bound to its CPU");
                    }
                    // Bound as asked, by the kernel's own account.
                    let on = cpu.filter(|&cpu| {
                        kiln_background::current_thread_cpus() == Some(vec![cpu])
                    });
                    let _ = started.send((i, on));
                    drop(started);
                    // A pool of this thread alone: rayon work started inside a pass (the
                    // matrix kernels, the tokenizer) runs here, not on other threads.
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .use_current_thread()
                        .build();
                    match pool {
                        Ok(pool) => pool.install(|| serve(&model, &shared)),
                        Err(err) => {
                            tracing::warn!(error = %err, "an embedding lane runs without its own pool");
                            serve(&model, &shared)
                        }
                    }
                })
                .expect("the embedding thread starts");
        }
        drop(started);
        let mut on = vec![None; lanes];
        for (i, cpu) in bound.iter() {
            on[i] = cpu;
        }
        Lane {
            jobs,
            model,
            shared,
            bound: on.into(),
        }
    }

    /// Per lane, the one CPU it is bound to (`None`: not bound).
    pub(crate) fn bound_cpus(&self) -> Vec<Option<usize>> {
        self.bound.to_vec()
    }

    /// The most forward passes these lanes have run at once.
    pub(crate) fn peak_passes(&self) -> u64 {
        self.shared.peak.load(Ordering::Relaxed)
    }

    /// Embeds `texts`. A request of more than a few texts is queued in parts, so that the
    /// lanes share it (`part_size`); the vectors come back in the order of the texts. A small
    /// request (a search query) does not queue: it runs at once, split across the cores.
    pub(crate) async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let bytes: usize = texts.iter().map(String::len).sum();
        if bytes <= WIDE_PASS_MAX_BYTES
            && let Some(pool) = wide_pool()
        {
            let (reply, answer) = oneshot::channel();
            let model = self.model.clone();
            pool.spawn(move || run(&model, vec![(texts, reply)]));
            return answer
                .await
                .map_err(|_| EmbedError::Permanent("an embedding thread failed".into()))?;
        }
        let part = part_size(
            texts.len(),
            self.shared.lanes as usize,
            self.model.batch_size(),
        );
        // Texts of like length go into the same part: a pass is padded to its longest text
        // (in SciFact's order, 6.5 % of what passes of 8 computed was padding).
        let order = by_length(&texts);
        let mut answers = Vec::with_capacity(texts.len().div_ceil(part));
        for part in order.chunks(part) {
            let (reply, answer) = oneshot::channel();
            self.shared
                .queued
                .fetch_add(part.len() as u64, Ordering::SeqCst);
            let part: Vec<String> = part.iter().map(|&i| texts[i].clone()).collect();
            self.jobs
                .send((part, reply))
                .map_err(|_| EmbedError::Permanent("the embedding threads have stopped".into()))?;
            answers.push(answer);
        }
        let mut vectors = vec![Vec::new(); texts.len()];
        let mut slots = order.into_iter();
        for answer in answers {
            let part = answer
                .await
                .map_err(|_| EmbedError::Permanent("an embedding thread failed".into()))??;
            // The part first: zipping the other way round would take one slot too many.
            for (vector, slot) in part.into_iter().zip(slots.by_ref()) {
                vectors[slot] = vector;
            }
        }
        Ok(vectors)
    }
}

/// The texts' positions, shortest first (bytes stand in for tokens).
pub fn by_length<S: AsRef<str>>(texts: &[S]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].as_ref().len());
    order
}

/// Requests of at most this many bytes of text (a search query) skip the lanes' queue and
/// run at once, split across all cores. Such a pass costs mostly the matrix kernels' packing
/// of the weights, which the threads share, and a searcher waits for it (a short query's
/// semantic search on an idle 2-core machine: 27–31 ms split, 46 ms on one thread; while 200
/// files were processing, 97 ms median, against 2.4 s when it queued behind their batches).
const WIDE_PASS_MAX_BYTES: usize = 512;

/// A pool of one background thread per core for small requests (`None` if it cannot start).
fn wide_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("kiln-query-{i}"))
            .start_handler(|_| lower_current_thread_priority())
            .build()
            .ok()
    })
    .as_ref()
}

/// One lane's loop: takes the next request and those that queued up behind it (up to its
/// fair share of a batch: one chunk each from several workers runs as one forward pass), runs
/// them, repeats.
fn serve(model: &LocalModel, shared: &Shared) {
    loop {
        let mut jobs = {
            let Ok(queue) = shared.queue.lock() else {
                return;
            };
            let Ok(first) = queue.recv() else { return };
            let free = shared
                .lanes
                .saturating_sub(shared.running.load(Ordering::SeqCst));
            let share = fair_share(
                shared.queued.load(Ordering::SeqCst),
                free,
                model.batch_size(),
            );
            let mut texts = first.0.len() as u64;
            let mut jobs = vec![first];
            while texts < share {
                match queue.try_recv() {
                    Ok(job) => {
                        texts += job.0.len() as u64;
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            shared.queued.fetch_sub(texts, Ordering::SeqCst);
            jobs
        };
        // Askers that have gone (a cancelled job) are skipped.
        jobs.retain(|(_, reply)| !reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let running = shared.running.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(running, Ordering::SeqCst);
        run(model, jobs);
        shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod sharing {
    use super::*;

    #[test]
    fn requests_are_cut_so_the_lanes_share_them_evenly() {
        // (texts, lanes, batch) -> part size
        for (texts, lanes, batch, part) in [
            (1, 2, 8, 1),
            (6, 2, 8, 3),
            (7, 2, 8, 4),
            (16, 2, 8, 8),
            (20, 2, 8, 5),
            (33, 2, 8, 6),
            (6, 1, 8, 6),
            (20, 1, 8, 7),
            (5, 4, 8, 2),
            (3, 2, 1, 1),
        ] {
            assert_eq!(
                part_size(texts, lanes, batch),
                part,
                "{texts} on {lanes}×{batch}"
            );
        }
    }

    #[test]
    fn a_request_is_cut_in_order_of_length() {
        let texts = [
            "a longer text",
            "short",
            "the longest text of all",
            "mid text",
        ];
        assert_eq!(by_length(&texts), vec![1, 3, 0, 2]);
        assert!(by_length::<&str>(&[]).is_empty());
    }

    #[test]
    fn lanes_are_bound_only_one_to_each_cpu_and_when_asked() {
        let two = || Some(vec![2, 5]);
        assert_eq!(lane_cpus(2, two(), true), Some(vec![2, 5]));
        assert_eq!(lane_cpus(2, two(), false), None, "not asked");
        assert_eq!(lane_cpus(1, two(), true), None, "fewer lanes than CPUs");
        assert_eq!(lane_cpus(3, two(), true), None, "more lanes than CPUs");
        assert_eq!(lane_cpus(2, None, true), None, "the mask unknown");
    }

    #[test]
    fn a_free_lane_takes_its_share_of_what_waits() {
        assert_eq!(fair_share(5, 2, 8), 3, "both lanes free: 3 and then 2");
        assert_eq!(fair_share(5, 1, 8), 5, "the other lane busy: take all");
        assert_eq!(fair_share(30, 1, 8), 8, "never more than a batch");
        assert_eq!(fair_share(1, 2, 8), 1);
        assert_eq!(fair_share(0, 0, 8), 1, "the request in hand, at least");
    }
}
