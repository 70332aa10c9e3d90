//! What each swarm service should be, as plain data, and the Engine API body it becomes. No
//! I/O lives here, so all of it is unit-tested.
//!
//! The same five services as the docker runtime, with what a cluster needs on top:
//!
//! - every key, certificate and password reaches its service as a swarm secret, a file under
//!   `/run/secrets`, never an environment variable (`usersvc` reads its URLs through
//!   `--database-url-file` / `--redis-url-file`, Postgres through `POSTGRES_PASSWORD_FILE`,
//!   Redis from a config file). Secrets cannot change, so each is named after its content's
//!   digest: a new key is a new secret, and the services move to it in a rolling update;
//! - store, cache and gateway replicas are found by DNS round robin (`dnsrr`): their alias
//!   resolves to every running task, and the services balance over them themselves (a VIP
//!   would pin each long-lived HTTP/2 connection to one task);
//! - Postgres and Redis keep their data in named volumes on the node they are pinned to, and the
//!   front (the gateway, or the proxy before two or more) is pinned to the same node: the one
//!   `userctl` runs on, so its ports answer on 127.0.0.1;
//! - rolling updates start the new task first, wait for its health check, and roll back when
//!   one fails.

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    Mount, MountType, MountVolumeOptions, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecPlacementPreferences,
    TaskSpecPlacementSpread, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{
    home::Secrets,
    pki::{self, Holder},
    runtime::{
        docker::{
            SECRETS_DIR, SERVICE_UID, SIGNING_KEYS_FILE,
            converge::STOP_TIMEOUT_SECS,
            spec::{
                DataVolume, HASH_LABEL, Images, Names, PROJECT_LABEL, PROXY_CONFIG_DIR,
                PROXY_CONFIG_FILE, SERVICE_LABEL, health_config, postgres_health, proxy_health,
                usersvc_health,
            },
        },
        front,
        launch::{self, Secret, Wiring},
    },
    stack::{CACHE_PORT, GATEWAY_PORT, HTTP_PORT, Ports, Replicas, STORE_PORT, Service},
};

/// The file `usersvc` store reads its database URL from.
pub const DATABASE_URL_FILE: &str = "database-url";
/// The file the cache and gateways read their Redis URL from.
pub const REDIS_URL_FILE: &str = "redis-url";
/// Postgres's password, for the image's `POSTGRES_PASSWORD_FILE`.
pub const POSTGRES_PASSWORD_FILE: &str = "postgres-password";
/// Redis's configuration: its password and persistence.
pub const REDIS_CONFIG_FILE: &str = "redis.conf";

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// After a replaced task is healthy, how long before the next is replaced: two lookups of the
/// services' DNS (`usersvc::client::RESOLVE_INTERVAL` is 1 s), so every client has found the
/// new task before the one it replaces goes away.
const UPDATE_DELAY_SECS: i64 = 2;
/// How long a new task is watched after it starts; failing within it rolls the update back.
const UPDATE_MONITOR_SECS: i64 = 5;

/// The swarm names of one project's objects: `{project}-{service}` and so on, as the docker
/// runtime names its containers, so `docker service ls` reads like `docker ps` did.
pub fn service_name(names: &Names, service: Service) -> String {
    names.container(service)
}

/// The attachable overlay network every service of the project joins.
pub fn network_name(names: &Names) -> String {
    format!("{}-overlay", names.project())
}

/// Everything specs are built from, resolved by `up` beforehand.
pub struct SwarmInputs<'a> {
    pub names: &'a Names,
    pub ports: Ports,
    pub replicas: Replicas,
    pub secrets: &'a Secrets,
    pub images: &'a Images,
    pub signing_keys: &'a [u8],
    /// The stack's TLS files by name (see [`pki::files`]).
    pub tls: &'a [(&'static str, Vec<u8>)],
    pub cors_origins: &'a [String],
    /// Lifetime of the access tokens the gateways sign.
    pub token_ttl: std::time::Duration,
    /// The node `userctl` runs on: it keeps the data and holds the published front.
    pub home_node: &'a str,
}

