//! The swarm runtime on the real engine, as a single-node swarm `userctl` makes itself, the
//! services image pushed to a real registry and run from there as a cluster's nodes would: the
//! flows through the published front, rolling restarts and a killed task under the churn
//! loops, every secret a swarm secret and none in sight, and `down --volumes` leaving nothing
//! of the project and the engine in the swarm state it was found in.
//!
//! Swarm mode belongs to the whole engine, so the test holds [`SwarmLock`] throughout: no other
//! swarm test runs meanwhile, and the engine's swarm state is restored even when it fails.

use std::{process::Command, time::Duration};

use serde_json::Value;
use userctl_tests::{
    churn::{Churn, Front},
    cli::{Userctl, run_command},
    e2e::{self, Teardown},
    eventually,
    load::CALL_DEADLINE,
    registry::Registry,
    swarm::{EngineSwarm, SwarmLock},
};

/// Calls each phase of the churn makes, per loop.
const PHASE_CALLS: usize = 10;

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(output.status.success(), "docker {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The names of the project's objects of one kind (`service`, `secret`, `config`, `network`,
/// `volume`, or containers with `ps`), found by label.
fn labelled(kind: &str, project: &str) -> Vec<String> {
    let filter = format!("label=io.userctl.project={project}");
    let args: Vec<&str> = match kind {
        "ps" => vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        _ => vec![kind, "ls", "--filter", &filter, "--format", "{{.Name}}"],
    };
    // After the swarm is left, swarm object kinds cannot be listed: there are none.
    let output = Command::new("docker").args(&args).output().expect("docker");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The image each of the project's `usersvc` services runs, without the digest the swarm pins.
fn service_images(project: &str) -> Vec<String> {
    ["store", "cache", "gateway"]
        .iter()
        .map(|service| {
            let image = docker(&[
                "service",
                "inspect",
                &format!("{project}-{service}"),
                "--format",
                "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            ]);
            image
                .trim()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Waits until every row is running and healthy with `count` rows for `service`.
async fn healthy_with(userctl: &Userctl, service: &str, count: usize) -> Vec<Value> {
    eventually(Duration::from_secs(120), || async {
        let rows = e2e::status(userctl).await;
        let all_healthy = rows
            .iter()
            .all(|row| row["state"] == "running" && row["health"] == "healthy");
        let of_service = rows.iter().filter(|row| row["service"] == service).count();
        if all_healthy && of_service == count {
            Ok(rows)
        } else {
            Err(rows)
        }
    })
    .await
    .unwrap_or_else(|rows| panic!("every task running and healthy, {count} {service}: {rows:?}"))
}

async fn log_in(userctl: &Userctl, grpc: &str, email: &str) -> String {
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                email,
                "--name",
                "Swarm",
                "--password-stdin",
            ],
            e2e::PASSWORD,
        )
        .await
        .ok();
    e2e::login(userctl, email).await.ok();
    let mut gateway =
        userctl_proto::gateway::v1::gateway_client::GatewayClient::connect(grpc.to_owned())
            .await
            .expect("connect to the front");
    gateway
        .login(userctl_proto::gateway::v1::LoginRequest {
            email: email.to_owned(),
            password: e2e::PASSWORD.trim_end().to_owned(),
        })
        .await
        .expect("login through the front")
        .into_inner()
        .access_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_stack_serves_rolls_and_heals_with_its_secrets_out_of_sight_and_leaves_the_engine_as_found()
 {
    let lock = SwarmLock::acquire().await.expect("the swarm lock");
    let registry = Registry::start().await;
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let project = userctl.project.clone();
    let teardown = Teardown(userctl.clone());

    // A registry nobody answers at: one line naming it, before anything is made.
    let mut unreachable = e2e::SWARM_UP.to_vec();
    unreachable.extend(["--image-registry", "127.0.0.1:1/nowhere"]);
    let refused = run_command(userctl.command(&unreachable), "")
        .await
        .expect_code(1);
    let errors: Vec<&str> = refused
        .stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert!(
        errors.len() == 1
            && errors[0].starts_with("error: pushing 127.0.0.1:1/nowhere/userctl-usersvc:"),
        "{refused:?}"
    );
    assert!(labelled("service", &project).is_empty(), "{refused:?}");
    assert_eq!(
        &EngineSwarm::now().await.expect("swarm state"),
        lock.before(),
        "a refused up leaves the engine's swarm state alone"
    );

    let pushed_to = format!("{}/userctl-tests", registry.addr);
    let mut args = e2e::SWARM_UP.to_vec();
    args.extend([
        "--replicas",
        "gateway=2,cache=2,store=2",
        "--image-registry",
        &pushed_to,
    ]);
    let up = userctl.run(&args).await.ok();
    assert_eq!(
        registry.repositories().await,
        ["userctl-tests/userctl-usersvc"],
        "the services image is in the registry"
    );
    let image = docker(&[
        "service",
        "inspect",
        &format!("{project}-cache"),
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ]);
    assert!(image.starts_with(&pushed_to), "the cache runs {image}");
    assert!(
        up.stderr.contains("on every interface"),
        "up says where swarm publishes: {up:?}"
    );
    let (grpc, http) = (e2e::printed(&up, "gateway "), e2e::printed(&up, "http "));

    // Another project whose name a service someone else made already has: one line, and
    // nothing of that project made.
    let other_home = tempfile::tempdir().expect("home");
    let other = Userctl::new(other_home.path());
    let squatter = format!("{}-redis", other.project);
    docker(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        &squatter,
        "userctl-local/redis:7",
    ]);
    let refused = run_command(other.command(e2e::SWARM_UP), "")
        .await
        .expect_code(1);
    docker(&["service", "rm", &squatter]);
    assert!(
        refused.stderr.contains(&format!(
            "swarm service {squatter} exists and is not project {}'s",
            other.project
        )),
        "{refused:?}"
    );
    for kind in ["service", "secret", "network"] {
        assert!(
            labelled(kind, &other.project).is_empty(),
            "{kind} of {}",
            other.project
        );
    }

    // A row per task, each on a node, the proxy holding the published port.
    let rows = healthy_with(&userctl, "cache", 2).await;
    for (service, count) in [("store", 2), ("cache", 2), ("gateway", 2), ("proxy", 1)] {
        let of_service: Vec<&Value> = rows
            .iter()
            .filter(|row| row["service"] == service)
            .collect();
        assert_eq!(of_service.len(), count, "{service}: {rows:?}");
        assert!(
            of_service.iter().all(|row| row["node"].is_string()),
            "{rows:?}"
        );
    }

    // Every key, certificate and password is a swarm secret, and none is in any service's
    // environment or arguments.
    let secrets = labelled("secret", &project);
    for file in [
        "signing-keys.json",
        "database-url",
        "redis-url",
        "ca.crt",
        "store.key",
        "postgres-password",
    ] {
        assert!(
            secrets
                .iter()
                .any(|name| name.starts_with(&format!("{project}-{file}-"))),
            "{file} is a swarm secret: {secrets:?}"
        );
    }
    let generated: Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join(&project).join("secrets.json")).expect("secrets"),
    )
    .expect("secrets JSON");
    let mut hidden = vec![
        generated["redis_password"]
            .as_str()
            .expect("redis")
            .to_owned(),
        generated["postgres_password"]
            .as_str()
            .expect("postgres")
            .to_owned(),
    ];
    hidden.extend(userctl_tests::keys::private_key_lines(
        &home.path().join(&project).join("signing-keys.json"),
    ));
    hidden.push("PRIVATE KEY".to_owned());
    for service in labelled("service", &project) {
        let spec = docker(&["service", "inspect", &service, "--format", "{{json .Spec}}"]);
        for secret in &hidden {
            assert!(
                !spec.contains(secret.as_str()),
                "{service}'s spec shows a secret"
            );
        }
    }

    // The flows through the published ports, then rolling restarts of each service under the
    // three churn loops: no call fails.
    let token = log_in(&userctl, &grpc, "swarm@example.com").await;
    let me = userctl.run(&["whoami"]).await.ok();
    assert!(me.stdout.contains("swarm@example.com"), "{me:?}");
    // Each task's log, named by its replica, read through the swarm.
    let logs = userctl.run(&["logs", "cache", "--tail", "3"]).await.ok();
    for replica in ["cache.1", "cache.2"] {
        assert!(
            logs.stdout.lines().any(|line| line.starts_with(replica)),
            "{replica} in {logs:?}"
        );
    }
    let front = Front {
        grpc: &grpc,
        http: &http,
        token: &token,
        userctl: &userctl,
    };
    for service in ["store", "cache", "gateway"] {
        let churn = Churn::start(&front).await;
        churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
        let restarted = userctl.run(&["restart", service]).await.ok();
        assert!(
            restarted
                .stdout
                .contains(&format!("restarted 2 {service} replicas")),
            "{restarted:?}"
        );
        churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
        let report = churn.stop().await;
        if !report.failures().is_empty() {
            // What the proxy saw of the gateways, to tell its doing from theirs.
            let logs = userctl.run(&["logs", "proxy", "--tail", "40"]).await;
            println!("{}", logs.stdout);
        }
        report.assert_no_failed_call(&format!("swarm: restart {service}"));
    }

    // A cache task killed outright: the swarm replaces it by itself, and the loops lose at
    // most the calls in flight at the kill.
    let rows = healthy_with(&userctl, "cache", 2).await;
    let killed = rows
        .iter()
        .find(|row| row["service"] == "cache" && row["replica"] == 2)
        .and_then(|row| row["id"].as_str())
        .expect("cache.2's container")
        .to_owned();
    let churn = Churn::start(&front).await;
    churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    docker(&["kill", &killed]);
    let replaced = eventually(Duration::from_secs(120), || async {
        let rows = healthy_with(&userctl, "cache", 2).await;
        if rows.iter().all(|row| row["id"] != killed.as_str()) {
            Ok(rows)
        } else {
            Err(rows)
        }
    })
    .await
    .unwrap_or_else(|rows| panic!("a new task replaced {killed}: {rows:?}"));
    println!("the swarm replaced the killed cache task: {replaced:?}");
    churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    churn
        .stop()
        .await
        .assert_at_most_in_flight("swarm: docker kill of cache.2");

    // An update whose new tasks never become healthy (a `usersvc` that exits at once): the
    // swarm rolls it back, `up` says the update did not take, and the stack goes on serving
    // the version it had.
    let before_update = service_images(&project);
    let broken = run_command(userctl.command(&["up", "--usersvc", "/bin/false"]), "")
        .await
        .expect_code(1);
    assert!(
        broken.stderr.contains("update did not take") && broken.stderr.contains("previous version"),
        "{broken:?}"
    );
    println!(
        "a broken update: {}",
        broken.stderr.lines().last().unwrap_or_default()
    );
    assert_eq!(service_images(&project), before_update, "rolled back");
    healthy_with(&userctl, "cache", 2).await;
    let me = userctl.run(&["whoami"]).await.ok();
    assert!(me.stdout.contains("swarm@example.com"), "{me:?}");
    // The broken image, named where `up` said it pushed it, is the test's to remove.
    let broken_image = broken
        .stderr
        .split("/userctl-usersvc:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .map(|tag| format!("userctl-usersvc:{tag}"));

    // `keys rotate` under the three loops: two rolling updates of the gateways (the new key
    // published everywhere, then signing), each a new secret; no call fails, the old key set's
    // secret, used by no service now, is removed, and new logins carry the new key.
    let key_secrets = || {
        labelled("secret", &project)
            .into_iter()
            .filter(|name| name.starts_with(&format!("{project}-signing-keys.json-")))
            .collect::<Vec<String>>()
    };
    let old_key = key_secrets();
    assert_eq!(old_key.len(), 1, "{old_key:?}");
    let churn = Churn::start(&front).await;
    churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    let rotated = userctl.run(&["keys", "rotate"]).await.ok();
    println!("swarm: {}", rotated.stdout.trim());
    churn.wait_for_calls(PHASE_CALLS, CALL_DEADLINE).await;
    churn
        .stop()
        .await
        .assert_no_failed_call("swarm: keys rotate");
    let new_key = key_secrets();
    assert_eq!(
        new_key.len(),
        1,
        "the old key set's secret is pruned: {new_key:?}"
    );
    assert_ne!(new_key, old_key);
    let new_kid = rotated
        .stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("key ")?
                .split_once(" (EdDSA) signs from ")
        })
        .map(|(kid, _)| kid.to_owned())
        .unwrap_or_else(|| panic!("the new key in {rotated:?}"));
    e2e::login(&userctl, "swarm@example.com").await.ok();
    let saved = std::fs::read_to_string(home.path().join(&project).join("token")).expect("token");
    let header = jsonwebtoken::decode_header(saved.trim()).expect("a JWT");
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    let me = userctl.run(&["whoami"]).await.ok();
    assert!(me.stdout.contains("swarm@example.com"), "{me:?}");

    // `down --volumes` leaves nothing labelled with the project, and the engine in the swarm
    // state it was found in.
    userctl.run(&["down", "--volumes"]).await.ok();
    drop(teardown);
    for kind in ["service", "secret", "config", "network", "volume", "ps"] {
        let left = labelled(kind, &project);
        assert!(left.is_empty(), "{kind} left after down: {left:?}");
    }
    let now = EngineSwarm::now().await.expect("the engine's swarm state");
    assert_eq!(&now, lock.before(), "the engine's swarm state after down");
    if let Some(image) = broken_image {
        docker(&["image", "rm", &image]);
    }
    // A push that failed left no tag (the pushed one goes with the registry: `down` keeps
    // images).
    let local_tags = docker(&["images", "--format", "{{.Repository}}"]);
    assert!(!local_tags.contains("127.0.0.1:1/"), "{local_tags}");
}
