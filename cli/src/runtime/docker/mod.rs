//! The docker runtime: the stack as five containers on one private network, driven through the
//! Docker Engine API (bollard), with every object labelled `io.userctl.project=<project>` so
//! `up`, `down` and `status` touch only their own.
//!
//! - this file: [`DockerRuntime`], the runtime's operations, and the order `up` does things in.
//! - [`spec`]: what each container should be, as data, and the hash that says it changed.
//! - [`image`]: the services image built from the local `usersvc` binary; pulling the others.
//! - [`converge`]: creating, starting or leaving alone the network, volumes and containers.
//! - [`health`]: waiting for health checks to pass.
//! - [`logs`]: printing logs, and quoting a failed container's last lines.

mod converge;
mod health;
mod image;
mod logs;
mod spec;

use std::{io, time::Duration};

use bollard::{
    Docker,
    errors::Error as EngineError,
    models::{ContainerInspectResponse, ContainerStatsResponse},
    query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
        StatsOptionsBuilder, StopContainerOptionsBuilder,
    },
};
use futures::{StreamExt as _, future};
use serde::Serialize;
use tokio::time::Instant;

use self::{
    converge::Converged,
    spec::{ContainerSpec, DataVolume, Images, Names, Published, SERVICE_LABEL, StackInputs},
};
use super::{
    Endpoints, RuntimeError, Service, ServiceStatus, StackSpec, progress::Progress,
    progress::ServiceProgress,
};
use crate::args::StoreKind;

/// How long `connect` waits for an engine to answer: `up --runtime auto` falls back to the
/// local runtime when none does, and should not hang first.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request once connected (bollard's default): importing the services image or pulling
/// can take a while before the engine answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DockerRuntime {
    /// The engine, at the API version it speaks.
    docker: Docker,
    /// Names and labels of this project's objects.
    names: Names,
}

