//! The files the local runtime shares between `up` and its supervisor.
//!
//! A plan names every replica's ports. The first store and cache replica and the front door
//! (the only gateway, or the proxy in front of two or more) keep the configured ports, so
//! scripts and `userctl` find them where they always were; every other replica gets a free
//! port. A plan written before replicas existed lists no replicas and reads as one of each at
//! the published ports.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    runtime::{
        Endpoints, RuntimeError, StackSpec,
        front::{Front, GatewayAddr, Gateways},
    },
    stack::{Replicas, Service, State, loopback_url},
};

/// What `up` asked the supervisor to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Of everything that, when it changes, requires a restart (see [`fingerprint`]). The
    /// replica counts are not part of it: changing them converges a running stack instead.
    pub fingerprint: String,
    /// One more than the plan before; the supervisor reports which generation it runs.
    #[serde(default)]
    pub generation: u64,
    pub usersvc: PathBuf,
    pub redis: RedisPlan,
    /// The published ports: the first store and cache replica's, and the front door's (the
    /// only gateway's, or the proxy's with two or more).
    pub store_port: u16,
    pub cache_port: u16,
    pub gateway_port: u16,
    pub http_port: u16,
    /// The gRPC port of each store replica, the first at `store_port`.
    #[serde(default)]
    pub stores: Vec<u16>,
    /// The gRPC port of each cache replica, the first at `cache_port`.
    #[serde(default)]
    pub caches: Vec<u16>,
    /// Each gateway replica's ports; with one, the published ones.
    #[serde(default)]
    pub gateways: Vec<GatewayPorts>,
    /// The `haproxy` program, with two or more gateways.
    #[serde(default)]
    pub haproxy: Option<PathBuf>,
    /// How long the supervisor waits for a replica it starts while converging.
    #[serde(default = "default_wait_ms")]
    pub wait_timeout_ms: u64,
    pub database_url: String,
    pub signing_keys: PathBuf,
    /// The stack's CA and certificates (see `pki`); every service speaks mutual TLS inside.
    #[serde(default)]
    pub tls_dir: PathBuf,
    /// Browser origins the gateway's HTTP door allows.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Lifetime of the access tokens the gateways sign.
    #[serde(default = "default_token_ttl_ms")]
    pub token_ttl_ms: u64,
}

/// One gateway replica's gRPC and HTTP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPorts {
    pub grpc: u16,
    pub http: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum RedisPlan {
    /// A Redis the user runs (`--redis-url`).
    External { url: String },
    /// A `redis-server` the supervisor starts on 127.0.0.1 with a generated password.
    Spawn { port: u16, password: String },
}

/// What the supervisor reports about itself and its processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SupervisorState {
    pub pid: u32,
    pub services: Vec<ProcessState>,
    /// Whether this supervisor converges to a new plan on SIGHUP (one from before replicas
    /// would die of the signal instead).
    #[serde(default)]
    pub converges: bool,
    /// The plan generation the supervisor last converged to, or tried to.
    #[serde(default)]
    pub applied: u64,
    /// Why converging to generation `applied` failed; none when it runs it.
    #[serde(default)]
    pub error: Option<String>,
    /// What converging is doing now, for `up`'s progress.
    #[serde(default)]
    pub phase: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessState {
    pub service: Service,
    /// Which replica, from 1 (the proxy, Redis: 1).
    #[serde(default = "first_replica")]
    pub replica: u16,
    pub pid: Option<u32>,
    /// Running, Restarting or Stopped.
    pub state: State,
    /// Times the process exited on its own and was started again.
    pub restarts: u64,
    /// Seconds since the epoch when the current process started.
    pub started_at: u64,
}

fn first_replica() -> u16 {
    1
}

fn default_wait_ms() -> u64 {
    60_000
}

fn default_token_ttl_ms() -> u64 {
    15 * 60 * 1000
}

/// Picks a free port for a new replica of a service (see `PortPicker` in the runtime).
pub type PickPort<'a> = dyn FnMut(Service) -> Result<u16, RuntimeError> + 'a;

