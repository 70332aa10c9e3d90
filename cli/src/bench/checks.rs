//! The bench's targets: each a measured figure, mostly a ratio to a same-run baseline, and the
//! bound it must meet.

use serde::Serialize;

use super::{
    baseline::Baselines,
    load::Measurement,
    outage::RedisOutage,
    report::{SingleFlight, WorkloadReport},
};
use crate::args::Workload;

/// One target: the measured value and the bound it must meet.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub value: f64,
    pub goal: String,
    pub met: bool,
}

impl Check {
    fn at_most(name: &'static str, value: f64, bound: f64) -> Self {
        Self {
            name,
            value,
            goal: format!("<= {bound}"),
            met: value <= bound,
        }
    }

    fn at_least(name: &'static str, value: f64, bound: f64) -> Self {
        Self {
            name,
            value,
            goal: format!(">= {bound}"),
            met: value >= bound,
        }
    }
}

/// The most the gateway may hold after many logins, in MiB (shown as MB, like every memory
/// figure of the bench).
pub const GATEWAY_RSS_MB: f64 = 64.0;

/// The targets the figures at hand allow judging; a target whose figures are missing (no
/// Redis baseline, a workload not run) is left out rather than failed.
/// The most a whoami may take while Redis hangs beyond what it takes with Redis, 1 in flight.
pub const OUTAGE_P99_MARGIN_MS: f64 = 5.0;

