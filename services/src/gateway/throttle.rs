//! Brute-force and flood protection over a sliding one-minute window: login attempts are
//! limited per account and per peer address, registrations per peer address.
//!
//! An attempt is *reserved* before its password is hashed or verified, in one atomic step that
//! both checks the budget and counts the attempt; a key whose budget is spent is refused before
//! any password work. So no more attempts than the limit are ever judged, however many arrive
//! at once. A successful login gives its reservation back ([`LoginThrottle::release`]): the
//! login limit is on failures, and a busy legitimate client is never slowed. A registration's
//! reservation is never given back: each one costs a hash and an account, whatever its outcome.
//!
//! The counters live in Redis (one Lua script per reservation, so every gateway replica sees
//! them) when `--redis-url` is given. Without Redis, or while it fails, the same limits hold per
//! process, in memory, with the same reserve-before-verify step: never no limit at all.
//!
//! The window is a log of reservation times per key (a sorted set in Redis), not a fixed
//! window, so no burst of twice the limit fits across a window boundary.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{
    RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

/// How far back attempts count.
const WINDOW: Duration = Duration::from_secs(60);

/// A Redis call slower than this is abandoned and the per-process limits decide instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// In-memory keys kept before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// Checks every key's budget and, only if all have room, records the attempt in each: one
/// atomic step in Redis. KEYS: the keys to count against (see [`Key`]). ARGV: window in
/// milliseconds, the reservation's id, then one limit per key. Returns `{wait_ms, count...}`:
/// wait 0 with each key's count after reserving, or the wait until the fullest key has room.
const RESERVE: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local wait = 0
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window)
  local count = redis.call('ZCARD', key)
  counts[i] = count
  if count >= tonumber(ARGV[2 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local key_wait = tonumber(oldest[2]) + window - now_ms
    if key_wait > wait then wait = key_wait end
  end
end
if wait > 0 then return {wait} end
local reply = {0}
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now_ms, ARGV[2])
  redis.call('PEXPIRE', key, window)
  reply[i + 1] = counts[i] + 1
end
return reply
";

/// Gives a reservation back. KEYS as for [`RESERVE`]; ARGV: the reservation's id.
const RELEASE: &str = r"
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return 0
";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Failed logins for one account.
    Account(String),
    /// Failed logins from one peer address.
    Peer(IpAddr),
    /// Registrations from one peer address.
    Registrations(IpAddr),
}

impl Key {
    /// Namespaced like the cache's keys, so both can share one Redis.
    fn redis_key(&self) -> String {
        match self {
            Key::Account(email) => format!("userctl:throttle:account:{email}"),
            Key::Peer(ip) => format!("userctl:throttle:peer:{ip}"),
            Key::Registrations(ip) => format!("userctl:throttle:registrations:{ip}"),
        }
    }
}

/// Each budget, per minute.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub failed_logins_per_account: NonZeroU32,
    pub failed_logins_per_peer: NonZeroU32,
    pub registrations_per_peer: NonZeroU32,
}

/// An attempt that was let through; give it back with [`LoginThrottle::release`] if it must
/// not count (the login succeeded, or was never judged).
#[derive(Debug)]
pub struct Reservation {
    id: u64,
    keys: Vec<(Key, u32)>,
    /// Where it was counted, so it is given back there.
    in_redis: bool,
}

pub struct LoginThrottle {
    limits: Limits,
    /// Shared with every gateway on the same Redis; `None` without `--redis-url`.
    redis: Option<ConnectionManager>,
    /// Used without Redis and while it fails.
    local: Mutex<HashMap<Key, VecDeque<(Instant, u64)>>>,
    /// Whether the last Redis call failed, so the fallback is logged once per outage.
    redis_down: AtomicBool,
}

impl LoginThrottle {
    /// With `redis_url`, the counters are kept there; it does not connect yet, so the gateway
    /// starts while Redis is down.
    pub fn new(limits: Limits, redis_url: Option<&str>) -> Result<Self, RedisError> {
        let redis = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Some(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            None => None,
        };
        Ok(Self {
            limits,
            redis,
            local: Mutex::new(HashMap::new()),
            redis_down: AtomicBool::new(false),
        })
    }

