//! The stack file and the layers over it, as a user meets them through the real `userctl`:
//! `config` shows which layer each value came from, a bad file is one line and exit 2,
//! `completions` prints a script, and `up --cors-origin` opens the HTTP door to one origin.

use std::path::Path;

use reqwest::{Method, header};
use serde_json::Value;
use userctl_tests::{
    cli::{Run, Userctl, run_command},
    e2e::{self, Teardown},
};

/// The variables of the layering, removed so the machine's own cannot leak into a test.
const LAYER_VARIABLES: &[&str] = &[
    "USERCTL_FILE",
    "USERCTL_RUNTIME",
    "USERCTL_STORE",
    "USERCTL_WAIT_TIMEOUT",
    "USERCTL_CORS_ORIGINS",
    "USERCTL_USERSVC",
    "USERCTL_REDIS_URL",
    "USERCTL_GATEWAY_PORT",
    "USERCTL_HTTP_PORT",
    "USERCTL_CACHE_PORT",
    "USERCTL_STORE_PORT",
    "USERCTL_REDIS_IMAGE",
    "USERCTL_POSTGRES_IMAGE",
];

/// `userctl ARGS` run in `dir`, with only the layer variables in `env` set.
async fn run_in(userctl: &Userctl, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = userctl.command(args);
    command.current_dir(dir);
    for var in LAYER_VARIABLES {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    run_command(command, "").await
}

/// The value and source `config --output json` gives `key`.
async fn setting(
    userctl: &Userctl,
    dir: &Path,
    env: &[(&str, &str)],
    key: &str,
) -> (Value, String) {
    setting_with(userctl, dir, &["config", "--output", "json"], env, key).await
}

async fn setting_with(
    userctl: &Userctl,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    key: &str,
) -> (Value, String) {
    let run = run_in(userctl, dir, args, env).await.ok();
    let json: Value = serde_json::from_str(&run.stdout).expect("config JSON");
    let entry = json["values"]
        .as_array()
        .expect("values")
        .iter()
        .find(|entry| entry["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        .clone();
    (
        entry["value"].clone(),
        entry["source"].as_str().expect("source").to_owned(),
    )
}

#[tokio::test]
async fn config_shows_the_default_then_the_file_then_the_environment_then_a_flag_winning() {
    let home = tempfile::tempdir().expect("home");
    let cwd = tempfile::tempdir().expect("cwd");
    let userctl = Userctl::new(home.path());

    assert_eq!(
        setting(&userctl, cwd.path(), &[], "ports.http").await,
        (Value::from(8080), "default".to_owned())
    );
    let file = cwd.path().join("userctl.toml");
    std::fs::write(&file, "store = \"sqlite\"\n[ports]\nhttp = 9001\n").expect("write file");
    let from_file = format!("file {}", file.display());
    assert_eq!(
        setting(&userctl, cwd.path(), &[], "ports.http").await,
        (Value::from(9001), from_file.clone())
    );
    let env = [("USERCTL_HTTP_PORT", "9002")];
    assert_eq!(
        setting(&userctl, cwd.path(), &env, "ports.http").await,
        (Value::from(9002), "env USERCTL_HTTP_PORT".to_owned())
    );
    let flag = ["config", "--output", "json", "--http-port", "9003"];
    assert_eq!(
        setting_with(&userctl, cwd.path(), &flag, &env, "ports.http").await,
        (Value::from(9003), "flag".to_owned())
    );
    // What no upper layer sets still comes from the file.
    assert_eq!(
        setting_with(&userctl, cwd.path(), &flag, &env, "store").await,
        (Value::from("sqlite"), from_file)
    );

    // --file names another file; the table says which one it read.
    let other = cwd.path().join("other.toml");
    std::fs::write(&other, "wait_timeout = \"5m\"\n").expect("write other");
    let table = run_in(
        &userctl,
        cwd.path(),
        &["--file", other.to_str().expect("utf-8 path"), "config"],
        &[],
    )
    .await
    .ok();
    assert!(
        table
            .stdout
            .contains(&format!("stack file {}", other.display())),
        "{table:?}"
    );
    let line = table
        .stdout
        .lines()
        .find(|line| line.starts_with("wait_timeout"))
        .expect("wait_timeout row");
    assert!(line.contains("5m") && line.contains("file "), "{line}");
}

#[tokio::test]
async fn a_bad_stack_file_is_one_line_naming_the_file_and_the_key_with_exit_2() {
    let home = tempfile::tempdir().expect("home");
    let cwd = tempfile::tempdir().expect("cwd");
    let userctl = Userctl::new(home.path());
    let file = cwd.path().join("userctl.toml");

    for (text, key) in [
        ("[ports]\ngatway = 1\n", "ports.gatway"),
        ("[ports]\nhttp = \"eighty\"\n", "ports.http"),
        ("runtime = \"kubernetes\"\n", "runtime"),
        ("cors_origins = [\"*\"]\n", "cors_origins"),
    ] {
        std::fs::write(&file, text).expect("write file");
        for args in [&["config"][..], &["up"][..]] {
            let run = run_in(&userctl, cwd.path(), args, &[]).await.expect_code(2);
            assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
            assert!(run.stderr.contains(&file.display().to_string()), "{run:?}");
            assert!(run.stderr.contains(key), "{key}: {run:?}");
            assert!(!run.stderr.contains("panicked"), "{run:?}");
        }
    }

    std::fs::remove_file(&file).expect("remove file");
    let run = run_in(
        &userctl,
        cwd.path(),
        &["config"],
        &[("USERCTL_STORE_PORT", "lots")],
    )
    .await
    .expect_code(2);
    assert!(run.stderr.contains("USERCTL_STORE_PORT"), "{run:?}");

    let run = run_in(
        &userctl,
        cwd.path(),
        &["--file", "missing.toml", "config"],
        &[],
    )
    .await
    .expect_code(2);
    assert!(run.stderr.contains("missing.toml"), "{run:?}");
}

#[tokio::test]
async fn completions_for_bash_name_userctl_and_its_subcommands() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let run = userctl.run(&["completions", "bash"]).await.ok();
    for word in [
        "userctl",
        "up",
        "down",
        "status",
        "logs",
        "config",
        "completions",
    ] {
        assert!(run.stdout.contains(word), "{word} missing from the script");
    }
    assert!(
        run.stdout.contains("complete -F"),
        "a bash completion script"
    );
    userctl.run(&["completions", "tcsh"]).await.expect_code(2);
}

/// The HTTP door's answer to a browser's preflight from `origin`: the origin it allows, if any.
async fn preflight(http: &str, origin: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{http}/api/auth/login"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .send()
        .await
        .expect("preflight answered");
    response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|value| value.to_str().expect("ascii header").to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn up_allows_the_cors_origin_given_and_a_bare_up_after_down_brings_the_same_stack_back() {
    let home = tempfile::tempdir().expect("home");
    let cwd = tempfile::tempdir().expect("cwd");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let frontend = "http://127.0.0.1:3999";
    let other = "http://127.0.0.1:4000";

    let up_args: Vec<&str> = e2e::LOCAL_UP
        .iter()
        .copied()
        .chain(["--cors-origin", frontend])
        .collect();
    let up = run_in(&userctl, cwd.path(), &up_args, &[]).await.ok();
    let http = e2e::printed(&up, "http ");
    assert_eq!(preflight(&http, frontend).await.as_deref(), Some(frontend));
    assert_eq!(
        preflight(&http, other).await,
        None,
        "another origin is refused"
    );

    run_in(&userctl, cwd.path(), &["down"], &[]).await.ok();
    assert_eq!(
        setting(&userctl, cwd.path(), &[], "runtime").await,
        (Value::from("local"), "last up".to_owned())
    );
    assert_eq!(
        setting(&userctl, cwd.path(), &[], "store").await,
        (Value::from("sqlite"), "last up".to_owned())
    );
    assert_eq!(
        setting(&userctl, cwd.path(), &[], "ports.http").await,
        (Value::from(0), "last up".to_owned()),
        "0 stays 0: the port chosen is not a setting"
    );

    let again = run_in(&userctl, cwd.path(), &["up"], &[]).await.ok();
    assert!(again.stdout.contains("local runtime"), "{again:?}");
    let http = e2e::printed(&again, "http ");
    assert_eq!(preflight(&http, frontend).await.as_deref(), Some(frontend));
    // A flag given later still wins over the record.
    assert_eq!(
        setting_with(
            &userctl,
            cwd.path(),
            &["config", "--output", "json", "--store", "postgres"],
            &[],
            "store"
        )
        .await,
        (Value::from("postgres"), "flag".to_owned())
    );
    run_in(&userctl, cwd.path(), &["down", "--volumes"], &[])
        .await
        .ok();
}
