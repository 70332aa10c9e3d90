//! `userctl up --runtime local`: supervised processes on this machine, SQLite and redis-server.

use userctl_tests::{
    cli::Userctl,
    e2e::{self, Teardown},
    eventually,
};

/// The arguments after `up`.
const UP: &[&str] = e2e::LOCAL_UP.split_at(1).1;

#[tokio::test(flavor = "multi_thread")]
async fn the_local_stack_survives_its_lifecycle_and_keeps_data_until_down_volumes() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    e2e::lifecycle(&userctl, UP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_service_is_restarted_by_the_supervisor() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let up: Vec<&str> = std::iter::once("up").chain(UP.iter().copied()).collect();
    userctl.run(&up).await.ok();

    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(userctl.project_dir().join("local/state.json")).expect("supervisor state"),
    )
    .expect("state JSON");
    let cache = state["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == "cache")
        .expect("cache");
    let pid = cache["pid"].as_i64().expect("cache pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill cache");

    eventually(std::time::Duration::from_secs(20), || async {
        let rows = e2e::status(&userctl).await;
        let cache = e2e::row(&rows, "cache");
        if cache["health"] == "healthy" && cache["restarts"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(cache.clone())
        }
    })
    .await
    .expect("the cache is back, with one restart counted");
    userctl.run(&["down", "--volumes"]).await.ok();
}
