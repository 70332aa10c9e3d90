//! The read and write paths of the cache, and the `CacheStats` service.
//!
//! A read naming a session (`ReadUser` with `session_id`: every WhoAmI) fetches the user's
//! entry and the session's in one `MGET`, so checking the session costs no second Redis round
//! trip; whatever is missing comes from one store `ReadUser`, which checks both. Session writes
//! go to the store once; a revocation is then written over the session's entry, so every
//! gateway refuses it on its next read.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_singleflight::UnaryGroup;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
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
use crate::{client, session};

/// The outcome of one store read, shared with every request that waited on it.
type Loaded = Result<Option<User>, Status>;

#[derive(Clone)]
pub struct CacheService {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisCache,
    store: UserStoreClient<client::Traced>,
    stats: Arc<CacheStats>,
    ttl: Duration,
    negative_ttl: Duration,
    /// Concurrent misses on one key share one store call.
    flights: UnaryGroup<String, Loaded>,
}

impl CacheService {
    pub fn new(
        redis: RedisCache,
        store: UserStoreClient<client::Traced>,
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
    /// Reads the user `lookup` names, from Redis when it can.
    async fn read(&self, lookup: Key) -> Result<User, Status> {
        let (key, lookup) = user_key(lookup);
        match self.redis.get(&key).await {
            Ok(cached) => self.user_given(key, lookup, cached).await,
            // Redis is down or slow: do not try to write back either.
            Err(Unavailable) => self.load(key, lookup, false).await,
        }
    }

    async fn read_by_id(&self, id: i64) -> Result<User, Status> {
        let key = keys::by_id(id);
        match self.redis.get(&key).await {
            Ok(cached) => self.user_given_id(key, id, cached).await,
            Err(Unavailable) => self.load(key, Key::Id(id), false).await,
        }
    }

    /// The user, given what Redis held under `key` (the key [`user_key`] names for `lookup`).
    async fn user_given(
        &self,
        key: String,
        lookup: Key,
        cached: Option<Vec<u8>>,
    ) -> Result<User, Status> {
        match lookup {
            Key::Id(id) => self.user_given_id(key, id, cached).await,
            Key::Email(email) => self.user_given_email(key, email, cached).await,
        }
    }

    async fn user_given_id(
        &self,
        key: String,
        id: i64,
        cached: Option<Vec<u8>>,
    ) -> Result<User, Status> {
        match cached.and_then(|bytes| self.decode(&bytes)) {
            Some(found) => found,
            None => self.load(key, Key::Id(id), true).await,
        }
    }

    async fn user_given_email(
        &self,
        key: String,
        email: String,
        cached: Option<Vec<u8>>,
    ) -> Result<User, Status> {
        match cached {
            Some(bytes) if bytes.is_empty() => {
                CacheStats::count(&self.stats.negative_hits);
                Err(not_found())
            }
            Some(bytes) => match std::str::from_utf8(&bytes)
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
            None => self.load(key, Key::Email(email), true).await,
        }
    }

    /// A read naming a session: the user's entry and the session's in one `MGET`. A cached
    /// "no such user" answers NOT_FOUND and a cached ended session FAILED_PRECONDITION, as the
    /// store would; a session missing from Redis asks the store, which checks both.
    async fn read_in_session(&self, lookup: Key, session_id: &str) -> Result<User, Status> {
        if !session::is_well_formed(session_id) {
            return Err(crate::server::invalid_argument(&[(
                "session_id",
                "must be a session id: 22 base64url characters",
            )]));
        }
        let (key, lookup) = user_key(lookup);
        let cached = match self
            .redis
            .get_all(&[key.clone(), keys::session(session_id)])
            .await
        {
            Ok(cached) => cached,
            Err(Unavailable) => return self.load_in_session(key, lookup, session_id, false).await,
        };
        let mut cached = cached.into_iter();
        let (cached_user, cached_session) = (cached.next().flatten(), cached.next().flatten());
        if cached_user.as_ref().is_some_and(Vec::is_empty) {
            CacheStats::count(&self.stats.negative_hits);
            return Err(not_found());
        }
        let Some(found) = cached_session.and_then(|bytes| decode_session(&bytes)) else {
            return self.load_in_session(key, lookup, session_id, true).await;
        };
        if !is_active(&found, now_secs()) {
            CacheStats::count(&self.stats.hits);
            return Err(session_ended());
        }
        let user = self.user_given(key, lookup, cached_user).await?;
        if user.id == found.user_id {
            Ok(user)
        } else {
            Err(session_ended())
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
                    // A failed write-back is already counted; the next read simply misses again.
                    let _ = self.redis.set_all(&self.entries(&key, &loaded), &[]).await;
                }
                loaded
            })
            .await;
        if !led {
            CacheStats::count(&self.stats.coalesced);
        }
        loaded?.ok_or_else(not_found)
    }

    /// Reads the user and checks the session at the store, once for all concurrent callers of
    /// the pair, and caches both: the user as [`Inner::load`] does, the session as active until
    /// the expiry the store reports (`crate::session::EXPIRES_AT_HEADER`). An ended session is
    /// not cached here: the store does not say whether it was revoked, and revocations are
    /// written when they happen.
    async fn load_in_session(
        &self,
        key: String,
        lookup: Key,
        session_id: &str,
        write_back: bool,
    ) -> Result<User, Status> {
        CacheStats::count(&self.stats.misses);
        let mut led = false;
        let flight = format!("{key} {}", keys::session(session_id));
        let loaded = self
            .flights
            .work(&flight, async {
                led = true;
                CacheStats::count(&self.stats.store_calls);
                let read = crate::client::idempotent(None, |deadline| {
                    let mut store = self.store.clone();
                    let mut request = Request::new(ReadUserRequest {
                        key: Some(lookup.clone()),
                        session_id: session_id.to_owned(),
                    });
                    request.set_timeout(deadline);
                    async move { store.read_user(request).await }
                });
                let (loaded, expires_at) = match read.await {
                    Ok(response) => {
                        let expires_at = session_expiry(response.metadata());
                        (Ok(Some(response.into_inner())), expires_at)
                    }
                    Err(status) if status.code() == Code::NotFound => (Ok(None), None),
                    Err(status) => (Err(from_store(status)), None),
                };
                if write_back {
                    let session = match (&loaded, expires_at) {
                        (Ok(Some(user)), Some(expires_at)) => self.active_entry(&Session {
                            id: session_id.to_owned(),
                            user_id: user.id,
                            expires_at,
                            ..Session::default()
                        }),
                        _ => None,
                    };
                    let _ = self
                        .redis
                        .set_all(&self.entries(&key, &loaded), session.as_slice())
                        .await;
                }
                loaded
            })
            .await;
        if !led {
            CacheStats::count(&self.stats.coalesced);
        }
        loaded?.ok_or_else(not_found)
    }

    /// What a store read of `key` puts in Redis.
    fn entries(&self, key: &str, loaded: &Loaded) -> Vec<(String, Vec<u8>, u64)> {
        match loaded {
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
            Err(_) => Vec::new(),
        }
    }

    /// An active session's entry, for `SET NX`: never over a revocation. None once expired.
    fn active_entry(&self, active: &Session) -> Option<(String, Vec<u8>, u64)> {
        let ttl = keys::active_session_ttl(self.ttl, active.expires_at, now_secs())?;
        Some((keys::session(&active.id), active.encode_to_vec(), ttl))
    }

    /// Caches a session the store just created or refreshed. Best effort: a read that misses
    /// asks the store.
    async fn cache_active(&self, active: &Session) {
        if let Some(entry) = self.active_entry(active) {
            let _ = self.redis.set_all(&[], &[entry]).await;
        }
    }

    /// Writes a revocation over the session's entry, so every cache sharing this Redis refuses
    /// the session from its next read.
    async fn cache_revoked(&self, revoked: &Session) {
        let ttl = REVOKED_TTL_SECS.max(self.ttl.as_secs());
        let entry = (keys::session(&revoked.id), revoked.encode_to_vec(), ttl);
        if self.redis.set_all_now(&[entry], &[]).await.is_err() {
            // The store has it; only an active entry left in Redis could still answer for the
            // session, for at most --ttl (docs/design.md).
            tracing::warn!(
                session_id = %revoked.id,
                "cannot write a session's revocation to Redis; reads that miss Redis still see it"
            );
        }
    }

    async fn create_session(&self, request: CreateSessionRequest) -> Result<Session, Status> {
        CacheStats::count(&self.stats.store_calls);
        // Writes are never retried: the first attempt may have landed.
        let mut store = self.store.clone();
        let created = crate::client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            store.create_session(request).await
        })
        .await
        .map_err(from_store)?
        .into_inner();
        self.cache_active(&created).await;
        Ok(created)
    }

    async fn refresh_session(&self, request: RefreshSessionRequest) -> Result<Session, Status> {
        CacheStats::count(&self.stats.store_calls);
        let mut store = self.store.clone();
        let refreshed = crate::client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            store.refresh_session(request).await
        })
        .await;
        match refreshed {
            Ok(response) => {
                let rotated = response.into_inner();
                self.cache_active(&rotated).await;
                Ok(rotated)
            }
            Err(status) => match revoked_by_reuse(&status) {
                Some(revoked) => {
                    self.cache_revoked(&revoked).await;
                    // The same words as any refusal, without the store's metadata.
                    Err(Status::unauthenticated(session::REFRESH_REFUSED))
                }
                None => Err(from_store(status)),
            },
        }
    }

    async fn revoke_session(&self, request: RevokeSessionRequest) -> Result<Session, Status> {
        CacheStats::count(&self.stats.store_calls);
        let mut store = self.store.clone();
        let revoked = crate::client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            store.revoke_session(request).await
        })
        .await
        .map_err(from_store)?
        .into_inner();
        self.cache_revoked(&revoked).await;
        Ok(revoked)
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

