//! Sessions and refresh tokens in the store and the cache (docs/design.md, "Data, cache and
//! token rules"), called as the gateway calls them: through the cache, and where it matters
//! the store directly. Each scenario runs on SQLite and on Postgres, with a real Redis.

use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;
use redis::AsyncCommands as _;
use tonic::{Code, Status, transport::Channel};
use userctl_proto::user::v1::{
    CreateSessionRequest, CreateUserRequest, ReadUserRequest, RefreshSessionRequest,
    RevokeSessionRequest, Session, read_user_request::Key, user_store_client::UserStoreClient,
};
use userctl_tests::{database::TestDatabase, eventually, redis::RedisServer, stack::TestStack};

/// A hash the store keeps: argon2id with the stack's own parameters.
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
const DAY: i64 = 24 * 60 * 60;

type Client = UserStoreClient<Channel>;

/// Runs each scenario once on SQLite and once on a fresh Postgres database.
macro_rules! on_each_database {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $( #[tokio::test] async fn $scenario() { super::$scenario(TestDatabase::sqlite()).await } )*
        }
        mod postgres {
            use super::*;
            $( #[tokio::test] async fn $scenario() { super::$scenario(TestDatabase::postgres().await).await } )*
        }
    };
}

on_each_database!(
    a_created_session_lets_its_user_be_read,
    a_refresh_rotates_the_token,
    reusing_a_spent_token_revokes_the_session,
    of_concurrent_refreshes_with_one_token_exactly_one_succeeds,
    a_revocation_is_seen_through_the_cache_at_once,
    a_revocation_is_seen_through_the_cache_while_redis_is_down,
    an_expired_session_is_refused,
    bad_input_is_refused_by_the_cache_and_the_store,
);

/// What a gateway would store for a refresh token: its SHA-256 (any 32 bytes do here).
fn token_hash() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

