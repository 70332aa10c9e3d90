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
pub const DEFAULT_PROXY_IMAGE: &str = "haproxy:2.6.18";
/// What `scripts/build-images` makes, for machines that cannot reach a registry; used when the
/// pinned official tag can be neither found locally nor pulled.
pub const LOCAL_REDIS_IMAGE: &str = "userctl-local/redis:7";
pub const LOCAL_POSTGRES_IMAGE: &str = "userctl-local/postgres:15";
pub const LOCAL_PROXY_IMAGE: &str = "userctl-local/haproxy:2.6";
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
    /// HAProxy in front of two or more gateways, holding the published gateway and HTTP ports
    /// (see [`crate::runtime::front`]); not there with one gateway.
    Proxy,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Self::Postgres,
        Self::Redis,
        Self::Store,
        Self::Cache,
        Self::Gateway,
        Self::Proxy,
    ];

    /// The services that run as replicas, in start order.
    pub const SCALABLE: [Service; 3] = [Self::Store, Self::Cache, Self::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Store => "store",
            Self::Cache => "cache",
            Self::Gateway => "gateway",
            Self::Proxy => "proxy",
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
            Self::Redis | Self::Postgres | Self::Proxy => None,
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
    Swarm,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Local => "local",
            Self::Swarm => "swarm",
        }
    }

    /// The choice that names this runtime.
    pub fn choice(self) -> RuntimeChoice {
        match self {
            Self::Docker => RuntimeChoice::Docker,
            Self::Local => RuntimeChoice::Local,
            Self::Swarm => RuntimeChoice::Swarm,
        }
    }

    /// The store a runtime uses when none is asked for.
    pub fn default_store(self) -> StoreKind {
        match self {
            Self::Docker | Self::Swarm => StoreKind::Postgres,
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
    /// Docker Swarm services: never chosen by auto.
    Swarm,
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

/// How many replicas of each `usersvc` service run; Redis, Postgres and the proxy are one.
/// Every count is at least 1 and at most [`Replicas::max`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    pub gateway: u16,
    pub cache: u16,
    pub store: u16,
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            gateway: 1,
            cache: 1,
            store: 1,
        }
    }
}

/// Replicas each CPU core can hold: every replica is a process with its own runtime threads,
/// connections and (for the gateway) password-hashing buffers, so past a few per core they
/// only take memory and CPU from each other.
const REPLICAS_PER_CORE: u16 = 4;
/// The most replicas of one service, whatever the machine or cluster.
const REPLICAS_CEILING: u16 = 32;

/// Where replicas run, which decides how many of one service make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// This machine (`up`, `scale`): [`REPLICAS_PER_CORE`] per core of it.
    Machine,
    /// A cluster (`export kubernetes`): this machine's cores say nothing about its nodes, so
    /// only the ceiling applies.
    Cluster,
}

impl Room {
    /// The most replicas of one service here.
    pub fn max(self) -> u16 {
        match self {
            Self::Machine => Replicas::max(),
            Self::Cluster => REPLICAS_CEILING,
        }
    }
}

impl Replicas {
    /// How many replicas of `service` run.
    pub fn of(self, service: Service) -> u16 {
        match service {
            Service::Gateway => self.gateway,
            Service::Cache => self.cache,
            Service::Store => self.store,
            Service::Redis | Service::Postgres => 1,
            // In front of two or more gateways only.
            Service::Proxy => u16::from(self.gateway > 1),
        }
    }

    /// The most replicas of one service this machine holds: [`REPLICAS_PER_CORE`] per core,
    /// at most [`REPLICAS_CEILING`].
    pub fn max() -> u16 {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        u16::try_from(cores)
            .unwrap_or(u16::MAX)
            .saturating_mul(REPLICAS_PER_CORE)
            .min(REPLICAS_CEILING)
    }

    /// These counts with `changes` applied, each checked against this machine.
    pub fn with(self, changes: &[(Service, u16)]) -> Result<Self, String> {
        self.with_in(changes, Room::Machine)
    }

    /// These counts with `changes` applied, each checked against `room`.
    pub fn with_in(mut self, changes: &[(Service, u16)], room: Room) -> Result<Self, String> {
        for &(service, count) in changes {
            check_count(service, count, room)?;
            match service {
                Service::Gateway => self.gateway = count,
                Service::Cache => self.cache = count,
                Service::Store => self.store = count,
                _ => return Err(not_scalable(service.name())),
            }
        }
        Ok(self)
    }

    /// `gateway=2,cache=3`: the services named and their counts, checked against this
    /// machine; services not named keep theirs.
    pub fn parse_changes(text: &str) -> Result<Vec<(Service, u16)>, String> {
        Self::parse_changes_in(text, Room::Machine)
    }

    /// [`Replicas::parse_changes`], checked against `room`.
    pub fn parse_changes_in(text: &str, room: Room) -> Result<Vec<(Service, u16)>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| parse_change_in(part, room))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|changes| {
                if changes.is_empty() {
                    Err("name at least one SERVICE=N, e.g. cache=2".to_owned())
                } else {
                    Ok(changes)
                }
            })
    }
}

/// One `SERVICE=N`, checked against this machine.
pub fn parse_change(text: &str) -> Result<(Service, u16), String> {
    parse_change_in(text, Room::Machine)
}

