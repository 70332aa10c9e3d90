//! What the dashboard asks of the runtime the stack lives on. The dashboard does not know about
//! Docker or the local supervisor: the caller implements [`RuntimeSource`] over whichever runs
//! the stack.

use std::time::Duration;

use futures::future::BoxFuture;

/// Any error a [`RuntimeSource`] reports; the dashboard shows its text and retries.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// The five services of a stack, in the order the dashboard lists them (front to back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Gateway,
    Cache,
    Store,
    Redis,
    Postgres,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Self::Gateway,
        Self::Cache,
        Self::Store,
        Self::Redis,
        Self::Postgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
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

    /// Position in [`Service::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One service as the runtime sees it; `None` where the runtime cannot say.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub service: Service,
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
    /// A row with only the state known.
    pub fn new(service: Service, state: impl Into<String>) -> Self {
        Self {
            service,
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

/// The runtime's view of the stack. Both calls may fail (the engine went away); the dashboard
/// shows the error and asks again with backoff.
pub trait RuntimeSource: Send + Sync {
    /// One row per service the runtime knows about.
    fn status(&self) -> BoxFuture<'_, Result<Vec<ServiceRow>, SourceError>>;

    /// The last `tail` lines `service` logged, oldest first.
    fn recent_logs(
        &self,
        service: Service,
        tail: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, SourceError>>;
}
