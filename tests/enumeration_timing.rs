//! Account enumeration by timing: a login for an unknown email and one with a wrong password
//! get the same answer in the same time, with the cache cold and warm.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use userctl_proto::gateway::v1::{LoginRequest, gateway_client::GatewayClient};
use userctl_tests::{
    database::TestDatabase,
    hostile::{PASSWORD, login, register, unthrottled},
    load::median,
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

/// Medians of `samples` interleaved logins of each kind, and every distinct answer seen.
async fn login_medians(
    gateway: &mut GatewayClient<Channel>,
    samples: usize,
    mut before_each: impl AsyncFnMut(bool),
    request: impl Fn(usize, bool) -> LoginRequest,
) -> (Duration, Duration, std::collections::BTreeSet<String>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut answers = std::collections::BTreeSet::new();
    for i in 0..samples * 2 {
        let is_first = i % 2 == 0;
        before_each(is_first).await;
        let request = request(i, is_first);
        let started = Instant::now();
        let status = gateway.login(request).await.expect_err("refused");
        let took = started.elapsed();
        answers.insert(format!(
            "{:?} {:?} {:?}",
            status.code(),
            status.message(),
            status.details()
        ));
        if is_first { &mut first } else { &mut second }.push(took);
    }
    (median(&first), median(&second), answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    // Samples of each kind interleaved, so a change of machine load hits both alike; compared
    // in like cache states. Cold: a never-seen unknown email against the known account just
    // evicted from the cache (both read the store). Warm: one unknown email again and again
    // (a cached "no such user") against the cached known account. Tolerance: 5 ms plus 20% of
    // the larger median; both are one argon2 verification (tens of ms), and skipping it for
    // unknown emails would differ by all of it.
    const SAMPLES: usize = 20;
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions {
        negative_ttl: Duration::from_secs(300),
        ..unthrottled()
    };
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    let known = gateway
        .register(register("known@example.com", "N", PASSWORD))
        .await
        .expect("register")
        .into_inner();
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let known_keys = [
        format!("userctl:v1:user:id:{}", known.id),
        "userctl:v1:user:email:known@example.com".to_owned(),
    ];
    let wrong_password = || login("known@example.com", "wrong password");

    let (cold_unknown, cold_known, cold_answers) = login_medians(
        &mut gateway,
        SAMPLES,
        async |is_unknown| {
            if !is_unknown {
                let _: () = redis::AsyncCommands::del(&mut conn, &known_keys)
                    .await
                    .expect("evict");
            }
        },
        |i, is_unknown| {
            if is_unknown {
                login(&format!("cold{i}@example.com"), PASSWORD)
            } else {
                wrong_password()
            }
        },
    )
    .await;
    let (warm_unknown, warm_known, warm_answers) = login_medians(
        &mut gateway,
        SAMPLES,
        async |_| {},
        |_, is_unknown| {
            if is_unknown {
                login("warm@example.com", PASSWORD)
            } else {
                wrong_password()
            }
        },
    )
    .await;

    let tolerance = |a: Duration, b: Duration| Duration::from_millis(5) + a.max(b) / 5;
    println!(
        "median login, cold: unknown email {cold_unknown:?}, wrong password {cold_known:?} (tolerance {:?})",
        tolerance(cold_unknown, cold_known)
    );
    println!(
        "median login, warm: unknown email {warm_unknown:?}, wrong password {warm_known:?} (tolerance {:?})",
        tolerance(warm_unknown, warm_known)
    );
    println!(
        "not asserted: a first probe of an unknown email (cold) against a recently active \
         account (warm) differs by one store read: {:+.1} ms here",
        (cold_unknown.as_secs_f64() - warm_known.as_secs_f64()) * 1e3
    );
    let answers: std::collections::BTreeSet<_> = cold_answers.union(&warm_answers).collect();
    assert_eq!(answers.len(), 1, "one answer for both: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|answer| answer.starts_with("Unauthenticated \"invalid email or password\"")),
        "{answers:?}"
    );
    for (state, unknown, known) in [
        ("cold", cold_unknown, cold_known),
        ("warm", warm_unknown, warm_known),
    ] {
        assert!(
            unknown.abs_diff(known) <= tolerance(unknown, known),
            "{state}: timing tells them apart: {unknown:?} vs {known:?}"
        );
    }
}
