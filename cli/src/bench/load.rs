//! The load loop: N workers call one operation back to back until the deadline; latencies of
//! calls that start after the warm-up go into a histogram. Answers the stack's limits refused
//! (RESOURCE_EXHAUSTED) are counted apart and kept out of the latencies and the rate: they
//! measure a limit, not the work.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// When a workload stops.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Measured requests after which to stop, if sooner than `duration`.
    pub requests: Option<u64>,
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Refused by one of the stack's limits (RESOURCE_EXHAUSTED), before any work.
    Throttled,
}

impl From<bool> for Outcome {
    /// A call that cannot be throttled: it succeeded or it failed.
    fn from(ok: bool) -> Self {
        if ok { Self::Ok } else { Self::Failed }
    }
}

/// The figures of one measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Answers that were not throttled: what the latencies and the rate are of.
    pub requests: u64,
    pub errors: u64,
    /// Answers refused by a limit, counted apart.
    pub throttled: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

/// Runs `op` under `limits`; `tick` is called after every measured request (for a progress
/// bar).
pub async fn drive<F, Fut>(
    limits: Limits,
    op: F,
    tick: impl Fn() + Send + Sync + 'static,
) -> Measurement
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let start = Instant::now();
    let measure_from = start + limits.warmup;
    let deadline = measure_from + limits.duration;
    let measured = Arc::new(AtomicU64::new(0));
    let tick = Arc::new(tick);

    let workers: Vec<_> = (0..limits.concurrency.max(1))
        .map(|_| {
            let op = op.clone();
            let measured = measured.clone();
            let tick = tick.clone();
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let (mut errors, mut throttled) = (0u64, 0u64);
                loop {
                    let begun = Instant::now();
                    if begun >= deadline
                        || limits.requests.is_some_and(|n| measured.load(Relaxed) >= n)
                    {
                        break;
                    }
                    let outcome = op().await;
                    if begun >= measure_from {
                        if outcome == Outcome::Throttled {
                            throttled += 1;
                        } else {
                            let micros = u64::try_from(begun.elapsed().as_micros())
                                .unwrap_or(u64::MAX)
                                .max(1);
                            let _ = hist.record(micros);
                            errors += u64::from(outcome == Outcome::Failed);
                        }
                        measured.fetch_add(1, Relaxed);
                        tick();
                    }
                }
                (hist, errors, throttled)
            })
        })
        .collect();

    let mut hist = new_histogram();
    let (mut errors, mut throttled) = (0, 0);
    for worker in workers {
        if let Ok((worker_hist, worker_errors, worker_throttled)) = worker.await {
            let _ = hist.add(&worker_hist);
            errors += worker_errors;
            throttled += worker_throttled;
        }
    }
    let seconds = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let requests = hist.len();
    Measurement {
        requests,
        errors,
        throttled,
        seconds,
        rps: requests as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warmup_calls_are_not_measured_and_requests_bound_the_run() {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let limits = Limits {
            concurrency: 4,
            warmup: Duration::from_millis(20),
            duration: Duration::from_secs(30),
            requests: Some(200),
        };
        let m = drive(
            limits,
            move || {
                let calls = counted.clone();
                async move {
                    calls.fetch_add(1, Relaxed);
                    tokio::task::yield_now().await;
                    Outcome::Ok
                }
            },
            || {},
        )
        .await;
        assert!((200..=204).contains(&m.requests), "{m:?}");
        assert!(
            calls.load(Relaxed) > m.requests,
            "warm-up calls happened but were not counted"
        );
        assert_eq!(m.errors, 0);
    }

    #[tokio::test]
    async fn throttled_answers_are_counted_apart_from_the_rate_and_latencies() {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let limits = Limits {
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
            requests: Some(100),
        };
        let m = drive(
            limits,
            move || {
                let n = counted.fetch_add(1, Relaxed);
                async move {
                    match n % 4 {
                        0 => Outcome::Failed,
                        1 => Outcome::Ok,
                        _ => Outcome::Throttled,
                    }
                }
            },
            || {},
        )
        .await;
        assert_eq!((m.requests, m.errors, m.throttled), (50, 25, 50), "{m:?}");
    }
}