async fn create_user(cache: &mut Client, email: &str) -> i64 {
    cache
        .create_user(CreateUserRequest {
            email: email.into(),
            full_name: "Ann Lee".into(),
            password_hash: PASSWORD_HASH.into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .id
}

async fn create_session(client: &mut Client, user_id: i64, hash: &[u8], lifetime: i64) -> Session {
    client
        .create_session(CreateSessionRequest {
            user_id,
            refresh_hash: hash.to_vec(),
            lifetime_secs: lifetime,
        })
        .await
        .expect("create session")
        .into_inner()
}

async fn refresh(client: &mut Client, hash: &[u8], next: &[u8]) -> Result<Session, Status> {
    client
        .refresh_session(RefreshSessionRequest {
            refresh_hash: hash.to_vec(),
            next_refresh_hash: next.to_vec(),
            lifetime_secs: DAY,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn revoke(client: &mut Client, session_id: &str) -> Result<Session, Status> {
    client
        .revoke_session(RevokeSessionRequest {
            session_id: session_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `ReadUser` by id naming `session_id`: Ok, or the status code it failed with.
async fn read_in_session(client: &mut Client, user_id: i64, session_id: &str) -> Result<(), Code> {
    client
        .read_user(ReadUserRequest {
            key: Some(Key::Id(user_id)),
            session_id: session_id.into(),
        })
        .await
        .map(|user| assert_eq!(user.into_inner().id, user_id))
        .map_err(|status| status.code())
}

/// A refusal as the gateway sees it: UNAUTHENTICATED, one message, no hint in metadata.
fn assert_refused(refreshed: Result<Session, Status>, what: &str) {
    let status = refreshed.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(status.message(), "the refresh token is not valid", "{what}");
    assert!(
        status
            .metadata()
            .get_bin("userctl-revoked-session-bin")
            .is_none(),
        "{what}: the cache strips the store's metadata"
    );
}

async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// How many times Redis ran `command` since the last `CONFIG RESETSTAT`.
async fn command_calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

async fn a_created_session_lets_its_user_be_read(db: TestDatabase) {
    let mut redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (mut cache, mut store) = (stack.cache().await, stack.store().await);
    let ann = create_user(&mut cache, "ann@example.com").await;
    let bob = create_user(&mut cache, "bob@example.com").await;

    let session = create_session(&mut cache, ann, &token_hash(), DAY).await;
    assert_eq!(session.id.len(), 22, "{session:?}");
    assert!(
        session
            .id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "base64url: {session:?}"
    );
    assert_eq!(session.user_id, ann);
    assert_eq!(session.revoked_at, 0);
    assert!(
        (DAY - 2..=DAY).contains(&(session.expires_at - session.created_at)),
        "{session:?}"
    );
    let other = create_session(&mut cache, ann, &token_hash(), DAY).await;
    assert_ne!(other.id, session.id);

    for client in [&mut cache, &mut store] {
        assert_eq!(read_in_session(client, ann, &session.id).await, Ok(()));
        assert_eq!(
            read_in_session(client, bob, &session.id).await,
            Err(Code::FailedPrecondition),
            "another user's session"
        );
        assert_eq!(
            read_in_session(client, ann, "AAAAAAAAAAAAAAAAAAAAAA").await,
            Err(Code::FailedPrecondition),
            "no such session"
        );
        assert_eq!(
            read_in_session(client, bob + 100, &session.id).await,
            Err(Code::NotFound),
            "a missing user is still NOT_FOUND"
        );
        // By email too, and without a session as before.
        let user = client
            .read_user(ReadUserRequest {
                key: Some(Key::Email("Ann@Example.com".into())),
                session_id: session.id.clone(),
            })
            .await
            .expect("read by email in session");
        assert_eq!(user.into_inner().id, ann);
    }

    // Once both entries are cached, the session read is one Redis command and no store call.
    let mut conn = redis_connection(&redis).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");
    let before = stack.stats().await;
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));
    let after = stack.stats().await;
    assert_eq!(command_calls(&mut conn, "mget").await, 1);
    assert_eq!(command_calls(&mut conn, "get").await, 0);
    assert_eq!(
        after.store_calls, before.store_calls,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.hits, before.hits + 1);

    // The session's entry: protobuf, no longer than a user's.
    let key = format!("userctl:v1:session:{}", session.id);
    let bytes: Vec<u8> = conn.get(&key).await.expect("GET session");
    let cached = Session::decode(bytes.as_slice()).expect("a Session");
    assert_eq!((cached.user_id, cached.revoked_at), (ann, 0));
    let ttl: i64 = conn.ttl(&key).await.expect("TTL");
    assert!((1..=330).contains(&ttl), "session entry TTL {ttl}");

    // Redis gone: the same reads come from the store.
    redis.stop();
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));
    assert_eq!(
        read_in_session(&mut cache, bob, &session.id).await,
        Err(Code::FailedPrecondition)
    );
}

async fn a_refresh_rotates_the_token(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut cache = stack.cache().await;
    let ann = create_user(&mut cache, "ann@example.com").await;
    let (first, second, third) = (token_hash(), token_hash(), token_hash());
    let session = create_session(&mut cache, ann, &first, 60).await;

    let rotated = refresh(&mut cache, &first, &second).await.expect("refresh");
    assert_eq!(
        (rotated.id.as_str(), rotated.user_id),
        (session.id.as_str(), ann)
    );
    assert!(
        rotated.expires_at >= session.expires_at + DAY - 60 - 2,
        "the refresh's lifetime counts from now: {session:?} -> {rotated:?}"
    );
    assert_eq!(rotated.revoked_at, 0);
    let again = refresh(&mut cache, &second, &third)
        .await
        .expect("the new token works");
    assert_eq!(again.id, session.id);
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));
    assert_refused(
        refresh(&mut cache, &first, &token_hash()).await,
        "the first token is spent",
    );
}

async fn reusing_a_spent_token_revokes_the_session(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (mut cache, mut store) = (stack.cache().await, stack.store().await);
    let ann = create_user(&mut cache, "ann@example.com").await;
    let (first, second) = (token_hash(), token_hash());
    let session = create_session(&mut cache, ann, &first, DAY).await;
    refresh(&mut cache, &first, &second).await.expect("refresh");
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));

    // The thief (or the client) presents the spent token: refused, and the session ends.
    assert_refused(
        refresh(&mut cache, &first, &token_hash()).await,
        "a spent token",
    );
    assert_refused(
        refresh(&mut cache, &second, &token_hash()).await,
        "the newest token of a revoked session",
    );
    for client in [&mut cache, &mut store] {
        assert_eq!(
            read_in_session(client, ann, &session.id).await,
            Err(Code::FailedPrecondition)
        );
    }
    // The cache published the revocation for every gateway, for at least a day.
    let mut conn = redis_connection(&redis).await;
    let key = format!("userctl:v1:session:{}", session.id);
    let bytes: Vec<u8> = conn.get(&key).await.expect("GET session");
    let cached = Session::decode(bytes.as_slice()).expect("a Session");
    assert!(cached.revoked_at > 0, "{cached:?}");
    let ttl: i64 = conn.ttl(&key).await.expect("TTL");
    assert!(ttl > DAY - 60, "revocation TTL {ttl}");
    // A revoke afterwards keeps the time of the first.
    let revoked = revoke(&mut cache, &session.id).await.expect("revoke");
    assert_eq!(revoked.revoked_at, cached.revoked_at);
}

