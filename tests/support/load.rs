//! Bounded load for the fault and abuse tests: a few workers call one RPC in a loop until told to
//! stop or until a call budget is spent, and every call's start, duration and outcome is kept,
//! so a test can cut the run into phases afterwards (before, during and after a fault).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Channel};
use userctl_proto::gateway::v1::{
    LoginRequest, RegisterRequest, WhoAmIRequest, gateway_client::GatewayClient,
};

use crate::hostile::PASSWORD;

/// Concurrent callers of a churn load: enough to overlap requests, few enough for two cores; at
/// most this many calls are in flight at any instant.
pub const WORKERS: usize = 4;
/// Upper bound on any one load's calls, so no scenario can run away.
pub const MAX_CALLS: usize = 50_000;
/// Deadline of every call a load makes: a hang shows up as a failure, not a stuck test.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// One finished call.
#[derive(Debug, Clone)]
pub struct Call {
    pub started: Instant,
    pub took: Duration,
    pub result: Result<(), Status>,
}

/// Workers running until [`Load::stop`] or until `max_calls` calls have started.
pub struct Load {
    stop: CancellationToken,
    done: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<Vec<Call>>>,
}

impl Load {
    /// Starts `workers` tasks; each calls `call(n)` with a call number `n` unique across workers.
    pub fn start<F, Fut>(workers: usize, max_calls: usize, call: F) -> Self
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), Status>> + Send,
    {
        let stop = CancellationToken::new();
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|_| {
                let (stop, next, done, call) =
                    (stop.clone(), next.clone(), done.clone(), call.clone());
                tokio::spawn(async move {
                    let mut calls = Vec::new();
                    while !stop.is_cancelled() {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= max_calls {
                            break;
                        }
                        let started = Instant::now();
                        let result = call(n).await;
                        calls.push(Call {
                            started,
                            took: started.elapsed(),
                            result,
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    calls
                })
            })
            .collect();
        Self {
            stop,
            done,
            workers,
        }
    }

    /// Calls finished so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `more` calls have finished after this point, or `within` has passed (so a
    /// stalled load fails the test's later assertions instead of hanging it).
    pub async fn wait_for_calls(&self, more: usize, within: Duration) {
        let target = self.done() + more;
        let deadline = Instant::now() + within;
        while self.done() < target && Instant::now() < deadline && !self.finished() {
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        }
    }

    fn finished(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
    }

    /// Stops the workers after their current call and returns every call, in start order.
    pub async fn stop(self) -> Vec<Call> {
        self.stop.cancel();
        let mut calls = Vec::new();
        for worker in self.workers {
            calls.extend(worker.await.expect("load worker"));
        }
        calls.sort_by_key(|call| call.started);
        calls
    }
}

/// Failed calls, in order.
pub fn failures(calls: &[Call]) -> Vec<&Status> {
    calls
        .iter()
        .filter_map(|call| call.result.as_ref().err())
        .collect()
}

/// Figures for a set of calls.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub calls: usize,
    pub failures: usize,
    pub p50: Duration,
    pub p99: Duration,
}

impl Summary {
    pub fn of<'a>(calls: impl IntoIterator<Item = &'a Call>) -> Self {
        let calls: Vec<&Call> = calls.into_iter().collect();
        let mut took: Vec<Duration> = calls.iter().map(|call| call.took).collect();
        took.sort_unstable();
        Self {
            calls: calls.len(),
            failures: calls.iter().filter(|call| call.result.is_err()).count(),
            p50: percentile(&took, 0.50),
            p99: percentile(&took, 0.99),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, {} failed, p50 {:.1} ms, p99 {:.1} ms",
            self.calls,
            self.failures,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )
    }
}

/// Nearest-rank percentile of sorted samples; zero when there are none.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of unsorted samples.
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 0.5)
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A WhoAmI request for `token` with a deadline, so no call of a load can hang a test.
pub fn whoami(token: &str, deadline: Duration) -> Request<WhoAmIRequest> {
    let mut request = bearer(WhoAmIRequest {}, token);
    request.set_timeout(deadline);
    request
}

/// An account a load calls as.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub token: String,
}

/// Registers and logs in `n` accounts, `{prefix}{i}@example.com`, through `gateway`.
pub async fn accounts(gateway: &GatewayClient<Channel>, prefix: &str, n: usize) -> Vec<Account> {
    join_all((0..n).map(|i| {
        let mut gateway = gateway.clone();
        let email = format!("{prefix}{i}@example.com");
        async move {
            let id = gateway
                .register(RegisterRequest {
                    email: email.clone(),
                    full_name: format!("Load {i}"),
                    password: PASSWORD.into(),
                })
                .await
                .expect("register")
                .into_inner()
                .id;
            let token = gateway
                .login(LoginRequest {
                    email,
                    password: PASSWORD.into(),
                })
                .await
                .expect("login")
                .into_inner()
                .access_token;
            Account { id, token }
        }
    }))
    .await
}

/// The accounts' tokens.
pub fn tokens(accounts: &[Account]) -> Vec<String> {
    accounts
        .iter()
        .map(|account| account.token.clone())
        .collect()
}

/// WhoAmI round-robin over `tokens` from [`WORKERS`] workers.
pub fn whoami_load(gateway: GatewayClient<Channel>, tokens: &[String]) -> Load {
    let tokens: Arc<[String]> = tokens.into();
    Load::start(WORKERS, MAX_CALLS, move |n| {
        let mut gateway = gateway.clone();
        let tokens = tokens.clone();
        async move {
            gateway
                .who_am_i(whoami(&tokens[n % tokens.len()], CALL_DEADLINE))
                .await
                .map(drop)
        }
    })
}
