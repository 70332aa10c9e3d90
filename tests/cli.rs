//! `userctl register/login/whoami/logout` as a user runs them: a real process against a real
//! stack, judged by exit codes, stdout and stderr; and what the CLI leaves behind: no secret
//! in its output or the services' logs, private files, a Redis that needs its password.

use std::{
    os::unix::fs::PermissionsExt as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use userctl_tests::{
    cli::Userctl, database::TestDatabase, e2e::Teardown, redis::RedisServer, stack::TestStack,
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

/// Replica counts and services are checked before anything is touched, and the commands that
/// act on a running stack say so when there is none.
#[tokio::test]
async fn scale_restart_and_stats_refuse_bad_input_and_a_stack_that_is_not_up() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let cases: [(&[&str], i32, &str); 10] = [
        (&["scale", "cache=0"], 2, "at least one cache"),
        (&["scale", "web=2"], 2, "cannot be scaled"),
        (&["scale", "redis=2"], 2, "cannot be scaled"),
        (&["scale", "cache=99"], 2, "per CPU core"),
        (&["scale"], 2, "SERVICE=N"),
        (
            &["up", "--replicas", "gateway=0"],
            2,
            "at least one gateway",
        ),
        (&["restart", "redis"], 2, "cannot restart \"redis\""),
        (&["restart", "cache"], 4, "is not up"),
        (&["scale", "cache=2"], 4, "is not up"),
        (&["stats"], 4, "is not up"),
    ];
    for (args, code, says) in cases {
        let run = userctl.run(args).await;
        assert_eq!(run.code, code, "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
    }

    let mut up = userctl.command(&["up", "--runtime", "local"]);
    up.env("USERCTL_REPLICAS", "cache=0");
    let run = userctl_tests::cli::run_command(up, "").await.expect_code(2);
    assert!(
        run.stderr
            .starts_with("error: env USERCTL_REPLICAS: cache=0: a stack needs at least one cache"),
        "{run:?}"
    );
    assert!(
        !userctl.project_dir().join("local").exists(),
        "nothing was started: {run:?}"
    );
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
    std::fs::create_dir_all(f.userctl.project_dir()).expect("project dir");
    // The control: the same claims, still valid and signed with the stack's key, are Hal.
    let live = f.stack.sign(&userctl_tests::keys::claims("1", 60));
    std::fs::write(f.userctl.project_dir().join("token"), live).expect("write token");
    let me = f.run(&["whoami"]).await.ok();
    assert!(me.stdout.contains("hal@example.com"), "{me:?}");

    let claims = serde_json::json!({"sub": "1", "iss": "userctl", "aud": "userctl", "iat": now - 120, "nbf": now - 120, "exp": now - 60, "jti": "expired"});
    let expired = f.stack.sign(&claims);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_and_their_files_are_private() {
    // The real thing: `userctl up --runtime local` starts supervised usersvc processes that log
    // to files, at debug level for our own code; then the account commands run as a user's.
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let run = |args: &[&str], stdin: &str| {
        let mut command = userctl.command(args);
        command.env("RUST_LOG", "info,usersvc=trace");
        let stdin = stdin.to_owned();
        async move {
            let run = userctl_tests::cli::run_command(command, &stdin).await;
            (Some(run.code), format!("{}{}", run.stdout, run.stderr))
        }
    };
    let password = "Sup3r-secret-passphrase!";
    let wrong = "An0ther-secret-guess!";
    let mut printed = String::new();
    let mut expect = |(code, output): (Option<i32>, String), want: i32| {
        assert_eq!(code, Some(want), "{output}");
        printed.push_str(&output);
    };
    expect(run(userctl_tests::e2e::LOCAL_UP, "").await, 0);
    let email = ["--email", "sec@example.com"];
    let register_args = [
        &["register", "--name", "Sec", "--password-stdin"][..],
        &email,
    ]
    .concat();
    let login_args = [&["login", "--password-stdin"][..], &email].concat();
    expect(run(&register_args, &format!("{password}\n")).await, 0);
    expect(run(&register_args, &format!("{password}\n")).await, 1);
    expect(run(&login_args, &format!("{wrong}\n")).await, 3);
    expect(run(&login_args, &format!("{password}\n")).await, 0);
    expect(run(&["whoami"], "").await, 0);
    let project = userctl.project_dir();
    let token = std::fs::read_to_string(project.join("token")).expect("saved token");
    // A forged token (right shape, wrong key) is refused, and not logged either.
    let forged = {
        let mut parts: Vec<String> = token.trim().split('.').map(str::to_owned).collect();
        parts[2] = "A".repeat(parts[2].len());
        parts.join(".")
    };
    std::fs::write(project.join("token"), &forged).expect("forge");
    expect(run(&["whoami"], "").await, 3);
    for service in ["gateway", "cache", "store"] {
        expect(run(&["logs", service, "--tail", "1000"], "").await, 0);
    }

    let private_keys = userctl_tests::keys::private_key_lines(&project.join("signing-keys.json"));
    let mut logs = printed;
    let mut files = Vec::new();
    for dir in [project.join("local"), project.join("local/logs")] {
        for entry in std::fs::read_dir(&dir).expect("local dir").flatten() {
            let path = entry.path();
            let name = path.display().to_string();
            if name.ends_with(".log") {
                logs.push_str(&std::fs::read_to_string(&path).expect("log"));
                files.push(name);
            }
        }
    }
    assert!(
        logs.contains("registered") && logs.contains("logged in"),
        "the logs saw the requests: {files:?}"
    );
    let mut secrets = vec![
        ("the password", password.to_owned()),
        ("the wrong password", wrong.to_owned()),
        ("the token", token.trim().to_owned()),
        ("the forged token", forged.clone()),
        (
            "a token's signature",
            token.trim().rsplit('.').next().unwrap_or("").to_owned(),
        ),
        ("an argon2 hash", "$argon2id$".to_owned()),
    ];
    secrets.extend(
        private_keys
            .into_iter()
            .map(|line| ("a signing private key", line)),
    );
    if let Ok(text) = std::fs::read_to_string(project.join("secrets.json")) {
        let json: serde_json::Value = serde_json::from_str(&text).expect("secrets JSON");
        if let Some(redis) = json["redis_password"].as_str() {
            secrets.push(("the Redis password", redis.to_owned()));
        }
    }
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} is a real secret");
        assert!(
            !logs.contains(secret.as_str()),
            "{what} appears in the logs or output"
        );
    }
    let mut modes = Vec::new();
    for file in [
        "signing-keys.json",
        "token",
        "secrets.json",
        "local/redis.conf",
    ] {
        let path = project.join(file);
        if let Ok(meta) = std::fs::metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} is private");
            modes.push(format!("{file} {mode:o}"));
        }
    }
    assert!(
        modes.iter().any(|m| m.starts_with("signing-keys.json")),
        "{modes:?}"
    );
    // Redis listens on loopback only and answers nobody without the generated password.
    if let Ok(conf) = std::fs::read_to_string(project.join("local/redis.conf")) {
        assert!(conf.contains("bind 127.0.0.1"), "{conf}");
        let port = conf
            .lines()
            .find_map(|line| line.strip_prefix("port "))
            .expect("port line");
        let reply = redis_ping(&format!("127.0.0.1:{port}")).await;
        assert!(reply.starts_with("-NOAUTH"), "Redis answered {reply:?}");
        modes.push(format!("redis without password: {}", reply.trim()));
    }
    println!(
        "{} bytes of logs from {files:?} and command output searched for {} secrets: none found; {}",
        logs.len(),
        secrets.len(),
        modes.join(", ")
    );
    userctl.run(&["down", "--volumes"]).await.ok();
}

async fn redis_ping(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect redis");
    stream.write_all(b"PING\r\n").await.expect("write");
    let mut reply = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    String::from_utf8_lossy(&reply[..n]).into_owned()
}
