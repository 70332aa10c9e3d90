//! Faults with load running: Redis dying and coming back, the store and the database stopping
//! and returning, and SIGTERM while requests are in flight. Every scenario is bounded (a call
//! budget and deadlines), loopback only, sized for two cores, and prints its figures.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use redis::AsyncCommands as _;
use sqlx::Executor as _;
use tonic::{Code, Request, Status, transport::Channel};
use userctl_keys::KeySet;
use userctl_proto::{
    cache::v1::RedisBreaker,
    gateway::v1::{LoginRequest, RegisterRequest, gateway_client::GatewayClient},
};
use userctl_tests::{
    database::TestDatabase,
    eventually, keys,
    load::{
        CALL_DEADLINE, Call, Load, MAX_CALLS, Summary, WORKERS, accounts, failures, tokens, whoami,
        whoami_load,
    },
    outage::{Outage, OutageReport},
    postgres::PostgresServer,
    process::{ProcessStack, Usersvc},
    redis::RedisServer,
    stack::TestStack,
};
use usersvc::cache::breaker::FAILURES_TO_OPEN;

const PASSWORD: &str = "correct horse battery staple";
/// The stack's `--redis-timeout` (tests/support/stack.rs).
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// What the gateway promises a caller when a dependency is down.
const UNAVAILABLE: &str = "the user service is unavailable; retry shortly";

/// WhoAmI with valid tokens for accounts that do not exist, a new one each call: every call
/// misses the cache and needs the store. The expected refusal, UNAUTHENTICATED, counts as a
/// success; any other answer is kept as the call's failure. The tokens are signed with the
/// stack's key set (`signing_keys`), so each is refused for its account, not its signature.
fn ghost_load(gateway: GatewayClient<Channel>, signing_keys: KeySet) -> Load {
    Load::start(2, MAX_CALLS, move |n| {
        let mut gateway = gateway.clone();
        let token = keys::sign_with(
            &signing_keys,
            &keys::claims(&(1_000_000 + n).to_string(), keys::NO_SESSION, 600),
        );
        async move {
            match gateway.who_am_i(whoami(&token, CALL_DEADLINE)).await {
                Err(status) if status.code() == Code::Unauthenticated => Ok(()),
                Err(status) => Err(status),
                Ok(_) => Err(Status::aborted("a ghost was recognised")),
            }
        }
    })
}

/// Runs `call`, expects the gateway's UNAVAILABLE, and returns how long the answer took.
async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Duration {
    let started = Instant::now();
    let status = call.await.expect_err(what);
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert_eq!(status.message(), UNAVAILABLE, "{what}");
    // The gateway's deadline on its call to the cache bounds the wait; allow a second for a
    // loaded machine on top.
    let bound = usersvc::client::CALL_TIMEOUT + Duration::from_secs(1);
    assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
    took
}

fn with_deadline<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

fn registration(email: &str) -> Request<RegisterRequest> {
    with_deadline(RegisterRequest {
        email: email.into(),
        full_name: "Probe".into(),
        password: PASSWORD.into(),
    })
}

