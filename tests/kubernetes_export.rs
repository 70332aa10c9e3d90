//! `userctl export kubernetes` as a user runs it, judged by the real tools and no cluster:
//! `kubectl kustomize` renders the base offline, `kubernetes-validate --strict` checks every
//! object against Kubernetes 1.30's schemas, and the rendered objects are checked one by one.
//! The Secrets the base names are made by its own `create-secrets.sh` (printed, not applied),
//! and the certificates it issues are checked by a real `usersvc` over mutual TLS.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::Value;
use userctl_tests::cli::{Userctl, binary};

/// What a finished command printed and how it exited.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ran(command: &mut Command) -> Ran {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A tool the test needs, with a clear message when it is missing.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    assert!(
        found,
        "{name} is not on PATH: scripts/test installs kubernetes-validate; kubectl must be installed"
    );
    Command::new(name)
}

fn export(userctl: &Userctl, args: &[&str]) -> Ran {
    let mut full = vec!["export", "kubernetes"];
    full.extend_from_slice(args);
    ran(&mut userctl.command(&full))
}

/// `kubectl kustomize DIR`, with no cluster and no network needed.
fn kustomize(dir: &Path) -> String {
    let run = ran(tool("kubectl")
        .arg("kustomize")
        .arg(dir)
        .env("KUBECONFIG", "/nonexistent"));
    assert_eq!(run.code, 0, "kubectl kustomize: {run:?}");
    run.stdout
}

