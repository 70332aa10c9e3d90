//! The worker: a second `dockerd` in a network namespace behind a veth pair, started, joined to
//! the engine's swarm, fed images, lost, and removed.

use std::{
    fs::File,
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use super::{
    EngineSwarm, NodeState, SwarmLock, blocking, command_line, docker, footprint::Footprint,
    outcome, run, run_blocking,
};
use crate::POLL_INTERVAL;

/// How long a worker's daemon may take to answer, and a joined worker to be Ready on the
/// manager: here the daemon answers in a quarter of a second and `init` plus `join` take one;
/// the bound is for a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The range the worker links take their addresses from: one /30 per worker, on the two ends of
/// its veth pair only. Docker's own pools (172.17–31, 192.168, and the swarm's 10.0.x /24s
/// handed out from the bottom) do not reach it.
const LINK_RANGE: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
const LINK_BLOCKS: u32 = 1 << 14;

/// The kernel's limit on a link's name (IFNAMSIZ less the terminating NUL).
const LINK_NAME_MAX: usize = 15;

/// A second Docker daemon on this machine, in a network namespace of its own behind a veth
/// pair, that joins the engine's swarm as a worker.
///
/// Everything it leaves on the machine is found by its name (`usw<pid>-<n>`: the namespace, the
/// veth ends and the cgroup its containers run under) or by its directory (named in every
/// process it starts, and holding all of its mounts), so dropping it removes all of it, even
/// after [`WorkerNode::kill`] or a failed test.
pub struct WorkerNode {
    footprint: Footprint,
    host_addr: Ipv4Addr,
    node_addr: Ipv4Addr,
    dockerd: Option<Child>,
    /// Set by [`WorkerNode::join`]; Drop removes the node from the manager's list.
    node: Option<JoinedNode>,
}

struct JoinedNode {
    id: String,
    hostname: String,
}

impl WorkerNode {
    /// Creates the namespace and its link, starts the worker's `dockerd` in it, and returns once
    /// the daemon answers.
    pub async fn start() -> Result<Self, String> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let serial = STARTED.fetch_add(1, Ordering::Relaxed);
        let name = format!("usw{pid}-{serial}");
        if name.len() + 1 > LINK_NAME_MAX {
            return Err(format!(
                "{name}'s link names would be longer than a link name can be"
            ));
        }
        let (host_addr, node_addr) = free_link(pid.wrapping_mul(8).wrapping_add(serial)).await?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir()
            .map_err(|err| format!("creating the worker's directory: {err}"))?
            .keep();
        // From here on, whatever fails leaves a partial worker that Drop removes.
        let mut worker = Self {
            footprint: Footprint::new(name, dir),
            host_addr,
            node_addr,
            dockerd: None,
            node: None,
        };
        worker.link().await?;
        worker.start_dockerd().await?;
        Ok(worker)
    }

    /// The address of the veth end on the machine's side, which the engine advertises.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The address of the veth end in the worker's namespace, which the worker advertises.
    pub fn node_addr(&self) -> Ipv4Addr {
        self.node_addr
    }

    /// What the worker has on the machine, to check after dropping it that nothing is left.
    pub fn footprint(&self) -> Footprint {
        self.footprint.clone()
    }

    /// Its swarm node id. Panics before [`WorkerNode::join`].
    #[track_caller]
    pub fn node_id(&self) -> &str {
        &self.joined().id
    }

    /// The hostname its node reports: the machine's own, as the daemon shares its UTS
    /// namespace, so tell the nodes apart by [`WorkerNode::node_id`]. Panics before
    /// [`WorkerNode::join`].
    #[track_caller]
    pub fn hostname(&self) -> &str {
        &self.joined().hostname
    }

    #[track_caller]
    fn joined(&self) -> &JoinedNode {
        self.node.as_ref().expect("the worker has joined the swarm")
    }

    /// `unix://…`, the worker daemon's socket, as `DOCKER_HOST` names it.
    pub fn docker_host(&self) -> String {
        self.footprint.docker_host()
    }

    /// Runs `docker ARGS…` against the worker's daemon and returns its stdout, trimmed.
    pub async fn docker(&self, args: &[&str]) -> Result<String, String> {
        let host = self.footprint.docker_host();
        run("docker", &[&["-H", host.as_str()][..], args].concat()).await
    }

    /// Makes the machine's engine a swarm manager reachable on this worker's link. Fails if the
    /// engine is in a swarm already: it is someone else's, or left over.
    pub async fn init_swarm_on_engine(&self, _held: &SwarmLock) -> Result<(), String> {
        let state = EngineSwarm::now().await?.state;
        if state != NodeState::Inactive {
            return Err(format!(
                "the engine is in a swarm already ({state:?}); if `docker service ls` is empty \
                 it is left over, and `docker swarm leave --force` ends it"
            ));
        }
        let host = self.host_addr.to_string();
        docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &host,
            "--listen-addr",
            &format!("{host}:2377"),
        ])
        .await
        .map(drop)
    }

    /// Joins the engine's swarm as a worker and returns once the manager lists every node
    /// Ready.
    pub async fn join(&mut self) -> Result<(), String> {
        let token = docker(&["swarm", "join-token", "-q", "worker"]).await?;
        self.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &self.node_addr.to_string(),
            &format!("{}:2377", self.host_addr),
        ])
        .await?;
        let info = self
            .docker(&["info", "--format", "{{.Swarm.NodeID}} {{.Name}}"])
            .await?;
        let (id, hostname) = info
            .split_once(' ')
            .ok_or_else(|| format!("the worker's node id and name, from {info:?}"))?;
        self.node = Some(JoinedNode {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
        });
        let id = id.to_owned();
        crate::eventually(READY_WITHIN, || async {
            let nodes = docker(&["node", "ls", "--format", "{{.ID}} {{.Status}}"]).await?;
            let listed = nodes.lines().any(|line| line.starts_with(&id));
            let ready = nodes.lines().all(|line| line.ends_with(" Ready"));
            if listed && ready {
                Ok(())
            } else {
                Err(format!("the manager lists:\n{nodes}"))
            }
        })
        .await
        .map_err(|nodes| format!("the worker was not Ready within {READY_WITHIN:?}: {nodes}"))
    }

    /// Copies an image from the machine's engine onto the worker (`docker save | docker load`):
    /// there is no registry to pull from.
    pub async fn load_image(&self, reference: &str) -> Result<(), String> {
        let (reference, host) = (reference.to_owned(), self.footprint.docker_host());
        blocking(move || {
            let save_args = ["save", reference.as_str()];
            let load_args = ["-H", host.as_str(), "load"];
            let mut save = Command::new("docker")
                .args(save_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|err| format!("`docker save {reference}` did not run: {err}"))?;
            let image = save.stdout.take().map_or_else(Stdio::null, Stdio::from);
            let loaded = Command::new("docker").args(load_args).stdin(image).output();
            // When one end fails the other fails too (no input, a broken pipe); say both.
            match (
                outcome(&command_line("docker", &save_args), save.wait_with_output()),
                outcome(&command_line("docker", &load_args), loaded),
            ) {
                (Ok(_), Ok(_)) => Ok(()),
                (Err(err), Ok(_)) | (Ok(_), Err(err)) => Err(err),
                (Err(save), Err(load)) => Err(format!("{save}; {load}")),
            }
        })
        .await
    }

    /// Loses the node as a machine that loses power would: its daemon and every process it
    /// started (containerd, shims, containers) are killed at once. Killing only the daemon would
    /// leave its containers running and answering over the overlay until the manager notices.
    /// Mounts, namespace and directories stay for Drop.
    pub fn kill(&mut self) {
        if let Some(mut dockerd) = self.dockerd.take() {
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        self.footprint.kill_processes();
    }

    /// The namespace, and a veth pair with one end in it: a link the two daemons reach each
    /// other by, and nothing else.
    async fn link(&self) -> Result<(), String> {
        let netns = self.footprint.name.as_str();
        let (host_link, node_link) = (self.footprint.host_link(), self.footprint.node_link());
        let (host_link, node_link) = (host_link.as_str(), node_link.as_str());
        let host = format!("{}/30", self.host_addr);
        let node = format!("{}/30", self.node_addr);
        let steps: [&[&str]; 8] = [
            &["netns", "add", netns],
            &[
                "link", "add", host_link, "type", "veth", "peer", "name", node_link,
            ],
            &["link", "set", node_link, "netns", netns],
            &["addr", "add", &host, "dev", host_link],
            &["link", "set", host_link, "up"],
            &["-n", netns, "addr", "add", &node, "dev", node_link],
            &["-n", netns, "link", "set", node_link, "up"],
            &["-n", netns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            run("ip", step).await?;
        }
        Ok(())
    }

    /// Starts `dockerd` in the namespace with a configuration of its own (the machine's
    /// /etc/docker/daemon.json names the engine's data-root) and waits until it answers.
    async fn start_dockerd(&mut self) -> Result<(), String> {
        let dir = &self.footprint.dir;
        let config_file = dir.join("daemon.json");
        let config = serde_json::json!({
            "data-root": dir.join("data"),
            "exec-root": dir.join("exec"),
            "pidfile": dir.join("dockerd.pid"),
            "hosts": [self.footprint.docker_host()],
            // No default bridge and no iptables rules: the namespace's only link is the veth.
            "bridge": "none",
            "iptables": false,
            "ip-masq": false,
            "storage-driver": "fuse-overlayfs",
            // Its containers' cgroups under a name of its own, so Drop finds their processes
            // even once their shims are dead.
            "cgroup-parent": format!("/{}", self.footprint.name),
        });
        std::fs::write(&config_file, config.to_string())
            .map_err(|err| format!("writing {}: {err}", config_file.display()))?;
        let log = File::create(self.footprint.log_file())
            .map_err(|err| format!("creating the worker's log: {err}"))?;
        let stderr = log
            .try_clone()
            .map_err(|err| format!("the worker's log: {err}"))?;
        // Not `ip netns exec`: it remounts /sys, which hides the cgroups from dockerd.
        let dockerd = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.footprint.name))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|err| format!("starting the worker's dockerd: {err}"))?;
        let dockerd = self.dockerd.insert(dockerd);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = dockerd.try_wait() {
                return Err(format!(
                    "the worker's dockerd exited ({status}) before it answered; its log ends:\n{}",
                    self.footprint.log_tail()
                ));
            }
            let host = self.footprint.docker_host();
            let answer = run("docker", &["-H", &host, "info", "--format", "{{.ID}}"]).await;
            match answer {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the worker's dockerd did not answer within {READY_WITHIN:?}: {err}; its \
                         log ends:\n{}",
                        self.footprint.log_tail()
                    ));
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }
}

