//! The stack `up` brings up, from layers, highest first: flags, environment (`USERCTL_*`), the
//! stack file (`userctl.toml` in the working directory, or `--file`), what the last `up` of the
//! project resolved, defaults. [figment] merges the layers and remembers which one each value
//! came from, which `userctl config` shows.
//!
//! ```toml
//! # userctl.toml: every key optional
//! runtime = "auto"            # auto | docker | local | swarm
//! store = "postgres"          # postgres | sqlite (default: postgres on docker, sqlite on local)
//! wait_timeout = "60s"        # humantime
//! token_ttl = "15m"           # lifetime of an access token (humantime)
//! cors_origins = ["http://localhost:3000"]
//! usersvc = "target/release/usersvc"   # relative to the file's directory
//! redis_url = "redis://127.0.0.1:6379" # local runtime: this Redis instead of starting one
//!
//! [replicas]                  # of each usersvc service; scale a running stack with `userctl scale`
//! gateway = 2                 # two or more gateways stand behind a proxy (HAProxy)
//! cache = 2
//! store = 1
//!
//! [ports]                     # published on 127.0.0.1; 0 = any free port
//! gateway = 50051
//! http = 8080
//! cache = 50052
//! store = 50053
//!
//! [images]                    # docker and swarm runtimes
//! redis = "redis:7.2.5"
//! postgres = "postgres:15.8"
//! proxy = "haproxy:2.6.18"    # in front of two or more gateways
//! registry = "host:port/team" # swarm: push the services image there, for every node to pull
//! ```

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment, Metadata, Profile, Provider, Source,
    providers::{Format as _, Serialized, Toml},
    value::{Dict, Map, Tag, Value},
};
use serde::{Deserialize, Serialize};

use crate::{
    args::StackArgs,
    home::ProjectHome,
    stack::{
        CACHE_PORT, DEFAULT_POSTGRES_IMAGE, DEFAULT_PROXY_IMAGE, DEFAULT_REDIS_IMAGE, GATEWAY_PORT,
        HTTP_PORT, Ports, Replicas, RuntimeChoice, RuntimeKind, STORE_PORT, Service, StoreKind,
    },
};

/// The stack file looked for in the working directory when `--file` is not given.
pub const FILE_NAME: &str = "userctl.toml";

/// Where the last `up` recorded what it resolved, in the project's directory. It survives
/// `down`, so a bare `up` brings the same stack back.
const LAST_UP_FILE: &str = "last-up.json";

const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The gateway's own default `--token-ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Bounds of an access token's lifetime: a token must outlive a round trip, and one that
/// lives longer than a day is a session, not an access token.
const TOKEN_TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(5)..=Duration::from_secs(24 * 60 * 60);
const DEFAULT_PORTS: Ports = Ports {
    gateway: GATEWAY_PORT,
    http: HTTP_PORT,
    cache: CACHE_PORT,
    store: STORE_PORT,
};

/// Names of the layers, as figment's metadata carries them.
const FLAG_LAYER: &str = "flag";
const LAST_UP_LAYER: &str = "last up";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value in a layer is wrong; the message names its origin and key.
    #[error("{0}")]
    Invalid(String),
    #[error("stack file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    #[error("cannot {action} {}: {reason}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// One layer's settings: the stack file's schema, and what flags, environment and the last
/// `up` contribute. Absent keys leave the value to the layers below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<RuntimeChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<StoreKind>,
    /// humantime, parsed after merging so a bad one names its layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_timeout: Option<String>,
    /// humantime, like `wait_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cors_origins: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usersvc: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    #[serde(default, skip_serializing_if = "ReplicaSettings::is_empty")]
    replicas: ReplicaSettings,
    #[serde(default, skip_serializing_if = "PortSettings::is_empty")]
    ports: PortSettings,
    #[serde(default, skip_serializing_if = "ImageSettings::is_empty")]
    images: ImageSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<u16>,
}

impl PortSettings {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Replica counts, checked after merging so a bad one names its layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<u16>,
}

