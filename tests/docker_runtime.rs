//! `userctl up --runtime docker`: five containers on the real Docker engine, built and run with
//! no registry (the local Redis and Postgres images come from scripts/build-images, which the
//! README's test command runs).

use std::process::Command;

use userctl_tests::{
    cli::Userctl,
    e2e::{self, Teardown},
    eventually,
};

const UP: &[&str] = e2e::DOCKER_UP.split_at(1).1;

/// Names of every Docker object labelled with `project`.
fn labelled(project: &str) -> Vec<String> {
    let filter = format!("label=io.userctl.project={project}");
    let mut found = Vec::new();
    for args in [
        vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
        vec![
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ],
    ] {
        let output = Command::new("docker")
            .args(&args)
            .output()
            .expect("docker CLI");
        found.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_stack_survives_its_lifecycle_and_leaves_nothing_behind() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());

    e2e::lifecycle(&userctl, UP).await;

    assert!(
        labelled(&userctl.project).is_empty(),
        "left behind: {:?}",
        labelled(&userctl.project)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_container_is_reported_and_repaired_by_up() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let up: Vec<&str> = std::iter::once("up").chain(UP.iter().copied()).collect();
    userctl.run(&up).await.ok();
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                "kim@example.com",
                "--name",
                "Kim",
                "--password-stdin",
            ],
            e2e::PASSWORD,
        )
        .await
        .ok();

    let container = format!("{}-cache", userctl.project);
    let killed = Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "{killed:?}");

    let rows = eventually(std::time::Duration::from_secs(20), || async {
        let rows = e2e::status(&userctl).await;
        if e2e::row(&rows, "cache")["state"] != "running" {
            Ok(rows)
        } else {
            Err(())
        }
    })
    .await
    .expect("status shows the cache is not running");
    assert_eq!(
        e2e::row(&rows, "gateway")["state"],
        "running",
        "only the cache died: {rows:?}"
    );

    let repaired = userctl.run(&up).await.ok();
    assert!(
        repaired.stderr.contains("unchanged"),
        "the healthy services are left alone: {repaired:?}"
    );
    let cache = e2e::row(&e2e::status(&userctl).await, "cache").clone();
    assert_eq!(cache["state"], "running", "{cache}");
    assert_eq!(cache["health"], "healthy", "{cache}");
    e2e::login(&userctl, "kim@example.com").await.ok();
    userctl.run(&["down", "--volumes"]).await.ok();
    assert!(labelled(&userctl.project).is_empty());
}

#[tokio::test]
async fn no_engine_is_exit_4_in_one_line() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let mut up = userctl.command(&["up", "--runtime", "docker"]);
    up.env(
        "DOCKER_HOST",
        format!("unix://{}/no-such.sock", home.path().display()),
    );
    let output = up.output().expect("run userctl");
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot reach the Docker engine"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_published_cache_and_store_ports_answer_only_the_stacks_certificates() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use userctl_proto::user::v1::{
        ReadUserRequest, read_user_request::Key, user_store_client::UserStoreClient,
    };
    use userctl_tests::tls::{Caller, channel};

    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let up: Vec<&str> = std::iter::once("up").chain(UP.iter().copied()).collect();
    userctl.run(&up).await.ok();
    let tls_dir = userctl.project_dir().join("tls");
    let rows = e2e::status(&userctl).await;
    for service in ["cache", "store"] {
        let addr = e2e::row(&rows, service)["address"]
            .as_str()
            .expect("published")
            .to_owned();
        let read = ReadUserRequest {
            key: Some(Key::Id(1)),
            session_id: String::new(),
        };
        for (who, caller) in [
            ("plaintext", Caller::Plaintext),
            ("no certificate", Caller::NoCertificate),
            ("another CA", Caller::from_another_ca("gateway")),
        ] {
            let answered = UserStoreClient::new(channel(&addr, service, &tls_dir, &caller))
                .read_user(read.clone())
                .await;
            assert!(answered.is_err(), "{service} answered {who}: {answered:?}");
        }
        // The same port answers the stack's own certificate, checked by the service's name.
        let userctl_cert = Caller::holder(&tls_dir, "userctl");
        HealthClient::new(channel(&addr, service, &tls_dir, &userctl_cert))
            .check(HealthCheckRequest::default())
            .await
            .unwrap_or_else(|status| {
                panic!("{service} health with the userctl certificate: {status:?}")
            });
    }
}
