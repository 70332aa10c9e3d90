//! `userctl register/login/whoami/logout` as a user runs them: a real process against a real
//! stack, judged by exit codes, stdout and stderr.

use std::{
    os::unix::fs::PermissionsExt as _,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use userctl_tests::{
    cli::Userctl,
    database::TestDatabase,
    redis::RedisServer,
    stack::{JWT_SECRET, TestStack},
};

const PASSWORD: &str = "correct horse battery staple\n";

struct Fixture {
    _db: TestDatabase,
    _redis: RedisServer,
    stack: TestStack,
    _home: tempfile::TempDir,
    userctl: Userctl,
}

async fn fixture() -> Fixture {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    Fixture {
        _db: db,
        _redis: redis,
        stack,
        _home: home,
        userctl,
    }
}

impl Fixture {
    async fn run(&self, args: &[&str]) -> userctl_tests::cli::Run {
        let mut full = vec!["--gateway", &self.stack.gateway_addr];
        full.extend_from_slice(args);
        self.userctl.run(&full).await
    }

    async fn run_with_password(&self, args: &[&str], password: &str) -> userctl_tests::cli::Run {
        let mut full = vec!["--gateway", &self.stack.gateway_addr];
        full.extend_from_slice(args);
        full.push("--password-stdin");
        self.userctl.run_with_stdin(&full, password).await
    }
}

#[tokio::test]
async fn register_login_whoami_logout_as_a_user_would() {
    let f = fixture().await;
    let registered = f
        .run_with_password(
            &["register", "--email", "Fay@Example.com", "--name", "Fay Wu"],
            PASSWORD,
        )
        .await
        .ok();
    assert!(
        registered.stdout.contains("registered fay@example.com"),
        "{registered:?}"
    );

    let login = f
        .run_with_password(&["login", "--email", "fay@example.com"], PASSWORD)
        .await
        .ok();
    assert!(
        login.stdout.contains("logged in as fay@example.com"),
        "{login:?}"
    );
    let token = f.userctl.project_dir().join("token");
    let mode = std::fs::metadata(&token)
        .expect("token saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");

    let table = f.run(&["whoami"]).await.ok();
    assert!(
        table.stdout.contains("fay@example.com") && table.stdout.contains("Fay Wu"),
        "{table:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&f.run(&["whoami", "--output", "json"]).await.ok().stdout)
            .expect("JSON");
    assert_eq!(json["email"], "fay@example.com");
    assert_eq!(json["full_name"], "Fay Wu");
    assert!(json["id"].as_i64().is_some_and(|id| id > 0));

    assert!(f.run(&["logout"]).await.ok().stdout.contains("logged out"));
    assert!(!token.exists(), "the token is gone");
    let refused = f.run(&["whoami"]).await.expect_code(3);
    assert!(
        refused.stderr.starts_with("error: not logged in"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn each_failure_has_its_exit_code_and_one_line() {
    let f = fixture().await;
    f.run_with_password(
        &["register", "--email", "gil@example.com", "--name", "Gil"],
        PASSWORD,
    )
    .await
    .ok();

    let duplicate = f
        .run_with_password(
            &["register", "--email", "gil@example.com", "--name", "Gil"],
            PASSWORD,
        )
        .await;
    let wrong_password = f
        .run_with_password(&["login", "--email", "gil@example.com"], "wrong password\n")
        .await;
    let invalid_email = f
        .run_with_password(&["register", "--email", "nope", "--name", "Gil"], PASSWORD)
        .await;
    let no_password = f
        .run_with_password(&["login", "--email", "gil@example.com"], "")
        .await;
    let bad_flag = f.run(&["login"]).await;
    for (run, code, says) in [
        (&duplicate, 1, "already exists"),
        (&wrong_password, 3, "invalid email or password"),
        (&invalid_email, 2, "email: must look like name@example.com"),
        (&no_password, 2, "no password on stdin"),
        (&bad_flag, 2, "--email"),
    ] {
        assert_eq!(run.code, code, "{run:?}");
        assert!(run.stderr.contains(says), "{run:?}");
    }
    for run in [&duplicate, &wrong_password, &invalid_email, &no_password] {
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{run:?}");
    }
}

#[tokio::test]
async fn an_expired_saved_token_asks_to_log_in_again() {
    let f = fixture().await;
    f.run_with_password(
        &["register", "--email", "hal@example.com", "--name", "Hal"],
        PASSWORD,
    )
    .await
    .ok();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({"sub": "1", "iss": "userctl", "aud": "userctl", "iat": now - 120, "nbf": now - 120, "exp": now - 60});
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("sign");
    std::fs::create_dir_all(f.userctl.project_dir()).expect("project dir");
    std::fs::write(f.userctl.project_dir().join("token"), expired).expect("write token");

    let run = f.run(&["whoami"]).await.expect_code(3);
    assert!(
        run.stderr.contains("invalid or expired token") && run.stderr.contains("userctl login"),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_gateway_that_is_down_is_exit_4_with_a_hint() {
    let f = fixture().await;
    let addr = f.stack.gateway_addr.clone();
    f.stack.stop().await;
    let run = f
        .userctl
        .run_with_stdin(
            &[
                "--gateway",
                &addr,
                "login",
                "--email",
                "a@example.com",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await;
    let run = run.expect_code(4);
    assert!(
        run.stderr.contains("cannot reach the gateway") && run.stderr.contains("userctl up"),
        "{run:?}"
    );
}