impl ReplicaSettings {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn from_changes(changes: &[(Service, u16)]) -> Self {
        let count = |wanted: Service| {
            changes
                .iter()
                .rev()
                .find(|(service, _)| *service == wanted)
                .map(|(_, count)| *count)
        };
        Self {
            gateway: count(Service::Gateway),
            cache: count(Service::Cache),
            store: count(Service::Store),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<String>,
}

impl ImageSettings {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How an environment variable's text becomes a value.
#[derive(Clone, Copy)]
enum EnvValue {
    Text,
    Port,
    /// Comma-separated.
    List,
    /// `gateway=2,cache=3`, as `--replicas` takes it.
    Replicas,
}

/// The environment variables of the layering and the keys they set.
const ENVIRONMENT: &[(&str, &str, EnvValue)] = &[
    ("USERCTL_RUNTIME", "runtime", EnvValue::Text),
    ("USERCTL_STORE", "store", EnvValue::Text),
    ("USERCTL_WAIT_TIMEOUT", "wait_timeout", EnvValue::Text),
    ("USERCTL_TOKEN_TTL", "token_ttl", EnvValue::Text),
    ("USERCTL_CORS_ORIGINS", "cors_origins", EnvValue::List),
    ("USERCTL_USERSVC", "usersvc", EnvValue::Text),
    ("USERCTL_REDIS_URL", "redis_url", EnvValue::Text),
    ("USERCTL_REPLICAS", "replicas", EnvValue::Replicas),
    ("USERCTL_GATEWAY_PORT", "ports.gateway", EnvValue::Port),
    ("USERCTL_HTTP_PORT", "ports.http", EnvValue::Port),
    ("USERCTL_CACHE_PORT", "ports.cache", EnvValue::Port),
    ("USERCTL_STORE_PORT", "ports.store", EnvValue::Port),
    ("USERCTL_REDIS_IMAGE", "images.redis", EnvValue::Text),
    ("USERCTL_POSTGRES_IMAGE", "images.postgres", EnvValue::Text),
    ("USERCTL_PROXY_IMAGE", "images.proxy", EnvValue::Text),
    ("USERCTL_IMAGE_REGISTRY", "images.registry", EnvValue::Text),
];

/// Every key, in the order `userctl config` lists them.
pub const KEYS: [&str; 18] = [
    "runtime",
    "store",
    "wait_timeout",
    "token_ttl",
    "cors_origins",
    "usersvc",
    "redis_url",
    "replicas.gateway",
    "replicas.cache",
    "replicas.store",
    "ports.gateway",
    "ports.http",
    "ports.cache",
    "ports.store",
    "images.redis",
    "images.postgres",
    "images.proxy",
    "images.registry",
];

/// Which layer a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(&'static str),
    File(PathBuf),
    LastUp,
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("flag"),
            Self::Env(var) => write!(f, "env {var}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::LastUp => f.write_str("last up"),
            Self::Default => f.write_str("default"),
        }
    }
}

/// The resolved stack: every layer merged, defaults filled in, every value checked.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The stack file read, if any.
    pub file: Option<PathBuf>,
    pub runtime: RuntimeChoice,
    /// None: the runtime's default (postgres on docker, sqlite on local).
    pub store: Option<StoreKind>,
    pub wait_timeout: Duration,
    /// Lifetime of the access tokens the gateways sign.
    pub token_ttl: Duration,
    pub replicas: Replicas,
    pub ports: Ports,
    /// None: beside this executable, else on PATH.
    pub usersvc: Option<PathBuf>,
    /// None: the pinned default image.
    pub redis_image: Option<String>,
    pub postgres_image: Option<String>,
    pub proxy_image: Option<String>,
    /// Swarm: where the services image is pushed for every node to pull (`host:port/team`).
    pub image_registry: Option<String>,
    pub redis_url: Option<String>,
    pub cors_origins: Vec<String>,
    /// What the layers set, before defaults: what `record` keeps for the next `up`.
    merged: Settings,
    origins: BTreeMap<&'static str, Origin>,
}

