//! `dashboard`: the live terminal view. The TUI is the `userctl-dashboard` crate; this wires
//! it to the stack `up` recorded: its gRPC addresses (the first replica of each service; the
//! others the runtime's rows give), and the runtime it lives on as a [`RuntimeSource`] (state,
//! health, CPU and memory of each replica, recent logs).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use userctl_dashboard::{
    ClientTls, Config, DashboardError, Endpoints, LogLine, RuntimeSource,
    Service as DashboardService, ServiceRow, SourceError,
};

use crate::{
    args::DashboardArgs,
    error::{CliError, Result, chain},
    home::ProjectHome,
    pki::Holder,
    runtime::{Runtime, Usage},
    stack::{RuntimeKind, Service, ServiceStatus, State},
};

/// `WatchStats` accepts intervals in this range.
const REFRESH_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);

pub async fn run(home: &ProjectHome, gateway: Option<String>, args: DashboardArgs) -> Result<()> {
    if !userctl_dashboard::has_terminal() {
        return Err(CliError::usage("the dashboard needs a terminal").with_hint(
            "run it in an interactive terminal; `userctl status` prints the services once",
        ));
    }
    if !REFRESH_RANGE.contains(&args.refresh) {
        return Err(CliError::usage("--refresh must be between 100ms and 60s"));
    }
    let stack = home.stack()?.ok_or_else(|| {
        CliError::unreachable(format!("project {} is not up", home.name))
            .with_hint("run `userctl up` first")
    })?;
    let config = Config {
        endpoints: Endpoints {
            gateway: gateway.unwrap_or(stack.gateway),
            cache: stack.cache,
            store: stack.store_addr,
        },
        tls: home
            .tls_identity(Holder::Userctl)?
            .map(|identity| ClientTls {
                ca: identity.ca,
                cert: identity.cert,
                key: identity.key,
            }),
        refresh: args.refresh,
        title: format!("project {} · {} runtime", home.name, stack.runtime.name()),
        color: std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        log_file: Some(home.dir.join("dashboard.log")),
    };
    let source = StackSource::new(home.clone(), stack.runtime);
    userctl_dashboard::run(config, Arc::new(source))
        .await
        .map_err(dashboard_error)
}

fn dashboard_error(err: DashboardError) -> CliError {
    match err {
        DashboardError::NotATerminal => CliError::usage(err.to_string()),
        other => CliError::failed(chain(&other)),
    }
}

/// The recorded stack's runtime, as the dashboard asks about it.
struct StackSource {
    home: ProjectHome,
    kind: RuntimeKind,
    /// Opened on first use, and again after a failed open: the engine may not be up when the
    /// dashboard starts. Kept, because the runtime remembers the last CPU sample.
    runtime: tokio::sync::Mutex<Option<Arc<Runtime>>>,
}

impl StackSource {
    fn new(home: ProjectHome, kind: RuntimeKind) -> Self {
        Self {
            home,
            kind,
            runtime: tokio::sync::Mutex::new(None),
        }
    }

    async fn runtime(&self) -> Result<Arc<Runtime>, SourceError> {
        let mut slot = self.runtime.lock().await;
        if let Some(runtime) = slot.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Arc::new(Runtime::open(&self.home, self.kind).await?);
        *slot = Some(runtime.clone());
        Ok(runtime)
    }

    async fn rows(&self) -> Result<Vec<ServiceRow>, SourceError> {
        let runtime = self.runtime().await?;
        let (statuses, usage) = tokio::join!(runtime.status(), runtime.usage());
        let statuses = statuses?;
        let usage = usage_by_replica(&statuses, usage);
        Ok(statuses
            .into_iter()
            .filter_map(|status| {
                let usage = usage.get(&(status.service, status.replica)).copied();
                row(status, usage)
            })
            .collect())
    }

    /// The last `tail` lines of every replica of `service`, as `userctl logs` reads them.
    async fn logs(&self, service: Service, tail: usize) -> Result<Vec<LogLine>, SourceError> {
        let mut lines = Vec::new();
        let mut keep = |line: crate::stack::LogLine| {
            lines.push(LogLine {
                replica: line.replica,
                text: line.text,
            });
            Ok(())
        };
        self.runtime()
            .await?
            .logs(Some(service), false, Some(tail), &mut keep)
            .await?;
        Ok(lines)
    }
}

impl RuntimeSource for StackSource {
    fn status(&self) -> BoxFuture<'_, Result<Vec<ServiceRow>, SourceError>> {
        Box::pin(self.rows())
    }

    fn recent_logs(
        &self,
        service: DashboardService,
        tail: usize,
    ) -> BoxFuture<'_, Result<Vec<LogLine>, SourceError>> {
        Box::pin(self.logs(from_dashboard(service), tail))
    }
}