async fn of_concurrent_refreshes_with_one_token_exactly_one_succeeds(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut cache = stack.cache().await;
    let ann = create_user(&mut cache, "ann@example.com").await;
    let first = token_hash();
    let session = create_session(&mut cache, ann, &first, DAY).await;

    let attempts = (0..12).map(|_| {
        let (mut cache, first) = (cache.clone(), first.clone());
        async move { refresh(&mut cache, &first, &token_hash()).await }
    });
    let outcomes = join_all(attempts).await;
    let won: Vec<&Session> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    assert_eq!(won[0].id, session.id);
    for outcome in outcomes.into_iter().filter(Result::is_err) {
        assert_refused(outcome, "a losing refresh");
    }
    // The losers presented a token that was spent by then: reuse, which ends the session.
    assert_eq!(
        read_in_session(&mut cache, ann, &session.id).await,
        Err(Code::FailedPrecondition)
    );
}

async fn a_revocation_is_seen_through_the_cache_at_once(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut cache = stack.cache().await;
    let ann = create_user(&mut cache, "ann@example.com").await;
    let hash = token_hash();
    let session = create_session(&mut cache, ann, &hash, DAY).await;
    let kept = create_session(&mut cache, ann, &token_hash(), DAY).await;
    // Cached as active by the reads.
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));

    let revoked = revoke(&mut cache, &session.id).await.expect("revoke");
    assert!(revoked.revoked_at > 0);
    assert_eq!(revoked.id, session.id);
    eventually(Duration::from_secs(1), || {
        let mut cache = cache.clone();
        let id = session.id.clone();
        async move {
            match read_in_session(&mut cache, ann, &id).await {
                Err(Code::FailedPrecondition) => Ok(()),
                other => Err(other),
            }
        }
    })
    .await
    .expect("the revoked session is refused within a second");
    assert_refused(refresh(&mut cache, &hash, &token_hash()).await, "revoked");
    assert_eq!(
        revoke(&mut cache, &session.id)
            .await
            .expect("again")
            .revoked_at,
        revoked.revoked_at,
        "idempotent: the first revocation's time"
    );
    assert_eq!(
        read_in_session(&mut cache, ann, &kept.id).await,
        Ok(()),
        "the user's other session lives on"
    );
}

async fn a_revocation_is_seen_through_the_cache_while_redis_is_down(db: TestDatabase) {
    let mut redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut cache = stack.cache().await;
    let ann = create_user(&mut cache, "ann@example.com").await;
    let session = create_session(&mut cache, ann, &token_hash(), DAY).await;
    assert_eq!(read_in_session(&mut cache, ann, &session.id).await, Ok(()));

    redis.stop();
    assert_eq!(
        read_in_session(&mut cache, ann, &session.id).await,
        Ok(()),
        "fail open: the store answers"
    );
    let before = stack.stats().await;
    revoke(&mut cache, &session.id)
        .await
        .expect("revoke with Redis down");
    eventually(Duration::from_secs(1), || {
        let mut cache = cache.clone();
        let id = session.id.clone();
        async move {
            match read_in_session(&mut cache, ann, &id).await {
                Err(Code::FailedPrecondition) => Ok(()),
                other => Err(other),
            }
        }
    })
    .await
    .expect("the store's answer, within a second");
    let after = stack.stats().await;
    assert!(after.redis_errors > before.redis_errors, "{after:?}");
    assert!(after.store_calls > before.store_calls, "{after:?}");
}

