//! The swarm runtime on a real swarm of two nodes: the machine's engine (manager) and a second
//! Docker daemon in a network namespace of the test's own making (worker; support/swarm.rs).
//! The stack spreads over both; then the worker is lost outright, its daemon and containers
//! killed, under a whoami loop and a registration loop, as a cluster user fears: its tasks must
//! come back on the engine, calls may fail only while the swarm notices, every acknowledged
//! registration must still be there, and `userctl status` must show the lost node.

use std::time::{Duration, Instant};

use tonic::{Request, Status, transport::Channel};
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest, gateway_client::GatewayClient};
use userctl_tests::{
    cli::{Userctl, run_command},
    e2e::{self, Teardown},
    eventually,
    load::{CALL_DEADLINE, Call, Load, Summary, accounts, failures, tokens, whoami_load},
    swarm::{EngineSwarm, SwarmLock, WorkerNode, docker},
};

/// The most registrations the loop makes: the gateways allow 60 a minute from one address, and
/// behind the proxy every call comes from the proxy's.
const REGISTRATIONS: usize = 50;
/// How often the registration loop registers: a pace, so its budget covers the whole loss.
const REGISTRATION_PACE: Duration = Duration::from_millis(600);
/// How long the swarm may take to notice the lost node and run its tasks elsewhere.
const RECOVERY_WITHIN: Duration = Duration::from_secs(120);

/// The rows of `status --output json`.
async fn status(userctl: &Userctl) -> Vec<serde_json::Value> {
    e2e::status(userctl).await
}

/// The node ids of the running tasks of one of the project's services.
async fn task_nodes(project: &str, service: &str) -> Vec<String> {
    let ids = docker(&[
        "service",
        "ps",
        "--quiet",
        "--filter",
        "desired-state=running",
        &format!("{project}-{service}"),
    ])
    .await
    .unwrap_or_default();
    let mut nodes = Vec::new();
    for id in ids.lines() {
        let node = docker(&["inspect", "--format", "{{.NodeID}} {{.Status.State}}", id])
            .await
            .unwrap_or_default();
        if let Some(node) = node.strip_suffix(" running") {
            nodes.push(node.to_owned());
        }
    }
    nodes
}

/// Registrations paced by [`REGISTRATION_PACE`], one at a time; call `n` registers
/// `{prefix}-{n}@example.com`.
fn registration_loop(gateway: GatewayClient<Channel>, prefix: &str) -> Load {
    let prefix = prefix.to_owned();
    Load::start(1, REGISTRATIONS, move |n| {
        let mut gateway = gateway.clone();
        let email = format!("{prefix}-{n}@example.com");
        async move {
            tokio::time::sleep(REGISTRATION_PACE).await;
            let mut request = Request::new(RegisterRequest {
                email,
                full_name: "Node Loss".into(),
                password: e2e::PASSWORD.trim_end().into(),
            });
            request.set_timeout(CALL_DEADLINE);
            gateway.register(request).await.map(drop)
        }
    })
}

