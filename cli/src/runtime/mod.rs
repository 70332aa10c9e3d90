//! Where the stack runs. Both runtimes bring up the same five services from one [`StackSpec`]
//! and answer the same questions (status, logs, usage), so the commands do not care which one
//! it is; [`Runtime`] is the only way in.
//!
//! - [`launch`]: how each `usersvc` service is started, as data every runtime uses.
//! - [`front`]: the HAProxy configuration in front of two or more gateways.
//! - [`docker`]: containers on a private network through the Docker Engine API (bollard).
//! - [`local`]: supervised `usersvc` processes on this machine, SQLite, a local Redis.
//! - [`swarm`]: Docker Swarm services, for more than one machine.
//! - [`progress`]: one line of progress per service while `up` works.

pub mod docker;
pub mod front;
pub mod launch;
pub mod local;
pub mod progress;
pub mod swarm;

use std::{path::PathBuf, time::Duration};

use crate::{
    home::{HomeError, ProjectHome, StackRecord},
    stack::{
        LogLine, Ports, Replicas, RuntimeChoice, RuntimeKind, Service, ServiceStatus, StoreKind,
    },
};

/// Everything `up` needs to know, whichever runtime runs it.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub home: ProjectHome,
    pub store: StoreKind,
    pub ports: Ports,
    /// How many of each `usersvc` service run. `up` converges a running stack to these counts
    /// (which is all `scale` is), adding or removing replicas without restarting the others.
    pub replicas: Replicas,
    pub wait_timeout: Duration,
    /// Lifetime of the access tokens the gateways sign (`--token-ttl`).
    pub token_ttl: Duration,
    /// The `usersvc` binary to run (local) or to build the services image from (docker).
    pub usersvc: PathBuf,
    /// None: the pinned official image, else the locally built one (docker only).
    pub redis_image: Option<String>,
    /// None: the pinned official image, else the locally built one (docker only).
    pub postgres_image: Option<String>,
    /// None: the pinned official HAProxy image, else the locally built one (docker only; used
    /// with two or more gateways).
    pub proxy_image: Option<String>,
    /// Local runtime only: an existing Redis instead of starting `redis-server`.
    pub redis_url: Option<String>,
    /// Browser origins the gateway's HTTP door allows (CORS); empty allows none.
    pub cors_origins: Vec<String>,
    /// Swarm runtime only: make this engine a single-node swarm when it is in none.
    pub init_swarm: bool,
    /// Swarm runtime only: push the services image here (`host:port/team`) for every node.
    pub image_registry: Option<String>,
}

/// Where a running stack answers, as `http://127.0.0.1:PORT` URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub gateway: String,
    pub cache: String,
    pub store: String,
    /// The gateway's HTTP/JSON front door.
    pub http: Option<String>,
}

/// CPU and memory of one service, where the runtime can tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub service: Service,
    /// Percent of one CPU: 100 is one core busy.
    pub cpu_percent: Option<f64>,
    /// Memory in use, not counting reclaimable page cache.
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker engine: {0}")]
    EngineUnreachable(String),
    #[error("image {image} is not available locally and cannot be pulled: {reason}")]
    ImageUnavailable {
        image: String,
        reason: String,
        /// The locally built image that would have stood in for it, when there is one.
        local: Option<String>,
    },
    #[error("port {port} for {service} is already in use on 127.0.0.1")]
    PortTaken { service: &'static str, port: u16 },
    #[error("{service} did not become healthy within {timeout:?}{}", last_logs(.logs))]
    Unhealthy {
        service: &'static str,
        timeout: Duration,
        logs: Vec<String>,
    },
    #[error("{service} exited during start-up{}", last_logs(.logs))]
    Exited {
        service: &'static str,
        logs: Vec<String>,
    },
    #[error("the local runtime stores data in SQLite, not {store:?}")]
    LocalNeedsSqlite { store: StoreKind },
    #[error(
        "the swarm runtime stores data in Postgres, not SQLite (a SQLite file lives on one node)"
    )]
    SwarmNeedsPostgres,
    #[error("the Docker engine is in no swarm")]
    SwarmInactive,
    #[error("the Docker engine is a swarm worker; services are made on a manager")]
    SwarmWorker,
    #[error("swarm service {name} exists and is not project {project}'s")]
    SwarmForeign { name: String, project: String },
    #[error("project {project} has nothing running for {what}")]
    NotUp { project: String, what: String },
    #[error("nothing to supervise: project {project} has no local plan")]
    NothingToSupervise { project: String },
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("{context}: {message}")]
    Other { context: String, message: String },
}

