//! WhoAmI refuses every token that is not exactly what the gateway issued and still valid,
//! always with the same status and message: tokens are forged with the stack's own signing key
//! and its `kid`, so the one broken property is the only thing wrong. And the public keys the
//! gateway publishes (`/.well-known/jwks.json`, found through
//! `/.well-known/openid-configuration`) are all a service needs to verify its tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{EncodePublicKey as _, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::Jwk};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, Request};
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest};
use userctl_tests::{database::TestDatabase, keys, redis::RedisServer, stack::TestStack};

const PASSWORD: &str = "correct horse battery";
/// What every refused token is told.
const REFUSED: &str = "invalid or expired token; log in again";
/// Members of a JWK that only a private key has (RFC 7518 6.2.2, 6.3.2, 6.4).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Every claim the gateway issues, for user `sub` in session `sid`.
fn claims(sub: i64, sid: &str) -> Value {
    let now = now();
    json!({"sub": sub.to_string(), "iss": "userctl", "aud": "userctl", "iat": now, "nbf": now, "exp": now + 600, "jti": "forged", "sid": sid})
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

/// A stack with one account; returns it, the account's id and a live session of it.
async fn stack_with_account() -> (TestDatabase, RedisServer, TestStack, i64, String) {
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
    let session = stack.open_session(profile.id).await;
    (db, redis, stack, profile.id, session)
}

/// WhoAmI with `token` as the bearer must fail as every refused token does.
async fn assert_refused(stack: &TestStack, what: &str, token: &str) {
    let status = stack
        .gateway()
        .await
        .who_am_i(with_authorization(&format!("Bearer {token}")))
        .await
        .expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    assert_eq!(status.message(), REFUSED, "{what}");
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
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let token = stack.sign(&claims(id, &sid));
    assert_accepted(&stack, "forged with the stack's key", &token, id).await;
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let set = keys::read_key_set(stack.signing_keys());
    assert_eq!(header.kid.as_deref(), Some(set.keys()[0].kid()));
}

#[tokio::test]
async fn broken_tokens_are_all_refused_alike() {
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let mut gateway = stack.gateway().await;
    let now = now();

    let changed = |claim: &str, value: Value| {
        let mut claims = claims(id, &sid);
        claims[claim] = value;
        stack.sign(&claims)
    };
    let missing = |claim: &str| {
        let mut claims = claims(id, &sid);
        claims.as_object_mut().expect("object").remove(claim);
        stack.sign(&claims)
    };
    let valid = stack.sign(&claims(id, &sid));
    let parts: Vec<&str> = valid.split('.').collect();
    let kid = jsonwebtoken::decode_header(&valid)
        .expect("header")
        .kid
        .expect("a kid");
    let header_none = header("none", &kid);
    let header_rs256 = header("RS256", &kid);
    let header_no_kid = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let other_payload = URL_SAFE_NO_PAD.encode(claims(id + 1, &sid).to_string());
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
        ("missing sub", missing("sub")),
        ("missing iat", missing("iat")),
        ("missing jti", missing("jti")),
        ("missing sid", missing("sid")),
        (
            "a session that was never opened",
            changed("sid", json!("no-such-session")),
        ),
        (
            "another stack's key",
            keys::sign_with(&keys::generate(), &claims(id, &sid)),
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
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let mut gateway = stack.gateway().await;
    let token = stack.sign(&claims(id, &sid));

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
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let ghost = stack.sign(&claims(id + 1000, &sid));
    let status = stack
        .gateway()
        .await
        .who_am_i(with_authorization(&format!("Bearer {ghost}")))
        .await
        .expect_err("no such account");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), REFUSED);
}

/// The account's token, from a real login.
async fn login(stack: &TestStack) -> String {
    stack
        .gateway()
        .await
        .login(LoginRequest {
            email: "dana@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token
}

/// `claims` signed with `key`, the header naming `kid` (which need not be `key`'s).
fn sign_naming(key: &userctl_keys::Key, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm().jwt());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key.encoding_key()).expect("sign")
}

