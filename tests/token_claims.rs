//! The edges of the claims a token carries, against a running gateway: a token is dead in the
//! second its `exp` names, and a `sub` is a user id spelled only as the gateway spells it, so
//! `"01"` is not a second name for user 1; and a call carries one token, never two. Tokens are
//! signed with the stack's key and name it, as in tokens.rs, so the claim under test is the only
//! thing wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tonic::{Code, Request};
use userctl_proto::gateway::v1::{RegisterRequest, WhoAmIRequest};
use userctl_tests::{database::TestDatabase, redis::RedisServer, stack::TestStack};

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

fn claims(sub: &str, exp: u64) -> Value {
    let now = since_epoch().as_secs();
    json!({"sub": sub, "iss": "userctl", "aud": "userctl", "iat": now - 60, "nbf": now - 60, "exp": exp, "jti": "forged"})
}

/// WhoAmI with `claims` signed with `stack`'s key, as its gateway signs a token.
fn bearer(stack: &TestStack, claims: &Value) -> Request<WhoAmIRequest> {
    let token = stack.sign(claims);
    let mut request = Request::new(WhoAmIRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii header"),
    );
    request
}

/// A fresh stack whose one account is user 1.
async fn stack_with_user_1() -> (TestDatabase, RedisServer, TestStack) {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let profile = stack
        .gateway()
        .await
        .register(RegisterRequest {
            email: "one@example.com".into(),
            full_name: "One".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(profile.id, 1, "a fresh database starts at 1");
    (db, redis, stack)
}

#[tokio::test]
async fn a_token_is_refused_in_the_second_its_exp_names() {
    let (_db, _redis, stack) = stack_with_user_1().await;
    let mut gateway = stack.gateway().await;
    let later = since_epoch().as_secs() + 60;
    gateway
        .who_am_i(bearer(&stack, &claims("1", later)))
        .await
        .expect("the control: a live token for user 1 is accepted");

    // Start early in a second, so the call lands in the second `exp` names (local calls take
    // milliseconds); this aligns with the clock, it waits for nothing to be ready.
    let into_second = since_epoch().subsec_millis();
    if into_second > 300 {
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - into_second))).await;
    }
    let now = since_epoch().as_secs();
    let status = gateway
        .who_am_i(bearer(&stack, &claims("1", now)))
        .await
        .expect_err("a token whose exp is now is expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(since_epoch().as_secs(), now, "the call took under a second");
}

#[tokio::test]
async fn a_subject_is_a_user_id_only_in_its_canonical_spelling() {
    let (_db, _redis, stack) = stack_with_user_1().await;
    let mut gateway = stack.gateway().await;
    let exp = since_epoch().as_secs() + 600;
    let me = gateway
        .who_am_i(bearer(&stack, &claims("1", exp)))
        .await
        .expect("the control: sub \"1\" is user 1");
    assert_eq!(me.into_inner().id, 1);

    for sub in ["01", "001", "+1", " 1", "1 ", "\t1", "1\n"] {
        let status = gateway
            .who_am_i(bearer(&stack, &claims(sub, exp)))
            .await
            .expect_err(&format!("sub {sub:?} is not user 1"));
        assert_eq!(status.code(), Code::Unauthenticated, "{sub:?}");
        assert_eq!(status.message(), "invalid or expired token; log in again");
    }
}

#[tokio::test]
async fn a_call_with_two_authorization_entries_is_refused_whichever_is_valid() {
    let (_db, _redis, stack) = stack_with_user_1().await;
    let mut gateway = stack.gateway().await;
    let live = bearer(&stack, &claims("1", since_epoch().as_secs() + 60));
    let valid = live
        .metadata()
        .get("authorization")
        .expect("a bearer")
        .clone();
    gateway
        .who_am_i(live)
        .await
        .expect("the control: one valid entry is accepted");

    let forged: tonic::metadata::MetadataValue<_> = "Bearer forged".parse().expect("ascii");
    for (first, second) in [
        (valid.clone(), forged.clone()),
        (forged.clone(), valid.clone()),
        (valid.clone(), valid.clone()),
    ] {
        let mut request = Request::new(WhoAmIRequest {});
        request.metadata_mut().append("authorization", first);
        request.metadata_mut().append("authorization", second);
        let status = gateway
            .who_am_i(request)
            .await
            .expect_err("two authorization entries must be refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
}
