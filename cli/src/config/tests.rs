use std::path::Path;

use super::*;

fn file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(FILE_NAME);
    fs::write(&path, text).expect("write stack file");
    path
}

fn resolve(
    last_up: Option<Settings>,
    file: Option<PathBuf>,
    environment: &[(&'static str, &'static str, EnvValue, &str)],
    flags: &StackArgs,
) -> Result<StackConfig, ConfigError> {
    StackConfig::from_layers(last_up, file, environment, flags)
}

fn error(result: Result<StackConfig, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(err) => err.to_string(),
    }
}

const HTTP_ENV: (&str, &str, EnvValue, &str) =
    ("USERCTL_HTTP_PORT", "ports.http", EnvValue::Port, "7002");

#[test]
fn with_no_layer_every_value_is_the_default() {
    let config = resolve(None, None, &[], &StackArgs::default()).expect("resolves");
    assert_eq!(config.runtime, RuntimeChoice::Auto);
    assert_eq!(config.store, None);
    assert_eq!(config.wait_timeout, Duration::from_secs(60));
    assert_eq!(config.token_ttl, Duration::from_secs(15 * 60));
    assert_eq!(config.ports.gateway, 50051);
    assert_eq!(config.ports.http, 8080);
    assert!(config.cors_origins.is_empty());
    assert!(KEYS.iter().all(|key| config.origin(key) == Origin::Default));
}

#[test]
fn each_layer_beats_the_ones_below_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "[ports]\nhttp = 7001\ngateway = 7101\n");
    let last_up = Settings {
        ports: PortSettings {
            http: Some(7000),
            gateway: Some(7100),
            cache: Some(7200),
            ..PortSettings::default()
        },
        ..Settings::default()
    };
    let flags = StackArgs {
        http_port: Some(7003),
        ..StackArgs::default()
    };

    let config = resolve(Some(last_up.clone()), None, &[], &StackArgs::default()).expect("ok");
    assert_eq!(
        (config.ports.http, config.origin("ports.http")),
        (7000, Origin::LastUp)
    );
    let config = resolve(
        Some(last_up.clone()),
        Some(path.clone()),
        &[],
        &StackArgs::default(),
    )
    .expect("ok");
    assert_eq!(
        (config.ports.http, config.origin("ports.http")),
        (7001, Origin::File(path.clone()))
    );
    let config = resolve(
        Some(last_up.clone()),
        Some(path.clone()),
        &[HTTP_ENV],
        &StackArgs::default(),
    )
    .expect("ok");
    assert_eq!(
        (config.ports.http, config.origin("ports.http")),
        (7002, Origin::Env("USERCTL_HTTP_PORT"))
    );
    let config = resolve(Some(last_up), Some(path.clone()), &[HTTP_ENV], &flags).expect("ok");
    assert_eq!(
        (config.ports.http, config.origin("ports.http")),
        (7003, Origin::Flag)
    );
    // The keys the upper layers leave alone keep theirs.
    assert_eq!(
        (config.ports.gateway, config.origin("ports.gateway")),
        (7101, Origin::File(path))
    );
    assert_eq!(
        (config.ports.cache, config.origin("ports.cache")),
        (7200, Origin::LastUp)
    );
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "[ports]\ngatway = 1\n");
    let message = error(resolve(
        None,
        Some(path.clone()),
        &[],
        &StackArgs::default(),
    ));
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("unknown key `ports.gatway`"), "{message}");

    let path = file(dir.path(), "colour = \"blue\"\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(message.contains("unknown key `colour`"), "{message}");
}

#[test]
fn a_wrong_type_names_the_key_and_the_expected_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "[ports]\nhttp = \"eighty\"\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(
        message.contains("`ports.http` must be a port number"),
        "{message}"
    );

    let path = file(dir.path(), "cors_origins = \"http://localhost:3000\"\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(
        message.contains("`cors_origins` must be a sequence"),
        "{message}"
    );

    let path = file(dir.path(), "store = \"mysql\"\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(message.contains("`store` cannot be \"mysql\""), "{message}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let env = [(
        "USERCTL_GATEWAY_PORT",
        "ports.gateway",
        EnvValue::Port,
        "99999",
    )];
    let message = error(resolve(None, None, &env, &StackArgs::default()));
    assert!(
        message.starts_with("env USERCTL_GATEWAY_PORT: `ports.gateway`"),
        "{message}"
    );

    let env = [(
        "USERCTL_WAIT_TIMEOUT",
        "wait_timeout",
        EnvValue::Text,
        "soon",
    )];
    let message = error(resolve(None, None, &env, &StackArgs::default()));
    assert!(
        message.starts_with("env USERCTL_WAIT_TIMEOUT: wait_timeout"),
        "{message}"
    );
    for ttl in ["forever", "1s", "2d"] {
        let env = [("USERCTL_TOKEN_TTL", "token_ttl", EnvValue::Text, ttl)];
        let message = error(resolve(None, None, &env, &StackArgs::default()));
        assert!(
            message.starts_with(&format!(
                "env USERCTL_TOKEN_TTL: token_ttl \"{ttl}\" is not a duration from 5s to 24h"
            )),
            "{message}"
        );
    }
}

