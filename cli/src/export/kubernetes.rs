//! The stack as a kustomize base (docs/design.md, "export kubernetes"): Deployments for the
//! three `usersvc` services started exactly as every runtime starts them ([`launch`]),
//! StatefulSets for Redis and Postgres, Services, NetworkPolicies and PodDisruptionBudgets.
//! Every object is a `serde_json::Value` built here and written as YAML by [`super::yaml`]; no
//! I/O happens in this module.
//!
//! Secrets are referenced by name only (mounted files and `secretKeyRef`); the passwords reach
//! the services' URLs through Kubernetes' `$(VAR)` expansion of an environment variable read
//! from a Secret, so no value is written here. `create-secrets.sh` makes them.

use serde_json::{Value, json};

use super::yaml;
use crate::{
    pki::{self, Holder},
    runtime::{
        docker::{SECRETS_DIR, SERVICE_UID, SIGNING_KEYS_FILE},
        launch::{self, Launch, Secret, Wiring},
    },
    stack::{CACHE_PORT, GATEWAY_PORT, HTTP_PORT, Ports, Replicas, STORE_PORT, Service},
};

/// The oldest and newest Kubernetes minor versions the base is written for: gRPC probes are
/// stable from 1.27, and every field used here exists, unchanged, through 1.33.
pub const OLDEST: KubeVersion = KubeVersion { minor: 27 };
pub const NEWEST: KubeVersion = KubeVersion { minor: 33 };
pub const DEFAULT_VERSION: &str = "1.30";

/// Secrets the base refers to by name; `create-secrets.sh` makes them.
pub const SIGNING_KEYS_SECRET: &str = "userctl-signing-keys";
pub const REDIS_SECRET: &str = "userctl-redis";
pub const POSTGRES_SECRET: &str = "userctl-postgres";
/// The key of a password in [`REDIS_SECRET`] and [`POSTGRES_SECRET`].
pub const PASSWORD_KEY: &str = "password";

/// Kubernetes `1.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub minor: u16,
}

impl KubeVersion {
    /// `1.30`, `v1.30` or `1.30.2`, within [`OLDEST`]..=[`NEWEST`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let unknown = || {
            format!(
                "unknown Kubernetes version {text:?}: use one from {OLDEST} to {NEWEST} (e.g. {DEFAULT_VERSION})"
            )
        };
        let trimmed = text.trim().trim_start_matches('v');
        let mut parts = trimmed.split('.');
        let (Some("1"), Some(minor), patch, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unknown());
        };
        if patch.is_some_and(|patch| patch.parse::<u16>().is_err()) {
            return Err(unknown());
        }
        let version = Self {
            minor: minor.parse().map_err(|_| unknown())?,
        };
        if (OLDEST..=NEWEST).contains(&version) {
            Ok(version)
        } else {
            Err(unknown())
        }
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// What the base is rendered from.
#[derive(Debug, Clone)]
pub struct Export {
    pub replicas: Replicas,
    pub version: KubeVersion,
    /// `[REG/]userctl-usersvc:TAG`.
    pub usersvc_image: String,
    pub redis_image: String,
    pub postgres_image: String,
}

/// One file of the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: &'static str,
    pub content: String,
    pub executable: bool,
}

/// The script that makes the Secrets, shipped with the base.
pub const CREATE_SECRETS: &str = include_str!("create-secrets.sh");
pub const CREATE_SECRETS_FILE: &str = "create-secrets.sh";
pub const KUSTOMIZATION_FILE: &str = "kustomization.yaml";

