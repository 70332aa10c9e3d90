//! The docker runtime: the stack as five containers on one private network, driven through the
//! Docker Engine API (bollard), with every object labelled `io.userctl.project=<project>` so
//! `up`, `down` and `status` touch only their own.
//!
//! - this file: [`DockerRuntime`], the runtime's operations, and the order `up` does things in.
//! - [`engine`]: connecting, and bollard's errors translated once into [`RuntimeError`]s.
//! - [`state`]: what the engine says about a container, as the stack's `State` and `Health`.
//! - [`spec`]: what each container should be, as data, and the hash that says it changed.
//! - [`image`]: the services image built from the local `usersvc` binary; pulling the others.
//! - [`converge`]: creating, starting or leaving alone the network, volumes and containers.
//! - [`health`]: waiting for health checks to pass.
//! - [`logs`]: printing logs, and quoting a failed container's last lines.

mod converge;
mod engine;
mod health;
mod image;
mod logs;
mod spec;
mod state;

use std::{
    sync::Mutex,
    time::{Duration, Instant as StdInstant},
};

use bollard::{
    Docker,
    models::ContainerInspectResponse,
    query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
        StatsOptionsBuilder, StopContainerOptionsBuilder,
    },
};
use futures::{StreamExt as _, future};
use tokio::time::Instant;

use self::{
    converge::Converged,
    engine::{engine, ignore_missing, is_not_found},
    spec::{ContainerSpec, DataVolume, Images, Names, SERVICE_LABEL, StackInputs},
};
use super::{
    Endpoints, RuntimeError, StackSpec, Usage,
    progress::{Progress, ServiceProgress},
};
use crate::home::TlsFiles;
use crate::stack::{
    DEFAULT_POSTGRES_IMAGE, DEFAULT_REDIS_IMAGE, LOCAL_POSTGRES_IMAGE, LOCAL_REDIS_IMAGE, LogLine,
    Service, ServiceStatus, StoreKind,
};

/// The engine takes a second or two per CPU sample, so usage is sampled at most this often.
const USAGE_MAX_AGE: Duration = Duration::from_secs(5);

pub struct DockerRuntime {
    /// The engine, at the API version it speaks.
    docker: Docker,
    /// Names and labels of this project's objects.
    names: Names,
    /// The last CPU/memory sample and when it was taken.
    usage: Mutex<Option<(StdInstant, Vec<Usage>)>>,
}

