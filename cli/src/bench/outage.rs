//! The Redis outage: with whoami running 1 in flight, the stack's Redis stops answering for
//! [`HANG`] (`CLIENT PAUSE … ALL`: its connections stay open and every command waits, the
//! worst case for a cache, which must time each call out rather than be refused at once).
//! Measured: how soon every cache's breaker opens, whoami's latency and failures while Redis
//! hangs, and how soon cache hits resume once it answers again. Redis resumes by itself when
//! the pause ends, so a bench that is stopped half-way leaves no outage behind.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use serde::Serialize;
use userctl_proto::cache::v1::{RedisBreaker, Stats};

use super::load::{self, Limits, Measurement, Outcome};

/// How long Redis hangs.
pub const HANG: Duration = Duration::from_secs(4);
/// How long whoami goes on after Redis answers again, and the bench waits for hits.
const RESUME_WAIT: Duration = Duration::from_secs(3);
/// How often the caches' counters are read while waiting for a change.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Serialize)]
pub struct RedisOutage {
    pub hang_ms: u64,
    /// From the pause to every cache's breaker reporting open; None if that did not happen
    /// while Redis hung.
    pub breaker_open_after_ms: Option<u64>,
    /// whoami, 1 in flight, while Redis hung.
    pub during: Measurement,
    /// From Redis answering again to the first cache hit with every breaker closed; None if
    /// that did not happen within 3 s.
    pub hits_resumed_after_ms: Option<u64>,
    /// whoami, 1 in flight, for 3 s from Redis answering again.
    pub after: Measurement,
}

impl RedisOutage {
    /// whoami calls that failed from the pause until 3 s after Redis answered again.
    pub fn failed(&self) -> u64 {
        self.during.errors + self.after.errors
    }
}

/// Runs the outage against the Redis at `redis_url`, reading every cache's counters through
/// `stats` while `whoami` runs.
pub async fn measure<S, SFut, W, WFut>(
    redis_url: &str,
    stats: S,
    whoami: W,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
) -> Result<RedisOutage, redis::RedisError>
where
    S: Fn() -> SFut,
    SFut: Future<Output = Option<Vec<Stats>>>,
    W: Fn() -> WFut + Clone + Send + 'static,
    WFut: Future<Output = Outcome> + Send,
{
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let paused = Instant::now();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(HANG.as_millis().to_string())
        .arg("ALL")
        .query_async::<()>(&mut redis)
        .await?;
    let back = paused + HANG;
    let during_limits = Limits {
        concurrency: 1,
        warmup: Duration::ZERO,
        duration: back.saturating_duration_since(Instant::now()),
        requests: None,
    };
    let (during, opened) = tokio::join!(
        load::drive(
            during_limits,
            whoami.clone(),
            progress("whoami, Redis hung")
        ),
        first(&stats, back, |each| each
            .iter()
            .all(|s| s.redis_breaker() == RedisBreaker::Open)),
    );
    tokio::time::sleep_until(back.into()).await;

    let hits_then = stats()
        .await
        .map(|each| each.iter().map(|s| s.hits).sum::<u64>());
    let resumed_limits = Limits {
        duration: RESUME_WAIT,
        ..during_limits
    };
    let (after, resumed) = tokio::join!(
        load::drive(resumed_limits, whoami, progress("whoami, Redis back")),
        first(&stats, back + RESUME_WAIT, |each| {
            let closed = each
                .iter()
                .all(|s| s.redis_breaker() == RedisBreaker::Closed);
            let hits: u64 = each.iter().map(|s| s.hits).sum();
            closed && hits_then.is_some_and(|then| hits > then)
        }),
    );
    Ok(RedisOutage {
        hang_ms: millis(HANG),
        breaker_open_after_ms: opened.map(|at| millis(at - paused)),
        during,
        hits_resumed_after_ms: resumed.map(|at| millis(at.saturating_duration_since(back))),
        after,
    })
}

/// When `holds` first held for every cache's counters, polling until `deadline`.
async fn first<S, SFut>(
    stats: &S,
    deadline: Instant,
    holds: impl Fn(&[Stats]) -> bool,
) -> Option<Instant>
where
    S: Fn() -> SFut,
    SFut: Future<Output = Option<Vec<Stats>>>,
{
    while Instant::now() < deadline {
        let polled = Instant::now();
        if stats().await.is_some_and(|each| holds(&each)) {
            return Some(polled);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
