//! `userctl bench`: drives a running stack and reports where it stands against the best this
//! machine can do in the same run.
//!
//! - [`load`]: the load loop and its histogram.
//! - [`baseline`]: a bare gRPC echo server the bench starts itself.
//! - this file: the user pool, the workloads, the targets from the bench issue.

pub mod baseline;
pub mod load;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use futures::{StreamExt as _, stream};
use rand::Rng as _;
use rand_distr::{Distribution as _, Zipf};
use serde::Serialize;
use tonic::transport::Channel;
use userctl_proto::{
    bench::v1::EchoMessage,
    cache::v1::{GetStatsRequest, Stats, cache_stats_client::CacheStatsClient},
    gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest, gateway_client::GatewayClient},
    user::v1::{ReadUserRequest, read_user_request::Key, user_store_client::UserStoreClient},
};

use crate::{
    args::Workload,
    client,
    error::{CliError, Result},
    procfs,
};
use load::{Limits, Measurement};

/// Where the stack answers and what the bench may look at.
pub struct Target {
    pub gateway: String,
    pub cache: Option<String>,
    /// The stack's Redis, when it is reachable from here (local runtime).
    pub redis_url: Option<String>,
    /// Service processes on this host, for CPU and memory figures.
    pub pids: Vec<(&'static str, u32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub cores: usize,
    pub baselines: Baselines,
    pub workloads: Vec<WorkloadReport>,
    /// whoami with 1 in flight: its latency against the unloaded baselines.
    pub whoami_single: Option<Measurement>,
    pub single_flight: Option<SingleFlight>,
    pub idle_rss_kib: Vec<(String, u64)>,
    pub targets: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Bare gRPC unary echo, 1 in flight (latency) and at the bench's concurrency (throughput).
    pub echo_single: Measurement,
    pub echo_loaded: Measurement,
    /// Redis GET of a cached user's bytes against the stack's Redis, 1 in flight.
    pub redis_get: Option<Measurement>,
    pub redis_note: Option<String>,
    /// One argon2id hash here, in milliseconds (the cost that bounds login).
    pub argon2_hash_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub workload: Workload,
    #[serde(flatten)]
    pub measurement: Measurement,
    /// hits / (hits + misses) over this workload, from `CacheStats`.
    pub hit_ratio: Option<f64>,
    /// CPU of each service over this workload, percent of one core.
    pub cpu_percent: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SingleFlight {
    pub concurrent_misses: u64,
    pub store_calls: u64,
}

/// One target from the bench issue: the measured value and the bound it must meet.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub value: f64,
    pub goal: String,
    pub met: bool,
}

const DEFAULT_WORKLOADS: [Workload; 4] = [
    Workload::Whoami,
    Workload::Login,
    Workload::Register,
    Workload::Mixed,
];

/// The accounts the bench made, with a token each.
struct Pool {
    emails: Vec<String>,
    tokens: Vec<String>,
    password: String,
    zipf: Zipf<f64>,
    nonce: u64,
    registered: AtomicU64,
}

pub struct Options {
    pub workloads: Vec<Workload>,
    pub limits: Limits,
    pub users: usize,
    pub zipf: f64,
}

pub async fn run(
    target: &Target,
    options: &Options,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
) -> Result<Report> {
    let channel = client::connect(&target.gateway).await?;
    let gateway = GatewayClient::new(channel);
    let cache_channel = match &target.cache {
        Some(addr) => Some(client::connect(addr).await?),
        None => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let idle_rss_kib = target
        .pids
        .iter()
        .filter_map(|(name, pid)| rss_kib(*pid).map(|kib| ((*name).to_owned(), kib)))
        .collect();

    let pool = Arc::new(make_pool(&gateway, options.users, options.zipf).await?);
    let baselines = baselines(target, options.limits, &pool, &gateway, progress).await?;

    let workloads = if options.workloads.is_empty() {
        DEFAULT_WORKLOADS.to_vec()
    } else {
        options.workloads.clone()
    };
    let mut reports = Vec::new();
    for workload in workloads {
        let before_stats = stats(cache_channel.as_ref()).await;
        let before_cpu = cpu_ticks(&target.pids);
        let started = Instant::now();
        let measurement = load::drive(
            options.limits,
            operation(workload, gateway.clone(), pool.clone()),
            progress(&format!("{workload:?}").to_lowercase()),
        )
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let after_stats = stats(cache_channel.as_ref()).await;
        let hit_ratio = match (before_stats, after_stats) {
            (Some(before), Some(after)) => hit_ratio(&before, &after),
            _ => None,
        };
        let cpu_percent = cpu_percent(&before_cpu, &cpu_ticks(&target.pids), elapsed);
        reports.push(WorkloadReport {
            workload,
            measurement,
            hit_ratio,
            cpu_percent,
        });
    }

    let whoami_single = if reports.iter().any(|r| r.workload == Workload::Whoami) {
        let single = Limits {
            concurrency: 1,
            ..options.limits
        };
        Some(
            load::drive(
                single,
                operation(Workload::Whoami, gateway.clone(), pool.clone()),
                progress("whoami (1)"),
            )
            .await,
        )
    } else {
        None
    };
    let single_flight = match &cache_channel {
        Some(channel) => Some(single_flight(&gateway, channel, &pool).await?),
        None => None,
    };
    let targets = checks(
        &baselines,
        &reports,
        whoami_single.as_ref(),
        single_flight.as_ref(),
        cores,
    );
    Ok(Report {
        concurrency: options.limits.concurrency,
        cores,
        baselines,
        workloads: reports,
        whoami_single,
        single_flight,
        idle_rss_kib,
        targets,
    })
}

async fn make_pool(gateway: &GatewayClient<Channel>, users: usize, exponent: f64) -> Result<Pool> {
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

    fn fresh_email(&self) -> String {
        format!(
            "bench-{:x}-new-{}@example.com",
            self.nonce,
            self.registered.fetch_add(1, Relaxed)
        )
    }
}

/// One request of `workload`; true when it succeeded.
fn operation(
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

async fn baselines(
    target: &Target,
    limits: Limits,
    pool: &Pool,
    gateway: &GatewayClient<Channel>,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
) -> Result<Baselines> {
    let echo = baseline::EchoBaseline::start()
        .map_err(|err| CliError::failed(format!("cannot start the echo baseline: {err}")))?;
    let echo_client = echo
        .client()
        .await
        .map_err(|err| CliError::failed(format!("cannot reach the echo baseline: {err}")))?;
    // The same bytes a whoami answer carries.
    let mut probe = gateway.clone();
    let profile = probe
        .who_am_i(client::authorized(WhoAmIRequest {}, &pool.tokens[0])?)
        .await
        .map_err(|status| client::status_error(&status))?
        .into_inner();
    let payload = prost::Message::encode_to_vec(&profile);
    let echo_op = {
        let payload = payload.clone();
        move || {
            let mut client = echo_client.clone();
            let payload = payload.clone();
            async move { client.echo(EchoMessage { payload }).await.is_ok() }
        }
    };
    let single = Limits {
        concurrency: 1,
        ..limits
    };
    let echo_single = load::drive(single, echo_op.clone(), progress("echo (1)")).await;
    let echo_loaded = load::drive(limits, echo_op, progress("echo")).await;

    let (redis_get, redis_note) = match &target.redis_url {
        Some(url) => match redis_baseline(url, payload, single, progress).await {
            Ok(m) => (Some(m), None),
            Err(err) => (None, Some(format!("Redis baseline failed: {err}"))),
        },
        None => (None, Some("the stack's Redis is not reachable from the host (docker runtime); run the bench on the local runtime for this baseline".into())),
    };
    Ok(Baselines {
        echo_single,
        echo_loaded,
        redis_get,
        redis_note,
        argon2_hash_ms: argon2_hash_ms(),
    })
}

async fn redis_baseline(
    url: &str,
    payload: Vec<u8>,
    limits: Limits,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
) -> Result<Measurement, redis::RedisError> {
    use redis::AsyncCommands as _;
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let key = format!("userctl:bench:{}", rand::rng().random::<u64>());
    let _: () = conn.set_ex(&key, payload, 120).await?;
    let op = {
        let key = key.clone();
        let conn = conn.clone();
        move || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move { conn.get::<_, Vec<u8>>(&key).await.is_ok() }
        }
    };
    let measurement = load::drive(limits, op, progress("redis GET (1)")).await;
    let _: () = conn.del(&key).await?;
    Ok(measurement)
}

/// The median of a few argon2id hashes with the gateway's parameters, here and now.
fn argon2_hash_ms() -> f64 {
    use argon2::{PasswordHasher as _, password_hash::SaltString};
    let salt = SaltString::encode_b64(b"bench salt 16 by")
        .unwrap_or_else(|_| SaltString::from_b64("YmVuY2hzYWx0").expect("salt"));
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let _ = argon2::Argon2::default().hash_password(b"bench password", &salt);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Many concurrent reads of one user that is not cached (just registered: the create
/// invalidated its keys), straight at the cache: how many store calls did they make?
async fn single_flight(
    gateway: &GatewayClient<Channel>,
    cache: &Channel,
    pool: &Pool,
) -> Result<SingleFlight> {
    const READERS: u64 = 1000;
    let mut gateway = gateway.clone();
    let request = RegisterRequest {
        email: pool.fresh_email(),
        full_name: "Herd".into(),
        password: pool.password.clone(),
    };
    let id = gateway
        .register(request)
        .await
        .map_err(|status| client::status_error(&status))?
        .into_inner()
        .id;
    let before = stats(Some(cache)).await;
    let store = UserStoreClient::new(cache.clone());
    let reads = (0..READERS).map(|_| {
        let mut store = store.clone();
        async move {
            store
                .read_user(ReadUserRequest {
                    key: Some(Key::Id(id)),
                })
                .await
                .is_ok()
        }
    });
    futures::future::join_all(reads).await;
    let after = stats(Some(cache)).await;
    let store_calls = match (before, after) {
        (Some(before), Some(after)) => after.store_calls - before.store_calls,
        _ => 0,
    };
    Ok(SingleFlight {
        concurrent_misses: READERS,
        store_calls,
    })
}

async fn stats(cache: Option<&Channel>) -> Option<Stats> {
    let mut client = CacheStatsClient::new(cache?.clone());
    client
        .get_stats(GetStatsRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

fn hit_ratio(before: &Stats, after: &Stats) -> Option<f64> {
    let hits = after.hits.saturating_sub(before.hits);
    let misses = after.misses.saturating_sub(before.misses);
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

fn checks(
    baselines: &Baselines,
    workloads: &[WorkloadReport],
    whoami_single: Option<&Measurement>,
    single_flight: Option<&SingleFlight>,
    cores: usize,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let find = |w: Workload| workloads.iter().find(|r| r.workload == w);
    if let Some(whoami) = find(Workload::Whoami) {
        if let (Some(redis), Some(single)) = (&baselines.redis_get, whoami_single) {
            // Two gRPC hops and one Redis hop, all with 1 in flight: the rest is our overhead.
            let floor = 2.0 * baselines.echo_single.p50_us as f64 + redis.p50_us as f64;
            let ratio = single.p50_us as f64 / floor;
            checks.push(Check {
                name: "whoami p50 / (2 x echo p50 + Redis GET p50)",
                value: ratio,
                goal: "<= 1.2".into(),
                met: ratio <= 1.2,
            });
        }
        let share = whoami.measurement.rps / baselines.echo_loaded.rps;
        checks.push(Check {
            name: "whoami throughput / echo throughput",
            value: share,
            goal: ">= 0.4".into(),
            met: share >= 0.4,
        });
        if let Some(ratio) = whoami.hit_ratio {
            checks.push(Check {
                name: "whoami Zipf hit ratio",
                value: ratio,
                goal: ">= 0.95".into(),
                met: ratio >= 0.95,
            });
        }
    }
    if let Some(login) = find(Workload::Login) {
        let ceiling = cores as f64 / (baselines.argon2_hash_ms / 1000.0);
        let share = login.measurement.rps / ceiling;
        checks.push(Check {
            name: "login throughput / (cores / argon2 hash time)",
            value: share,
            goal: ">= 0.9".into(),
            met: share >= 0.9,
        });
    }
    if let Some(sf) = single_flight {
        checks.push(Check {
            name: "store calls for 1000 concurrent misses on one key",
            value: sf.store_calls as f64,
            goal: "== 1".into(),
            met: sf.store_calls == 1,
        });
    }
    checks
}

/// utime + stime of each process, in clock ticks.
fn cpu_ticks(pids: &[(&'static str, u32)]) -> Vec<(String, u64)> {
    pids.iter()
        .filter_map(|(name, pid)| Some(((*name).to_owned(), procfs::cpu_ticks(*pid)?)))
        .collect()
}

fn cpu_percent(
    before: &[(String, u64)],
    after: &[(String, u64)],
    seconds: f64,
) -> Vec<(String, f64)> {
    let ticks_per_sec = procfs::ticks_per_second();
    after
        .iter()
        .filter_map(|(name, end)| {
            let (_, start) = before.iter().find(|(n, _)| n == name)?;
            Some((
                name.clone(),
                end.saturating_sub(*start) as f64 / ticks_per_sec / seconds.max(1e-9) * 100.0,
            ))
        })
        .collect()
}

fn rss_kib(pid: u32) -> Option<u64> {
    procfs::resident_bytes(pid).map(|bytes| bytes / 1024)
}

/// A latency in its most readable unit.
pub fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}