/// What a service that verifies the gateway's tokens on its own checks: the algorithm of the
/// key, the audience and the issuer.
fn verifier(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_audience(&["userctl"]);
    validation.set_issuer(&["userctl"]);
    validation
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url).await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{url}: {content_type}"
    );
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    // A verifier that took the algorithm from the header would check this HMAC with the public
    // key as its secret, and anyone can read the public key.
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let set = keys::read_key_set(stack.signing_keys());
    let key = &set.keys()[0];
    let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) = &key.jwk().algorithm else {
        panic!("the stack's key is Ed25519: {:?}", key.jwk());
    };
    let raw = URL_SAFE_NO_PAD.decode(&okp.x).expect("x is base64url");
    assert_eq!(raw.len(), 32);
    // The control: the raw key is the one the gateway signs with (a token from login verifies
    // with it), and the claims are accepted when the stack's key signs them.
    let token = login(&stack).await;
    jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_ed_der(&raw),
        &verifier(Algorithm::EdDSA),
    )
    .expect("x is the key the gateway signs with");
    // The public key as `openssl pkey -pubout` writes it (SubjectPublicKeyInfo, RFC 8410).
    let pem = ed25519_dalek::VerifyingKey::from_bytes(&raw.clone().try_into().expect("32 bytes"))
        .expect("an Ed25519 public key")
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    assert_accepted(
        &stack,
        "signed with the stack's key",
        &stack.sign(&claims(id, &sid)),
        id,
    )
    .await;

    let jwks = get_json(&format!("{}/.well-known/jwks.json", stack.http_addr)).await;
    let secrets: [(&str, Vec<u8>); 6] = [
        ("the JWK", serde_json::to_vec(key.jwk()).expect("JWK")),
        ("the JWK set", serde_json::to_vec(&jwks).expect("JWKS")),
        ("the raw public key", raw.clone()),
        ("x", okp.x.as_bytes().to_vec()),
        ("the PEM", pem.as_bytes().to_vec()),
        ("the PEM, trimmed", pem.trim_end().as_bytes().to_vec()),
    ];
    for (what, secret) in secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(id, &sid),
            &EncodingKey::from_secret(&secret),
        )
        .expect("sign");
        assert_refused(&stack, &format!("HS256 keyed with {what}"), &forged).await;
    }
}

#[tokio::test]
async fn a_token_naming_a_key_the_stack_does_not_have_is_refused() {
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let ours = keys::read_key_set(stack.signing_keys());
    let ours = &ours.keys()[0];
    let theirs = keys::generate();
    let theirs = &theirs.keys()[0];
    assert_ne!(ours.kid(), theirs.kid());
    assert_accepted(
        &stack,
        "the control: the stack's key, naming itself",
        &sign_naming(ours, ours.kid(), &claims(id, &sid)),
        id,
    )
    .await;
    let cases = [
        (
            "another key set's key, naming itself",
            sign_naming(theirs, theirs.kid(), &claims(id, &sid)),
        ),
        (
            "another key set's key, naming the stack's",
            sign_naming(theirs, ours.kid(), &claims(id, &sid)),
        ),
        (
            "the stack's key, naming another",
            sign_naming(ours, theirs.kid(), &claims(id, &sid)),
        ),
        (
            "the stack's key, naming a key nobody has",
            sign_naming(ours, "no-such-key", &claims(id, &sid)),
        ),
    ];
    for (what, token) in cases {
        assert_refused(&stack, what, &token).await;
    }
}

