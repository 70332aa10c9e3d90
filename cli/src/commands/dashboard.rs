//! `dashboard`: the live terminal view. The TUI is the `userctl-dashboard` crate; this wires
//! it to the stack `up` recorded: its gRPC addresses, and the runtime it lives on as a
//! [`RuntimeSource`] (state, health, CPU and memory, recent logs).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use userctl_dashboard::{
    Config, DashboardError, Endpoints, RuntimeSource, Service as DashboardService, ServiceRow,
    SourceError,
};

use crate::{
    args::DashboardArgs,
    error::{CliError, Result, chain},
    home::{ProjectHome, RuntimeKind},
    runtime::{
        Runtime, Service, ServiceStatus,
        docker::{ContainerStats, DockerRuntime},
        local::LocalRuntime,
    },
};

/// `WatchStats` accepts intervals in this range.
const REFRESH_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);
/// The engine takes a second or two per CPU sample, so container usage is refreshed less
/// often than state.
const DOCKER_USAGE_MAX_AGE: Duration = Duration::from_secs(5);
/// `/proc/PID/stat` counts CPU time in USER_HZ, which Linux fixes at 100 for user space.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

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
    /// Connected on first use, and again after a failed connect: the engine may not be up
    /// when the dashboard starts.
    runtime: tokio::sync::Mutex<Option<Arc<Runtime>>>,
    /// The last container CPU/memory sample and when it was taken.
    docker_usage: Mutex<Option<(Instant, Vec<ContainerStats>)>>,
    /// CPU time of each local process at the previous poll, for a CPU percentage.
    local_cpu: Mutex<HashMap<u32, (u64, Instant)>>,
}

/// CPU (percent of one core) and resident memory of one service, where known.
type Usage = HashMap<Service, (Option<f64>, Option<u64>)>;

impl StackSource {
    fn new(home: ProjectHome, kind: RuntimeKind) -> Self {
        Self {
            home,
            kind,
            runtime: tokio::sync::Mutex::new(None),
            docker_usage: Mutex::new(None),
            local_cpu: Mutex::new(HashMap::new()),
        }
    }

    async fn runtime(&self) -> Result<Arc<Runtime>, SourceError> {
        let mut slot = self.runtime.lock().await;
        if let Some(runtime) = slot.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Arc::new(match self.kind {
            RuntimeKind::Docker => Runtime::Docker(DockerRuntime::connect(&self.home.name).await?),
            RuntimeKind::Local => Runtime::Local(LocalRuntime::new(self.home.clone())),
        });
        *slot = Some(runtime.clone());
        Ok(runtime)
    }

    async fn rows(&self) -> Result<Vec<ServiceRow>, SourceError> {
        let runtime = self.runtime().await?;
        let (statuses, usage) = match &*runtime {
            Runtime::Docker(docker) => {
                let (statuses, usage) = tokio::join!(docker.status(), self.docker_usage(docker));
                (statuses?, usage)
            }
            Runtime::Local(local) => {
                let statuses = local.status().await?;
                (statuses, self.local_usage(local))
            }
        };
        Ok(statuses
            .into_iter()
            .map(|status| row(status, &usage))
            .collect())
    }

    /// Container usage, sampled at most every [`DOCKER_USAGE_MAX_AGE`]; unknown ("-") when
    /// the engine cannot say.
    async fn docker_usage(&self, docker: &DockerRuntime) -> Usage {
        let cached = lock(&self.docker_usage)
            .as_ref()
            .filter(|(taken, _)| taken.elapsed() < DOCKER_USAGE_MAX_AGE)
            .map(|(_, stats)| stats.clone());
        let stats = match cached {
            Some(stats) => stats,
            None => {
                let stats = docker.stats().await.unwrap_or_default();
                *lock(&self.docker_usage) = Some((Instant::now(), stats.clone()));
                stats
            }
        };
        stats
            .into_iter()
            .map(|s| (s.service, (Some(s.cpu_percent), Some(s.memory_bytes))))
            .collect()
    }

    /// Usage of the local processes from `/proc`; CPU needs two polls, so it is unknown at
    /// first.
    fn local_usage(&self, local: &LocalRuntime) -> Usage {
        let now = Instant::now();
        let mut previous = lock(&self.local_cpu);
        let mut seen = HashMap::new();
        let mut usage = Usage::new();
        for (service, pid) in local.pids() {
            let ticks = cpu_ticks(pid);
            let cpu = match (ticks, previous.get(&pid)) {
                (Some(ticks), Some((before, then))) => {
                    let secs = now.duration_since(*then).as_secs_f64();
                    let busy = ticks.saturating_sub(*before) as f64 / CLOCK_TICKS_PER_SEC;
                    (secs > 0.0).then(|| busy / secs * 100.0)
                }
                _ => None,
            };
            if let Some(ticks) = ticks {
                seen.insert(pid, (ticks, now));
            }
            usage.insert(service, (cpu, resident_bytes(pid)));
        }
        // Forget processes that are gone, so a recycled pid starts afresh.
        *previous = seen;
        usage
    }

    async fn logs(&self, service: Service, tail: usize) -> Result<Vec<String>, SourceError> {
        match &*self.runtime().await? {
            Runtime::Docker(docker) => Ok(docker.recent_logs(service, tail).await),
            Runtime::Local(_) => {
                // Reads a whole log file: off the async threads.
                let local = LocalRuntime::new(self.home.clone());
                Ok(tokio::task::spawn_blocking(move || local.recent_logs(service, tail)).await?)
            }
        }
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

fn row(status: ServiceStatus, usage: &Usage) -> ServiceRow {
    // The engine reports zeros for a stopped container; unknown is the honest figure.
    let (cpu_percent, memory_bytes) = usage
        .get(&status.service)
        .filter(|_| status.state == "running")
        .copied()
        .unwrap_or_default();
    ServiceRow {
        service: to_dashboard(status.service),
        state: status.state,
        health: status.health,
        address: status.address,
        restarts: status.restarts,
        uptime: status.uptime_secs.map(Duration::from_secs),
        cpu_percent,
        memory_bytes,
    }
}

fn to_dashboard(service: Service) -> DashboardService {
    match service {
        Service::Gateway => DashboardService::Gateway,
        Service::Cache => DashboardService::Cache,
        Service::Store => DashboardService::Store,
        Service::Redis => DashboardService::Redis,
        Service::Postgres => DashboardService::Postgres,
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

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3 of the whole line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A poisoned lock only means another poll panicked; the data is still a usable sample.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_reads_this_process() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(resident_bytes(std::process::id()).is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn every_service_maps_both_ways() {
        for service in Service::ALL {
            assert_eq!(from_dashboard(to_dashboard(service)), service);
        }
    }
}
