//! Characters that print as nothing, or that drive a terminal, never make an account and never
//! reach the user's terminal raw: emails refuse every format, control and separator character
//! (so two addresses that look alike are never two accounts), names refuse controls and bidi
//! overrides, and `userctl` escapes whatever a server sends, in its output and its error lines.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt as _;
use userctl_proto::{
    gateway::v1::{
        LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, Profile, RefreshRequest,
        RegisterRequest, WhoAmIRequest,
        gateway_server::{Gateway, GatewayServer},
    },
    user::v1::CreateUserRequest,
};
use userctl_tests::{
    cli::Userctl, database::TestDatabase, keys, redis::RedisServer, stack::TestStack,
};
use usersvc::{gateway::password::Passwords, server::Server};

const PASSWORD: &str = "correct horse battery staple";

/// Zero-width space, BOM, soft hyphen, right-to-left override, line and paragraph separators,
/// word joiner, a C1 control.
const INVISIBLE: [char; 8] = [
    '\u{200B}', '\u{FEFF}', '\u{AD}', '\u{202E}', '\u{2028}', '\u{2029}', '\u{2060}', '\u{85}',
];

/// Controls, separators and every bidi embedding, override and isolate.
const NOT_IN_NAMES: [char; 14] = [
    '\u{1B}', '\u{7F}', '\u{9B}', '\u{2028}', '\u{2029}', '\u{202A}', '\u{202B}', '\u{202C}',
    '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

async fn stack() -> (TestDatabase, RedisServer, TestStack) {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    (db, redis, stack)
}

/// The fields a refused gRPC registration names, asserting INVALID_ARGUMENT.
async fn refused_fields(stack: &TestStack, email: &str, full_name: &str) -> Vec<String> {
    let status = stack
        .gateway()
        .await
        .register(RegisterRequest {
            email: email.into(),
            full_name: full_name.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect_err(&format!("{email:?} / {full_name:?} refused"));
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("field violations in the details")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

/// The members a refused HTTP registration names, asserting 400.
async fn refused_members(stack: &TestStack, email: &str, full_name: &str) -> Vec<String> {
    let response = Client::new()
        .post(format!("{}/api/auth/register", stack.http_addr))
        .json(&json!({"FullName": full_name, "Email": email, "Password": PASSWORD, "ConfirmPassword": PASSWORD}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "{email:?} / {full_name:?}"
    );
    let body: Value = response.json().await.expect("JSON envelope");
    let fields = body["Error"]["Fields"].as_object().expect("Fields");
    fields.keys().cloned().collect()
}

#[tokio::test]
async fn emails_with_invisible_characters_are_refused_naming_the_email() {
    let (db, _redis, stack) = stack().await;
    for c in INVISIBLE {
        for email in [format!("ann{c}@example.com"), format!("ann@exam{c}ple.com")] {
            assert_eq!(
                refused_fields(&stack, &email, "Ann").await,
                ["email"],
                "{c:?}"
            );
            assert_eq!(
                refused_members(&stack, &email, "Ann").await,
                ["Email"],
                "{c:?}"
            );
        }
    }
    assert!(
        db.emails().await.is_empty(),
        "no look-alike account was made"
    );
    // The plain address is still free and registers.
    stack
        .gateway()
        .await
        .register(RegisterRequest {
            email: "ann@example.com".into(),
            full_name: "Ann".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("the plain address registers");
}

#[tokio::test]
async fn names_with_controls_or_bidi_overrides_are_refused_and_other_scripts_are_not() {
    let (db, _redis, stack) = stack().await;
    for c in NOT_IN_NAMES {
        let name = format!("Ann{c}Lee");
        assert_eq!(
            refused_fields(&stack, "ann@example.com", &name).await,
            ["full_name"],
            "{c:?}"
        );
        assert_eq!(
            refused_members(&stack, "ann@example.com", &name).await,
            ["FullName"],
            "{c:?}"
        );
    }
    assert!(db.emails().await.is_empty());
    for (i, name) in ["Zoë Ångström", "李小龍", "محمد", "👩\u{200D}💻 Ann"]
        .into_iter()
        .enumerate()
    {
        stack
            .gateway()
            .await
            .register(RegisterRequest {
                email: format!("u{i}@example.com"),
                full_name: name.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("{name:?} refused: {status:?}"));
    }
}

#[tokio::test]
async fn whoami_never_writes_raw_control_characters_sent_by_the_server() {
    let (_db, _redis, stack) = stack().await;
    // A name no gateway accepts, written by another path straight into the store: the CLI must
    // not trust the server to have checked.
    let hostile = "Eve\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202E}reversed\u{2028}end";
    let hash = Passwords::new(1, 1)
        .hash(PASSWORD.into(), None)
        .await
        .expect("hash");
    let user = stack
        .store()
        .await
        .create_user(CreateUserRequest {
            email: "eve@example.com".into(),
            full_name: hostile.into(),
            password_hash: hash,
        })
        .await
        .expect("planted in the store")
        .into_inner();
    let token = stack.sign(&keys::claims(&user.id.to_string(), 600));

    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    std::fs::create_dir_all(userctl.project_dir()).expect("project dir");
    std::fs::write(userctl.project_dir().join("token"), &token).expect("token");

    let table = userctl
        .run(&["--gateway", &stack.gateway_addr, "whoami"])
        .await
        .ok();
    let json = userctl
        .run(&[
            "--gateway",
            &stack.gateway_addr,
            "whoami",
            "--output",
            "json",
        ])
        .await
        .ok();
    for (what, out) in [("table", &table.stdout), ("json", &json.stdout)] {
        let raw: Vec<char> = out
            .chars()
            .filter(|&c| {
                (c.is_control() && c != '\n')
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(raw.is_empty(), "{what} wrote {raw:?} raw: {out:?}");
    }
    assert!(
        table.stdout.contains(r"Eve\u{1b}]0;pwned\u{7}"),
        "{}",
        table.stdout
    );
    let profile: Value = serde_json::from_str(&json.stdout).expect("still valid JSON");
    assert_eq!(
        profile["full_name"], hostile,
        "JSON decodes to what the server sent"
    );
}

/// A gateway that answers every call with an error whose message would drive a terminal: what
/// an attacker's server, or one `--gateway` points at by mistake, can send.
struct HostileGateway;

const HOSTILE_MESSAGE: &str =
    "denied\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202E}reversed\u{2028}end";

#[tonic::async_trait]
impl Gateway for HostileGateway {
    async fn register(&self, _: Request<RegisterRequest>) -> Result<Response<Profile>, Status> {
        Err(Status::already_exists(HOSTILE_MESSAGE))
    }

    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unauthenticated(HOSTILE_MESSAGE))
    }

    async fn who_am_i(&self, _: Request<WhoAmIRequest>) -> Result<Response<Profile>, Status> {
        Err(Status::unavailable(HOSTILE_MESSAGE))
    }

    async fn refresh(&self, _: Request<RefreshRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unauthenticated(HOSTILE_MESSAGE))
    }

    async fn logout(&self, _: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        Err(Status::unavailable(HOSTILE_MESSAGE))
    }
}

#[tokio::test]
async fn error_lines_never_write_raw_control_characters_sent_by_the_server() {
    let server = Server::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .add_service(GatewayServer::new(HostileGateway));
    let gateway = format!("http://{}", server.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.run_until_stopped(shutdown.clone()));

    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    std::fs::create_dir_all(userctl.project_dir()).expect("project dir");
    std::fs::write(userctl.project_dir().join("token"), "a.b.c").expect("token");
    let email = "eve@example.com";
    let runs = [
        (
            "register",
            userctl
                .run_with_stdin(
                    &[
                        "--gateway",
                        &gateway,
                        "register",
                        "--email",
                        email,
                        "--name",
                        "Eve",
                        "--password-stdin",
                    ],
                    PASSWORD,
                )
                .await
                .expect_code(1),
        ),
        (
            "login",
            userctl
                .run_with_stdin(
                    &[
                        "--gateway",
                        &gateway,
                        "login",
                        "--email",
                        email,
                        "--password-stdin",
                    ],
                    PASSWORD,
                )
                .await
                .expect_code(3),
        ),
        (
            "whoami",
            userctl
                .run(&["--gateway", &gateway, "whoami"])
                .await
                .expect_code(4),
        ),
    ];
    for (command, run) in runs {
        let raw: Vec<char> = run
            .stderr
            .trim_end_matches('\n')
            .chars()
            .filter(|&c| {
                c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(
            raw.is_empty(),
            "{command} wrote {raw:?} raw: {:?}",
            run.stderr
        );
        assert!(
            run.stderr.contains(r"denied\u{1b}]0;pwned\u{7}"),
            "{command} still shows the message, escaped: {:?}",
            run.stderr
        );
    }
    shutdown.cancel();
    serving.await.expect("server task").expect("server stops");
}
