//! The files the local runtime shares between `up` and its supervisor.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    runtime::{Endpoints, RuntimeError, StackSpec},
    stack::{Service, State, loopback_url},
};

/// What `up` asked the supervisor to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Of everything that, when it changes, requires a restart (see [`fingerprint`]).
    pub fingerprint: String,
    pub usersvc: PathBuf,
    pub redis: RedisPlan,
    pub store_port: u16,
    pub cache_port: u16,
    pub gateway_port: u16,
    pub http_port: u16,
    pub database_url: String,
    pub jwt_key: PathBuf,
    /// The stack's CA and certificates (see `pki`); every service speaks mutual TLS inside.
    #[serde(default)]
    pub tls_dir: PathBuf,
    /// Browser origins the gateway's HTTP door allows.
    #[serde(default)]
    pub cors_origins: Vec<String>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessState {
    pub service: Service,
    pub pid: Option<u32>,
    /// Running, Restarting or Stopped.
    pub state: State,
    pub restarts: u64,
    /// Seconds since the epoch when the current process started.
    pub started_at: u64,
}

impl Plan {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            gateway: url(self.gateway_port),
            cache: url(self.cache_port),
            store: url(self.store_port),
            http: Some(url(self.http_port)),
        }
    }

    /// The gRPC address of a `usersvc` service.
    pub fn published(&self, service: Service) -> Option<String> {
        match service {
            Service::Store => Some(url(self.store_port)),
            Service::Cache => Some(url(self.cache_port)),
            Service::Gateway => Some(url(self.gateway_port)),
            Service::Redis | Service::Postgres | Service::Proxy => None,
        }
    }

    pub fn redis_url(&self) -> String {
        match &self.redis {
            RedisPlan::External { url } => url.clone(),
            RedisPlan::Spawn { port, password } => format!("redis://:{password}@127.0.0.1:{port}"),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), RuntimeError> {
        save_json(&dir.join("plan.json"), self)
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, RuntimeError> {
        load_json(&dir.join("plan.json"))
    }
}

impl SupervisorState {
    pub fn process(&self, service: Service) -> Option<&ProcessState> {
        self.services
            .iter()
            .find(|process| process.service == service)
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

pub fn log_path(dir: &Path, service: Service) -> PathBuf {
    dir.join("logs").join(format!("{}.log", service.name()))
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
