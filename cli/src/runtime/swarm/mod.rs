//! The swarm runtime: the stack as Docker Swarm services, driven through the Engine API
//! (bollard), for when one machine is not enough. The swarm is the supervisor: it keeps each
//! service at its replica count, replaces a task that dies or whose node is lost, and rolls
//! updates one task at a time, rolling back one that fails its health check.
//!
//! Every object (services, secrets, configs, the overlay network, volumes) carries
//! `io.userctl.project=<project>`, so `up`, `down` and `status` touch only their own, as on
//! the docker runtime.
//!
//! - this file: [`SwarmRuntime`], the runtime's operations, and the order `up` does things in.
//! - [`cluster`]: the engine's place in a swarm; making one and leaving it again.
//! - [`spec`]: what each service should be, as data, and the hash that says it changed.
//! - [`tasks`]: what the swarm says about tasks, as status rows and addresses.
//! - [`logs`]: each task's log, named by its replica.

mod cluster;
mod logs;
mod spec;
mod tasks;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use bollard::{
    Docker,
    models::{ConfigSpec, NetworkCreateRequest, SecretSpec, Task, TaskState},
    query_parameters::{
        ListConfigsOptionsBuilder, ListContainersOptionsBuilder, ListNodesOptions,
        ListSecretsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
        ListVolumesOptionsBuilder, StatsOptionsBuilder, UpdateServiceOptionsBuilder,
    },
};
use futures::{StreamExt as _, future};
use tokio::time::Instant;

use self::{
    spec::{FileKind, ServiceDef, SwarmInputs, network_name, project_filter, service_name},
    tasks::NodeInfo,
};
use super::{
    Endpoints, RuntimeError, StackSpec, Usage,
    docker::{
        self,
        engine::{engine, ignore_missing, is_not_found},
        health, image,
        spec::{HASH_LABEL, Images, Names, SERVICE_LABEL},
        state,
    },
    progress::{Progress, ServiceProgress},
};
use crate::stack::{GATEWAY_PORT, HTTP_PORT, LogLine, Service, ServiceStatus, StoreKind};

/// How often `up`, `restart` and `down` look at the swarm while they wait for it.
const POLL: Duration = Duration::from_millis(250);
/// How long a rolling restart may take per task (start, health, the delay between tasks).
const RESTART_TIMEOUT_PER_TASK: Duration = Duration::from_secs(60);
/// How long `down` waits for a removed service's tasks to stop (they drain first).
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SwarmRuntime {
    docker: Docker,
    names: Names,
    usage: state::UsageCache,
}

/// What `up` did to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converged {
    Unchanged,
    Created,
    Updated,
}

impl SwarmRuntime {
    /// Connects to the local engine; EngineUnreachable when none answers. Whether it is a
    /// swarm manager is asked by the operations that need one.
    pub async fn connect(project: &str) -> Result<Self, RuntimeError> {
        Ok(Self {
            docker: super::docker::engine::connect().await?,
            names: Names::new(project),
            usage: state::UsageCache::default(),
        })
    }

