//! Rotating the token signing keys on a running stack, through `userctl` as a user would:
//! `keys rotate` under load behind two gateways fails no call (old tokens stay valid, tokens
//! from the new key verify on every gateway at once), the new key is published and verifies
//! with the JWKS alone, and a stopped stack is left as it was. On the local runtime and on
//! docker (where the new key set is copied into the running gateways, which keep their
//! containers); every port free.

use std::sync::{Arc, Mutex};

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value;
use tonic::Status;
use userctl_tests::{
    churn::{Churn, Front},
    cli::Userctl,
    e2e::{self, PASSWORD, Teardown},
    load::{CALL_DEADLINE, Call, Load, MAX_CALLS},
};

const PHASE_CALLS: usize = 30;
const PHASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A local stack of this test's own, brought down with its data however the test ends.
struct Stack {
    userctl: Userctl,
    _teardown: Teardown,
    _home: tempfile::TempDir,
    grpc: String,
    http: String,
}

impl Stack {
    /// `up` with `up_args` (a runtime's) and two gateways behind the proxy.
    async fn up(up_args: &[&str]) -> Self {
        let home = tempfile::tempdir().expect("home");
        let userctl = Userctl::new(home.path());
        let teardown = Teardown(userctl.clone());
        let mut args = up_args.to_vec();
        args.extend(["--replicas", "gateway=2,cache=1,store=1"]);
        let run = userctl.run(&args).await.ok();
        let (grpc, http) = (e2e::printed(&run, "gateway "), e2e::printed(&run, "http "));
        assert_eq!(
            e2e::printed(&run, "jwks "),
            format!("{http}/.well-known/jwks.json"),
            "up names the JWKS"
        );
        Self {
            userctl,
            _teardown: teardown,
            _home: home,
            grpc,
            http,
        }
    }

    async fn jwks(&self) -> JwkSet {
        reqwest::get(format!("{}/.well-known/jwks.json", self.http))
            .await
            .expect("GET the JWKS")
            .json()
            .await
            .expect("a JWK set")
    }

    async fn keys(&self) -> Vec<Value> {
        let run = self
            .userctl
            .run(&["keys", "list", "--output", "json"])
            .await
            .ok();
        serde_json::from_str(&run.stdout).expect("keys JSON")
    }
}

/// Logs in and reads the profile with the new token at once, over a new connection each time,
/// so a token signed by one gateway is checked by whichever the proxy picks next; keeps each
/// token's `kid`.
fn login_loop(stack: &Stack, email: &str, kids: Arc<Mutex<Vec<String>>>) -> Load {
    let client = reqwest::Client::builder()
        .timeout(CALL_DEADLINE)
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client");
    let http: Arc<str> = stack.http.as_str().into();
    let email: Arc<str> = email.into();
    Load::start(1, MAX_CALLS, move |_| {
        let (client, http, email, kids) =
            (client.clone(), http.clone(), email.clone(), kids.clone());
        async move {
            let token = login(&client, &http, &email).await?;
            let kid = jsonwebtoken::decode_header(&token)
                .map_err(|err| Status::unknown(err.to_string()))?
                .kid
                .unwrap_or_default();
            kids.lock().expect("kids").push(kid);
            let response = client
                .get(format!("{http}/api/auth/user-profile"))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|err| Status::unavailable(err.to_string()))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(Status::unknown(format!(
                    "a fresh token refused: HTTP {}",
                    response.status()
                )))
            }
        }
    })
}

/// An access token from `POST /api/auth/login` at the HTTP door `http`.
async fn login(client: &reqwest::Client, http: &str, email: &str) -> Result<String, Status> {
    let response = client
        .post(format!("{http}/api/auth/login"))
        .json(&serde_json::json!({"Email": email, "Password": PASSWORD.trim_end()}))
        .send()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let code = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|err| Status::unknown(err.to_string()))?;
    match body["Result"]["Token"].as_str() {
        Some(token) if code.is_success() => Ok(token.to_owned()),
        _ => Err(Status::unknown(format!("login: HTTP {code}: {body}"))),
    }
}