/// When the last failed call of `calls` started, after `since`.
fn last_failure_after(calls: &[Call], since: Instant) -> Option<Duration> {
    calls
        .iter()
        .filter(|call| call.result.is_err())
        .map(|call| call.started.saturating_duration_since(since) + call.took)
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_spread_over_two_nodes_loses_one_and_keeps_every_acknowledged_registration() {
    let lock = SwarmLock::acquire().await.expect("the swarm lock");
    let before = lock.before().clone();
    let mut worker = WorkerNode::start().await.expect("the worker's dockerd");
    let footprint = worker.footprint();
    worker
        .init_swarm_on_engine(&lock)
        .await
        .expect("swarm init on the engine");

    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let project = userctl.project.clone();
    let teardown = Teardown(userctl.clone());

    // One of each on the engine first: `up` builds the services image here, and the worker
    // gets it before it joins (no registry it can reach: NOTES.md's recipe).
    let mut up = e2e::SWARM_UP.to_vec();
    up.retain(|arg| *arg != "--init-swarm");
    userctl.run(&up).await.ok();
    let image = docker(&[
        "service",
        "inspect",
        &format!("{project}-cache"),
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ])
    .await
    .expect("the services image");
    let image = image.split('@').next().unwrap_or_default().to_owned();
    worker
        .load_image(&image)
        .await
        .expect("the image on the worker");
    worker.join().await.expect("the worker joins");
    let worker_id = worker.node_id().to_owned();

    // `up` on the worker's engine: one line saying what it is and where to go instead.
    let mut on_worker = userctl.command(&["--project", "elsewhere", "up", "--runtime", "swarm"]);
    on_worker.env("DOCKER_HOST", worker.docker_host());
    let refused = run_command(on_worker, "").await.expect_code(1);
    assert!(
        refused.stderr.contains("swarm worker") && refused.stderr.contains("manager"),
        "{refused:?}"
    );

    // Two of each: the new tasks go to the worker, the stateless services spreading.
    userctl
        .run(&["scale", "gateway=2", "cache=2", "store=2"])
        .await
        .ok();
    for service in ["gateway", "cache", "store"] {
        let nodes = eventually(Duration::from_secs(60), || async {
            let nodes = task_nodes(&project, service).await;
            if nodes.len() == 2 && nodes.contains(&worker_id) {
                Ok(nodes)
            } else {
                Err(nodes)
            }
        })
        .await
        .unwrap_or_else(|nodes| panic!("a {service} task on each node: {nodes:?}"));
        println!("{service} runs on {nodes:?}");
    }
    for service in ["postgres", "redis", "proxy"] {
        let nodes = task_nodes(&project, service).await;
        assert!(
            !nodes.contains(&worker_id),
            "{service} stays on the engine, where its data and ports are: {nodes:?}"
        );
    }

    // The loops through the front, then the worker lost with a third of the services on it.
    let front = status(&userctl)
        .await
        .iter()
        .find(|row| row["service"] == "proxy")
        .and_then(|row| row["address"].as_str())
        .map(str::to_owned)
        .expect("the proxy holds the front");
    let channel = Channel::from_shared(front.clone())
        .expect("front URL")
        .connect()
        .await
        .expect("connect to the front");
    let gateway = GatewayClient::new(channel);
    let tokens = tokens(&accounts(&gateway, "node-loss-reader", 4).await);
    let whoami = whoami_load(gateway.clone(), &tokens);
    let registrations = registration_loop(gateway.clone(), &format!("{project}-writer"));
    whoami.wait_for_calls(40, CALL_DEADLINE).await;
    registrations.wait_for_calls(2, CALL_DEADLINE * 2).await;
    let killed = Instant::now();
    worker.kill();

    let lost = eventually(RECOVERY_WITHIN, || async {
        let rows = status(&userctl).await;
        rows.iter()
            .any(|row| {
                row["node"]
                    .as_str()
                    .is_some_and(|node| node.ends_with("(down)"))
            })
            .then_some(rows.clone())
            .ok_or(rows)
    })
    .await
    .unwrap_or_else(|rows| panic!("status shows the lost node: {rows:?}"));
    let noticed = killed.elapsed();
    println!("status showed the lost node {noticed:?} after the kill: {lost:?}");
    let recovered = eventually(RECOVERY_WITHIN, || async {
        let mut ready = true;
        for service in ["gateway", "cache", "store"] {
            let nodes = task_nodes(&project, service).await;
            ready &= nodes.len() == 2 && !nodes.contains(&worker_id);
        }
        let rows = status(&userctl).await;
        let serving = rows
            .iter()
            .filter(|row| row["state"] == "running" && row["health"] == "healthy")
            .count();
        // postgres, redis, proxy and two of each service.
        (ready && serving == 9).then_some(()).ok_or(rows)
    })
    .await
    .map(|()| killed.elapsed())
    .unwrap_or_else(|rows| panic!("every task back on the engine: {rows:?}"));
    println!("every task ran again on the engine {recovered:?} after the kill");

    // A while after recovery, then every call of both loops.
    whoami.wait_for_calls(200, CALL_DEADLINE).await;
    registrations.wait_for_calls(3, CALL_DEADLINE * 2).await;
    let reads = whoami.stop().await;
    let writes = registrations.stop().await;
    println!("whoami during the loss: {}", Summary::of(&reads));
    println!("registrations during the loss: {}", Summary::of(&writes));
    for (loop_name, calls) in [("whoami", &reads), ("register", &writes)] {
        if let Some(last) = last_failure_after(calls, killed) {
            println!("{loop_name}: calls failed until {last:?} after the kill");
            assert!(
                last <= recovered + CALL_DEADLINE,
                "{loop_name}: a call failed after the stack had recovered ({last:?} > \
                 {recovered:?}): {:?}",
                failures(calls)
            );
        }
        let before_kill = calls
            .iter()
            .filter(|call| call.started + call.took < killed)
            .filter(|call| call.result.is_err())
            .count();
        assert_eq!(before_kill, 0, "{loop_name} failed before the kill");
    }

    // Every registration the stack acknowledged is there: its account logs in.
    let acknowledged: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, call)| call.result.is_ok())
        .map(|(n, _)| n)
        .collect();
    assert!(!acknowledged.is_empty(), "some registrations succeeded");
    let mut gateway = gateway.clone();
    for n in &acknowledged {
        let mut request = Request::new(LoginRequest {
            email: format!("{project}-writer-{n}@example.com"),
            password: e2e::PASSWORD.trim_end().into(),
        });
        request.set_timeout(CALL_DEADLINE);
        let login: Result<_, Status> = gateway.login(request).await;
        assert!(
            login.is_ok(),
            "acknowledged registration {n} logs in: {login:?}"
        );
    }
    println!(
        "{} of {} registrations acknowledged, every one still there",
        acknowledged.len(),
        writes.len()
    );

    userctl.run(&["down", "--volumes"]).await.ok();
    drop(teardown);
    drop(worker);
    drop(lock);
    assert_eq!(
        footprint.remains(),
        Vec::<String>::new(),
        "the worker left these"
    );
    let now = EngineSwarm::now().await.expect("the engine's swarm state");
    assert_eq!(now, before, "the engine's swarm state after the test");
}