    /// Brings the stack up as swarm services and waits until every service runs its replica
    /// count of healthy tasks and the front answers. Idempotent: a service whose definition
    /// did not change is left alone; one that changed gets a rolling update (which is all
    /// `scale` is: the swarm adds or removes tasks).
    pub async fn up(
        &self,
        spec: &StackSpec,
        progress: &Progress,
    ) -> Result<Endpoints, RuntimeError> {
        if spec.store != StoreKind::Postgres {
            return Err(RuntimeError::SwarmNeedsPostgres);
        }
        cluster::preflight(&self.docker, spec.init_swarm).await?;
        let lines: HashMap<Service, ServiceProgress> = Service::ALL
            .into_iter()
            .filter(|service| spec.replicas.of(*service) > 0)
            .map(|service| (service, progress.service(service)))
            .collect();

        let secrets = spec.home.ensure_secrets()?;
        let signing_keys = docker::signing_keys(&spec.home).await?;
        let tls = docker::tls_files(&spec.home)?;

        let images = self.images(spec, &lines).await?;
        let (manager, initialised) = cluster::ensure_manager(&self.docker, spec.init_swarm).await?;
        if initialised {
            progress.note(
                "this engine is now a single-node swarm (userctl made it; the last `down` leaves it)",
            );
        }
        let inputs = SwarmInputs {
            names: &self.names,
            ports: spec.ports,
            replicas: spec.replicas,
            secrets: &secrets,
            images: &images,
            signing_keys: &signing_keys,
            tls: &tls,
            cors_origins: &spec.cors_origins,
            token_ttl: spec.token_ttl,
            home_node: &manager.node_id,
        };
        let defs = spec::stack(&inputs);
        // Someone else's service under one of our names stops `up` before it makes anything.
        for def in &defs {
            self.check_ours(&def.name).await?;
        }
        self.network().await?;
        let ids = self.files(&defs).await?;

        // A proxy no longer wanted leaves first: the single gateway takes its ports back.
        if spec.replicas.of(Service::Proxy) == 0 {
            self.remove_services(&[Service::Proxy]).await?;
        }
        let deadline = Instant::now() + spec.wait_timeout;
        let converged = self.converge_all(&defs, &ids, &lines).await?;
        self.wait_all(&converged, &lines, deadline, spec.wait_timeout)
            .await?;

        let endpoints = self.endpoints(&manager.node_id, spec.replicas).await?;
        health::wait_front(&endpoints.gateway, deadline, spec.wait_timeout).await?;
        self.prune_files(&defs).await;
        progress.note(
            "swarm publishes ports on every interface of the node, not only 127.0.0.1: the \
             gateway's gRPC and HTTP ports, and the cache's and store's (which serve only \
             holders of the stack's certificates)",
        );
        Ok(endpoints)
    }