impl Plan {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            gateway: url(self.gateway_port),
            cache: url(self.cache_port),
            store: url(self.store_port),
            http: Some(url(self.http_port)),
        }
    }

    /// How many replicas of each service the plan runs.
    pub fn replicas(&self) -> Replicas {
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Replicas {
            gateway: count(self.gateways.len()),
            cache: count(self.caches.len()),
            store: count(self.stores.len()),
        }
    }

    /// Whether HAProxy holds the published gateway ports: with two or more gateways.
    pub fn has_proxy(&self) -> bool {
        self.gateways.len() >= 2
    }

    /// The gRPC address of one replica: a `usersvc` replica's own, or the proxy's (the
    /// published gateway address).
    pub fn address(&self, service: Service, replica: u16) -> Option<String> {
        let index = usize::from(replica.checked_sub(1)?);
        match service {
            Service::Store => self.stores.get(index).copied().map(url),
            Service::Cache => self.caches.get(index).copied().map(url),
            Service::Gateway => self.gateways.get(index).map(|ports| url(ports.grpc)),
            Service::Proxy => (index == 0 && self.has_proxy()).then(|| url(self.gateway_port)),
            Service::Redis | Service::Postgres => None,
        }
    }

    /// The published gRPC front door: the proxy's, or the only gateway's.
    pub fn front_url(&self) -> String {
        url(self.gateway_port)
    }

    /// Every store replica, as the cache's `--store-addr` takes them.
    pub fn store_addrs(&self) -> String {
        join_urls(self.stores.iter().copied())
    }

    /// Every cache replica, as the gateway's `--cache-addr` takes them.
    pub fn cache_addrs(&self) -> String {
        join_urls(self.caches.iter().copied())
    }

    /// What the proxy listens on and where it sends calls; none with one gateway.
    pub fn front(&self) -> Option<Front> {
        self.has_proxy().then(|| Front {
            grpc_bind: format!("127.0.0.1:{}", self.gateway_port),
            http_bind: format!("127.0.0.1:{}", self.http_port),
            gateways: Gateways::Listed(
                self.gateways
                    .iter()
                    .map(|ports| GatewayAddr {
                        host: "127.0.0.1".to_owned(),
                        grpc_port: ports.grpc,
                        http_port: ports.http,
                    })
                    .collect(),
            ),
        })
    }

    /// This plan with `replicas`: the replicas that stay keep their ports, new ones get ports
    /// from `pick`. The first store and cache replica are at the published ports; one gateway
    /// holds the published gateway ports, and with two or more every gateway has ports of its
    /// own (the proxy holds the published ones), so crossing between one and two moves them.
    pub fn with_replicas(
        mut self,
        replicas: Replicas,
        pick: &mut PickPort<'_>,
    ) -> Result<Self, RuntimeError> {
        self.stores = resized(&self.stores, self.store_port, replicas.store, || {
            pick(Service::Store)
        })?;
        self.caches = resized(&self.caches, self.cache_port, replicas.cache, || {
            pick(Service::Cache)
        })?;
        let published = GatewayPorts {
            grpc: self.gateway_port,
            http: self.http_port,
        };
        self.gateways = if replicas.gateway <= 1 {
            vec![published]
        } else {
            let mut gateways: Vec<GatewayPorts> = self
                .gateways
                .iter()
                .copied()
                .filter(|ports| *ports != published)
                .take(usize::from(replicas.gateway))
                .collect();
            while gateways.len() < usize::from(replicas.gateway) {
                gateways.push(GatewayPorts {
                    grpc: pick(Service::Gateway)?,
                    http: pick(Service::Gateway)?,
                });
            }
            gateways
        };
        Ok(self)
    }

    pub fn save(&self, dir: &Path) -> Result<(), RuntimeError> {
        save_json(&dir.join("plan.json"), self)
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, RuntimeError> {
        Ok(load_json::<Self>(&dir.join("plan.json"))?.map(Self::normalized))
    }

    /// A plan from before replicas: one of each, at the published ports.
    fn normalized(mut self) -> Self {
        if self.stores.is_empty() {
            self.stores = vec![self.store_port];
        }
        if self.caches.is_empty() {
            self.caches = vec![self.cache_port];
        }
        if self.gateways.is_empty() {
            self.gateways = vec![GatewayPorts {
                grpc: self.gateway_port,
                http: self.http_port,
            }];
        }
        self
    }

    pub fn redis_url(&self) -> String {
        match &self.redis {
            RedisPlan::External { url } => url.clone(),
            RedisPlan::Spawn { port, password } => format!("redis://:{password}@127.0.0.1:{port}"),
        }
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    pub fn token_ttl(&self) -> Duration {
        Duration::from_millis(self.token_ttl_ms)
    }
}

/// `count` ports: the first `first`, those of `current` that stay, then new ones.
fn resized(
    current: &[u16],
    first: u16,
    count: u16,
    mut pick: impl FnMut() -> Result<u16, RuntimeError>,
) -> Result<Vec<u16>, RuntimeError> {
    let count = usize::from(count.max(1));
    let mut ports: Vec<u16> = std::iter::once(first)
        .chain(current.iter().copied().skip(1))
        .take(count)
        .collect();
    while ports.len() < count {
        ports.push(pick()?);
    }
    Ok(ports)
}

fn join_urls(ports: impl Iterator<Item = u16>) -> String {
    ports.map(url).collect::<Vec<_>>().join(",")
}

impl SupervisorState {
    pub fn process(&self, service: Service, replica: u16) -> Option<&ProcessState> {
        self.services
            .iter()
            .find(|process| process.service == service && process.replica == replica)
    }

    pub fn save(&self, dir: &Path) -> Result<(), RuntimeError> {
        save_json(&state_path(dir), self)
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, RuntimeError> {
        load_json(&state_path(dir))
    }
}

/// Identifies a configuration: the usersvc binary (size and mtime), the Redis choice, the
/// requested ports and the stack's certificates. Equal fingerprints mean `up` has nothing to
/// change.
pub fn fingerprint(
    spec: &StackSpec,
    tls: &[(&'static str, Vec<u8>)],
) -> Result<String, RuntimeError> {
    let meta = fs::metadata(&spec.usersvc)
        .map_err(|err| RuntimeError::other(format!("reading {}", spec.usersvc.display()), err))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(spec.usersvc.to_string_lossy().as_bytes());
    hash.update(meta.len().to_le_bytes());
    hash.update(mtime.as_nanos().to_le_bytes());
    hash.update(spec.redis_url.as_deref().unwrap_or("").as_bytes());
    hash.update(spec.token_ttl.as_millis().to_le_bytes());
    for origin in &spec.cors_origins {
        hash.update(origin.as_bytes());
        hash.update([0]);
    }
    for port in [
        spec.ports.gateway,
        spec.ports.http,
        spec.ports.cache,
        spec.ports.store,
    ] {
        hash.update(port.to_le_bytes());
    }
    for (name, content) in tls {
        hash.update(name.as_bytes());
        hash.update(Sha256::digest(content));
    }
    Ok(hex::encode(&hash.finalize()[..16]))
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// `logs/cache.log` for the first replica (where it always was), `logs/cache.2.log` for the
/// second.
pub fn log_path(dir: &Path, service: Service, replica: u16) -> PathBuf {
    let name = match replica {
        0 | 1 => format!("{}.log", service.name()),
        n => format!("{}.{n}.log", service.name()),
    };
    dir.join("logs").join(name)
}

/// The proxy's configuration, which its master process reads again on SIGUSR2.
pub fn proxy_config_path(dir: &Path) -> PathBuf {
    dir.join("haproxy.cfg")
}

fn url(port: u16) -> String {
    loopback_url(port)
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let json = serde_json::to_vec_pretty(value)
        .map_err(|err| RuntimeError::other("encoding local state", err))?;
    Ok(crate::home::write_private(path, &json)?)
}

fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| RuntimeError::other(format!("reading {}", path.display()), err)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(RuntimeError::other(
            format!("reading {}", path.display()),
            err,
        )),
    }
}

/// A plan with no replica yet, as unit tests start from (here and in the supervisor's).
#[cfg(test)]
pub(super) fn sample() -> Plan {
    Plan {
        fingerprint: "f".into(),
        generation: 0,
        usersvc: "usersvc".into(),
        redis: RedisPlan::External {
            url: "redis://127.0.0.1:6379".into(),
        },
        store_port: 50053,
        cache_port: 50052,
        gateway_port: 50051,
        http_port: 8080,
        stores: Vec::new(),
        caches: Vec::new(),
        gateways: Vec::new(),
        haproxy: None,
        wait_timeout_ms: default_wait_ms(),
        database_url: "sqlite://userctl.db".into(),
        signing_keys: "signing-keys.json".into(),
        tls_dir: "tls".into(),
        cors_origins: Vec::new(),
        token_ttl_ms: default_token_ttl_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        sample()
    }

    /// Ports from 40000 up, as a picker would give them.
    fn picker() -> impl FnMut(Service) -> Result<u16, RuntimeError> {
        let mut next = 40_000;
        move |_| {
            next += 1;
            Ok(next)
        }
    }

    fn replicas(gateway: u16, cache: u16, store: u16) -> Replicas {
        Replicas {
            gateway,
            cache,
            store,
        }
    }

    #[test]
    fn a_plan_from_before_replicas_reads_as_one_of_each_at_the_published_ports() {
        let mut json = serde_json::to_value(plan()).expect("json");
        for key in [
            "stores",
            "caches",
            "gateways",
            "generation",
            "wait_timeout_ms",
        ] {
            json.as_object_mut().expect("object").remove(key);
        }
        let old: Plan = serde_json::from_value(json).expect("an old plan reads");
        let old = old.normalized();
        assert_eq!(old.replicas(), Replicas::default());
        assert!(!old.has_proxy());
        assert_eq!(old.store_addrs(), "http://127.0.0.1:50053");
        assert_eq!(
            old.address(Service::Gateway, 1).as_deref(),
            Some("http://127.0.0.1:50051")
        );
        assert_eq!(old.wait_timeout(), Duration::from_secs(60));
    }

    #[test]
    fn new_replicas_get_free_ports_and_the_first_keeps_the_published_one() {
        let mut pick = picker();
        let plan = plan()
            .with_replicas(replicas(1, 3, 2), &mut pick)
            .expect("plan");
        assert_eq!(plan.stores, [50053, 40001]);
        assert_eq!(plan.caches, [50052, 40002, 40003]);
        assert_eq!(
            plan.store_addrs(),
            "http://127.0.0.1:50053,http://127.0.0.1:40001"
        );
        assert!(plan.front().is_none(), "no proxy with one gateway");

        let smaller = plan
            .clone()
            .with_replicas(replicas(1, 2, 2), &mut pick)
            .expect("plan");
        assert_eq!(
            smaller.caches,
            [50052, 40002],
            "the replicas that stay keep their ports"
        );
        assert_eq!(smaller.stores, plan.stores);
    }

    #[test]
    fn two_gateways_move_the_published_ports_to_the_proxy_and_back() {
        let mut pick = picker();
        let one = plan()
            .with_replicas(Replicas::default(), &mut pick)
            .expect("plan");
        let two = one
            .clone()
            .with_replicas(replicas(2, 1, 1), &mut pick)
            .expect("plan");
        assert!(two.has_proxy());
        assert!(
            two.gateways
                .iter()
                .all(|ports| ports.grpc != 50051 && ports.http != 8080),
            "every gateway has ports of its own: {:?}",
            two.gateways
        );
        assert_eq!(two.front_url(), "http://127.0.0.1:50051");
        let front = two.front().expect("a proxy");
        assert_eq!(front.grpc_bind, "127.0.0.1:50051");
        assert_eq!(front.http_bind, "127.0.0.1:8080");

        let three = two
            .clone()
            .with_replicas(replicas(3, 1, 1), &mut pick)
            .expect("plan");
        assert_eq!(
            three.gateways[..2],
            two.gateways[..],
            "gateways that stay keep ports"
        );

        let back = three
            .with_replicas(Replicas::default(), &mut pick)
            .expect("plan");
        assert_eq!(back.gateways, one.gateways);
        assert!(!back.has_proxy());
    }

    #[test]
    fn the_first_replica_logs_where_it_always_did() {
        let dir = Path::new("/x");
        assert_eq!(
            log_path(dir, Service::Cache, 1),
            Path::new("/x/logs/cache.log")
        );
        assert_eq!(
            log_path(dir, Service::Cache, 2),
            Path::new("/x/logs/cache.2.log")
        );
    }
}
