use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, str::FromStr, time::Duration};

use crate::secret_url::{self, SecretUrlError};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "USERSVC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address to serve the HTTP/JSON API on (browsers, curl); an empty value turns it off.
    // `::std::option::Option` keeps clap from treating the flag as optional: the parser itself
    // maps "" to `None`, so the default can still be switched off from the environment.
    #[arg(
        long,
        env = "USERSVC_HTTP_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = parse_http_listen
    )]
    pub http_listen: ::std::option::Option<SocketAddr>,

    /// Browser origin allowed to call the HTTP API (CORS), e.g. `http://localhost:3000`; repeat
    /// the flag, or separate origins with commas in the variable. None by default.
    #[arg(
        long = "cors-origin",
        env = "USERSVC_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// The entry cache (or, without a cache and without TLS, the store: both speak UserStore;
    /// with TLS the server here must hold the cache's certificate).
    #[arg(
        long,
        env = "USERSVC_CACHE_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub cache_addr: String,

    /// The stack's token signing key set (`signing-keys.json`, written by `userctl`), read
    /// again every second so a rotation reaches every replica.
    #[arg(long, env = "USERSVC_SIGNING_KEYS")]
    pub signing_keys: PathBuf,

    /// Lifetime of an access token.
    #[arg(long, env = "USERSVC_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// Password hashes computed at once, each in a 19 MiB buffer kept for the gateway's
    /// lifetime; default: one per core.
    #[arg(long, env = "USERSVC_HASH_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub hash_concurrency: Option<u32>,

    /// Password hashes (registrations and logins) one peer address may have queued or running;
    /// more are refused at once with RESOURCE_EXHAUSTED / HTTP 429.
    #[arg(long, env = "USERSVC_HASH_JOBS_PER_PEER", default_value = "64", value_parser = clap::value_parser!(u32).range(1..))]
    pub hash_jobs_per_peer: u32,

    /// Registrations per minute from one peer address before it is throttled. Every attempt
    /// that passes validation counts, successful or not.
    #[arg(long, env = "USERSVC_REGISTRATIONS_PER_PEER", default_value = "60")]
    pub registrations_per_peer: NonZeroU32,

    /// Failed logins per minute for one account before it is throttled.
    #[arg(long, env = "USERSVC_FAILED_LOGINS_PER_ACCOUNT", default_value = "5")]
    pub failed_logins_per_account: NonZeroU32,

    /// Failed logins per minute from one peer address before it is throttled.
    #[arg(long, env = "USERSVC_FAILED_LOGINS_PER_PEER", default_value = "30")]
    pub failed_logins_per_peer: NonZeroU32,

    /// Longest a connection may take to send a request's headers (HTTP/1.1) or its HTTP/2
    /// preface (gRPC). The wait for the next request on a kept-alive HTTP connection counts
    /// too, so an idle HTTP connection is closed after this long.
    #[arg(long, env = "USERSVC_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_timeout: Duration,

    /// HTTP connections served at once; further ones wait in the listen backlog.
    #[arg(long, env = "USERSVC_HTTP_MAX_CONNECTIONS", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// gRPC connections served at once; further ones wait in the listen backlog.
    #[arg(long, env = "USERSVC_GRPC_MAX_CONNECTIONS", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_connections: u32,

    /// Redis that keeps the login throttle's counters, shared by every gateway on it (the same
    /// URL the cache is given). Without it, or while it is down, each gateway limits on its own.
    #[arg(long, env = "USERSVC_REDIS_URL")]
    pub redis_url: Option<RedisUrl>,

    /// A file holding the Redis URL (an orchestrator's secret), instead of --redis-url.
    #[arg(
        long,
        env = "USERSVC_REDIS_URL_FILE",
        value_name = "PATH",
        conflicts_with = "redis_url"
    )]
    pub redis_url_file: Option<PathBuf>,

    /// With TLS, the gateway presents its certificate to the cache. Its own gRPC and HTTP
    /// ports stay plaintext: they are the stack's front door.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