/// Every file of the base, `kustomization.yaml` first.
pub fn render(export: &Export) -> Vec<File> {
    let resources: Vec<(&'static str, Vec<Value>)> = vec![
        ("gateway.yaml", usersvc(export, Service::Gateway)),
        ("cache.yaml", usersvc(export, Service::Cache)),
        ("store.yaml", usersvc(export, Service::Store)),
        ("redis.yaml", redis(export)),
        ("postgres.yaml", postgres(export)),
        ("network-policies.yaml", network_policies()),
    ];
    let header = format!(
        "# userctl's stack for Kubernetes {} ({}), written by `userctl export kubernetes`.\n",
        export.version, export.replicas
    );
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
    });
    let mut files = vec![File {
        name: KUSTOMIZATION_FILE,
        content: format!(
            "{header}# 1. ./{CREATE_SECRETS_FILE} -n NAMESPACE: the Secrets these files name (no secret is in them)\n\
             # 2. the image {} where the nodes can pull it\n\
             # 3. kubectl apply -k . -n NAMESPACE\n{}",
            export.usersvc_image,
            yaml::document(&kustomization)
        ),
        executable: false,
    }];
    files.extend(resources.into_iter().map(|(name, objects)| File {
        name,
        content: format!("{header}{}", yaml::documents(&objects)),
        executable: false,
    }));
    files.push(File {
        name: CREATE_SECRETS_FILE,
        content: CREATE_SECRETS.to_owned(),
        executable: true,
    });
    files
}

/// The Secret holding `service`'s TLS files: the CA certificate, its certificate and key.
pub fn tls_secret(holder: Holder) -> String {
    format!("userctl-{}-tls", holder.name())
}

/// `app.kubernetes.io/part-of: userctl` and `app.kubernetes.io/name: NAME` on every object; a
/// service's pods are selected by both.
fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/part-of": "userctl", "app.kubernetes.io/name": name})
}

fn metadata(name: &str, component: &str) -> Value {
    json!({"name": name, "labels": labels(component)})
}

fn object(api_version: &str, kind: &str, name: &str, component: &str, spec: Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata(name, component),
        "spec": spec,
    })
}

/// An environment variable read from a Secret's key.
fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// The environment variable holding Redis's password, and Postgres's.
const REDIS_PASSWORD_ENV: &str = "REDIS_PASSWORD";
const POSTGRES_PASSWORD_ENV: &str = "POSTGRES_PASSWORD";

/// Connections each store replica's pool holds at most (`services/src/store/database.rs`).
const STORE_POOL: u16 = 16;

/// How the services find each other on a cluster: by the Services' names, which resolve to
/// every ready replica (headless), and with the passwords expanded by Kubernetes from
/// variables defined before them.
fn wiring() -> Wiring<'static> {
    Wiring {
        bind: "0.0.0.0",
        listen: Ports::default(),
        store_addr: format!("http://{}:{STORE_PORT}", Service::Store.name()),
        cache_addr: format!("http://{}:{CACHE_PORT}", Service::Cache.name()),
        database_url: Secret::Value(format!(
            "postgres://userctl:$({POSTGRES_PASSWORD_ENV})@{}:5432/userctl",
            Service::Postgres.name()
        )),
        redis_url: Secret::Value(format!(
            "redis://:$({REDIS_PASSWORD_ENV})@{}:6379",
            Service::Redis.name()
        )),
        signing_keys_file: format!("{SECRETS_DIR}/{SIGNING_KEYS_FILE}"),
        tls_dir: SECRETS_DIR.to_owned(),
        cors_origins: &[],
        token_ttl: crate::config::DEFAULT_TOKEN_TTL,
    }
}