impl Drop for WorkerNode {
    fn drop(&mut self) {
        if let Some(mut dockerd) = self.dockerd.take() {
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        let mut problems = Vec::new();
        if let Some(node) = &self.node
            && let Err(err) = run_blocking("docker", &["node", "rm", "--force", &node.id])
        {
            problems.push(format!("its node stays in the swarm: {err}"));
        }
        problems.extend(self.footprint.remove());
        for problem in problems {
            eprintln!("swarm worker {}: {problem}", self.footprint.name);
        }
    }
}

/// Two addresses of a /30 in [`LINK_RANGE`] that no interface here has, starting from the block
/// `seed` names (the process id and the worker's serial, so that side-by-side runs start apart).
async fn free_link(seed: u32) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let in_use = run("ip", &["-4", "-o", "addr", "show"]).await?;
    let base = u32::from(LINK_RANGE);
    (0..LINK_BLOCKS)
        .map(|step| base + 4 * (seed.wrapping_add(step) % LINK_BLOCKS))
        .map(|block| (Ipv4Addr::from(block + 1), Ipv4Addr::from(block + 2)))
        .find(|(host, node)| {
            ![host, node]
                .iter()
                .any(|addr| in_use.contains(&format!(" {addr}/")))
        })
        .ok_or_else(|| format!("no free /30 left in {LINK_RANGE}/16"))
}
