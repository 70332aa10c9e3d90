//! Where the stack runs. Both runtimes bring up the same five services from one [`StackSpec`]
//! and answer the same questions (status, logs), so the commands do not care which one it is.
//!
//! - [`docker`]: containers on a private network through the Docker Engine API (bollard).
//! - [`local`]: supervised `usersvc` processes on this machine, SQLite, a local Redis.

pub mod docker;
pub mod local;
pub mod progress;

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

use crate::{args::StoreKind, home::ProjectHome};

/// Pinned official tags; `--redis-image`/`--postgres-image` override them (see
/// `scripts/build-images` for machines that cannot reach a registry).
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.2.5";
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15.8";

/// The services of a stack, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Postgres,
    Redis,
    Store,
    Cache,
    Gateway,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Self::Postgres,
        Self::Redis,
        Self::Store,
        Self::Cache,
        Self::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Store => "store",
            Self::Cache => "cache",
            Self::Gateway => "gateway",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|service| service.name() == name)
    }

    /// The three `usersvc` services; the others are Redis and Postgres.
    pub fn is_usersvc(self) -> bool {
        matches!(self, Self::Store | Self::Cache | Self::Gateway)
    }
}

/// Host ports to publish on 127.0.0.1; 0 means any free port.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    /// The gateway's HTTP/JSON front door.
    pub http: u16,
    pub cache: u16,
    pub store: u16,
}

/// Everything `up` needs to know, whichever runtime runs it.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub home: ProjectHome,
    pub store: StoreKind,
    pub ports: Ports,
    pub wait_timeout: Duration,
    /// The `usersvc` binary to run (local) or to build the services image from (docker).
    pub usersvc: PathBuf,
    pub redis_image: String,
    pub postgres_image: String,
    /// Local runtime only: an existing Redis instead of starting `redis-server`.
    pub redis_url: Option<String>,
    /// Browser origins the gateway's HTTP door answers (CORS); none: browsers are refused.
    pub cors_origins: Vec<String>,
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

/// One row of `userctl status`; also what the dashboard shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub service: Service,
    /// running, exited, restarting, created, absent…
    pub state: String,
    /// healthy, unhealthy, starting, or none when there is no health check.
    pub health: String,
    /// Published address, if any.
    pub address: Option<String>,
    /// Restarts since the service was created, when known.
    pub restarts: Option<u64>,
    /// Seconds since the service (re)started, when running.
    pub uptime_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker engine: {0}")]
    EngineUnreachable(String),
    #[error("image {image} is not available locally and cannot be pulled: {reason}")]
    ImageUnavailable { image: String, reason: String },
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
}

impl Runtime {
    pub fn kind(&self) -> crate::home::RuntimeKind {
        match self {
            Self::Docker(_) => crate::home::RuntimeKind::Docker,
            Self::Local(_) => crate::home::RuntimeKind::Local,
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
        }
    }

    pub async fn down(&self, volumes: bool) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(docker) => docker.down(volumes).await,
            Self::Local(local) => local.down(volumes).await,
        }
    }

    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        match self {
            Self::Docker(docker) => docker.status().await,
            Self::Local(local) => local.status().await,
        }
    }

    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(docker) => docker.logs(service, follow, tail).await,
            Self::Local(local) => local.logs(service, follow, tail).await,
        }
    }
}
