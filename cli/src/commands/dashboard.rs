//! `dashboard`: the live terminal view. The TUI is the `userctl-dashboard` crate; this wires
//! it to the stack `up` recorded: its gRPC addresses, and the runtime it lives on as a
//! [`RuntimeSource`] (state, health, CPU and memory, recent logs).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use userctl_dashboard::{
    ClientTls, Config, DashboardError, Endpoints, RuntimeSource, Service as DashboardService,
    ServiceRow, SourceError,
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
        let usage: HashMap<Service, Usage> = usage
            .into_iter()
            .map(|usage| (usage.service, usage))
            .collect();
        Ok(statuses?
            .into_iter()
            .filter_map(|status| row(status, &usage))
            .collect())
    }

    async fn logs(&self, service: Service, tail: usize) -> Result<Vec<String>, SourceError> {
        Ok(self.runtime().await?.recent_logs(service, tail).await)
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
    ) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        Box::pin(self.logs(from_dashboard(service), tail))
    }
}

/// The dashboard's row for `status`; none for a service it does not show.
fn row(status: ServiceStatus, usage: &HashMap<Service, Usage>) -> Option<ServiceRow> {
    // The engine reports zeros for a stopped container; unknown is the honest figure.
    let usage = usage
        .get(&status.service)
        .filter(|_| status.state == State::Running);
    Some(ServiceRow {
        service: to_dashboard(status.service)?,
        state: status.state.name().to_owned(),
        health: status.health.name().to_owned(),
        address: status.address,
        restarts: status.restarts,
        uptime: status.uptime_secs.map(Duration::from_secs),
        cpu_percent: usage.and_then(|usage| usage.cpu_percent),
        memory_bytes: usage.and_then(|usage| usage.memory_bytes),
    })
}

/// The dashboard's name for `service`; None for the proxy, which it does not show yet.
fn to_dashboard(service: Service) -> Option<DashboardService> {
    match service {
        Service::Gateway => Some(DashboardService::Gateway),
        Service::Cache => Some(DashboardService::Cache),
        Service::Store => Some(DashboardService::Store),
        Service::Redis => Some(DashboardService::Redis),
        Service::Postgres => Some(DashboardService::Postgres),
        Service::Proxy => None,
    }
}

fn from_dashboard(service: DashboardService) -> Service {
    match service {
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
            if let Some(shown) = to_dashboard(service) {
                assert_eq!(from_dashboard(shown), service);
            }
        }
    }
}
