//! What the HTTP layer decides on its own, before any dependency is called: routing, body
//! rules, CORS, the envelope. The cache here is an address nothing listens on; the full round
//! trips are in `tests/http.rs`.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use userctl_proto::user::v1::user_store_client::UserStoreClient;

use super::{HttpState, OPENAPI_JSON, cors, metrics::Metrics, page, router};
use crate::gateway::{
    password::Passwords,
    service::GatewayService,
    throttle::{Limits, LoginThrottle},
    token::TokenKeys,
};

/// A key set of one Ed25519 key, read from a file that is gone once read.
fn keys() -> TokenKeys {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(userctl_keys::FILE_NAME);
    let now = crate::gateway::token::now_secs();
    let set = userctl_keys::KeySet::generate(userctl_keys::Algorithm::EdDSA, now).expect("keys");
    std::fs::write(&path, set.to_json()).expect("write");
    TokenKeys::load(&path, Duration::from_secs(60)).expect("load")
}

fn app(origins: &[&str]) -> Router {
    let nz = |n| NonZeroU32::new(n).expect("non-zero");
    // Nothing listens on port 1: every call to the cache fails as a dependency that is down.
    let cache = crate::client::channel("http://127.0.0.1:1", None).expect("address");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let gateway = GatewayService::new(
        UserStoreClient::new(crate::client::traced(cache.clone())),
        Passwords::new(1, 64),
        Arc::new(keys()),
        LoginThrottle::new(
            Limits {
                failed_logins_per_account: nz(5),
                failed_logins_per_peer: nz(30),
                registrations_per_peer: nz(60),
            },
            None,
        )
        .expect("no redis to open"),
        metrics.login_counters(),
    );
    let origins: Vec<String> = origins.iter().map(|origin| (*origin).to_owned()).collect();
    let state = HttpState {
        gateway,
        cache,
        metrics,
        requests: Arc::default(),
        draining: tokio_util::sync::CancellationToken::new(),
    };
    router(state, cors(&origins).expect("valid origins"))
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut request = request;
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            4242,
        ))));
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    (status, headers, body)
}