    /// Reserves one login attempt against the account and the peer, or `Err(retry_after)` when
    /// either has spent its budget (and then nothing is counted).
    pub async fn reserve(
        &self,
        email: &str,
        peer: Option<IpAddr>,
    ) -> Result<Reservation, Duration> {
        let account = (
            Key::Account(email.to_owned()),
            self.limits.failed_logins_per_account.get(),
        );
        let peer = peer.map(|peer| (Key::Peer(peer), self.limits.failed_logins_per_peer.get()));
        self.reserve_keys(std::iter::once(account).chain(peer).collect())
            .await
    }

    /// Reserves one attempt against the peer alone: a refresh or a logout, whose failures
    /// spend the same per-peer budget as failed logins (there is no account to name before the
    /// token is checked). Give it back with [`LoginThrottle::release`] when it succeeded.
    pub async fn reserve_peer(&self, peer: Option<IpAddr>) -> Result<Reservation, Duration> {
        match peer {
            Some(peer) => {
                let key = (Key::Peer(peer), self.limits.failed_logins_per_peer.get());
                self.reserve_keys(vec![key]).await
            }
            // No address to count against (an in-process caller): nothing to reserve.
            None => Ok(Reservation {
                id: 0,
                keys: Vec::new(),
                in_redis: false,
            }),
        }
    }

    /// Counts one registration from `peer`, or `Err(retry_after)` when the peer has spent its
    /// budget. There is nothing to give back: a registration always counts.
    pub async fn reserve_registration(&self, peer: IpAddr) -> Result<(), Duration> {
        let key = (
            Key::Registrations(peer),
            self.limits.registrations_per_peer.get(),
        );
        self.reserve_keys(vec![key]).await.map(drop)
    }

    async fn reserve_keys(&self, keys: Vec<(Key, u32)>) -> Result<Reservation, Duration> {
        let id = rand::random::<u64>();
        if let Some(redis) = &self.redis {
            match self.reserve_in_redis(redis.clone(), &keys, id).await {
                Ok(counts) => {
                    self.redis_is_up();
                    let counts = counts?;
                    self.warn_if_spent(&keys, &counts);
                    return Ok(Reservation {
                        id,
                        keys,
                        in_redis: true,
                    });
                }
                Err(err) => self.redis_failed(&err),
            }
        }
        let counts = self.reserve_locally(&keys, id)?;
        self.warn_if_spent(&keys, &counts);
        Ok(Reservation {
            id,
            keys,
            in_redis: false,
        })
    }

