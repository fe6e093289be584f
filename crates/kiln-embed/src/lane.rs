//! The embedding lane: one thread runs every local-model batch in turn, and it and the
//! compute pool run at a lowered CPU priority (nice 10 on Linux).
//!
//! Embedding is the only work in Kiln that keeps every core busy for long. Run at normal
//! priority, it makes everything else wait for a core: status reads, searches, uploads. At
//! nice 10 the scheduler hands a core to those at once, and the model still gets every cycle
//! nobody else wants — alone, it runs exactly as fast. One lane (instead of a blocking task per
//! worker) also keeps two forward passes from contending for the same cores and caches.

use std::sync::mpsc;
use std::sync::{Arc, Once};

use tokio::sync::oneshot;

use crate::EmbedError;
use crate::local::LocalModel;

/// How much lower than normal background computation runs (Unix nice value).
pub const BACKGROUND_NICE: i32 = 10;

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

/// Lowers the calling thread's CPU priority (Linux: per thread). Best effort.
pub fn lower_current_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(err) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
            tracing::debug!(error = %err, "could not lower a thread's priority");
        }
    }
}

/// Makes the global compute pool (used by candle's matrix kernels and the tokenizer) run at
/// background priority. Must run before anything uses that pool; later calls do nothing.
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

/// A handle on the lane; cheap to clone. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Lane {
    jobs: mpsc::Sender<(Vec<String>, Reply)>,
}

impl Lane {
    pub(crate) fn start(model: Arc<LocalModel>) -> Lane {
        let (jobs, queue) = mpsc::channel::<(Vec<String>, Reply)>();
        std::thread::Builder::new()
            .name("kiln-embed".into())
            .spawn(move || {
                lower_current_thread_priority();
                for (texts, reply) in queue {
                    // The asker may have gone (a cancelled job): skip its work.
                    if reply.is_closed() {
                        continue;
                    }
                    // A panic in the model fails this batch, not the lane.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        model.embed_sync(&texts)
                    }))
                    .unwrap_or_else(|_| {
                        Err(EmbedError::Permanent(
                            "the model failed on this batch".into(),
                        ))
                    });
                    let _ = reply.send(result);
                }
            })
            .expect("the embedding thread starts");
        Lane { jobs }
    }

    pub(crate) async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((texts, reply))
            .map_err(|_| EmbedError::Permanent("the embedding thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| EmbedError::Permanent("the embedding thread failed".into()))?
    }
}