fn session_ended() -> Status {
    Status::failed_precondition(session::SESSION_ENDED)
}

/// How long a revocation stays in Redis at least (`keys::REVOKED_TTL`), in seconds.
const REVOKED_TTL_SECS: u64 = keys::REVOKED_TTL.as_secs();

/// The Redis key of the user `lookup` names, and the lookup with its email normalised.
fn user_key(lookup: Key) -> (String, Key) {
    match lookup {
        Key::Id(id) => (keys::by_id(id), Key::Id(id)),
        Key::Email(email) => {
            let email = crate::email::normalize(&email);
            (keys::by_email(&email), Key::Email(email))
        }
    }
}

/// A cached session entry; `None` (a miss) when empty or undecodable.
fn decode_session(bytes: &[u8]) -> Option<Session> {
    if bytes.is_empty() {
        return None;
    }
    match Session::decode(bytes) {
        Ok(found) => Some(found),
        Err(err) => {
            tracing::warn!(error = %err, "undecodable session entry; reading the store");
            None
        }
    }
}

/// Neither revoked nor expired at `now` (seconds since the epoch).
fn is_active(found: &Session, now: i64) -> bool {
    found.revoked_at == 0 && found.expires_at > now
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The session expiry a store session read reports; None from a store that does not.
fn session_expiry(metadata: &tonic::metadata::MetadataMap) -> Option<i64> {
    metadata
        .get(session::EXPIRES_AT_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The session a refused refresh revoked for reuse, when the store says so.
fn revoked_by_reuse(status: &Status) -> Option<Session> {
    if status.code() != Code::Unauthenticated {
        return None;
    }
    let value = status.metadata().get_bin(session::REVOKED_HEADER)?;
    Session::decode(value.to_bytes().ok()?.as_ref()).ok()
}

#[tonic::async_trait]
impl UserStore for CacheService {
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Ok(Response::new(
            self.inner.create_session(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Ok(Response::new(
            self.inner.refresh_session(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Ok(Response::new(
            self.inner.revoke_session(request.into_inner()).await?,
        ))
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
        let ReadUserRequest { key, session_id } = request.into_inner();
        let result = match key {
            Some(lookup) if session_id.is_empty() => self.inner.read(lookup).await,
            Some(lookup) => self.inner.read_in_session(lookup, &session_id).await,
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
