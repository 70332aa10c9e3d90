//! No lost writes: a storm of concurrent registrations, a third of them duplicates, against
//! Postgres while Redis is killed and restarted and the store is stopped and restarted. Every
//! registration acknowledged OK is in the database with the id the client was given, no email
//! exists twice, and every other attempt was told it failed.
//!
//! Size: each registration costs one argon2id hash (≈30 ms in release; the dev profile builds
//! argon2 with opt-level 3, so about the same here) on a pool of one hash per core, so on two
//! cores 1,200 registrations are ≈20 s of hashing whatever the client's concurrency. That is
//! "thousands" scaled to what the README's test command can afford; the counts are constants.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use rand::seq::SliceRandom as _;
use tonic::{Code, Request, Status, transport::Channel};
use userctl_proto::{
    gateway::v1::{Profile, RegisterRequest, gateway_client::GatewayClient},
    user::v1::{ReadUserRequest, read_user_request::Key},
};
use userctl_tests::{
    database::TestDatabase,
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

/// Distinct accounts; each is attempted [`ATTEMPTS`] times under different spellings.
const ACCOUNTS: usize = 400;
const ATTEMPTS: usize = 3;
/// Registrations in flight from the client at once.
const CONCURRENCY: usize = 16;
/// The whole storm must finish within this, or the test fails.
const STORM_LIMIT: Duration = Duration::from_secs(150);

/// The `attempt`-th spelling of account `i`; all normalise to `user{i}@example.com`.
fn spelling(i: usize, attempt: usize) -> String {
    match attempt % 3 {
        0 => format!("user{i}@example.com"),
        1 => format!("USER{i}@Example.COM"),
        _ => format!("  user{i}@example.com\t"),
    }
}

fn canonical(i: usize) -> String {
    spelling(i, 0)
}

#[derive(Debug)]
struct Attempt {
    account: usize,
    result: Result<Profile, Status>,
}

/// Registers account `account` under its `attempt`-th spelling, with a deadline of its own.
async fn attempt(mut gateway: GatewayClient<Channel>, account: usize, attempt: usize) -> Attempt {
    let mut request = Request::new(RegisterRequest {
        email: spelling(account, attempt),
        full_name: format!("User {account}"),
        password: format!("password of user {account}"),
    });
    request.set_timeout(Duration::from_secs(30));
    let result = gateway.register(request).await.map(|r| r.into_inner());
    Attempt { account, result }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_registration_is_lost_while_redis_and_the_store_restart() {
    let db = TestDatabase::postgres().await;
    let mut redis = RedisServer::start().await;
    // Every attempt comes from this one address: far more registrations than a minute's
    // budget.
    let options = StackOptions {
        registrations_per_peer: NonZeroU32::new(1_000_000).expect("non-zero"),
        ..StackOptions::default()
    };
    let mut stack = TestStack::start_with(&db, &redis, options).await;
    let gateway = stack.gateway().await;

    let mut plan: Vec<(usize, usize)> = (0..ACCOUNTS)
        .flat_map(|i| (0..ATTEMPTS).map(move |attempt| (i, attempt)))
        .collect();
    plan.shuffle(&mut rand::rng());
    let total = plan.len();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let storm = tokio::spawn({
        let done = done.clone();
        async move {
            futures::stream::iter(plan)
                .map(|(account, n)| {
                    let (gateway, done) = (gateway.clone(), done.clone());
                    async move {
                        let outcome = attempt(gateway, account, n).await;
                        done.fetch_add(1, Ordering::Relaxed);
                        outcome
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await
        }
    });

    // Faults at points of progress, not of time, so a slow machine sees the same storm.
    let at = |share: usize| {
        let done = done.clone();
        async move {
            let target = total * share / 100;
            while done.load(Ordering::Relaxed) < target {
                assert!(started.elapsed() < STORM_LIMIT, "the storm stalled");
                // Polls a progress counter: the condition, not the delay, decides.
                tokio::time::sleep(userctl_tests::POLL_INTERVAL).await;
            }
            format!("{:.1} s", started.elapsed().as_secs_f64())
        }
    };
    let mut timeline = Vec::new();
    timeline.push(format!("Redis killed at {}", at(15).await));
    redis.stop();
    timeline.push(format!("Redis restarted at {}", at(30).await));
    redis.restart().await;
    timeline.push(format!("store stopped at {}", at(45).await));
    stack.stop_store().await;
    timeline.push(format!("store restarted at {}", at(55).await));
    stack.restart_store().await;

    let attempts = tokio::time::timeout(STORM_LIMIT, storm)
        .await
        .expect("the storm finishes in time")
        .expect("storm task");
    let took = started.elapsed();

    // What the clients were told.
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut acknowledged: BTreeMap<usize, Vec<&Profile>> = BTreeMap::new();
    let mut refused_as_taken: BTreeSet<usize> = BTreeSet::new();
    let mut unavailable: BTreeSet<usize> = BTreeSet::new();
    for attempt in &attempts {
        let code = attempt
            .result
            .as_ref()
            .map_or_else(|status| status.code(), |_| Code::Ok);
        *by_code.entry(format!("{code:?}")).or_default() += 1;
        match &attempt.result {
            Ok(profile) => acknowledged
                .entry(attempt.account)
                .or_default()
                .push(profile),
            Err(status) if status.code() == Code::AlreadyExists => {
                refused_as_taken.insert(attempt.account);
            }
            Err(status) if status.code() == Code::Unavailable => {
                unavailable.insert(attempt.account);
            }
            Err(status) => panic!("an attempt failed in an undocumented way: {status:?}"),
        }
    }

    // What the database holds.
    let mut conn = db.postgres_connection().await;
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, email FROM users ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("read users");
    let stored: BTreeMap<&str, i64> = rows
        .iter()
        .map(|(id, email)| (email.as_str(), *id))
        .collect();
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT lower(trim(email)) FROM users GROUP BY 1 HAVING count(*) > 1) AS d",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count duplicates");

    let written_unacknowledged: Vec<usize> = (0..ACCOUNTS)
        .filter(|i| stored.contains_key(canonical(*i).as_str()) && !acknowledged.contains_key(i))
        .collect();
    let never_written = (0..ACCOUNTS)
        .filter(|i| !stored.contains_key(canonical(*i).as_str()))
        .count();
    println!(
        "{total} registrations of {ACCOUNTS} accounts ({CONCURRENCY} in flight) in {:.1} s: {by_code:?}",
        took.as_secs_f64()
    );
    println!("{}", timeline.join("; "));
    println!(
        "accounts checked: {}; acknowledged {}, in the database {}, written but answered UNAVAILABLE {}, never written {}",
        ACCOUNTS,
        acknowledged.len(),
        stored.len(),
        written_unacknowledged.len(),
        never_written
    );

    assert_eq!(attempts.len(), total, "every attempt got an answer");
    assert_eq!(rows.len(), stored.len(), "no email twice");
    assert_eq!(twice, 0, "no email twice, whatever its case");
    assert!(
        rows.len() <= ACCOUNTS,
        "nothing but the planned accounts was written"
    );
    for (account, profiles) in &acknowledged {
        assert_eq!(
            profiles.len(),
            1,
            "one registration per email is acknowledged: account {account}: {profiles:?}"
        );
        let profile = profiles[0];
        assert_eq!(profile.email, canonical(*account));
        assert_eq!(
            stored.get(profile.email.as_str()),
            Some(&profile.id),
            "an acknowledged registration is in the database with the id its client got"
        );
    }
    for account in &refused_as_taken {
        assert!(
            stored.contains_key(canonical(*account).as_str()),
            "ALREADY_EXISTS only for an email that is really taken: account {account}"
        );
    }
    for account in &written_unacknowledged {
        assert!(
            unavailable.contains(account),
            "a write nobody was told about had an attempt answered UNAVAILABLE: account {account}"
        );
    }
    assert!(
        acknowledged.len() >= ACCOUNTS / 2,
        "most accounts were created: {}",
        acknowledged.len()
    );
    assert!(
        by_code.contains_key("Unavailable"),
        "the store outage was felt by some registrations: {by_code:?}"
    );

    // And the cache, which lost everything with Redis and missed creates' invalidations while
    // it was down, serves every stored account by email and by id.
    let mut cache = stack.cache().await;
    for (email, id) in &stored {
        for key in [Key::Email((*email).to_owned()), Key::Id(*id)] {
            let user = cache
                .read_user(ReadUserRequest {
                    key: Some(key.clone()),
                    session_id: String::new(),
                })
                .await
                .unwrap_or_else(|status| panic!("{key:?} reads through the cache: {status:?}"))
                .into_inner();
            assert_eq!((user.id, user.email.as_str()), (*id, *email));
        }
    }
    stack.stop().await;
}

/// The same promise with two replicas of every service behind `userctl`, while each service is
/// restarted replica by replica (`userctl restart`): a rolling restart fails no registration, so
/// every attempt is answered OK or ALREADY_EXISTS; every OK is stored once with the id its
/// client got; nothing is stored that nobody was told about.
///
/// Size: registrations go on, from one address through the published front, until all three
/// rolling restarts are done (about half a minute on two cores); the budget per address is
/// raised through the environment `userctl up` passes on to the local services
/// (`USERSVC_REGISTRATIONS_PER_PEER`), since a storm from one address is what it exists to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_registration_is_lost_while_every_service_restarts_replica_by_replica() {
    use userctl_tests::{
        cli::{Userctl, run_command},
        e2e::{LOCAL_UP, Teardown, status},
    };
    /// Registrations in flight at once, and every how many attempts one repeats an account.
    const IN_FLIGHT: usize = 8;
    const REPEAT_EVERY: usize = 3;

    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let mut up =
        userctl.command(&[LOCAL_UP, &["--replicas", "gateway=2,cache=2,store=2"]].concat());
    up.env("USERSVC_REGISTRATIONS_PER_PEER", "1000000");
    run_command(up, "").await.ok();
    let rows = status(&userctl).await;
    let front = rows
        .iter()
        .find(|row| row["service"] == "proxy")
        .and_then(|row| row["address"].as_str())
        .expect("a proxy holds the published gateway port")
        .to_owned();
    let gateway = GatewayClient::new(
        Channel::from_shared(front)
            .expect("front URL")
            .connect()
            .await
            .expect("connect to the front"),
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let storm = tokio::spawn({
        let stop = stop.clone();
        async move {
            let attempts = (0..).map_while(|n: usize| {
                // An account attempted before comes back every REPEAT_EVERY attempts.
                let account = if n % REPEAT_EVERY == REPEAT_EVERY - 1 {
                    n / 2
                } else {
                    n
                };
                (!stop.is_cancelled()).then_some((account, n % ATTEMPTS))
            });
            futures::stream::iter(attempts)
                .map(|(account, n)| attempt(gateway.clone(), account, n))
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
        }
    });
    let mut timeline = Vec::new();
    for service in ["store", "cache", "gateway"] {
        userctl.run(&["restart", service]).await.ok();
        timeline.push(format!(
            "{service} restarted by {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    stop.cancel();
    let attempts = tokio::time::timeout(STORM_LIMIT, storm)
        .await
        .expect("the storm finishes in time")
        .expect("storm task");

    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut acknowledged: BTreeMap<usize, Vec<&Profile>> = BTreeMap::new();
    for attempt in &attempts {
        let code = attempt
            .result
            .as_ref()
            .map_or_else(|status| status.code(), |_| Code::Ok);
        *by_code.entry(format!("{code:?}")).or_default() += 1;
        if let Ok(profile) = &attempt.result {
            acknowledged
                .entry(attempt.account)
                .or_default()
                .push(profile);
        }
    }
    let database = userctl.project_dir().join("local").join("userctl.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}?mode=ro",
        database.display()
    ))
    .await
    .expect("open the stack's SQLite file");
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, email FROM users ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("read users");
    let stored: BTreeMap<&str, i64> = rows
        .iter()
        .map(|(id, email)| (email.as_str(), *id))
        .collect();
    println!(
        "{} registrations through two gateways while every service restarted: {by_code:?}; {}; {} accounts stored",
        attempts.len(),
        timeline.join(", "),
        stored.len()
    );

    assert!(
        attempts.len() >= 100,
        "registrations kept going through the restarts: {}",
        attempts.len()
    );
    assert_eq!(
        by_code.keys().cloned().collect::<Vec<_>>(),
        ["AlreadyExists", "Ok"],
        "a rolling restart fails no registration: {by_code:?}"
    );
    assert_eq!(rows.len(), stored.len(), "no email twice");
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "every stored account was acknowledged, every acknowledged one stored"
    );
    for (account, profiles) in &acknowledged {
        assert_eq!(profiles.len(), 1, "account {account} acknowledged once");
        assert_eq!(
            stored.get(canonical(*account).as_str()),
            Some(&profiles[0].id),
            "account {account} stored with the id its client got"
        );
    }
}