/// Whether `token` verifies with nothing but the published keys, as a developer's own service
/// would check it.
fn verifies_with_the_jwks(token: &str, jwks: &JwkSet) -> bool {
    let header = jsonwebtoken::decode_header(token).expect("header");
    let Some(jwk) = header.kid.as_deref().and_then(|kid| jwks.find(kid)) else {
        return false;
    };
    let key = DecodingKey::from_jwk(jwk).expect("a usable JWK");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["userctl"]);
    validation.set_issuer(&["userctl"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
}

fn failed(calls: &[Call]) -> Vec<&Call> {
    calls.iter().filter(|call| call.result.is_err()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_under_load_fails_no_call_and_tokens_of_both_keys_verify_everywhere() {
    rotate_under_load(&Stack::up(e2e::LOCAL_UP).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_docker_a_rotation_reaches_the_running_gateways_without_recreating_them() {
    let stack = Stack::up(e2e::DOCKER_UP).await;
    let gateways = || async {
        e2e::status(&stack.userctl)
            .await
            .into_iter()
            .filter(|row| row["service"] == "gateway")
            .map(|row| row["id"].as_str().expect("container id").to_owned())
            .collect::<Vec<_>>()
    };
    let before = gateways().await;
    assert_eq!(before.len(), 2);
    rotate_under_load(&stack).await;
    assert_eq!(gateways().await, before, "the same gateway containers");
}

/// `keys rotate --algorithm rs256` while three kinds of user call and another logs in again and
/// again; every call succeeds, and afterwards both keys are published and both verify.
async fn rotate_under_load(stack: &Stack) {
    let email = "rotate@example.com";
    stack
        .userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                email,
                "--name",
                "Rota",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await
        .ok();
    e2e::login(&stack.userctl, email).await.ok();
    let client = reqwest::Client::new();
    let before = login(&client, &stack.http, email).await.expect("login");

    let keys = stack.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["state"], "signing");
    assert_eq!(keys[0]["algorithm"], "EdDSA");
    let old_kid = keys[0]["kid"].as_str().expect("kid").to_owned();
    assert!(verifies_with_the_jwks(&before, &stack.jwks().await));

    let front = Front {
        grpc: &stack.grpc,
        http: &stack.http,
        token: &before,
        userctl: &stack.userctl,
    };
    let churn = Churn::start(&front).await;
    let kids = Arc::new(Mutex::new(Vec::new()));
    let logins = login_loop(stack, email, kids.clone());
    churn.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    logins.wait_for_calls(5, PHASE_TIMEOUT).await;

    let rotated = stack
        .userctl
        .run(&["keys", "rotate", "--algorithm", "rs256"])
        .await
        .ok();
    println!("keys rotate: {}", rotated.stdout.trim());
    let new_kid = rotated
        .stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("key ")?
                .split_once(" (RS256) signs from ")
        })
        .map(|(kid, _)| kid.to_owned())
        .unwrap_or_else(|| panic!("the new key in {rotated:?}"));
    assert!(
        rotated
            .stdout
            .contains(&format!("key {old_kid} stays published until")),
        "{rotated:?}"
    );

    // Logins keep going until tokens of the new key have been checked by the gateways.
    let signed_by_new = || {
        kids.lock()
            .expect("kids")
            .iter()
            .filter(|kid| **kid == new_kid)
            .count()
    };
    let deadline = std::time::Instant::now() + PHASE_TIMEOUT;
    while signed_by_new() < 10 && std::time::Instant::now() < deadline {
        logins.wait_for_calls(1, PHASE_TIMEOUT).await;
    }
    churn.wait_for_calls(PHASE_CALLS, PHASE_TIMEOUT).await;
    let login_calls = logins.stop().await;
    let report = churn.stop().await;
    println!(
        "logins during the rotation: {} ({} with the new key)",
        login_calls.len(),
        signed_by_new()
    );
    report.assert_no_failed_call("keys rotate");
    assert!(
        failed(&login_calls).is_empty(),
        "{:?}",
        failed(&login_calls)
    );
    assert!(signed_by_new() >= 10, "new tokens carry the new kid");

    let keys = stack.keys().await;
    let state = |kid: &str| {
        keys.iter()
            .find(|key| key["kid"] == kid)
            .map(|key| key["state"].clone())
    };
    assert_eq!(state(&old_kid), Some("previous".into()), "{keys:?}");
    assert_eq!(state(&new_kid), Some("signing".into()), "{keys:?}");

    // Both keys published; a token of each verifies with the JWKS alone, and with the stack.
    let jwks = stack.jwks().await;
    assert_eq!(jwks.keys.len(), 2);
    let after = login(&client, &stack.http, email).await.expect("login");
    let header = jsonwebtoken::decode_header(&after).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert!(verifies_with_the_jwks(&before, &jwks));
    assert!(verifies_with_the_jwks(&after, &jwks));
    let profile = client
        .get(format!("{}/api/auth/user-profile", stack.http))
        .bearer_auth(&before)
        .send()
        .await
        .expect("profile");
    assert!(profile.status().is_success(), "a token of the old key");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_on_a_stack_that_is_not_running_change_nothing() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());

    let before_up = userctl.run(&["keys", "list"]).await.expect_code(4);
    assert!(before_up.stderr.contains("is not up"), "{before_up:?}");
    let rotate = userctl.run(&["keys", "rotate"]).await.expect_code(4);
    assert!(rotate.stderr.contains("is not up"), "{rotate:?}");
    let bad = userctl
        .run(&["keys", "rotate", "--algorithm", "hs256"])
        .await
        .expect_code(2);
    assert!(bad.stderr.contains("expected eddsa or rs256"), "{bad:?}");

    userctl.run(e2e::LOCAL_UP).await.ok();
    let file = home.path().join(&userctl.project).join("signing-keys.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("key file").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    userctl.run(&["down"]).await.ok();
    let kept = std::fs::read(&file).expect("key file");

    let stopped = userctl.run(&["keys", "rotate"]).await.expect_code(4);
    assert!(
        stopped.stderr.lines().count() == 1 && stopped.stderr.contains("`userctl up`"),
        "{stopped:?}"
    );
    assert_eq!(std::fs::read(&file).expect("key file"), kept, "no key made");
    let listed = userctl.run(&["keys", "list"]).await.ok();
    assert!(listed.stdout.contains("signing"), "{listed:?}");
}
