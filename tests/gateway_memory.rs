//! The gateway's memory stays bounded under hashing load: a real `usersvc gateway` process in
//! front of a real cache and store, many logins at 64 in flight, then its resident memory read
//! from `/proc`. Each hash needs 19 MiB; the gateway keeps one buffer per hashing permit and
//! reuses it, so its memory is about the same after any number of logins. Allocating per hash
//! on the blocking threads instead grew it by hundreds of MiB that were never given back
//! (docs/design.md, "Passwords"). A debug build is fine: memory does not depend on
//! optimisation, and argon2 is optimised in the dev profile too.

use std::time::Duration;

use futures::{StreamExt as _, stream};
use tonic::transport::Channel;
use userctl_proto::gateway::v1::gateway_client::GatewayClient;
use userctl_tests::{
    database::TestDatabase,
    hostile::{PASSWORD, login, register},
    keys,
    process::Usersvc,
    redis::RedisServer,
};

/// Logins sent: enough for the old behaviour to pass the bound several times over.
const LOGINS: usize = 300;
const IN_FLIGHT: usize = 64;
/// What the logins may add to the gateway's memory: the second 19 MiB hashing buffer (the
/// registration made the first before the first reading) and room for the blocking threads'
/// stacks and allocator arenas. Allocating per hash added hundreds of MiB. The absolute target,
/// 64 MB after the login workload, is for a release build and `userctl bench` checks it
/// (BENCHMARKS.md: 54 MB); a debug binary's own pages add about 20 MiB to any reading here.
const MAX_GROWTH_MIB: u64 = 19 + 8;

fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in kB");
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_holds_its_hashing_memory_flat_through_many_concurrent_logins() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let key_dir = tempfile::tempdir().expect("key dir");
    let key_file = keys::write_key_set(key_dir.path());
    let store = Usersvc::start("store", &["--database-url", db.url()], &[]).await;
    let redis_url = redis.url();
    let cache = Usersvc::start(
        "cache",
        &["--redis-url", &redis_url, "--store-addr", &store.addr],
        &[],
    )
    .await;
    let key = key_file.display().to_string();
    // Two permits whatever this machine's core count, as on the machines the target is set for.
    // Every login in flight holds a reservation against the login budgets until it is judged,
    // so budgets above the concurrency let all 64 reach the hashing pool.
    let gateway = Usersvc::start(
        "gateway",
        &[
            "--cache-addr",
            &cache.addr,
            "--signing-keys",
            &key,
            "--hash-concurrency",
            "2",
            "--failed-logins-per-account",
            "1000000",
            "--failed-logins-per-peer",
            "1000000",
        ],
        &[],
    )
    .await;
    let mut client = GatewayClient::new(
        Channel::from_shared(gateway.addr.clone())
            .expect("address")
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .expect("connect"),
    );
    client
        .register(register("memory@example.com", "M", PASSWORD))
        .await
        .expect("register");
    let started = resident_mib(gateway.pid());

    let failures = stream::iter(0..LOGINS)
        .map(|_| {
            let mut client = client.clone();
            async move { client.login(login("memory@example.com", PASSWORD)).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|result| async move { result.err() })
        .collect::<Vec<_>>()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {LOGINS} logins failed, the first: {:?}",
        failures.len(),
        failures.first()
    );
    let after = resident_mib(gateway.pid());

    println!(
        "gateway RSS: {started} MiB after start and one registration, {after} MiB after {LOGINS} logins at {IN_FLIGHT} in flight"
    );
    assert!(
        after.saturating_sub(started) <= MAX_GROWTH_MIB,
        "the gateway grew from {started} to {after} MiB over {LOGINS} logins (at most {MAX_GROWTH_MIB} MiB more)"
    );
}
