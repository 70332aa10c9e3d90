//! `userctl bench` against a real local stack, run as a user runs it: its JSON keeps the raw
//! figures beside the ratios (every baseline, the workload, the 1-in-flight whoami, the Redis
//! outage), and while it makes the stack's Redis hang no whoami fails, every read skips Redis
//! once the cache's breaker opens, and the breaker closes again when Redis answers.

use serde_json::Value;
use userctl_tests::{
    cli::Userctl,
    e2e::{self, Teardown},
};

/// A measurement the bench took: calls were made and timed.
fn assert_measured(what: &str, figure: &Value) {
    assert!(
        figure["requests"].as_u64().is_some_and(|n| n > 0)
            && figure["p50_us"].as_u64().is_some_and(|us| us > 0),
        "{what} was measured: {figure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_keeps_its_raw_figures_and_whoami_survives_a_hung_redis() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(e2e::LOCAL_UP).await.ok();

    let run = userctl
        .run(&[
            "bench",
            "--workload",
            "whoami",
            "--users",
            "4",
            "--concurrency",
            "4",
            "--warmup",
            "200ms",
            "--duration",
            "1s",
            "--output",
            "json",
        ])
        .await
        .ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("bench --output json");

    for baseline in [
        "echo_single",
        "echo_loaded",
        // The stack's inner hops speak mutual TLS, so the echo does too.
        "echo_tls_single",
        "echo_tls_loaded",
        "redis_get",
    ] {
        assert_measured(baseline, &report["baselines"][baseline]);
    }
    let baselines = &report["baselines"];
    for figure in [
        "argon2_hash_ms",
        "argon2_parallel_per_sec",
        "token_verify_us",
    ] {
        assert!(
            baselines[figure].as_f64().is_some_and(|v| v > 0.0),
            "{figure}: {baselines}"
        );
    }
    assert_measured("whoami, 1 in flight", &report["whoami_single"]);
    assert_eq!(report["workloads"][0]["workload"], "whoami");
    assert_measured("whoami", &report["workloads"][0]);
    assert_eq!(report["workloads"][0]["errors"], 0, "{report}");

    let outage = &report["redis_outage"];
    assert_measured("whoami while Redis hung", &outage["during"]);
    assert_eq!(
        (&outage["during"]["errors"], &outage["after"]["errors"]),
        (&Value::from(0), &Value::from(0)),
        "no whoami failed while Redis hung or after: {outage}"
    );
    assert!(
        outage["breaker_open_after_ms"].is_u64(),
        "every cache's breaker opened while Redis hung: {outage}"
    );
    assert!(
        outage["hits_resumed_after_ms"].is_u64(),
        "hits came back with the breaker closed once Redis answered: {outage}"
    );
    let targets: Vec<&str> = report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|target| target["name"].as_str())
        .collect();
    assert!(
        targets
            .iter()
            .any(|name| name.starts_with("Redis breaker open")),
        "{targets:?}"
    );

    // The cache tells the same story in `userctl stats`.
    let stats = userctl.run(&["stats", "--output", "json"]).await.ok();
    let rows: Value = serde_json::from_str(&stats.stdout).expect("stats --output json");
    let cache = &rows[0];
    assert_eq!(cache["breaker"], "closed", "{cache}");
    assert!(
        cache["breaker_opens"].as_u64().is_some_and(|n| n >= 1),
        "{cache}"
    );
    assert!(
        cache["redis_skipped"].as_u64().is_some_and(|n| n > 0),
        "reads skipped Redis while the breaker was open: {cache}"
    );
}
