//! Counters behind `CacheStats`. Relaxed atomics: each counter is independent and a reader
//! only needs a recent value, not a consistent snapshot across counters.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use userctl_proto::cache::v1::{RedisBreaker, Stats};

use super::breaker::Breaker;
use crate::requests::percentile;

/// How many recent reads the latency percentiles are computed over.
const LATENCY_WINDOW: usize = 4096;

#[derive(Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub negative_hits: AtomicU64,
    pub store_calls: AtomicU64,
    pub redis_errors: AtomicU64,
    pub coalesced: AtomicU64,
    pub creates: AtomicU64,
    /// Whether the last Redis call succeeded; starts false until one does.
    redis_up: AtomicBool,
    /// Decides whether a call goes to Redis at all; its state and counts are reported here.
    pub breaker: Breaker,
    started: Instant,
    /// Recent ReadUser latencies in microseconds, oldest first.
    latencies: Mutex<VecDeque<u32>>,
}

impl Default for CacheStats {
    fn default() -> Self {
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            negative_hits: AtomicU64::new(0),
            store_calls: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            creates: AtomicU64::new(0),
            redis_up: AtomicBool::new(false),
            breaker: Breaker::default(),
            started: Instant::now(),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }
}

impl CacheStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(up, Relaxed);
    }

    /// Marks Redis down; `counted` when a request fell through to the store because of it.
    pub fn redis_failed(&self, counted: bool) {
        self.redis_up.store(false, Relaxed);
        if counted {
            self.redis_errors.fetch_add(1, Relaxed);
        }
    }

    pub fn record_read(&self, elapsed: Duration) {
        let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        let mut window = self
            .latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(micros);
    }

    pub fn snapshot(&self) -> Stats {
        let (p50, p99) = {
            let window = self
                .latencies
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut sorted: Vec<u32> = window.iter().copied().collect();
            sorted.sort_unstable();
            (percentile(&sorted, 0.50), percentile(&sorted, 0.99))
        };
        let (breaker, breaker_opens, redis_skipped) = self.breaker.snapshot();
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
            store_calls: self.store_calls.load(Relaxed),
            redis_errors: self.redis_errors.load(Relaxed),
            redis_up: self.redis_up.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            read_p50_us: p50,
            read_p99_us: p99,
            uptime_secs: self.started.elapsed().as_secs(),
            creates: self.creates.load(Relaxed),
            redis_breaker: RedisBreaker::from(breaker).into(),
            breaker_opens,
            redis_skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_window_keeps_only_recent_reads() {
        let stats = CacheStats::default();
        for _ in 0..LATENCY_WINDOW {
            stats.record_read(Duration::from_micros(1_000));
        }
        for _ in 0..LATENCY_WINDOW {
            stats.record_read(Duration::from_micros(10));
        }
        assert_eq!(stats.snapshot().read_p99_us, 10);
    }
}
