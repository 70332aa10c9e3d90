//! Replicas on the local runtime, driven through `userctl` as a user would: two of each service
//! behind HAProxy, rolling restarts and a `kill -9` under load through the published ports,
//! reads spread over the cache replicas, `scale` up and down keeping what did not need to
//! restart, and bad input. Real processes, loopback only, every port chosen free; loads are
//! bounded and sized for two cores.

use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::transport::Channel;
use userctl_proto::gateway::v1::gateway_client::GatewayClient;
use userctl_tests::{
    churn::{Churn, Front},
    cli::Userctl,
    e2e::{self, PASSWORD, Teardown},
    eventually,
    load::{Summary, accounts, tokens, whoami_load},
};

/// Calls the loads make between two steps of a scenario.
const PHASE_CALLS: usize = 300;
/// How long a phase may take to make its calls, restarts included.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// `up` on the local runtime, every port free, with `replicas`.
fn up(replicas: &str) -> Vec<&str> {
    let mut args = e2e::LOCAL_UP.to_vec();
    args.extend(["--replicas", replicas]);
    args
}

/// A stack of this test's own, brought down (with its data) however the test ends.
struct Stack {
    userctl: Userctl,
    _teardown: Teardown,
    _home: tempfile::TempDir,
    /// The published doors, from `up`'s output.
    grpc: String,
    http: String,
}

impl Stack {
    async fn up(replicas: &str) -> Self {
        let home = tempfile::tempdir().expect("home");
        let userctl = Userctl::new(home.path());
        let teardown = Teardown(userctl.clone());
        let run = userctl.run(&up(replicas)).await.ok();
        let (grpc, http) = (e2e::printed(&run, "gateway "), e2e::printed(&run, "http "));
        Self {
            userctl,
            _teardown: teardown,
            _home: home,
            grpc,
            http,
        }
    }

    async fn gateway(&self) -> GatewayClient<Channel> {
        GatewayClient::connect(self.grpc.clone())
            .await
            .expect("connect to the published gateway port")
    }

    /// The rows of `service`, in replica order.
    async fn rows(&self, service: &str) -> Vec<Value> {
        e2e::status(&self.userctl)
            .await
            .into_iter()
            .filter(|row| row["service"] == service)
            .collect()
    }

    /// The ids (pids) of `service`'s replicas, in replica order.
    async fn pids(&self, service: &str) -> Vec<String> {
        self.rows(service)
            .await
            .iter()
            .map(|row| row["id"].as_str().expect("running replica").to_owned())
            .collect()
    }

    /// Registers and logs in the account `userctl whoami` calls as.
    async fn log_in(&self, email: &str) {
        let register = [
            "register",
            "--email",
            email,
            "--name",
            "Ren",
            "--password-stdin",
        ];
        self.userctl.run_with_stdin(&register, PASSWORD).await.ok();
        e2e::login(&self.userctl, email).await.ok();
    }
}

/// Every replica running and healthy, ids distinct, replica numbers 1..=count.
fn assert_replicas(rows: &[Value], service: &str, count: usize) {
    let mine: Vec<&Value> = rows.iter().filter(|r| r["service"] == service).collect();
    assert_eq!(mine.len(), count, "{service}: {rows:#?}");
    for (index, row) in mine.iter().enumerate() {
        assert_eq!(row["replica"], index + 1, "{row}");
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["health"], "healthy", "{row}");
        assert!(row["address"].as_str().is_some(), "{row}");
    }
}