fn login(email: &str) -> Request<LoginRequest> {
    with_deadline(LoginRequest {
        email: email.into(),
        password: PASSWORD.into(),
    })
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_never_fails_while_redis_dies_and_hits_return_soon_after_it_is_back() {
    const ACCOUNTS: usize = 20;
    const PHASE_CALLS: usize = 600;
    // On top of "store-path p99 + Redis timeout": scheduling noise on a loaded two-core machine.
    const MARGIN: Duration = Duration::from_millis(100);

    let db = TestDatabase::postgres().await;
    let mut redis = RedisServer::start().await;
    let mut stack = TestStack::start(&db, &redis).await;
    let gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "redis", ACCOUNTS).await);

    // The store path, measured in this run: the same load through a gateway with no cache.
    let store_path = whoami_load(stack.gateway_without_cache().await, &tokens);
    store_path.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let store_path = store_path.stop().await;
    let baseline = Summary::of(&store_path);
    assert!(
        failures(&store_path).is_empty(),
        "{:?}",
        failures(&store_path)
    );

    let before_stats = stack.stats().await;
    let load = whoami_load(gateway, &tokens);
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let killed = Instant::now();
    redis.stop();
    // The breaker opens after a few failed Redis calls; from then on reads skip Redis.
    let opened = eventually(Duration::from_secs(10), || async {
        let now = stack.stats().await;
        (now.redis_breaker() == RedisBreaker::Open)
            .then_some(now)
            .ok_or(())
    })
    .await
    .expect("the Redis breaker opens while Redis is down");
    load.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let outage_stats = stack.stats().await;
    redis.restart().await;
    let back = Instant::now();

    // The hit ratio of the reads since the previous poll, until it is above 90%.
    let window = tokio::sync::Mutex::new(stack.stats().await);
    let recovered = eventually(Duration::from_secs(30), || async {
        let now = stack.stats().await;
        let mut previous = window.lock().await;
        let hits = now.hits - previous.hits;
        let reads = hits + now.misses - previous.misses;
        *previous = now;
        let ratio = hits as f64 / reads.max(1) as f64;
        if now.redis_up && reads >= 20 && ratio > 0.9 {
            Ok(ratio)
        } else {
            Err(ratio)
        }
    })
    .await;
    let recovered_in = back.elapsed();
    let calls = load.stop().await;

    let with_redis = Summary::of(calls.iter().filter(|c| c.started < killed));
    let outage = Outage {
        from: killed,
        until: back,
    };
    let outage = Summary::of(calls.iter().filter(|c| outage.started_during(c)));
    let after = Summary::of(calls.iter().filter(|c| c.started >= back));
    println!("store path (no cache):  {baseline}");
    println!("cache, Redis up:        {with_redis}");
    println!("cache, Redis killed:    {outage}");
    println!("cache, Redis back:      {after}");
    println!(
        "redis errors counted during the outage: {}; hit ratio {:.1}% reached {} after Redis returned",
        outage_stats.redis_errors - before_stats.redis_errors,
        recovered.unwrap_or_default() * 1e2,
        ms(recovered_in),
    );

    let failed = failures(&calls);
    assert!(
        failed.is_empty(),
        "{} of {} whoami calls failed: {:?}",
        failed.len(),
        calls.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        outage.calls >= PHASE_CALLS / 2,
        "the load kept going during the outage: {outage}"
    );
    assert!(
        outage_stats.redis_errors > before_stats.redis_errors && !outage_stats.redis_up,
        "the outage was noticed and counted: {outage_stats:?}"
    );
    // While the breaker was open, reads did not call Redis at all: none failed there, every
    // one was skipped (a probe's failures are not request errors).
    assert!(
        outage_stats.breaker_opens > before_stats.breaker_opens,
        "{before_stats:?} -> {outage_stats:?}"
    );
    // At most the failures that opened it, and the calls already in flight then, failed.
    let failed_at_redis = outage_stats.redis_errors - before_stats.redis_errors;
    assert!(
        failed_at_redis <= u64::from(FAILURES_TO_OPEN) + WORKERS as u64,
        "{failed_at_redis} reads failed at Redis: reads called it while the breaker was open"
    );
    assert!(
        outage_stats.redis_skipped >= opened.redis_skipped + PHASE_CALLS as u64 / 2,
        "reads skipped Redis while the breaker was open: {opened:?} -> {outage_stats:?}"
    );
    let bound = baseline.p99 + REDIS_TIMEOUT + MARGIN;
    assert!(
        outage.p99 <= bound,
        "p99 during the outage {} exceeds store-path p99 {} + Redis timeout {} + margin {}",
        ms(outage.p99),
        ms(baseline.p99),
        ms(REDIS_TIMEOUT),
        ms(MARGIN)
    );
    let ratio = recovered.expect("hit ratio above 90% within 30 s of Redis returning");
    assert!(ratio > 0.9);
    assert_eq!(
        stack.stats().await.redis_breaker(),
        RedisBreaker::Closed,
        "the breaker closed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_is_a_prompt_unavailable_and_everything_resumes_when_it_returns() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let mut stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "cached", 8).await);
    let uncached = accounts(&gateway, "uncached", 1).await.remove(0).token;
    let uncached_profile = gateway
        .who_am_i(whoami(&uncached, CALL_DEADLINE))
        .await
        .expect("whoami")
        .into_inner();
    // Evict that account, so reading it needs the store.
    let _: () = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
        .del(&[
            format!("userctl:v1:user:id:{}", uncached_profile.id),
            "userctl:v1:user:email:uncached0@example.com".to_owned(),
        ])
        .await
        .expect("evict");

    let load = whoami_load(gateway.clone(), &tokens);
    let ghosts = ghost_load(gateway.clone(), keys::read_key_set(stack.signing_keys()));
    load.wait_for_calls(200, CALL_DEADLINE).await;
    ghosts.wait_for_calls(50, CALL_DEADLINE).await;
    let stopped = Instant::now();
    stack.stop_store().await;

    let register = expect_unavailable(
        "register",
        gateway.clone().register(registration("new@example.com")),
    )
    .await;
    let unknown = expect_unavailable(
        "login of an email the cache has never seen",
        gateway.clone().login(login("nobody@example.com")),
    )
    .await;
    let evicted_whoami = expect_unavailable(
        "whoami of an account not in the cache",
        gateway.clone().who_am_i(whoami(&uncached, CALL_DEADLINE)),
    )
    .await;
    load.wait_for_calls(200, CALL_DEADLINE).await;

    stack.restart_store().await;
    let restarted = Instant::now();
    // Nothing else is restarted: the cache's channel finds the store again by itself.
    let recovered = eventually(Duration::from_secs(15), || {
        let mut gateway = gateway.clone();
        async move { gateway.register(registration("new@example.com")).await }
    })
    .await
    .expect("registration works again once the store is back");
    let recovered_in = restarted.elapsed();
    assert_eq!(recovered.into_inner().email, "new@example.com");
    let me = gateway
        .who_am_i(whoami(&uncached, CALL_DEADLINE))
        .await
        .expect("the evicted account reads again")
        .into_inner();
    assert_eq!(me.id, uncached_profile.id);
    let status = gateway
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect_err("unknown email");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    ghosts.wait_for_calls(50, CALL_DEADLINE).await;
    let ghosts = ghosts.stop().await;
    let calls = load.stop().await;
    let outage = Outage {
        from: stopped,
        until: restarted,
    };
    let report = OutageReport::new("store", outage, &calls, &ghosts);
    report.print();
    println!(
        "UNAVAILABLE after: register {}, login {}, uncached whoami {}; registration works {} after the store restarted",
        ms(register),
        ms(unknown),
        ms(evicted_whoami),
        ms(recovered_in)
    );
    report.assert_cached_reads_never_failed();
    assert!(
        report.cached_during().calls > 0,
        "load ran while the store was down"
    );
    report.assert_reads_needing_it_failed_only_as(Code::Unavailable, UNAVAILABLE);
    assert!(
        report.needing_it_down().iter().any(|c| c.result.is_err()),
        "the outage was felt by reads that need the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_a_prompt_unavailable_and_the_store_reconnects_by_itself() {
    let mut postgres = PostgresServer::start().await;
    let db = TestDatabase::Postgres {
        url: postgres.url(),
    };
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;
    let tokens = tokens(&accounts(&gateway, "db", 8).await);

    let load = whoami_load(gateway.clone(), &tokens);
    let ghosts = ghost_load(gateway.clone(), keys::read_key_set(stack.signing_keys()));
    load.wait_for_calls(200, CALL_DEADLINE).await;
    ghosts.wait_for_calls(50, CALL_DEADLINE).await;
    // One read in flight in the database when it stops, held by a lock that a prepared
    // transaction keeps (so the shutdown cannot release it before it cuts the read off).
    let mut lock = db.postgres_connection().await;
    lock.execute("BEGIN").await.expect("begin");
    lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    lock.execute("PREPARE TRANSACTION 'hold'")
        .await
        .expect("prepare");
    let held = tokio::spawn({
        let mut store = stack.store().await;
        async move {
            store
                .read_user(userctl_proto::user::v1::ReadUserRequest {
                    key: Some(userctl_proto::user::v1::read_user_request::Key::Id(999_999)),
                    session_id: String::new(),
                })
                .await
        }
    });
    let watcher = tokio::sync::Mutex::new(db.postgres_connection().await);
    eventually(Duration::from_secs(20), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *watcher.lock().await)
        .await
        .expect("pg_stat_activity");
        if waiting >= 1 { Ok(()) } else { Err(waiting) }
    })
    .await
    .expect("a read is waiting in the database");
    drop(watcher);
    let stopped = Instant::now();
    postgres.stop().await;
    let cut_off = held
        .await
        .expect("held read")
        .expect_err("a read cut off by the shutdown fails");
    assert_eq!(cut_off.code(), Code::Unavailable, "{cut_off:?}");

    let register = expect_unavailable(
        "register",
        gateway.clone().register(registration("new@example.com")),
    )
    .await;
    let unknown = expect_unavailable(
        "login of an email the cache has never seen",
        gateway.clone().login(login("nobody@example.com")),
    )
    .await;
    let direct = stack
        .store()
        .await
        .read_user(userctl_proto::user::v1::ReadUserRequest {
            key: Some(userctl_proto::user::v1::read_user_request::Key::Id(1)),
            session_id: String::new(),
        })
        .await
        .expect_err("the store cannot read");
    assert_eq!(direct.code(), Code::Unavailable, "{direct:?}");
    load.wait_for_calls(200, CALL_DEADLINE).await;

    postgres.restart().await;
    db.postgres_connection()
        .await
        .execute("ROLLBACK PREPARED 'hold'")
        .await
        .expect("release the lock");
    let restarted = Instant::now();
    // Neither the store nor anything else is restarted: the pool reconnects.
    let recovered = eventually(Duration::from_secs(15), || async {
        gateway
            .clone()
            .register(registration("new@example.com"))
            .await
            .map_err(|status| {
                // Only UNAVAILABLE may precede recovery: a stale connection is not INTERNAL.
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                status
            })
    })
    .await
    .expect("registration works again once the database is back");
    let recovered_in = restarted.elapsed();
    assert_eq!(recovered.into_inner().email, "new@example.com");
    gateway
        .login(login("new@example.com"))
        .await
        .expect("and its owner logs in");

    ghosts.wait_for_calls(50, CALL_DEADLINE).await;
    let ghosts = ghosts.stop().await;
    let calls = load.stop().await;
    let outage = Outage {
        from: stopped,
        until: restarted,
    };
    let report = OutageReport::new("database", outage, &calls, &ghosts);
    report.print();
    println!("a store read cut off by the shutdown: {:?}", cut_off.code());
    println!(
        "UNAVAILABLE after: register {}, login {}; registration works {} after the database restarted",
        ms(register),
        ms(unknown),
        ms(recovered_in)
    );
    report.assert_cached_reads_never_failed();
    // Sessions cut by the shutdown, a pool reconnecting: every failure is UNAVAILABLE.
    report.assert_reads_needing_it_failed_only_as(Code::Unavailable, UNAVAILABLE);
}

