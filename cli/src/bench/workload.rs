//! The bench's accounts and the requests each workload sends.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures::{StreamExt as _, stream};
use rand::Rng as _;
use rand_distr::{Distribution as _, Zipf};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;
use userctl_proto::gateway::v1::{
    LoginRequest, RegisterRequest, WhoAmIRequest, gateway_client::GatewayClient,
};

use super::load::Outcome;
use crate::{
    args::Workload,
    client,
    error::{CliError, Result},
};

/// Waits for the gateway's registration limit per registration, at most: beyond that the limit
/// is not what refuses it.
const MAX_WAITS: usize = 10;

pub const DEFAULT_WORKLOADS: [Workload; 4] = [
    Workload::Whoami,
    Workload::Login,
    Workload::Register,
    Workload::Mixed,
];

/// The accounts the bench made, with a token each.
pub struct Pool {
    emails: Vec<String>,
    pub tokens: Vec<String>,
    pub password: String,
    zipf: Zipf<f64>,
    nonce: u64,
    registered: AtomicU64,
}

/// Registers and logs in `users` accounts. Registrations count against the gateway's limit
/// per address like anyone's: when it refuses, `on_wait` is told how long, and the bench waits.
pub async fn make_pool(
    gateway: &GatewayClient<Channel>,
    users: usize,
    exponent: f64,
    on_wait: &dyn Fn(Duration),
) -> Result<Pool> {
    let users = users.max(1);
    let nonce: u64 = rand::rng().random();
    let password = format!("bench password {nonce}");
    let emails: Vec<String> = (0..users)
        .map(|i| format!("bench-{nonce:x}-{i}@example.com"))
        .collect();
    // Registration and login each cost an argon2 hash: a few at a time, as the gateway allows.
    let tokens: Vec<Result<String>> = stream::iter(emails.clone())
        .map(|email| {
            let mut gateway = gateway.clone();
            let password = password.clone();
            async move {
                let register = RegisterRequest {
                    email: email.clone(),
                    full_name: "Bench".into(),
                    password: password.clone(),
                };
                register_paced(&mut gateway, register, on_wait).await?;
                let login = gateway
                    .login(LoginRequest { email, password })
                    .await
                    .map_err(|status| client::status_error(&status))?;
                Ok(login.into_inner().access_token)
            }
        })
        .buffered(8)
        .collect()
        .await;
    let tokens = tokens.into_iter().collect::<Result<Vec<_>>>()?;
    let zipf = Zipf::new(users as f64, exponent)
        .map_err(|err| CliError::usage(format!("--zipf: {err}")))?;
    Ok(Pool {
        emails,
        tokens,
        password,
        zipf,
        nonce,
        registered: AtomicU64::new(0),
    })
}

/// Registers, waiting as the gateway says (its RetryInfo) while it refuses with
/// RESOURCE_EXHAUSTED; returns the new account's id.
pub async fn register_paced(
    gateway: &mut GatewayClient<Channel>,
    request: RegisterRequest,
    on_wait: &dyn Fn(Duration),
) -> Result<i64> {
    for _ in 0..MAX_WAITS {
        match gateway.register(request.clone()).await {
            Ok(profile) => return Ok(profile.into_inner().id),
            Err(status) if status.code() == Code::ResourceExhausted => {
                let wait = retry_after(&status);
                on_wait(wait);
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(client::status_error(&status)),
        }
    }
    Err(CliError::failed(
        "the gateway kept refusing the bench's registrations (RESOURCE_EXHAUSTED)",
    ))
}

/// The wait a RESOURCE_EXHAUSTED answer asks for, one second if it names none.
fn retry_after(status: &Status) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or(Duration::from_secs(1))
}

/// Success, a refusal by one of the stack's limits, or any other failure.
fn outcome<T>(result: std::result::Result<T, Status>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(status) if status.code() == Code::ResourceExhausted => Outcome::Throttled,
        Err(_) => Outcome::Failed,
    }
}

impl Pool {
    fn popular(&self) -> usize {
        let rank = self.zipf.sample(&mut rand::rng()) as usize;
        rank.clamp(1, self.tokens.len()) - 1
    }

    pub fn fresh_email(&self) -> String {
        format!(
            "bench-{:x}-new-{}@example.com",
            self.nonce,
            self.registered.fetch_add(1, Relaxed)
        )
    }
}

/// One request of `workload`. A register the gateway throttles is counted as such and not
/// retried: the register workload measures what one address is allowed.
pub fn operation(
    workload: Workload,
    gateway: GatewayClient<Channel>,
    pool: Arc<Pool>,
) -> impl Fn() -> futures::future::BoxFuture<'static, Outcome> + Clone + Send + 'static {
    move || {
        let mut gateway = gateway.clone();
        let pool = pool.clone();
        let workload = match workload {
            Workload::Mixed => match rand::rng().random_range(0..100) {
                0..90 => Workload::Whoami,
                90..98 => Workload::Login,
                _ => Workload::Register,
            },
            other => other,
        };
        Box::pin(async move {
            match workload {
                Workload::Whoami | Workload::Mixed => {
                    let token = &pool.tokens[pool.popular()];
                    let Ok(request) = client::authorized(WhoAmIRequest {}, token) else {
                        return Outcome::Failed;
                    };
                    outcome(gateway.who_am_i(request).await)
                }
                Workload::Login => {
                    let email = pool.emails[rand::rng().random_range(0..pool.emails.len())].clone();
                    outcome(
                        gateway
                            .login(LoginRequest {
                                email,
                                password: pool.password.clone(),
                            })
                            .await,
                    )
                }
                Workload::Register => {
                    let request = RegisterRequest {
                        email: pool.fresh_email(),
                        full_name: "Bench".into(),
                        password: pool.password.clone(),
                    };
                    outcome(gateway.register(request).await)
                }
            }
        })
    }
}