impl RuntimeError {
    pub fn other(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::Other {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

fn last_logs(logs: &[String]) -> String {
    if logs.is_empty() {
        String::new()
    } else {
        format!("; last log lines: {}", logs.join(" | "))
    }
}

/// The runtime a stack lives on.
pub enum Runtime {
    Docker(docker::DockerRuntime),
    Local(local::LocalRuntime),
    Swarm(swarm::SwarmRuntime),
}

/// A runtime `up` chose, and why when the choice was automatic (for one line of progress).
pub struct Chosen {
    pub runtime: Runtime,
    pub reason: Option<String>,
}

impl Runtime {
    /// The runtime of `kind` for `home`'s project; for docker, connected to the engine.
    pub async fn open(home: &ProjectHome, kind: RuntimeKind) -> Result<Self, RuntimeError> {
        Ok(match kind {
            RuntimeKind::Docker => Self::Docker(docker::DockerRuntime::connect(&home.name).await?),
            RuntimeKind::Local => Self::Local(local::LocalRuntime::new(home.clone())),
            RuntimeKind::Swarm => Self::Swarm(swarm::SwarmRuntime::connect(&home.name).await?),
        })
    }

    /// The runtime `up` should use: the one asked for; for auto, the recorded stack's, else
    /// Docker when an engine answers, else local (saying why).
    pub async fn choose(
        home: &ProjectHome,
        choice: RuntimeChoice,
        recorded: Option<RuntimeKind>,
    ) -> Result<Chosen, RuntimeError> {
        let kind = match (choice, recorded) {
            (RuntimeChoice::Docker, _) => RuntimeKind::Docker,
            (RuntimeChoice::Local, _) => RuntimeKind::Local,
            (RuntimeChoice::Swarm, _) => RuntimeKind::Swarm,
            (RuntimeChoice::Auto, Some(kind)) => kind,
            (RuntimeChoice::Auto, None) => {
                return Ok(match docker::DockerRuntime::connect(&home.name).await {
                    Ok(docker) => Chosen {
                        runtime: Self::Docker(docker),
                        reason: Some("a Docker engine answered".to_owned()),
                    },
                    Err(err) => Chosen {
                        runtime: Self::Local(local::LocalRuntime::new(home.clone())),
                        reason: Some(err.to_string()),
                    },
                });
            }
        };
        Ok(Chosen {
            runtime: Self::open(home, kind).await?,
            reason: None,
        })
    }

    /// The runtime of the stack [`record`](Self::record) saved; with no record, Docker if an
    /// engine answers (its labels still find what a lost record pointed at), else local.
    pub async fn reopen(home: &ProjectHome) -> Result<Self, RuntimeError> {
        match home.stack()?.map(|stack| stack.runtime) {
            Some(kind) => Self::open(home, kind).await,
            None => Ok(Self::choose(home, RuntimeChoice::Auto, None).await?.runtime),
        }
    }

    /// Records that the project runs here, and where it answers, for the commands after `up`.
    pub fn record(
        &self,
        home: &ProjectHome,
        store: StoreKind,
        endpoints: &Endpoints,
    ) -> Result<(), RuntimeError> {
        Ok(home.save_stack(&StackRecord {
            runtime: self.kind(),
            store,
            gateway: endpoints.gateway.clone(),
            cache: endpoints.cache.clone(),
            store_addr: endpoints.store.clone(),
            http: endpoints.http.clone(),
        })?)
    }

    pub fn kind(&self) -> RuntimeKind {
        match self {
            Self::Docker(_) => RuntimeKind::Docker,
            Self::Local(_) => RuntimeKind::Local,
            Self::Swarm(_) => RuntimeKind::Swarm,
        }
    }

    pub async fn up(
        &self,
        spec: &StackSpec,
        progress: &progress::Progress,
    ) -> Result<Endpoints, RuntimeError> {
        match self {
            Self::Docker(docker) => docker.up(spec, progress).await,
            Self::Local(local) => local.up(spec, progress).await,
            Self::Swarm(swarm) => swarm.up(spec, progress).await,
        }
    }

    /// Restarts every replica of `service`, one at a time: the next stops only when the new one
    /// is healthy and has had time to be found by its clients. With two or more replicas no
    /// call fails (see `docs/design.md`, "Replicas").
    pub async fn restart(
        &self,
        service: Service,
        progress: &progress::Progress,
    ) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(docker) => docker.restart(service, progress).await,
            Self::Local(local) => local.restart(service, progress).await,
            Self::Swarm(swarm) => swarm.restart(service, progress).await,
        }
    }

    /// Stops the stack; with `volumes` also deletes its data. Returns what it deleted, one
    /// description each, so `down` never claims more than it did.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, RuntimeError> {
        match self {
            Self::Docker(docker) => docker.down(volumes).await,
            Self::Local(local) => local.down(volumes).await,
            Self::Swarm(swarm) => swarm.down(volumes).await,
        }
    }

    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        match self {
            Self::Docker(docker) => docker.status().await,
            Self::Local(local) => local.status().await,
            Self::Swarm(swarm) => swarm.status().await,
        }
    }

    /// Hands each log line to `sink`, in the order of [`Service::ALL`] (or as they come with
    /// `follow`, until ctrl-c).
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
        sink: &mut (dyn FnMut(LogLine) -> std::io::Result<()> + Send),
    ) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(docker) => docker.logs(service, follow, tail, sink).await,
            Self::Local(local) => local.logs(service, follow, tail, sink).await,
            Self::Swarm(swarm) => swarm.logs(service, follow, tail, sink).await,
        }
    }

    /// The last `tail` log lines of one service (none when it has none).
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        match self {
            Self::Docker(docker) => docker.recent_logs(service, tail).await,
            Self::Local(local) => local.recent_logs(service, tail).await,
            Self::Swarm(swarm) => swarm.recent_logs(service, tail).await,
        }
    }

    /// CPU and memory of each running service. CPU is a rate, so the first call on a fresh
    /// runtime may not know it yet.
    pub async fn usage(&self) -> Vec<Usage> {
        match self {
            Self::Docker(docker) => docker.usage().await,
            Self::Local(local) => local.usage(),
            Self::Swarm(swarm) => swarm.usage().await,
        }
    }

    /// The running service processes on this machine, for the bench's CPU figures (none on
    /// docker: the engine measures its containers).
    pub fn processes(&self) -> Vec<(Service, u32)> {
        match self {
            Self::Docker(_) | Self::Swarm(_) => Vec::new(),
            Self::Local(local) => local.pids(),
        }
    }

    /// The stack's Redis as reachable from this machine, for the bench's baseline (docker does
    /// not publish it).
    pub fn redis_url(&self) -> Option<String> {
        match self {
            Self::Docker(_) | Self::Swarm(_) => None,
            Self::Local(local) => local.redis_url(),
        }
    }
}