#[test]
fn a_toml_syntax_error_is_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "ports = [\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(!message.contains('\n'), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn origins_come_from_a_comma_separated_variable_and_are_checked() {
    let env = [(
        "USERCTL_CORS_ORIGINS",
        "cors_origins",
        EnvValue::List,
        "http://localhost:3000, https://app.example",
    )];
    let config = resolve(None, None, &env, &StackArgs::default()).expect("ok");
    assert_eq!(
        config.cors_origins,
        ["http://localhost:3000", "https://app.example"]
    );

    let flags = StackArgs {
        cors_origins: vec!["*".into()],
        ..StackArgs::default()
    };
    let message = error(resolve(None, None, &[], &flags));
    assert!(message.starts_with("flag --cors-origin: "), "{message}");
    assert!(message.contains("refused"), "{message}");
}

#[test]
fn an_origin_is_scheme_host_and_port_only() {
    for good in [
        "http://localhost:3000",
        "https://app.example",
        "http://127.0.0.1:8080",
        "http://[::1]:3000",
    ] {
        assert_eq!(check_origin(good), Ok(()), "{good}");
    }
    for bad in [
        "*",
        "localhost:3000",
        "ftp://host",
        "http://localhost:3000/",
        "http://localhost/app",
        "http://localhost:port",
        "http://",
        "http://user@host",
    ] {
        assert!(check_origin(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn a_relative_usersvc_in_the_file_is_relative_to_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "usersvc = \"bin/usersvc\"\n");
    let config = resolve(None, Some(path), &[], &StackArgs::default()).expect("ok");
    assert_eq!(config.usersvc, Some(dir.path().join("bin/usersvc")));
}

#[test]
fn a_password_in_the_redis_url_is_masked() {
    assert_eq!(
        mask_password("redis://:secret@127.0.0.1:6379/0"),
        "redis://:****@127.0.0.1:6379/0"
    );
    assert_eq!(
        mask_password("redis://user:secret@host"),
        "redis://user:****@host"
    );
    assert_eq!(mask_password("redis://secret@host"), "redis://****@host");
    assert_eq!(mask_password("redis://host:6379"), "redis://host:6379");

    let env = [(
        "USERCTL_REDIS_URL",
        "redis_url",
        EnvValue::Text,
        "redis://:hunter2@h:1",
    )];
    let config = resolve(None, None, &env, &StackArgs::default()).expect("ok");
    let shown = serde_json::to_string(&config.entries()).expect("json");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn what_up_records_comes_back_as_the_last_up_layer_with_ports_as_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = ProjectHome {
        name: "t".into(),
        dir: dir.path().join("t"),
    };
    let flags = StackArgs {
        http_port: Some(0),
        usersvc: Some("/somewhere/usersvc".into()),
        cors_origins: vec!["http://localhost:3000".into()],
        ..StackArgs::default()
    };
    let config = resolve(None, None, &[], &flags).expect("ok");
    config
        .record(&home, RuntimeKind::Local, StoreKind::Sqlite)
        .expect("record");

    let again = resolve(
        last_up(&home).expect("read"),
        None,
        &[],
        &StackArgs::default(),
    )
    .expect("ok");
    assert_eq!(again.runtime, RuntimeChoice::Local);
    assert_eq!(again.store, Some(StoreKind::Sqlite));
    assert_eq!(
        (again.ports.http, again.origin("ports.http")),
        (0, Origin::LastUp)
    );
    assert_eq!(again.cors_origins, ["http://localhost:3000"]);
    assert_eq!(again.usersvc, None, "the binary is found afresh");
    assert_eq!(again.origin("ports.gateway"), Origin::Default);

    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(home.dir.join(LAST_UP_FILE))
        .expect("record")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn replicas_come_from_every_layer_and_services_not_named_keep_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "[replicas]\ngateway = 2\ncache = 3\n");
    let env = [(
        "USERCTL_REPLICAS",
        "replicas",
        EnvValue::Replicas,
        "cache=4",
    )];
    let flags = StackArgs {
        replicas: Some(crate::args::ReplicaChanges(vec![(Service::Store, 2)])),
        ..StackArgs::default()
    };
    let config = resolve(None, Some(path.clone()), &env, &flags).expect("ok");
    assert_eq!(config.replicas.to_string(), "gateway=2,cache=4,store=2");
    assert_eq!(config.origin("replicas.gateway"), Origin::File(path));
    assert_eq!(
        config.origin("replicas.cache"),
        Origin::Env("USERCTL_REPLICAS")
    );
    assert_eq!(config.origin("replicas.store"), Origin::Flag);

    let config = resolve(None, None, &[], &StackArgs::default()).expect("ok");
    assert_eq!(config.replicas, Replicas::default());
}

#[test]
fn a_bad_replica_count_names_its_layer_and_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "[replicas]\ncache = 0\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(message.starts_with("file "), "{message}");
    assert!(message.contains("at least one cache"), "{message}");

    let path = file(dir.path(), "[replicas]\nredis = 2\n");
    let message = error(resolve(None, Some(path), &[], &StackArgs::default()));
    assert!(
        message.contains("unknown key `replicas.redis`"),
        "{message}"
    );

    let too_many = format!("gateway={}", Replicas::max() + 1);
    let env = [(
        "USERCTL_REPLICAS",
        "replicas",
        EnvValue::Replicas,
        too_many.as_str(),
    )];
    let message = error(resolve(None, None, &env, &StackArgs::default()));
    assert!(message.starts_with("env USERCTL_REPLICAS: "), "{message}");
    assert!(message.contains("per CPU core"), "{message}");
}
