//! Background work: threads and pools that run at background CPU priority (`SCHED_IDLE` on
//! Linux, else nice 10), so that request handlers and database workers, which wake at
//! normal priority, are scheduled ahead of processing, which still gets every idle cycle.
//! Used by the model's lanes (`kiln-embed`), the pipeline's parsing, chunking and index adds
//! (`kiln-pipeline`) and the index's opening (`kiln`). Measured effect and history:
//! `docs/decisions/embedding-lanes.md`.

use std::sync::Once;

use tokio::sync::oneshot;

/// How much lower than normal background computation runs (Unix nice value).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority. Linux: the `SCHED_IDLE` policy, under which a
/// normal thread that wakes (a request handler, a database worker) preempts at once instead of
/// waiting out the running thread's time slice. Falls back to nice 10. Best effort either way.
pub fn lower_current_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if idle.is_ok() {
            return;
        }
        let tid = rustix::thread::gettid();
        if let Err(err) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
            tracing::debug!(error = %err, "could not lower a thread's priority");
        }
    }
}

/// The CPUs the calling thread may run on (Linux: its affinity mask, which new threads
/// inherit), in ascending order; `None` where that cannot be read.
pub fn current_thread_cpus() -> Option<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        let set = rustix::thread::sched_getaffinity(None).ok()?;
        Some(
            (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&cpu| set.is_set(cpu))
                .collect(),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Binds the calling thread to one CPU: the scheduler no longer moves it. Only for a thread
/// that owns its core (one embedding lane per CPU the process may use, see `kiln-embed`'s
/// lanes). Unsupported outside Linux.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// Makes rayon's global pool run at background priority. The model's passes run on the
/// lanes' and the query pool's threads and chunking on the work pool; this catches rayon work
/// started anywhere else (the tokenizer called from an async thread). Must run before
/// anything uses that pool; later calls do nothing.
pub fn background_compute_pool() {
    static POOL: Once = Once::new();
    POOL.call_once(|| {
        let built = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("kiln-compute-{i}"))
            .start_handler(|_| lower_current_thread_priority())
            .build_global();
        if let Err(err) = built {
            tracing::debug!(error = %err, "the compute pool was already set up");
        }
    });
}

/// Why background work produced no result.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("the background task panicked")]
    Panicked,
    #[error("the background task was lost")]
    Lost,
    #[error("cannot start a thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Runs `f` on the background work pool (one thread per core, background priority) and
/// waits for it without holding an async thread. A panic in `f` comes back as `Err`.
pub async fn background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskError> {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("kiln-work-{i}"))
            .start_handler(|_| lower_current_thread_priority())
            .build()
            .expect("the background pool starts")
    });
    let (done, result) = oneshot::channel();
    pool.spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|_| TaskError::Panicked);
        let _ = done.send(outcome);
    });
    result.await.map_err(|_| TaskError::Lost)?
}

/// Runs `f` on a thread of its own at background priority and waits for it. For work that
/// may hang (a parser on hostile input) or wait for others (an index add waiting to commit
/// with other files'): if the caller gives up waiting, or while it waits, the thread holds up
/// no shared pool. The thread is one of `name`'s spare threads when one is idle, else a new
/// one (see [`Spares`]). A panic in `f` comes back as `Err`.
pub async fn background_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskError> {
    let (done, result) = oneshot::channel();
    spares(name).run(Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|_| TaskError::Panicked);
        let _ = done.send(outcome);
    }))?;
    result.await.map_err(|_| TaskError::Lost)?
}

/// Work handed to a spare thread; it catches its own panics.
type Job = Box<dyn FnOnce() + Send>;

