//! What the dashboard asks of the runtime the stack lives on. The dashboard does not know about
//! Docker or the local supervisor: the caller implements [`RuntimeSource`] over whichever runs
//! the stack.

use std::time::Duration;

use futures::future::BoxFuture;

/// Any error a [`RuntimeSource`] reports; the dashboard shows its text and retries.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// The services of a stack, in the order the dashboard lists them (front to back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// HAProxy in front of two or more gateways; not part of a stack with one.
    Proxy,
    Gateway,
    Cache,
    Store,
    Redis,
    Postgres,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Self::Proxy,
        Self::Gateway,
        Self::Cache,
        Self::Store,
        Self::Redis,
        Self::Postgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Gateway => "gateway",
            Self::Cache => "cache",
            Self::Store => "store",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
        }
    }

    /// The `usersvc` services, which serve `grpc.health.v1.Health`.
    pub fn is_grpc(self) -> bool {
        matches!(self, Self::Gateway | Self::Cache | Self::Store)
    }

    /// Whether every stack has it: the proxy comes and goes with the gateway count.
    pub fn always_there(self) -> bool {
        self != Self::Proxy
    }
}

/// The name of one replica on screen, as `userctl logs` names it: `cache` while the service
/// has one replica, `cache.1`, `cache.2`… once it has several.
pub fn label(service: Service, replica: u16, several: bool) -> String {
    if several {
        format!("{}.{replica}", service.name())
    } else {
        service.name().to_owned()
    }
}

/// One replica of a service as the runtime sees it; `None` where the runtime cannot say.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub service: Service,
    /// Which replica, from 1; Redis, Postgres and the proxy have only replica 1.
    pub replica: u16,
    /// running, exited, restarting, absent…
    pub state: String,
    /// The runtime's own health check: healthy, unhealthy, starting, none.
    pub health: String,
    /// Where it is published, if anywhere.
    pub address: Option<String>,
    pub restarts: Option<u64>,
    /// Time since the service (re)started, while it runs.
    pub uptime: Option<Duration>,
    /// Percent of one core: 100 is one core busy.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
}

impl ServiceRow {
    /// A row for replica 1 with only the state known.
    pub fn new(service: Service, state: impl Into<String>) -> Self {
        Self {
            service,
            replica: 1,
            state: state.into(),
            health: "none".into(),
            address: None,
            restarts: None,
            uptime: None,
            cpu_percent: None,
            memory_bytes: None,
        }
    }
}

/// One line a replica logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Which replica, when the service has several (as `userctl logs` labels them).
    pub replica: Option<u16>,
    pub text: String,
}

/// Whose logs the logs pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogScope {
    /// Every replica of one service.
    Service(Service),
    /// Every service, merged in time order.
    Stack,
}

/// The runtime's view of the stack. Both calls may fail (the engine went away); the dashboard
/// shows the error and asks again with backoff.
pub trait RuntimeSource: Send + Sync {
    /// One row per replica the runtime knows about.
    fn status(&self) -> BoxFuture<'_, Result<Vec<ServiceRow>, SourceError>>;

    /// The last `tail` lines each replica of `service` logged, oldest first per replica.
    fn recent_logs(
        &self,
        service: Service,
        tail: usize,
    ) -> BoxFuture<'_, Result<Vec<LogLine>, SourceError>>;
}
