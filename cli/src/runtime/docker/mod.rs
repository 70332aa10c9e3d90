//! The docker runtime: the stack as containers on one private network, driven through the
//! Docker Engine API (bollard), with every object labelled `io.userctl.project=<project>` so
//! `up`, `down` and `status` touch only their own.
//!
//! Replicas are containers of their own (`{project}-cache`, `{project}-cache-2`, …, labelled
//! `io.userctl.replica`), all on the network under their service's name, so Docker's DNS
//! answers every replica's address and the services balance over them. With two or more
//! gateways a `{project}-proxy` container (HAProxy) holds the published gateway and HTTP ports.
//!
//! - this file: [`DockerRuntime`], the runtime's operations, and the order `up` does things in.
//! - [`engine`]: connecting, and bollard's errors translated once into [`RuntimeError`]s.
//! - [`state`]: what the engine says about a container, as the stack's `State` and `Health`.
//! - [`spec`]: what each container should be, as data, and the hash that says it changed.
//! - [`image`]: the services image built from the local `usersvc` binary; pulling the others.
//! - [`converge`]: creating, starting or leaving alone the network, volumes and containers.
//! - [`health`]: waiting for health checks to pass, and for the front to answer.
//! - [`logs`]: printing logs, and quoting a failed container's last lines.
//! - [`lines`]: `up`'s progress, a line per replica.
//! - [`scale`]: the replicas beyond the counts, and what a half-done `up` changed.

pub(super) mod converge;
pub(super) mod engine;
pub(super) mod health;
pub(super) mod image;
mod lines;
pub(super) mod logs;
mod scale;
pub(super) mod spec;
pub(super) mod state;

/// What a cluster's manifests share with the containers: the services image's name and user,
/// and where the services read their keys.
pub use self::{
    image::{USERSVC_REPOSITORY, usersvc_reference},
    spec::{SECRETS_DIR, SERVICE_UID, SIGNING_KEYS_FILE},
};

use std::{collections::HashSet, time::Duration};

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
    lines::{Lines, ReplicaLine},
    scale::{Changes, extras},
    spec::{ContainerSpec, DataVolume, Images, Names, REPLICA_LABEL, SERVICE_LABEL, StackInputs},
};
use super::{
    Endpoints, RuntimeError, StackSpec, Usage,
    progress::{Progress, ServiceProgress},
};
use crate::home::{ProjectHome, TlsFiles};
use crate::stack::{LogLine, Service, ServiceStatus, StoreKind};

/// How often the services look their next hop up again (`usersvc::client::RESOLVE_INTERVAL`,
/// in services/src/client.rs); HAProxy asks Docker's DNS as often.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// After a restarted replica is healthy, how long a rolling restart waits before it stops the
/// next one: two lookups, so every client has found the new replica (and HAProxy has checked
/// it) before the one that took its traffic goes away.
const SETTLE: Duration = Duration::from_secs(2 * RESOLVE_INTERVAL.as_secs());
/// How long one restarted replica may take to be healthy again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

pub struct DockerRuntime {
    /// The engine, at the API version it speaks.
    docker: Docker,
    /// Names and labels of this project's objects.
    names: Names,
    /// The last CPU/memory sample and when it was taken.
    usage: state::UsageCache,
}

/// One of the project's containers, as the engine lists it.
#[derive(Debug, Clone)]
struct Found {
    /// None for a labelled container whose service label is not one we know.
    service: Option<Service>,
    replica: u16,
    name: String,
}

impl Found {
    /// `cache.2`, as logs and progress name a replica.
    fn label(&self) -> String {
        match self.service {
            Some(service) => replica_label(service, self.replica),
            None => self.name.clone(),
        }
    }
}

/// Where `service` comes in [`Service::ALL`], for sorting.
fn service_order(service: Service) -> usize {
    Service::ALL
        .iter()
        .position(|known| *known == service)
        .unwrap_or(Service::ALL.len())
}