/// How a file reaches a service: a swarm secret, or for what holds no secret (the proxy's
/// configuration), a swarm config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FileKind {
    Secret,
    Config,
}

/// A file a service reads, as an immutable swarm object named after its content.
#[derive(Clone, Serialize)]
pub struct SwarmFile {
    pub kind: FileKind,
    /// The object's name in the swarm: `{project}-{file}-{digest}`.
    pub object: String,
    /// Where the service reads it.
    pub target: String,
    pub uid: String,
    pub mode: u32,
    #[serde(skip)]
    pub content: Vec<u8>,
}

impl std::fmt::Debug for SwarmFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmFile")
            .field("object", &self.object)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SwarmFile {
    fn new(
        names: &Names,
        kind: FileKind,
        (file, content): (&str, &[u8]),
        target: String,
        (uid, mode): (u64, u32),
    ) -> Self {
        let digest = hex::encode(Sha256::digest(content));
        Self {
            kind,
            object: format!("{}-{file}-{}", names.project(), &digest[..12]),
            target,
            uid: uid.to_string(),
            mode,
            content: content.to_vec(),
        }
    }

    /// A key, certificate or URL in [`SECRETS_DIR`], readable by the services' user only.
    fn usersvc_secret(names: &Names, file: &str, content: &[u8]) -> Self {
        Self::new(
            names,
            FileKind::Secret,
            (file, content),
            file.to_owned(),
            (SERVICE_UID, 0o400),
        )
    }

    /// The Engine API's body for the object: its data base64-encoded, labelled with the
    /// project.
    pub fn data(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.content)
    }
}

/// A host port a service publishes. Swarm cannot bind one to 127.0.0.1 alone: host mode
/// listens on every interface of the node (and the routing mesh does not answer on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostPort {
    pub target: u16,
    /// 0: the engine picks a free port for each task.
    pub published: u16,
}

/// How a service's replicas are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Discovery {
    /// Its alias resolves to every running task; clients balance.
    DnsRoundRobin,
}

/// One swarm service as it should be. Field order is hash order.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDef {
    pub service: Service,
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub replicas: u16,
    pub files: Vec<SwarmFile>,
    /// (volume, path in the container)
    pub volumes: Vec<(String, &'static str)>,
    pub ports: Vec<HostPort>,
    pub discovery: Discovery,
    pub health: Vec<String>,
    pub stop_signal: Option<&'static str>,
    /// No capabilities and a read-only root filesystem (the services and the proxy); the
    /// database images' entrypoints need theirs to drop to their own users.
    pub hardened: bool,
    /// Kept on the node `userctl` runs on: its data lives there, or its ports must answer on
    /// 127.0.0.1 here.
    pub pinned_to: Option<String>,
    /// Whether a rolling update may start the new task before stopping the old one: not for a
    /// service holding fixed host ports, which two tasks on one node cannot share.
    pub start_first: bool,
}

/// The services of a stack, in start order; the proxy only in front of two or more gateways.
/// The swarm runtime keeps data in Postgres: a SQLite file lives on one node only.
pub fn stack(inputs: &SwarmInputs<'_>) -> Vec<ServiceDef> {
    Service::ALL
        .into_iter()
        .filter_map(|service| service_def(inputs, service))
        .collect()
}

