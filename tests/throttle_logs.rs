//! What a throttled login leaves in the gateway's log, read from a real `usersvc gateway`
//! process: the warning names the account by a keyed hash, never by its address, so a log that
//! leaks is not a list of who has an account here.

use std::time::Duration;

use tonic::{Code, transport::Channel};
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest, gateway_client::GatewayClient};
use userctl_tests::{database::TestDatabase, keys, process::Usersvc, redis::RedisServer};

#[tokio::test]
async fn throttle_warnings_name_the_account_by_a_keyed_hash_not_its_email() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let key_dir = tempfile::tempdir().expect("key dir");
    let key_file = keys::write_key_set(key_dir.path());
    let key = key_file.display().to_string();
    let env = [("RUST_LOG", "info")];
    let store = Usersvc::start("store", &["--database-url", db.url()], &env).await;
    let redis_url = redis.url();
    let cache = Usersvc::start(
        "cache",
        &["--redis-url", &redis_url, "--store-addr", &store.addr],
        &env,
    )
    .await;
    let gateway = Usersvc::start(
        "gateway",
        &["--cache-addr", &cache.addr, "--signing-keys", &key],
        &env,
    )
    .await;
    let mut client = GatewayClient::new(
        Channel::from_shared(gateway.addr.clone())
            .expect("address")
            .connect()
            .await
            .expect("connect"),
    );

    let email = "quentin.private@example.com";
    client
        .register(RegisterRequest {
            email: email.into(),
            full_name: "Quentin".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("register");
    // The default budget is 5 failures a minute; the ones after it are refused unjudged.
    let mut throttled = false;
    for _ in 0..10 {
        let result = client
            .login(LoginRequest {
                email: email.into(),
                password: "wrong password!".into(),
            })
            .await;
        throttled |= result.is_err_and(|status| status.code() == Code::ResourceExhausted);
    }
    assert!(throttled, "the account was throttled");

    let log = userctl_tests::eventually(Duration::from_secs(10), || async {
        let log = gateway.log();
        if log.contains("too many failed logins") {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await
    .unwrap_or_else(|log| panic!("no throttle warning in the gateway log:\n{log}"));
    for part in [email, "quentin"] {
        assert!(
            !log.to_lowercase().contains(part),
            "{part:?} in the gateway log:\n{log}"
        );
    }
    let warning = log
        .lines()
        .find(|line| line.contains("too many failed logins"))
        .expect("the warning");
    assert!(
        warning.contains("account "),
        "the account is named: {warning}"
    );
}
