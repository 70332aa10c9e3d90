//! `userctl bench`: drives a running stack and reports where it stands against the best this
//! machine can do in the same run.
//!
//! - [`load`]: the load loop and its histogram.
//! - [`baseline`]: what a bare gRPC call (plaintext and over mutual TLS), a bare Redis GET, a
//!   token verify and argon2id hashing (one hash, and every core at once) cost here now.
//! - [`outage`]: whoami while the stack's Redis hangs, and the breaker's figures.
//! - `workload`: the bench's accounts and the requests each workload sends.
//! - [`report`]: what the run found, and its table.
//! - [`checks`]: the targets, judged against the baselines.
//! - this file: one run, in order, and the figures read from the cache, `/proc` and the
//!   runtime (the gateway's memory after the login workload).

pub mod baseline;
pub mod checks;
pub mod load;
pub mod outage;
pub mod report;
mod workload;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use futures::future::BoxFuture;

use tonic::transport::Channel;
use userctl_proto::{
    cache::v1::{GetStatsRequest, Stats, cache_stats_client::CacheStatsClient},
    gateway::v1::{RegisterRequest, gateway_client::GatewayClient},
    user::v1::{ReadUserRequest, read_user_request::Key, user_store_client::UserStoreClient},
};

use crate::{args::Workload, client, error::Result, home::TlsIdentity, procfs};
use load::Limits;
pub use report::{Report, SingleFlight, WorkloadReport};
use workload::Pool;

/// Where the stack answers and what the bench may look at.
pub struct Target {
    /// What users call: the gateway, or the proxy in front of several.
    pub gateway: String,
    /// One gateway replica's own address, when a proxy stands in front: the bench measures
    /// the proxy's hop by calling both.
    pub direct_gateway: Option<String>,
    /// Every cache replica's address: the hit ratio and single-flight figures are the stack's.
    pub caches: Vec<String>,
    /// How many replicas of each service run, as `status` counts them (`gateway=2,cache=2,…`).
    pub topology: Option<String>,
    /// The certificate the bench presents to the cache (`userctl`); None: plaintext.
    pub cache_tls: Option<TlsIdentity>,
    /// The stack's Redis, when it is reachable from here (local runtime).
    pub redis_url: Option<String>,
    /// The algorithm the stack's tokens are signed with now, for the verify baseline.
    pub token_algorithm: userctl_keys::Algorithm,
    /// Service processes on this host, for CPU and memory figures.
    /// Named `cache`, `cache.2`, … for the second replica on.
    pub pids: Vec<(String, u32)>,
    /// The gateway's resident memory in bytes, as its runtime reports it (a process's RSS
    /// locally, the container's memory use on docker); None without a runtime.
    pub gateway_memory: Option<MemoryProbe>,
}

/// Reads one service's memory now.
pub type MemoryProbe = Box<dyn Fn() -> BoxFuture<'static, Option<u64>> + Send + Sync>;

pub struct Options {
    pub workloads: Vec<Workload>,
    pub limits: Limits,
    pub users: usize,
    pub zipf: f64,
    /// Whether to make the stack's Redis hang for a few seconds (see [`outage`]).
    pub redis_outage: bool,
}

