//! What each container should be, as plain data. One [`ContainerSpec`] per replica (and one
//! for the proxy in front of two or more gateways) is built from the stack spec and the
//! resolved images; its [`hash`](ContainerSpec::hash) becomes the `io.userctl.config-hash`
//! label, which is how `up` tells a container it may leave alone from one it must recreate;
//! and it turns into the Engine API's create body. No I/O lives here, so all of it is
//! unit-tested.
//!
//! Replicas: every replica of a service joins the network under the service's name as alias,
//! so Docker's DNS answers `cache` with every cache replica's address, and the services
//! (which re-resolve their next hop every second) balance over them. A replica's spec depends
//! only on its own service's count (the gateway's ports move to the proxy at two), never on
//! another service's, so scaling one service leaves every other container as it is.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountType, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{
    home::Secrets,
    pki::{self, Holder},
    runtime::front,
    runtime::launch::{self, Launch, Secret, Wiring},
    stack::{CACHE_PORT, GATEWAY_PORT, HTTP_PORT, Ports, Replicas, STORE_PORT, Service, StoreKind},
};

/// On every object `up` makes; `down` and `status` find the project's objects by it alone.
pub const PROJECT_LABEL: &str = "io.userctl.project";
/// On containers: which service this is.
pub const SERVICE_LABEL: &str = "io.userctl.service";
/// On containers: the [`ContainerSpec::hash`] the container was created from.
pub const HASH_LABEL: &str = "io.userctl.config-hash";
/// On containers: which replica of its service this is, from 1 (absent on containers made
/// before replicas existed: those are replica 1).
pub const REPLICA_LABEL: &str = "io.userctl.replica";

/// The unprivileged user the services image runs as (distroless's "nonroot").
pub const SERVICE_UID: u64 = 65532;
/// Where the services read their keys (the gateway's signing key, each service's TLS
/// certificate and key): files uploaded before the container starts, so no key is in the
/// environment or on a bind mount.
pub const SECRETS_DIR: &str = "/run/secrets";
pub const SIGNING_KEYS_FILE: &str = userctl_keys::FILE_NAME;
/// Where the official haproxy image reads its configuration (the local stand-in too).
pub const PROXY_CONFIG_DIR: &str = "/usr/local/etc/haproxy";
pub const PROXY_CONFIG_FILE: &str = "haproxy.cfg";

const NANOS_PER_MS: i64 = 1_000_000;

/// The Docker names of one project's objects.
#[derive(Debug, Clone)]
pub struct Names {
    project: String,
}

impl Names {
    pub fn new(project: &str) -> Self {
        Self {
            project: project.to_owned(),
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// The first replica's container: `{project}-{service}`.
    pub fn container(&self, service: Service) -> String {
        self.replica(service, 1)
    }

    /// `{project}-{service}` for replica 1, `{project}-{service}-{n}` for the others. The
    /// first keeps the name it had before replicas existed, so a one-replica stack (the
    /// default) looks as it always did and an upgrade leaves its containers alone.
    pub fn replica(&self, service: Service, replica: u16) -> String {
        match replica {
            0 | 1 => format!("{}-{}", self.project, service.name()),
            n => format!("{}-{}-{n}", self.project, service.name()),
        }
    }

    pub fn network(&self) -> String {
        format!("{}-net", self.project)
    }

    pub fn volume(&self, volume: DataVolume) -> String {
        format!("{}-{}", self.project, volume.suffix())
    }

    /// `label=io.userctl.project=<project>`, the filter that finds what this project owns.
    pub fn label_filter(&self) -> HashMap<&'static str, Vec<String>> {
        HashMap::from([("label", vec![format!("{PROJECT_LABEL}={}", self.project)])])
    }

    /// The labels of networks and volumes; containers add theirs to these.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(PROJECT_LABEL.to_owned(), self.project.clone())])
    }

    /// Whether an object with these labels belongs to this project.
    pub fn owns(&self, labels: Option<&HashMap<String, String>>) -> bool {
        labels
            .and_then(|labels| labels.get(PROJECT_LABEL))
            .is_some_and(|owner| *owner == self.project)
    }
}

/// The named volumes that outlive `down` (unless `--volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DataVolume {
    Postgres,
    Redis,
    /// The SQLite file, when the store runs on SQLite.
    Store,
}