/// One line of `userctl config`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: &'static str,
    /// Null when the runtime decides (store, usersvc, redis_url).
    pub value: serde_json::Value,
    pub source: String,
}

impl StackConfig {
    /// Merges the layers for `home`'s project: `flags`, the process environment, the stack
    /// file (`file`, else `userctl.toml` in the working directory when there is one) and the
    /// last `up`.
    pub fn resolve(
        home: &ProjectHome,
        file: Option<&Path>,
        flags: &StackArgs,
    ) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) if path.is_file() => Some(path.to_path_buf()),
            Some(path) => return Err(ConfigError::MissingFile(path.to_path_buf())),
            None => std::env::current_dir()
                .ok()
                .map(|dir| dir.join(FILE_NAME))
                .filter(|path| path.is_file()),
        };
        let environment = ENVIRONMENT
            .iter()
            .filter_map(|(var, key, kind)| {
                let text = std::env::var(var).ok().filter(|text| !text.is_empty())?;
                Some((*var, *key, *kind, text))
            })
            .collect::<Vec<_>>();
        Self::from_layers(
            last_up(home)?,
            file,
            &environment
                .iter()
                .map(|(var, key, kind, text)| (*var, *key, *kind, text.as_str()))
                .collect::<Vec<_>>(),
            flags,
        )
    }

    fn from_layers(
        last_up: Option<Settings>,
        file: Option<PathBuf>,
        environment: &[(&'static str, &'static str, EnvValue, &str)],
        flags: &StackArgs,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(last_up) = &last_up {
            figment = figment.merge(Layer::serialized(LAST_UP_LAYER, last_up)?);
        }
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        for (var, key, kind, text) in environment {
            let value = env_value(*kind, text)
                .map_err(|err| ConfigError::Invalid(format!("env {var}: {err}")))?;
            figment = figment.merge(Layer {
                name: var,
                data: nested(key, value),
            });
        }
        figment = figment.merge(Layer::serialized(FLAG_LAYER, &flag_settings(flags))?);

        let merged: Settings = figment.extract().map_err(|err| invalid(&err))?;
        let origins = KEYS
            .into_iter()
            .filter_map(|key| Some((key, origin(figment.find_metadata(key)?))))
            .collect::<BTreeMap<_, _>>();
        let at = |key: &str| match origins.get(key) {
            Some(Origin::Flag) if key.starts_with("replicas.") => "flag --replicas".to_owned(),
            Some(Origin::Flag) => format!("flag --{}", key.replace('_', "-").trim_end_matches('s')),
            Some(origin) => origin.to_string(),
            None => Origin::Default.to_string(),
        };

        let wait_timeout = match &merged.wait_timeout {
            None => DEFAULT_WAIT_TIMEOUT,
            Some(text) => humantime::parse_duration(text).map_err(|err| {
                ConfigError::Invalid(format!(
                    "{}: wait_timeout {text:?} is not a duration ({err}); use e.g. \"90s\" or \"2m\"",
                    at("wait_timeout")
                ))
            })?,
        };
        let token_ttl = match &merged.token_ttl {
            None => DEFAULT_TOKEN_TTL,
            Some(text) => humantime::parse_duration(text)
                .ok()
                .filter(|ttl| TOKEN_TTL_RANGE.contains(ttl))
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "{}: token_ttl {text:?} is not a duration from 5s to 24h; use e.g. \"15m\"",
                        at("token_ttl")
                    ))
                })?,
        };
        let mut replicas = Replicas::default();
        for (service, count) in [
            (Service::Gateway, merged.replicas.gateway),
            (Service::Cache, merged.replicas.cache),
            (Service::Store, merged.replicas.store),
        ] {
            if let Some(count) = count {
                replicas = replicas.with(&[(service, count)]).map_err(|err| {
                    ConfigError::Invalid(format!("{}: {err}", at(&format!("replicas.{service}"))))
                })?;
            }
        }
        let image_registry = match merged.images.registry.as_deref() {
            None => None,
            Some(registry) => Some(check_registry(registry).map_err(|reason| {
                ConfigError::Invalid(format!(
                    "{}: images.registry {registry:?} {reason}",
                    at("images.registry")
                ))
            })?),
        };
        let cors_origins = merged.cors_origins.clone().unwrap_or_default();
        for entry in &cors_origins {
            check_origin(entry).map_err(|reason| {
                ConfigError::Invalid(format!(
                    "{}: cors_origins {entry:?} {reason}",
                    at("cors_origins")
                ))
            })?;
        }
        // A relative path in the file means relative to the file, so the file works from
        // any directory.
        let usersvc =
            merged
                .usersvc
                .clone()
                .map(|path| match (origins.get("usersvc"), path.is_relative()) {
                    (Some(Origin::File(file)), true) => file
                        .parent()
                        .map_or_else(|| path.clone(), |dir| dir.join(&path)),
                    _ => path,
                });
        Ok(Self {
            file,
            runtime: merged.runtime.unwrap_or(RuntimeChoice::Auto),
            store: merged.store,
            wait_timeout,
            token_ttl,
            replicas,
            ports: Ports {
                gateway: merged.ports.gateway.unwrap_or(DEFAULT_PORTS.gateway),
                http: merged.ports.http.unwrap_or(DEFAULT_PORTS.http),
                cache: merged.ports.cache.unwrap_or(DEFAULT_PORTS.cache),
                store: merged.ports.store.unwrap_or(DEFAULT_PORTS.store),
            },
            usersvc,
            redis_image: merged.images.redis.clone(),
            postgres_image: merged.images.postgres.clone(),
            proxy_image: merged.images.proxy.clone(),
            image_registry,
            redis_url: merged.redis_url.clone(),
            cors_origins,
            merged,
            origins,
        })
    }

    /// Where `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Every key with its value and origin; a password in `redis_url` is masked.
    pub fn entries(&self) -> Vec<Entry> {
        use serde_json::{Value as Json, json};
        KEYS.into_iter()
            .map(|key| {
                let value = match key {
                    "runtime" => json!(self.runtime),
                    "store" => json!(self.store),
                    "wait_timeout" => {
                        json!(humantime::format_duration(self.wait_timeout).to_string())
                    }
                    "token_ttl" => json!(humantime::format_duration(self.token_ttl).to_string()),
                    "cors_origins" => json!(self.cors_origins),
                    "usersvc" => json!(self.usersvc),
                    "redis_url" => json!(self.redis_url.as_deref().map(mask_password)),
                    "replicas.gateway" => json!(self.replicas.gateway),
                    "replicas.cache" => json!(self.replicas.cache),
                    "replicas.store" => json!(self.replicas.store),
                    "ports.gateway" => json!(self.ports.gateway),
                    "ports.http" => json!(self.ports.http),
                    "ports.cache" => json!(self.ports.cache),
                    "ports.store" => json!(self.ports.store),
                    "images.redis" => {
                        json!(self.redis_image.as_deref().unwrap_or(DEFAULT_REDIS_IMAGE))
                    }
                    "images.postgres" => {
                        json!(
                            self.postgres_image
                                .as_deref()
                                .unwrap_or(DEFAULT_POSTGRES_IMAGE)
                        )
                    }
                    "images.proxy" => {
                        json!(self.proxy_image.as_deref().unwrap_or(DEFAULT_PROXY_IMAGE))
                    }
                    "images.registry" => json!(self.image_registry),
                    _ => Json::Null,
                };
                Entry {
                    key,
                    value,
                    source: self.origin(key).to_string(),
                }
            })
            .collect()
    }

    /// Keeps what this `up` resolved for the next one: the runtime and store it used, the
    /// ports as asked for (0 stays 0; the ports chosen are in the stack record), images,
    /// origins, timeout and Redis. Not `usersvc`: the next `up` finds the binary afresh.
    pub fn record(
        &self,
        home: &ProjectHome,
        runtime: RuntimeKind,
        store: StoreKind,
    ) -> Result<(), ConfigError> {
        let record = Settings {
            runtime: Some(match runtime {
                RuntimeKind::Docker => RuntimeChoice::Docker,
                RuntimeKind::Local => RuntimeChoice::Local,
                RuntimeKind::Swarm => RuntimeChoice::Swarm,
            }),
            store: Some(store),
            usersvc: None,
            ..self.merged.clone()
        };
        let path = home.dir.join(LAST_UP_FILE);
        let json = serde_json::to_vec_pretty(&record).map_err(|err| ConfigError::Io {
            action: "encode",
            path: path.clone(),
            reason: err.to_string(),
        })?;
        crate::home::write_private(&path, &json).map_err(|err| ConfigError::Io {
            action: "write",
            path: path.clone(),
            reason: err.to_string(),
        })
    }
}