/// Which replica each usage figure belongs to. A runtime lists usage in the order of its status
/// rows (`Service::ALL`, then replica), one per replica it has a process or container for, but
/// does not name the replica: so a service's figures go to its rows with an id, in order, and
/// only when the counts agree. A replica that came or went between the two calls leaves its
/// service's figures unknown for one refresh rather than on the wrong rows.
fn usage_by_replica(
    statuses: &[ServiceStatus],
    usage: Vec<Usage>,
) -> HashMap<(Service, u16), Usage> {
    let mut by_service: HashMap<Service, Vec<Usage>> = HashMap::new();
    for usage in usage {
        by_service.entry(usage.service).or_default().push(usage);
    }
    let mut by_replica = HashMap::new();
    for (service, usage) in by_service {
        let mut replicas: Vec<u16> = statuses
            .iter()
            .filter(|status| status.service == service && status.id.is_some())
            .map(|status| status.replica)
            .collect();
        replicas.sort_unstable();
        if replicas.len() == usage.len() {
            by_replica.extend(replicas.into_iter().map(|r| (service, r)).zip(usage));
        }
    }
    by_replica
}

/// The dashboard's row for `status`; none for a service it does not show.
fn row(status: ServiceStatus, usage: Option<Usage>) -> Option<ServiceRow> {
    // The engine reports zeros for a stopped container; unknown is the honest figure.
    let usage = usage.filter(|_| status.state == State::Running);
    Some(ServiceRow {
        service: to_dashboard(status.service)?,
        replica: status.replica,
        state: status.state.name().to_owned(),
        health: status.health.name().to_owned(),
        address: status.address,
        restarts: status.restarts,
        uptime: status.uptime_secs.map(Duration::from_secs),
        cpu_percent: usage.and_then(|usage| usage.cpu_percent),
        memory_bytes: usage.and_then(|usage| usage.memory_bytes),
    })
}

/// The dashboard's name for `service`: every service has one. An `Option` so a service added
/// later is left out until the dashboard knows how to show it.
fn to_dashboard(service: Service) -> Option<DashboardService> {
    match service {
        Service::Proxy => Some(DashboardService::Proxy),
        Service::Gateway => Some(DashboardService::Gateway),
        Service::Cache => Some(DashboardService::Cache),
        Service::Store => Some(DashboardService::Store),
        Service::Redis => Some(DashboardService::Redis),
        Service::Postgres => Some(DashboardService::Postgres),
    }
}

fn from_dashboard(service: DashboardService) -> Service {
    match service {
        DashboardService::Proxy => Service::Proxy,
        DashboardService::Gateway => Service::Gateway,
        DashboardService::Cache => Service::Cache,
        DashboardService::Store => Service::Store,
        DashboardService::Redis => Service::Redis,
        DashboardService::Postgres => Service::Postgres,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_maps_both_ways() {
        for service in Service::ALL {
            let shown = to_dashboard(service).expect("the dashboard shows every service");
            assert_eq!(from_dashboard(shown), service);
        }
    }

    fn running(service: Service, replica: u16, pid: u32) -> ServiceStatus {
        ServiceStatus {
            replica,
            id: Some(pid.to_string()),
            ..ServiceStatus::idle(service, State::Running)
        }
    }

    fn usage(service: Service, memory: u64) -> Usage {
        Usage {
            service,
            cpu_percent: Some(1.0),
            memory_bytes: Some(memory),
        }
    }

    fn memory(rows: &[ServiceRow], service: DashboardService, replica: u16) -> Option<u64> {
        rows.iter()
            .find(|row| row.service == service && row.replica == replica)
            .and_then(|row| row.memory_bytes)
    }

    fn rows(statuses: Vec<ServiceStatus>, usage: Vec<Usage>) -> Vec<ServiceRow> {
        let usage = usage_by_replica(&statuses, usage);
        statuses
            .into_iter()
            .filter_map(|status| {
                let usage = usage.get(&(status.service, status.replica)).copied();
                row(status, usage)
            })
            .collect()
    }

    #[test]
    fn each_replica_gets_its_own_usage_in_order() {
        let statuses = vec![
            running(Service::Redis, 1, 10),
            running(Service::Cache, 1, 11),
            running(Service::Cache, 2, 12),
            running(Service::Proxy, 1, 13),
        ];
        let usage = vec![
            usage(Service::Redis, 100),
            usage(Service::Cache, 201),
            usage(Service::Cache, 202),
            usage(Service::Proxy, 300),
        ];
        let rows = rows(statuses, usage);
        assert_eq!(rows.len(), 4, "the proxy has a row too: {rows:?}");
        assert_eq!(memory(&rows, DashboardService::Redis, 1), Some(100));
        assert_eq!(memory(&rows, DashboardService::Cache, 1), Some(201));
        assert_eq!(memory(&rows, DashboardService::Cache, 2), Some(202));
        assert_eq!(memory(&rows, DashboardService::Proxy, 1), Some(300));
    }

    #[test]
    fn usage_that_does_not_match_the_replicas_is_left_unknown_not_misplaced() {
        // A third cache replica started between the status and the usage calls.
        let statuses = vec![
            running(Service::Cache, 1, 11),
            running(Service::Cache, 2, 12),
        ];
        let usage = vec![
            usage(Service::Cache, 201),
            usage(Service::Cache, 202),
            usage(Service::Cache, 203),
        ];
        let rows = rows(statuses, usage);
        assert_eq!(memory(&rows, DashboardService::Cache, 1), None);
        assert_eq!(memory(&rows, DashboardService::Cache, 2), None);
    }
}