impl DataVolume {
    fn suffix(self) -> &'static str {
        match self {
            Self::Postgres => "postgres-data",
            Self::Redis => "redis-data",
            Self::Store => "store-data",
        }
    }

    /// The volumes a stack on `store` uses.
    pub fn used_with(store: StoreKind) -> &'static [DataVolume] {
        match store {
            StoreKind::Postgres => &[Self::Postgres, Self::Redis],
            StoreKind::Sqlite => &[Self::Redis, Self::Store],
        }
    }
}

/// The services a stack on `store` runs, in start order: Postgres only backs a Postgres store.
pub fn services_with(store: StoreKind) -> Vec<Service> {
    Service::ALL
        .into_iter()
        .filter(|service| *service != Service::Postgres || store == StoreKind::Postgres)
        .collect()
}

/// An image as `up` found or built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// What containers are created from, e.g. `userctl-local/redis:7`.
    pub reference: String,
    /// The image ID: part of the config hash, so a rebuilt or re-pulled image recreates.
    pub id: String,
}

/// The images of one stack.
#[derive(Debug, Clone)]
pub struct Images {
    pub usersvc: ResolvedImage,
    pub redis: ResolvedImage,
    /// None when the store runs on SQLite.
    pub postgres: Option<ResolvedImage>,
    /// None with one gateway: no proxy then.
    pub proxy: Option<ResolvedImage>,
}

/// Everything specs are built from, resolved by `up` beforehand.
pub struct StackInputs<'a> {
    pub names: &'a Names,
    pub store: StoreKind,
    pub ports: Ports,
    pub replicas: Replicas,
    pub secrets: &'a Secrets,
    pub images: &'a Images,
    /// The gateway's HS256 key, uploaded into its container.
    pub signing_keys: &'a [u8],
    /// The stack's TLS files by name (see [`pki::files`]); each service gets the CA
    /// certificate and its own certificate and key.
    pub tls: &'a [(&'static str, Vec<u8>)],
    /// Browser origins the gateway's HTTP door allows.
    pub cors_origins: &'a [String],
    /// Lifetime of the access tokens the gateways sign.
    pub token_ttl: std::time::Duration,
}

/// One container as it should be. Field order is hash order: everything that, when changed,
/// must recreate the container belongs here.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerSpec {
    pub service: Service,
    /// From 1.
    pub replica: u16,
    pub name: String,
    pub image: String,
    /// What the config hash uses to tell the image changed: the image id, or for the
    /// content-tagged services image its tag.
    pub image_id: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub mounts: Vec<VolumeMount>,
    /// The gRPC port, for usersvc containers.
    pub published: Option<Published>,
    /// The gateway's HTTP/JSON port.
    pub http: Option<Published>,
    pub health: Vec<String>,
    /// Postgres treats SIGTERM as "wait for every client to leave"; SIGINT is its fast shutdown.
    pub stop_signal: Option<&'static str>,
    /// The usersvc containers need no capabilities and never gain privileges; the database
    /// images' entrypoints need theirs to drop to their own users.
    pub hardened: bool,
    /// Files placed in `upload.dir` between create and start.
    pub secrets: Vec<SecretFile>,
    /// Where the files go and whose they are.
    pub upload: Upload,
}

/// Where a container's files are uploaded, with which owner and mode.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Upload {
    pub dir: &'static str,
    pub owner: u64,
    pub mode: u32,
}

impl Upload {
    /// Keys and certificates: readable by the service user only.
    pub const SECRETS: Self = Self {
        dir: SECRETS_DIR,
        owner: SERVICE_UID,
        mode: 0o400,
    };
    /// The proxy's configuration: no secret in it, readable by whichever user the image runs as.
    const PROXY_CONFIG: Self = Self {
        dir: PROXY_CONFIG_DIR,
        owner: 0,
        mode: 0o444,
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeMount {
    pub volume: String,
    pub target: &'static str,
}

/// A container port published on 127.0.0.1.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Published {
    pub container_port: u16,
    /// 0: Docker picks a free port, read back after start.
    pub host_port: u16,
}

impl Published {
    /// The key Docker uses for this port in port maps.
    pub fn key(self) -> String {
        format!("{}/tcp", self.container_port)
    }
}

/// A file placed in the container's [`SECRETS_DIR`] between create and start.
#[derive(Clone, Serialize)]
pub struct SecretFile {
    pub name: &'static str,
    /// Only the digest is hashed (a new key or certificate recreates the container); the bytes
    /// are never printed. None for a live file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip)]
    pub content: Vec<u8>,
}

impl SecretFile {
    fn new(name: &'static str, content: &[u8]) -> Self {
        Self {
            name,
            digest: Some(hex::encode(Sha256::digest(content))),
            content: content.to_vec(),
        }
    }