/// One `SERVICE=N`, checked against `room`.
pub fn parse_change_in(text: &str, room: Room) -> Result<(Service, u16), String> {
    let (name, count) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SERVICE=N (e.g. cache=2)"))?;
    let name = name.trim();
    let service = Service::parse(name)
        .filter(|service| Service::SCALABLE.contains(service))
        .ok_or_else(|| not_scalable(name))?;
    let count: u16 = count.trim().parse().map_err(|_| {
        format!(
            "{name}={count}: the count must be a whole number from 1 to {}",
            room.max()
        )
    })?;
    check_count(service, count, room)?;
    Ok((service, count))
}

fn check_count(service: Service, count: u16, room: Room) -> Result<(), String> {
    let max = room.max();
    if count == 0 {
        Err(format!(
            "{service}=0: a stack needs at least one {service}; use `userctl down` to stop it"
        ))
    } else if count > max && room == Room::Cluster {
        Err(format!(
            "{service}={count} is more than one service runs: at most {max} replicas"
        ))
    } else if count > max {
        Err(format!(
            "{service}={count} is more than this machine holds: at most {max} replicas per \
             service ({REPLICAS_PER_CORE} per CPU core, {REPLICAS_CEILING} in all)"
        ))
    } else {
        Ok(())
    }
}

fn not_scalable(name: &str) -> String {
    format!("{name:?} cannot be scaled; use gateway, cache or store")
}

impl fmt::Display for Replicas {
    /// `gateway=1,cache=2,store=1`, as `--replicas` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gateway={},cache={},store={}",
            self.gateway, self.cache, self.store
        )
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
    /// Which replica of the service, from 1.
    pub replica: u16,
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
    /// The swarm node it runs on (`hostname`, or `hostname (down)` once the swarm has lost
    /// it); none on the local and docker runtimes, where everything runs on this machine.
    pub node: Option<String>,
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
            replica: 1,
            id: None,
            state,
            health: Health::None,
            address: None,
            restarts: None,
            uptime_secs: None,
            node: None,
        }
    }
}

/// One line a service logged, as `userctl logs` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub service: Service,
    /// Which replica logged it, when the service has more than one.
    pub replica: Option<u16>,
    pub text: String,
}

impl LogLine {
    /// When a `usersvc` line was logged: its RFC 3339 UTC timestamp, the first word of a text
    /// line or the `timestamp` of a JSON one (`--log-format json`). Equal precision and the `Z`
    /// make them sort as text.
    pub fn timestamp(&self) -> Option<&str> {
        let text = self.text.trim_start();
        if let Some(json) = text.strip_prefix('{') {
            let (_, rest) = json.split_once("\"timestamp\":\"")?;
            return rest.split_once('"').map(|(timestamp, _)| timestamp);
        }
        let first = text.split_whitespace().next()?;
        first
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_digit)
            .then_some(first)
    }
}

impl fmt::Display for LogLine {
    /// `gateway | …` (`cache.2 | …` for a second replica), padded so the lines of all
    /// services align.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.replica {
            Some(replica) => format!("{}.{replica}", self.service.name()),
            None => self.service.name().to_owned(),
        };
        write!(f, "{source:<10} | {}", self.text)
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
    fn replica_changes_parse_and_apply() {
        let changes = Replicas::parse_changes("gateway=2, cache=3").expect("valid");
        assert_eq!(changes, [(Service::Gateway, 2), (Service::Cache, 3)]);
        let replicas = Replicas::default().with(&changes).expect("valid");
        assert_eq!(replicas.to_string(), "gateway=2,cache=3,store=1");
        assert_eq!(replicas.of(Service::Proxy), 1);
        assert_eq!(Replicas::default().of(Service::Proxy), 0);
    }

    #[test]
    fn bad_replica_counts_say_what_is_wrong() {
        for (text, expected) in [
            ("cache=0", "at least one cache"),
            ("redis=2", "cannot be scaled"),
            ("proxy=2", "cannot be scaled"),
            ("web=2", "cannot be scaled"),
            ("cache", "is not SERVICE=N"),
            ("cache=two", "whole number"),
            ("cache=-1", "whole number"),
            ("", "at least one SERVICE=N"),
            ("store=100000", "whole number"),
        ] {
            let err = Replicas::parse_changes(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
        let too_many = format!("gateway={}", Replicas::max() + 1);
        let err = Replicas::parse_changes(&too_many).expect_err("too many");
        assert!(err.contains("per CPU core"), "{err}");
    }

    #[test]
    fn a_cluster_is_not_held_to_this_machines_cores_only_to_the_ceiling() {
        let changes = Replicas::parse_changes_in("gateway=32,cache=33", Room::Cluster);
        let err = changes.expect_err("33 is past the ceiling");
        assert!(err.contains("at most 32 replicas"), "{err}");
        assert!(!err.contains("CPU core"), "{err}");
        let changes = Replicas::parse_changes_in("gateway=32", Room::Cluster).expect("valid");
        let replicas = Replicas::default()
            .with_in(&changes, Room::Cluster)
            .expect("valid");
        assert_eq!(replicas.gateway, 32);
        assert!(Replicas::parse_changes_in("store=0", Room::Cluster).is_err());
    }

    #[test]
    fn log_lines_align_on_every_runtime() {
        let line = LogLine {
            service: Service::Redis,
            replica: None,
            text: "ready".into(),
        };
        assert_eq!(line.to_string(), "redis      | ready");
        let line = LogLine {
            service: Service::Cache,
            replica: Some(2),
            text: "ready".into(),
        };
        assert_eq!(line.to_string(), "cache.2    | ready");
    }
}
