//! Wiring: one [`GatewayService`] behind two listeners, gRPC (`--listen`) and HTTP/JSON
//! (`--http-listen`), run and drained together.

use std::{net::SocketAddr, sync::Arc};

use tokio_util::sync::CancellationToken;
use userctl_proto::{
    gateway::v1::gateway_server::GatewayServer, user::v1::user_store_client::UserStoreClient,
};

use super::{
    Config,
    http::{
        self, HttpLimits, HttpServer, HttpState, InvalidOrigin, metrics::Metrics,
        metrics::MetricsError,
    },
    password::Passwords,
    service::GatewayService,
    throttle::{Limits, LoginThrottle},
    token::{KeyError, TokenKeys},
};
use crate::{
    client::{self, InvalidAddress},
    secret_url::SecretUrlError,
    server::{MAX_REQUEST_BYTES, ServeError, Server},
    tls::{CACHE_NAME, TlsError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid --cache-addr")]
    CacheAddr(#[from] InvalidAddress),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("invalid --cors-origin")]
    Cors(#[from] InvalidOrigin),
    #[error("invalid --redis-url")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    RedisUrl(#[from] SecretUrlError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot serve HTTP (--http-listen; an empty value turns HTTP off)")]
    Http(#[source] ServeError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Grpc(#[from] ServeError),
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
}

/// The gateway's listeners, bound and not yet serving.
pub struct Gateway {
    grpc: Server,
    /// `None` when HTTP is turned off.
    http: Option<HttpServer>,
}

impl Gateway {
    /// The gRPC address.
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.grpc.local_addr()
    }

    /// The HTTP address, unless HTTP is turned off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Serves both until `shutdown` is cancelled, then drains both. Should either fail, the
    /// other is stopped too: a gateway missing half its API must not look healthy.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let grpc = async {
            self.grpc
                .run_until_stopped(shutdown.clone())
                .await
                .map_err(RunError::Grpc)
        };
        match self.http {
            Some(http) => {
                let http = async {
                    http.run_until_stopped(shutdown.clone())
                        .await
                        .map_err(RunError::Http)
                };
                tokio::try_join!(grpc, http).map(|_| ())
            }
            None => grpc.await,
        }
    }
}

/// Loads the signing keys (and watches their file until `shutdown`) and binds both listeners. The cache need not be
/// up yet: the channel connects on first use. The cache replicas' discovery (when
/// `--cache-addr` names several) stops with `shutdown`, which must be the token the gateway is
/// then run with: `/readyz` reports the drain from it.
pub async fn build(config: &Config, shutdown: &CancellationToken) -> Result<Gateway, StartupError> {
    let keys = Arc::new(TokenKeys::load(&config.signing_keys, config.token_ttl)?);
    keys.clone().watch(shutdown.clone());
    let cors = http::cors(&config.cors_origins)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let hash_concurrency = config
        .hash_concurrency
        .map_or(cores, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let jobs_per_peer = usize::try_from(config.hash_jobs_per_peer).unwrap_or(usize::MAX);
    let passwords = Passwords::new(hash_concurrency, jobs_per_peer);
    let tls = config.tls.load()?;
    let cache = client::connect(
        &config.cache_addr,
        tls.as_ref().map(|tls| tls.client(CACHE_NAME)),
        shutdown,
    )?;
    let users = UserStoreClient::new(client::traced(cache.clone()));
    let limits = Limits {
        failed_logins_per_account: config.failed_logins_per_account,
        failed_logins_per_peer: config.failed_logins_per_peer,
        registrations_per_peer: config.registrations_per_peer,
    };
    let throttle = LoginThrottle::new(limits, config.redis_url()?.as_deref())?;
    let metrics = Arc::new(Metrics::new()?);
    let gateway = GatewayService::new(users, passwords, keys, throttle, metrics.login_counters());

    let grpc = Server::bind(config.listen)
        .await?
        .handshake_timeout(config.header_timeout)
        .max_connections(usize::try_from(config.grpc_max_connections).unwrap_or(usize::MAX))
        .add_service(
            GatewayServer::new(gateway.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        );
    let http = match config.http_listen {
        Some(addr) => {
            let state = HttpState {
                gateway,
                cache,
                metrics,
                requests: grpc.requests(),
                draining: shutdown.clone(),
            };
            let router = http::router(state, cors);
            let limits = HttpLimits {
                header_timeout: config.header_timeout,
                max_connections: usize::try_from(config.http_max_connections).unwrap_or(usize::MAX),
            };
            Some(
                HttpServer::bind(addr, router, limits)
                    .await
                    .map_err(StartupError::Http)?,
            )
        }
        None => None,
    };
    Ok(Gateway { grpc, http })
}
