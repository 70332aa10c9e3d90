//! The read and write paths of the cache, and the `CacheStats` service.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use async_singleflight::UnaryGroup;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, transport::Channel};
use userctl_proto::{
    cache::v1::{GetStatsRequest, Stats, WatchStatsRequest, cache_stats_server},
    user::v1::{
        CreateSessionRequest, CreateUserRequest, ReadUserRequest, RefreshSessionRequest,
        RevokeSessionRequest, Session, User, read_user_request::Key,
        user_store_client::UserStoreClient, user_store_server::UserStore,
    },
};

use super::{
    keys,
    redis::{RedisCache, Unavailable},
    stats::CacheStats,
};

/// The outcome of one store read, shared with every request that waited on it.
type Loaded = Result<Option<User>, Status>;

#[derive(Clone)]
pub struct CacheService {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisCache,
    store: UserStoreClient<Channel>,
    stats: Arc<CacheStats>,
    ttl: Duration,
    negative_ttl: Duration,
    /// Concurrent misses on one key share one store call.
    flights: UnaryGroup<String, Loaded>,
}

impl CacheService {
    pub fn new(
        redis: RedisCache,
        store: UserStoreClient<Channel>,
        stats: Arc<CacheStats>,
        ttl: Duration,
        negative_ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                store,
                stats,
                ttl,
                negative_ttl,
                flights: UnaryGroup::new(),
            }),
        }
    }
}

impl Inner {
    async fn read_by_id(&self, id: i64) -> Result<User, Status> {
        let key = keys::by_id(id);
        match self.redis.get(&key).await {
            Ok(Some(bytes)) => match self.decode(&bytes) {
                Some(found) => found,
                None => self.load(key, Key::Id(id), true).await,
            },
            Ok(None) => self.load(key, Key::Id(id), true).await,
            // Redis is down or slow: do not try to write back either.
            Err(Unavailable) => self.load(key, Key::Id(id), false).await,
        }
    }

    async fn read_by_email(&self, email: &str) -> Result<User, Status> {
        let email = crate::email::normalize(email);
        let key = keys::by_email(&email);
        match self.redis.get(&key).await {
            Ok(Some(bytes)) if bytes.is_empty() => {
                CacheStats::count(&self.stats.negative_hits);
                Err(not_found())
            }
            Ok(Some(bytes)) => match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|id| id.parse().ok())
            {
                Some(id) => self.read_by_id(id).await,
                None => {
                    // The key holds the address: name the account by its keyed hash instead.
                    let account = crate::email::log_id(&email);
                    tracing::warn!(%account, "unreadable email index entry; reading the store");
                    self.load(key, Key::Email(email), true).await
                }
            },
            Ok(None) => self.load(key, Key::Email(email), true).await,
            Err(Unavailable) => self.load(key, Key::Email(email), false).await,
        }
    }

    /// A cached value: a user, or empty for a cached "no such user". `None` when the bytes
    /// cannot be decoded, which is then treated as a miss.
    fn decode(&self, bytes: &[u8]) -> Option<Result<User, Status>> {
        if bytes.is_empty() {
            CacheStats::count(&self.stats.negative_hits);
            return Some(Err(not_found()));
        }
        match User::decode(bytes) {
            Ok(user) => {
                CacheStats::count(&self.stats.hits);
                Some(Ok(user))
            }
            Err(err) => {
                tracing::warn!(error = %err, "undecodable cache entry; reading the store");
                None
            }
        }
    }

    /// Reads from the store, once for all concurrent callers of `key`, and caches the answer.
    async fn load(&self, key: String, lookup: Key, write_back: bool) -> Result<User, Status> {
        CacheStats::count(&self.stats.misses);
        let mut led = false;
        let loaded = self
            .flights
            .work(&key, async {
                led = true;
                // A read that missed just before the previous flight for this key wrote back
                // would otherwise start a second store call; look once more first.
                if write_back
                    && let Key::Id(_) = lookup
                    && let Ok(Some(bytes)) = self.redis.get(&key).await
                    && let Ok(user) = User::decode(bytes.as_slice())
                    && !bytes.is_empty()
                {
                    return Ok(Some(user));
                }
                CacheStats::count(&self.stats.store_calls);
                // A read: retried on another store replica after a transport failure.
                // The store read is shared by every reader of the key (single-flight), so no
                // one caller's deadline bounds it.
                let read = crate::client::idempotent(None, |deadline| {
                    let mut store = self.store.clone();
                    let mut request = Request::new(ReadUserRequest {
                        key: Some(lookup.clone()),
                        session_id: String::new(),
                    });
                    request.set_timeout(deadline);
                    async move { store.read_user(request).await }
                });
                let loaded = match read.await {
                    Ok(response) => Ok(Some(response.into_inner())),
                    Err(status) if status.code() == Code::NotFound => Ok(None),
                    Err(status) => Err(from_store(status)),
                };
                if write_back {
                    self.write_back(&key, &loaded).await;
                }
                loaded
            })
            .await;
        if !led {
            CacheStats::count(&self.stats.coalesced);
        }
        loaded?.ok_or_else(not_found)
    }

    async fn write_back(&self, key: &str, loaded: &Loaded) {
        let entries = match loaded {
            Ok(Some(user)) => vec![
                (
                    keys::by_id(user.id),
                    user.encode_to_vec(),
                    keys::jittered(self.ttl),
                ),
                (
                    keys::by_email(&user.email),
                    user.id.to_string().into_bytes(),
                    keys::jittered(self.ttl),
                ),
            ],
            Ok(None) => vec![(
                key.to_owned(),
                Vec::new(),
                keys::jittered(self.negative_ttl),
            )],
            Err(_) => return,
        };
        // A failed write-back is already counted; the next read simply misses again.
        let _ = self.redis.set_all(&entries).await;
    }

    async fn create(&self, request: CreateUserRequest) -> Result<User, Status> {
        CacheStats::count(&self.stats.creates);
        CacheStats::count(&self.stats.store_calls);
        // Never retried: the first attempt may have stored the user (docs/design.md).
        let mut store = self.store.clone();
        let user = crate::client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            store.create_user(request).await
        })
        .await
        .map_err(from_store)?
        .into_inner();
        // Forget any cached "no such user" for this account. If Redis is down this fails
        // (and is counted); such an entry then lives at most `negative_ttl`.
        let _ = self
            .redis
            .delete(&[keys::by_email(&user.email), keys::by_id(user.id)])
            .await;
        Ok(user)
    }
}

