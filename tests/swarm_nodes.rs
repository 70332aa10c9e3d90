//! The two-node swarm the swarm tests stand on (support/swarm.rs), proved with plain docker
//! commands and no userctl: a service spreads over the engine and a worker, its tasks reach
//! each other over the overlay, the manager moves the task of a lost worker onto the engine,
//! and dropping it all leaves the engine as it was and nothing of the worker on the machine.

use std::time::{Duration, Instant};

use userctl_tests::{
    eventually,
    swarm::{EngineSwarm, SwarmLock, WorkerNode, docker},
};

/// Built by scripts/build-images (which the README's test command runs); carries
/// `redis-server` and `redis-cli`.
const IMAGE: &str = "userctl-local/redis:7";

/// How long the manager may take to notice a lost node and run its task elsewhere.
const RESCHEDULE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_service_spreads_over_two_nodes_moves_off_a_lost_one_and_leaves_nothing_behind() {
    let began = Instant::now();
    let lock = SwarmLock::acquire().await.expect("the swarm lock");
    let before = lock.before().clone();
    docker(&["image", "inspect", IMAGE])
        .await
        .unwrap_or_else(|err| panic!("{IMAGE} is built (scripts/build-images): {err}"));
    let prefix = format!("usw-test-{}", std::process::id());
    let (service, network) = (format!("{prefix}-redis"), format!("{prefix}-net"));

    let (footprint, tearing_down) = {
        let started = Instant::now();
        let mut worker = WorkerNode::start().await.expect("the worker's dockerd");
        println!("worker daemon answered after {:?}", started.elapsed());
        let footprint = worker.footprint();
        let joining = Instant::now();
        worker
            .init_swarm_on_engine(&lock)
            .await
            .expect("swarm init on the engine");
        worker.join().await.expect("the worker joins");
        println!("swarm init and join took {:?}", joining.elapsed());
        let engine = docker(&["info", "--format", "{{.Swarm.NodeID}}"])
            .await
            .expect("the engine's node id");
        let worker_id = worker.node_id().to_owned();
        assert_ne!(engine, worker_id);
        let loading = Instant::now();
        worker
            .load_image(IMAGE)
            .await
            .expect("the image on the worker");
        println!("{IMAGE} copied onto the worker in {:?}", loading.elapsed());

        let _objects = Objects {
            prefix: prefix.clone(),
            service: service.clone(),
            network: network.clone(),
        };
        docker(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--attachable",
            &network,
        ])
        .await
        .expect("an overlay network");
        docker(&[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            &service,
            "--network",
            &network,
            "--replicas",
            "2",
            "--placement-pref",
            "spread=node.id",
            IMAGE,
            "redis-server",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ])
        .await
        .expect("a service of two replicas");
        let creating = Instant::now();
        let tasks = eventually(Duration::from_secs(60), || {
            tasks_on(&service, [engine.as_str(), worker_id.as_str()])
        })
        .await
        .expect("one task running on each node");
        println!(
            "one task ran on each node {:?} after the service was created",
            creating.elapsed()
        );

        // Overlay traffic crosses the link: a container on the engine reaches the worker's task.
        let on_worker = tasks
            .iter()
            .find(|task| task.node == worker_id)
            .expect("the worker's task");
        let ping = docker(&[
            "run",
            "--rm",
            "--name",
            &format!("{prefix}-probe"),
            "--network",
            &network,
            IMAGE,
            "timeout",
            "10",
            "redis-cli",
            "-h",
            &on_worker.addr,
            "ping",
        ])
        .await
        .expect("redis-cli from the engine to the worker's task");
        assert_eq!(ping, "PONG");

        let killed = Instant::now();
        worker.kill();
        eventually(RESCHEDULE_WITHIN, || async {
            let state = docker(&[
                "node",
                "inspect",
                &worker_id,
                "--format",
                "{{.Status.State}}",
            ])
            .await?;
            (state == "down").then_some(()).ok_or(state)
        })
        .await
        .expect("the manager marks the lost worker down");
        println!(
            "the manager marked the worker down {:?} after the kill",
            killed.elapsed()
        );
        eventually(RESCHEDULE_WITHIN.saturating_sub(killed.elapsed()), || {
            tasks_on(&service, [engine.as_str(), engine.as_str()])
        })
        .await
        .expect("the lost worker's task runs on the engine");
        println!(
            "both tasks ran on the engine {:?} after the kill",
            killed.elapsed()
        );
        // The worker and the service go when this block ends, just after this is taken.
        (footprint, Instant::now())
    };
    drop(lock);
    println!("teardown took {:?}", tearing_down.elapsed());

    assert_eq!(
        EngineSwarm::now().await.expect("the engine's swarm state"),
        before
    );
    assert_eq!(
        footprint.remains(),
        Vec::<String>::new(),
        "the worker left these"
    );
    let containers = docker(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("name={prefix}"),
    ])
    .await
    .expect("docker ps");
    assert_eq!(containers, "", "containers left on the engine");
    println!("the whole test took {:?}", began.elapsed());
}

/// A task of a service, as the manager sees it.
struct Task {
    node: String,
    /// Its address on the service's overlay network, without the prefix length.
    addr: String,
}

/// The running tasks of `service` once they are exactly one on each of `nodes` (a node twice
/// for two tasks there); otherwise what runs, as the error.
async fn tasks_on<const N: usize>(service: &str, nodes: [&str; N]) -> Result<Vec<Task>, String> {
    let ids = docker(&[
        "service",
        "ps",
        "--quiet",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        service,
    ])
    .await?;
    let mut args = vec![
        "inspect",
        "--format",
        "{{.NodeID}} {{.Status.State}} {{range .NetworksAttachments}}{{index .Addresses 0}}{{end}}",
    ];
    args.extend(ids.lines());
    let inspected = if ids.is_empty() {
        String::new()
    } else {
        docker(&args).await?
    };
    let tasks: Vec<Task> = inspected
        .lines()
        .filter_map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            [node, "running", addr] => Some(Task {
                node: node.to_owned(),
                addr: addr.split('/').next().unwrap_or(addr).to_owned(),
            }),
            _ => None,
        })
        .collect();
    let mut running: Vec<&str> = tasks.iter().map(|task| task.node.as_str()).collect();
    let mut wanted = nodes.to_vec();
    running.sort_unstable();
    wanted.sort_unstable();
    if running == wanted {
        Ok(tasks)
    } else {
        Err(format!("tasks of {service}: {inspected:?}"))
    }
}

/// Removes the test's service, probe container and network when dropped, waiting (briefly) for
/// the service's containers on the engine to go first: the network is in use until they have.
struct Objects {
    prefix: String,
    service: String,
    network: String,
}

impl Drop for Objects {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        docker(&["service", "rm", &self.service]);
        docker(&["rm", "--force", &format!("{}-probe", self.prefix)]);
        let name = format!("name={}", self.prefix);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !docker(&["ps", "--all", "--quiet", "--filter", &name]).is_empty()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        docker(&["network", "rm", &self.network]);
    }
}