fn replica_label(service: Service, replica: u16) -> String {
    format!("{}.{replica}", service.name())
}

impl DockerRuntime {
    /// Connects to the local engine; EngineUnreachable when none answers.
    pub async fn connect(project: &str) -> Result<Self, RuntimeError> {
        Ok(Self {
            docker: engine::connect().await?,
            names: Names::new(project),
            usage: state::UsageCache::default(),
        })
    }

    /// Brings the stack up and waits until every replica is healthy and the front answers.
    /// Idempotent: what already runs as specified is left alone, what stopped is started, what
    /// changed is recreated. On a running stack this is how counts change (`scale`): missing
    /// replicas are added and must be healthy before extra ones are removed, highest first,
    /// each drained; the others keep their containers.
    pub async fn up(
        &self,
        spec: &StackSpec,
        progress: &Progress,
    ) -> Result<Endpoints, RuntimeError> {
        let lines = Lines::new(progress, spec.replicas);
        let secrets = spec.home.ensure_secrets()?;
        let signing_keys = signing_keys(&spec.home).await?;
        let tls = tls_files(&spec.home)?;

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
            replicas: spec.replicas,
            secrets: &secrets,
            images: &images,
            signing_keys: &signing_keys,
            tls: &tls,
            cors_origins: &spec.cors_origins,
            token_ttl: spec.token_ttl,
        };
        let specs = spec::stack(&inputs);
        let existing = self.containers().await?;
        let mut changes = Changes::new(&existing);
        let result = self
            .converge_stack(spec, &specs, &existing, &lines, &mut changes)
            .await;
        match result {
            Ok(endpoints) => Ok(endpoints),
            Err(err) if changes.running_before && !changes.is_empty() => Err(RuntimeError::other(
                format!("up stopped half-way ({changes}; every other container is as it was)"),
                err,
            )),
            Err(err) => Err(err),
        }
    }

    /// The containers in order: a proxy no longer wanted leaves first (its ports go back to
    /// the gateway), then databases, services and proxy are converged; once all are healthy
    /// and the front answers, the replicas beyond the counts are drained and removed.
    async fn converge_stack(
        &self,
        spec: &StackSpec,
        specs: &[ContainerSpec],
        existing: &[Found],
        lines: &Lines,
        changes: &mut Changes,
    ) -> Result<Endpoints, RuntimeError> {
        if spec.replicas.of(Service::Proxy) == 0 {
            for proxy in existing
                .iter()
                .filter(|found| found.service == Some(Service::Proxy))
            {
                self.stop(&proxy.name).await?;
                converge::remove(&self.docker, &proxy.name).await?;
                changes.removed.push(proxy.label());
            }
        }
        // Databases first so service names resolve by the time the services look them up; no
        // need to wait for their health: the store retries its database for 30 s and the
        // cache and gateway connect lazily. The proxy last, once the gateway it replaces has
        // given the published ports back. Within a group, containers start concurrently.
        let group = |wanted: fn(Service) -> bool| -> Vec<&ContainerSpec> {
            specs.iter().filter(|spec| wanted(spec.service)).collect()
        };
        let groups = [
            group(|service| !service.is_usersvc() && service != Service::Proxy),
            group(Service::is_usersvc),
            group(|service| service == Service::Proxy),
        ];
        let mut started = Vec::new();
        let mut converged = Vec::new();
        for group in groups {
            let outcomes = self.converge_all(&group, lines).await;
            for (container, outcome) in group.iter().zip(&outcomes) {
                if matches!(outcome, Ok(Converged::Started)) {
                    changes.started(container);
                }
            }
            converged.extend(first_error(outcomes)?);
            started.extend(group);
        }

        let deadline = Instant::now() + spec.wait_timeout;
        let waits = started.iter().zip(&converged).map(|(container, outcome)| {
            self.wait_healthy(container, *outcome, deadline, spec.wait_timeout, lines)
        });
        let healthy = future::join_all(waits).await;
        if healthy.iter().any(Result::is_err) {
            self.remove_failed_additions(&started, &healthy, changes)
                .await;
        }
        let healthy = first_error(healthy)?;
        let endpoints = endpoints(&started, &healthy)?;
        if spec.replicas.of(Service::Proxy) > 0 {
            health::wait_front(&endpoints.gateway, deadline, spec.wait_timeout).await?;
        }

        // A new key set reaches the gateways that kept their containers.
        future::try_join_all(
            specs
                .iter()
                .filter(|spec| spec.service == Service::Gateway)
                .map(|spec| converge::refresh_live_files(&self.docker, spec)),
        )
        .await?;

        for extra in extras(existing, spec.replicas) {
            lines.note_on(&extra, "draining and removing");
            self.stop(&extra.name).await?;
            converge::remove(&self.docker, &extra.name).await?;
            changes.removed.push(extra.label());
        }
        Ok(endpoints)
    }

    /// Replicas this `up` added that did not become healthy are removed again, so a scale that
    /// fails leaves the stack as it was serving.
    async fn remove_failed_additions(
        &self,
        started: &[&ContainerSpec],
        healthy: &[Result<ContainerInspectResponse, RuntimeError>],
        changes: &mut Changes,
    ) {
        for (container, outcome) in started.iter().zip(healthy) {
            let label = replica_label(container.service, container.replica);
            if outcome.is_err()
                && changes.running_before
                && changes.added.contains(&label)
                && converge::remove(&self.docker, &container.name)
                    .await
                    .is_ok()
            {
                changes.removed.push(format!("{label} again (not healthy)"));
            }
        }
    }

    /// A rolling restart of `service`'s replicas (see [`crate::runtime::Runtime::restart`]): one
    /// container at a time is stopped (drained, within the stop timeout), started again, and
    /// waited for until healthy; then [`SETTLE`] passes before the next one stops.
    pub async fn restart(&self, service: Service, progress: &Progress) -> Result<(), RuntimeError> {
        let mut replicas: Vec<Found> = self
            .containers()
            .await?
            .into_iter()
            .filter(|found| found.service == Some(service))
            .collect();
        if replicas.is_empty() {
            return Err(RuntimeError::NotUp {
                project: self.names.project().to_owned(),
                what: service.name().to_owned(),
            });
        }
        replicas.sort_by_key(|found| found.replica);
        let line = progress.service(service);
        for (index, found) in replicas.iter().enumerate() {
            let label = found.label();
            line.phase(&format!("{label}: draining"));
            self.stop(&found.name).await?;
            line.phase(&format!("{label}: starting"));
            self.docker
                .start_container(&found.name, None)
                .await
                .map_err(|err| engine(format!("starting container {}", found.name), err))?;
            line.phase(&format!("{label}: waiting for health"));
            let deadline = Instant::now() + RESTART_TIMEOUT;
            health::wait_healthy(
                &self.docker,
                service,
                &found.name,
                deadline,
                RESTART_TIMEOUT,
            )
            .await
            .inspect_err(|err| line.fail(&format!("{label}: {err}")))?;
            if index + 1 < replicas.len() {
                line.phase(&format!("{label}: healthy; letting clients find it"));
                tokio::time::sleep(SETTLE).await;
            }
        }
        line.done(&format!(
            "restarted {} replica{}",
            replicas.len(),
            if replicas.len() == 1 { "" } else { "s" }
        ));
        Ok(())
    }

    /// Stops and removes the project's containers (every replica and the proxy, found by
    /// label) and network; its volumes only with `volumes`. Returns the volumes it removed.
    /// Volumes are found by label, so this works as well on a stack that is already stopped or
    /// was never recorded.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, RuntimeError> {
        let containers = self.containers().await?;
        // The proxy and services first, so they drain in-flight requests while their
        // databases still answer.
        let (services, databases): (Vec<_>, Vec<_>) = containers.iter().partition(|found| {
            found
                .service
                .is_some_and(|service| service.is_usersvc() || service == Service::Proxy)
        });
        for group in [services, databases] {
            first_error(
                future::join_all(group.into_iter().map(|found| self.stop(&found.name))).await,
            )?;
        }
        let removals = containers
            .iter()
            .map(|found| converge::remove(&self.docker, &found.name));
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

    /// One row per container, ordered by service then replica; "absent" for a service with no
    /// container, except the proxy, which has a row only when it runs.
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let containers = self.containers().await?;
        let inspected = containers.iter().filter_map(|found| {
            let service = found.service?;
            Some(self.replica_status(service, found))
        });
        let mut replicas: Vec<ServiceStatus> = first_error(future::join_all(inspected).await)?
            .into_iter()
            .flatten()
            .collect();
        replicas.sort_by_key(|row| (service_order(row.service), row.replica));
        Ok(Service::ALL
            .into_iter()
            .flat_map(|service| {
                let rows: Vec<ServiceStatus> = replicas
                    .iter()
                    .filter(|row| row.service == service)
                    .cloned()
                    .collect();
                if rows.is_empty() && service != Service::Proxy {
                    vec![ServiceStatus::absent(service)]
                } else {
                    rows
                }
            })
            .collect())
    }

    /// None when the container was removed between listing and inspecting.
    async fn replica_status(
        &self,
        service: Service,
        found: &Found,
    ) -> Result<Option<ServiceStatus>, RuntimeError> {
        Ok(converge::inspect(&self.docker, &found.name)
            .await?
            .map(|container| state::status_of(service, found.replica, &container)))
    }

    /// Hands the logs to `sink` line by line: without `follow` one container after the other
    /// (services in order, then replicas), with it as they come. Lines carry their replica
    /// when the service has more than one.
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
        sink: &mut (dyn FnMut(LogLine) -> std::io::Result<()> + Send),
    ) -> Result<(), RuntimeError> {
        let containers: Vec<(Service, u16, String)> = self
            .containers()
            .await?
            .into_iter()
            .filter_map(|found| Some((found.service?, found.replica, found.name)))
            .filter(|(owner, _, _)| service.is_none_or(|wanted| *owner == wanted))
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
        let several: HashSet<Service> = containers
            .iter()
            .filter(|(_, replica, _)| *replica > 1)
            .map(|(owner, _, _)| *owner)
            .collect();
        let mut ordered: Vec<logs::Source> = containers
            .into_iter()
            .map(|(owner, replica, name)| logs::Source {
                service: owner,
                replica: several.contains(&owner).then_some(replica),
                container: name,
            })
            .collect();
        ordered.sort_by_key(|source| {
            (
                Service::ALL
                    .iter()
                    .position(|service| *service == source.service),
                source.replica,
            )
        });
        logs::stream(&self.docker, &ordered, follow, tail, sink).await
    }

    /// The last `tail` log lines of one service's first replica (none when it has no
    /// container).
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        logs::last_lines(&self.docker, &self.names.container(service), tail).await
    }

    /// CPU and memory of each running container, one entry per replica, sampled at most every
    /// five seconds (the engine takes about a second per sample); empty when the engine
    /// cannot say.
    pub async fn usage(&self) -> Vec<Usage> {
        self.usage
            .get_or_sample(async { self.sample_usage().await.unwrap_or_default() })
            .await
    }

    async fn sample_usage(&self) -> Result<Vec<Usage>, RuntimeError> {
        let mut containers: Vec<(Service, u16, String)> = self
            .containers()
            .await?
            .into_iter()
            .filter_map(|found| Some((found.service?, found.replica, found.name)))
            .collect();
        containers.sort_by_key(|(service, replica, _)| (service_order(*service), *replica));
        let samples = containers.into_iter().map(|(service, _, name)| async move {
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
        Ok(first_error(future::join_all(samples).await)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The project's containers, running or not, with the service and replica each runs.
    async fn containers(&self) -> Result<Vec<Found>, RuntimeError> {
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
                let labels = container.labels.as_ref();
                let label = |key: &str| labels.and_then(|labels| labels.get(key));
                let service = label(SERVICE_LABEL).and_then(|name| Service::parse(name));
                let replica = label(REPLICA_LABEL)
                    .and_then(|replica| replica.parse().ok())
                    .unwrap_or(1);
                let name = container.names?.first()?.trim_start_matches('/').to_owned();
                Some(Found {
                    service,
                    replica,
                    name,
                })
            })
            .collect())
    }

    /// The images; pulls and the build run concurrently.
    async fn images(&self, spec: &StackSpec, lines: &Lines) -> Result<Images, RuntimeError> {
        let image_lines = image::ImageLines {
            usersvc: [
                lines.get(Service::Store),
                lines.get(Service::Cache),
                lines.get(Service::Gateway),
            ],
            redis: lines.get(Service::Redis),
            postgres: (spec.store == StoreKind::Postgres).then(|| lines.get(Service::Postgres)),
            // HAProxy only in front of two or more gateways.
            proxy: (spec.replicas.of(Service::Proxy) > 0).then(|| lines.get(Service::Proxy)),
        };
        image::resolve(&self.docker, spec, &image_lines).await
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
    ) -> Vec<Result<Converged, RuntimeError>> {
        let each = specs.iter().map(|spec| async {
            let line = lines.replica(spec.service, spec.replica);
            converge::container(&self.docker, &self.names, spec, line)
                .await
                .inspect_err(|err| line.fail(&err.to_string()))
        });
        future::join_all(each).await
    }

    async fn wait_healthy(
        &self,
        spec: &ContainerSpec,
        converged: Converged,
        deadline: Instant,
        timeout: Duration,
        lines: &Lines,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        let line = lines.replica(spec.service, spec.replica);
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

    /// Stops a container within the drain timeout (its stop signal first, SIGKILL after).
    async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::default()
            .t(converge::STOP_TIMEOUT_SECS)
            .build();
        ignore_missing(self.docker.stop_container(name, Some(options)).await)
            .map_err(|err| engine(format!("stopping container {name}"), err))
    }
}