/// A failed store call as the cache's callers should see it. A store that is stopping refuses
/// new calls with a GOAWAY, which tonic reports as INTERNAL: found by tests/faults.rs, where
/// restarting the store under load made clients see "internal error" instead of UNAVAILABLE.
fn from_store(status: Status) -> Status {
    if crate::client::is_transport_failure(&status) {
        tracing::debug!(%status, "store call failed in transport");
        Status::unavailable("the store is unavailable")
    } else {
        status
    }
}

fn not_found() -> Status {
    Status::not_found("no such user")
}

#[tonic::async_trait]
impl UserStore for CacheService {
    async fn create_session(
        &self,
        _request: Request<CreateSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    async fn refresh_session(
        &self,
        _request: Request<RefreshSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    async fn revoke_session(
        &self,
        _request: Request<RevokeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        Ok(Response::new(
            self.inner.create(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn read_user(&self, request: Request<ReadUserRequest>) -> Result<Response<User>, Status> {
        let started = Instant::now();
        let result = match request.into_inner().key {
            Some(Key::Id(id)) => self.inner.read_by_id(id).await,
            Some(Key::Email(email)) => self.inner.read_by_email(&email).await,
            None => Err(crate::server::invalid_argument(&[(
                "key",
                "set id or email",
            )])),
        };
        self.inner.stats.record_read(started.elapsed());
        result.map(Response::new)
    }
}

/// `userctl.cache.v1.CacheStats`.
#[derive(Clone)]
pub struct StatsService {
    stats: Arc<CacheStats>,
    /// Ends open `WatchStats` streams so shutdown can drain.
    shutdown: CancellationToken,
}

impl StatsService {
    pub fn new(stats: Arc<CacheStats>, shutdown: CancellationToken) -> Self {
        Self { stats, shutdown }
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<Stats, Status>> + Send>>;

#[tonic::async_trait]
impl cache_stats_server::CacheStats for StatsService {
    async fn get_stats(&self, _: Request<GetStatsRequest>) -> Result<Response<Stats>, Status> {
        Ok(Response::new(self.stats.snapshot()))
    }

    type WatchStatsStream = StatsStream;

    async fn watch_stats(
        &self,
        request: Request<WatchStatsRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        let interval_ms = match request.into_inner().interval_ms {
            0 => 1_000,
            ms => ms.clamp(100, 60_000),
        };
        let mut ticks = tokio::time::interval(Duration::from_millis(u64::from(interval_ms)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stats = self.stats.clone();
        let stream = tokio_stream::wrappers::IntervalStream::new(ticks)
            .map(move |_| Ok(stats.snapshot()))
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}
