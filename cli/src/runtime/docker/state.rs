//! What the engine says about a container, in the stack's words: [`State`], [`Health`], the
//! published address, uptime, and CPU and memory as `docker stats` computes them.

use bollard::models::{
    ContainerCpuStats, ContainerInspectResponse, ContainerStateStatusEnum, ContainerStatsResponse,
    HealthStatusEnum,
};

use super::{health, spec::Published};
use crate::{
    runtime::Usage,
    stack::{self, Health, Service, ServiceStatus, State, loopback_url},
};

pub fn status_of(
    service: Service,
    replica: u16,
    container: &ContainerInspectResponse,
) -> ServiceStatus {
    let engine_state = container.state.as_ref();
    let state = engine_state
        .and_then(|state| state.status)
        .map_or(State::Unknown, state_of);
    let running = state == State::Running;
    let health = health::health(container).map_or(Health::None, health_of);
    ServiceStatus {
        service,
        replica,
        id: container.id.clone(),
        state,
        health,
        address: container_published(container)
            .filter(|_| running)
            .and_then(|published| published_address(container, published)),
        restarts: container
            .restart_count
            .and_then(|count| u64::try_from(count).ok()),
        uptime_secs: engine_state
            .and_then(|state| state.started_at.as_deref())
            .filter(|_| running)
            .and_then(uptime_secs),
        node: None,
    }
}

fn state_of(status: ContainerStateStatusEnum) -> State {
    match status {
        ContainerStateStatusEnum::RUNNING => State::Running,
        ContainerStateStatusEnum::CREATED => State::Created,
        ContainerStateStatusEnum::PAUSED => State::Paused,
        ContainerStateStatusEnum::RESTARTING => State::Restarting,
        ContainerStateStatusEnum::REMOVING => State::Removing,
        ContainerStateStatusEnum::EXITED => State::Exited,
        ContainerStateStatusEnum::DEAD => State::Dead,
        ContainerStateStatusEnum::STOPPING => State::Stopped,
        ContainerStateStatusEnum::EMPTY => State::Unknown,
    }
}

fn health_of(health: HealthStatusEnum) -> Health {
    match health {
        HealthStatusEnum::HEALTHY => Health::Healthy,
        HealthStatusEnum::UNHEALTHY => Health::Unhealthy,
        HealthStatusEnum::STARTING => Health::Starting,
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => Health::None,
    }
}

/// The host address a container port is published on (the engine chose it when asked for 0).
pub fn published_address(
    container: &ContainerInspectResponse,
    published: Published,
) -> Option<String> {
    let ports = container.network_settings.as_ref()?.ports.as_ref()?;
    let bindings = ports.get(&published.key())?.as_ref()?;
    let port = bindings
        .iter()
        .find_map(|binding| binding.host_port.as_deref().filter(|port| !port.is_empty()))?;
    Some(loopback_url(port.parse().ok()?))
}

/// The gRPC port a usersvc container publishes, from its own configuration.
fn container_published(container: &ContainerInspectResponse) -> Option<Published> {
    let bindings = container.host_config.as_ref()?.port_bindings.as_ref()?;
    let container_port = bindings
        .keys()
        .filter_map(|key| key.split('/').next()?.parse().ok())
        .find(|port| *port != stack::HTTP_PORT)?;
    Some(Published {
        container_port,
        host_port: 0,
    })
}

/// Seconds since an RFC 3339 start time (the engine's, with nanoseconds).
pub fn uptime_secs(started_at: &str) -> Option<u64> {
    let started = humantime::parse_rfc3339_weak(started_at).ok()?;
    std::time::SystemTime::now()
        .duration_since(started)
        .ok()
        .map(|uptime| uptime.as_secs())
}

/// CPU as `docker stats` computes it: the container's share of the host's CPU time between the
/// engine's two readings, times the CPUs; memory without the page cache it could drop.
pub fn usage_of(service: Service, sample: &ContainerStatsResponse) -> Usage {
    let cpu = sample.cpu_stats.as_ref();
    let precpu = sample.precpu_stats.as_ref();
    let total = |stats: Option<&ContainerCpuStats>| {
        stats
            .and_then(|stats| stats.cpu_usage.as_ref())
            .and_then(|usage| usage.total_usage)
            .unwrap_or(0)
    };
    let system = |stats: Option<&ContainerCpuStats>| {
        stats.and_then(|stats| stats.system_cpu_usage).unwrap_or(0)
    };
    let cpu_delta = total(cpu).saturating_sub(total(precpu)) as f64;
    let system_delta = system(cpu).saturating_sub(system(precpu)) as f64;
    let cpus = cpu
        .and_then(|cpu| cpu.online_cpus)
        .filter(|cpus| *cpus > 0)
        .unwrap_or(1);
    let cpu_percent = if system_delta > 0.0 {
        cpu_delta / system_delta * f64::from(cpus) * 100.0
    } else {
        0.0
    };

    let memory = sample.memory_stats.as_ref();
    let used = memory.and_then(|memory| memory.usage).unwrap_or(0);
    let cache = memory
        .and_then(|memory| memory.stats.as_ref())
        .and_then(|stats| {
            stats
                .get("inactive_file")
                .or_else(|| stats.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    Usage {
        service,
        cpu_percent: Some(cpu_percent),
        memory_bytes: Some(used.saturating_sub(cache)),
    }
}

/// The last CPU/memory sample of a stack's containers and when it was taken: the engine takes
/// a second or two per sample, so a dashboard polling every second reuses one for a while.
#[derive(Default)]
pub struct UsageCache(std::sync::Mutex<Option<(std::time::Instant, Vec<Usage>)>>);

impl UsageCache {
    /// How long a sample is reused.
    const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

    /// The cached sample while it is fresh, else a new one from `sample`.
    pub async fn get_or_sample<F>(&self, sample: F) -> Vec<Usage>
    where
        F: std::future::Future<Output = Vec<Usage>>,
    {
        let fresh = self
            .lock()
            .as_ref()
            .filter(|(taken, _)| taken.elapsed() < Self::MAX_AGE)
            .map(|(_, usage)| usage.clone());
        if let Some(usage) = fresh {
            return usage;
        }
        let usage = sample.await;
        *self.lock() = Some((std::time::Instant::now(), usage.clone()));
        usage
    }

    /// A poisoned lock only means another poll panicked; the sample is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(std::time::Instant, Vec<Usage>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn uptime_reads_the_engines_timestamps() {
        let an_hour_ago = humantime::format_rfc3339_nanos(
            std::time::SystemTime::now() - Duration::from_secs(3600),
        );
        let uptime = uptime_secs(&an_hour_ago.to_string()).expect("parsed");
        assert!((3599..=3601).contains(&uptime), "{uptime}");
    }

    #[test]
    fn engine_states_and_health_map_to_the_stacks() {
        assert_eq!(state_of(ContainerStateStatusEnum::RUNNING), State::Running);
        assert_eq!(state_of(ContainerStateStatusEnum::EXITED), State::Exited);
        assert_eq!(health_of(HealthStatusEnum::EMPTY), Health::None);
        assert_eq!(health_of(HealthStatusEnum::STARTING), Health::Starting);
    }

    #[test]
    fn a_container_without_state_reads_unknown_and_keeps_its_id() {
        let container = ContainerInspectResponse {
            id: Some("abc123".into()),
            ..Default::default()
        };
        let status = status_of(Service::Cache, 2, &container);
        assert_eq!(status.replica, 2);
        assert_eq!(status.state, State::Unknown);
        assert_eq!(status.id.as_deref(), Some("abc123"));
        assert_eq!(status.address, None);
    }
}
