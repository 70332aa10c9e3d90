//! The local runtime's supervisor dies: what it started is still found by `status`, stopped by
//! `down`, and a second supervisor never runs on the same data directory.

use std::time::Duration;

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use userctl_tests::{
    cli::Userctl,
    e2e::{self, Teardown},
};

fn supervisor_pid(userctl: &Userctl) -> u32 {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(userctl.project_dir().join("local/state.json")).expect("supervisor state"),
    )
    .expect("state JSON");
    state["pid"].as_u64().expect("supervisor pid") as u32
}

/// Processes in process group `group`, from `/proc`.
fn in_group(group: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // A zombie is gone already; only its parent has yet to reap it.
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&group.to_string().as_str()) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn services_that_outlive_a_killed_supervisor_are_shown_by_status_and_stopped_by_down() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(e2e::LOCAL_UP).await.ok();
    let supervisor = supervisor_pid(&userctl);
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).expect("kill -9 the supervisor");

    let rows = e2e::status(&userctl).await;
    for service in ["store", "cache", "gateway"] {
        let row = e2e::row(&rows, service);
        assert_eq!(row["state"], "running", "a survivor is shown: {row}");
        assert!(row["id"].is_string(), "with its pid: {row}");
    }

    userctl.run(&["down"]).await.ok();
    let left = in_group(supervisor);
    assert!(
        left.is_empty(),
        "down stopped every survivor, left {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_supervisor_for_one_data_directory_refuses_to_start() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(e2e::LOCAL_UP).await.ok();

    let mut command = tokio::process::Command::from(userctl.command(&["supervise"]));
    let second = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second supervisor");
    let pid = second.id();
    // Its exit is the event waited for; one still running after 15 s has failed the test.
    let output =
        match tokio::time::timeout(Duration::from_secs(15), second.wait_with_output()).await {
            Ok(output) => output.expect("output"),
            Err(_) => {
                // Still running: stop it the way `down` would, so it drains what it started.
                if let Some(pid) = pid {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                }
                panic!("the second supervisor did not exit at once");
            }
        };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let status = output.status;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another supervisor already runs"),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{stderr}"
    );
    userctl.run(&["status"]).await.ok();
}
