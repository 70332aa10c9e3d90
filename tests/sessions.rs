//! Sessions as a client sees them: a login opens one and returns a refresh token, a refresh
//! rotates it, a spent one presented again ends the whole session (RFC 9700), a logout ends it
//! on every gateway at once, every bad refresh token gets the same answer, failures are
//! throttled like logins, and `userctl` refreshes an expired token by itself and logs out on
//! the server. Real services, Redis and SQLite; two gateways of a local stack for the logout.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::{Code, Request, Status};
use userctl_proto::gateway::v1::{
    LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, RegisterRequest, WhoAmIRequest,
    gateway_client::GatewayClient,
};
use userctl_tests::{
    cli::Userctl,
    database::TestDatabase,
    e2e::{self, Teardown},
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const PASSWORD: &str = "correct horse battery";
/// What every refused refresh token is told.
const BAD_REFRESH: &str = "invalid refresh token; log in again";
/// What every refused access token is told.
const BAD_TOKEN: &str = "invalid or expired token; log in again";

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii header"),
    );
    request
}

/// The `sid` of an access token (read, not verified).
fn session_of(token: &str) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON");
    claims["sid"].as_str().expect("a sid").to_owned()
}

async fn register_and_login(
    gateway: &mut GatewayClient<tonic::transport::Channel>,
) -> LoginResponse {
    gateway
        .register(RegisterRequest {
            email: "sam@example.com".into(),
            full_name: "Sam".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register");
    login(gateway).await
}

async fn login(gateway: &mut GatewayClient<tonic::transport::Channel>) -> LoginResponse {
    gateway
        .login(LoginRequest {
            email: "sam@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
}

async fn refresh(
    gateway: &mut GatewayClient<tonic::transport::Channel>,
    refresh_token: &str,
) -> Result<LoginResponse, Status> {
    gateway
        .refresh(RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn assert_bad_refresh(outcome: Result<LoginResponse, Status>, what: &str) {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(status.message(), BAD_REFRESH, "{what}");
}

async fn assert_token_refused(
    gateway: &mut GatewayClient<tonic::transport::Channel>,
    token: &str,
    what: &str,
) {
    let status = gateway
        .who_am_i(bearer(WhoAmIRequest {}, token))
        .await
        .expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(status.message(), BAD_TOKEN, "{what}");
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_a_spent_one_ends_the_session() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;

    let first = register_and_login(&mut gateway).await;
    assert_eq!(first.refresh_token.len(), 43, "256 bits, base64url");
    let session = session_of(&first.access_token);

    let second = refresh(&mut gateway, &first.refresh_token)
        .await
        .expect("a refresh");
    assert_ne!(second.refresh_token, first.refresh_token, "rotated");
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(
        session_of(&second.access_token),
        session,
        "the same session"
    );
    let me = gateway
        .who_am_i(bearer(WhoAmIRequest {}, &second.access_token))
        .await
        .expect("the new access token works")
        .into_inner();
    assert_eq!(me.email, "sam@example.com");
    // Another login is another session, which the reuse below leaves alone.
    let other = login(&mut gateway).await;
    assert_ne!(session_of(&other.access_token), session);

    // The spent token again, as a thief who copied it would: refused, and the session ends.
    assert_bad_refresh(
        refresh(&mut gateway, &first.refresh_token).await,
        "a spent refresh token",
    );
    assert_bad_refresh(
        refresh(&mut gateway, &second.refresh_token).await,
        "the session's newest refresh token, after reuse",
    );
    assert_token_refused(
        &mut gateway,
        &second.access_token,
        "an access token of the ended session",
    )
    .await;
    assert_token_refused(&mut gateway, &first.access_token, "an older one").await;
    gateway
        .who_am_i(bearer(WhoAmIRequest {}, &other.access_token))
        .await
        .expect("the other session lives on");
    refresh(&mut gateway, &other.refresh_token)
        .await
        .expect("and refreshes");
}

#[tokio::test]
async fn every_bad_refresh_token_is_refused_alike_over_grpc_and_http() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;
    let tokens = register_and_login(&mut gateway).await;

    // A spent one (its successor is not presented again, so the session lives on).
    let next = refresh(&mut gateway, &tokens.refresh_token)
        .await
        .expect("a refresh");
    // A revoked one: log out of a second session.
    let revoked = login(&mut gateway).await;
    gateway
        .logout(bearer(LogoutRequest {}, &revoked.access_token))
        .await
        .expect("logout");
    // Another stack's, valid there.
    let (other_db, other_redis) = (TestDatabase::sqlite(), RedisServer::start().await);
    let other_stack = TestStack::start(&other_db, &other_redis).await;
    let foreign = register_and_login(&mut other_stack.gateway().await).await;

    let cases = [
        ("empty", String::new()),
        ("garbage", "not a token".to_owned()),
        ("the right shape, never issued", "A".repeat(43)),
        ("one character too long", format!("{}x", next.refresh_token)),
        ("revoked by a logout", revoked.refresh_token.clone()),
        ("another stack's", foreign.refresh_token.clone()),
        ("an access token", tokens.access_token.clone()),
    ];
    for (what, token) in &cases {
        assert_bad_refresh(refresh(&mut gateway, token).await, what);
    }

    let http = reqwest::Client::new();
    let url = format!("{}/api/auth/refresh", stack.http_addr);
    for body in [
        json!({"RefreshToken": "not a token"}),
        json!({"RefreshToken": revoked.refresh_token}),
        json!({"RefreshToken": 42}),
        json!({}),
    ] {
        let response = http.post(&url).json(&body).send().await.expect("POST");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{body}");
        let answer: Value = response.json().await.expect("JSON");
        assert_eq!(answer["Error"]["Message"], BAD_REFRESH, "{body}");
    }
    // The good one still works after all that.
    refresh(&mut gateway, &next.refresh_token)
        .await
        .expect("the session's current refresh token");
}

#[tokio::test]
async fn failed_refreshes_and_logouts_spend_the_peers_login_budget() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions {
        failed_logins_per_peer: std::num::NonZeroU32::new(3).expect("non-zero"),
        ..StackOptions::default()
    };
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    let tokens = register_and_login(&mut gateway).await;

    assert_bad_refresh(refresh(&mut gateway, "guess-1").await, "first guess");
    assert_bad_refresh(refresh(&mut gateway, "guess-2").await, "second guess");
    let status = gateway
        .logout(bearer(LogoutRequest {}, "not-a-jwt"))
        .await
        .expect_err("a logout with a bad token");
    assert_eq!(status.code(), Code::Unauthenticated);
    for what in ["a fourth guess", "even the right token"] {
        let token = if what == "even the right token" {
            tokens.refresh_token.as_str()
        } else {
            "guess-4"
        };
        let status = refresh(&mut gateway, token).await.expect_err(what);
        assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    }
}

/// A local stack with two gateways, each reachable on its own port.
struct LocalStack {
    userctl: Userctl,
    _teardown: Teardown,
    _home: tempfile::TempDir,
    http: String,
}

impl LocalStack {
    async fn up(extra: &[&str]) -> Self {
        let home = tempfile::tempdir().expect("home");
        let userctl = Userctl::new(home.path());
        let teardown = Teardown(userctl.clone());
        let mut args = e2e::LOCAL_UP.to_vec();
        args.extend(extra);
        let run = userctl.run(&args).await.ok();
        let http = e2e::printed(&run, "http ");
        Self {
            userctl,
            _teardown: teardown,
            _home: home,
            http,
        }
    }

    /// Each gateway replica's own gRPC address, from `status`.
    async fn gateways(&self) -> Vec<GatewayClient<tonic::transport::Channel>> {
        let mut clients = Vec::new();
        for row in e2e::status(&self.userctl)
            .await
            .iter()
            .filter(|row| row["service"] == "gateway")
        {
            let addr = row["address"].as_str().expect("an address").to_owned();
            clients.push(GatewayClient::connect(addr).await.expect("connect"));
        }
        clients
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_gateway_is_seen_by_the_other_within_a_second() {
    let stack = LocalStack::up(&["--replicas", "gateway=2,cache=2,store=1"]).await;
    let mut gateways = stack.gateways().await;
    assert_eq!(gateways.len(), 2);
    let tokens = register_and_login(&mut gateways[0]).await;
    gateways[1]
        .who_am_i(bearer(WhoAmIRequest {}, &tokens.access_token))
        .await
        .expect("the other gateway takes the token");

    gateways[0]
        .logout(bearer(LogoutRequest {}, &tokens.access_token))
        .await
        .expect("logout");
    let logged_out = Instant::now();
    let refused = userctl_tests::eventually(Duration::from_secs(1), || {
        let mut other = gateways[1].clone();
        let token = tokens.access_token.clone();
        async move {
            match other.who_am_i(bearer(WhoAmIRequest {}, &token)).await {
                Err(status) if status.code() == Code::Unauthenticated => Ok(()),
                outcome => Err(format!("{outcome:?}")),
            }
        }
    })
    .await;
    println!(
        "the other gateway refused the token {:?} after the logout",
        logged_out.elapsed()
    );
    refused.expect("refused by the other gateway within a second");
    assert_bad_refresh(
        refresh(&mut gateways[1], &tokens.refresh_token).await,
        "the refresh token of a logged-out session",
    );

    // Over HTTP: login answers both tokens, logout ends the session, the profile is refused.
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/auth/login", stack.http))
        .json(&json!({"Email": "sam@example.com", "Password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("JSON");
    let token = login["Result"]["Token"].as_str().expect("Token").to_owned();
    assert!(login["Result"]["RefreshToken"].is_string(), "{login}");
    let out = http
        .post(format!("{}/api/auth/logout", stack.http))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::OK);
    let profile = http
        .get(format!("{}/api/auth/user-profile", stack.http))
        .bearer_auth(&token)
        .send()
        .await
        .expect("profile");
    assert_eq!(profile.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn userctl_refreshes_an_expired_token_by_itself_and_logs_out_on_the_server() {
    let stack = LocalStack::up(&["--token-ttl", "5s"]).await;
    let userctl = &stack.userctl;
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                "sam@example.com",
                "--name",
                "Sam",
                "--password-stdin",
            ],
            e2e::PASSWORD,
        )
        .await
        .ok();
    e2e::login(userctl, "sam@example.com").await.ok();
    let dir = userctl.project_dir();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let (first, first_refresh) = (read("token"), read("refresh-token"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("refresh-token"))
            .expect("refresh token file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Past the token's 5 s: the gateway would refuse it, so whoami refreshes first.
    let expired = userctl_tests::eventually(Duration::from_secs(15), || {
        let http = stack.http.clone();
        let token = first.clone();
        async move {
            let status = reqwest::Client::new()
                .get(format!("{http}/api/auth/user-profile"))
                .bearer_auth(token.trim())
                .send()
                .await
                .map_err(|err| err.to_string())?
                .status();
            if status == StatusCode::UNAUTHORIZED {
                Ok(())
            } else {
                Err(format!("still {status}"))
            }
        }
    })
    .await;
    expired.expect("the first token expires");
    let me = userctl.run(&["whoami"]).await.ok();
    assert!(me.stdout.contains("sam@example.com"), "{me:?}");
    let (second, second_refresh) = (read("token"), read("refresh-token"));
    assert_ne!(second, first, "a new access token was saved");
    assert_ne!(
        second_refresh, first_refresh,
        "and the refresh token rotated"
    );

    // Logout ends the session on the server: the saved token, copied before, is refused.
    let out = userctl.run(&["logout"]).await.ok();
    assert!(out.stdout.contains("ended on the server"), "{out:?}");
    assert!(!dir.join("token").exists() && !dir.join("refresh-token").exists());
    let profile = reqwest::Client::new()
        .get(format!("{}/api/auth/user-profile", stack.http))
        .bearer_auth(second.trim())
        .send()
        .await
        .expect("profile");
    assert_eq!(profile.status(), StatusCode::UNAUTHORIZED);
    let again = userctl.run(&["whoami"]).await.expect_code(3);
    assert!(again.stderr.contains("not logged in"), "{again:?}");
}