impl DockerRuntime {
    /// Connects to the local engine; EngineUnreachable when none answers.
    pub async fn connect(project: &str) -> Result<Self, RuntimeError> {
        Ok(Self {
            docker: engine::connect().await?,
            names: Names::new(project),
            usage: Mutex::new(None),
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
        let secrets = spec.home.ensure_secrets()?;
        let jwt_key = self.jwt_key(spec).await?;
        let tls = self.tls_files(spec)?;

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
            tls: &tls,
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

    /// A rolling restart of `service`'s replicas (see [`crate::runtime::Runtime::restart`]).
    pub async fn restart(
        &self,
        service: Service,
        _progress: &Progress,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::other(
            format!("restarting {service}"),
            "not supported on this runtime yet",
        ))
    }

    /// Stops and removes the project's containers and network; its volumes only with `volumes`.
    /// Returns the volumes it removed. Volumes are found by label, so this works as well on a
    /// stack that is already stopped or was never recorded.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, RuntimeError> {
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

        let mut deleted = Vec::new();
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
                match self
                    .docker
                    .remove_volume(
                        &volume.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await
                {
                    Ok(()) => deleted.push(format!("docker volume {}", volume.name)),
                    // Gone meanwhile: not ours to report as deleted.
                    Err(err) if is_not_found(&err) => {}
                    Err(err) => {
                        return Err(engine(format!("removing volume {}", volume.name), err));
                    }
                }
            }
        }
        Ok(deleted)
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
                    return Ok(ServiceStatus::absent(service));
                };
                match converge::inspect(&self.docker, name).await? {
                    Some(container) => Ok(state::status_of(service, &container)),
                    // Removed between listing and inspecting.
                    None => Ok(ServiceStatus::absent(service)),
                }
            }
        });
        future::join_all(rows).await.into_iter().collect()
    }

    /// Hands the logs to `sink` line by line: without `follow` one service after the other,
    /// with it as they come.
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
        sink: &mut (dyn FnMut(LogLine) -> std::io::Result<()> + Send),
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
            return Err(RuntimeError::NotUp {
                project: self.names.project().to_owned(),
                what,
            });
        }
        let mut ordered = containers;
        ordered.sort_by_key(|(owner, _)| Service::ALL.iter().position(|service| service == owner));
        logs::stream(&self.docker, &ordered, follow, tail, sink).await
    }

    /// The last `tail` log lines of one service (none when it has no container).
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        logs::last_lines(&self.docker, &self.names.container(service), tail).await
    }

    /// CPU and memory of each running service, sampled at most every [`USAGE_MAX_AGE`]
    /// (the engine takes about a second per sample); empty when the engine cannot say.
    pub async fn usage(&self) -> Vec<Usage> {
        let cached = lock(&self.usage)
            .as_ref()
            .filter(|(taken, _)| taken.elapsed() < USAGE_MAX_AGE)
            .map(|(_, usage)| usage.clone());
        if let Some(usage) = cached {
            return usage;
        }
        let usage = self.sample_usage().await.unwrap_or_default();
        *lock(&self.usage) = Some((StdInstant::now(), usage.clone()));
        usage
    }

    async fn sample_usage(&self) -> Result<Vec<Usage>, RuntimeError> {
        let containers = self.containers().await?;
        let samples = containers
            .into_iter()
            .filter_map(|(service, name)| service.map(|s| (s, name)))
            .map(|(service, name)| async move {
                let options = StatsOptionsBuilder::default().stream(false).build();
                let sample = self.docker.stats(&name, Some(options)).next().await;
                match sample {
                    Some(Ok(sample)) => Ok(Some(state::usage_of(service, &sample))),
                    // Not running: nothing to measure.
                    None => Ok(None),
                    Some(Err(err)) if is_not_found(&err) => Ok(None),
                    Some(Err(err)) => Err(engine(format!("reading stats of {name}"), err)),
                }
            });
        let mut usage: Vec<Usage> = first_error(future::join_all(samples).await)?
            .into_iter()
            .flatten()
            .collect();
        usage.sort_by_key(|usage| {
            Service::ALL
                .iter()
                .position(|service| *service == usage.service)
        });
        Ok(usage)
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
        let path = spec.home.ensure_jwt_key()?;
        tokio::fs::read(&path)
            .await
            .map_err(|err| RuntimeError::other(format!("reading {}", path.display()), err))
    }

    /// The stack's CA and certificates, made on the first `up`, uploaded into the containers.
    fn tls_files(&self, spec: &StackSpec) -> Result<TlsFiles, RuntimeError> {
        let dir = spec.home.ensure_tls()?;
        spec.home.tls_files()?.ok_or_else(|| {
            RuntimeError::other(
                format!("reading the certificates in {}", dir.display()),
                "a file is missing",
            )
        })
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
                    .external_image(
                        spec.postgres_image.as_deref(),
                        (DEFAULT_POSTGRES_IMAGE, LOCAL_POSTGRES_IMAGE),
                        lines.get(Service::Postgres),
                    )
                    .await
                    .map(Some),
                StoreKind::Sqlite => Ok(None),
            }
        };
        let redis = self.external_image(
            spec.redis_image.as_deref(),
            (DEFAULT_REDIS_IMAGE, LOCAL_REDIS_IMAGE),
            lines.get(Service::Redis),
        );
        let (usersvc, redis, postgres) = futures::try_join!(usersvc, redis, postgres)?;
        Ok(Images {
            usersvc,
            redis,
            postgres,
        })
    }

    /// The image asked for, as given; with none, the pinned official one, else the locally
    /// built stand-in (saying so on the service's progress line).
    async fn external_image(
        &self,
        asked: Option<&str>,
        (official, local): (&str, &str),
        line: &ServiceProgress,
    ) -> Result<spec::ResolvedImage, RuntimeError> {
        let resolved = match asked {
            Some(image) => image::external(&self.docker, image, line).await,
            None => image::official_or_local(&self.docker, official, local, line).await,
        };
        resolved.inspect_err(|err| line.fail(&err.to_string()))
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
struct Lines([ServiceProgress; 6]);

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
            Service::Proxy => 5,
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
            .and_then(|(spec, container)| state::published_address(container, spec.published?))
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
        .and_then(|(spec, container)| state::published_address(container, spec.http?));
    Ok(Endpoints {
        gateway: address(Service::Gateway)?,
        cache: address(Service::Cache)?,
        store: address(Service::Store)?,
        http,
    })
}

/// All results, or the first error in service order (usually the cause: a database before the
/// services that need it).
fn first_error<T>(results: Vec<Result<T, RuntimeError>>) -> Result<Vec<T>, RuntimeError> {
    results.into_iter().collect()
}

/// A poisoned lock only means another poll panicked; the sample is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
