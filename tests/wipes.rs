//! `down --volumes`: deletes the data of a stack, running or already stopped, says exactly what
//! it deleted, and leaves no token of the old stack valid on the new one.

use std::process::Command;

use userctl_tests::{
    cli::Userctl,
    e2e::{self, Teardown},
};

fn docker_volumes(project: &str) -> Vec<String> {
    let filter = format!("label=io.userctl.project={project}");
    let output = Command::new("docker")
        .args(["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn register(userctl: &Userctl, email: &str) {
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                email,
                "--name",
                "Wiped",
                "--password-stdin",
            ],
            e2e::PASSWORD,
        )
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn down_volumes_on_a_stopped_local_stack_deletes_its_sqlite_file_and_says_so() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(e2e::LOCAL_UP).await.ok();
    register(&userctl, "kept@example.com").await;
    let kept = userctl.run(&["down"]).await.ok();
    assert!(kept.stdout.contains("its data is kept"), "{kept:?}");
    let db = userctl.project_dir().join("local/userctl.db");
    assert!(db.exists(), "down keeps the data");

    let wiped = userctl.run(&["down", "--volumes"]).await.ok();
    assert!(
        !db.exists(),
        "down --volumes deleted {}: {wiped:?}",
        db.display()
    );
    assert!(
        wiped.stdout.contains(&db.display().to_string()),
        "names the file it deleted: {wiped:?}"
    );

    let again = userctl.run(&["down", "--volumes"]).await.ok();
    assert!(
        again.stdout.contains("no data to delete"),
        "claims no deletion it did not do: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn down_volumes_on_a_stopped_docker_stack_deletes_its_volumes_and_names_them() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(e2e::DOCKER_UP).await.ok();
    userctl.run(&["down"]).await.ok();
    let volumes = docker_volumes(&userctl.project);
    assert!(!volumes.is_empty(), "down keeps the volumes");

    let wiped = userctl.run(&["down", "--volumes"]).await.ok();
    assert_eq!(
        docker_volumes(&userctl.project),
        Vec::<String>::new(),
        "{wiped:?}"
    );
    for volume in &volumes {
        assert!(
            wiped.stdout.contains(volume.as_str()),
            "names {volume}: {wiped:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_before_down_volumes_is_refused_even_when_its_account_id_is_reused() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(e2e::LOCAL_UP).await.ok();
    register(&userctl, "before@example.com").await;
    e2e::login(&userctl, "before@example.com").await.ok();
    let token_path = userctl.project_dir().join("token");
    let old_token = std::fs::read_to_string(&token_path).expect("saved token");
    let before: serde_json::Value = serde_json::from_str(
        &userctl
            .run(&["whoami", "--output", "json"])
            .await
            .ok()
            .stdout,
    )
    .expect("whoami JSON");

    userctl.run(&["down", "--volumes"]).await.ok();
    userctl.run(e2e::LOCAL_UP).await.ok();
    register(&userctl, "after@example.com").await;
    e2e::login(&userctl, "after@example.com").await.ok();
    let after: serde_json::Value = serde_json::from_str(
        &userctl
            .run(&["whoami", "--output", "json"])
            .await
            .ok()
            .stdout,
    )
    .expect("whoami JSON");
    assert_eq!(
        after["id"], before["id"],
        "the new account reuses the old id"
    );

    std::fs::write(&token_path, old_token).expect("restore the old token");
    let refused = userctl.run(&["whoami"]).await.expect_code(3);
    assert!(
        !refused.stdout.contains("after@example.com"),
        "the old token reads nobody: {refused:?}"
    );
}
