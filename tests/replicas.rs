//! Services as several replicas: the gateway balances over every cache replica and each cache
//! over every store replica (a comma-separated `--cache-addr` / `--store-addr`, or a name that
//! resolves to them). Reads spread; a replica that drains (SIGTERM, or its token cancelled)
//! costs no call; a replica killed outright costs at most the calls in flight at that instant;
//! a registration is never sent twice. Bounded loads, loopback only, sized for two cores.

use std::time::Duration;

use futures::future::join_all;
use redis::AsyncCommands as _;
use sqlx::Executor as _;
use std::time::Instant;
use tonic::{Code, Request, Status, transport::Channel};
use userctl_keys::KeySet;
use userctl_proto::{
    cache::v1::{GetStatsRequest, Stats, cache_stats_client::CacheStatsClient},
    gateway::v1::{RegisterRequest, gateway_client::GatewayClient},
    user::v1::{ReadUserRequest, read_user_request::Key, user_store_client::UserStoreClient},
};
use userctl_tests::{
    database::TestDatabase,
    eventually, keys,
    load::{
        CALL_DEADLINE, Call, Load, MAX_CALLS, Summary, WORKERS, accounts, failures, tokens, whoami,
        whoami_load,
    },
    process::{ProcessStack, Usersvc},
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const PASSWORD: &str = "correct horse battery staple";
/// Calls a load makes before, during and after a fault.
const PHASE_CALLS: usize = 300;

fn two_of_each() -> StackOptions {
    StackOptions {
        caches: 2,
        stores: 2,
        ..StackOptions::default()
    }
}

/// A token for account `id`, signed with the stack's key set (`signing_keys`): valid whether or
/// not the account exists.
fn token_for(signing_keys: &KeySet, id: i64) -> String {
    keys::sign_with(
        signing_keys,
        &keys::claims(&id.to_string(), keys::NO_SESSION, 600),
    )
}

/// WhoAmI for accounts that do not exist, a new one each call: every call misses the cache and
/// reads the store. The expected UNAUTHENTICATED counts as a success. The tokens are signed
/// with the stack's key set, so each is refused for its account, not for its signature.
fn store_load(gateway: GatewayClient<Channel>, signing_keys: KeySet) -> Load {
    Load::start(WORKERS, MAX_CALLS, move |n| {
        let mut gateway = gateway.clone();
        let token = token_for(&signing_keys, 1_000_000 + n as i64);
        async move {
            match gateway.who_am_i(whoami(&token, CALL_DEADLINE)).await {
                Err(status) if status.code() == Code::Unauthenticated => Ok(()),
                Err(status) => Err(status),
                Ok(_) => Err(Status::aborted("a ghost was recognised")),
            }
        }
    })
}

async fn stats_of(addr: &str) -> Stats {
    let channel = Channel::from_shared(addr.to_owned())
        .expect("address")
        .connect()
        .await
        .expect("connect");
    CacheStatsClient::new(channel)
        .get_stats(GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner()
}

/// Reads a replica answered: hits of either kind, and misses.
fn reads(stats: &Stats) -> u64 {
    stats.hits + stats.negative_hits + stats.misses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_every_cache_replica() {
    const CALLS: usize = 240;
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let stack = TestStack::start_with(&db, &redis, two_of_each()).await;
    let gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "spread", 8).await);

    let before = [stack.replica_stats(0).await, stack.replica_stats(1).await];
    let load = whoami_load(gateway, &tokens);
    load.wait_for_calls(CALLS, CALL_DEADLINE).await;
    let calls = load.stop().await;
    assert!(failures(&calls).is_empty(), "{:?}", failures(&calls));
    let after = [stack.replica_stats(0).await, stack.replica_stats(1).await];
    let served: Vec<u64> = (0..2)
        .map(|i| reads(&after[i]) - reads(&before[i]))
        .collect();
    let total = calls.len() as u64;
    println!("{total} whoami calls through two cache replicas: {served:?} reads each");
    assert!(total >= CALLS as u64);
    for (replica, served) in served.iter().enumerate() {
        assert!(
            *served * 10 >= total,
            "cache replica {replica} served {served} of {total} reads (less than 10%)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_replica_that_drains_under_load_costs_no_call() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let mut stack = TestStack::start_with(&db, &redis, two_of_each()).await;
    let gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "drain", 8).await);

    let load = whoami_load(gateway, &tokens);
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let stopping = Instant::now();
    stack.stop_cache_replica(0).await;
    let stopped = Instant::now();
    let survivor = stack.replica_stats(1).await;
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let calls = load.stop().await;
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= stopped).collect();
    println!(
        "cache replica drained in {:.0} ms under load: {}; after it stopped: {}",
        (stopped - stopping).as_secs_f64() * 1e3,
        Summary::of(&calls),
        Summary::of(after.iter().copied())
    );
    assert!(failures(&calls).is_empty(), "{:?}", failures(&calls));
    assert!(after.len() >= PHASE_CALLS, "the load kept going");
    let now = stack.replica_stats(1).await;
    assert!(
        reads(&now) - reads(&survivor) >= PHASE_CALLS as u64,
        "the other replica took the reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_replica_that_drains_under_load_costs_no_call() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let mut stack = TestStack::start_with(&db, &redis, two_of_each()).await;
    let load = store_load(
        stack.gateway().await,
        keys::read_key_set(stack.signing_keys()),
    );
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let stopping = Instant::now();
    stack.stop_store_replica(0).await;
    let stopped = Instant::now();
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let calls = load.stop().await;
    let after = calls.iter().filter(|c| c.started >= stopped).count();
    println!(
        "store replica drained in {:.0} ms under store reads: {}; {after} calls after it stopped",
        (stopped - stopping).as_secs_f64() * 1e3,
        Summary::of(&calls),
    );
    assert!(failures(&calls).is_empty(), "{:?}", failures(&calls));
    assert!(after >= PHASE_CALLS, "the load kept going");
}

/// Kills a replica under `load` and checks what it cost: at most the calls in flight at the
/// kill (one per worker) fail, and none that started after it.
async fn kill_under_load(load: Load, victim: &mut Usersvc, what: &str) {
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let killed = Instant::now();
    victim.kill();
    victim.wait(Duration::from_secs(10)).await.expect("killed");
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let calls = load.stop().await;
    let failed: Vec<&Call> = calls.iter().filter(|c| c.result.is_err()).collect();
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= killed).collect();
    let failed_after: Vec<&&Call> = failed.iter().filter(|c| c.started >= killed).collect();
    println!(
        "{what} killed under load: {}; {} failed, {} of them started after the kill; {} calls after",
        Summary::of(&calls),
        failed.len(),
        failed_after.len(),
        after.len()
    );
    assert!(after.len() >= PHASE_CALLS, "the load kept going");
    assert!(
        failed.len() <= WORKERS,
        "more failures than calls in flight: {failed:?}"
    );
    assert!(failed_after.is_empty(), "{failed_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cache_replica_costs_at_most_the_calls_in_flight() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let mut replicas = ProcessStack::start(db.url(), &redis.url(), 2).await;
    let tokens = tokens(&accounts(&replicas.client, "killcache", 8).await);
    let load = whoami_load(replicas.client.clone(), &tokens);
    kill_under_load(load, &mut replicas.caches[0], "cache replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_store_replica_costs_at_most_the_calls_in_flight() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let mut replicas = ProcessStack::start(db.url(), &redis.url(), 2).await;
    let load = store_load(
        replicas.client.clone(),
        keys::read_key_set(replicas.signing_keys()),
    );
    kill_under_load(load, &mut replicas.stores[0], "store replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_cache_dies_mid_call_is_unavailable_and_never_sent_again() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let replicas = ProcessStack::start(db.url(), &redis.url(), 2).await;
    // Hold every insert in the database, so the registration is in flight in one cache.
    let mut lock = db.postgres_connection().await;
    lock.execute("BEGIN").await.expect("begin");
    lock.execute("LOCK TABLE users IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let registration = tokio::spawn({
        let mut gateway = replicas.client.clone();
        async move {
            let mut request = Request::new(RegisterRequest {
                email: "once@example.com".into(),
                full_name: "Once".into(),
                password: PASSWORD.into(),
            });
            request.set_timeout(CALL_DEADLINE);
            gateway.register(request).await
        }
    });
    let addrs: Vec<String> = replicas.caches.iter().map(|c| c.addr.clone()).collect();
    let carrier = eventually(Duration::from_secs(20), || async {
        for (i, addr) in addrs.iter().enumerate() {
            if stats_of(addr).await.creates > 0 {
                return Ok(i);
            }
        }
        Err("no cache has the registration yet")
    })
    .await
    .expect("one cache carries the registration");
    replicas.caches[carrier].kill();
    let status = registration
        .await
        .expect("registration task")
        .expect_err("the registration fails with its cache");
    lock.execute("COMMIT").await.expect("release");

    let other = stats_of(&addrs[1 - carrier]).await;
    let stored = db
        .emails()
        .await
        .into_iter()
        .filter(|email| email == "once@example.com")
        .count();
    println!(
        "registration whose cache was killed: {:?}; the other cache saw {} creates; stored {stored} time(s)",
        status.code(),
        other.creates
    );
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "{status:?}; gateway log:\n{}",
        replicas.gateway.log()
    );
    assert_eq!(other.creates, 0, "the registration was sent again");
    assert!(stored <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_key_make_at_most_one_store_call_per_cache_replica() {
    const READERS: usize = 1_000;
    const CHANNELS: usize = 4;
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let stack = TestStack::start_with(&db, &redis, two_of_each()).await;
    let gateway = stack.gateway().await;
    let id = accounts(&gateway, "herd", 1).await.remove(0).id;
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = conn
        .del(format!("userctl:v1:user:id:{id}"))
        .await
        .expect("evict");
    // Readers alternate between the replicas on connections of their own, several per
    // replica: one connection carries at most 200 calls at once (the server's HTTP/2 stream
    // limit) and every reader must be waiting on the store at the same time. (How the gateway
    // spreads reads is the spread test's concern.)
    let mut channels = Vec::new();
    for i in 0..CHANNELS {
        let addr = &stack.cache_addrs[i % 2];
        let channel = Channel::from_shared(addr.clone())
            .expect("address")
            .connect()
            .await
            .expect("connect");
        channels.push(UserStoreClient::new(channel));
    }

    // Hold the store's reads until both replicas have misses waiting, so they truly overlap.
    let mut lock = db.postgres_connection().await;
    lock.execute("BEGIN").await.expect("begin");
    lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let before = [stack.replica_stats(0).await, stack.replica_stats(1).await];
    let readers = tokio::spawn(join_all((0..READERS).map(move |i| {
        let mut caches = channels[i % CHANNELS].clone();
        async move {
            let mut request = Request::new(ReadUserRequest {
                key: Some(Key::Id(id)),
                session_id: String::new(),
            });
            request.set_timeout(CALL_DEADLINE);
            caches.read_user(request).await
        }
    })));
    eventually(Duration::from_secs(10), || async {
        let misses: Vec<u64> = join_all((0..2).map(|i| stack.replica_stats(i)))
            .await
            .iter()
            .zip(&before)
            .map(|(now, before)| now.misses - before.misses)
            .collect();
        if misses.iter().sum::<u64>() >= READERS as u64 {
            Ok(())
        } else {
            Err(misses)
        }
    })
    .await
    .expect("every reader missed and is waiting on the store");
    lock.execute("COMMIT").await.expect("release");

    let results = readers.await.expect("readers finish");
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "every reader gets the user; {} did not, first: {:?}",
        failed.len(),
        failed.first()
    );
    let after = [stack.replica_stats(0).await, stack.replica_stats(1).await];
    let delta = |f: fn(&Stats) -> u64| -> Vec<u64> {
        (0..2).map(|i| f(&after[i]) - f(&before[i])).collect()
    };
    let store_calls = delta(|s| s.store_calls);
    println!(
        "{READERS} concurrent reads of one evicted key through two cache replicas: misses {:?}, coalesced {:?}, store calls {store_calls:?}",
        delta(|s| s.misses),
        delta(|s| s.coalesced),
    );
    assert!(
        store_calls.iter().sum::<u64>() <= 2,
        "at most one store call per replica: {store_calls:?}"
    );
}