/// Multi-document YAML as JSON values, through the YAML library kubernetes-validate itself
/// runs on (so it is there whenever that is).
fn objects(yaml: &str) -> Vec<Value> {
    let mut child = tool("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(output.status.success(), "YAML did not parse");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_base_renders_offline_validates_strictly_for_1_30_and_has_the_shape_asked() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let root = tempfile::tempdir().expect("root");
    let base = root.path().join("base");
    let base_arg = base.to_str().expect("utf-8 path");
    let run = export(
        &userctl,
        &[
            "--out",
            base_arg,
            "--replicas",
            "gateway=3,cache=2",
            "--image-registry",
            "registry.example.test/team/",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Kubernetes 1.30"), "{run:?}");

    let rendered = kustomize(&base);
    let file = root.path().join("rendered.yaml");
    fs::write(&file, &rendered).expect("write");
    let validated = ran(tool("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0", "--quiet"])
        .arg(&file));
    assert_eq!(validated.code, 0, "kubernetes-validate: {validated:?}");

    let objects = objects(&rendered);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for object in &objects {
        *kinds
            .entry(object["kind"].as_str().expect("kind"))
            .or_default() += 1;
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/part-of"], "userctl", "{object}");
        assert!(labels["app.kubernetes.io/name"].is_string(), "{object}");
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("Deployment", 3),
            ("NetworkPolicy", 7),
            ("PodDisruptionBudget", 3),
            ("Service", 5),
            ("StatefulSet", 2),
        ]),
        "no Secret, nothing unexpected"
    );

    // The services: counts, the image from the registry, probes, hardening, spreading.
    for (service, count, port) in [
        ("gateway", 3, 50051),
        ("cache", 2, 50052),
        ("store", 1, 50053),
    ] {
        let deployment = find(&objects, "Deployment", service);
        assert_eq!(deployment["spec"]["replicas"], count, "{service}");
        let pod = &deployment["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let image = c["image"].as_str().expect("image");
        assert!(
            image.starts_with("registry.example.test/team/userctl-usersvc:"),
            "{image}"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            if service == "gateway" {
                assert_eq!(c[probe]["grpc"]["port"], port, "{service} {probe}");
            } else {
                let command = &c[probe]["exec"]["command"];
                assert_eq!(command[1], "health", "{service} {probe}");
                assert_eq!(command[5], service, "{service} {probe}: --tls-server-name");
            }
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["cpu"].is_string());
        assert_eq!(
            pod["topologySpreadConstraints"][0]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(
            find(&objects, "PodDisruptionBudget", service)["spec"]["maxUnavailable"],
            1
        );
    }
    for headless in ["cache", "store"] {
        assert_eq!(
            find(&objects, "Service", headless)["spec"]["clusterIP"],
            "None"
        );
    }
    let gateway_ports: Vec<&Value> = find(&objects, "Service", "gateway")["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| &port["port"])
        .collect();
    assert_eq!(gateway_ports, [50051, 8080]);
    for database in ["redis", "postgres"] {
        let set = find(&objects, "StatefulSet", database);
        assert_eq!(set["spec"]["replicas"], 1);
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"][0],
            "ReadWriteOnce"
        );
        assert_eq!(
            set["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }
    assert_eq!(
        container(&objects, "StatefulSet", "redis")["image"],
        "redis:7.2.5"
    );
    assert_eq!(
        container(&objects, "StatefulSet", "postgres")["image"],
        "postgres:15.8"
    );

    // Network policies: who may reach each service.
    let callers = |policy: &str| -> Option<Vec<String>> {
        let rule = &find(&objects, "NetworkPolicy", policy)["spec"]["ingress"][0];
        rule.get("from").map(|from| {
            from.as_array()
                .expect("from")
                .iter()
                .map(|peer| {
                    peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned()
                })
                .collect()
        })
    };
    assert_eq!(
        callers("userctl-gateway"),
        None,
        "the gateway: from anywhere"
    );
    assert_eq!(callers("userctl-cache"), Some(vec!["gateway".to_owned()]));
    assert_eq!(callers("userctl-store"), Some(vec!["cache".to_owned()]));
    assert_eq!(
        callers("userctl-redis"),
        Some(vec!["cache".to_owned(), "gateway".to_owned()])
    );
    assert_eq!(callers("userctl-postgres"), Some(vec!["store".to_owned()]));
    let deny = &find(&objects, "NetworkPolicy", "userctl-default-deny")["spec"];
    assert_eq!(
        deny["podSelector"]["matchLabels"]["app.kubernetes.io/part-of"],
        "userctl"
    );
    assert!(deny.get("ingress").is_none() && deny.get("egress").is_none());
    assert_eq!(
        find(&objects, "NetworkPolicy", "userctl-dns")["spec"]["egress"][0]["ports"][0]["port"],
        53
    );

    // No secret value: every password comes from a Secret by reference, nothing PEM-shaped.
    assert!(
        !rendered.contains("BEGIN"),
        "no key or certificate in the manifests"
    );
    let mut referenced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for object in &objects {
        let Some(pod) = object["spec"]["template"]["spec"].as_object() else {
            continue;
        };
        for c in pod["containers"].as_array().expect("containers") {
            for var in c["env"].as_array().into_iter().flatten() {
                let name = var["name"].as_str().expect("name");
                if let Some(reference) = var["valueFrom"]["secretKeyRef"].as_object() {
                    referenced
                        .entry(reference["name"].as_str().expect("secret").to_owned())
                        .or_default()
                        .insert(reference["key"].as_str().expect("key").to_owned());
                } else {
                    let value = var["value"].as_str().expect("a literal value");
                    assert!(
                        !name.contains("PASSWORD") && !name.contains("AUTH"),
                        "{name} is written in clear"
                    );
                    if let Some((_, credentials)) = value.split_once("://")
                        && let Some((userinfo, _)) = credentials.split_once('@')
                    {
                        assert!(userinfo.ends_with("_PASSWORD)"), "{name}={value}");
                    }
                }
            }
        }
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            for source in volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let secret = &source["secret"];
                let keys = referenced
                    .entry(secret["name"].as_str().expect("secret").to_owned())
                    .or_default();
                for item in secret["items"].as_array().expect("items") {
                    keys.insert(item["key"].as_str().expect("key").to_owned());
                }
            }
        }
    }
    assert_eq!(referenced.len(), 6, "{referenced:?}");

    // create-secrets.sh makes exactly the Secrets referenced, each with the keys used.
    let script = ran(Command::new(base.join("create-secrets.sh"))
        .args(["--dry-run=client", "-o", "json"])
        .env("KUBECONFIG", "/nonexistent"));
    assert_eq!(script.code, 0, "create-secrets.sh: {script:?}");
    let secrets: Vec<Value> = serde_json::Deserializer::from_str(&script.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("JSON Secrets");
    let mut made: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for secret in &secrets {
        assert_eq!(secret["kind"], "Secret");
        let data = secret["data"]
            .as_object()
            .expect("data")
            .iter()
            .map(|(key, value)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().expect("base64"))
                    .expect("base64");
                (key.clone(), bytes)
            })
            .collect();
        made.insert(
            secret["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_owned(),
            data,
        );
    }
    let made_keys: BTreeMap<String, BTreeSet<String>> = made
        .iter()
        .map(|(name, data)| (name.clone(), data.keys().cloned().collect()))
        .collect();
    assert_eq!(made_keys, referenced);
    // The signing key set is one the gateway reads: every key sound and matching its id, and a
    // key that signs now.
    let signing_keys = &made["userctl-signing-keys"][userctl_keys::FILE_NAME];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let set = userctl_keys::KeySet::parse(signing_keys, now)
        .unwrap_or_else(|err| panic!("create-secrets.sh's signing-keys.json: {err}"));
    assert_eq!(set.keys().len(), 1);
    let key = set.signing(now).expect("a key that signs now");
    assert_eq!(key.algorithm(), userctl_keys::Algorithm::EdDSA);
    assert_eq!(key.retires_at(), None);
    for password in ["userctl-redis", "userctl-postgres"] {
        let value = &made[password]["password"];
        assert!(
            value.len() >= 32 && value.iter().all(u8::is_ascii_hexdigit),
            "{password}: hex, so it needs no escaping in a URL"
        );
    }
    assert!(!base.join("ca.key").exists() && fs::read_dir(&base).expect("base").count() == 8);

    // The certificates it issues work: a store serving with its own answers a health check
    // over mutual TLS from the cache's, checked by the name `store`.
    let tls = root.path().join("tls");
    fs::create_dir(&tls).expect("tls dir");
    for (secret, files) in [
        ("userctl-store-tls", "store"),
        ("userctl-cache-tls", "cache"),
    ] {
        for (key, bytes) in &made[secret] {
            fs::write(tls.join(key), bytes).expect("write");
        }
        assert!(tls.join(format!("{files}.crt")).exists());
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let store = Store::start(&addr, &tls, &root.path().join("users.db"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = |holder: &str| {
        ran(Command::new(binary("usersvc"))
            .args(["health", "--addr", &addr, "--tls-server-name", "store"])
            .arg("--tls-ca")
            .arg(tls.join("ca.crt"))
            .arg("--tls-cert")
            .arg(tls.join(format!("{holder}.crt")))
            .arg("--tls-key")
            .arg(tls.join(format!("{holder}.key"))))
    };
    loop {
        let run = health("cache");
        if run.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never answered: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(store);
}

#[test]
fn every_supported_version_gets_a_base_that_validates_strictly_for_it() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let root = tempfile::tempdir().expect("root");
    for minor in 27..=33 {
        let version = format!("1.{minor}");
        let base = root.path().join(&version);
        let run = export(
            &userctl,
            &[
                "--out",
                base.to_str().expect("utf-8"),
                "--kubernetes-version",
                &version,
                "--replicas",
                "store=2",
            ],
        );
        assert_eq!(run.code, 0, "{version}: {run:?}");
        let file = root.path().join(format!("{version}.yaml"));
        fs::write(&file, kustomize(&base)).expect("write");
        let validated = ran(tool("kubernetes-validate")
            .args(["--strict", "--quiet", "--kubernetes-version"])
            .arg(format!("{version}.0"))
            .arg(&file));
        assert_eq!(validated.code, 0, "{version}: {validated:?}");
    }
}

/// `usersvc store` on SQLite with the given TLS files, killed when dropped.
struct Store(Child);

impl Store {
    fn start(addr: &str, tls: &Path, database: &Path) -> Self {
        let child = Command::new(binary("usersvc"))
            .args(["store", "--listen", addr])
            .arg("--database-url")
            .arg(format!("sqlite://{}?mode=rwc", database.display()))
            .arg("--tls-ca")
            .arg(tls.join("ca.crt"))
            .arg("--tls-cert")
            .arg(tls.join("store.crt"))
            .arg("--tls-key")
            .arg(tls.join("store.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("usersvc store");
        Self(child)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_input_is_one_line_exit_2_and_writes_nothing() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let root = tempfile::tempdir().expect("root");
    let fresh = root.path().join("fresh");
    let fresh_arg = fresh.to_str().expect("utf-8");
    for (args, says) in [
        (vec!["--kubernetes-version", "1.26"], "from 1.27 to 1.33"),
        (vec!["--kubernetes-version", "1.34"], "from 1.27 to 1.33"),
        (
            vec!["--kubernetes-version", "banana"],
            "unknown Kubernetes version",
        ),
        (vec!["--replicas", "cache=0"], "at least one cache"),
        (vec!["--replicas", "web=2"], "cannot be scaled"),
        (vec!["--replicas", "gateway=33"], "at most 32"),
        (vec!["--replicas", "cache"], "is not SERVICE=N"),
        (vec!["--image-registry", ""], "--image-registry is empty"),
    ] {
        let mut full = vec!["--out", fresh_arg];
        full.extend_from_slice(&args);
        let run = export(&userctl, &full);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
        assert!(!fresh.exists(), "{args:?} wrote something");
    }
    // A cluster is not held to this machine's cores: 16 of each is fine on two.
    let run = export(
        &userctl,
        &[
            "--out",
            fresh_arg,
            "--replicas",
            "gateway=16,cache=16,store=16",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(fresh.join("kustomization.yaml").is_file());

    // A directory with files in it is refused, and left as it was.
    let mine = fresh.join("overlay.yaml");
    fs::write(&mine, "mine").expect("write");
    fs::write(fresh.join("gateway.yaml"), "edited").expect("write");
    let run = export(&userctl, &["--out", fresh_arg]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("--force"), "{run:?}");
    assert_eq!(
        fs::read_to_string(fresh.join("gateway.yaml")).expect("read"),
        "edited"
    );

    // --force replaces what export writes and keeps the rest.
    let run = export(&userctl, &["--out", fresh_arg, "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(
        fs::read_to_string(fresh.join("gateway.yaml")).expect("read"),
        "edited"
    );
    assert_eq!(fs::read_to_string(&mine).expect("read"), "mine");
    kustomize(&fresh);
    let leftovers: Vec<_> = fs::read_dir(root.path())
        .expect("root")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["fresh"],
        "no staging directory is left beside it"
    );

    // A file in the way is not a directory to write into, even with --force.
    let file = root.path().join("file");
    fs::write(&file, "x").expect("write");
    let run = export(
        &userctl,
        &["--out", file.to_str().expect("utf-8"), "--force"],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(fs::read_to_string(&file).expect("read"), "x");
}
