//! Replicas on the docker runtime, on the real engine: two containers of each `usersvc` service
//! under one network alias, HAProxy in front of the two gateways, rolling restarts and a killed
//! replica under the churn loops, reads and the login throttle shared over the replicas, and
//! scaling a running stack. Images from scripts/build-images, every port chosen free.
//!
//! A stack of nine containers takes a while to start on two cores, so each test brings up one
//! and checks several things on it, in an order where each check leaves the stack as the next
//! one needs it.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use tonic::{Code, Request, transport::Channel};
use userctl_proto::gateway::v1::{LoginRequest, gateway_client::GatewayClient};
use userctl_tests::{
    churn::{Churn, Front, Report},
    cli::{Userctl, run_command},
    e2e::{self, Teardown},
    eventually,
    load::{CALL_DEADLINE, accounts, failures, tokens, whoami_load},
};

/// `up` with two replicas of each service: two gateways, so a proxy in front of them.
fn up_args() -> Vec<&'static str> {
    e2e::DOCKER_UP
        .iter()
        .copied()
        .chain(["--replicas", "gateway=2,cache=2,store=2"])
        .collect()
}

/// Calls each phase of a test makes (per churn loop, or through the load).
const PHASE_CALLS: usize = 40;

/// A stack of two of each, up, with its published addresses.
struct Stack {
    userctl: Userctl,
    /// The proxy's published gRPC and HTTP addresses.
    grpc: String,
    http: String,
    _teardown: Teardown,
    _home: tempfile::TempDir,
}

impl Stack {
    async fn up() -> Self {
        let home = tempfile::tempdir().expect("home");
        let userctl = Userctl::new(home.path());
        let teardown = Teardown(userctl.clone());
        let up = userctl.run(&up_args()).await.ok();
        Self {
            grpc: e2e::printed(&up, "gateway "),
            http: e2e::printed(&up, "http "),
            userctl,
            _teardown: teardown,
            _home: home,
        }
    }

    async fn gateway(&self) -> GatewayClient<Channel> {
        let channel = Channel::from_shared(self.grpc.clone())
            .expect("gateway URL")
            .connect()
            .await
            .expect("connect through the proxy");
        GatewayClient::new(channel)
    }

    /// Registers and logs in an account with `userctl` (so the command loop has a token) and
    /// returns a token for the gRPC and HTTP loops.
    async fn logged_in(&self, email: &str) -> String {
        self.userctl
            .run_with_stdin(
                &[
                    "register",
                    "--email",
                    email,
                    "--name",
                    "Replica",
                    "--password-stdin",
                ],
                e2e::PASSWORD,
            )
            .await
            .ok();
        e2e::login(&self.userctl, email).await.ok();
        let mut gateway = self.gateway().await;
        gateway
            .login(LoginRequest {
                email: email.to_owned(),
                password: e2e::PASSWORD.trim_end().to_owned(),
            })
            .await
            .expect("login through the proxy")
            .into_inner()
            .access_token
    }

    async fn churn(&self, token: &str) -> Churn {
        Churn::start(&Front {
            grpc: &self.grpc,
            http: &self.http,
            token,
            userctl: &self.userctl,
        })
        .await
    }
}

/// Checks `report` with `check`, first printing what the proxy saw of the gateways when a
/// call failed (servers going down and up, addresses changing), to tell a proxy's doing from a
/// gateway's.
#[track_caller]
fn check_churn(project: &str, report: &Report, check: impl FnOnce(&Report)) {
    if !report.failures().is_empty() {
        let logs = std::process::Command::new("docker")
            .args(["logs", "--timestamps", &format!("{project}-proxy")])
            .output()
            .expect("docker logs");
        let text = String::from_utf8_lossy(&logs.stdout).into_owned()
            + &String::from_utf8_lossy(&logs.stderr);
        for line in text
            .lines()
            .filter(|line| !line.contains("[WARNING]") && !line.contains("Connect from"))
        {
            println!("proxy: {line}");
        }
    }
    check(report);
}

fn rows_of<'a>(rows: &'a [Value], service: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|row| row["service"] == service)
        .collect()
}