impl Config {
    /// The Redis URL for the throttle's counters, from its file when one is given.
    pub fn redis_url(&self) -> Result<Option<String>, SecretUrlError> {
        match (&self.redis_url_file, &self.redis_url) {
            (Some(path), _) => secret_url::read("--redis-url-file", path).map(Some),
            (None, url) => Ok(url.as_ref().map(|url| url.0.clone())),
        }
    }
}

/// A duration such as `10s` or `500ms`; zero would close every connection before it spoke.
fn parse_timeout(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(timeout) if timeout.is_zero() => Err("must be more than zero, e.g. 10s".into()),
        Ok(timeout) => Ok(timeout),
        Err(err) => Err(format!("{err}; expected a duration such as 10s or 500ms")),
    }
}

/// A Redis URL, which may carry a password: its `Debug` shows the scheme only, since the
/// gateway logs its config at start.
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl FromStr for RedisUrl {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split_once("://").map_or("?", |(scheme, _)| scheme);
        write!(f, "{scheme}://…")
    }
}

fn parse_http_listen(value: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    let value = value.trim();
    if value.is_empty() {
        Ok(None)
    } else {
        value.parse().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Config {
        let args = ["usersvc", "--signing-keys", "k"].iter().chain(args);
        Cli::try_parse_from(args).expect("valid flags").config
    }

    #[test]
    fn http_is_on_by_default_and_an_empty_address_turns_it_off() {
        assert_eq!(
            parse(&[]).http_listen,
            Some("127.0.0.1:8080".parse().expect("address"))
        );
        assert_eq!(parse(&["--http-listen", ""]).http_listen, None);
        assert_eq!(
            parse(&["--http-listen", "0.0.0.0:8080"]).http_listen,
            Some("0.0.0.0:8080".parse().expect("address"))
        );
    }

    #[test]
    fn connection_limits_have_defaults_and_refuse_zero() {
        let config = parse(&[]);
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.http_max_connections, 1024);
        assert_eq!(config.grpc_max_connections, 1024);
        let config = parse(&[
            "--header-timeout",
            "500ms",
            "--http-max-connections",
            "2",
            "--grpc-max-connections",
            "3",
        ]);
        assert_eq!(config.header_timeout, Duration::from_millis(500));
        assert_eq!(config.http_max_connections, 2);
        assert_eq!(config.grpc_max_connections, 3);
        for flag in ["--http-max-connections", "--grpc-max-connections"] {
            let args = ["usersvc", "--signing-keys", "k", flag, "0"];
            assert!(Cli::try_parse_from(args).is_err(), "{flag} 0");
        }
    }

    #[test]
    fn hashing_and_registration_limits_have_defaults_and_refuse_zero() {
        let config = parse(&[]);
        assert_eq!(config.hash_concurrency, None);
        assert_eq!(config.hash_jobs_per_peer, 64);
        assert_eq!(config.registrations_per_peer.get(), 60);
        let config = parse(&[
            "--hash-concurrency",
            "3",
            "--hash-jobs-per-peer",
            "8",
            "--registrations-per-peer",
            "1000",
        ]);
        assert_eq!(config.hash_concurrency, Some(3));
        assert_eq!(config.hash_jobs_per_peer, 8);
        assert_eq!(config.registrations_per_peer.get(), 1000);
        for flag in [
            "--hash-concurrency",
            "--hash-jobs-per-peer",
            "--registrations-per-peer",
        ] {
            let args = ["usersvc", "--signing-keys", "k", flag, "0"];
            assert!(Cli::try_parse_from(args).is_err(), "{flag} 0");
        }
    }

    #[test]
    fn the_redis_url_is_optional_and_never_printed() {
        assert!(parse(&[]).redis_url.is_none());
        let config = parse(&["--redis-url", "redis://:hunter2@redis:6379"]);
        assert_eq!(
            config.redis_url.as_ref().map(|url| url.0.as_str()),
            Some("redis://:hunter2@redis:6379")
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn cors_origins_repeat_or_split_on_commas() {
        assert!(parse(&[]).cors_origins.is_empty());
        assert_eq!(
            parse(&[
                "--cors-origin",
                "http://a.test,http://b.test",
                "--cors-origin",
                "http://c.test"
            ])
            .cors_origins,
            ["http://a.test", "http://b.test", "http://c.test"]
        );
    }
}
