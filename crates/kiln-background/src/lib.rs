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

/// Runs `f` on a new thread of its own at background priority and waits for it. For work that
/// may hang (a parser on hostile input) or wait for others (an index add waiting to commit
/// with other files'): if the caller gives up waiting, or while it waits, the thread holds up
/// no shared pool. A panic in `f` comes back as `Err`.
pub async fn background_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskError> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_current_thread_priority();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|_| TaskError::Panicked);
            let _ = done.send(outcome);
        })?;
    result.await.map_err(|_| TaskError::Lost)?
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
        // A panic comes back as an error, not a dead pool.
        let failed = runtime.block_on(background(|| -> () { panic!("boom") }));
        assert!(failed.is_err());
        assert_eq!(runtime.block_on(background(|| 7)).unwrap(), 7);
    }
}
