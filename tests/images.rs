//! The docker runtime's images on a machine with no registry: `up` with no image flags falls
//! back to the locally built Redis (scripts/build-images) and says so, and two `up`s at once
//! import one services image for one content hash, leaving no untagged copy behind.

use std::{collections::HashSet, io::Write as _, process::Command};

use userctl_tests::{
    cli::{Userctl, binary},
    e2e::Teardown,
};

const UP: &[&str] = &[
    "up",
    "--runtime",
    "docker",
    "--store",
    "sqlite",
    "--gateway-port",
    "0",
    "--cache-port",
    "0",
    "--store-port",
    "0",
    "--http-port",
    "0",
];

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(output.status.success(), "docker {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Services images that lost their tag: what a second import of the same content leaves.
fn untagged_services_images() -> HashSet<String> {
    docker(&[
        "images",
        "--quiet",
        "--no-trunc",
        "--filter",
        "dangling=true",
        "--filter",
        "label=io.userctl.image=usersvc",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ups_at_once_import_one_services_image_and_use_the_local_redis() {
    // A usersvc no image has been made from yet: trailing bytes change its content hash, and
    // the loader ignores them.
    let dir = tempfile::tempdir().expect("dir");
    let usersvc = dir.path().join("usersvc");
    std::fs::copy(binary("usersvc"), &usersvc).expect("copy usersvc");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&usersvc)
        .and_then(|mut file| file.write_all(rand::random::<u64>().to_string().as_bytes()))
        .expect("make the binary unique");
    let usersvc = usersvc.display().to_string();

    let before = untagged_services_images();
    let homes = [
        tempfile::tempdir().expect("home"),
        tempfile::tempdir().expect("home"),
    ];
    let stacks: Vec<Userctl> = homes.iter().map(|home| Userctl::new(home.path())).collect();
    let _teardowns: Vec<Teardown> = stacks.iter().cloned().map(Teardown).collect();
    let up: Vec<&str> = UP.iter().copied().chain(["--usersvc", &usersvc]).collect();

    let (first, second) = tokio::join!(stacks[0].run(&up), stacks[1].run(&up));
    let runs = [first.ok(), second.ok()];

    let official_here = Command::new("docker")
        .args(["image", "inspect", "redis:7.2.5"])
        .output()
        .is_ok_and(|output| output.status.success());
    for run in &runs {
        let notes: Vec<&str> = run
            .stderr
            .lines()
            .filter(|line| line.contains("using the locally built userctl-local/redis:7"))
            .collect();
        if !official_here {
            assert_eq!(notes.len(), 1, "one line says so: {}", run.stderr);
        }
    }
    let images: HashSet<String> = stacks
        .iter()
        .map(|stack| {
            docker(&[
                "inspect",
                "--format",
                "{{.Image}}",
                &format!("{}-gateway", stack.project),
            ])
        })
        .collect();
    let tag = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &format!("{}-gateway", stacks[0].project),
    ]);
    let new_untagged: Vec<String> = untagged_services_images()
        .difference(&before)
        .cloned()
        .collect();

    for stack in &stacks {
        stack.run(&["down", "--volumes"]).await.ok();
    }
    // The image is this test's own: nothing else runs this binary.
    Command::new("docker").args(["rmi", &tag]).output().ok();

    assert_eq!(images.len(), 1, "both stacks run one image: {images:?}");
    assert!(
        new_untagged.is_empty(),
        "a second import left untagged images: {new_untagged:?}"
    );
}