/// One service's definition; None for the proxy in front of a single gateway.
pub fn service_def(inputs: &SwarmInputs<'_>, service: Service) -> Option<ServiceDef> {
    let names = inputs.names;
    let secret_path = |file: &str| format!("{SECRETS_DIR}/{file}");
    let wiring = Wiring {
        bind: "0.0.0.0",
        listen: Ports::default(),
        store_addr: format!("http://{}:{STORE_PORT}", Service::Store.name()),
        cache_addr: format!("http://{}:{CACHE_PORT}", Service::Cache.name()),
        database_url: Secret::File(secret_path(DATABASE_URL_FILE)),
        redis_url: Secret::File(secret_path(REDIS_URL_FILE)),
        signing_keys_file: secret_path(SIGNING_KEYS_FILE),
        tls_dir: SECRETS_DIR.to_owned(),
        cors_origins: inputs.cors_origins,
        token_ttl: inputs.token_ttl,
    };
    let redis_url = format!(
        "redis://:{}@{}:6379",
        inputs.secrets.redis_password,
        Service::Redis.name()
    );
    let database_url = format!(
        "postgres://userctl:{}@{}:5432/userctl",
        inputs.secrets.postgres_password,
        Service::Postgres.name()
    );
    let home = || Some(inputs.home_node.to_owned());
    let front_ports = || {
        vec![
            HostPort {
                target: GATEWAY_PORT,
                published: inputs.ports.gateway,
            },
            HostPort {
                target: HTTP_PORT,
                published: inputs.ports.http,
            },
        ]
    };
    let base = |image: &str| ServiceDef {
        service,
        name: service_name(names, service),
        image: image.to_owned(),
        args: Vec::new(),
        env: Vec::new(),
        replicas: inputs.replicas.of(service),
        files: Vec::new(),
        volumes: Vec::new(),
        ports: Vec::new(),
        discovery: Discovery::DnsRoundRobin,
        health: Vec::new(),
        stop_signal: None,
        hardened: false,
        pinned_to: None,
        start_first: true,
    };
    let def = match service {
        Service::Postgres => {
            let image = inputs.images.postgres.as_ref()?;
            ServiceDef {
                env: vec![
                    format!(
                        "POSTGRES_PASSWORD_FILE={}",
                        secret_path(POSTGRES_PASSWORD_FILE)
                    ),
                    "POSTGRES_USER=userctl".to_owned(),
                    "POSTGRES_DB=userctl".to_owned(),
                ],
                // Read by the image's entrypoint after it drops to its own user.
                files: vec![SwarmFile::new(
                    names,
                    FileKind::Secret,
                    (
                        POSTGRES_PASSWORD_FILE,
                        inputs.secrets.postgres_password.as_bytes(),
                    ),
                    POSTGRES_PASSWORD_FILE.to_owned(),
                    (0, 0o444),
                )],
                volumes: vec![(
                    names.volume(DataVolume::Postgres),
                    "/var/lib/postgresql/data",
                )],
                health: postgres_health(),
                stop_signal: Some("SIGINT"),
                pinned_to: home(),
                // One data directory: the old task must be gone before the new one opens it.
                start_first: false,
                ..base(&image.reference)
            }
        }
        Service::Redis => {
            let config = format!(
                "requirepass {}\nappendonly yes\n",
                inputs.secrets.redis_password
            );
            ServiceDef {
                args: vec!["redis-server".to_owned(), secret_path(REDIS_CONFIG_FILE)],
                files: vec![SwarmFile::new(
                    names,
                    FileKind::Secret,
                    (REDIS_CONFIG_FILE, config.as_bytes()),
                    REDIS_CONFIG_FILE.to_owned(),
                    (0, 0o444),
                )],
                volumes: vec![(names.volume(DataVolume::Redis), "/data")],
                // A ping answers (PONG or NOAUTH) once Redis serves: the probe needs no password.
                health: strings(&[
                    "CMD-SHELL",
                    "redis-cli -h 127.0.0.1 ping | grep -qE 'PONG|NOAUTH'",
                ]),
                pinned_to: home(),
                start_first: false,
                ..base(&inputs.images.redis.reference)
            }
        }
        Service::Store | Service::Cache | Service::Gateway => {
            let launch = launch::launch(&wiring, service)?;
            let holder = Holder::of(service)?;
            let mut files: Vec<SwarmFile> = inputs
                .tls
                .iter()
                .filter(|(name, _)| {
                    [pki::CA_CERT, holder.cert_file(), holder.key_file()].contains(name)
                })
                .map(|(name, content)| SwarmFile::usersvc_secret(names, name, content))
                .collect();
            match service {
                Service::Store => files.push(SwarmFile::usersvc_secret(
                    names,
                    DATABASE_URL_FILE,
                    database_url.as_bytes(),
                )),
                Service::Cache => files.push(SwarmFile::usersvc_secret(
                    names,
                    REDIS_URL_FILE,
                    redis_url.as_bytes(),
                )),
                _ => files.extend([
                    SwarmFile::usersvc_secret(names, REDIS_URL_FILE, redis_url.as_bytes()),
                    SwarmFile::usersvc_secret(names, SIGNING_KEYS_FILE, inputs.signing_keys),
                ]),
            }
            let fronting = service == Service::Gateway && inputs.replicas.of(Service::Proxy) == 0;
            ServiceDef {
                args: launch.args.clone(),
                env: launch.env_pairs(),
                files,
                // The store and cache publish their gRPC port at a free port per task, so
                // `userctl stats` and the dashboard reach each replica; they serve only callers
                // with a certificate from the stack's CA. A single gateway is the front.
                ports: if fronting {
                    front_ports()
                } else if service == Service::Gateway {
                    Vec::new()
                } else {
                    vec![HostPort {
                        target: launch.grpc_port,
                        published: 0,
                    }]
                },
                health: usersvc_health(&launch),
                hardened: true,
                pinned_to: if fronting { home() } else { None },
                // Not the gateways: HAProxy finds them by DNS, a slot per address, and a new
                // gateway started first can take the slot of the one draining while HAProxy
                // still sends calls over its connection to the old one, which cuts them.
                // Stopping first frees the slot; the other gateways serve meanwhile.
                start_first: service != Service::Gateway,
                ..base(&inputs.images.usersvc.reference)
            }
        }
        Service::Proxy => {
            if inputs.replicas.of(Service::Proxy) == 0 {
                return None;
            }
            let image = inputs.images.proxy.as_ref()?;
            let config = front::in_container();
            ServiceDef {
                args: strings(&[
                    "haproxy",
                    "-f",
                    &format!("{PROXY_CONFIG_DIR}/{PROXY_CONFIG_FILE}"),
                ]),
                files: vec![SwarmFile::new(
                    names,
                    FileKind::Config,
                    (PROXY_CONFIG_FILE, config.as_bytes()),
                    format!("{PROXY_CONFIG_DIR}/{PROXY_CONFIG_FILE}"),
                    (0, 0o444),
                )],
                ports: front_ports(),
                health: proxy_health(),
                stop_signal: Some("SIGUSR1"),
                hardened: true,
                pinned_to: home(),
                start_first: false,
                ..base(&image.reference)
            }
        }
    };
    Some(def)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

impl ServiceDef {
    /// A digest of everything that defines the service, kept in its `io.userctl.config-hash`
    /// label: `up` leaves a service whose label matches alone.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// The same without the replica count, on the tasks' containers: a scale changes the
    /// service, not its tasks, so the swarm adds or removes tasks and replaces none. It also
    /// tells the tasks of the current definition from those an update is replacing.
    pub fn task_hash(&self) -> String {
        Self {
            replicas: 0,
            ..self.clone()
        }
        .hash()
    }

    /// The Engine API's service spec. `ids` maps each file's object name to the id the swarm
    /// gave it (a reference needs both).
    pub fn spec(&self, names: &Names, ids: &HashMap<String, String>) -> ServiceSpec {
        let mut labels = names.labels();
        labels.insert(SERVICE_LABEL.to_owned(), self.service.name().to_owned());
        let mut task_labels = labels.clone();
        labels.insert(HASH_LABEL.to_owned(), self.hash());
        task_labels.insert(HASH_LABEL.to_owned(), self.task_hash());
        let file = |file: &SwarmFile| TaskSpecContainerSpecFile {
            name: Some(file.target.clone()),
            uid: Some(file.uid.clone()),
            gid: Some(file.uid.clone()),
            mode: Some(file.mode),
        };
        let secrets = self
            .files
            .iter()
            .filter(|file| file.kind == FileKind::Secret)
            .map(|secret| TaskSpecContainerSpecSecrets {
                file: Some(file(secret)),
                secret_id: ids.get(&secret.object).cloned(),
                secret_name: Some(secret.object.clone()),
            })
            .collect();
        let configs = self
            .files
            .iter()
            .filter(|file| file.kind == FileKind::Config)
            .map(|config| {
                let target = file(config);
                TaskSpecContainerSpecConfigs {
                    file: Some(TaskSpecContainerSpecFile1 {
                        name: target.name,
                        uid: target.uid,
                        gid: target.gid,
                        mode: target.mode,
                    }),
                    config_id: ids.get(&config.object).cloned(),
                    config_name: Some(config.object.clone()),
                    ..Default::default()
                }
            })
            .collect();
        let mounts = self
            .volumes
            .iter()
            .map(|(volume, target)| Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.clone()),
                target: Some((*target).to_owned()),
                // The engine makes the volume on the node the task lands on, labelled so
                // `down --volumes` finds it.
                volume_options: Some(MountVolumeOptions {
                    labels: Some(names.labels()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let container = TaskSpecContainerSpec {
            image: Some(self.image.clone()),
            labels: Some(task_labels),
            args: (!self.args.is_empty()).then(|| self.args.clone()),
            hostname: Some(self.service.name().to_owned()),
            env: Some(self.env.clone()),
            mounts: Some(mounts),
            stop_signal: self.stop_signal.map(str::to_owned),
            stop_grace_period: Some(i64::from(STOP_TIMEOUT_SECS) * NANOS_PER_SEC),
            health_check: Some(health_config(&self.health)),
            secrets: Some(secrets),
            configs: Some(configs),
            read_only: Some(self.hardened && self.service.is_usersvc()),
            capability_drop: self.hardened.then(|| vec!["ALL".to_owned()]),
            ..Default::default()
        };
        let placement = TaskSpecPlacement {
            constraints: self
                .pinned_to
                .as_ref()
                .map(|node| vec![format!("node.id=={node}")]),
            // The stateless services spread over the nodes, so losing one loses few replicas.
            preferences: self.pinned_to.is_none().then(|| {
                vec![TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some("node.id".to_owned()),
                    }),
                }]
            }),
            ..Default::default()
        };
        let task = TaskSpec {
            container_spec: Some(container),
            // The swarm is the supervisor here: a task that dies or whose node is lost is
            // replaced, on another node if need be.
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(NANOS_PER_SEC),
                ..Default::default()
            }),
            placement: Some(placement),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(network_name(names)),
                aliases: Some(vec![self.service.name().to_owned()]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let (update_order, rollback_order) = if self.start_first {
            (
                ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                ServiceSpecRollbackConfigOrderEnum::START_FIRST,
            )
        } else {
            (
                ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
                ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
            )
        };
        ServiceSpec {
            name: Some(self.name.clone()),
            labels: Some(labels),
            task_template: Some(task),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::from(self.replicas)),
                }),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: Some(UPDATE_DELAY_SECS * NANOS_PER_SEC),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(UPDATE_MONITOR_SECS * NANOS_PER_SEC),
                max_failure_ratio: Some(0.0),
                order: Some(update_order),
            }),
            rollback_config: Some(ServiceSpecRollbackConfig {
                parallelism: Some(1),
                delay: Some(UPDATE_DELAY_SECS * NANOS_PER_SEC),
                failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
                monitor: Some(UPDATE_MONITOR_SECS * NANOS_PER_SEC),
                max_failure_ratio: Some(0.0),
                order: Some(rollback_order),
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(match self.discovery {
                    Discovery::DnsRoundRobin => EndpointSpecModeEnum::DNSRR,
                }),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|port| EndpointPortConfig {
                            target_port: Some(i64::from(port.target)),
                            published_port: (port.published != 0)
                                .then_some(i64::from(port.published)),
                            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }
}

/// The label filter of the project's swarm objects, as the Engine API takes it.
pub fn project_filter(names: &Names) -> HashMap<&'static str, Vec<String>> {
    HashMap::from([(
        "label",
        vec![format!("{PROJECT_LABEL}={}", names.project())],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::docker::spec::ResolvedImage;

    fn image(name: &str) -> ResolvedImage {
        ResolvedImage {
            reference: name.to_owned(),
            id: format!("sha256:{name}"),
        }
    }

    fn defs(replicas: Replicas, signing_keys: &[u8]) -> Vec<ServiceDef> {
        let names = Names::new("t");
        let secrets = Secrets {
            redis_password: "redispw".into(),
            postgres_password: "pgpw".into(),
        };
        let images = Images {
            usersvc: image("userctl-usersvc:0123456789abcdef"),
            redis: image("redis:7"),
            postgres: Some(image("postgres:15")),
            proxy: Some(image("haproxy:2.6")),
        };
        let tls: Vec<(&'static str, Vec<u8>)> = pki::files()
            .into_iter()
            .map(|name| (name, format!("pem of {name}").into_bytes()))
            .collect();
        stack(&SwarmInputs {
            names: &names,
            ports: Ports::default(),
            replicas,
            secrets: &secrets,
            images: &images,
            signing_keys,
            tls: &tls,
            cors_origins: &[],
            token_ttl: std::time::Duration::from_secs(900),
            home_node: "node1",
        })
    }

    fn find(defs: &[ServiceDef], service: Service) -> &ServiceDef {
        defs.iter()
            .find(|def| def.service == service)
            .expect("service in stack")
    }

    fn replicas(gateway: u16, cache: u16, store: u16) -> Replicas {
        Replicas {
            gateway,
            cache,
            store,
        }
    }

    #[test]
    fn no_password_key_or_certificate_is_in_any_environment_or_argument() {
        let defs = defs(replicas(2, 2, 2), b"very secret key");
        for def in &defs {
            let visible = format!("{:?} {:?}", def.env, def.args);
            for secret in ["redispw", "pgpw", "very secret key", "pem of"] {
                assert!(!visible.contains(secret), "{} shows {secret}", def.name);
            }
            let spec =
                serde_json::to_string(&def.spec(&Names::new("t"), &HashMap::new())).expect("json");
            for secret in ["redispw", "pgpw", "very secret key", "pem of"] {
                assert!(!spec.contains(secret), "{} spec shows {secret}", def.name);
            }
        }
        let store = find(&defs, Service::Store);
        assert!(
            store
                .env
                .contains(&"USERSVC_DATABASE_URL_FILE=/run/secrets/database-url".to_owned()),
            "{:?}",
            store.env
        );
        let gateway = find(&defs, Service::Gateway);
        let targets: Vec<&str> = gateway.files.iter().map(|f| f.target.as_str()).collect();
        assert!(targets.contains(&SIGNING_KEYS_FILE), "{targets:?}");
        assert!(targets.contains(&REDIS_URL_FILE), "{targets:?}");
        let redis = find(&defs, Service::Redis);
        let config = String::from_utf8(redis.files[0].content.clone()).expect("text");
        assert!(config.contains("requirepass redispw"), "{config}");
    }

    #[test]
    fn a_new_key_is_a_new_secret_object_and_only_the_gateway_changes() {
        let before = defs(Replicas::default(), b"old key");
        let after = defs(Replicas::default(), b"new key");
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                old.hash() == new.hash(),
                old.service != Service::Gateway,
                "{}",
                old.name
            );
        }
        let object = |defs: &[ServiceDef]| {
            find(defs, Service::Gateway)
                .files
                .iter()
                .find(|file| file.target == SIGNING_KEYS_FILE)
                .map(|file| file.object.clone())
                .expect("signing keys secret")
        };
        assert_ne!(object(&before), object(&after));
        assert!(object(&before).starts_with("t-signing-keys.json-"));
    }

    #[test]
    fn internal_services_are_found_by_dns_round_robin_and_spread_over_the_nodes() {
        let names = Names::new("t");
        for def in defs(replicas(3, 2, 2), b"key") {
            let spec = def.spec(&names, &HashMap::new());
            assert_eq!(
                spec.endpoint_spec.and_then(|e| e.mode),
                Some(EndpointSpecModeEnum::DNSRR)
            );
            let task = spec.task_template.expect("task");
            let network = &task.networks.expect("networks")[0];
            assert_eq!(network.target.as_deref(), Some("t-overlay"));
            assert_eq!(network.aliases, Some(vec![def.service.name().to_owned()]));
            let placement = task.placement.expect("placement");
            if def.service.is_usersvc() {
                assert!(placement.constraints.is_none(), "{}", def.name);
                assert!(placement.preferences.is_some(), "{}", def.name);
            } else {
                // Postgres, Redis and the proxy stay on the node userctl runs on.
                assert_eq!(
                    placement.constraints,
                    Some(vec!["node.id==node1".to_owned()]),
                    "{}",
                    def.name
                );
            }
            let labels = spec.labels.expect("labels");
            assert_eq!(labels[PROJECT_LABEL], "t");
            assert_eq!(labels[SERVICE_LABEL], def.service.name());
        }
    }

    #[test]
    fn the_front_publishes_the_configured_ports_in_host_mode_and_stops_before_it_starts() {
        let one = defs(replicas(1, 1, 1), b"key");
        assert!(one.iter().all(|def| def.service != Service::Proxy));
        let gateway = find(&one, Service::Gateway);
        assert_eq!(
            gateway.ports,
            [
                HostPort {
                    target: GATEWAY_PORT,
                    published: GATEWAY_PORT
                },
                HostPort {
                    target: HTTP_PORT,
                    published: HTTP_PORT
                }
            ]
        );
        assert!(!gateway.start_first);
        assert_eq!(gateway.pinned_to.as_deref(), Some("node1"));

        let two = defs(replicas(2, 1, 1), b"key");
        let gateway = find(&two, Service::Gateway);
        assert!(gateway.ports.is_empty());
        assert!(!gateway.start_first);
        assert!(find(&two, Service::Cache).start_first);
        assert!(gateway.pinned_to.is_none());
        let proxy = find(&two, Service::Proxy);
        assert_eq!(proxy.ports.len(), 2);
        assert!(!proxy.start_first);
        assert_eq!(proxy.files[0].kind, FileKind::Config);
        let config = String::from_utf8(proxy.files[0].content.clone()).expect("text");
        assert!(config.contains("nameserver dns 127.0.0.11:53"), "{config}");

        let spec = proxy.spec(&Names::new("t"), &HashMap::new());
        let ports = spec.endpoint_spec.and_then(|e| e.ports).expect("ports");
        assert!(
            ports
                .iter()
                .all(|port| { port.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST) })
        );
    }

    #[test]
    fn updates_roll_one_task_at_a_time_and_roll_back_on_failure() {
        let names = Names::new("t");
        let defs = defs(replicas(2, 2, 2), b"key");
        let cache = find(&defs, Service::Cache).spec(&names, &HashMap::new());
        let update = cache.update_config.expect("update config");
        assert_eq!(update.parallelism, Some(1));
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(
            cache
                .mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas),
            Some(2)
        );
        let container = cache
            .task_template
            .and_then(|t| t.container_spec)
            .expect("container");
        assert_eq!(container.read_only, Some(true));
        assert_eq!(container.capability_drop, Some(vec!["ALL".to_owned()]));
        let secrets = container.secrets.expect("secrets");
        assert!(secrets.iter().all(|secret| {
            secret.file.as_ref().and_then(|f| f.mode) == Some(0o400)
                && secret.file.as_ref().and_then(|f| f.uid.as_deref())
                    == Some(&*SERVICE_UID.to_string())
        }));
    }

    #[test]
    fn a_scale_changes_the_service_but_not_its_tasks() {
        let names = Names::new("t");
        let task = |replicas| {
            let defs = defs(replicas, b"key");
            let spec = find(&defs, Service::Cache).spec(&names, &HashMap::new());
            serde_json::to_value(&spec.task_template).expect("json")
        };
        assert_eq!(task(replicas(1, 1, 1)), task(replicas(1, 3, 1)));
    }

    #[test]
    fn scaling_one_service_changes_only_that_service() {
        let before = defs(replicas(2, 1, 1), b"key");
        let after = defs(replicas(2, 3, 1), b"key");
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                old.hash() == new.hash(),
                old.service != Service::Cache,
                "{}",
                old.name
            );
        }
    }
}
