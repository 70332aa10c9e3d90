//! The gateway's HTTP/JSON front door, called as a browser frontend written for the original
//! design calls it: JSON bodies, PascalCase members, `Authorization: Bearer`, CORS preflights.
//! Every answer is the `{"Result", "Error"}` envelope with the right status, and tokens work
//! across HTTP and gRPC because one implementation sits under both.
//!
//! What the HTTP layer decides alone, before any call to the cache (bodies that are not JSON
//! or not objects, a member of the wrong type, CORS with no origin configured), is checked
//! in-process by the gateway's own tests (services/src/gateway/http/tests.rs); here is what
//! needs the real stack and a real socket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Client, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use tonic::Request;
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest};
use userctl_tests::{
    database::TestDatabase,
    keys,
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const PASSWORD: &str = "correct horse battery staple";
const FRONTEND: &str = "http://localhost:3000";

/// A stack (SQLite, its own Redis) and a client for its HTTP API.
struct Api {
    stack: TestStack,
    client: Client,
    _db: TestDatabase,
    _redis: RedisServer,
}

impl Api {
    async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    async fn start_with(options: StackOptions) -> Self {
        let db = TestDatabase::sqlite();
        let redis = RedisServer::start().await;
        let stack = TestStack::start_with(&db, &redis, options).await;
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Self {
            stack,
            client,
            _db: db,
            _redis: redis,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.stack.http_addr)
    }

    async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    async fn profile(&self, authorization: Option<&str>) -> Response {
        let mut request = self.client.get(self.url("/api/auth/user-profile"));
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.send().await.expect("request")
    }

    async fn register(&self, email: &str) -> Response {
        self.post_json("/api/auth/register", &registration(email))
            .await
    }

    async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/login",
            &json!({"Email": email, "Password": password}),
        )
        .await
    }

    /// Registers and logs in; the token.
    async fn token(&self, email: &str) -> String {
        ok(self.register(email).await).await;
        let result = ok(self.login(email, PASSWORD).await).await;
        result["Token"].as_str().expect("Token").to_owned()
    }
}

fn registration(email: &str) -> Value {
    json!({"FullName": "Ann Lee", "Email": email, "Password": PASSWORD, "ConfirmPassword": PASSWORD})
}

/// Asserts a 200 JSON envelope with `"Error": null`; its `Result`.
async fn ok(response: Response) -> Value {
    let status = response.status();
    let body = envelope(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Error"], Value::Null, "{body}");
    body["Result"].clone()
}

/// Asserts `status` and an error envelope (`"Result": null`, `Code` and `Message` strings, no
/// internal detail); its `Error`.
async fn failed(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let body = envelope(response).await;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["Result"], Value::Null, "{body}");
    let error = &body["Error"];
    assert!(error["Code"].is_string(), "{body}");
    let message = error["Message"].as_str().expect("Message");
    for leak in [
        "127.0.0.1",
        "tonic",
        "transport",
        "sqlite",
        "redis",
        "panic",
    ] {
        assert!(
            !message.to_lowercase().contains(leak),
            "{leak:?} leaked: {body}"
        );
    }
    error.clone()
}

async fn envelope(response: Response) -> Value {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json", "{response:?}");
    let body: Value = response.json().await.expect("a JSON body");
    let mut keys: Vec<_> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["Error", "Result"], "{body}");
    body
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<_> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn register_login_and_user_profile_answer_in_the_original_shapes() {
    let api = Api::start().await;

    let user = ok(api.register(" Ann@Example.COM ").await).await;
    assert_eq!(keys(&user), ["Email", "FullName", "ID", "UserName"]);
    assert!(user["ID"].as_i64().expect("numeric ID") > 0);
    assert_eq!(user["FullName"], "Ann Lee");
    assert_eq!(user["Email"], "ann@example.com");
    assert_eq!(user["UserName"], "ann@example.com", "UserName is the email");

    let login = ok(api.login("ANN@example.com", PASSWORD).await).await;
    assert_eq!(keys(&login), ["Expired", "RefreshToken", "Token"]);
    let token = login["Token"].as_str().expect("Token");
    let expired = login["Expired"].as_str().expect("Expired");
    let expires = humantime::parse_rfc3339(expired).expect("Expired is RFC 3339");
    let in_secs = expires
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    assert!(
        (now() + 890..=now() + 900).contains(&in_secs),
        "15 minutes from now: {expired}"
    );

    let profile = ok(api.profile(Some(&format!("Bearer {token}"))).await).await;
    assert_eq!(profile, user);
    // The scheme is case-insensitive (RFC 7235).
    let profile = ok(api.profile(Some(&format!("bearer {token}"))).await).await;
    assert_eq!(profile["ID"], user["ID"]);
}