#[tokio::test]
async fn the_jwks_publishes_every_key_without_its_private_parts_and_verifies_tokens_alone() {
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    // A second key, RS256 and not signing yet, as a rotation adds it: published before it signs,
    // and an RSA private key has the most members to leak.
    let mut set = keys::read_key_set(stack.signing_keys());
    let added = set
        .add(userctl_keys::Algorithm::RS256, keys::now_secs())
        .expect("a new key");
    keys::replace_key_set(stack.signing_keys(), &set);
    let url = format!("{}/.well-known/jwks.json", stack.http_addr);
    // The gateway reads its key set file again every second.
    let jwks = userctl_tests::eventually(Duration::from_secs(10), || async {
        let jwks = get_json(&url).await;
        let published = jwks["keys"].as_array().map_or(0, Vec::len);
        if published == 2 { Ok(jwks) } else { Err(jwks) }
    })
    .await
    .unwrap_or_else(|jwks| panic!("the added key {added} was never published: {jwks}"));

    // A JWK set (RFC 7517), not the API's envelope.
    let members: Vec<&String> = jwks.as_object().expect("an object").keys().collect();
    assert_eq!(members, ["keys"], "{jwks}");
    let mut published = Vec::new();
    for jwk in jwks["keys"].as_array().expect("keys") {
        let kid = jwk["kid"].as_str().expect("a kid");
        let key = set
            .get(kid)
            .unwrap_or_else(|| panic!("{kid} is not in the key set"));
        assert_eq!(jwk["alg"], key.algorithm().name(), "{jwk}");
        let kty = match key.algorithm() {
            userctl_keys::Algorithm::EdDSA => "OKP",
            userctl_keys::Algorithm::RS256 => "RSA",
        };
        assert_eq!(jwk["kty"], kty, "{jwk}");
        for member in PRIVATE_MEMBERS {
            assert!(jwk.get(member).is_none(), "{kid} publishes {member:?}");
        }
        let parsed: Jwk = serde_json::from_value(jwk.clone()).expect("a JWK");
        DecodingKey::from_jwk(&parsed).expect("a key a verifier can use");
        published.push(kid.to_owned());
    }
    published.sort();
    let mut kids: Vec<String> = set.keys().iter().map(|key| key.kid().to_owned()).collect();
    kids.sort();
    assert_eq!(published, kids);

    // A token from login verifies with the JWKS alone, as any service would verify it.
    let jwk_for = |token: &str| -> Jwk {
        let kid = jsonwebtoken::decode_header(token)
            .expect("header")
            .kid
            .expect("a kid");
        let jwk = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|jwk| jwk["kid"] == kid.as_str())
            .unwrap_or_else(|| panic!("{kid} is published"));
        serde_json::from_value(jwk.clone()).expect("a JWK")
    };
    let token = login(&stack).await;
    let decoding = DecodingKey::from_jwk(&jwk_for(&token)).expect("decoding key");
    let verified = jsonwebtoken::decode::<Value>(&token, &decoding, &verifier(Algorithm::EdDSA))
        .expect("the gateway's token verifies with its published key");
    assert_eq!(verified.claims["sub"], id.to_string());
    // And that key tells the gateway's tokens from others: one signed by another key set, in
    // the name of the key the gateway signs with, does not verify.
    let other = keys::generate();
    let kid = jsonwebtoken::decode_header(&token)
        .expect("header")
        .kid
        .expect("a kid");
    let forged = sign_naming(&other.keys()[0], &kid, &claims(id, &sid));
    let forged_key = DecodingKey::from_jwk(&jwk_for(&forged)).expect("decoding key");
    jsonwebtoken::decode::<Value>(&forged, &forged_key, &verifier(Algorithm::EdDSA))
        .expect_err("a token signed by another key does not verify");
}

#[tokio::test]
async fn the_openid_configuration_names_the_issuer_and_where_its_keys_are() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let config = get_json(&format!(
        "{}/.well-known/openid-configuration",
        stack.http_addr
    ))
    .await;
    assert_eq!(config["issuer"], "userctl", "{config}");
    let jwks_uri = config["jwks_uri"].as_str().expect("a jwks_uri");
    // Named by the address the caller reached.
    assert_eq!(
        jwks_uri,
        format!("{}/.well-known/jwks.json", stack.http_addr)
    );
    let algorithms = config["access_token_signing_alg_values_supported"]
        .as_array()
        .expect("algorithms");
    assert_eq!(algorithms, &[json!("EdDSA")], "{config}");

    let discovered = get_json(jwks_uri).await;
    let direct = get_json(&format!("{}/.well-known/jwks.json", stack.http_addr)).await;
    assert_eq!(discovered, direct);
    let set = keys::read_key_set(stack.signing_keys());
    assert_eq!(
        discovered["keys"][0]["kid"],
        set.keys()[0].kid(),
        "{discovered}"
    );
    assert_eq!(discovered["keys"].as_array().map(Vec::len), Some(1));
}

/// The README's example, verbatim from `tests/examples/verify_token.rs`: what a developer's own
/// service does with the stack's tokens.
#[path = "examples/verify_token.rs"]
mod verify_token;

#[tokio::test]
async fn the_readme_example_verifies_a_login_token_with_the_published_keys_alone() {
    let (_db, _redis, stack, id, sid) = stack_with_account().await;
    let keys = verify_token::fetch_keys(&stack.http_addr)
        .await
        .expect("the key set");
    let token = login(&stack).await;
    let verified = verify_token::verify(&token, &keys).expect("a login token verifies");
    assert_eq!(verified.sub, id.to_string());
    assert!(!verified.sid.is_empty());

    // And refuses what the gateway refuses: another stack's key, an expired token.
    let foreign = keys::sign_with(&keys::generate(), &claims(id, &sid));
    assert!(verify_token::verify(&foreign, &keys).is_err());
    let mut expired = claims(id, &sid);
    expired["exp"] = json!(now() - 120);
    expired["nbf"] = json!(now() - 300);
    expired["iat"] = json!(now() - 300);
    assert!(verify_token::verify(&stack.sign(&expired), &keys).is_err());
}
