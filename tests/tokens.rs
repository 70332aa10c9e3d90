//! WhoAmI refuses every token that is not exactly what the gateway issued and still valid,
//! always with the same status and message: tokens are forged with the stack's own signing key
//! and its `kid`, so the one broken property is the only thing wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tonic::{Code, Request};
use userctl_proto::gateway::v1::{RegisterRequest, WhoAmIRequest};
use userctl_tests::{database::TestDatabase, keys, redis::RedisServer, stack::TestStack};

const PASSWORD: &str = "correct horse battery";
/// What every refused token is told.
const REFUSED: &str = "invalid or expired token; log in again";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(sub: i64) -> Value {
    let now = now();
    json!({"sub": sub.to_string(), "iss": "userctl", "aud": "userctl", "iat": now, "nbf": now, "exp": now + 600, "jti": "forged"})
}

/// A token header, base64url, naming `alg` and `kid`.
fn header(alg: &str, kid: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string())
}

fn with_authorization(value: &str) -> Request<WhoAmIRequest> {
    let mut request = Request::new(WhoAmIRequest {});
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii header"));
    request
}

/// A stack with one account; returns it and the account's id.
async fn stack_with_account() -> (TestDatabase, RedisServer, TestStack, i64) {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let profile = stack
        .gateway()
        .await
        .register(RegisterRequest {
            email: "dana@example.com".into(),
            full_name: "Dana".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register")
        .into_inner();
    (db, redis, stack, profile.id)
}

/// WhoAmI with `token` as the bearer is user `id`.
async fn assert_accepted(stack: &TestStack, what: &str, token: &str, id: i64) {
    let me = stack
        .gateway()
        .await
        .who_am_i(with_authorization(&format!("Bearer {token}")))
        .await
        .unwrap_or_else(|status| panic!("{what}: {status:?}"));
    assert_eq!(me.into_inner().id, id, "{what}");
}

#[tokio::test]
async fn a_token_forged_with_the_right_key_and_claims_is_accepted() {
    // The control for every refusal below: only the one broken property differs.
    let (_db, _redis, stack, id) = stack_with_account().await;
    let token = stack.sign(&claims(id));
    assert_accepted(&stack, "forged with the stack's key", &token, id).await;
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let set = keys::read_key_set(stack.signing_keys());
    assert_eq!(header.kid.as_deref(), Some(set.keys()[0].kid()));
}

#[tokio::test]
async fn broken_tokens_are_all_refused_alike() {
    let (_db, _redis, stack, id) = stack_with_account().await;
    let mut gateway = stack.gateway().await;
    let now = now();

    let changed = |claim: &str, value: Value| {
        let mut claims = claims(id);
        claims[claim] = value;
        stack.sign(&claims)
    };
    let missing = |claim: &str| {
        let mut claims = claims(id);
        claims.as_object_mut().expect("object").remove(claim);
        stack.sign(&claims)
    };
    let valid = stack.sign(&claims(id));
    let parts: Vec<&str> = valid.split('.').collect();
    let kid = jsonwebtoken::decode_header(&valid)
        .expect("header")
        .kid
        .expect("a kid");
    let header_none = header("none", &kid);
    let header_rs256 = header("RS256", &kid);
    let header_no_kid = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let other_payload = URL_SAFE_NO_PAD.encode(claims(id + 1).to_string());
    let mut bad_signature = parts[2].to_owned();
    bad_signature.replace_range(
        0..1,
        if bad_signature.starts_with('A') {
            "B"
        } else {
            "A"
        },
    );

    let cases = [
        ("expired", changed("exp", json!(now - 1))),
        ("not yet valid", changed("nbf", json!(now + 300))),
        ("wrong audience", changed("aud", json!("someone-else"))),
        ("wrong issuer", changed("iss", json!("someone-else"))),
        ("missing exp", missing("exp")),
        ("missing nbf", missing("nbf")),
        ("missing aud", missing("aud")),
        ("missing iss", missing("iss")),
        (
            "another stack's key",
            keys::sign_with(&keys::generate(), &claims(id)),
        ),
        ("alg none", format!("{header_none}.{}.", parts[1])),
        (
            "alg RS256 with an EdDSA signature",
            format!("{header_rs256}.{}.{}", parts[1], parts[2]),
        ),
        (
            "no kid",
            format!("{header_no_kid}.{}.{}", parts[1], parts[2]),
        ),
        (
            "tampered payload",
            format!("{}.{other_payload}.{}", parts[0], parts[2]),
        ),
        (
            "tampered signature",
            format!("{}.{}.{bad_signature}", parts[0], parts[1]),
        ),
        ("not a JWT", "definitely-not-a-jwt".to_owned()),
    ];
    for (what, token) in cases {
        let status = gateway
            .who_am_i(with_authorization(&format!("Bearer {token}")))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        assert_eq!(status.message(), REFUSED, "{what}");
    }
}

#[tokio::test]
async fn malformed_or_missing_authorization_is_unauthenticated() {
    let (_db, _redis, stack, id) = stack_with_account().await;
    let mut gateway = stack.gateway().await;
    let token = stack.sign(&claims(id));

    let status = gateway
        .who_am_i(Request::new(WhoAmIRequest {}))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("log in first"),
        "{}",
        status.message()
    );

    for header in [
        format!("Basic {token}"),
        "Bearer".to_owned(),
        "Bearer    ".to_owned(),
        token.clone(),
    ] {
        let status = gateway
            .who_am_i(with_authorization(&header))
            .await
            .expect_err("malformed header");
        assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
    }
    // The scheme is case-insensitive (RFC 7235).
    gateway
        .who_am_i(with_authorization(&format!("bearer {token}")))
        .await
        .expect("lower-case scheme");
}

#[tokio::test]
async fn a_valid_token_for_an_account_that_does_not_exist_is_refused() {
    // As after `down --volumes`: the signature is good, the account is gone.
    let (_db, _redis, stack, id) = stack_with_account().await;
    let ghost = stack.sign(&claims(id + 1000));
    let status = stack
        .gateway()
        .await
        .who_am_i(with_authorization(&format!("Bearer {ghost}")))
        .await
        .expect_err("no such account");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), REFUSED);
}
