use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use crate::secret_url::{self, SecretUrlError};

#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "USERSVC_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// Redis to cache in, e.g. `redis://:password@127.0.0.1:6379` or `redis+unix:///path.sock`.
    #[arg(
        long,
        env = "USERSVC_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// A file holding the Redis URL (an orchestrator's secret), instead of --redis-url.
    #[arg(
        long,
        env = "USERSVC_REDIS_URL_FILE",
        value_name = "PATH",
        conflicts_with = "redis_url"
    )]
    pub redis_url_file: Option<PathBuf>,

    /// The entry store to fall back on.
    #[arg(
        long,
        env = "USERSVC_STORE_ADDR",
        default_value = "http://127.0.0.1:50053"
    )]
    pub store_addr: String,

    /// How long a user stays cached (each key gets ±10% jitter so entries do not expire together).
    #[arg(long, env = "USERSVC_TTL", default_value = "300s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// How long a "no such user" answer stays cached.
    #[arg(long, env = "USERSVC_NEGATIVE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub negative_ttl: Duration,

    /// A Redis call slower than this is abandoned and the store answers instead.
    #[arg(long, env = "USERSVC_REDIS_TIMEOUT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// With TLS, the cache serves only callers with a certificate from the stack's CA and
    /// presents its own to the store.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

impl Config {
    /// The Redis URL, from its file when one is given.
    pub fn redis_url(&self) -> Result<String, SecretUrlError> {
        match &self.redis_url_file {
            Some(path) => secret_url::read("--redis-url-file", path),
            None => Ok(self.redis_url.clone()),
        }
    }
}

// The Redis URL may carry a password: never print it.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("store_addr", &self.store_addr)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("redis_timeout", &self.redis_timeout)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}
