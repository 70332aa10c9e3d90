//! Brute force: failed logins are throttled per account and per peer with retry information,
//! and a flood of wrong passwords does not starve requests that need no password work.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;
use userctl_proto::gateway::v1::gateway_client::GatewayClient;
use userctl_tests::{
    database::TestDatabase,
    hostile::{BAD_CREDENTIALS, PASSWORD, login, nz, register, unthrottled},
    load::{Load, Summary, whoami},
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

/// Logs in with `password` until RESOURCE_EXHAUSTED or `limit` attempts; returns the attempt
/// (1-based) that was refused, and the status.
async fn fail_until_throttled(
    gateway: &mut GatewayClient<Channel>,
    email: impl Fn(usize) -> String,
    password: &str,
    limit: usize,
) -> (usize, Status) {
    for attempt in 1..=limit {
        let status = gateway
            .login(login(&email(attempt), password))
            .await
            .expect_err("wrong credentials");
        match status.code() {
            Code::Unauthenticated => assert_eq!(status.message(), BAD_CREDENTIALS),
            Code::ResourceExhausted => return (attempt, status),
            _ => panic!("attempt {attempt}: {status:?}"),
        }
    }
    panic!("not throttled after {limit} failed logins");
}

#[track_caller]
fn assert_retry_info(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay >= Duration::from_secs(1) && delay <= Duration::from_secs(60),
        "{delay:?}"
    );
    assert!(
        status
            .message()
            .starts_with("too many failed logins; retry in"),
        "{status:?}"
    );
    delay
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_with_retry_information() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions::default();
    let budget = options.failed_logins_per_account.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    for email in ["victim@example.com", "bystander@example.com"] {
        gateway
            .register(register(email, "N", PASSWORD))
            .await
            .expect("register");
    }

    let (refused_at, status) = fail_until_throttled(
        &mut gateway,
        |_| "victim@example.com".into(),
        "not the password",
        budget + 5,
    )
    .await;
    let delay = assert_retry_info(&status);
    assert_eq!(
        refused_at,
        budget + 1,
        "exactly {budget} failures are judged, then the account is locked"
    );
    // Locked means locked: the right password is refused too (and costs no hashing).
    let status = gateway
        .login(login("VICTIM@example.com", PASSWORD))
        .await
        .expect_err("locked account");
    assert_retry_info(&status);
    // Another account from the same peer is not affected.
    gateway
        .login(login("bystander@example.com", PASSWORD))
        .await
        .expect("other accounts log in");
    println!(
        "account budget {budget}: attempt {refused_at} refused with RESOURCE_EXHAUSTED, retry in {delay:?}"
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_peer_across_accounts() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions {
        failed_logins_per_account: nz(1_000),
        failed_logins_per_peer: nz(10),
        ..StackOptions::default()
    };
    let budget = options.failed_logins_per_peer.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(register("real@example.com", "N", PASSWORD))
        .await
        .expect("register");

    let (refused_at, status) = fail_until_throttled(
        &mut gateway,
        |i| format!("guess{i}@example.com"),
        PASSWORD,
        budget + 5,
    )
    .await;
    let delay = assert_retry_info(&status);
    assert!(
        (budget..=budget + 2).contains(&refused_at),
        "refused at attempt {refused_at} with a budget of {budget}"
    );
    // The peer is locked, whatever account it tries next.
    let status = gateway
        .login(login("real@example.com", PASSWORD))
        .await
        .expect_err("locked peer");
    assert_retry_info(&status);
    println!(
        "peer budget {budget}: attempt {refused_at} (each a different email) refused, retry in {delay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_does_not_starve_whoami() {
    // Throttling off, so every flooding login does a full argon2 verification: the worst case
    // for the gateway's CPU. WhoAmI needs no password work and must stay quick.
    const FLOODERS: usize = 16;
    const CALLS: usize = 400;
    // On top of the same-run quiet p99: what two argon2 threads on two cores (the hashing
    // pool's size here) cost a request that needs a few hundred microseconds of CPU, with
    // headroom for a busy machine. A starved whoami would instead queue behind the hashing,
    // as long as a flooding login waits (printed: around a second here).
    const MARGIN: Duration = Duration::from_millis(250);
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start_with(&db, &redis, unthrottled()).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(register("reader@example.com", "N", PASSWORD))
        .await
        .expect("register");
    let token: Arc<str> = gateway
        .login(login("reader@example.com", PASSWORD))
        .await
        .expect("login")
        .into_inner()
        .access_token
        .into();
    let whoami_load = || {
        let (gateway, token) = (gateway.clone(), token.clone());
        Load::start(2, CALLS, move |_| {
            let (mut gateway, token) = (gateway.clone(), token.clone());
            async move {
                gateway
                    .who_am_i(whoami(&token, Duration::from_secs(10)))
                    .await
                    .map(drop)
            }
        })
    };

    let quiet = whoami_load();
    quiet.wait_for_calls(CALLS, Duration::from_secs(30)).await;
    let quiet = Summary::of(&quiet.stop().await);

    let flood = Load::start(FLOODERS, 100_000, {
        let gateway = gateway.clone();
        move |n| {
            let mut gateway = gateway.clone();
            async move {
                let status = gateway
                    .login(login(
                        &format!("reader{}@example.com", n % 3),
                        "wrong password",
                    ))
                    .await
                    .expect_err("wrong password");
                if status.code() == Code::Unauthenticated {
                    Ok(())
                } else {
                    Err(status)
                }
            }
        }
    });
    // Let the flood fill the hashing pool before measuring.
    flood
        .wait_for_calls(FLOODERS, Duration::from_secs(30))
        .await;
    let flooded_started = Instant::now();
    let flooded = whoami_load();
    flooded.wait_for_calls(CALLS, Duration::from_secs(60)).await;
    let flooded_calls = flooded.stop().await;
    let flood_seconds = flooded_started.elapsed().as_secs_f64();
    let flood_calls = flood.stop().await;
    let flooded = Summary::of(&flooded_calls);
    let logins = Summary::of(&flood_calls);

    println!("whoami, quiet:          {quiet}");
    println!("whoami, during flood:   {flooded}");
    println!(
        "flood: {FLOODERS} clients, {logins} ({:.0} wrong-password logins/s while whoami was measured)",
        flood_calls
            .iter()
            .filter(|c| c.started >= flooded_started)
            .count() as f64
            / flood_seconds
    );
    assert_eq!(
        logins.failures, 0,
        "every flooding login got UNAUTHENTICATED"
    );
    assert_eq!(quiet.failures + flooded.failures, 0);
    assert_eq!(flooded.calls, CALLS, "whoami kept being served");
    let bound = quiet.p99 + MARGIN;
    assert!(
        flooded.p99 <= bound,
        "whoami p99 during the flood {:?} exceeds the quiet p99 {:?} + {MARGIN:?}",
        flooded.p99,
        quiet.p99
    );
}
