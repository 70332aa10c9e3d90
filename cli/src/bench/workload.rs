//! The bench's accounts and the requests each workload sends.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use futures::{StreamExt as _, stream};
use rand::Rng as _;
use rand_distr::{Distribution as _, Zipf};
use tonic::transport::Channel;
use userctl_proto::gateway::v1::{
    LoginRequest, RegisterRequest, WhoAmIRequest, gateway_client::GatewayClient,
};

use crate::{
    args::Workload,
    client,
    error::{CliError, Result},
};

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

pub async fn make_pool(
    gateway: &GatewayClient<Channel>,
    users: usize,
    exponent: f64,
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
                gateway
                    .register(register)
                    .await
                    .map_err(|status| client::status_error(&status))?;
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

/// One request of `workload`; true when it succeeded.
pub fn operation(
    workload: Workload,
    gateway: GatewayClient<Channel>,
    pool: Arc<Pool>,
) -> impl Fn() -> futures::future::BoxFuture<'static, bool> + Clone + Send + 'static {
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
                        return false;
                    };
                    gateway.who_am_i(request).await.is_ok()
                }
                Workload::Login => {
                    let email = pool.emails[rand::rng().random_range(0..pool.emails.len())].clone();
                    gateway
                        .login(LoginRequest {
                            email,
                            password: pool.password.clone(),
                        })
                        .await
                        .is_ok()
                }
                Workload::Register => {
                    let request = RegisterRequest {
                        email: pool.fresh_email(),
                        full_name: "Bench".into(),
                        password: pool.password.clone(),
                    };
                    gateway.register(request).await.is_ok()
                }
            }
        })
    }
}
