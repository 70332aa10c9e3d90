//! The words every part of `userctl` shares: the services of a stack, where it runs, what it
//! stores data in, its ports and images, and what a service's state and health can be. This
//! module depends on nothing else in the crate, so anything may depend on it (see
//! `docs/design.md`, "userctl").

use std::fmt;

use serde::{Deserialize, Serialize};

/// The gateway's gRPC port, inside a container and published by default.
pub const GATEWAY_PORT: u16 = 50051;
/// The gateway's HTTP/JSON front door.
pub const HTTP_PORT: u16 = 8080;
pub const CACHE_PORT: u16 = 50052;
pub const STORE_PORT: u16 = 50053;

/// Pinned official tags, used when no image is given.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.2.5";
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15.8";
/// What `scripts/build-images` makes, for machines that cannot reach a registry; used when the
/// pinned official tag can be neither found locally nor pulled.
pub const LOCAL_REDIS_IMAGE: &str = "userctl-local/redis:7";
pub const LOCAL_POSTGRES_IMAGE: &str = "userctl-local/postgres:15";
/// The one command that makes the local images.
pub const BUILD_IMAGES_COMMAND: &str = "scripts/build-images";

/// The services of a stack, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    /// The gRPC port a `usersvc` service listens on by default.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Self::Gateway => Some(GATEWAY_PORT),
            Self::Cache => Some(CACHE_PORT),
            Self::Store => Some(STORE_PORT),
            Self::Redis | Self::Postgres => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The database behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

/// Where a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Local,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Local => "local",
        }
    }

    /// The store a runtime uses when none is asked for.
    pub fn default_store(self) -> StoreKind {
        match self {
            Self::Docker => StoreKind::Postgres,
            Self::Local => StoreKind::Sqlite,
        }
    }
}

/// The runtime asked for: one by name, or the first that works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// Docker when an engine answers, else local.
    Auto,
    Docker,
    Local,
}

/// Host ports to publish on 127.0.0.1; 0 means any free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    /// The gateway's HTTP/JSON front door.
    pub http: u16,
    pub cache: u16,
    pub store: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            gateway: GATEWAY_PORT,
            http: HTTP_PORT,
            cache: CACHE_PORT,
            store: STORE_PORT,
        }
    }
}

/// `http://127.0.0.1:PORT`: how a published port is reached from this machine.
pub fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// What a service is doing, as far as its runtime can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    /// Exited, waiting for its supervisor to start it again.
    Restarting,
    Created,
    Paused,
    Exited,
    Dead,
    Removing,
    /// Stopped by its supervisor.
    Stopped,
    /// Not there at all.
    Absent,
    /// Not part of this stack (Postgres with a SQLite store on the local runtime).
    Unused,
    /// Run by the user, not by the stack (`--redis-url`).
    External,
    Unknown,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Created => "created",
            Self::Paused => "paused",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Removing => "removing",
            Self::Stopped => "stopped",
            Self::Absent => "absent",
            Self::Unused => "unused",
            Self::External => "external",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The runtime's own health check of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Starting,
    /// There is no health check to ask.
    None,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Starting => "starting",
            Self::None => "none",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of `userctl status`; also what the dashboard shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub service: Service,
    /// The process id on the local runtime, the container id on docker; none when absent.
    pub id: Option<String>,
    pub state: State,
    pub health: Health,
    /// Published address, if any.
    pub address: Option<String>,
    /// Restarts since the service was created, when known.
    pub restarts: Option<u64>,
    /// Seconds since the service (re)started, when running.
    pub uptime_secs: Option<u64>,
}

impl ServiceStatus {
    /// A service with nothing running for it.
    pub fn absent(service: Service) -> Self {
        Self::idle(service, State::Absent)
    }

    /// A service in `state` with no process, address or health check.
    pub fn idle(service: Service, state: State) -> Self {
        Self {
            service,
            id: None,
            state,
            health: Health::None,
            address: None,
            restarts: None,
            uptime_secs: None,
        }
    }
}

/// One line a service logged, as `userctl logs` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub service: Service,
    pub text: String,
}

impl fmt::Display for LogLine {
    /// `gateway | …`, the name padded so the lines of all services align.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} | {}", self.service.name(), self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_parses_back_from_its_name() {
        for service in Service::ALL {
            assert_eq!(Service::parse(service.name()), Some(service));
        }
        assert_eq!(Service::parse("mysql"), None);
    }

    #[test]
    fn states_and_health_serialize_as_their_names() {
        let status = ServiceStatus::absent(Service::Cache);
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["state"], "absent");
        assert_eq!(json["health"], "none");
        assert_eq!(json["id"], serde_json::Value::Null);
        for state in [State::Running, State::Restarting, State::External] {
            assert_eq!(serde_json::to_value(state).expect("json"), state.name());
        }
    }

    #[test]
    fn log_lines_align_on_every_runtime() {
        let line = LogLine {
            service: Service::Redis,
            text: "ready".into(),
        };
        assert_eq!(line.to_string(), "redis    | ready");
    }
}
