//! The cache's Redis client. Every call is bounded by the Redis timeout and fails open: the
//! caller gets [`Unavailable`] and falls through to the store, and the failure is counted.

use std::{future::Future, sync::Arc, time::Duration};

use redis::{
    AsyncCommands, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::stats::CacheStats;

/// Redis failed or was too slow; the caller should use the store instead.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

#[derive(Clone)]
pub struct RedisCache {
    /// Multiplexed and self-reconnecting; cloning shares the one connection.
    conn: ConnectionManager,
    timeout: Duration,
    stats: Arc<CacheStats>,
}

impl RedisCache {
    /// Does not connect: the first call does, so the cache starts (and serves from the store)
    /// while Redis is still down.
    pub fn new(url: &str, timeout: Duration, stats: Arc<CacheStats>) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            timeout,
            stats,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut conn = self.conn.clone();
        self.bounded(async move { conn.get(key).await }, true).await
    }

    /// `MGET`: each key's value (`None` when absent), in one round trip.
    pub async fn get_all(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Unavailable> {
        let mut conn = self.conn.clone();
        // MGET by hand: the client's `mget` of one key sends GET, whose reply is no array.
        let mget = redis::cmd("MGET").arg(keys).to_owned();
        self.bounded(async move { mget.query_async(&mut conn).await }, true)
            .await
    }

    /// Writes `(key, value, ttl_secs)` entries in one round trip: `entries` whatever is there,
    /// `if_absent` only where the key does not exist (`SET NX`), so what they say never
    /// replaces what another writer put first (a session's revocation).
    pub async fn set_all(
        &self,
        entries: &[(String, Vec<u8>, u64)],
        if_absent: &[(String, Vec<u8>, u64)],
    ) -> Result<(), Unavailable> {
        if entries.is_empty() && if_absent.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value, ttl) in entries {
            pipe.set_ex(key, value, *ttl).ignore();
        }
        for (key, value, ttl) in if_absent {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("EX")
                .arg(*ttl)
                .ignore();
        }
        let mut conn = self.conn.clone();
        self.bounded(async move { pipe.query_async(&mut conn).await }, true)
            .await
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        self.bounded(async move { conn.del(keys).await }, true)
            .await
    }

    /// Keeps `redis_up` current while nothing else calls Redis. Its failures are not
    /// counted as errors: no request was affected by them.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        self.bounded(
            async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
            false,
        )
        .await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
        count_failure: bool,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.stats.set_redis_up(true);
                Ok(value)
            }
            Ok(Err(err)) => {
                self.stats.redis_failed(count_failure);
                tracing::debug!(error = %err, "redis call failed; falling through to the store");
                Err(Unavailable)
            }
            Err(_) => {
                self.stats.redis_failed(count_failure);
                tracing::debug!(timeout = ?self.timeout, "redis call timed out; falling through to the store");
                Err(Unavailable)
            }
        }
    }
}
