//! The cache's Redis client. Every call is bounded by the Redis timeout and fails open: the
//! caller gets [`Unavailable`] and falls through to the store, and the failure is counted.
//! Reads and write-backs pass the [breaker](super::breaker) first, so while Redis is failing
//! they do not wait for it at all; invalidations always try, since one that is skipped leaves
//! a stale entry behind.

use std::{future::Future, sync::Arc, time::Duration};

use redis::{
    AsyncCommands, IntoConnectionInfo as _, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
    io::tcp::TcpSettings,
};

use super::{breaker::Admission, stats::CacheStats};

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
        // Small commands, many in flight: without TCP_NODELAY (redis-rs leaves it off) a
        // command can wait behind an unacknowledged one (Nagle's algorithm).
        let info = url
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
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
        self.guarded(async move { conn.get(key).await }).await
    }

    /// `MGET`: each key's value (`None` when absent), in one round trip.
    pub async fn get_all(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Unavailable> {
        let mut conn = self.conn.clone();
        // MGET by hand: the client's `mget` of one key sends GET, whose reply is no array.
        let mget = redis::cmd("MGET").arg(keys).to_owned();
        self.guarded(async move { mget.query_async(&mut conn).await })
            .await
    }

    /// Writes `(key, value, ttl_secs)` entries in one round trip: `entries` whatever is there,
    /// `if_absent` only where the key does not exist (`SET NX`), so what they say never
    /// replaces what another writer put first (a session's revocation). Skipped while the
    /// breaker is open: a write-back can wait for Redis to come back.
    pub async fn set_all(
        &self,
        entries: &[(String, Vec<u8>, u64)],
        if_absent: &[(String, Vec<u8>, u64)],
    ) -> Result<(), Unavailable> {
        if self.breaker_skips() {
            return Err(Unavailable);
        }
        self.set_all_now(entries, if_absent).await
    }

    /// [`Self::set_all`] even while the breaker is open, for what must not be skipped (a
    /// session's revocation).
    pub async fn set_all_now(
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

    /// Tried even while the breaker is open: a skipped delete would leave a stale entry.
    pub async fn delete(&self, keys: &[String]) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        self.bounded(async move { conn.del(keys).await }, true)
            .await
    }

    /// Keeps `redis_up` and the breaker current while nothing else calls Redis: a `PING`
    /// while the breaker is closed, the breaker's probe once its cool-down is over. Failures
    /// here are not counted as errors: no request was affected by them.
    pub async fn ping(&self) {
        match self.stats.breaker.admit_probe() {
            Admission::Call | Admission::SkipAndProbe => self.probe().await,
            Admission::Skip => {}
        }
    }

    /// Whether the breaker says to skip Redis now; starts its probe when it is due.
    fn breaker_skips(&self) -> bool {
        match self.stats.breaker.admit() {
            Admission::Call => false,
            Admission::Skip => true,
            Admission::SkipAndProbe => {
                let probe = self.clone();
                tokio::spawn(async move { probe.probe().await });
                true
            }
        }
    }

    /// A call that passes the breaker first.
    async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, Unavailable> {
        if self.breaker_skips() {
            return Err(Unavailable);
        }
        self.bounded(call, true).await
    }

    async fn probe(&self) {
        let mut conn = self.conn.clone();
        let _ = self
            .bounded(
                async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
                false,
            )
            .await;
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
        count_failure: bool,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.stats.set_redis_up(true);
                self.stats.breaker.succeeded();
                Ok(value)
            }
            Ok(Err(err)) => {
                self.stats.breaker.failed();
                self.stats.redis_failed(count_failure);
                tracing::debug!(error = %err, "redis call failed; falling through to the store");
                Err(Unavailable)
            }
            Err(_) => {
                self.stats.breaker.failed();
                self.stats.redis_failed(count_failure);
                tracing::debug!(timeout = ?self.timeout, "redis call timed out; falling through to the store");
                Err(Unavailable)
            }
        }
    }
}
