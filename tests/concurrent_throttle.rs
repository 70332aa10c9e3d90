//! The login throttle under concurrency: an attempt is reserved before its password is judged,
//! so a burst of guesses at once is judged no more often than the budget allows; the budget is
//! shared by every gateway on one Redis, and still holds per process while Redis is down.

use futures::future::join_all;
use tonic::{Code, transport::Channel};
use userctl_proto::gateway::v1::gateway_client::GatewayClient;
use userctl_tests::{
    database::TestDatabase,
    hostile::{BAD_CREDENTIALS, PASSWORD, login, register},
    process::Usersvc,
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const VICTIM: &str = "victim@example.com";

/// Sends `n` wrong-password logins for `VICTIM` at once on each gateway (each on one
/// connection), and returns how many were judged (UNAUTHENTICATED) and how many refused.
async fn guess_at_once(gateways: &[GatewayClient<Channel>], n: usize) -> (usize, usize) {
    let calls = gateways.iter().flat_map(|gateway| {
        (0..n).map(move |i| {
            let mut gateway = gateway.clone();
            async move {
                gateway
                    .login(login(VICTIM, &format!("guess {i}")))
                    .await
                    .expect_err("every guess is wrong")
            }
        })
    });
    let statuses = join_all(calls).await;
    let judged = statuses
        .iter()
        .filter(|status| status.code() == Code::Unauthenticated)
        .inspect(|status| assert_eq!(status.message(), BAD_CREDENTIALS))
        .count();
    let refused = statuses
        .iter()
        .filter(|status| status.code() == Code::ResourceExhausted)
        .count();
    assert_eq!(judged + refused, statuses.len(), "{statuses:?}");
    (judged, refused)
}

async fn client(addr: &str) -> GatewayClient<Channel> {
    GatewayClient::connect(addr.to_owned())
        .await
        .expect("connect to the gateway")
}

/// A `usersvc gateway` process in front of `stack`'s cache, with its signing keys, keeping its
/// counters in `redis`.
async fn gateway_process(stack: &TestStack, redis: &RedisServer) -> Usersvc {
    let key_file = stack.signing_keys().to_str().expect("utf-8 path");
    Usersvc::start(
        "gateway",
        &[
            "--cache-addr",
            &stack.cache_addr,
            "--signing-keys",
            key_file,
            "--redis-url",
            &redis.url(),
        ],
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_are_judged_no_more_often_than_the_account_budget() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions::default();
    let budget = options.failed_logins_per_account.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(register(VICTIM, "V", PASSWORD))
        .await
        .expect("register");

    let (judged, refused) = guess_at_once(std::slice::from_ref(&gateway), 100).await;
    println!("100 wrong passwords at once on one connection: {judged} judged, {refused} refused");
    assert!(
        judged <= budget,
        "{judged} judged with a budget of {budget}"
    );
    // The owner is locked out too while the budget is spent.
    let status = gateway
        .login(login(VICTIM, PASSWORD))
        .await
        .expect_err("the account is locked");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_one_account_budget() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions::default();
    let budget = options.failed_logins_per_account.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    stack
        .gateway()
        .await
        .register(register(VICTIM, "V", PASSWORD))
        .await
        .expect("register");
    let first = gateway_process(&stack, &redis).await;
    let second = gateway_process(&stack, &redis).await;
    let gateways = [client(&first.addr).await, client(&second.addr).await];

    let (judged, refused) = guess_at_once(&gateways, 50).await;
    println!(
        "50 wrong passwords at once on each of two gateway processes: {judged} judged, {refused} refused"
    );
    assert!(
        judged <= budget,
        "{judged} judged with a budget of {budget}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_gateway_still_limits_logins_on_its_own() {
    let db = TestDatabase::sqlite();
    let mut redis = RedisServer::start().await;
    let options = StackOptions::default();
    let budget = options.failed_logins_per_account.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    stack
        .gateway()
        .await
        .register(register(VICTIM, "V", PASSWORD))
        .await
        .expect("register");
    let gateway = gateway_process(&stack, &redis).await;
    let client = client(&gateway.addr).await;
    // Redis holds the cache's copy too: the login path must not need it (the cache falls
    // through to the store), and neither may the throttle.
    redis.stop();

    let (judged, refused) = guess_at_once(std::slice::from_ref(&client), 100).await;
    println!("Redis down, 100 wrong passwords at once: {judged} judged, {refused} refused");
    assert!(
        judged <= budget,
        "{judged} judged with a budget of {budget}"
    );
    assert!(judged >= 1, "the gateway still judged logins without Redis");
    let log = gateway.log();
    assert_eq!(
        log.matches("login attempts are limited per gateway process")
            .count(),
        1,
        "the fallback is logged once:\n{log}"
    );
}