    /// Gives `reservation` back. Best effort: should Redis fail meanwhile, the attempt just
    /// keeps counting until it ages out of the window.
    pub async fn release(&self, reservation: Reservation) {
        if reservation.in_redis
            && let Some(redis) = &self.redis
        {
            let mut conn = redis.clone();
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RELEASE).arg(reservation.keys.len());
            for (key, _) in &reservation.keys {
                cmd.arg(key.redis_key());
            }
            cmd.arg(reservation.id);
            let call = cmd.query_async::<()>(&mut conn);
            if let Ok(Err(err)) = tokio::time::timeout(REDIS_TIMEOUT, call).await {
                tracing::debug!(error = %err, "cannot give a login attempt back in redis");
            }
            return;
        }
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, _) in &reservation.keys {
            if let Some(times) = local.get_mut(key) {
                times.retain(|(_, id)| *id != reservation.id);
            }
        }
    }

    /// `Ok(Ok(counts))` reserved, `Ok(Err(wait))` refused, `Err` Redis failed or was too slow.
    async fn reserve_in_redis(
        &self,
        mut conn: ConnectionManager,
        keys: &[(Key, u32)],
        id: u64,
    ) -> Result<Result<Vec<u32>, Duration>, RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RESERVE).arg(keys.len());
        for (key, _) in keys {
            cmd.arg(key.redis_key());
        }
        cmd.arg(WINDOW.as_millis() as u64).arg(id);
        for (_, limit) in keys {
            cmd.arg(*limit);
        }
        let reply: Vec<i64> = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        match reply.split_first() {
            Some((0, counts)) => Ok(Ok(counts
                .iter()
                .map(|count| u32::try_from(*count).unwrap_or(u32::MAX))
                .collect())),
            Some((&wait, _)) => Ok(Err(Duration::from_millis(wait.unsigned_abs()))),
            None => Ok(Ok(Vec::new())),
        }
    }

    /// The same step as [`RESERVE`], under one lock.
    fn reserve_locally(&self, keys: &[(Key, u32)], id: u64) -> Result<Vec<u32>, Duration> {
        let now = Instant::now();
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if local.len() > SWEEP_ABOVE {
            local.retain(|_, times| {
                times.retain(|(at, _)| now.duration_since(*at) < WINDOW);
                !times.is_empty()
            });
        }
        let mut wait = Duration::ZERO;
        for (key, limit) in keys {
            let times = local.entry(key.clone()).or_default();
            while times
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
            {
                times.pop_front();
            }
            if times.len() >= *limit as usize
                && let Some((oldest, _)) = times.front()
            {
                wait = wait.max((*oldest + WINDOW).saturating_duration_since(now));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        Ok(keys
            .iter()
            .map(|(key, _)| {
                let times = local.entry(key.clone()).or_default();
                times.push_back((now, id));
                u32::try_from(times.len()).unwrap_or(u32::MAX)
            })
            .collect())
    }

    /// Logs the reservation that spends a key's budget: once per lockout, not per refusal.
    fn warn_if_spent(&self, keys: &[(Key, u32)], counts: &[u32]) {
        for ((key, limit), count) in keys.iter().zip(counts) {
            if count == limit {
                self.lock(key, WINDOW);
            }
        }
    }

    fn lock(&self, key: &Key, wait: Duration) {
        // An address in a log is personal data and tells a reader which accounts exist.
        let (key_for_log, what) = match key {
            Key::Account(email) => (
                format!("account {}", crate::email::log_id(email)),
                "too many failed logins; throttling",
            ),
            Key::Peer(peer) => (format!("peer {peer}"), "too many failed logins; throttling"),
            Key::Registrations(peer) => {
                (format!("peer {peer}"), "too many registrations; throttling")
            }
        };
        tracing::warn!(key = %key_for_log, retry_after = ?wait, "{what}");
    }

    fn redis_failed(&self, err: &RedisError) {
        if !self.redis_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "redis unavailable: login attempts are limited per gateway process until it is back");
        }
    }

    fn redis_is_up(&self) {
        if self.redis_down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is back: login attempts are limited across gateways again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn local(per_account: u32, per_peer: u32) -> LoginThrottle {
        local_with(per_account, per_peer, 100)
    }

    fn local_with(per_account: u32, per_peer: u32, registrations: u32) -> LoginThrottle {
        let limits = Limits {
            failed_logins_per_account: nz(per_account),
            failed_logins_per_peer: nz(per_peer),
            registrations_per_peer: nz(registrations),
        };
        LoginThrottle::new(limits, None).expect("no redis")
    }

    #[tokio::test]
    async fn an_account_is_refused_after_exactly_its_budget() {
        let throttle = local(3, 100);
        for _ in 0..3 {
            throttle
                .reserve("a@example.com", None)
                .await
                .expect("within the budget");
        }
        let wait = throttle
            .reserve("a@example.com", None)
            .await
            .expect_err("the fourth attempt is refused");
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
        assert!(
            throttle.reserve("b@example.com", None).await.is_ok(),
            "other accounts are not affected"
        );
    }

    #[tokio::test]
    async fn a_released_attempt_does_not_count() {
        let throttle = local(1, 100);
        let reservation = throttle.reserve("a@example.com", None).await.expect("room");
        throttle.release(reservation).await;
        throttle
            .reserve("a@example.com", None)
            .await
            .expect("the budget was given back");
        assert!(throttle.reserve("a@example.com", None).await.is_err());
    }

    #[tokio::test]
    async fn a_peer_is_refused_across_accounts_and_a_refusal_counts_nothing() {
        let throttle = local(1, 2);
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        for i in 0..2 {
            throttle
                .reserve(&format!("user{i}@example.com"), peer)
                .await
                .expect("room");
        }
        assert!(throttle.reserve("fresh@example.com", peer).await.is_err());
        // The refused attempt did not spend fresh@'s budget of one.
        assert!(
            throttle
                .reserve("fresh@example.com", Some(IpAddr::from([10, 0, 0, 2])))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn registrations_are_limited_per_peer_apart_from_logins() {
        let throttle = local_with(100, 100, 2);
        let peer = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..2 {
            throttle.reserve_registration(peer).await.expect("room");
        }
        let wait = throttle
            .reserve_registration(peer)
            .await
            .expect_err("the third registration is refused");
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
        assert!(
            throttle
                .reserve_registration(IpAddr::from([10, 0, 0, 2]))
                .await
                .is_ok(),
            "other peers are not affected"
        );
        assert!(
            throttle.reserve("a@example.com", Some(peer)).await.is_ok(),
            "logins from the peer are not affected"
        );
    }
}