/// Waits until nothing accepts connections on `addr` any more (a terminated server closes its
/// listener first, then drains).
async fn stops_accepting(addr: &str) {
    let socket = addr.trim_start_matches("http://").to_owned();
    eventually(Duration::from_secs(10), || async {
        match tokio::net::TcpStream::connect(&socket).await {
            Ok(_) => Err("still accepting"),
            Err(_) => Ok(()),
        }
    })
    .await
    .expect("a terminated service stops accepting");
}

/// Whether a failed call was answered by the server at all (a status made by the client's own
/// transport, e.g. for a connection the server closed, carries its cause as a source).
fn answered_by_server(status: &Status) -> bool {
    std::error::Error::source(status).is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_every_service_exits_zero() {
    const IN_FLIGHT: usize = 6;
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let ProcessStack {
        mut stores,
        mut caches,
        gateway: mut gateway_process,
        client: gateway,
        ..
    } = ProcessStack::start(db.url(), &redis.url(), 1).await;
    let (mut store, mut cache) = (stores.remove(0), caches.remove(0));
    let tokens = tokens(&accounts(&gateway, "term", 4).await);

    // Hold every insert in the database, so the registrations below are certainly in flight
    // in all three services when the signal arrives.
    let mut lock = db.postgres_connection().await;
    lock.execute("BEGIN").await.expect("begin");
    lock.execute("LOCK TABLE users IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let load = whoami_load(gateway.clone(), &tokens);
    let registrations: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                gateway
                    .register(registration(&format!("inflight{i}@example.com")))
                    .await
            })
        })
        .collect();
    let watcher = tokio::sync::Mutex::new(db.postgres_connection().await);
    eventually(Duration::from_secs(20), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *watcher.lock().await)
        .await
        .expect("pg_stat_activity");
        if waiting as usize >= IN_FLIGHT { Ok(()) } else { Err(waiting) }
    })
    .await
    .expect("every registration is waiting on the database");
    load.wait_for_calls(100, CALL_DEADLINE).await;

    // Edge first, as an orchestrator stops a pipeline, back to back: each service serves on
    // for its drain grace (docs/design.md, "Replicas") before it stops accepting, and waiting
    // out one grace per hop would outlast the registrations' 3 s deadline between services.
    // Each signal lands while the registrations are in flight in that process.
    let signalled = Instant::now();
    gateway_process.terminate();
    cache.terminate();
    store.terminate();
    stops_accepting(&gateway_process.addr).await;
    // Whoami calls were in flight at the signal; stop sending new ones into a closed port.
    let calls = load.stop().await;
    stops_accepting(&cache.addr).await;
    stops_accepting(&store.addr).await;
    assert!(
        registrations.iter().all(|task| !task.is_finished()),
        "no registration has returned while the database still holds it"
    );
    let released = Instant::now();
    lock.execute("COMMIT").await.expect("release");

    let mut acknowledged = 0;
    for registration in registrations {
        let result = registration.await.expect("registration task");
        let profile = result.expect("an in-flight registration succeeds despite SIGTERM");
        assert!(profile.get_ref().email.starts_with("inflight"));
        acknowledged += 1;
    }
    let mut exits = Vec::new();
    for (name, process) in [
        ("gateway", &mut gateway_process),
        ("cache", &mut cache),
        ("store", &mut store),
    ] {
        let status = process
            .wait(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{name} exits after draining"));
        assert!(
            status.success(),
            "{name} exits 0, got {status:?}; it logged:\n{}",
            process.log()
        );
        exits.push(format!("{name} {}", ms(released.elapsed())));
    }
    let before = Summary::of(calls.iter().filter(|c| c.started + c.took < signalled));
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= signalled).collect();
    let refused = after.iter().filter(|c| c.result.is_err()).count();
    let stored = db.emails().await;
    println!(
        "in-flight registrations at SIGTERM: {IN_FLIGHT} sent, {acknowledged} acknowledged, {} in the database",
        stored.iter().filter(|e| e.starts_with("inflight")).count()
    );
    println!("whoami finished before SIGTERM: {before}");
    println!(
        "whoami started after SIGTERM: {} calls, {refused} refused",
        after.len()
    );
    println!(
        "exited 0, counted from the release of the in-flight requests: {}",
        exits.join(", ")
    );

    assert_eq!(before.failures, 0, "{:?}", failures(&calls));
    for call in &after {
        if let Err(status) = &call.result
            && answered_by_server(status)
        {
            assert_eq!(
                status.code(),
                Code::Unavailable,
                "the gateway refuses a request after SIGTERM as UNAVAILABLE: {status:?}\ngateway log:\n{}",
                gateway_process.log()
            );
        }
    }
    for i in 0..IN_FLIGHT {
        assert!(
            stored.contains(&format!("inflight{i}@example.com")),
            "{stored:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_cache_under_load_costs_clients_only_unavailable() {
    // A rolling restart of the cache, several times under load. While a cache drains, the
    // gateway's calls racing its GOAWAY fail in transport; tonic reports some of those as
    // INTERNAL, which the gateway must pass on as UNAVAILABLE ("retry shortly"), never as an
    // internal error, during a routine restart.
    const RESTARTS: usize = 8;
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let mut processes = ProcessStack::start(db.url(), &redis.url(), 1).await;
    let tokens = tokens(&accounts(&processes.client, "roll", 4).await);
    let load = whoami_load(processes.client.clone(), &tokens);
    let listen = processes.caches[0]
        .addr
        .trim_start_matches("http://")
        .to_owned();
    let redis_url = redis.url();
    let started = Instant::now();
    for _ in 0..RESTARTS {
        load.wait_for_calls(100, CALL_DEADLINE).await;
        processes.caches[0].terminate();
        let status = processes.caches[0].wait(Duration::from_secs(15)).await;
        assert!(status.is_some_and(|status| status.success()), "{status:?}");
        processes.caches[0] = Usersvc::start_on(
            "cache",
            &listen,
            &[
                "--redis-url",
                &redis_url,
                "--store-addr",
                &processes.stores[0].addr,
            ],
            &[("RUST_LOG", "info")],
        )
        .await;
    }
    load.wait_for_calls(100, CALL_DEADLINE).await;
    let calls = load.stop().await;
    let failed = failures(&calls);
    let wrong: Vec<&&Status> = failed
        .iter()
        .filter(|status| status.code() != Code::Unavailable)
        .collect();
    println!(
        "{RESTARTS} cache restarts in {:.1} s under load: {}; {} failures not UNAVAILABLE",
        started.elapsed().as_secs_f64(),
        Summary::of(&calls),
        wrong.len()
    );
    assert!(wrong.is_empty(), "{:?}", &wrong[..wrong.len().min(3)]);
}