pub fn checks(
    baselines: &Baselines,
    workloads: &[WorkloadReport],
    whoami_single: Option<&Measurement>,
    redis_outage: Option<&RedisOutage>,
    single_flight: Option<&SingleFlight>,
    gateway_rss_after_login_kib: Option<u64>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let find = |w: Workload| workloads.iter().find(|r| r.workload == w);
    // A whoami crosses two gRPC hops: the caller's to the gateway (plaintext) and the
    // gateway's to the cache (mutual TLS when the stack uses it).
    let (inner_hop_single, inner_hop_loaded) =
        match (&baselines.echo_tls_single, &baselines.echo_tls_loaded) {
            (Some(single), Some(loaded)) => (single, loaded),
            _ => (&baselines.echo_single, &baselines.echo_loaded),
        };
    let tls = baselines.echo_tls_single.is_some();
    if let Some(whoami) = find(Workload::Whoami) {
        if let (Some(redis), Some(single)) = (&baselines.redis_get, whoami_single) {
            let floor = baselines.echo_single.p50_us as f64
                + inner_hop_single.p50_us as f64
                + redis.p50_us as f64
                + baselines.token_verify_us;
            checks.push(Check::at_most(
                if tls {
                    "whoami p50 / (echo p50 + TLS echo p50 + Redis GET p50 + verify)"
                } else {
                    "whoami p50 / (2 x echo p50 + Redis GET p50 + verify)"
                },
                single.p50_us as f64 / floor,
                1.2,
            ));
        }
        checks.push(Check::at_least(
            if tls {
                "whoami throughput / TLS echo throughput"
            } else {
                "whoami throughput / echo throughput"
            },
            whoami.measurement.rps / inner_hop_loaded.rps,
            0.4,
        ));
        if let Some(ratio) = whoami.hit_ratio {
            checks.push(Check::at_least("whoami Zipf hit ratio", ratio, 0.95));
        }
    }
    if let Some(login) = find(Workload::Login) {
        checks.push(Check::at_least(
            "login throughput / argon2id hashes a second on every core",
            login.measurement.rps / baselines.argon2_parallel_per_sec,
            0.9,
        ));
    }
    if let (Some(outage), Some(single)) = (redis_outage, whoami_single) {
        checks.push(Check::at_most(
            "whoami p99 while Redis hangs - whoami p99 with Redis, ms",
            (outage.during.p99_us as f64 - single.p99_us as f64) / 1000.0,
            OUTAGE_P99_MARGIN_MS,
        ));
    }
    if let Some(outage) = redis_outage {
        // Never is as late as it gets.
        let seconds = |ms: Option<u64>| ms.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0);
        checks.push(Check::at_most(
            "Redis breaker open after Redis hangs, s",
            seconds(outage.breaker_open_after_ms),
            1.0,
        ));
        checks.push(Check::at_most(
            "cache hits resume after Redis answers again, s",
            seconds(outage.hits_resumed_after_ms),
            2.0,
        ));
        checks.push(Check::at_most(
            "whoami calls failed through the Redis outage",
            outage.failed() as f64,
            0.0,
        ));
    }
    if let Some(kib) = gateway_rss_after_login_kib {
        checks.push(Check::at_most(
            "gateway RSS after the login workload, MB",
            kib as f64 / 1024.0,
            GATEWAY_RSS_MB,
        ));
    }
    if let Some(sf) = single_flight {
        checks.push(Check::at_most(
            "store calls for 1000 concurrent misses on one key, per cache replica",
            sf.store_calls as f64 / sf.cache_replicas.max(1) as f64,
            1.0,
        ));
    }
    checks
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A measurement with `rps` requests a second and every percentile at `p50_us`.
    pub fn measurement(rps: f64, p50_us: u64) -> Measurement {
        Measurement {
            requests: 1000,
            errors: 0,
            throttled: 0,
            seconds: 1000.0 / rps,
            rps,
            p50_us,
            p90_us: p50_us * 2,
            p99_us: p50_us * 3,
            p999_us: p50_us * 4,
        }
    }

    /// Echo at 100 µs and 10 000 req/s, Redis GET at 50 µs, one argon2 hash in 50 ms.
    pub fn baselines() -> Baselines {
        Baselines {
            echo_single: measurement(8000.0, 100),
            echo_loaded: measurement(10_000.0, 400),
            echo_tls_single: None,
            echo_tls_loaded: None,
            redis_get: Some(measurement(15_000.0, 50)),
            redis_note: None,
            argon2_hash_ms: 50.0,
            argon2_parallel_per_sec: 80.0,
            token_verify_us: 50.0,
            token_algorithm: userctl_keys::Algorithm::EdDSA,
        }
    }

    pub fn workload(workload: Workload, rps: f64, hit_ratio: Option<f64>) -> WorkloadReport {
        WorkloadReport {
            workload,
            concurrency: 64,
            measurement: measurement(rps, 1000),
            hit_ratio,
            cpu_percent: Vec::new(),
        }
    }

    fn find<'a>(checks: &'a [Check], prefix: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no check {prefix:?} in {checks:?}"))
    }

    #[test]
    fn every_target_is_judged_when_every_figure_is_there() {
        let workloads = [
            workload(Workload::Whoami, 5000.0, Some(0.97)),
            workload(Workload::Login, 70.0, None),
        ];
        // The floor is 2 x 100 + 50 + 50 = 300 µs.
        let single = measurement(3000.0, 330);
        let sf = SingleFlight {
            concurrent_misses: 1000,
            cache_replicas: 1,
            store_calls: 1,
        };
        let checks = checks(
            &baselines(),
            &workloads,
            Some(&single),
            None,
            Some(&sf),
            Some(48 * 1024),
        );
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "whoami p50 / (2 x echo p50 + Redis GET p50 + verify)",
                "whoami throughput / echo throughput",
                "whoami Zipf hit ratio",
                "login throughput / argon2id hashes a second on every core",
                "gateway RSS after the login workload, MB",
                "store calls for 1000 concurrent misses on one key, per cache replica",
            ]
        );
        let rss = find(&checks, "gateway RSS");
        assert_eq!(
            (rss.value, rss.goal.as_str(), rss.met),
            (48.0, "<= 64", true)
        );
        let latency = find(&checks, "whoami p50");
        assert!((latency.value - 1.1).abs() < 1e-9, "{latency:?}");
        assert_eq!(latency.goal, "<= 1.2");
        assert!(latency.met);
        let throughput = find(&checks, "whoami throughput");
        assert!((throughput.value - 0.5).abs() < 1e-9);
        assert_eq!(throughput.goal, ">= 0.4");
        assert!(throughput.met);
        assert_eq!(find(&checks, "whoami Zipf").goal, ">= 0.95");
        // Every core hashing: 80 a second at most; 70 logins a second are 0.875 of that.
        let login = find(&checks, "login");
        assert!((login.value - 0.875).abs() < 1e-9);
        assert_eq!(login.goal, ">= 0.9");
        assert!(!login.met);
        let herd = find(&checks, "store calls");
        assert_eq!(
            (herd.value, herd.goal.as_str(), herd.met),
            (1.0, "<= 1", true)
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        assert!(Check::at_most("x", 1.2, 1.2).met);
        assert!(!Check::at_most("x", 1.2001, 1.2).met);
        assert!(Check::at_least("x", 0.4, 0.4).met);
        assert!(!Check::at_least("x", 0.3999, 0.4).met);
    }

    #[test]
    fn targets_without_their_figures_are_left_out() {
        let mut no_redis = baselines();
        no_redis.redis_get = None;
        let workloads = [workload(Workload::Whoami, 5000.0, None)];
        let single = measurement(3000.0, 275);
        let checks = checks(&no_redis, &workloads, Some(&single), None, None, None);
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names, ["whoami throughput / echo throughput"]);

        let only_register = [workload(Workload::Register, 100.0, None)];
        assert!(checks_of(&only_register).is_empty());
    }

    fn checks_of(workloads: &[WorkloadReport]) -> Vec<Check> {
        checks(&baselines(), workloads, None, None, None, None)
    }

    pub fn outage(open_ms: Option<u64>, p99_us: u64, errors: u64) -> RedisOutage {
        let mut during = measurement(900.0, 600);
        during.p99_us = p99_us;
        during.errors = errors;
        RedisOutage {
            hang_ms: 4000,
            breaker_open_after_ms: open_ms,
            during,
            hits_resumed_after_ms: Some(640),
            after: measurement(1500.0, 400),
        }
    }

    #[test]
    fn over_tls_the_inner_hop_is_the_tls_echo() {
        let mut tls = baselines();
        tls.echo_tls_single = Some(measurement(6000.0, 150));
        tls.echo_tls_loaded = Some(measurement(8_000.0, 500));
        let workloads = [workload(Workload::Whoami, 4000.0, None)];
        // The floor is 100 + 150 + 50 + 50 = 350 µs.
        let single = measurement(3000.0, 385);
        let checks = checks(&tls, &workloads, Some(&single), None, None, None);
        let latency = find(&checks, "whoami p50 / (echo p50 + TLS echo p50");
        assert!((latency.value - 1.1).abs() < 1e-9, "{latency:?}");
        let throughput = find(&checks, "whoami throughput / TLS echo");
        assert!((throughput.value - 0.5).abs() < 1e-9, "{throughput:?}");
    }

    #[test]
    fn the_outage_is_judged_against_whoami_with_redis() {
        let workloads = [workload(Workload::Whoami, 4000.0, None)];
        // With Redis: p99 3 x 330 µs = 990 µs.
        let single = measurement(3000.0, 330);
        let judged = |outage: RedisOutage| {
            checks(
                &baselines(),
                &workloads,
                Some(&single),
                Some(&outage),
                None,
                None,
            )
        };
        let met = judged(outage(Some(300), 5_990, 0));
        for name in [
            "whoami p99 while Redis hangs",
            "Redis breaker open",
            "cache hits resume",
            "whoami calls failed",
        ] {
            assert!(find(&met, name).met, "{:?}", find(&met, name));
        }
        assert!((find(&met, "whoami p99 while").value - 5.0).abs() < 1e-9);

        let missed = judged(outage(None, 5_991, 1));
        for name in [
            "whoami p99 while Redis hangs",
            "Redis breaker open",
            "whoami calls failed",
        ] {
            assert!(!find(&missed, name).met, "{:?}", find(&missed, name));
        }
    }
}