/// When the process `pid` (killed) is gone: no longer there, or a zombie its parent has yet
/// to reap; printed beside the figures of the kill.
async fn gone(pid: nix::unistd::Pid) -> Instant {
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if stat.is_empty() || zombie {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `args` and prints how long it took.
async fn timed(userctl: &Userctl, args: &[&str]) -> Duration {
    let started = Instant::now();
    let run = userctl.run(args).await.ok();
    let took = started.elapsed();
    println!(
        "userctl {} took {took:.1?}: {}",
        args.join(" "),
        run.stdout.trim()
    );
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_each_serve_through_the_published_ports_and_spread_reads() {
    let stack = Stack::up("gateway=2,cache=2,store=2").await;
    let rows = e2e::status(&stack.userctl).await;
    for service in ["store", "cache", "gateway"] {
        assert_replicas(&rows, service, 2);
    }
    assert_replicas(&rows, "proxy", 1);
    assert_eq!(
        e2e::row(&rows, "proxy")["address"].as_str(),
        Some(stack.grpc.as_str()),
        "the proxy holds the published gateway port"
    );
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "one process per replica: {rows:#?}");

    stack.log_in("ren@example.com").await;
    let me = stack
        .userctl
        .run(&["whoami", "--output", "json"])
        .await
        .ok();
    assert!(me.stdout.contains("ren@example.com"), "{me:?}");

    // Reads spread: every cache replica serves at least 10% of a few hundred whoami calls.
    let before = cache_reads(&stack.userctl).await;
    let gateway = stack.gateway().await;
    let load = whoami_load(
        gateway.clone(),
        &tokens(&accounts(&gateway, "spread", 8).await),
    );
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    let calls = load.stop().await;
    let summary = Summary::of(&calls);
    let after = cache_reads(&stack.userctl).await;
    let served: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = served.iter().sum();
    println!("whoami through the proxy: {summary}; reads per cache replica: {served:?}");
    assert_eq!(summary.failures, 0, "{calls:?}");
    assert!(total >= PHASE_CALLS as u64, "{served:?}");
    for (replica, reads) in served.iter().enumerate() {
        assert!(
            reads * 10 >= total,
            "cache.{} served {reads} of {total} reads",
            replica + 1
        );
    }
}

/// Each cache replica's reads (hits of either kind and misses), from `userctl stats`.
async fn cache_reads(userctl: &Userctl) -> Vec<u64> {
    let run = userctl.run(&["stats", "--output", "json"]).await.ok();
    let rows: Vec<Value> = serde_json::from_str(&run.stdout).expect("stats JSON");
    rows.iter()
        .filter(|row| row["service"] == "cache")
        .map(|row| {
            assert_eq!(row["answered"], true, "{row}");
            ["hits", "negative_hits", "misses"]
                .iter()
                .map(|key| row[key].as_u64().expect("a count"))
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restarts_cost_no_call_and_a_killed_cache_is_replaced() {
    let stack = Stack::up("gateway=2,cache=2,store=2").await;
    let token = accounts(&stack.gateway().await, "churn", 1)
        .await
        .swap_remove(0)
        .token;
    stack.log_in("cli@example.com").await;
    let front = Front {
        grpc: &stack.grpc,
        http: &stack.http,
        token: &token,
        userctl: &stack.userctl,
    };

    for service in ["cache", "store", "gateway"] {
        let before = stack.pids(service).await;
        let churn = Churn::start(&front).await;
        churn.wait_for_calls(PHASE_CALLS / 10, PHASE_TIMEOUT).await;
        timed(&stack.userctl, &["restart", service]).await;
        churn.wait_for_calls(PHASE_CALLS / 10, PHASE_TIMEOUT).await;
        churn
            .stop()
            .await
            .assert_no_failed_call(&format!("restart {service}"));
        let after = stack.pids(service).await;
        assert!(
            before.iter().all(|pid| !after.contains(pid)),
            "every {service} replica restarted: {before:?} -> {after:?}"
        );
    }

    let victim = stack.pids("cache").await.swap_remove(0);
    let pid = nix::unistd::Pid::from_raw(victim.parse().expect("a pid"));
    let churn = Churn::start(&front).await;
    churn.wait_for_calls(PHASE_CALLS / 10, PHASE_TIMEOUT).await;
    let killed = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9 cache.1");
    let gone = gone(pid).await;
    eventually(Duration::from_secs(30), || async {
        let row = stack.rows("cache").await.swap_remove(0);
        match row["id"].as_str() {
            Some(id) if id != victim && row["health"] == "healthy" => Ok(()),
            _ => Err(row),
        }
    })
    .await
    .expect("the supervisor replaced the killed cache with a new, healthy process");
    println!(
        "cache.1 gone {:.1?} and replaced, healthy, {:.0?} after the kill",
        gone - killed,
        killed.elapsed()
    );
    churn.wait_for_calls(PHASE_CALLS / 10, PHASE_TIMEOUT).await;
    churn
        .stop()
        .await
        .assert_at_most_in_flight("kill -9 cache.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_converges_up_and_down_keeping_what_did_not_need_to_restart_or_puts_it_back() {
    let stack = Stack::up("gateway=2,cache=2,store=2").await;
    let gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "scale", 6).await);
    let load = whoami_load(gateway.clone(), &tokens);
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    let stores = stack.pids("store").await;
    let caches = stack.pids("cache").await;
    let proxy = stack.pids("proxy").await;

    timed(&stack.userctl, &["scale", "cache=3"]).await;
    let rows = e2e::status(&stack.userctl).await;
    assert_replicas(&rows, "cache", 3);
    assert_eq!(stack.pids("store").await, stores, "stores kept their pids");
    assert_eq!(
        stack.pids("cache").await[..2],
        caches,
        "cache.1 and .2 kept theirs"
    );
    assert_eq!(stack.pids("proxy").await, proxy, "the proxy kept its pid");
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;

    timed(&stack.userctl, &["scale", "cache=1"]).await;
    let rows = e2e::status(&stack.userctl).await;
    assert_replicas(&rows, "cache", 1);
    assert_replicas(&rows, "gateway", 2);
    assert_eq!(stack.pids("store").await, stores, "stores kept their pids");
    assert_eq!(
        stack.pids("cache").await,
        caches[..1],
        "cache.1 kept its pid"
    );
    assert_eq!(stack.pids("proxy").await, proxy, "the proxy kept its pid");
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;

    // A scale whose new replica never serves in time puts everything back as it was.
    let gateways = stack.pids("gateway").await;
    let mut scale = stack.userctl.command(&["scale", "cache=2"]);
    scale.env("USERCTL_WAIT_TIMEOUT", "1ms");
    let failed = userctl_tests::cli::run_command(scale, "")
        .await
        .expect_code(1);
    println!("a scale that cannot finish: {}", failed.stderr.trim());
    assert!(
        failed.stderr.contains("cache.2") && failed.stderr.contains("runs as before"),
        "{failed:?}"
    );
    let rows = e2e::status(&stack.userctl).await;
    assert_replicas(&rows, "cache", 1);
    assert_eq!(
        stack.pids("cache").await,
        caches[..1],
        "cache.1 kept its pid"
    );
    assert_eq!(stack.pids("gateway").await, gateways, "so did the gateways");
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;

    let calls = load.stop().await;
    println!(
        "whoami while scaling cache 2 -> 3 -> 1 and a scale that failed: {}",
        Summary::of(&calls)
    );
    let failed: Vec<_> = calls
        .iter()
        .filter_map(|c| c.result.as_ref().err())
        .collect();
    assert!(failed.is_empty(), "the stack kept serving: {failed:?}");

    // A third gateway restarts nothing: the proxy takes it in (and lets it go) in place,
    // through its runtime API, without closing a client connection.
    let load = whoami_load(gateway, &tokens);
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    timed(&stack.userctl, &["scale", "gateway=3"]).await;
    let rows = e2e::status(&stack.userctl).await;
    assert_replicas(&rows, "gateway", 3);
    assert_eq!(
        stack.pids("gateway").await[..2],
        gateways,
        "gateways kept theirs"
    );
    assert_eq!(
        stack.pids("cache").await,
        caches[..1],
        "cache.1 kept its pid"
    );
    assert_eq!(
        stack.pids("proxy").await,
        proxy,
        "the proxy reloaded in place"
    );
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    timed(&stack.userctl, &["scale", "gateway=2"]).await;
    assert_eq!(stack.pids("gateway").await, gateways, "gateway.3 went");
    load.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    let calls = load.stop().await;
    println!(
        "whoami while scaling gateway 2 -> 3 -> 2: {}",
        Summary::of(&calls)
    );
    let failed: Vec<_> = calls
        .iter()
        .filter_map(|c| c.result.as_ref().err())
        .collect();
    assert!(failed.is_empty(), "the stack kept serving: {failed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_scale_and_restart_input_is_one_line_and_the_right_exit() {
    let stack = Stack::up("cache=1").await;
    for (change, says) in [
        ("cache=0", "at least one cache"),
        ("web=2", "cannot be scaled"),
        ("cache=99", "more than this machine holds"),
    ] {
        let run = stack.userctl.run(&["scale", change]).await.expect_code(2);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(first.contains(says), "scale {change}: {run:?}");
    }
    stack.userctl.run(&["down"]).await.ok();
    let run = stack
        .userctl
        .run(&["restart", "cache"])
        .await
        .expect_code(4);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");

    // Two gateways need HAProxy: without it on PATH, up says so and changes nothing.
    let mut command = stack.userctl.command(&up("gateway=2"));
    command.env("PATH", "/nonexistent");
    let run = userctl_tests::cli::run_command(command, "")
        .await
        .expect_code(1);
    assert!(run.stderr.contains("haproxy"), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
    assert!(
        !stack
            .userctl
            .project_dir()
            .join("local/state.json")
            .exists(),
        "nothing started"
    );
}
