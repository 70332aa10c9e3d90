use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use userctl_proto::{
    cache::v1::cache_stats_server::CacheStatsServer,
    user::v1::{user_store_client::UserStoreClient, user_store_server::UserStoreServer},
};

use super::{
    Config,
    redis::RedisCache,
    service::{CacheService, StatsService},
    stats::CacheStats,
};
use crate::{
    client::{self, InvalidAddress},
    secret_url::SecretUrlError,
    server::{MAX_REQUEST_BYTES, ServeError, Server},
    tls::{Callers, GATEWAY_NAME, STORE_NAME, TlsError, USERCTL_NAME},
};

/// How often an otherwise idle cache checks that Redis answers, so `redis_up` and the breaker
/// stay current: once a breaker cool-down, so an open breaker closes soon after Redis is back
/// even with no reads coming in.
const REDIS_PROBE_INTERVAL: Duration = super::breaker::COOL_DOWN;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid --redis-url")]
    RedisUrl(#[source] redis::RedisError),
    #[error(transparent)]
    RedisUrlFile(#[from] SecretUrlError),
    #[error("invalid --store-addr")]
    StoreAddr(#[from] InvalidAddress),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Binds the listener and starts the Redis probe and (when `--store-addr` names several
/// replicas) their discovery, which stop with `shutdown`. Neither Redis nor the store needs to
/// be up yet.
pub async fn build(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(Server, JoinHandle<()>), StartupError> {
    let stats = Arc::new(CacheStats::default());
    let redis = RedisCache::new(&config.redis_url()?, config.redis_timeout, stats.clone())
        .map_err(StartupError::RedisUrl)?;
    let tls = config.tls.load()?;
    let store_tls = tls.as_ref().map(|tls| tls.client(STORE_NAME));
    let store = UserStoreClient::new(client::traced(client::connect(
        &config.store_addr,
        store_tls,
        &shutdown,
    )?));

    let probe = tokio::spawn(probe_redis(redis.clone(), shutdown.clone()));
    let cache = CacheService::new(redis, store, stats.clone(), config.ttl, config.negative_ttl);
    let users = UserStoreServer::new(cache).max_decoding_message_size(MAX_REQUEST_BYTES);
    let server = Server::bind(config.listen)
        .await?
        .tls(tls.as_ref().map(|tls| tls.acceptor()))
        // Users and their password hashes: for the gateway, and for `userctl bench`, whose
        // single-flight check reads through the cache.
        .add_service(InterceptedService::new(
            users,
            Callers(&[GATEWAY_NAME, USERCTL_NAME]),
        ))
        .add_service(CacheStatsServer::new(StatsService::new(stats, shutdown)));
    Ok((server, probe))
}

async fn probe_redis(redis: RedisCache, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(REDIS_PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => redis.ping().await,
        }
    }
}
