//! The lifecycle every runtime must survive, driven only through `userctl` as a user would.

use std::time::Duration;

use crate::cli::{Run, Userctl};

pub const PASSWORD: &str = "correct horse battery staple\n";

/// The address `up` printed after `name` (`"gateway "`, `"http "`, `"jwks "`): where the
/// stack's doors are when every port was chosen free.
pub fn printed(up: &Run, name: &str) -> String {
    up.stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|address| address.trim().to_owned())
        .unwrap_or_else(|| panic!("up prints the {name}address: {up:?}"))
}

/// `userctl up` on the local runtime with every port chosen free, so tests run side by side.
pub const LOCAL_UP: &[&str] = &[
    "up",
    "--runtime",
    "local",
    "--gateway-port",
    "0",
    "--http-port",
    "0",
    "--cache-port",
    "0",
    "--store-port",
    "0",
];

/// `userctl up` on the docker runtime with the locally built Redis and Postgres images (the
/// README's test command builds them) and every port chosen free.
pub const DOCKER_UP: &[&str] = &[
    "up",
    "--runtime",
    "docker",
    "--redis-image",
    "userctl-local/redis:7",
    "--postgres-image",
    "userctl-local/postgres:15",
    "--gateway-port",
    "0",
    "--cache-port",
    "0",
    "--store-port",
    "0",
    "--http-port",
    "0",
];

/// `userctl up` on the swarm runtime, making this engine a single-node swarm when it is in
/// none, with the locally built images and the front's ports chosen free (the cache's and
/// store's always are on swarm).
pub const SWARM_UP: &[&str] = &[
    "up",
    "--runtime",
    "swarm",
    "--init-swarm",
    "--redis-image",
    "userctl-local/redis:7",
    "--postgres-image",
    "userctl-local/postgres:15",
    "--proxy-image",
    "userctl-local/haproxy:2.6",
    "--gateway-port",
    "0",
    "--http-port",
    "0",
    "--wait-timeout",
    "180s",
];

/// Runs `userctl down --volumes` when dropped, so a failing test leaves nothing behind.
pub struct Teardown(pub Userctl);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = self.0.command(&["down", "--volumes"]).output();
    }
}

/// The gateway address `status --output json` reports.
pub async fn gateway_addr(userctl: &Userctl) -> String {
    let status = status(userctl).await;
    status
        .iter()
        .find(|row| row["service"] == "gateway")
        .and_then(|row| row["address"].as_str())
        .expect("gateway has an address")
        .to_owned()
}

/// `status --output json`: an array with at least one object per service (one per replica,
/// and a proxy row in front of two or more gateways).
pub async fn status(userctl: &Userctl) -> Vec<serde_json::Value> {
    let run = userctl.run(&["status", "--output", "json"]).await.ok();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&run.stdout).expect("status JSON is an array");
    for service in ["postgres", "redis", "store", "cache", "gateway"] {
        assert!(
            rows.iter().any(|row| row["service"] == service),
            "a row for {service}: {rows:?}"
        );
    }
    rows
}

pub fn row<'a>(rows: &'a [serde_json::Value], service: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|row| row["service"] == service)
        .expect("service row")
}

pub async fn login(userctl: &Userctl, email: &str) -> Run {
    userctl
        .run_with_stdin(&["login", "--email", email, "--password-stdin"], PASSWORD)
        .await
}

/// up → register/login/whoami → up again changes nothing → down → up → the account is still
/// there → down --volumes → up → the account is gone.
pub async fn lifecycle(userctl: &Userctl, up: &[&str]) {
    let up_args: Vec<&str> = std::iter::once("up").chain(up.iter().copied()).collect();
    let first = userctl.run(&up_args).await.ok();
    assert!(
        first.stdout.contains("gateway  http://127.0.0.1:"),
        "{first:?}"
    );
    for row in status(userctl).await.iter().filter(|row| {
        ["store", "cache", "gateway"].contains(&row["service"].as_str().unwrap_or(""))
    }) {
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["health"], "healthy", "{row}");
    }

    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                "ivy@example.com",
                "--name",
                "Ivy",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await
        .ok();
    login(userctl, "ivy@example.com").await.ok();
    let me = userctl.run(&["whoami", "--output", "json"]).await.ok();
    assert!(me.stdout.contains("ivy@example.com"), "{me:?}");

    let gateway_before = gateway_addr(userctl).await;
    let started = std::time::Instant::now();
    let again = userctl.run(&up_args).await.ok();
    let took = started.elapsed();
    assert!(
        again.stderr.contains("unchanged"),
        "a second up changes nothing: {again:?}"
    );
    assert_eq!(
        gateway_addr(userctl).await,
        gateway_before,
        "same gateway: {again:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "a no-op up is quick, took {took:?}"
    );
    userctl.run(&["whoami"]).await.ok();

    userctl.run(&["down"]).await.ok();
    userctl.run(&["whoami"]).await.expect_code(4);
    userctl.run(&up_args).await.ok();
    login(userctl, "ivy@example.com").await.ok();

    userctl.run(&["down", "--volumes"]).await.ok();
    userctl.run(&up_args).await.ok();
    let gone = login(userctl, "ivy@example.com").await.expect_code(3);
    assert!(
        gone.stderr.contains("invalid email or password"),
        "{gone:?}"
    );
    userctl.run(&["down", "--volumes"]).await.ok();
}