/// The pod-level hardening every pod gets: a non-root user, the runtime's seccomp profile, no
/// service account token (nothing here calls the Kubernetes API), no service links.
fn pod_security(uid: u64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        // Mounted Secrets and volumes are group-owned by it, so the user can read and write them.
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

fn resources(
    cpu_request: &str,
    memory_request: &str,
    cpu_limit: &str,
    memory_limit: &str,
) -> Value {
    json!({
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    })
}

/// The probes of a `usersvc` container: the gateway's plaintext gRPC port is probed by the
/// kubelet (`grpc`); the store and cache answer only mutual TLS, which the kubelet cannot
/// speak, so they are probed from inside the container by `usersvc health`, as the docker
/// runtime's health check does, with the container's own certificate.
fn usersvc_probe(launch: &Launch) -> Value {
    match launch.tls_server_name {
        None => json!({"grpc": {"port": launch.grpc_port}}),
        Some(name) => json!({"exec": {"command": [
            "/usersvc", "health",
            "--addr", format!("127.0.0.1:{}", launch.grpc_port),
            "--tls-server-name", name,
        ]}}),
    }
}

/// Readiness every 5 s (a replica leaves its Service's addresses after two failures),
/// liveness every 10 s, and a startup probe that allows a minute: the store retries its
/// database for 30 s at start.
fn probes(handler: &Value) -> [(&'static str, Value); 3] {
    let with = |extra: Value| {
        let mut probe = handler.clone();
        if let (Some(probe), Value::Object(extra)) = (probe.as_object_mut(), extra) {
            probe.extend(extra);
        }
        probe
    };
    [
        (
            "startupProbe",
            with(json!({"periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 30})),
        ),
        (
            "readinessProbe",
            with(json!({"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2})),
        ),
        (
            "livenessProbe",
            with(json!({"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3})),
        ),
    ]
}

/// The Secret-backed variables a service's other settings refer to, defined before them.
fn usersvc_secret_env(service: Service) -> Vec<Value> {
    match service {
        Service::Store => vec![secret_env(
            POSTGRES_PASSWORD_ENV,
            POSTGRES_SECRET,
            PASSWORD_KEY,
        )],
        Service::Cache | Service::Gateway => {
            vec![secret_env(REDIS_PASSWORD_ENV, REDIS_SECRET, PASSWORD_KEY)]
        }
        Service::Redis | Service::Postgres | Service::Proxy => Vec::new(),
    }
}

/// Requests and limits: the gateway hashes passwords (19 MiB per hash in flight, one buffer per
/// core it may use), the cache and store mostly wait on the network.
fn usersvc_resources(service: Service) -> Value {
    match service {
        Service::Gateway => resources("250m", "128Mi", "2", "256Mi"),
        _ => resources("100m", "64Mi", "1", "128Mi"),
    }
}

/// A `usersvc` service: its Deployment, its Service and its PodDisruptionBudget.
fn usersvc(export: &Export, service: Service) -> Vec<Value> {
    let Some(launch) = launch::launch(&wiring(), service) else {
        return Vec::new();
    };
    let Some(holder) = Holder::of(service) else {
        return Vec::new();
    };
    let name = service.name();
    let selector = labels(name);
    let mut env = usersvc_secret_env(service);
    env.extend(
        launch
            .env
            .iter()
            .map(|(key, value)| json!({"name": key, "value": value})),
    );
    let mut ports = vec![json!({"name": "grpc", "containerPort": launch.grpc_port})];
    if let Some(http) = launch.http_port {
        ports.push(json!({"name": "http", "containerPort": http}));
    }
    // Only the CA certificate and this service's own certificate and key (and the gateway's
    // signing key), at the paths the launch names, readable by the service's group only.
    let tls_items: Vec<Value> = [pki::CA_CERT, holder.cert_file(), holder.key_file()]
        .into_iter()
        .map(|file| json!({"key": file, "path": file}))
        .collect();
    let mut sources = vec![json!({"secret": {"name": tls_secret(holder), "items": tls_items}})];
    if service == Service::Gateway {
        sources.push(json!({"secret": {
            "name": SIGNING_KEYS_SECRET,
            "items": [{"key": SIGNING_KEYS_FILE, "path": SIGNING_KEYS_FILE}],
        }}));
    }
    let mut container = json!({
        "name": name,
        "image": export.usersvc_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usersvc"],
        "args": launch.args,
        "env": env,
        "ports": ports,
        "resources": usersvc_resources(service),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": true}],
    });
    if let Some(container) = container.as_object_mut() {
        container
            .extend(probes(&usersvc_probe(&launch)).map(|(key, probe)| (key.to_owned(), probe)));
    }
    let deployment = object(
        "apps/v1",
        "Deployment",
        name,
        name,
        json!({
            "replicas": export.replicas.of(service),
            "selector": {"matchLabels": selector},
            // A new replica serves for two discovery rounds (the clients re-resolve every
            // second) before the next old one stops; none stops before its successor is ready.
            "minReadySeconds": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(name)},
                "spec": {
                    "securityContext": pod_security(SERVICE_UID),
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    // SIGTERM: 1 s reporting NOT_SERVING, then up to 10 s for calls in flight.
                    "terminationGracePeriodSeconds": 15,
                    // Across nodes when there are several; a one-node cluster still schedules.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector},
                    }],
                    "containers": [container],
                    "volumes": [{"name": "secrets", "projected": {"defaultMode": 0o440, "sources": sources}}],
                },
            },
        }),
    );
    let service_spec = if service == Service::Gateway {
        // The front door: one address for users. Calls on one HTTP/2 connection stay on one
        // gateway (L4); put an HTTP/2-aware proxy or ingress in front to spread a single client.
        json!({
            "selector": selector,
            "ports": [
                {"name": "grpc", "port": GATEWAY_PORT, "targetPort": "grpc"},
                {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
            ],
        })
    } else {
        // Headless: the name resolves to every ready replica, and the clients balance over
        // them (docs/design.md, "Replicas").
        json!({
            "clusterIP": "None",
            "selector": selector,
            "ports": [{"name": "grpc", "port": launch.grpc_port, "targetPort": "grpc"}],
        })
    };
    let budget = object(
        "policy/v1",
        "PodDisruptionBudget",
        name,
        name,
        // One replica down at a time for a drain or an upgrade; with one replica that one
        // may go, so run two for no downtime.
        json!({"maxUnavailable": 1, "selector": {"matchLabels": labels(name)}}),
    );
    vec![
        deployment,
        object("v1", "Service", name, name, service_spec),
        budget,
    ]
}

/// The uid and gid of the `redis` and `postgres` users in their official images.
const DATABASE_UID: u64 = 999;

/// One database: a StatefulSet of one with a volume claim, and the headless Service that
/// governs it and by whose name the services reach it.
struct Database {
    service: Service,
    image: String,
    port: u16,
    args: Vec<String>,
    env: Vec<Value>,
    probe: Value,
    data_path: &'static str,
    /// Writable directories besides the data, on a read-only root filesystem.
    scratch: Vec<(&'static str, &'static str)>,
    resources: Value,
    pre_stop: Option<Value>,
}

fn database(db: Database) -> Vec<Value> {
    let name = db.service.name();
    let mut mounts = vec![json!({"name": "data", "mountPath": db.data_path})];
    let mut volumes = Vec::new();
    for (volume, path) in &db.scratch {
        mounts.push(json!({"name": volume, "mountPath": path}));
        volumes.push(json!({"name": volume, "emptyDir": {}}));
    }
    let mut container = json!({
        "name": name,
        "image": db.image,
        "imagePullPolicy": "IfNotPresent",
        "args": db.args,
        "env": db.env,
        "ports": [{"name": name, "containerPort": db.port}],
        "readinessProbe": merged(&db.probe, json!({"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2})),
        "livenessProbe": merged(&db.probe, json!({"initialDelaySeconds": 30, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6})),
        "resources": db.resources,
        "securityContext": container_security(),
        "volumeMounts": mounts,
    });
    if let (Some(container), Some(pre_stop)) = (container.as_object_mut(), db.pre_stop) {
        container.insert("lifecycle".to_owned(), json!({"preStop": pre_stop}));
    }
    let statefulset = object(
        "apps/v1",
        "StatefulSet",
        name,
        name,
        json!({
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels(name)},
            "template": {
                "metadata": {"labels": labels(name)},
                "spec": {
                    "securityContext": pod_security(DATABASE_UID),
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [{
                "metadata": metadata("data", name),
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }],
        }),
    );
    let service = object(
        "v1",
        "Service",
        name,
        name,
        json!({
            "clusterIP": "None",
            "selector": labels(name),
            "ports": [{"name": name, "port": db.port, "targetPort": name}],
        }),
    );
    vec![statefulset, service]
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

fn redis(export: &Export) -> Vec<Value> {
    database(Database {
        service: Service::Redis,
        image: export.redis_image.clone(),
        port: 6379,
        // Expanded by Kubernetes from the variable: the manifest holds only its name.
        args: vec![
            "redis-server".to_owned(),
            "--requirepass".to_owned(),
            format!("$({REDIS_PASSWORD_ENV})"),
            "--appendonly".to_owned(),
            "yes".to_owned(),
        ],
        env: vec![
            secret_env(REDIS_PASSWORD_ENV, REDIS_SECRET, PASSWORD_KEY),
            // redis-cli reads the password from here, so the probe carries none.
            secret_env("REDISCLI_AUTH", REDIS_SECRET, PASSWORD_KEY),
        ],
        probe: json!({"exec": {"command": ["redis-cli", "ping"]}}),
        data_path: "/data",
        scratch: Vec::new(),
        resources: resources("100m", "64Mi", "500m", "256Mi"),
        pre_stop: None,
    })
}

/// Postgres. Its connection limit follows the store's replicas: each holds a pool of
/// [`STORE_POOL`], one more replica runs during a rolling update, and a few are spare.
fn postgres(export: &Export) -> Vec<Value> {
    let connections = STORE_POOL * (export.replicas.store + 1) + 10;
    let data = "/var/lib/postgresql/data";
    database(Database {
        service: Service::Postgres,
        image: export.postgres_image.clone(),
        port: 5432,
        args: vec![
            "postgres".to_owned(),
            "-c".to_owned(),
            format!("max_connections={connections}"),
        ],
        env: vec![
            secret_env(POSTGRES_PASSWORD_ENV, POSTGRES_SECRET, PASSWORD_KEY),
            json!({"name": "POSTGRES_USER", "value": "userctl"}),
            json!({"name": "POSTGRES_DB", "value": "userctl"}),
            // A directory inside the volume: a fresh volume's root may hold lost+found.
            json!({"name": "PGDATA", "value": format!("{data}/pgdata")}),
        ],
        // Over TCP: during first-start initialisation the image's temporary server listens on
        // the Unix socket only, which must not count as ready.
        probe: json!({"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", "userctl", "-d", "userctl"]}}),
        data_path: data,
        scratch: vec![("run", "/var/run/postgresql"), ("tmp", "/tmp")],
        resources: resources("250m", "256Mi", "1", "512Mi"),
        // SIGTERM is Postgres's smart shutdown, which waits for the stores' pooled connections
        // to close; a fast shutdown ends them and checkpoints before the grace period runs out.
        pre_stop: Some(
            json!({"exec": {"command": ["pg_ctl", "stop", "-m", "fast", "-D", format!("{data}/pgdata")]}}),
        ),
    })
}

/// Who may talk to whom: nothing, except what these allow. Only the gateway is reachable from
/// outside; the cache only from the gateway, the store only from the cache, Redis from the
/// cache and the gateway (its login throttle), Postgres from the store; every pod may ask the
/// cluster's DNS.
fn network_policies() -> Vec<Value> {
    let pods = |name: &str| json!({"podSelector": {"matchLabels": labels(name)}});
    let tcp = |port: u16| json!({"protocol": "TCP", "port": port});
    let policy = |name: &str, spec: Value| {
        object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            &format!("userctl-{name}"),
            name,
            spec,
        )
    };
    let part_of = json!({"matchLabels": {"app.kubernetes.io/part-of": "userctl"}});
    vec![
        object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "userctl-default-deny",
            "userctl",
            json!({"podSelector": part_of, "policyTypes": ["Ingress", "Egress"]}),
        ),
        object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "userctl-dns",
            "userctl",
            json!({
                "podSelector": part_of,
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }],
            }),
        ),
        policy(
            "gateway",
            json!({
                "podSelector": {"matchLabels": labels("gateway")},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [tcp(GATEWAY_PORT), tcp(HTTP_PORT)]}],
                "egress": [
                    {"to": [pods("cache")], "ports": [tcp(CACHE_PORT)]},
                    {"to": [pods("redis")], "ports": [tcp(6379)]},
                ],
            }),
        ),
        policy(
            "cache",
            json!({
                "podSelector": {"matchLabels": labels("cache")},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [pods("gateway")], "ports": [tcp(CACHE_PORT)]}],
                "egress": [
                    {"to": [pods("store")], "ports": [tcp(STORE_PORT)]},
                    {"to": [pods("redis")], "ports": [tcp(6379)]},
                ],
            }),
        ),
        policy(
            "store",
            json!({
                "podSelector": {"matchLabels": labels("store")},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [pods("cache")], "ports": [tcp(STORE_PORT)]}],
                "egress": [{"to": [pods("postgres")], "ports": [tcp(5432)]}],
            }),
        ),
        policy(
            "redis",
            json!({
                "podSelector": {"matchLabels": labels("redis")},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [pods("cache"), pods("gateway")], "ports": [tcp(6379)]}],
            }),
        ),
        policy(
            "postgres",
            json!({
                "podSelector": {"matchLabels": labels("postgres")},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [pods("store")], "ports": [tcp(5432)]}],
            }),
        ),
    ]
}

#[cfg(test)]
mod tests;