/// Container id by `service.replica`.
fn ids(rows: &[Value]) -> HashMap<String, String> {
    rows.iter()
        .map(|row| {
            (
                format!("{}.{}", text(&row["service"]), row["replica"]),
                text(&row["id"]).to_owned(),
            )
        })
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Reads each cache replica has answered, from `userctl stats --output json`, by replica.
async fn cache_reads(userctl: &Userctl) -> HashMap<u64, u64> {
    let run = userctl.run(&["stats", "--output", "json"]).await.ok();
    let rows: Vec<Value> = serde_json::from_str(&run.stdout).expect("stats JSON");
    rows.iter()
        .filter(|row| row["service"] == "cache")
        .map(|row| {
            let count = |key: &str| row[key].as_u64().unwrap_or(0);
            (
                row["replica"].as_u64().expect("replica"),
                count("hits") + count("negative_hits") + count("misses"),
            )
        })
        .collect()
}

/// Waits until every row is running and healthy, and returns them.
async fn all_healthy(userctl: &Userctl) -> Vec<Value> {
    eventually(Duration::from_secs(60), || async {
        let rows = e2e::status(userctl).await;
        if rows
            .iter()
            .all(|row| row["state"] == "running" && row["health"] == "healthy")
        {
            Ok(rows)
        } else {
            Err(rows)
        }
    })
    .await
    .unwrap_or_else(|rows| panic!("every container running and healthy: {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_each_serve_through_the_proxy_spread_reads_share_the_throttle_and_scale() {
    let stack = Stack::up().await;

    // One row per container, each its own, all healthy; the proxy holds the published port.
    let rows = all_healthy(&stack.userctl).await;
    for (service, count) in [
        ("postgres", 1),
        ("redis", 1),
        ("store", 2),
        ("cache", 2),
        ("gateway", 2),
        ("proxy", 1),
    ] {
        let replicas: Vec<u64> = rows_of(&rows, service)
            .iter()
            .map(|row| row["replica"].as_u64().expect("replica"))
            .collect();
        assert_eq!(
            replicas,
            (1..=count).collect::<Vec<u64>>(),
            "{service}: {rows:?}"
        );
    }
    let before = ids(&rows);
    let mut distinct: Vec<&String> = before.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), rows.len(), "distinct containers: {rows:?}");
    assert_eq!(
        rows_of(&rows, "proxy")[0]["address"],
        stack.grpc.as_str(),
        "the proxy's row has the published gateway address"
    );

    // The flows through the published port: userctl (register, login, whoami) and gRPC.
    stack.logged_in("flow@example.com").await;
    let me = stack
        .userctl
        .run(&["whoami", "--output", "json"])
        .await
        .ok();
    assert!(me.stdout.contains("flow@example.com"), "{me:?}");
    let gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "spread", 8).await);

    // Reads spread over the two cache replicas: each answers at least 10% of them.
    let reads_before = cache_reads(&stack.userctl).await;
    let load = whoami_load(gateway.clone(), &tokens);
    load.wait_for_calls(6 * PHASE_CALLS, CALL_DEADLINE).await;
    let calls = load.stop().await;
    assert!(failures(&calls).is_empty(), "{:?}", failures(&calls));
    let reads_after = cache_reads(&stack.userctl).await;
    let served: Vec<u64> = [1, 2]
        .iter()
        .map(|replica| reads_after[replica] - reads_before.get(replica).copied().unwrap_or(0))
        .collect();
    println!(
        "{} whoami calls through the proxy: cache replicas read {served:?}",
        calls.len()
    );
    for (replica, served) in served.iter().enumerate() {
        assert!(
            *served * 10 >= calls.len() as u64,
            "cache replica {} served {served} of {} reads (less than 10%)",
            replica + 1,
            calls.len()
        );
    }

    // Wrong passwords alternated over the two gateways, each called directly at its own
    // published port: the throttle lives in Redis, so the sixth is refused, by whichever.
    let direct: Vec<String> = rows_of(&rows, "gateway")
        .iter()
        .map(|row| text(&row["address"]).to_owned())
        .collect();
    assert_ne!(direct[0], direct[1], "{direct:?}");
    let mut gateways = Vec::new();
    for addr in &direct {
        let channel = Channel::from_shared(addr.clone())
            .expect("address")
            .connect()
            .await
            .expect("connect to one gateway");
        gateways.push(GatewayClient::new(channel));
    }
    let mut codes = Vec::new();
    for attempt in 0..10 {
        let mut request = Request::new(LoginRequest {
            email: "flow@example.com".into(),
            password: "not the password".into(),
        });
        request.set_timeout(CALL_DEADLINE);
        let status = gateways[attempt % 2]
            .login(request)
            .await
            .expect_err("a wrong password is refused");
        codes.push(status.code());
    }
    println!("wrong passwords alternated over two gateways: {codes:?}");
    assert_eq!(codes[..5], [Code::Unauthenticated; 5], "{codes:?}");
    assert_eq!(codes[5..], [Code::ResourceExhausted; 5], "{codes:?}");

    // Scaling the cache up and back down under the churn loops: no call fails, and every
    // container but the added and removed cache replicas keeps its id.
    let token = stack.logged_in("scale@example.com").await;
    let churn = stack.churn(&token).await;
    stack.userctl.run(&["scale", "cache=3"]).await.ok();
    let three = all_healthy(&stack.userctl).await;
    assert_eq!(rows_of(&three, "cache").len(), 3, "{three:?}");
    churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    stack.userctl.run(&["scale", "cache=1"]).await.ok();
    churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let report = churn.stop().await;
    check_churn(&stack.userctl.project, &report, |report| {
        report.assert_no_failed_call("scale cache=3, then cache=1");
    });
    let one = all_healthy(&stack.userctl).await;
    assert_eq!(rows_of(&one, "cache").len(), 1, "{one:?}");
    let after = ids(&one);
    for (replica, id) in &after {
        assert_eq!(
            before.get(replica),
            Some(id),
            "{replica} kept its container"
        );
    }
    assert_eq!(after.len(), before.len() - 1, "{one:?}");

    // A scale that cannot finish (no new replica is healthy within half a second: the engine's
    // first check runs after one) fails, removes the replica it added, says so, and leaves
    // the stack serving as it was.
    let mut scale = stack.userctl.command(&["scale", "cache=2"]);
    scale.env("USERCTL_WAIT_TIMEOUT", "500ms");
    let failed = run_command(scale, "").await.expect_code(1);
    println!("a scale that could not finish: {}", failed.stderr.trim());
    assert!(
        failed.stderr.contains("up stopped half-way") && failed.stderr.contains("cache.2"),
        "{failed:?}"
    );
    let same = all_healthy(&stack.userctl).await;
    assert_eq!(ids(&same), after, "{failed:?}");
    stack.userctl.run(&["whoami"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_cost_no_call_and_a_killed_cache_at_most_those_in_flight() {
    let stack = Stack::up().await;
    let token = stack.logged_in("churn@example.com").await;

    for service in ["store", "cache", "gateway"] {
        let before = ids(&all_healthy(&stack.userctl).await);
        let churn = stack.churn(&token).await;
        churn.wait_for_calls(PHASE_CALLS / 4, CALL_DEADLINE).await;
        let restarted = stack.userctl.run(&["restart", service]).await.ok();
        assert!(
            restarted
                .stdout
                .contains(&format!("restarted 2 {service} replicas")),
            "{restarted:?}"
        );
        churn.wait_for_calls(PHASE_CALLS / 4, CALL_DEADLINE).await;
        let report = churn.stop().await;
        check_churn(&stack.userctl.project, &report, |report| {
            report.assert_no_failed_call(&format!("restart {service}"));
        });
        // Restarted in place: the same containers, running again.
        assert_eq!(ids(&all_healthy(&stack.userctl).await), before);
    }

    // SIGKILL of one cache replica: it costs at most the calls in flight at that instant;
    // `up` starts it again (the engine never restarts a container by itself, see
    // docs/design.md) and the stack goes on serving meanwhile.
    let killed = format!("{}-cache-2", stack.userctl.project);
    let churn = stack.churn(&token).await;
    churn.wait_for_calls(PHASE_CALLS / 4, CALL_DEADLINE).await;
    let kill = std::process::Command::new("docker")
        .args(["kill", &killed])
        .output()
        .expect("docker kill");
    assert!(kill.status.success(), "{kill:?}");
    churn.wait_for_calls(PHASE_CALLS / 4, CALL_DEADLINE).await;
    let repaired = stack.userctl.run(&up_args()).await.ok();
    assert!(repaired.stderr.contains("unchanged"), "{repaired:?}");
    churn.wait_for_calls(PHASE_CALLS / 4, CALL_DEADLINE).await;
    let report = churn.stop().await;
    check_churn(&stack.userctl.project, &report, |report| {
        report.assert_at_most_in_flight("docker kill of cache.2, then up");
    });
    let rows = all_healthy(&stack.userctl).await;
    assert_eq!(rows_of(&rows, "cache").len(), 2, "{rows:?}");
}