    /// A file the service reads again while it runs (the signing keys): not part of the
    /// container's hash, so a new version is copied into the running container by every `up`
    /// instead of recreating it.
    fn live(name: &'static str, content: &[u8]) -> Self {
        Self {
            name,
            digest: None,
            content: content.to_vec(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.digest.is_none()
    }
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The specs of a stack, in start order, every replica of a service after the other.
pub fn stack(inputs: &StackInputs<'_>) -> Vec<ContainerSpec> {
    services_with(inputs.store)
        .into_iter()
        .flat_map(|service| {
            (1..=inputs.replicas.of(service))
                .filter_map(move |replica| container(inputs, service, replica))
        })
        .collect()
}

/// The spec of one replica of a service; None for Postgres behind a SQLite store, and for the
/// proxy in front of a single gateway.
pub fn container(
    inputs: &StackInputs<'_>,
    service: Service,
    replica: u16,
) -> Option<ContainerSpec> {
    let names = inputs.names;
    let redis_password = &inputs.secrets.redis_password;
    let postgres_password = &inputs.secrets.postgres_password;
    let database_url = match inputs.store {
        StoreKind::Postgres => {
            format!("postgres://userctl:{postgres_password}@postgres:5432/userctl")
        }
        StoreKind::Sqlite => "sqlite:///data/userctl.db".to_owned(),
    };
    // Inside the network every service listens on its default port and is found by name.
    let wiring = Wiring {
        bind: "0.0.0.0",
        listen: Ports::default(),
        store_addr: format!("http://{}:{STORE_PORT}", Service::Store.name()),
        cache_addr: format!("http://{}:{CACHE_PORT}", Service::Cache.name()),
        database_url: Secret::Value(database_url),
        redis_url: Secret::Value(format!("redis://:{redis_password}@redis:6379")),
        signing_keys_file: format!("{SECRETS_DIR}/{SIGNING_KEYS_FILE}"),
        tls_dir: SECRETS_DIR.to_owned(),
        cors_origins: inputs.cors_origins,
        token_ttl: inputs.token_ttl,
    };
    // The CA certificate and this service's own certificate and key.
    let tls_files = |service: Service| -> Vec<SecretFile> {
        let Some(holder) = Holder::of(service) else {
            return Vec::new();
        };
        inputs
            .tls
            .iter()
            .filter(|(name, _)| {
                [pki::CA_CERT, holder.cert_file(), holder.key_file()].contains(name)
            })
            .map(|(name, content)| SecretFile::new(name, content))
            .collect()
    };
    // The first replica at the configured port, the others at any free one.
    let host_port = |configured: u16| if replica == 1 { configured } else { 0 };
    let usersvc = |launch: Launch, host_port: u16| ContainerSpec {
        service,
        replica,
        name: names.replica(service, replica),
        image: inputs.images.usersvc.reference.clone(),
        // The tag is the content hash of the image's files. Two concurrent `up`s can import
        // the same content as two image ids under one tag; hashing the id would then recreate
        // services whose files did not change.
        image_id: inputs.images.usersvc.reference.clone(),
        cmd: launch.args.clone(),
        env: launch.env_pairs(),
        mounts: Vec::new(),
        published: Some(Published {
            container_port: launch.grpc_port,
            host_port,
        }),
        http: launch.http_port.map(|container_port| Published {
            container_port,
            host_port: inputs.ports.http,
        }),
        // Over mutual TLS for the store and cache: the probe reads the container's
        // USERSVC_TLS_* and checks the server's certificate is for the service's name.
        health: usersvc_health(&launch),
        stop_signal: None,
        hardened: true,
        secrets: tls_files(service),
        upload: Upload::SECRETS,
    };
    let spec = match service {
        Service::Postgres => {
            let image = inputs.images.postgres.as_ref()?;
            ContainerSpec {
                service,
                replica: 1,
                name: names.container(service),
                image: image.reference.clone(),
                image_id: image.id.clone(),
                cmd: Vec::new(),
                env: vec![
                    format!("POSTGRES_PASSWORD={postgres_password}"),
                    "POSTGRES_USER=userctl".to_owned(),
                    "POSTGRES_DB=userctl".to_owned(),
                ],
                mounts: vec![VolumeMount {
                    volume: names.volume(DataVolume::Postgres),
                    target: "/var/lib/postgresql/data",
                }],
                published: None,
                http: None,
                // Over TCP: during first-start initialisation the image runs a temporary
                // server on the Unix socket only, which must not count as ready.
                health: postgres_health(),
                stop_signal: Some("SIGINT"),
                hardened: false,
                secrets: Vec::new(),
                upload: Upload::SECRETS,
            }
        }
        Service::Redis => ContainerSpec {
            service,
            replica: 1,
            name: names.container(service),
            image: inputs.images.redis.reference.clone(),
            image_id: inputs.images.redis.id.clone(),
            cmd: strings(&[
                "redis-server",
                "--requirepass",
                redis_password,
                "--appendonly",
                "yes",
            ]),
            // redis-cli reads the password from here, so the health check carries no secret.
            env: vec![format!("REDISCLI_AUTH={redis_password}")],
            mounts: vec![VolumeMount {
                volume: names.volume(DataVolume::Redis),
                target: "/data",
            }],
            published: None,
            http: None,
            health: strings(&["CMD", "redis-cli", "ping"]),
            stop_signal: None,
            hardened: false,
            secrets: Vec::new(),
            upload: Upload::SECRETS,
        },
        Service::Store => ContainerSpec {
            mounts: match inputs.store {
                StoreKind::Postgres => Vec::new(),
                StoreKind::Sqlite => vec![VolumeMount {
                    volume: names.volume(DataVolume::Store),
                    target: "/data",
                }],
            },
            ..usersvc(
                launch::launch(&wiring, service)?,
                host_port(inputs.ports.store),
            )
        },
        Service::Cache => usersvc(
            launch::launch(&wiring, service)?,
            host_port(inputs.ports.cache),
        ),
        Service::Gateway => {
            let proxied = inputs.replicas.of(Service::Proxy) > 0;
            let launch = launch::launch(&wiring, service)?;
            let mut spec = if proxied {
                // Behind the proxy, which holds the published ports: each replica's gRPC port
                // at a free one (to reach one replica directly), its HTTP port not at all.
                ContainerSpec {
                    http: None,
                    ..usersvc(launch, 0)
                }
            } else {
                usersvc(launch, host_port(inputs.ports.gateway))
            };
            spec.secrets
                .push(SecretFile::live(SIGNING_KEYS_FILE, inputs.signing_keys));
            spec
        }
        Service::Proxy => proxy(inputs)?,
    };
    Some(spec)
}

/// HAProxy in front of the gateway replicas, found by their network alias through Docker's DNS,
/// with a slot for as many replicas as the machine holds, so a scale needs no new
/// configuration. None with one gateway.
fn proxy(inputs: &StackInputs<'_>) -> Option<ContainerSpec> {
    if inputs.replicas.of(Service::Proxy) == 0 {
        return None;
    }
    let image = inputs.images.proxy.as_ref()?;
    let config = front::in_container();
    Some(ContainerSpec {
        service: Service::Proxy,
        replica: 1,
        name: inputs.names.container(Service::Proxy),
        image: image.reference.clone(),
        image_id: image.id.clone(),
        // The official image's entrypoint (and the stand-in's) runs `haproxy` in the
        // foreground as master-worker.
        cmd: strings(&[
            "haproxy",
            "-f",
            &format!("{PROXY_CONFIG_DIR}/{PROXY_CONFIG_FILE}"),
        ]),
        env: Vec::new(),
        mounts: Vec::new(),
        published: Some(Published {
            container_port: GATEWAY_PORT,
            host_port: inputs.ports.gateway,
        }),
        http: Some(Published {
            container_port: HTTP_PORT,
            host_port: inputs.ports.http,
        }),
        health: proxy_health(),
        // HAProxy's graceful stop: stop listening, finish what is in flight.
        stop_signal: Some("SIGUSR1"),
        // It binds ports above 1024 as the image's unprivileged user: no capability needed.
        hardened: true,
        secrets: vec![SecretFile::new(PROXY_CONFIG_FILE, config.as_bytes())],
        upload: Upload::PROXY_CONFIG,
    })
}

/// `usersvc health` against the service's own port; over mutual TLS for the store and cache:
/// the probe reads the container's `USERSVC_TLS_*` and checks the server's certificate is for
/// the service's name.
pub fn usersvc_health(launch: &Launch) -> Vec<String> {
    let mut test = strings(&[
        "CMD",
        "/usersvc",
        "health",
        "--addr",
        &format!("127.0.0.1:{}", launch.grpc_port),
    ]);
    if let Some(name) = launch.tls_server_name {
        test.extend(["--tls-server-name".to_owned(), name.to_owned()]);
    }
    test
}

/// Over TCP: during first-start initialisation the image runs a temporary server on the Unix
/// socket only, which must not count as ready.
pub fn postgres_health() -> Vec<String> {
    strings(&[
        "CMD",
        "pg_isready",
        "-h",
        "127.0.0.1",
        "-U",
        "userctl",
        "-d",
        "userctl",
    ])
}

/// The proxy's gRPC door accepts connections. Whether a gateway answers behind it is for `up`
/// to see through the published port; a connection that sends nothing is not logged (`option
/// dontlognull`), so this check does not fill the proxy's log.
pub fn proxy_health() -> Vec<String> {
    strings(&[
        "CMD",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{GATEWAY_PORT}"),
    ])
}

/// Checked every second so `up` learns of readiness quickly. The start period covers the
/// store's 30 s of retrying its database: failures in it read as "starting", not
/// "unhealthy", and the first success ends it at once. (On swarm, a task counts as running
/// only once this passes.)
pub fn health_config(test: &[String]) -> HealthConfig {
    HealthConfig {
        test: Some(test.to_vec()),
        interval: Some(1_000 * NANOS_PER_MS),
        // Generous: a debug build on a busy laptop can take a while to answer.
        timeout: Some(5_000 * NANOS_PER_MS),
        retries: Some(3),
        start_period: Some(30_000 * NANOS_PER_MS),
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

impl ContainerSpec {
    /// A digest of everything that defines the container. Serialising plain structs and vectors
    /// (no hash maps) keeps it stable from one run to the next.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// The Engine API's create body, labelled with the project, the service and the hash.
    pub fn create_body(&self, names: &Names) -> ContainerCreateBody {
        let mut labels = names.labels();
        labels.insert(SERVICE_LABEL.to_owned(), self.service.name().to_owned());
        labels.insert(REPLICA_LABEL.to_owned(), self.replica.to_string());
        labels.insert(HASH_LABEL.to_owned(), self.hash());

        let endpoint = EndpointSettings {
            aliases: Some(vec![self.service.name().to_owned()]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            hostname: Some(self.service.name().to_owned()),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            env: Some(self.env.clone()),
            labels: Some(labels),
            healthcheck: Some(health_config(&self.health)),
            stop_signal: self.stop_signal.map(str::to_owned),
            exposed_ports: self
                .published
                .map(|_| self.ports().map(|published| published.key()).collect()),
            host_config: Some(self.host_config(names)),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(names.network(), endpoint)])),
            }),
            ..Default::default()
        }
    }

    /// Every port this container publishes.
    pub fn ports(&self) -> impl Iterator<Item = Published> {
        self.published.into_iter().chain(self.http)
    }

    fn host_config(&self, names: &Names) -> HostConfig {
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = self
            .ports()
            .map(|published| {
                let host_port = match published.host_port {
                    0 => String::new(),
                    port => port.to_string(),
                };
                let binding = PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(host_port),
                };
                (published.key(), Some(vec![binding]))
            })
            .collect();
        let mounts = self
            .mounts
            .iter()
            .map(|mount| Mount {
                typ: Some(MountType::VOLUME),
                source: Some(mount.volume.clone()),
                target: Some(mount.target.to_owned()),
                ..Default::default()
            })
            .collect();
        HostConfig {
            network_mode: Some(names.network()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: Some(mounts),
            // `up` is what repairs a dead service, so what runs is always what `up` left.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            // Explicit, so `logs` works whatever the engine's default driver, and bounded.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            privileged: Some(false),
            cap_drop: self.hardened.then(|| vec!["ALL".to_owned()]),
            security_opt: self.hardened.then(|| vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> ResolvedImage {
        ResolvedImage {
            reference: name.to_owned(),
            id: format!("sha256:{name}"),
        }
    }

    fn images() -> Images {
        Images {
            usersvc: image("userctl-usersvc:0123456789abcdef"),
            redis: image("redis:7"),
            postgres: Some(image("postgres:15")),
            proxy: Some(image("haproxy:2.6")),
        }
    }

    fn secrets() -> Secrets {
        Secrets {
            redis_password: "redispw".into(),
            postgres_password: "pgpw".into(),
        }
    }

    fn tls(ca: &str) -> Vec<(&'static str, Vec<u8>)> {
        pki::files()
            .into_iter()
            .map(|name| (name, format!("{ca}/{name}").into_bytes()))
            .collect()
    }

    fn specs(store: StoreKind, ports: Ports, signing_keys: &[u8]) -> Vec<ContainerSpec> {
        specs_with_tls(store, ports, signing_keys, &tls("ca"))
    }

    fn specs_with_tls(
        store: StoreKind,
        ports: Ports,
        signing_keys: &[u8],
        tls: &[(&'static str, Vec<u8>)],
    ) -> Vec<ContainerSpec> {
        stack_of(store, ports, Replicas::default(), signing_keys, tls)
    }

    fn stack_of(
        store: StoreKind,
        ports: Ports,
        replicas: Replicas,
        signing_keys: &[u8],
        tls: &[(&'static str, Vec<u8>)],
    ) -> Vec<ContainerSpec> {
        let names = Names::new("t");
        let (secrets, images) = (secrets(), images());
        stack(&StackInputs {
            names: &names,
            store,
            ports,
            replicas,
            secrets: &secrets,
            images: &images,
            signing_keys,
            tls,
            cors_origins: &[],
            token_ttl: std::time::Duration::from_secs(900),
        })
    }

    fn default_ports() -> Ports {
        Ports::default()
    }

    fn find(specs: &[ContainerSpec], service: Service) -> &ContainerSpec {
        specs
            .iter()
            .find(|spec| spec.service == service)
            .expect("service in stack")
    }

    #[test]
    fn the_same_inputs_give_the_same_hashes() {
        let first: Vec<String> = specs(StoreKind::Postgres, default_ports(), b"key")
            .iter()
            .map(|s| s.hash())
            .collect();
        let second: Vec<String> = specs(StoreKind::Postgres, default_ports(), b"key")
            .iter()
            .map(|s| s.hash())
            .collect();
        assert_eq!(first, second);
    }

    #[test]
    fn a_new_key_set_recreates_nothing_and_travels_as_a_live_file() {
        let before = specs(StoreKind::Postgres, default_ports(), b"old keys");
        let after = specs(StoreKind::Postgres, default_ports(), b"new keys");
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(old.hash(), new.hash(), "{:?}", old.service);
        }
        let gateway = after
            .iter()
            .find(|spec| spec.service == Service::Gateway)
            .expect("gateway");
        let keys = gateway
            .secrets
            .iter()
            .find(|secret| secret.name == SIGNING_KEYS_FILE)
            .expect("the key set");
        assert!(keys.is_live());
        assert_eq!(keys.content, b"new keys");
    }

    #[test]
    fn a_new_host_port_recreates_only_that_service() {
        let before = specs(StoreKind::Postgres, default_ports(), b"key");
        let after = specs(
            StoreKind::Postgres,
            Ports {
                cache: 0,
                ..default_ports()
            },
            b"key",
        );
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                old.hash() == new.hash(),
                old.service != Service::Cache,
                "{:?}",
                old.service
            );
        }
    }

    #[test]
    fn a_sqlite_store_runs_no_postgres_and_keeps_its_file_in_a_volume() {
        let specs = specs(StoreKind::Sqlite, default_ports(), b"key");
        assert!(specs.iter().all(|spec| spec.service != Service::Postgres));
        let store = find(&specs, Service::Store);
        assert!(
            store
                .env
                .contains(&"USERSVC_DATABASE_URL=sqlite:///data/userctl.db".to_owned())
        );
        assert_eq!(store.mounts[0].volume, "t-store-data");
        assert_eq!(store.mounts[0].target, "/data");
    }

    #[test]
    fn services_find_each_other_by_service_name() {
        let specs = specs(StoreKind::Postgres, default_ports(), b"key");
        let env = |service| find(&specs, service).env.join(" ");
        assert!(env(Service::Store).contains("@postgres:5432/userctl"));
        assert!(env(Service::Cache).contains("redis://:redispw@redis:6379"));
        assert!(env(Service::Cache).contains("USERSVC_STORE_ADDR=http://store:50053"));
        assert!(env(Service::Gateway).contains("USERSVC_CACHE_ADDR=http://cache:50052"));
        let body = find(&specs, Service::Cache).create_body(&Names::new("t"));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoints");
        assert_eq!(endpoints["t-net"].aliases, Some(vec!["cache".to_owned()]));
    }

    #[test]
    fn only_usersvc_ports_are_published_and_only_on_loopback() {
        let specs = specs(
            StoreKind::Postgres,
            Ports {
                gateway: 0,
                ..default_ports()
            },
            b"key",
        );
        for spec in &specs {
            let bindings = spec
                .create_body(&Names::new("t"))
                .host_config
                .and_then(|h| h.port_bindings);
            match spec.service {
                Service::Postgres | Service::Redis => assert!(bindings.is_none()),
                _ => {
                    let bindings = bindings.expect("published");
                    for published in spec.ports() {
                        let binding = &bindings[&published.key()].as_ref().expect("binding")[0];
                        assert_eq!(
                            binding.host_ip.as_deref(),
                            Some("127.0.0.1"),
                            "{published:?}"
                        );
                    }
                    let binding = &bindings[&spec.published.expect("port").key()]
                        .as_ref()
                        .expect("binding")[0];
                    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
                    let expected = if spec.service == Service::Gateway {
                        ""
                    } else {
                        "5005"
                    };
                    assert!(
                        binding
                            .host_port
                            .as_deref()
                            .is_some_and(|port| port.starts_with(expected))
                    );
                }
            }
        }
    }

    #[test]
    fn the_signing_keys_is_a_file_and_never_in_the_environment() {
        let specs = specs(StoreKind::Postgres, default_ports(), b"very secret key");
        let gateway = find(&specs, Service::Gateway);
        assert!(
            gateway
                .env
                .iter()
                .all(|var| !var.contains("very secret key"))
        );
        assert!(
            gateway
                .env
                .contains(&"USERSVC_SIGNING_KEYS=/run/secrets/signing-keys.json".to_owned())
        );
        assert!(!format!("{gateway:?}").contains("very secret key"));
        let uploaded = gateway
            .secrets
            .iter()
            .find(|secret| secret.name == SIGNING_KEYS_FILE)
            .map(|secret| secret.content.as_slice());
        assert_eq!(uploaded, Some(&b"very secret key"[..]));
    }

    #[test]
    fn each_service_gets_only_the_ca_and_its_own_tls_files_uploaded() {
        for spec in specs(StoreKind::Postgres, default_ports(), b"key") {
            let mut names: Vec<&str> = spec
                .secrets
                .iter()
                .map(|secret| secret.name)
                .filter(|name| *name != SIGNING_KEYS_FILE)
                .collect();
            names.sort_unstable();
            let mut expected: Vec<&str> = match Holder::of(spec.service) {
                None => Vec::new(),
                Some(holder) => vec![pki::CA_CERT, holder.cert_file(), holder.key_file()],
            };
            expected.sort_unstable();
            assert_eq!(names, expected, "{:?}", spec.service);
            assert!(
                spec.env.iter().all(|var| !var.contains("ca/")),
                "no TLS file content in the environment"
            );
        }
    }

    #[test]
    fn new_certificates_recreate_every_service_and_no_database() {
        let before = specs_with_tls(StoreKind::Postgres, default_ports(), b"key", &tls("old"));
        let after = specs_with_tls(StoreKind::Postgres, default_ports(), b"key", &tls("new"));
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                old.hash() == new.hash(),
                !old.service.is_usersvc(),
                "{:?}",
                old.service
            );
        }
    }

    #[test]
    fn the_store_and_cache_health_checks_speak_mutual_tls_and_the_gateways_does_not() {
        let specs = specs(StoreKind::Postgres, default_ports(), b"key");
        for service in [Service::Store, Service::Cache] {
            let health = find(&specs, service).health.join(" ");
            assert!(
                health.ends_with(&format!("--tls-server-name {}", service.name())),
                "{health}"
            );
        }
        let gateway = find(&specs, Service::Gateway).health.join(" ");
        assert!(!gateway.contains("--tls"), "{gateway}");
    }

    fn replicas(gateway: u16, cache: u16, store: u16) -> Replicas {
        Replicas {
            gateway,
            cache,
            store,
        }
    }

    fn with_replicas(replicas: Replicas) -> Vec<ContainerSpec> {
        stack_of(
            StoreKind::Postgres,
            default_ports(),
            replicas,
            b"key",
            &tls("ca"),
        )
    }

    fn hashes(specs: &[ContainerSpec]) -> HashMap<String, String> {
        specs
            .iter()
            .map(|spec| (spec.name.clone(), spec.hash()))
            .collect()
    }

    #[test]
    fn every_replica_is_a_container_under_its_services_alias_the_first_at_the_configured_port() {
        let specs = with_replicas(replicas(1, 3, 2));
        let caches: Vec<&ContainerSpec> = specs
            .iter()
            .filter(|spec| spec.service == Service::Cache)
            .collect();
        let names: Vec<&str> = caches.iter().map(|spec| spec.name.as_str()).collect();
        assert_eq!(names, ["t-cache", "t-cache-2", "t-cache-3"]);
        let ports: Vec<u16> = caches
            .iter()
            .map(|spec| spec.published.expect("published").host_port)
            .collect();
        assert_eq!(ports, [CACHE_PORT, 0, 0]);
        for (index, cache) in caches.iter().enumerate() {
            let body = cache.create_body(&Names::new("t"));
            let labels = body.labels.expect("labels");
            assert_eq!(labels[REPLICA_LABEL], (index + 1).to_string());
            let endpoints = body
                .networking_config
                .and_then(|n| n.endpoints_config)
                .expect("endpoints");
            assert_eq!(endpoints["t-net"].aliases, Some(vec!["cache".to_owned()]));
        }
        assert!(specs.iter().all(|spec| spec.service != Service::Proxy));
    }

    #[test]
    fn scaling_one_service_leaves_every_other_container_as_it_is() {
        let before = hashes(&with_replicas(replicas(2, 1, 1)));
        for after in [
            replicas(2, 3, 1),
            replicas(2, 1, 2),
            replicas(3, 1, 1),
            replicas(4, 2, 3),
        ] {
            let after = hashes(&with_replicas(after));
            for (name, hash) in &before {
                assert_eq!(after.get(name), Some(hash), "{name} changed");
            }
        }
    }

    #[test]
    fn two_gateways_stand_behind_a_proxy_that_holds_the_published_ports() {
        let specs = with_replicas(replicas(2, 1, 1));
        for gateway in specs.iter().filter(|spec| spec.service == Service::Gateway) {
            assert_eq!(gateway.published.expect("published").host_port, 0);
            assert!(gateway.http.is_none(), "{gateway:?}");
        }
        let proxy = find(&specs, Service::Proxy);
        assert_eq!(proxy.name, "t-proxy");
        assert_eq!(proxy.image, "haproxy:2.6");
        assert_eq!(proxy.published.expect("grpc").host_port, GATEWAY_PORT);
        assert_eq!(proxy.http.expect("http").host_port, HTTP_PORT);
        assert_eq!(proxy.stop_signal, Some("SIGUSR1"));
        assert_eq!(proxy.upload.dir, PROXY_CONFIG_DIR);
        let config = String::from_utf8(proxy.secrets[0].content.clone()).expect("text");
        assert!(config.contains("nameserver dns 127.0.0.11:53"), "{config}");
        assert!(config.contains("bind 0.0.0.0:50051 proto h2"), "{config}");
        assert!(
            config.contains("server gateway1 gateway:50051 proto h2"),
            "{config}"
        );

        // Back to one gateway: no proxy, and the gateway holds the ports again.
        let one = with_replicas(replicas(1, 1, 1));
        assert!(one.iter().all(|spec| spec.service != Service::Proxy));
        let gateway = find(&one, Service::Gateway);
        assert_eq!(gateway.published.expect("grpc").host_port, GATEWAY_PORT);
        assert_eq!(gateway.http.expect("http").host_port, HTTP_PORT);
    }

    #[test]
    fn containers_are_labelled_unprivileged_and_never_restarted_by_docker() {
        let names = Names::new("t");
        for spec in specs(StoreKind::Postgres, default_ports(), b"key") {
            let body = spec.create_body(&names);
            let labels = body.labels.expect("labels");
            assert_eq!(labels[PROJECT_LABEL], "t");
            assert_eq!(labels[SERVICE_LABEL], spec.service.name());
            assert_eq!(labels[HASH_LABEL], spec.hash());
            let host = body.host_config.expect("host config");
            assert_eq!(host.privileged, Some(false));
            assert_eq!(
                host.restart_policy.and_then(|p| p.name),
                Some(RestartPolicyNameEnum::NO)
            );
            assert!(names.owns(Some(&labels)));
        }
    }
}
