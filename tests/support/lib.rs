//! Test helpers: every test gets its own Redis, its own database and its own stack on port 0,
//! so tests run side by side and share nothing. Readiness always comes from a health check or
//! a PING, never from a delay.
//!
//! - [`redis`]: a private `redis-server` on a Unix socket, which tests can stop and restart.
//! - [`database`]: a fresh SQLite file or a fresh Postgres database.
//! - [`stack`]: store, cache and gateway in this process, wired as in production.
//! - [`keys`]: a stack's signing key set, and tokens signed with its key.
//! - [`cli`]: the real `userctl` binary, run as a user would.
//! - [`process`]: a real `usersvc` process, its log kept, signalled as an orchestrator would.
//! - [`postgres`]: a private Postgres server that a test can stop and start (a database outage).
//! - [`load`]: bounded load with every call timed, and the figures the fault tests print.
//! - [`outage`]: a dependency outage under load, cut into phases, printed and checked.
//! - [`hostile`]: the forged requests and the no-leak check the hostile-client tests share.
//! - [`tls`]: calling the internal services with, without, or with the wrong certificate.
//! - [`churn`]: users calling a stack through its published ports while replicas restart.
//! - [`swarm`]: a real two-node Docker swarm (the engine and a worker daemon in a namespace).
//! - [`registry`]: a private image registry, where the swarm tests push the services image.

pub mod churn;
pub mod cli;
pub mod database;
pub mod e2e;
pub mod hostile;
pub mod keys;
pub mod load;
pub mod outage;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod registry;
pub mod stack;
pub mod swarm;
pub mod tls;

use std::time::Duration;

use backon::{ConstantBuilder, Retryable as _};

/// How often a test re-checks a condition it waits for (progress counters, health).
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Retries `check` every 50 ms until it returns `Ok`, for at most `within`.
pub async fn eventually<T, E, F, Fut>(within: Duration, check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let poll = Duration::from_millis(50);
    let times = (within.as_millis() / poll.as_millis()).max(1) as usize;
    check
        .retry(
            ConstantBuilder::default()
                .with_delay(poll)
                .with_max_times(times),
        )
        .await
}