async fn an_expired_session_is_refused(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (mut cache, mut store) = (stack.cache().await, stack.store().await);
    let ann = create_user(&mut cache, "ann@example.com").await;
    let hash = token_hash();
    let session = create_session(&mut cache, ann, &hash, 1).await;
    assert!(session.expires_at - session.created_at <= 1, "{session:?}");

    for client in [&cache, &store] {
        eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            let id = session.id.clone();
            async move {
                match read_in_session(&mut client, ann, &id).await {
                    Err(Code::FailedPrecondition) => Ok(()),
                    other => Err(other),
                }
            }
        })
        .await
        .expect("the session expires after its second");
    }
    assert_refused(refresh(&mut cache, &hash, &token_hash()).await, "expired");
    assert_eq!(
        read_in_session(&mut store, ann, &session.id).await,
        Err(Code::FailedPrecondition),
        "a refused refresh does not revive it"
    );
}

async fn bad_input_is_refused_by_the_cache_and_the_store(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (mut cache, mut store) = (stack.cache().await, stack.store().await);
    let ann = create_user(&mut cache, "ann@example.com").await;
    let hash = token_hash();
    create_session(&mut cache, ann, &hash, DAY).await;

    for (layer, client) in [("cache", &mut cache), ("store", &mut store)] {
        let creates = [
            ("31-byte hash", ann, vec![7; 31], DAY, Code::InvalidArgument),
            ("33-byte hash", ann, vec![7; 33], DAY, Code::InvalidArgument),
            ("empty hash", ann, Vec::new(), DAY, Code::InvalidArgument),
            ("lifetime 0", ann, token_hash(), 0, Code::InvalidArgument),
            (
                "negative lifetime",
                ann,
                token_hash(),
                -5,
                Code::InvalidArgument,
            ),
            (
                "over 400 days",
                ann,
                token_hash(),
                400 * DAY + 1,
                Code::InvalidArgument,
            ),
            ("unknown user", ann + 100, token_hash(), DAY, Code::NotFound),
            ("a hash in use", ann, hash.clone(), DAY, Code::AlreadyExists),
        ];
        for (what, user_id, refresh_hash, lifetime_secs, code) in creates {
            let status = client
                .create_session(CreateSessionRequest {
                    user_id,
                    refresh_hash,
                    lifetime_secs,
                })
                .await
                .expect_err(what);
            assert_eq!(status.code(), code, "{layer} create, {what}: {status:?}");
        }
        let refreshes = [
            ("short hash", vec![1; 16], token_hash(), DAY),
            ("short next hash", hash.clone(), vec![1; 16], DAY),
            ("the same hash", hash.clone(), hash.clone(), DAY),
            ("lifetime 0", hash.clone(), token_hash(), 0),
        ];
        for (what, refresh_hash, next_refresh_hash, lifetime_secs) in refreshes {
            let status = client
                .refresh_session(RefreshSessionRequest {
                    refresh_hash,
                    next_refresh_hash,
                    lifetime_secs,
                })
                .await
                .expect_err(what);
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{layer} refresh, {what}: {status:?}"
            );
        }
        assert_refused(
            refresh(client, &token_hash(), &token_hash()).await,
            "an unknown token",
        );
        for (what, id, code) in [
            ("unknown", "AAAAAAAAAAAAAAAAAAAAAA", Code::NotFound),
            ("empty", "", Code::InvalidArgument),
            ("not an id", "userctl:v1:user:id:1", Code::InvalidArgument),
        ] {
            let status = revoke(client, id).await.expect_err(what);
            assert_eq!(status.code(), code, "{layer} revoke, {what}: {status:?}");
        }
        assert_eq!(
            read_in_session(client, ann, "not a session id").await,
            Err(Code::InvalidArgument),
            "{layer} read"
        );
    }
    // None of it touched the session: the first token still refreshes.
    refresh(&mut cache, &hash, &token_hash())
        .await
        .expect("the session is intact");
}