#[tokio::test]
async fn members_are_matched_in_any_case_as_the_original_did() {
    let api = Api::start().await;
    let body = json!({"fullName": "Bo", "email": "bo@example.com", "password": PASSWORD, "confirmPassword": PASSWORD});
    ok(api.post_json("/api/auth/register", &body).await).await;
    let login = json!({"email": "bo@example.com", "password": PASSWORD});
    ok(api.post_json("/api/auth/login", &login).await).await;
}

#[tokio::test]
async fn a_duplicate_email_is_409_whatever_its_case() {
    let api = Api::start().await;
    ok(api.register("dup@example.com").await).await;
    let error = failed(api.register("DUP@example.com").await, StatusCode::CONFLICT).await;
    assert_eq!(error["Code"], "ALREADY_EXISTS");
}

#[tokio::test]
async fn invalid_registrations_are_400_naming_every_bad_member() {
    let api = Api::start().await;

    let body = json!({"FullName": "", "Email": "not-an-email", "Password": "short", "ConfirmPassword": "short"});
    let error = failed(
        api.post_json("/api/auth/register", &body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["Code"], "INVALID_ARGUMENT");
    assert_eq!(keys(&error["Fields"]), ["Email", "FullName", "Password"]);
    let message = error["Message"].as_str().expect("Message");
    for part in [
        "Email: must look like name@example.com",
        "FullName: is required",
        "Password: must be at least 8 characters",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message:?}");
    }

    let mut mismatch = registration("cp@example.com");
    mismatch["ConfirmPassword"] = json!("correct horse battery stapler");
    let error = failed(
        api.post_json("/api/auth/register", &mismatch).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(keys(&error["Fields"]), ["ConfirmPassword"]);
    assert_eq!(error["Fields"]["ConfirmPassword"], "must match Password");
    // Nothing was created: the same email registers fine once the confirmation matches.
    ok(api.register("cp@example.com").await).await;

    let mut missing = registration("nc@example.com");
    missing
        .as_object_mut()
        .expect("object")
        .remove("ConfirmPassword");
    failed(
        api.post_json("/api/auth/register", &missing).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let api = Api::start().await;
    let mut body = registration("big@example.com");
    body["FullName"] = json!("a".repeat(70 * 1024));
    let error = failed(
        api.post_json("/api/auth/register", &body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(error["Code"], "PAYLOAD_TOO_LARGE");
    // Just under the limit is read, and refused for what it says.
    body["FullName"] = json!("a".repeat(60 * 1024));
    failed(
        api.post_json("/api/auth/register", &body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn the_profile_needs_a_valid_bearer_token_in_the_authorization_header() {
    let api = Api::start().await;
    let token = api.token("tok@example.com").await;

    let missing = failed(api.profile(None).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(missing["Code"], "UNAUTHENTICATED");

    // The control: a token with every claim, signed with the stack's key, is accepted; the same
    // claims expired are not.
    let session = api.stack.open_session(1).await;
    let live = api.stack.sign(&keys::claims("1", &session, 60));
    ok(api.profile(Some(&format!("Bearer {live}"))).await).await;
    let now = now();
    let expired = api.stack.sign(
        &json!({"sub": "1", "iss": "userctl", "aud": "userctl", "iat": now - 120, "nbf": now - 120, "exp": now - 60, "jti": "expired", "sid": session}),
    );
    let other_key = keys::sign_with(&keys::generate(), &keys::claims("1", &session, 60));
    for authorization in [
        format!("Bearer {expired}"),
        format!("Bearer {other_key}"),
        "Bearer not-a-jwt".to_owned(),
        format!("Basic {token}"),
        token.clone(),
        "Bearer ".to_owned(),
    ] {
        let response = api.profile(Some(&authorization)).await;
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"userctl\""
        );
        let error = failed(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(error["Message"], "invalid or expired token; log in again");
    }

    // Never from the query string or a cookie.
    let response = api
        .client
        .get(api.url(&format!("/api/auth/user-profile?token={token}")))
        .header(header::COOKIE, format!("token={token}"))
        .send()
        .await
        .expect("request");
    failed(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn wrong_credentials_are_401_then_429_with_retry_after() {
    let api = Api::start_with(StackOptions {
        failed_logins_per_account: std::num::NonZeroU32::new(3).expect("non-zero"),
        ..StackOptions::default()
    })
    .await;
    ok(api.register("locked@example.com").await).await;

    let wrong = failed(
        api.login("locked@example.com", "wrong password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let unknown = failed(
        api.login("nobody@example.com", "wrong password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(wrong, unknown, "no account enumeration");

    let mut throttled = None;
    for _ in 0..5 {
        let response = api.login("locked@example.com", "wrong password").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(response);
            break;
        }
        failed(response, StatusCode::UNAUTHORIZED).await;
    }
    let response = throttled.expect("throttled within the budget");
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let error = failed(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(error["Code"], "RESOURCE_EXHAUSTED");

    // Locked out even with the right password, until the budget refills.
    let response = api.login("locked@example.com", PASSWORD).await;
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    failed(response, StatusCode::TOO_MANY_REQUESTS).await;

    let metrics = api.get("/metrics").await.text().await.expect("text");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"))
    };
    assert!(value("userctl_gateway_login_failures_total") >= 4);
    assert!(value("userctl_gateway_logins_throttled_total") >= 1);
}

#[tokio::test]
async fn a_token_from_http_works_over_grpc_and_back() {
    let api = Api::start().await;
    let http_token = api.token("both@example.com").await;

    let mut gateway = api.stack.gateway().await;
    let mut whoami = Request::new(WhoAmIRequest {});
    whoami.metadata_mut().insert(
        "authorization",
        format!("Bearer {http_token}").parse().expect("ascii"),
    );
    let profile = gateway.who_am_i(whoami).await.expect("WhoAmI").into_inner();
    assert_eq!(profile.email, "both@example.com");

    gateway
        .register(RegisterRequest {
            email: "grpc@example.com".into(),
            full_name: "Gee".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register over gRPC");
    let grpc_token = gateway
        .login(LoginRequest {
            email: "grpc@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login over gRPC")
        .into_inner()
        .access_token;
    let user = ok(api.profile(Some(&format!("Bearer {grpc_token}"))).await).await;
    assert_eq!(user["Email"], "grpc@example.com");
    assert_eq!(user["FullName"], "Gee");
}

fn preflight(api: &Api, origin: &str) -> reqwest::RequestBuilder {
    api.client
        .request(Method::OPTIONS, api.url("/api/auth/login"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,authorization",
        )
}

#[tokio::test]
async fn cors_is_granted_to_configured_origins_only() {
    let api = Api::start_with(StackOptions {
        cors_origins: vec![FRONTEND.to_owned()],
        ..StackOptions::default()
    })
    .await;

    let allowed = preflight(&api, FRONTEND).send().await.expect("preflight");
    assert!(allowed.status().is_success(), "{allowed:?}");
    let headers = allowed.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], FRONTEND);
    let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("ascii");
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let refused = preflight(&api, "http://evil.example")
        .send()
        .await
        .expect("preflight");
    assert!(
        !refused
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{refused:?}"
    );

    // The request that follows a granted preflight carries the grant too.
    let response = api
        .client
        .post(api.url("/api/auth/register"))
        .header(header::ORIGIN, FRONTEND)
        .json(&registration("cors@example.com"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        FRONTEND
    );
    ok(response).await;
    let response = api
        .client
        .get(api.url("/healthz"))
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .expect("request");
    assert!(
        !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let api = Api::start().await;
    let response = api.get("/api/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .expect("openapi")
            .starts_with("3.")
    );
    let paths = &document["paths"];
    for (path, method) in [
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/user-profile", "get"),
        ("/", "get"),
        ("/api/", "get"),
        ("/api/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
}

#[tokio::test]
async fn the_root_welcome_health_readiness_and_metrics_answer() {
    let api = Api::start().await;

    let root = api.get("/").await;
    assert_eq!(root.status(), StatusCode::OK);
    assert!(root.text().await.expect("text").contains("/api/"));
    for path in ["/api/", "/api"] {
        let welcome = ok(api.get(path).await).await;
        assert!(welcome["Message"].is_string(), "{welcome}");
    }

    assert_eq!(ok(api.get("/healthz").await).await["Status"], "alive");
    assert_eq!(ok(api.get("/readyz").await).await["Status"], "ready");

    // Unmatched, so that the metrics below count a 404.
    let error = failed(api.get("/api/nope").await, StatusCode::NOT_FOUND).await;
    assert_eq!(error["Code"], "NOT_FOUND");

    let response = api.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("text");
    for expected in [
        r#"userctl_gateway_http_requests_total{method="GET",route="/healthz",status="200"} 1"#,
        r#"userctl_gateway_http_requests_total{method="GET",route="/readyz",status="200"} 1"#,
        r#"userctl_gateway_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"userctl_gateway_http_request_duration_seconds_bucket{method="GET",route="/healthz",le="0.005"}"#,
        "# TYPE userctl_gateway_login_failures_total counter",
        "# TYPE userctl_gateway_logins_throttled_total counter",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
}

#[tokio::test]
async fn the_http_listener_drains_and_stops_with_the_stack() {
    let api = Api::start().await;
    let url = api.url("/healthz");
    ok(api.get("/healthz").await).await;
    api.stack.stop().await;
    let after = api.client.get(url).send().await;
    assert!(after.is_err(), "still answering after stop: {after:?}");
}