/// What the last `up` of the project recorded, if anything.
fn last_up(home: &ProjectHome) -> Result<Option<Settings>, ConfigError> {
    let path = home.dir.join(LAST_UP_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(ConfigError::Io {
                action: "read",
                path,
                reason: err.to_string(),
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| ConfigError::Io {
            action: "use",
            reason: format!("{err}; delete it, and the next `up` writes it anew"),
            path,
        })
}

/// The flags given, as a layer.
fn flag_settings(flags: &StackArgs) -> Settings {
    Settings {
        runtime: flags.runtime,
        store: flags.store,
        wait_timeout: flags
            .wait_timeout
            .map(|timeout| humantime::format_duration(timeout).to_string()),
        token_ttl: flags
            .token_ttl
            .map(|ttl| humantime::format_duration(ttl).to_string()),
        cors_origins: (!flags.cors_origins.is_empty()).then(|| flags.cors_origins.clone()),
        usersvc: flags.usersvc.clone(),
        redis_url: flags.redis_url.clone(),
        replicas: flags
            .replicas
            .as_ref()
            .map(|changes| ReplicaSettings::from_changes(&changes.0))
            .unwrap_or_default(),
        ports: PortSettings {
            gateway: flags.gateway_port,
            http: flags.http_port,
            cache: flags.cache_port,
            store: flags.store_port,
        },
        images: ImageSettings {
            redis: flags.redis_image.clone(),
            postgres: flags.postgres_image.clone(),
            proxy: flags.proxy_image.clone(),
            registry: flags.image_registry.clone(),
        },
    }
}

/// A layer with a name of its own, so figment's metadata tells which layer a value came from.
struct Layer {
    name: &'static str,
    data: Dict,
}

impl Layer {
    fn serialized(name: &'static str, settings: &Settings) -> Result<Self, ConfigError> {
        let data = Serialized::defaults(settings)
            .data()
            .map_err(|err| invalid(&err))?
            .remove(&Profile::Default)
            .unwrap_or_default();
        Ok(Self { name, data })
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name).source(Source::Custom(self.name.to_owned()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

fn env_value(kind: EnvValue, text: &str) -> Result<Value, String> {
    Ok(match kind {
        EnvValue::Text => Value::from(text.to_owned()),
        // Not a number: left as text, so the type error names the variable.
        EnvValue::Port => text
            .trim()
            .parse::<i64>()
            .map_or_else(|_| Value::from(text.to_owned()), Value::from),
        EnvValue::List => Value::Array(
            Tag::Default,
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::from(item.to_owned()))
                .collect(),
        ),
        EnvValue::Replicas => Value::Dict(
            Tag::Default,
            Replicas::parse_changes(text)?
                .into_iter()
                .map(|(service, count)| (service.name().to_owned(), Value::from(count)))
                .collect(),
        ),
    })
}

/// `{"ports": {"gateway": value}}` for `ports.gateway`.
fn nested(key: &str, value: Value) -> Dict {
    let mut parts = key.rsplit('.');
    let last = parts.next().unwrap_or(key);
    let mut dict = Dict::from([(last.to_owned(), value)]);
    for part in parts {
        dict = Dict::from([(part.to_owned(), Value::Dict(Tag::Default, dict))]);
    }
    dict
}

fn origin(metadata: &Metadata) -> Origin {
    match (&*metadata.name, &metadata.source) {
        (FLAG_LAYER, _) => Origin::Flag,
        (LAST_UP_LAYER, _) => Origin::LastUp,
        (_, Some(Source::File(path))) => Origin::File(path.clone()),
        (name, _) => ENVIRONMENT
            .iter()
            .find(|(var, _, _)| *var == name)
            .map_or(Origin::Default, |(var, _, _)| Origin::Env(var)),
    }
}

/// One line naming where the bad value is (file, variable or flag), its key and what is wrong.
fn invalid(err: &figment::Error) -> ConfigError {
    use figment::error::Kind;
    let at = err.metadata.as_ref().map_or_else(
        || "configuration".to_owned(),
        |meta| origin(meta).to_string(),
    );
    let mut key = err.path.join(".");
    let what = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if !key.ends_with(field.as_str()) {
                key = if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                };
            }
            format!(
                "unknown key `{key}`; known keys here: {}",
                expected.join(", ")
            )
        }
        Kind::InvalidType(actual, expected) => {
            format!("`{key}` must be {}, not {actual}", readable(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("`{key}` must be {}, not {actual}", readable(expected))
        }
        Kind::UnknownVariant(actual, expected) => {
            format!("`{key}` cannot be {actual:?}; use {}", expected.join(", "))
        }
        // A syntax error: the TOML parser's message spans lines; its first says where.
        Kind::Message(message) if key.is_empty() => {
            let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
            match (lines.first(), lines.last()) {
                (Some(first), Some(last)) if lines.len() > 1 => format!("{first}: {last}"),
                _ => message.clone(),
            }
        }
        kind => format!("`{key}`: {kind}"),
    };
    ConfigError::Invalid(format!("{at}: {what}"))
}

/// Serde's expected-type words, as a user reads them.
fn readable(expected: &str) -> &str {
    match expected {
        "u16" => "a port number from 0 to 65535",
        other => other,
    }
}

/// A registry and path images are pushed to, as `host[:port][/path]`: no scheme (Docker names
/// images without one), nothing empty; a trailing `/` is dropped.
fn check_registry(registry: &str) -> Result<String, &'static str> {
    let registry = registry.trim().trim_end_matches('/');
    if registry.is_empty() {
        Err("is empty: name where your nodes pull images from, e.g. host:port/team")
    } else if registry.contains("://") {
        Err("has a scheme: give host:port/team, as image names are written")
    } else if registry
        .chars()
        .any(|c| c.is_whitespace() || c.is_ascii_uppercase() || c == '@')
    {
        Err("is not a registry name: use lowercase host:port/team")
    } else {
        Ok(registry.to_owned())
    }
}

/// An origin, as a browser sends it: `scheme://host[:port]`, nothing after.
pub fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin.trim() == "*" {
        return Err(
            "is refused: allowing every origin lets any page a user visits call the API; list the origins instead",
        );
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("is not an origin: expected scheme://host[:port], e.g. http://localhost:3000");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("has a scheme other than http or https");
    }
    if rest.contains(['/', '?', '#']) {
        return Err(
            "has a path: an origin is scheme://host[:port] only (drop everything from the first / after the host)",
        );
    }
    // The last colon starts a port unless it is inside an IPv6 literal's brackets.
    let (host, port) = match rest.rfind(':') {
        Some(at) if !rest[at..].contains(']') => (&rest[..at], Some(&rest[at + 1..])),
        _ => (rest, None),
    };
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err("has a port that is not a number from 0 to 65535");
    }
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err("has no valid host: expected scheme://host[:port]");
    }
    Ok(())
}

/// `redis://user:****@host` for `redis://user:secret@host`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:****@{host}{path}")
            } else {
                // redis://secret@host: the lone userinfo is the password.
                format!("{scheme}://****@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