fn post(uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::post(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

/// Status and the parsed error envelope; asserts its shape.
async fn error(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, headers, body) = send(app, request).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body: Value = serde_json::from_slice(&body).expect("JSON envelope");
    assert_eq!(body["Result"], Value::Null, "{body}");
    assert!(body["Error"]["Code"].is_string(), "{body}");
    assert!(body["Error"]["Message"].is_string(), "{body}");
    (status, body["Error"].clone())
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn an_unknown_route_is_404_in_the_envelope() {
    let (status, error) = error(&app(&[]), get("/api/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["Code"], "NOT_FOUND");
}

#[tokio::test]
async fn a_wrong_method_is_405_in_the_envelope() {
    let (status, error) = error(&app(&[]), get("/api/auth/login")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error["Code"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn bodies_not_sent_as_json_are_415() {
    let app = app(&[]);
    for content_type in [
        None,
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let body = r#"{"Email":"a@example.com","Password":"12345678"}"#;
        let (status, error) = error(&app, post("/api/auth/login", content_type, body)).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(error["Code"], "UNSUPPORTED_MEDIA_TYPE");
    }
}

#[tokio::test]
async fn malformed_json_and_non_objects_are_400() {
    let app = app(&[]);
    for body in ["{", "", "[]", "\"text\"", "{\"Email\": }"] {
        let (status, error) = error(&app, post("/api/auth/register", JSON, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(error["Code"], "INVALID_ARGUMENT");
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_whether_or_not_its_length_is_declared() {
    let app = app(&[]);
    let big = format!(r#"{{"Email":"{}"}}"#, "a".repeat(65 * 1024));
    let (status, error) = error(&app, post("/api/auth/login", JSON, big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["Code"], "PAYLOAD_TOO_LARGE");

    let chunks = futures::stream::iter(
        big.into_bytes()
            .chunks(4096)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = post("/api/auth/login", JSON, Body::from_stream(chunks));
    assert_eq!(
        error_status(&app, streamed).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

async fn error_status(app: &Router, request: Request<Body>) -> StatusCode {
    error(app, request).await.0
}

#[tokio::test]
async fn a_registration_names_every_bad_member_including_the_confirmation() {
    let body =
        json!({"FullName": "", "Email": "nope", "Password": "short", "ConfirmPassword": "other"});
    let (status, error) = error(
        &app(&[]),
        post("/api/auth/register", JSON, body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["Code"], "INVALID_ARGUMENT");
    let fields = error["Fields"].as_object().expect("Fields");
    let mut names: Vec<_> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["ConfirmPassword", "Email", "FullName", "Password"]);
    assert_eq!(fields["ConfirmPassword"], "must match Password");
    let message = error["Message"].as_str().expect("Message");
    assert!(
        message.contains("Email: must look like name@example.com"),
        "{message}"
    );
}

#[tokio::test]
async fn a_member_of_the_wrong_type_is_400_naming_it() {
    let body = json!({"Email": 42, "Password": "correct horse"});
    let (status, error) = error(&app(&[]), post("/api/auth/login", JSON, body.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["Fields"]["Email"], "must be a string");
}

#[tokio::test]
async fn the_profile_without_a_usable_token_is_401_with_a_challenge() {
    let app = app(&[]);
    let bad = Request::get("/api/auth/user-profile")
        .header(header::AUTHORIZATION, "Bearer not-a-jwt")
        .body(Body::empty())
        .expect("request");
    for request in [get("/api/auth/user-profile"), bad] {
        let (status, headers, _) = send(&app, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"userctl\""
        );
    }
}

#[tokio::test]
async fn a_dependency_that_is_down_is_503_and_not_ready() {
    let app = app(&[]);
    let body = json!({"Email": "ann@example.com", "Password": "correct horse"});
    let (status, error) = error(&app, post("/api/auth/login", JSON, body.to_string())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["Code"], "UNAVAILABLE");
    assert!(
        !error["Message"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1")
    );

    let (status, _) = self::error(&app, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = send(&app, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let document: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    let app = app(&[]);
    let paths = document["paths"].as_object().expect("paths");
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let method: Method = method.to_uppercase().parse().expect("method");
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let (status, _, _) = send(&app, request).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = app(&[]);
    send(&app, get("/healthz")).await;
    send(&app, get("/no/such/thing")).await;
    let (status, headers, body) = send(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.contains(
            r#"userctl_gateway_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"userctl_gateway_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("userctl_gateway_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("userctl_gateway_login_failures_total 0"),
        "{text}"
    );
    assert!(
        text.contains("userctl_gateway_logins_throttled_total 0"),
        "{text}"
    );
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/auth/login")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let app = app(&["http://localhost:3000", "https://app.example.com/"]);
    for allowed in ["http://localhost:3000", "https://app.example.com"] {
        let (status, headers, _) = send(&app, preflight(allowed)).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], allowed);
    }
    let (_, headers, _) = send(&app, preflight("http://evil.example")).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let without_cors = self::app(&[]);
    let (_, headers, _) = send(&without_cors, preflight("http://localhost:3000")).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[test]
fn only_plain_origins_can_be_configured() {
    for bad in [
        "*",
        "localhost:3000",
        "ftp://x.example",
        "http://x.example/path",
        "http://",
    ] {
        assert!(cors(&[bad.to_owned()]).is_err(), "{bad} accepted");
    }
    assert!(cors(&[]).expect("none").is_none());
    assert!(cors(&[String::new()]).expect("blank").is_none());
}

#[tokio::test]
async fn the_page_and_its_files_are_served_as_documented_with_security_headers() {
    let document: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
    let app = app(&[]);
    for path in ["/", "/app.js", "/app.css"] {
        let documented = document["paths"][path]["get"]["responses"]["200"]["content"]
            .as_object()
            .and_then(|content| content.keys().next().cloned())
            .unwrap_or_else(|| panic!("{path}: no documented media type"));
        let (status, headers, body) = send(&app, get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let content_type = headers[header::CONTENT_TYPE].to_str().expect("ascii");
        assert!(
            content_type.starts_with(&documented),
            "{path}: {content_type} is not {documented}"
        );
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            page::CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert!(!body.is_empty(), "{path}");
    }
    assert!(page::CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
}

/// The policy allows this origin's files only: the page must load nothing else and hold no
/// inline script or style, which the browser would refuse.
#[tokio::test]
async fn the_page_loads_only_files_this_router_serves() {
    let app = app(&[]);
    let (_, _, body) = send(&app, get("/")).await;
    let html = String::from_utf8(body).expect("utf-8");
    assert!(!html.contains("<style"), "inline style");
    assert!(!html.contains(" style="), "inline style");
    let mut references = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attribute) {
            let rest = &html[at + attribute.len()..];
            let end = rest.find('"').expect("closed attribute");
            references.push(rest[..end].to_owned());
        }
    }
    assert!(references.contains(&"/app.js".to_owned()), "{references:?}");
    for reference in &references {
        assert!(
            reference.starts_with('/'),
            "{reference} is not this origin's"
        );
        let (status, _, _) = send(&app, get(reference)).await;
        assert_eq!(status, StatusCode::OK, "{reference}");
    }
    for script in html.split("<script").skip(1) {
        assert!(script.trim_start().starts_with("src="), "inline script");
    }
}

#[tokio::test]
async fn the_keys_and_discovery_are_served_plain_and_cacheable() {
    let app = app(&[]);
    let (status, headers, body) = send(&app, get("/.well-known/jwks.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=60");
    let jwks: Value = serde_json::from_slice(&body).expect("JSON");
    let key = &jwks["keys"][0];
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["kty"], "OKP");
    assert!(key["kid"].is_string() && key.get("d").is_none(), "{jwks}");

    let mut request = get("/.well-known/openid-configuration");
    request
        .headers_mut()
        .insert(header::HOST, "127.0.0.1:8080".parse().expect("host"));
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    let discovery: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(discovery["issuer"], "userctl");
    assert_eq!(
        discovery["jwks_uri"],
        "http://127.0.0.1:8080/.well-known/jwks.json"
    );
    assert_eq!(
        discovery["access_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );

    // A Host that is not an authority is not echoed.
    let mut request = get("/.well-known/openid-configuration");
    request
        .headers_mut()
        .insert(header::HOST, "evil@example.com".parse().expect("host"));
    let (_, _, body) = send(&app, request).await;
    let discovery: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(discovery["jwks_uri"], "/.well-known/jwks.json");
}