/// The gateway's signing key, made on the first `up`, uploaded into the containers (docker) or
/// handed over as a swarm secret.
pub(super) async fn signing_keys(home: &ProjectHome) -> Result<Vec<u8>, RuntimeError> {
    let path = home.ensure_signing_keys()?;
    tokio::fs::read(&path)
        .await
        .map_err(|err| RuntimeError::other(format!("reading {}", path.display()), err))
}

/// The stack's CA and certificates, made on the first `up`, handed to the containers as the
/// signing key is.
pub(super) fn tls_files(home: &ProjectHome) -> Result<TlsFiles, RuntimeError> {
    let dir = home.ensure_tls()?;
    home.tls_files()?.ok_or_else(|| {
        RuntimeError::other(
            format!("reading the certificates in {}", dir.display()),
            "a file is missing",
        )
    })
}

/// The published addresses, read back from the engine (a host port of 0 let it choose): the
/// front (the proxy's ports when there is one, else the gateway's) and the first cache and
/// store replicas'.
fn endpoints(
    specs: &[&ContainerSpec],
    containers: &[ContainerInspectResponse],
) -> Result<Endpoints, RuntimeError> {
    let front = if specs.iter().any(|spec| spec.service == Service::Proxy) {
        Service::Proxy
    } else {
        Service::Gateway
    };
    let first = |service: Service| {
        specs
            .iter()
            .zip(containers)
            .find(|(spec, _)| spec.service == service && spec.replica == 1)
    };
    let address = |service: Service| {
        first(service)
            .and_then(|(spec, container)| state::published_address(container, spec.published?))
            .ok_or_else(|| {
                RuntimeError::other(
                    format!("reading the address of {}", service.name()),
                    "no published port",
                )
            })
    };
    let http =
        first(front).and_then(|(spec, container)| state::published_address(container, spec.http?));
    Ok(Endpoints {
        gateway: address(front)?,
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
