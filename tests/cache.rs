//! The entry cache as docs/design.md's cache rules describe it, observed through `CacheStats`
//! and Redis itself.

use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;
use redis::AsyncCommands as _;
use sqlx::Executor as _;
use tonic::{Code, Request};
use userctl_proto::{
    gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest},
    user::v1::{ReadUserRequest, User, read_user_request::Key},
};
use userctl_tests::{database::TestDatabase, eventually, redis::RedisServer, stack::TestStack};

const PASSWORD: &str = "correct horse battery staple";

async fn register_and_login(stack: &TestStack, email: &str) -> (i64, String) {
    let mut gateway = stack.gateway().await;
    let profile = gateway
        .register(RegisterRequest {
            email: email.into(),
            full_name: "Eve".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register")
        .into_inner();
    let token = gateway
        .login(LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token;
    (profile.id, token)
}

fn whoami_request(token: &str) -> Request<WhoAmIRequest> {
    let mut request = Request::new(WhoAmIRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

#[tokio::test]
async fn the_second_whoami_is_a_cache_hit() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (_, token) = register_and_login(&stack, "hit@example.com").await;
    let mut gateway = stack.gateway().await;

    gateway
        .who_am_i(whoami_request(&token))
        .await
        .expect("first whoami");
    let before = stack.stats().await;
    gateway
        .who_am_i(whoami_request(&token))
        .await
        .expect("second whoami");
    let after = stack.stats().await;

    assert_eq!(after.hits, before.hits + 1, "one more hit");
    assert_eq!(after.store_calls, before.store_calls, "no store call");
    assert!(after.redis_up);
}

#[tokio::test]
async fn entries_are_versioned_protobuf_with_jittered_ttls() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (id, _) = register_and_login(&stack, "ttl@example.com").await;
    let mut conn = redis_connection(&redis).await;

    let bytes: Vec<u8> = conn
        .get(format!("userctl:v1:user:id:{id}"))
        .await
        .expect("GET by id");
    let cached = User::decode(bytes.as_slice()).expect("protobuf User");
    assert_eq!(cached.email, "ttl@example.com");
    let index: String = conn
        .get("userctl:v1:user:email:ttl@example.com")
        .await
        .expect("GET email index");
    assert_eq!(index, id.to_string());
    for key in [
        format!("userctl:v1:user:id:{id}"),
        "userctl:v1:user:email:ttl@example.com".into(),
    ] {
        let ttl: i64 = conn.ttl(&key).await.expect("TTL");
        assert!(
            (270..=330).contains(&ttl),
            "{key} has TTL {ttl}, outside 300 s ± 10%"
        );
    }

    // A miss is cached briefly, and empty.
    let status = stack
        .cache()
        .await
        .read_user(ReadUserRequest {
            key: Some(Key::Email("ghost@example.com".into())),
            session_id: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let negative: Vec<u8> = conn
        .get("userctl:v1:user:email:ghost@example.com")
        .await
        .expect("GET");
    assert!(negative.is_empty());
    let ttl: i64 = conn
        .ttl("userctl:v1:user:email:ghost@example.com")
        .await
        .expect("TTL");
    assert!((1..=6).contains(&ttl), "negative entry TTL {ttl}");
}

#[tokio::test]
async fn a_create_invalidates_a_cached_not_found() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;
    let login = LoginRequest {
        email: "late@example.com".into(),
        password: PASSWORD.into(),
    };

    let status = gateway
        .login(login.clone())
        .await
        .expect_err("no account yet");
    assert_eq!(status.code(), Code::Unauthenticated);
    gateway.login(login.clone()).await.expect_err("still none");
    assert!(
        stack.stats().await.negative_hits >= 1,
        "the not-found was cached"
    );

    gateway
        .register(RegisterRequest {
            email: "late@example.com".into(),
            full_name: "Late".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register");
    gateway
        .login(login)
        .await
        .expect("login works at once, not after the negative TTL");
}

#[tokio::test]
async fn whoami_keeps_working_while_redis_is_down_and_errors_are_counted() {
    let db = TestDatabase::sqlite();
    let mut redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (_, token) = register_and_login(&stack, "down@example.com").await;
    let mut gateway = stack.gateway().await;
    gateway
        .who_am_i(whoami_request(&token))
        .await
        .expect("whoami with redis");

    redis.stop();
    let before = stack.stats().await;
    for _ in 0..5 {
        let me = gateway
            .who_am_i(whoami_request(&token))
            .await
            .expect("whoami without redis");
        assert_eq!(me.into_inner().email, "down@example.com");
    }
    let during = stack.stats().await;
    // Each read failed at Redis, or skipped it once the breaker had opened.
    assert!(
        during.redis_errors + during.redis_skipped
            >= before.redis_errors + before.redis_skipped + 5,
        "{before:?} -> {during:?}"
    );
    assert!(!during.redis_up);
    assert_eq!(
        during.store_calls,
        before.store_calls + 5,
        "the store answered"
    );

    redis.restart().await;
    // The connection comes back by itself; then reads hit again.
    let stack = &stack;
    eventually(Duration::from_secs(10), || {
        let mut gateway = gateway.clone();
        let token = token.clone();
        async move {
            gateway
                .who_am_i(whoami_request(&token))
                .await
                .map_err(|_| ())?;
            let stats = stack.stats().await;
            let before = stats.hits;
            gateway
                .who_am_i(whoami_request(&token))
                .await
                .map_err(|_| ())?;
            if stack.stats().await.hits > before {
                Ok(())
            } else {
                Err(())
            }
        }
    })
    .await
    .expect("cache hits resume after Redis returns");
    assert!(stack.stats().await.redis_up);
}

#[tokio::test]
async fn concurrent_misses_on_one_key_make_one_store_call() {
    const READERS: u64 = 100;
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let (id, _) = register_and_login(&stack, "herd@example.com").await;
    let mut conn = redis_connection(&redis).await;
    let _: () = conn
        .del(format!("userctl:v1:user:id:{id}"))
        .await
        .expect("evict");

    // Hold the store's read until every reader is waiting, so the misses truly overlap.
    let mut lock = db.postgres_connection().await;
    lock.execute("BEGIN").await.expect("begin");
    lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let before = stack.stats().await;

    let cache = stack.cache().await;
    let readers = tokio::spawn(join_all((0..READERS).map(move |_| {
        let mut cache = cache.clone();
        async move {
            cache
                .read_user(ReadUserRequest {
                    key: Some(Key::Id(id)),
                    session_id: String::new(),
                })
                .await
        }
    })));
    eventually(Duration::from_secs(10), || async {
        let stats = stack.stats().await;
        if stats.misses >= before.misses + READERS {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await
    .expect("every reader missed and is waiting");
    lock.execute("COMMIT").await.expect("release");

    let results = readers.await.expect("readers finish");
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "every reader gets the user: {failed:?}");
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|user| user.get_ref().id == id))
    );
    let after = stack.stats().await;
    assert_eq!(
        after.store_calls,
        before.store_calls + 1,
        "one store call for {READERS} misses"
    );
    assert_eq!(
        after.coalesced,
        before.coalesced + READERS - 1,
        "the others waited on it"
    );
}
