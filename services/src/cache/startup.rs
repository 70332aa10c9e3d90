use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
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
    server::{MAX_REQUEST_BYTES, ServeError, Server},
};

/// How often an otherwise idle cache checks that Redis answers, so `redis_up` stays current.
const REDIS_PROBE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid --redis-url")]
    RedisUrl(#[source] redis::RedisError),
    #[error("invalid --store-addr")]
    StoreAddr(#[from] InvalidAddress),
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
    let redis = RedisCache::new(&config.redis_url, config.redis_timeout, stats.clone())
        .map_err(StartupError::RedisUrl)?;
    let store = UserStoreClient::new(client::connect(&config.store_addr, &shutdown)?);

    let probe = tokio::spawn(probe_redis(redis.clone(), shutdown.clone()));
    let cache = CacheService::new(redis, store, stats.clone(), config.ttl, config.negative_ttl);
    let server = Server::bind(config.listen)
        .await?
        .add_service(UserStoreServer::new(cache).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(CacheStatsServer::new(StatsService::new(stats, shutdown)));
    Ok((server, probe))
}

async fn probe_redis(redis: RedisCache, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(REDIS_PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => { let _ = redis.ping().await; }
        }
    }
}