    /// Creates or updates the services: databases, then the services, then the proxy, once
    /// the gateways it fronts have given the published ports up; within a group, at once.
    async fn converge_all<'a>(
        &self,
        defs: &'a [ServiceDef],
        ids: &HashMap<String, String>,
        lines: &HashMap<Service, ServiceProgress>,
    ) -> Result<Vec<(&'a ServiceDef, Converged)>, RuntimeError> {
        let groups: [fn(Service) -> bool; 3] = [
            |service| !service.is_usersvc() && service != Service::Proxy,
            Service::is_usersvc,
            |service| service == Service::Proxy,
        ];
        let mut converged = Vec::new();
        for wanted in groups {
            let group: Vec<&ServiceDef> = defs.iter().filter(|def| wanted(def.service)).collect();
            let outcomes = future::join_all(group.iter().map(|def| async {
                let line = &lines[&def.service];
                line.phase("converging");
                self.converge(def, ids)
                    .await
                    .inspect_err(|err| line.fail(&err.to_string()))
            }))
            .await;
            for (def, outcome) in group.into_iter().zip(outcomes) {
                converged.push((def, outcome?));
            }
        }
        Ok(converged)
    }

    /// Waits for every service at once, each on its progress line.
    async fn wait_all(
        &self,
        converged: &[(&ServiceDef, Converged)],
        lines: &HashMap<Service, ServiceProgress>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let waits = converged.iter().map(|(def, outcome)| async move {
            let line = &lines[&def.service];
            line.phase("waiting for healthy tasks");
            let wanted = Wanted {
                hash: Some(def.hash()),
                force_update: None,
            };
            self.wait_service(&def.name, def.service, &wanted, deadline, timeout)
                .await
                .inspect_err(|err| line.fail(&err.to_string()))?;
            line.done(&match outcome {
                Converged::Unchanged => "unchanged".to_owned(),
                Converged::Created | Converged::Updated => {
                    format!("{} healthy", plural(def.replicas, "task"))
                }
            });
            Ok(())
        });
        future::join_all(waits).await.into_iter().collect()
    }

    /// A rolling restart (see [`crate::runtime::Runtime::restart`]): the swarm replaces one
    /// task at a time, the new one started and healthy before the old one stops.
    pub async fn restart(&self, service: Service, progress: &Progress) -> Result<(), RuntimeError> {
        let name = service_name(&self.names, service);
        let Some(current) = self.inspect(&name).await? else {
            return Err(RuntimeError::NotUp {
                project: self.names.project().to_owned(),
                what: service.name().to_owned(),
            });
        };
        let line = progress.service(service);
        let mut spec = current.spec.clone().unwrap_or_default();
        let replicas = spec
            .mode
            .as_ref()
            .and_then(|mode| mode.replicated.as_ref())
            .and_then(|replicated| replicated.replicas)
            .unwrap_or(1);
        let force_update = spec
            .task_template
            .as_ref()
            .and_then(|task| task.force_update)
            .unwrap_or(0)
            + 1;
        if let Some(task) = spec.task_template.as_mut() {
            task.force_update = Some(force_update);
        }
        let wanted = Wanted {
            hash: None,
            force_update: Some(force_update),
        };
        line.phase("rolling update");
        self.update(&name, spec, &current).await?;
        let timeout = RESTART_TIMEOUT_PER_TASK * u32::try_from(replicas).unwrap_or(1);
        self.wait_service(&name, service, &wanted, Instant::now() + timeout, timeout)
            .await
            .inspect_err(|err| line.fail(&err.to_string()))?;
        line.done(&format!(
            "restarted {}",
            plural(u16::try_from(replicas).unwrap_or(1), "task")
        ));
        Ok(())
    }

    /// Removes the project's services (the front first, so in-flight calls drain while what
    /// they need still answers), then its secrets, configs and network; its volumes only with
    /// `volumes`. When `userctl` made the swarm and nothing is left in it, the engine leaves it.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, RuntimeError> {
        if !matches!(
            cluster::membership(&self.docker).await?,
            cluster::Membership::Manager { .. }
        ) {
            return Ok(Vec::new());
        }
        for group in [
            &[Service::Proxy, Service::Gateway][..],
            &[Service::Cache, Service::Store],
            &[Service::Redis, Service::Postgres],
        ] {
            self.remove_services(group).await?;
        }
        self.remove_files().await?;
        let network = network_name(&self.names);
        // The overlay is detached from each node a moment after its last task stops.
        let removal = || async {
            ignore_missing(self.docker.remove_network(&network).await)
                .map_err(|err| engine(format!("removing network {network}"), err))
        };
        retry_until(Instant::now() + REMOVAL_TIMEOUT, removal).await?;

        let mut deleted = Vec::new();
        if volumes {
            deleted.extend(self.remove_volumes().await?);
        }
        if let Some(said) = cluster::leave_if_ours_and_empty(&self.docker).await? {
            eprintln!("{said}");
        }
        Ok(deleted)
    }

    /// One row per task the swarm wants running, by service then replica, and one per task lost
    /// with a node that went down (`unknown`, on `host (down)`); "absent" for a service with
    /// none, except the proxy, which has a row only when it runs.
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let home = match cluster::membership(&self.docker).await? {
            cluster::Membership::Manager { node_id } => node_id,
            _ => {
                return Ok(Service::ALL
                    .into_iter()
                    .filter(|s| *s != Service::Proxy)
                    .map(ServiceStatus::absent)
                    .collect());
            }
        };
        let nodes = self.nodes().await?;
        let mut rows = Vec::new();
        for service in Service::ALL {
            let mut tasks = self.tasks(&service_name(&self.names, service)).await?;
            tasks.retain(|task| tasks::wanted(task) || tasks::lost(task, &nodes));
            tasks.sort_by_key(|task| task.slot);
            let port = match service {
                Service::Proxy => Some(GATEWAY_PORT),
                other => other.default_port(),
            };
            let found: Vec<ServiceStatus> = tasks
                .iter()
                .map(|task| tasks::status_of(service, task, port, &home, &nodes))
                .collect();
            if found.is_empty() && service != Service::Proxy {
                rows.push(ServiceStatus::absent(service));
            }
            rows.extend(found);
        }
        Ok(rows)
    }

    /// Each task's log, named by its replica (`cache.2`); with `follow`, as lines come, and
    /// tasks that start meanwhile (a restart, a replacement) join in.
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
        sink: &mut (dyn FnMut(LogLine) -> std::io::Result<()> + Send),
    ) -> Result<(), RuntimeError> {
        let services: Vec<Service> = Service::ALL
            .into_iter()
            .filter(|known| service.is_none_or(|wanted| *known == wanted))
            .collect();
        let sources = self.log_sources(&services).await?;
        if sources.is_empty() {
            return Err(RuntimeError::NotUp {
                project: self.names.project().to_owned(),
                what: service.map_or_else(|| "any service".to_owned(), |s| s.name().to_owned()),
            });
        }
        if !follow {
            return logs::print(&self.docker, &sources, tail, sink).await;
        }
        let refresh = || self.log_sources(&services);
        logs::follow(&self.docker, sources, tail, refresh, sink).await
    }

    /// The last `tail` lines of one service's first task.
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        let Ok(sources) = self.log_sources(&[service]).await else {
            return Vec::new();
        };
        match sources.first() {
            Some(source) => logs::last_lines(&self.docker, &source.task, tail).await,
            None => Vec::new(),
        }
    }

    /// CPU and memory of each task running on this node (the engine here cannot measure other
    /// nodes' containers), sampled at most every five seconds.
    pub async fn usage(&self) -> Vec<Usage> {
        self.usage
            .get_or_sample(async { self.sample_usage().await.unwrap_or_default() })
            .await
    }

    async fn sample_usage(&self) -> Result<Vec<Usage>, RuntimeError> {
        let cluster::Membership::Manager { node_id } = cluster::membership(&self.docker).await?
        else {
            return Ok(Vec::new());
        };
        let mut containers = Vec::new();
        for service in Service::ALL {
            let mut tasks = self.tasks(&service_name(&self.names, service)).await?;
            tasks.retain(|task| tasks::serving(task) && task.node_id.as_deref() == Some(&*node_id));
            tasks.sort_by_key(|task| task.slot);
            containers.extend(tasks.iter().filter_map(|task| {
                let id = task
                    .status
                    .as_ref()?
                    .container_status
                    .as_ref()?
                    .container_id
                    .clone()?;
                Some((service, id))
            }));
        }
        let samples = containers.into_iter().map(|(service, id)| async move {
            let options = StatsOptionsBuilder::default().stream(false).build();
            match self.docker.stats(&id, Some(options)).next().await {
                Some(Ok(sample)) => Some(state::usage_of(service, &sample)),
                _ => None,
            }
        });
        Ok(future::join_all(samples)
            .await
            .into_iter()
            .flatten()
            .collect())
    }

    /// The images, as on the docker runtime; with a registry, the services image is pushed
    /// there for every node to pull. Without one, every node that runs a service needs the
    /// local image (see the README, "Beyond one machine").
    async fn images(
        &self,
        spec: &StackSpec,
        lines: &HashMap<Service, ServiceProgress>,
    ) -> Result<Images, RuntimeError> {
        let image_lines = image::ImageLines {
            usersvc: [
                &lines[&Service::Store],
                &lines[&Service::Cache],
                &lines[&Service::Gateway],
            ],
            redis: &lines[&Service::Redis],
            postgres: lines.get(&Service::Postgres),
            proxy: lines.get(&Service::Proxy),
        };
        let mut images = image::resolve(&self.docker, spec, &image_lines).await?;
        if let Some(registry) = &spec.image_registry {
            images.usersvc = image::push(
                &self.docker,
                &images.usersvc,
                registry,
                &image_lines.usersvc,
            )
            .await
            .inspect_err(|err| {
                image_lines
                    .usersvc
                    .iter()
                    .for_each(|line| line.fail(&err.to_string()))
            })?;
        }
        Ok(images)
    }

    /// The project's attachable overlay network (attachable, so a container started by hand
    /// can join it to debug).
    async fn network(&self) -> Result<(), RuntimeError> {
        let name = network_name(&self.names);
        match self.docker.inspect_network(&name, None).await {
            Ok(network) if self.names.owns(network.labels.as_ref()) => Ok(()),
            Ok(_) => Err(RuntimeError::other(
                format!("creating network {name}"),
                "a network of that name exists and is not this project's",
            )),
            Err(err) if is_not_found(&err) => {
                let request = NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("overlay".to_owned()),
                    attachable: Some(true),
                    labels: Some(self.names.labels()),
                    ..Default::default()
                };
                self.docker
                    .create_network(request)
                    .await
                    .map(drop)
                    .map_err(|err| engine(format!("creating network {name}"), err))
            }
            Err(err) => Err(engine(format!("inspecting network {name}"), err)),
        }
    }

    /// Makes every secret and config the services read (kept when one of the same name, and
    /// so the same content, exists). Returns each object's id by name.
    async fn files(&self, defs: &[ServiceDef]) -> Result<HashMap<String, String>, RuntimeError> {
        let mut ids: HashMap<String, String> = self
            .existing_files()
            .await?
            .into_iter()
            .map(|(name, _, id)| (name, id))
            .collect();
        for file in defs.iter().flat_map(|def| &def.files) {
            if ids.contains_key(&file.object) {
                continue;
            }
            let created = match file.kind {
                FileKind::Secret => {
                    self.docker
                        .create_secret(SecretSpec {
                            name: Some(file.object.clone()),
                            labels: Some(self.names.labels()),
                            data: Some(file.data()),
                            ..Default::default()
                        })
                        .await
                }
                FileKind::Config => {
                    self.docker
                        .create_config(ConfigSpec {
                            name: Some(file.object.clone()),
                            labels: Some(self.names.labels()),
                            data: Some(file.data()),
                            ..Default::default()
                        })
                        .await
                }
            }
            .map_err(|err| engine(format!("creating swarm object {}", file.object), err))?;
            ids.insert(file.object.clone(), created.id);
        }
        Ok(ids)
    }

    /// The project's secrets and configs: each one's name, kind and id.
    async fn existing_files(&self) -> Result<Vec<(String, FileKind, String)>, RuntimeError> {
        let filters = project_filter(&self.names);
        let secrets = self
            .docker
            .list_secrets(Some(
                ListSecretsOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|err| engine("listing secrets", err))?;
        let configs = self
            .docker
            .list_configs(Some(
                ListConfigsOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|err| engine("listing configs", err))?;
        let secrets = secrets
            .into_iter()
            .filter_map(|secret| Some((secret.spec?.name?, FileKind::Secret, secret.id?)));
        let configs = configs
            .into_iter()
            .filter_map(|config| Some((config.spec?.name?, FileKind::Config, config.id?)));
        Ok(secrets.chain(configs).collect())
    }

    async fn delete_file(&self, kind: FileKind, id: &str) -> Result<(), RuntimeError> {
        let deleted = match kind {
            FileKind::Secret => self.docker.delete_secret(id).await,
            FileKind::Config => self.docker.delete_config(id).await,
        };
        ignore_missing(deleted).map_err(|err| engine(format!("removing swarm object {id}"), err))
    }

    /// After a converged `up`: the project's secrets and configs no service uses any more (an
    /// old key's) are removed. One still held by a task on its way out stays until the next
    /// `up` or `down`.
    async fn prune_files(&self, defs: &[ServiceDef]) {
        let Ok(existing) = self.existing_files().await else {
            return;
        };
        let wanted: HashSet<&str> = defs
            .iter()
            .flat_map(|def| &def.files)
            .map(|file| file.object.as_str())
            .collect();
        for (name, kind, id) in existing {
            if !wanted.contains(name.as_str()) {
                let _ = self.delete_file(kind, &id).await;
            }
        }
    }

    async fn remove_files(&self) -> Result<(), RuntimeError> {
        for (_, kind, id) in self.existing_files().await? {
            self.delete_file(kind, &id).await?;
        }
        Ok(())
    }

    async fn remove_volumes(&self) -> Result<Vec<String>, RuntimeError> {
        let filters = project_filter(&self.names);
        let listed = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|err| engine("listing volumes", err))?;
        let mut deleted = Vec::new();
        for volume in listed.volumes.unwrap_or_default() {
            let name = volume.name;
            // A task's container may still be going away with the volume mounted.
            let removal = || async {
                ignore_missing(
                    self.docker
                        .remove_volume(
                            &name,
                            None::<bollard::query_parameters::RemoveVolumeOptions>,
                        )
                        .await,
                )
                .map_err(|err| engine(format!("removing volume {name}"), err))
            };
            retry_until(Instant::now() + REMOVAL_TIMEOUT, removal).await?;
            deleted.push(format!("docker volume {name}"));
        }
        Ok(deleted)
    }

    /// Creates the service, updates it when its definition changed, or leaves it alone.
    async fn converge(
        &self,
        def: &ServiceDef,
        ids: &HashMap<String, String>,
    ) -> Result<Converged, RuntimeError> {
        let spec = def.spec(&self.names, ids);
        match self.inspect(&def.name).await? {
            None => {
                self.docker
                    .create_service(spec, None)
                    .await
                    .map_err(|err| engine(format!("creating service {}", def.name), err))?;
                Ok(Converged::Created)
            }
            Some(current) => {
                let labels = current.spec.as_ref().and_then(|spec| spec.labels.as_ref());
                if labels.and_then(|labels| labels.get(HASH_LABEL)) == Some(&def.hash()) {
                    return Ok(Converged::Unchanged);
                }
                self.update(&def.name, spec, &current).await?;
                Ok(Converged::Updated)
            }
        }
    }

    /// SwarmForeign when a service named `name` exists without this project's label.
    async fn check_ours(&self, name: &str) -> Result<(), RuntimeError> {
        match self.inspect(name).await? {
            Some(service)
                if !self
                    .names
                    .owns(service.spec.as_ref().and_then(|spec| spec.labels.as_ref())) =>
            {
                Err(RuntimeError::SwarmForeign {
                    name: name.to_owned(),
                    project: self.names.project().to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    async fn update(
        &self,
        name: &str,
        spec: bollard::models::ServiceSpec,
        current: &bollard::models::Service,
    ) -> Result<(), RuntimeError> {
        let version = current
            .version
            .as_ref()
            .and_then(|version| version.index)
            .and_then(|index| i32::try_from(index).ok())
            .unwrap_or_default();
        let options = UpdateServiceOptionsBuilder::default()
            .version(version)
            .build();
        self.docker
            .update_service(name, spec, options, None)
            .await
            .map(drop)
            .map_err(|err| engine(format!("updating service {name}"), err))
    }

    async fn inspect(&self, name: &str) -> Result<Option<bollard::models::Service>, RuntimeError> {
        match self.docker.inspect_service(name, None).await {
            Ok(service) => Ok(Some(service)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(engine(format!("inspecting service {name}"), err)),
        }
    }

    async fn tasks(&self, service_name: &str) -> Result<Vec<Task>, RuntimeError> {
        let filters = HashMap::from([("service", vec![service_name.to_owned()])]);
        let tasks = self
            .docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await;
        match tasks {
            Ok(tasks) => Ok(tasks),
            // No such service: no tasks.
            Err(err) if is_not_found(&err) => Ok(Vec::new()),
            Err(err) => Err(engine(format!("listing tasks of {service_name}"), err)),
        }
    }

    async fn nodes(&self) -> Result<HashMap<String, NodeInfo>, RuntimeError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|err| engine("listing the swarm's nodes", err))?;
        Ok(nodes.iter().filter_map(NodeInfo::from_node).collect())
    }

    /// Waits until the service's update (if any) is done and as many tasks of its current
    /// spec as it wants run healthy. An update the swarm rolled back is an error saying why.
    async fn wait_service(
        &self,
        name: &str,
        service: Service,
        wanted: &Wanted,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        use bollard::models::ServiceUpdateStatusStateEnum as Update;
        loop {
            let current = self
                .inspect(name)
                .await?
                .ok_or_else(|| RuntimeError::NotUp {
                    project: self.names.project().to_owned(),
                    what: service.name().to_owned(),
                })?;
            let update = current.update_status.as_ref();
            let update_state = update.and_then(|update| update.state);
            // A rollback that put back another spec than the one wanted is this update's
            // failure; one left from an earlier `up`, under the spec wanted now, is not.
            let rolled_back =
                update_state == Some(Update::ROLLBACK_COMPLETED) && !wanted.is_met_by(&current);
            if rolled_back || matches!(update_state, Some(Update::ROLLBACK_PAUSED | Update::PAUSED))
            {
                let why = update
                    .and_then(|update| update.message.clone())
                    .unwrap_or_default();
                return Err(RuntimeError::other(
                    format!("{name}'s update did not take"),
                    format!("{why}; the swarm kept or restored the previous version"),
                ));
            }
            let spec = current.spec.as_ref();
            let wanted = spec
                .and_then(|spec| spec.mode.as_ref())
                .and_then(|mode| mode.replicated.as_ref())
                .and_then(|replicated| replicated.replicas)
                .unwrap_or(1);
            let template = spec.and_then(|spec| spec.task_template.as_ref());
            let tasks = self.tasks(name).await?;
            // Tasks of the spec the service has now: same container labels (hash) and the same
            // forced-update counter as its template.
            let current_hash = template
                .and_then(|task| task.container_spec.as_ref())
                .and_then(|container| container.labels.as_ref())
                .and_then(|labels| labels.get(HASH_LABEL));
            let force = template.and_then(|task| task.force_update);
            let serving = tasks
                .iter()
                .filter(|task| tasks::serving(task))
                .filter(|task| {
                    let task_template = task.spec.as_ref();
                    task_template.and_then(|t| t.force_update) == force
                        && task_template
                            .and_then(|t| t.container_spec.as_ref())
                            .and_then(|c| c.labels.as_ref())
                            .and_then(|labels| labels.get(HASH_LABEL))
                            == current_hash
                })
                .count();
            let updating = matches!(
                update_state,
                Some(Update::UPDATING | Update::ROLLBACK_STARTED)
            );
            if !updating && i64::try_from(serving).unwrap_or(i64::MAX) == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self.recent_logs(service, 5).await;
                let mut logs = logs;
                if let Some(err) = tasks::last_error(&tasks) {
                    logs.insert(0, format!("swarm: {err}"));
                }
                return Err(RuntimeError::Unhealthy {
                    service: service.name(),
                    timeout,
                    logs,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Where the running stack answers: the front (the proxy's ports, else the gateway's) and
    /// the first cache and store tasks' published ports.
    async fn endpoints(
        &self,
        home_node: &str,
        replicas: crate::stack::Replicas,
    ) -> Result<Endpoints, RuntimeError> {
        let nodes = self.nodes().await?;
        let front = if replicas.of(Service::Proxy) > 0 {
            Service::Proxy
        } else {
            Service::Gateway
        };
        let first = |service: Service| async move {
            let mut tasks = self.tasks(&service_name(&self.names, service)).await?;
            tasks.retain(tasks::serving);
            // One on this node first: its ports answer on loopback.
            tasks.sort_by_key(|task| (task.node_id.as_deref() != Some(home_node), task.slot));
            Ok::<Option<Task>, RuntimeError>(tasks.into_iter().next())
        };
        let address = |task: &Option<Task>, port: u16, service: Service| {
            task.as_ref()
                .and_then(|task| tasks::address(task, port, home_node, &nodes))
                .ok_or_else(|| {
                    RuntimeError::other(
                        format!("reading the address of {}", service.name()),
                        "no task publishes it",
                    )
                })
        };
        let (front_task, cache, store) =
            futures::try_join!(first(front), first(Service::Cache), first(Service::Store))?;
        Ok(Endpoints {
            gateway: address(&front_task, GATEWAY_PORT, front)?,
            http: address(&front_task, HTTP_PORT, front).ok(),
            cache: address(&cache, crate::stack::CACHE_PORT, Service::Cache)?,
            store: address(&store, crate::stack::STORE_PORT, Service::Store)?,
        })
    }

    /// Removes the services of `group` that exist, and waits until their tasks are gone.
    async fn remove_services(&self, group: &[Service]) -> Result<(), RuntimeError> {
        let filters = project_filter(&self.names);
        let listed = self
            .docker
            .list_services(Some(
                ListServicesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|err| engine("listing services", err))?;
        let names: Vec<String> = listed
            .into_iter()
            .filter_map(|service| {
                let spec = service.spec?;
                let owner = spec
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(SERVICE_LABEL))
                    .and_then(|name| Service::parse(name));
                owner.filter(|owner| group.contains(owner))?;
                spec.name
            })
            .collect();
        for name in &names {
            ignore_missing(self.docker.delete_service(name).await)
                .map_err(|err| engine(format!("removing service {name}"), err))?;
        }
        let deadline = Instant::now() + REMOVAL_TIMEOUT;
        for name in &names {
            // Each task drains (its stop signal, then the grace period) before it stops; then
            // the node removes its container, which must be gone before the network and the
            // volumes can go, and before the engine may leave the swarm.
            loop {
                let stopping = self.tasks(name).await?.iter().any(|task| {
                    !matches!(
                        tasks::state_of(task),
                        Some(
                            TaskState::SHUTDOWN
                                | TaskState::COMPLETE
                                | TaskState::FAILED
                                | TaskState::REJECTED
                                | TaskState::ORPHANED
                        )
                    )
                });
                if (!stopping && !self.has_containers(name).await?) || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Whether this node still has a container of the swarm service `name`, running or not.
    async fn has_containers(&self, name: &str) -> Result<bool, RuntimeError> {
        let filters = HashMap::from([(
            "label",
            vec![format!("com.docker.swarm.service.name={name}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|err| engine(format!("listing containers of {name}"), err))?;
        Ok(!listed.is_empty())
    }

    /// Every task of `services`, the ones the swarm wants running, for the logs.
    async fn log_sources(&self, services: &[Service]) -> Result<Vec<logs::Source>, RuntimeError> {
        let mut sources = Vec::new();
        for service in services {
            let mut tasks = self.tasks(&service_name(&self.names, *service)).await?;
            tasks.retain(tasks::wanted);
            tasks.sort_by_key(|task| task.slot);
            let several = tasks.len() > 1;
            sources.extend(tasks.into_iter().filter_map(|task| {
                Some(logs::Source {
                    service: *service,
                    replica: several
                        .then(|| task.slot.and_then(|slot| u16::try_from(slot).ok()))
                        .flatten(),
                    task: task.id?,
                })
            }));
        }
        Ok(sources)
    }
}

/// The spec a wait expects a service to end with: `up`'s definition (its hash label) and, for
/// `restart`, the forced-update counter it set.
struct Wanted {
    hash: Option<String>,
    force_update: Option<u64>,
}

impl Wanted {
    fn is_met_by(&self, service: &bollard::models::Service) -> bool {
        let spec = service.spec.as_ref();
        let hash = spec
            .and_then(|spec| spec.labels.as_ref())
            .and_then(|labels| labels.get(HASH_LABEL));
        let force = spec
            .and_then(|spec| spec.task_template.as_ref())
            .and_then(|task| task.force_update);
        self.hash.as_ref().is_none_or(|wanted| Some(wanted) == hash)
            && self.force_update.is_none_or(|wanted| Some(wanted) == force)
    }
}

/// Retries `action` every [`POLL`] until it succeeds or `deadline` passes (then its error).
async fn retry_until<F, Fut>(deadline: Instant, action: F) -> Result<(), RuntimeError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), RuntimeError>>,
{
    loop {
        match action().await {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn plural(count: u16, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}