/// CPU and memory of one service's container, as `docker stats` reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerStats {
    pub service: Service,
    /// Percent of one CPU: 100 is one core busy.
    pub cpu_percent: f64,
    /// Memory in use, not counting reclaimable page cache.
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST`, else the default socket) and settles on
    /// the API version it speaks. EngineUnreachable when no engine answers or the socket is
    /// not ours to use.
    pub async fn connect(project: &str) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(unreachable)?
            .with_timeout(CONNECT_TIMEOUT);
        let mut docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.set_timeout(REQUEST_TIMEOUT);
        Ok(Self {
            docker,
            names: Names::new(project),
        })
    }

    /// Brings the stack up and waits until every service is healthy. Idempotent: what already
    /// runs as specified is left alone, what stopped is started, what changed is recreated.
    pub async fn up(
        &self,
        spec: &StackSpec,
        progress: &Progress,
    ) -> Result<Endpoints, RuntimeError> {
        let lines = Lines::new(progress);
        let secrets = spec
            .home
            .ensure_secrets()
            .map_err(|err| RuntimeError::other("generating passwords", err))?;
        let jwt_key = self.jwt_key(spec).await?;

        // Images first: when one is missing, `up` stops before it has made anything.
        let images = self.images(spec, &lines).await?;
        futures::try_join!(
            converge::network(&self.docker, &self.names),
            self.volumes(spec.store)
        )?;
        if spec.store == StoreKind::Sqlite {
            self.retire_postgres(lines.get(Service::Postgres)).await?;
        }

        let inputs = StackInputs {
            names: &self.names,
            store: spec.store,
            ports: spec.ports,
            secrets: &secrets,
            images: &images,
            jwt_key: &jwt_key,
            cors_origins: &spec.cors_origins,
        };
        let specs = spec::stack(&inputs);
        // Databases first so service names resolve by the time the services look them up; no
        // need to wait for their health: the store retries its database for 30 s and the
        // cache and gateway connect lazily. Within a group, containers start concurrently.
        let (databases, services): (Vec<&ContainerSpec>, Vec<&ContainerSpec>) =
            specs.iter().partition(|spec| !spec.service.is_usersvc());
        let mut converged = self.converge_all(&databases, &lines).await?;
        converged.extend(self.converge_all(&services, &lines).await?);
        let started: Vec<&ContainerSpec> = databases.into_iter().chain(services).collect();

        let deadline = Instant::now() + spec.wait_timeout;
        let waits = started.iter().zip(&converged).map(|(container, outcome)| {
            self.wait_healthy(
                container,
                *outcome,
                deadline,
                spec.wait_timeout,
                lines.get(container.service),
            )
        });
        let healthy = first_error(future::join_all(waits).await)?;
        endpoints(&started, &healthy)
    }

    /// Stops and removes the project's containers and network; its volumes only with `volumes`.
    pub async fn down(&self, volumes: bool) -> Result<(), RuntimeError> {
        let containers = self.containers().await?;
        // The services first, so they drain in-flight requests while their databases still answer.
        let (services, databases): (Vec<_>, Vec<_>) = containers
            .iter()
            .partition(|(service, _)| service.is_some_and(Service::is_usersvc));
        for group in [services, databases] {
            first_error(
                future::join_all(group.into_iter().map(|(_, name)| self.stop(name))).await,
            )?;
        }
        let removals = containers
            .iter()
            .map(|(_, name)| converge::remove(&self.docker, name));
        first_error(future::join_all(removals).await)?;

        let filters = self.names.label_filter();
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|err| engine("listing networks", err))?;
        for network in networks.into_iter().filter_map(|network| network.name) {
            ignore_missing(self.docker.remove_network(&network).await)
                .map_err(|err| engine(format!("removing network {network}"), err))?;
        }

        if volumes {
            let listed = self
                .docker
                .list_volumes(Some(
                    ListVolumesOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .map_err(|err| engine("listing volumes", err))?;
            for volume in listed.volumes.unwrap_or_default() {
                ignore_missing(
                    self.docker
                        .remove_volume(
                            &volume.name,
                            None::<bollard::query_parameters::RemoveVolumeOptions>,
                        )
                        .await,
                )
                .map_err(|err| engine(format!("removing volume {}", volume.name), err))?;
            }
        }
        Ok(())
    }

    /// One row per service, "absent" for those with no container.
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let containers = self.containers().await?;
        let rows = Service::ALL.into_iter().map(|service| {
            let name = containers
                .iter()
                .find(|(owner, _)| *owner == Some(service))
                .map(|(_, name)| name.as_str());
            async move {
                let Some(name) = name else {
                    return Ok(absent(service));
                };
                match converge::inspect(&self.docker, name).await? {
                    Some(container) => Ok(status_of(service, &container)),
                    // Removed between listing and inspecting.
                    None => Ok(absent(service)),
                }
            }
        });
        future::join_all(rows).await.into_iter().collect()
    }

    /// Writes logs to stdout: one service as it logged, all of them prefixed `service | `.
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<(), RuntimeError> {
        let containers: Vec<(Service, String)> = self
            .containers()
            .await?
            .into_iter()
            .filter_map(|(owner, name)| owner.map(|owner| (owner, name)))
            .filter(|(owner, _)| service.is_none_or(|wanted| *owner == wanted))
            .collect();
        if containers.is_empty() {
            let what = service.map_or_else(
                || "any service".to_owned(),
                |service| service.name().to_owned(),
            );
            return Err(RuntimeError::other(
                format!(
                    "project {} has no container for {what}",
                    self.names.project()
                ),
                "run `userctl up` first",
            ));
        }
        let mut ordered = containers;
        ordered.sort_by_key(|(owner, _)| Service::ALL.iter().position(|service| service == owner));
        logs::print(&self.docker, &ordered, follow, tail, service.is_none()).await
    }

    /// The last `tail` log lines of one service (none when it has no container).
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        logs::last_lines(&self.docker, &self.names.container(service), tail).await
    }

    /// CPU and memory of each running service, sampled over about a second (the engine needs
    /// two readings for a CPU figure); for the dashboard.
    pub async fn stats(&self) -> Result<Vec<ContainerStats>, RuntimeError> {
        let containers = self.containers().await?;
        let samples = containers
            .into_iter()
            .filter_map(|(service, name)| service.map(|s| (s, name)))
            .map(|(service, name)| async move {
                let options = StatsOptionsBuilder::default().stream(false).build();
                let sample = self.docker.stats(&name, Some(options)).next().await;
                match sample {
                    Some(Ok(sample)) => Ok(Some(stats_of(service, &sample))),
                    // Not running: nothing to measure.
                    None => Ok(None),
                    Some(Err(err)) if is_not_found(&err) => Ok(None),
                    Some(Err(err)) => Err(engine(format!("reading stats of {name}"), err)),
                }
            });
        let mut stats: Vec<ContainerStats> = first_error(future::join_all(samples).await)?
            .into_iter()
            .flatten()
            .collect();
        stats.sort_by_key(|stats| {
            Service::ALL
                .iter()
                .position(|service| *service == stats.service)
        });
        Ok(stats)
    }

    /// The project's containers, running or not, with the service each runs (None for a
    /// labelled container whose service label is not one we know).
    async fn containers(&self) -> Result<Vec<(Option<Service>, String)>, RuntimeError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.names.label_filter())
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|err| engine("listing containers", err))?;
        Ok(listed
            .into_iter()
            .filter_map(|container| {
                let service = container
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(SERVICE_LABEL));
                let service = service.and_then(|name| Service::parse(name));
                let name = container.names?.first()?.trim_start_matches('/').to_owned();
                Some((service, name))
            })
            .collect())
    }

    async fn jwt_key(&self, spec: &StackSpec) -> Result<Vec<u8>, RuntimeError> {
        let path = spec
            .home
            .ensure_jwt_key()
            .map_err(|err| RuntimeError::other("generating the JWT key", err))?;
        tokio::fs::read(&path)
            .await
            .map_err(|err| RuntimeError::other(format!("reading {}", path.display()), err))
    }

    /// The three images; pulls and the build run concurrently.
    async fn images(&self, spec: &StackSpec, lines: &Lines) -> Result<Images, RuntimeError> {
        let usersvc_lines = [
            lines.get(Service::Store),
            lines.get(Service::Cache),
            lines.get(Service::Gateway),
        ];
        let usersvc = async {
            image::usersvc(&self.docker, &spec.usersvc, &usersvc_lines)
                .await
                .inspect_err(|err| {
                    usersvc_lines
                        .iter()
                        .for_each(|line| line.fail(&err.to_string()))
                })
        };
        let postgres = async {
            match spec.store {
                StoreKind::Postgres => self
                    .external_image(&spec.postgres_image, lines.get(Service::Postgres))
                    .await
                    .map(Some),
                StoreKind::Sqlite => Ok(None),
            }
        };
        let redis = self.external_image(&spec.redis_image, lines.get(Service::Redis));
        let (usersvc, redis, postgres) = futures::try_join!(usersvc, redis, postgres)?;
        Ok(Images {
            usersvc,
            redis,
            postgres,
        })
    }

    async fn external_image(
        &self,
        image: &str,
        line: &ServiceProgress,
    ) -> Result<spec::ResolvedImage, RuntimeError> {
        image::external(&self.docker, image, line)
            .await
            .inspect_err(|err| line.fail(&err.to_string()))
    }

    async fn volumes(&self, store: StoreKind) -> Result<(), RuntimeError> {
        let ensure = DataVolume::used_with(store)
            .iter()
            .map(|volume| converge::volume(&self.docker, &self.names, *volume));
        first_error(future::join_all(ensure).await).map(drop)
    }

    /// A SQLite store needs no Postgres: remove one left from an earlier `up` (its data
    /// volume stays until `down --volumes`).
    async fn retire_postgres(&self, line: &ServiceProgress) -> Result<(), RuntimeError> {
        let name = self.names.container(Service::Postgres);
        if let Some(container) = converge::inspect(&self.docker, &name).await?
            && self.names.owns(
                container
                    .config
                    .as_ref()
                    .and_then(|config| config.labels.as_ref()),
            )
        {
            line.phase("removing (the store uses SQLite)");
            converge::remove(&self.docker, &name).await?;
        }
        line.done("not used (the store uses SQLite)");
        Ok(())
    }

    async fn converge_all(
        &self,
        specs: &[&ContainerSpec],
        lines: &Lines,
    ) -> Result<Vec<Converged>, RuntimeError> {
        let each = specs.iter().map(|spec| async {
            let line = lines.get(spec.service);
            converge::container(&self.docker, &self.names, spec, line)
                .await
                .inspect_err(|err| line.fail(&err.to_string()))
        });
        first_error(future::join_all(each).await)
    }

    async fn wait_healthy(
        &self,
        spec: &ContainerSpec,
        converged: Converged,
        deadline: Instant,
        timeout: Duration,
        line: &ServiceProgress,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        line.phase("waiting for health");
        match health::wait_healthy(&self.docker, spec.service, &spec.name, deadline, timeout).await
        {
            Ok(container) => {
                line.done(if converged == Converged::Unchanged {
                    "unchanged"
                } else {
                    "healthy"
                });
                Ok(container)
            }
            Err(err) => {
                let message = match &err {
                    RuntimeError::Exited { .. } => "exited".to_owned(),
                    RuntimeError::Unhealthy { .. } => {
                        format!("not healthy within {}", humantime::format_duration(timeout))
                    }
                    other => other.to_string(),
                };
                line.fail(&message);
                Err(err)
            }
        }
    }

    async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::default()
            .t(converge::STOP_TIMEOUT_SECS)
            .build();
        ignore_missing(self.docker.stop_container(name, Some(options)).await)
            .map_err(|err| engine(format!("stopping container {name}"), err))
    }
}

/// One progress line per service, made up front so they show in start order.
struct Lines([ServiceProgress; 5]);

impl Lines {
    fn new(progress: &Progress) -> Self {
        Self(Service::ALL.map(|service| progress.service(service)))
    }

    fn get(&self, service: Service) -> &ServiceProgress {
        let index = match service {
            Service::Postgres => 0,
            Service::Redis => 1,
            Service::Store => 2,
            Service::Cache => 3,
            Service::Gateway => 4,
        };
        &self.0[index]
    }
}

/// The published addresses, read back from the engine (a host port of 0 let it choose).
fn endpoints(
    specs: &[&ContainerSpec],
    containers: &[ContainerInspectResponse],
) -> Result<Endpoints, RuntimeError> {
    let address = |service: Service| {
        specs
            .iter()
            .zip(containers)
            .find(|(spec, _)| spec.service == service)
            .and_then(|(spec, container)| published_address(container, spec.published?))
            .ok_or_else(|| {
                RuntimeError::other(
                    format!("reading the address of {}", service.name()),
                    "no published port",
                )
            })
    };
    let http = specs
        .iter()
        .zip(containers)
        .find(|(spec, _)| spec.service == Service::Gateway)
        .and_then(|(spec, container)| published_address(container, spec.http?));
    Ok(Endpoints {
        gateway: address(Service::Gateway)?,
        cache: address(Service::Cache)?,
        store: address(Service::Store)?,
        http,
    })
}

fn published_address(container: &ContainerInspectResponse, published: Published) -> Option<String> {
    let ports = container.network_settings.as_ref()?.ports.as_ref()?;
    let bindings = ports.get(&published.key())?.as_ref()?;
    let port = bindings
        .iter()
        .find_map(|binding| binding.host_port.as_deref().filter(|port| !port.is_empty()))?;
    Some(format!("http://127.0.0.1:{port}"))
}

fn absent(service: Service) -> ServiceStatus {
    ServiceStatus {
        service,
        state: "absent".to_owned(),
        health: "none".to_owned(),
        address: None,
        restarts: None,
        uptime_secs: None,
    }
}

fn status_of(service: Service, container: &ContainerInspectResponse) -> ServiceStatus {
    let state = container.state.as_ref();
    let status = state
        .and_then(|state| state.status)
        .map_or_else(|| "unknown".to_owned(), |status| status.to_string());
    let running = status == "running";
    let health = health::health(container)
        .map(|health| health.to_string())
        .filter(|health| !health.is_empty())
        .unwrap_or_else(|| "none".to_owned());
    let published = container_published(container);
    ServiceStatus {
        service,
        state: status,
        health,
        address: published
            .filter(|_| running)
            .and_then(|published| published_address(container, published)),
        restarts: container
            .restart_count
            .and_then(|count| u64::try_from(count).ok()),
        uptime_secs: state
            .and_then(|state| state.started_at.as_deref())
            .filter(|_| running)
            .and_then(uptime_secs),
    }
}

/// The gRPC port a usersvc container publishes, from its own configuration.
fn container_published(container: &ContainerInspectResponse) -> Option<Published> {
    let bindings = container.host_config.as_ref()?.port_bindings.as_ref()?;
    let container_port = bindings
        .keys()
        .filter_map(|key| key.split('/').next()?.parse().ok())
        .find(|port| *port != spec::HTTP_PORT)?;
    Some(Published {
        container_port,
        host_port: 0,
    })
}

/// Seconds since an RFC 3339 start time (the engine's, with nanoseconds).
fn uptime_secs(started_at: &str) -> Option<u64> {
    let started = humantime::parse_rfc3339_weak(started_at).ok()?;
    std::time::SystemTime::now()
        .duration_since(started)
        .ok()
        .map(|uptime| uptime.as_secs())
}

/// CPU as `docker stats` computes it: the container's share of the host's CPU time between the
/// engine's two readings, times the CPUs; memory without the page cache it could drop.
fn stats_of(service: Service, sample: &ContainerStatsResponse) -> ContainerStats {
    let cpu = sample.cpu_stats.as_ref();
    let precpu = sample.precpu_stats.as_ref();
    let total = |stats: Option<&bollard::models::ContainerCpuStats>| {
        stats
            .and_then(|stats| stats.cpu_usage.as_ref())
            .and_then(|usage| usage.total_usage)
            .unwrap_or(0)
    };
    let system = |stats: Option<&bollard::models::ContainerCpuStats>| {
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
    let usage = memory.and_then(|memory| memory.usage).unwrap_or(0);
    let cache = memory
        .and_then(|memory| memory.stats.as_ref())
        .and_then(|stats| {
            stats
                .get("inactive_file")
                .or_else(|| stats.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    ContainerStats {
        service,
        cpu_percent,
        memory_bytes: usage.saturating_sub(cache),
        memory_limit_bytes: memory.and_then(|memory| memory.limit),
    }
}

/// All results, or the first error in service order (usually the cause: a database before the
/// services that need it).
fn first_error<T>(results: Vec<Result<T, RuntimeError>>) -> Result<Vec<T>, RuntimeError> {
    results.into_iter().collect()
}

pub(crate) fn is_not_found(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn ignore_missing(result: Result<(), EngineError>) -> Result<(), EngineError> {
    match result {
        Err(err) if is_not_found(&err) => Ok(()),
        other => other,
    }
}

/// An engine error with what we were doing; the engine's own message without bollard's
/// "Docker responded with status code …" wrapper.
pub(crate) fn engine(context: impl Into<String>, err: EngineError) -> RuntimeError {
    RuntimeError::other(context, engine_message(err))
}

pub(crate) fn engine_message(err: EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        EngineError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Why no engine answered, in a few words.
fn unreachable(err: EngineError) -> RuntimeError {
    let reason = match &err {
        EngineError::SocketNotFoundError(path) => format!("no engine socket at {path}"),
        EngineError::IOError { err } if err.kind() == io::ErrorKind::PermissionDenied => {
            "permission denied on the engine socket".to_owned()
        }
        EngineError::IOError { err } if err.kind() == io::ErrorKind::ConnectionRefused => {
            "the engine socket refused the connection".to_owned()
        }
        EngineError::RequestTimeoutError => {
            format!(
                "no answer within {}",
                humantime::format_duration(CONNECT_TIMEOUT)
            )
        }
        other => other.to_string().replace('\n', " "),
    };
    RuntimeError::EngineUnreachable(reason)
}

#[cfg(test)]
mod tests {
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
    fn a_missing_container_reads_absent() {
        let status = absent(Service::Cache);
        assert_eq!(
            (
                status.state.as_str(),
                status.health.as_str(),
                status.address
            ),
            ("absent", "none", None)
        );
    }

    #[test]
    fn engine_errors_keep_the_engines_words() {
        let err = engine(
            "creating container t-store",
            EngineError::DockerResponseServerError {
                status_code: 409,
                message: "name in use\n".into(),
            },
        );
        assert_eq!(err.to_string(), "creating container t-store: name in use");
    }
}