pub async fn run(
    target: &Target,
    options: &Options,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
    notice: &dyn Fn(&str),
) -> Result<Report> {
    let channel = client::connect(&target.gateway).await?;
    let gateway = GatewayClient::new(channel);
    let mut caches = Vec::new();
    for addr in &target.caches {
        caches.push(client::connect_internal(addr, "cache", target.cache_tls.as_ref()).await?);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let idle_rss_kib = target
        .pids
        .iter()
        .filter_map(|(name, pid)| rss_kib(*pid).map(|kib| (name.clone(), kib)))
        .collect();

    let told = AtomicBool::new(false);
    let on_wait = |wait: std::time::Duration| {
        if !told.swap(true, Ordering::Relaxed) {
            notice(&format!(
                "the gateway limits registrations from this address; waiting {} s at a time",
                wait.as_secs().max(1)
            ));
        }
    };
    let pool =
        Arc::new(workload::make_pool(&gateway, options.users, options.zipf, &on_wait).await?);
    let baselines =
        baseline::measure(target, options.limits, &pool.tokens[0], &gateway, progress).await?;

    let workloads = if options.workloads.is_empty() {
        workload::DEFAULT_WORKLOADS.to_vec()
    } else {
        options.workloads.clone()
    };
    let mut reports = Vec::new();
    let mut gateway_rss_after_login_kib = None;
    for workload in workloads {
        let before_stats = stats(&caches).await;
        let before_cpu = cpu_ticks(&target.pids);
        let started = Instant::now();
        let limits = match workload {
            Workload::Login => login_limits(options.limits, cores),
            _ => options.limits,
        };
        let measurement = load::drive(
            limits,
            workload::operation(workload, gateway.clone(), pool.clone()),
            progress(workload.name()),
        )
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let after_stats = stats(&caches).await;
        let hit_ratio = match (before_stats, after_stats) {
            (Some(before), Some(after)) => hit_ratio(&before, &after),
            _ => None,
        };
        let cpu_percent = cpu_percent(&before_cpu, &cpu_ticks(&target.pids), elapsed);
        if workload == Workload::Login
            && let Some(probe) = &target.gateway_memory
        {
            // Right after the hashing-bound workload, when memory that is never given back
            // shows.
            gateway_rss_after_login_kib = probe().await.map(|bytes| bytes / 1024);
        }
        reports.push(WorkloadReport {
            workload,
            concurrency: limits.concurrency,
            measurement,
            hit_ratio,
            cpu_percent,
        });
    }

    let measures_whoami = reports.iter().any(|r| r.workload == Workload::Whoami);
    let single = Limits {
        concurrency: 1,
        ..options.limits
    };
    let whoami_single = if measures_whoami {
        Some(
            load::drive(
                single,
                workload::operation(Workload::Whoami, gateway.clone(), pool.clone()),
                progress("whoami (1)"),
            )
            .await,
        )
    } else {
        None
    };
    // The same calls straight to one gateway, past the proxy: the proxy's cost is the
    // difference.
    let whoami_single_direct = match (&target.direct_gateway, measures_whoami) {
        (Some(addr), true) => {
            let direct = GatewayClient::new(client::connect(addr).await?);
            Some(
                load::drive(
                    single,
                    workload::operation(Workload::Whoami, direct, pool.clone()),
                    progress("whoami (1, direct)"),
                )
                .await,
            )
        }
        _ => None,
    };
    let (redis_outage, redis_outage_note) = match (&target.redis_url, measures_whoami) {
        _ if !options.redis_outage => (None, None),
        (_, false) => (None, None),
        (None, true) => (None, Some(NO_OUTAGE_HERE.to_owned())),
        (Some(url), true) => match outage::measure(
            url,
            || each_stats(&caches),
            workload::operation(Workload::Whoami, gateway.clone(), pool.clone()),
            progress,
        )
        .await
        {
            Ok(outage) => (Some(outage), None),
            Err(err) => (
                None,
                Some(format!("the Redis outage could not be made: {err}")),
            ),
        },
    };
    let single_flight = if caches.is_empty() {
        None
    } else {
        Some(single_flight(&gateway, &caches, &pool, &on_wait).await?)
    };
    let targets = checks::checks(
        &baselines,
        &reports,
        whoami_single.as_ref(),
        redis_outage.as_ref(),
        single_flight.as_ref(),
        gateway_rss_after_login_kib,
    );
    Ok(Report {
        topology: target.topology.clone(),
        concurrency: options.limits.concurrency,
        cores,
        baselines,
        workloads: reports,
        whoami_single,
        whoami_single_direct,
        redis_outage,
        redis_outage_note,
        single_flight,
        idle_rss_kib,
        gateway_rss_after_login_kib,
        targets,
    })
}

/// The login workload's limits: at most 4 logins in flight per core, enough to keep every
/// core hashing. More from one address would meet the gateway's login budgets (30 attempts
/// in flight per address, 5 per account, by default), which refuse them before any hashing;
/// sent again at once, those refusals would spend the CPU the hashes need, and the login rate
/// would measure the refusing rather than the hashing it is judged against.
fn login_limits(limits: Limits, cores: usize) -> Limits {
    Limits {
        concurrency: limits.concurrency.min(4 * cores).max(1),
        ..limits
    }
}

/// Many concurrent reads of one user that is not cached (just registered: the create
/// invalidated its keys), straight at the caches, spread evenly over the replicas: how many
/// store calls did they make? Single-flight is per replica, so at most one each.
async fn single_flight(
    gateway: &GatewayClient<Channel>,
    caches: &[Channel],
    pool: &Pool,
    on_wait: &dyn Fn(std::time::Duration),
) -> Result<SingleFlight> {
    const READERS: u64 = 1000;
    let mut gateway = gateway.clone();
    let request = RegisterRequest {
        email: pool.fresh_email(),
        full_name: "Herd".into(),
        password: pool.password.clone(),
    };
    let id = workload::register_paced(&mut gateway, request, on_wait).await?;
    let before = stats(caches).await;
    let stores: Vec<UserStoreClient<Channel>> =
        caches.iter().cloned().map(UserStoreClient::new).collect();
    let reads = (0..READERS).map(|n| {
        let mut store = stores[n as usize % stores.len()].clone();
        async move {
            store
                .read_user(ReadUserRequest {
                    key: Some(Key::Id(id)),
                    session_id: String::new(),
                })
                .await
                .is_ok()
        }
    });
    futures::future::join_all(reads).await;
    let after = stats(caches).await;
    let store_calls = match (before, after) {
        (Some(before), Some(after)) => after.store_calls - before.store_calls,
        _ => 0,
    };
    Ok(SingleFlight {
        concurrent_misses: READERS,
        cache_replicas: caches.len(),
        store_calls,
    })
}

/// Why a run has no outage figures where the stack's Redis is not reachable from here.
const NO_OUTAGE_HERE: &str = "the stack's Redis is not reachable from the host (docker runtime), so the bench cannot make it hang; run the bench on the local runtime for the outage figures";

/// Every cache's counters; None when there is no cache to ask or one does not answer (a
/// figure over some replicas only would be wrong).
async fn each_stats(caches: &[Channel]) -> Option<Vec<Stats>> {
    if caches.is_empty() {
        return None;
    }
    futures::future::join_all(caches.iter().map(|cache| async move {
        CacheStatsClient::new(cache.clone())
            .get_stats(GetStatsRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }))
    .await
    .into_iter()
    .collect()
}

/// The caches' counters added up, as [`each_stats`] reads them.
async fn stats(caches: &[Channel]) -> Option<Stats> {
    let each = each_stats(caches).await?;
    Some(
        each.into_iter()
            .fold(Stats::default(), |total, stats| Stats {
                hits: total.hits + stats.hits,
                misses: total.misses + stats.misses,
                store_calls: total.store_calls + stats.store_calls,
                ..total
            }),
    )
}

fn hit_ratio(before: &Stats, after: &Stats) -> Option<f64> {
    let hits = after.hits.saturating_sub(before.hits);
    let misses = after.misses.saturating_sub(before.misses);
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

/// utime + stime of each process, in clock ticks.
fn cpu_ticks(pids: &[(String, u32)]) -> Vec<(String, u64)> {
    pids.iter()
        .filter_map(|(name, pid)| Some((name.clone(), procfs::cpu_ticks(*pid)?)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(hits: u64, misses: u64) -> Stats {
        Stats {
            hits,
            misses,
            ..Stats::default()
        }
    }

    #[test]
    fn logins_are_kept_to_four_in_flight_per_core() {
        let limits = Limits {
            concurrency: 64,
            warmup: std::time::Duration::ZERO,
            duration: std::time::Duration::from_secs(1),
            requests: None,
        };
        assert_eq!(login_limits(limits, 2).concurrency, 8);
        let few = Limits {
            concurrency: 3,
            ..limits
        };
        assert_eq!(login_limits(few, 2).concurrency, 3);
    }

    #[test]
    fn the_hit_ratio_is_over_the_workload_alone() {
        let ratio = hit_ratio(&counters(1000, 1000), &counters(1900, 1100));
        assert_eq!(ratio, Some(0.9));
    }

    #[test]
    fn no_reads_means_no_hit_ratio() {
        assert_eq!(hit_ratio(&counters(5, 5), &counters(5, 5)), None);
        // Counters that went back (the cache restarted) give no ratio rather than a wrong one.
        assert_eq!(hit_ratio(&counters(500, 5), &counters(10, 0)), None);
    }
}