/// How long a spare thread waits for work before it ends (tokio's blocking pool waits as
/// long).
const SPARE_KEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// The threads of one name that [`background_thread`] ran work on and that now wait for more
/// (up to [`SPARE_KEEP`]). A job goes to an idle one, or to a new thread when none is idle: a
/// job never waits behind another, so one that hangs holds up nothing but its own thread.
///
/// Why: a new thread for every file's parse and every index add was two thread starts and
/// exits a file. In a `perf` profile of `kiln bench ingest` (1,000 files, 2 cores) threads
/// of those two names took 1.3 % of the cores' time, 38 % of it in starting and ending
/// (fresh stack and heap pages cleared, stacks unmapped with TLB shootdowns, whose
/// interrupts reach the embedding lanes' core too).
struct Spares {
    name: String,
    state: std::sync::Mutex<SpareState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct SpareState {
    jobs: std::collections::VecDeque<Job>,
    /// Threads waiting for a job (each will take one from `jobs`).
    idle: usize,
}

fn spares(name: &str) -> std::sync::Arc<Spares> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Spares>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    all.entry(name.to_string())
        .or_insert_with(|| {
            Arc::new(Spares {
                name: name.to_string(),
                state: Mutex::default(),
                wake: std::sync::Condvar::new(),
            })
        })
        .clone()
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, SpareState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands `job` to an idle thread, or starts one for it.
    fn run(self: std::sync::Arc<Self>, job: Job) -> Result<(), std::io::Error> {
        {
            let mut state = self.lock();
            if state.idle > state.jobs.len() {
                state.jobs.push_back(job);
                self.wake.notify_one();
                return Ok(());
            }
        }
        std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                lower_current_thread_priority();
                job();
                self.serve();
            })?;
        Ok(())
    }

    /// A thread's life after its first job: takes the next, or ends after waiting
    /// [`SPARE_KEEP`] for none. It ends only with no job queued, so a queued job always has
    /// an idle thread to take it.
    fn serve(&self) {
        let mut state = self.lock();
        state.idle += 1;
        loop {
            if let Some(job) = state.jobs.pop_front() {
                state.idle -= 1;
                drop(state);
                job();
                state = self.lock();
                state.idle += 1;
                continue;
            }
            let (next, waited) = self
                .wake
                .wait_timeout(state, SPARE_KEEP)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state = next;
            if waited.timed_out() && state.jobs.is_empty() {
                state.idle -= 1;
                return;
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// (policy, nice) of the calling thread, from `/proc/thread-self/stat`.
    fn scheduling() -> (i64, i64) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        // Fields 19 (nice) and 41 (policy) of stat are 16 and 38 after the command name.
        (fields[38].parse().unwrap(), fields[16].parse().unwrap())
    }

    #[test]
    fn background_threads_really_run_at_background_priority() {
        const SCHED_IDLE: i64 = 5;
        let before = std::thread::spawn(scheduling).join().unwrap();
        assert_eq!(before, (0, 0), "a new thread starts at normal priority");
        let after = std::thread::spawn(|| {
            lower_current_thread_priority();
            scheduling()
        })
        .join()
        .unwrap();
        assert!(
            after.0 == SCHED_IDLE || after.1 == BACKGROUND_NICE as i64,
            "neither SCHED_IDLE nor nice {BACKGROUND_NICE}: {after:?}"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pooled = runtime.block_on(background(scheduling)).unwrap();
        assert_eq!(pooled, after, "the work pool runs at the same priority");
        let alone = runtime
            .block_on(background_thread("kiln-test", scheduling))
            .unwrap();
        assert_eq!(alone, after);
        let again = runtime
            .block_on(background_thread("kiln-test", scheduling))
            .unwrap();
        assert_eq!(again, after, "a spare thread keeps its priority");
        // A panic comes back as an error, not a dead pool.
        let failed = runtime.block_on(background(|| -> () { panic!("boom") }));
        assert!(failed.is_err());
        assert_eq!(runtime.block_on(background(|| 7)).unwrap(), 7);
    }

    /// The calling thread's kernel id, for telling threads apart.
    fn tid() -> i32 {
        rustix::thread::gettid().as_raw_nonzero().get()
    }

    #[test]
    fn a_spare_thread_takes_the_next_job_and_a_busy_one_holds_up_none() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let name = "kiln-test-spare";
        let first = runtime.block_on(background_thread(name, tid)).unwrap();
        // The thread becomes idle just after it answers.
        let mut second = 0;
        for _ in 0..100 {
            second = runtime.block_on(background_thread(name, tid)).unwrap();
            if second == first {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(second, first, "the idle thread ran the next job");
        // A job that blocks keeps its thread; the next job gets another and is not held up.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let stuck = runtime.spawn(background_thread(name, move || {
            let _ = started.send(());
            let _ = blocked.recv();
            tid()
        }));
        // The blocking job holds its thread before the next one is asked for (else the next
        // could take the idle thread first, and the blocking job the same one after it).
        runtime.block_on(running).expect("the blocking job started");
        let other = runtime.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                background_thread(name, tid),
            )
            .await
        });
        let other = other.expect("not held up by the blocked job").unwrap();
        release.send(()).unwrap();
        let stuck = runtime.block_on(stuck).unwrap().unwrap();
        assert_ne!(other, stuck, "two jobs at once ran on two threads");
        // A panic is an error for its caller; the thread goes on serving.
        let panicked = runtime.block_on(background_thread(name, || -> () { panic!("boom") }));
        assert!(matches!(panicked, Err(TaskError::Panicked)));
        assert_eq!(runtime.block_on(background_thread(name, || 5)).unwrap(), 5);
    }

    #[test]
    fn a_pinned_thread_runs_on_its_one_cpu_and_others_keep_theirs() {
        let allowed = current_thread_cpus().expect("Linux reports the affinity mask");
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        let (pinned, on) = std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            (
                current_thread_cpus().unwrap(),
                rustix::thread::sched_getcpu(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(pinned, vec![last]);
        assert_eq!(on, last, "the kernel moved the thread to its CPU");
        assert_eq!(
            current_thread_cpus().unwrap(),
            allowed,
            "only that thread was bound"
        );
    }
}
