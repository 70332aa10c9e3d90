//! Registration floods: registrations are limited per peer address, counted before any hashing
//! and shared by every transport, and a flood from one address cannot take the hashing
//! capacity another address's login needs. Two peers on one machine: clients bind distinct
//! loopback source addresses (127.0.0.1 and 127.0.0.2).

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt as _;
use userctl_proto::gateway::v1::gateway_client::GatewayClient;
use userctl_tests::{
    database::TestDatabase,
    hostile::{PASSWORD, login, nz, register, unthrottled},
    load::median,
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const REFUSED: &str = "too many registrations from this address; try again in";

/// A gRPC client whose connection comes from `source` (any 127.0.0.0/8 address is loopback).
async fn client_from(addr: &str, source: [u8; 4]) -> GatewayClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .expect("address")
        .local_address(Some(IpAddr::from(source)))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("connect");
    GatewayClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_the_per_address_limit_are_refused_over_grpc_and_http() {
    const LIMIT: u32 = 4;
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions {
        registrations_per_peer: nz(LIMIT),
        ..StackOptions::default()
    };
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut flooder = client_from(&stack.gateway_addr, [127, 0, 0, 1]).await;

    // Twice the budget at once: exactly the budget is let through to hashing and the store.
    let attempts = (0..2 * LIMIT).map(|i| {
        let mut flooder = flooder.clone();
        async move {
            flooder
                .register(register(&format!("flood{i}@example.com"), "F", PASSWORD))
                .await
        }
    });
    let results = join_all(attempts).await;
    let created = results.iter().filter(|result| result.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(created, LIMIT as usize, "{results:?}");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().starts_with(REFUSED), "{status:?}");
        let delay = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .expect("RetryInfo with a delay");
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_secs(60),
            "{delay:?}"
        );
    }

    // A refused address stays refused whatever it sends, even a duplicate of an account...
    let status = flooder
        .register(register("flood0@example.com", "F", PASSWORD))
        .await
        .expect_err("still over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // ...and over HTTP, from the same address: one budget for both doors.
    let client = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 1]))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let body = json!({"Email": "http@example.com", "FullName": "H",
        "Password": PASSWORD, "ConfirmPassword": PASSWORD});
    let response = client
        .post(format!("{}/api/auth/register", stack.http_addr))
        .json(&body)
        .send()
        .await
        .expect("HTTP register");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let envelope: Value = response.json().await.expect("JSON envelope");
    assert_eq!(
        envelope["Error"]["Code"], "RESOURCE_EXHAUSTED",
        "{envelope}"
    );
    assert!(
        envelope["Error"]["Message"]
            .as_str()
            .is_some_and(|message| message.starts_with(REFUSED)),
        "{envelope}"
    );

    // Another address has its own budget; logins from the refused one are not affected.
    let mut other = client_from(&stack.gateway_addr, [127, 0, 0, 2]).await;
    other
        .register(register("other@example.com", "O", PASSWORD))
        .await
        .expect("another address registers");
    let one_created = results
        .iter()
        .position(Result::is_ok)
        .expect("some were created");
    flooder
        .login(login(&format!("flood{one_created}@example.com"), PASSWORD))
        .await
        .expect("the refused address still logs in");
    // A malformed registration is refused for what it is, and spends nothing.
    let status = other
        .register(register("not an email", "O", PASSWORD))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_from_one_address_does_not_hold_up_another_addresss_login() {
    // Same-run figures: B's login on a quiet gateway, then while A has FLOOD registrations in
    // flight at once. Bound: B waits for at most one hash per hashing permit of A's before its
    // own runs, and the machine is busy with A's hashing, so a few times its quiet latency;
    // waiting behind A's whole queue instead is dozens of times it (printed).
    const FLOOD: usize = 150;
    const SAMPLES: usize = 5;
    const MAX_RATIO: f64 = 10.0;
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    // A's registrations all reach the hashing pool: this is about hashing, not the limit.
    let stack = TestStack::start_with(&db, &redis, unthrottled()).await;
    let flooder = client_from(&stack.gateway_addr, [127, 0, 0, 1]).await;
    let mut victim = client_from(&stack.gateway_addr, [127, 0, 0, 2]).await;
    victim
        .register(register("victim@example.com", "V", PASSWORD))
        .await
        .expect("register");
    let mut timed_login = async || {
        let started = Instant::now();
        victim
            .login(login("victim@example.com", PASSWORD))
            .await
            .expect("the victim logs in");
        started.elapsed()
    };
    let mut quiet = Vec::new();
    for _ in 0..SAMPLES {
        quiet.push(timed_login().await);
    }

    let (answered, created) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flood = tokio::spawn(join_all((0..FLOOD).map(|i| {
        let mut flooder = flooder.clone();
        let (answered, created) = (answered.clone(), created.clone());
        async move {
            let result = flooder
                .register(register(&format!("flood{i}@example.com"), "F", PASSWORD))
                .await;
            if result.is_ok() {
                created.fetch_add(1, Ordering::Relaxed);
            }
            answered.fetch_add(1, Ordering::Relaxed);
            result
        }
    })));
    // Once one of A's registrations has been hashed and stored, the rest arrived long before
    // (sending takes microseconds, a hash tens of milliseconds): the flood is queued.
    userctl_tests::eventually(Duration::from_secs(60), || {
        let created = created.load(Ordering::Relaxed);
        async move { if created > 0 { Ok(()) } else { Err(created) } }
    })
    .await
    .expect("the flood's first registration is stored");
    // Only logins that start while the flood is still being answered count.
    let mut loaded = Vec::new();
    while loaded.len() < SAMPLES && answered.load(Ordering::Relaxed) < FLOOD {
        loaded.push(timed_login().await);
    }
    let results = flood.await.expect("flood task");
    assert!(
        !loaded.is_empty(),
        "the flood was over before the victim's logins were measured"
    );

    let (quiet, loaded) = (median(&quiet), median(&loaded));
    let ratio = loaded.as_secs_f64() / quiet.as_secs_f64();
    let created = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "victim login: quiet {quiet:?}, during a flood of {FLOOD} registrations {loaded:?} ({ratio:.1}x); flood: {created} created, {} refused at once",
        FLOOD - created
    );
    assert!(
        ratio <= MAX_RATIO,
        "the victim's login took {ratio:.1}x its quiet latency during the flood (at most {MAX_RATIO}x)"
    );
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        // Past the per-address queue the flood is refused at once, never failed.
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    stack.stop().await;
}
