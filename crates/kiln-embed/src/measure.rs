//! What the benchmarks measure the model against: its useful work per text, and this
//! machine's matrix peak through the same kernels.
//!
//! Useful FLOPs of one text of n tokens (all-MiniLM-L6-v2: 6 layers, hidden 384, FFN 1536):
//! `2 · 10.62 M · n + 24 · 384 · n²` — the weight matrices (10.62 M parameters outside the
//! embedding lookups) once per token, and per layer the attention's scores and weighted sums
//! (`2 · 2 · 384 · n²`). Padding is not useful work and is not counted.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

/// Parameters of the matrix products per token (all but the token, position and type
/// embeddings, which are lookups).
const MATRIX_PARAMS: f64 = 10.62e6;
const HIDDEN: f64 = 384.0;
const LAYERS: f64 = 6.0;

/// Useful FLOPs of embedding one text of `n` tokens.
pub fn useful_flops(n: usize) -> f64 {
    let n = n as f64;
    2.0 * MATRIX_PARAMS * n + 4.0 * LAYERS * HIDDEN * n * n
}

/// This machine's f32 matrix peak in GFLOP/s as the lanes would see it: `threads` products
/// of 1024 × 1024 × 1024 at once, each on one thread of its own, through candle's kernels;
/// the best of three rounds.
pub fn matrix_peak_gflops(threads: usize) -> Result<f64, candle_core::Error> {
    const N: usize = 1024;
    const PRODUCTS: usize = 4;
    let threads = threads.max(1);
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let started = Instant::now();
        let results: Vec<Result<(), candle_core::Error>> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(1)
                            .build()
                            .map_err(candle_core::Error::wrap)?;
                        pool.install(|| {
                            let a = Tensor::ones((N, N), DType::F32, &Device::Cpu)?;
                            let b = Tensor::ones((N, N), DType::F32, &Device::Cpu)?;
                            for _ in 0..PRODUCTS {
                                a.matmul(&b)?;
                            }
                            Ok(())
                        })
                    })
                })
                .collect();
            runs.into_iter()
                .map(|run| {
                    run.join()
                        .unwrap_or_else(|_| Err(candle_core::Error::Msg("a run panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        let secs = started.elapsed().as_secs_f64();
        let total = (threads * PRODUCTS) as f64 * 2.0 * (N as f64).powi(3);
        best = best.max(total / secs / 1e9);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn useful_flops_follow_the_formula() {
        // 100 tokens: 2 · 10.62e6 · 100 + 24 · 384 · 100² = 2.124e9 + 9.216e7.
        assert!((useful_flops(100) - 2.21616e9).abs() < 1e3);
        assert_eq!(useful_flops(0), 0.0);
    }

    #[test]
    fn the_matrix_peak_is_a_plausible_rate() {
        let peak = matrix_peak_gflops(1).unwrap();
        // Any CPU this runs on multiplies at more than 1 and less than 10,000 GFLOP/s a core.
        assert!(peak > 1.0 && peak < 10_000.0, "{peak}");
    }
}
