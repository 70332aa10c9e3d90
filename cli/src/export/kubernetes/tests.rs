use super::*;

fn export(replicas: Replicas) -> Export {
    Export {
        replicas,
        version: KubeVersion::parse("1.30").expect("version"),
        usersvc_image: "reg.test/userctl-usersvc:0123456789abcdef".into(),
        redis_image: "redis:7.2.5".into(),
        postgres_image: "postgres:15.8".into(),
    }
}

fn replicas(gateway: u16, cache: u16, store: u16) -> Replicas {
    Replicas {
        gateway,
        cache,
        store,
    }
}

/// Every object of the base, each with its file.
fn objects(export: &Export) -> Vec<(&'static str, Value)> {
    let mut all = Vec::new();
    for (name, objects) in [
        ("gateway.yaml", usersvc(export, Service::Gateway)),
        ("cache.yaml", usersvc(export, Service::Cache)),
        ("store.yaml", usersvc(export, Service::Store)),
        ("redis.yaml", redis(export)),
        ("postgres.yaml", postgres(export)),
        ("network-policies.yaml", network_policies()),
    ] {
        all.extend(objects.into_iter().map(|object| (name, object)));
    }
    all
}

fn find<'a>(objects: &'a [(&str, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, object)| object)
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|var| var["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {container}"))
}

#[test]
fn versions_from_1_27_to_1_33_parse_and_others_are_refused() {
    for (text, minor) in [("1.27", 27), ("v1.30", 30), ("1.33.4", 33)] {
        assert_eq!(
            KubeVersion::parse(text),
            Ok(KubeVersion { minor }),
            "{text}"
        );
    }
    for text in ["1.26", "1.34", "2.30", "1", "1.x", "", "1.30.x", "1.30.1.2"] {
        let err = KubeVersion::parse(text).expect_err(text);
        assert!(err.contains("from 1.27 to 1.33"), "{text}: {err}");
    }
}

#[test]
fn the_services_run_with_the_counts_asked_and_the_launch_every_runtime_uses() {
    let export = export(replicas(3, 2, 1));
    let objects = objects(&export);
    for (service, count) in [("gateway", 3), ("cache", 2), ("store", 1)] {
        let deployment = find(&objects, "Deployment", service);
        assert_eq!(deployment["spec"]["replicas"], count, "{service}");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], export.usersvc_image);
        assert_eq!(container["command"], json!(["/usersvc"]));
        assert_eq!(container["args"][0], service);
        assert_eq!(
            env(container, "USERSVC_TLS_CA")["value"],
            "/run/secrets/ca.crt"
        );
        assert_eq!(
            env(container, "USERSVC_TLS_KEY")["value"],
            format!("/run/secrets/{service}.key")
        );
    }
    let gateway =
        &find(&objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(gateway, "USERSVC_CACHE_ADDR")["value"],
        "http://cache:50052"
    );
    assert_eq!(
        env(gateway, "USERSVC_SIGNING_KEYS")["value"],
        "/run/secrets/signing-keys.json"
    );
    let cache = &find(&objects, "Deployment", "cache")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(cache, "USERSVC_STORE_ADDR")["value"],
        "http://store:50053"
    );
}

#[test]
fn passwords_come_from_secrets_and_are_expanded_only_by_kubernetes() {
    let objects = objects(&export(Replicas::default()));
    let store = &find(&objects, "Deployment", "store")["spec"]["template"]["spec"]["containers"][0];
    let vars: Vec<&Value> = store["env"].as_array().expect("env").iter().collect();
    // Defined before the variable that refers to it, or Kubernetes leaves `$(…)` as it is.
    assert_eq!(vars[0]["name"], "POSTGRES_PASSWORD");
    assert_eq!(
        vars[0]["valueFrom"]["secretKeyRef"],
        json!({"name": "userctl-postgres", "key": "password"})
    );
    assert_eq!(
        env(store, "USERSVC_DATABASE_URL")["value"],
        "postgres://userctl:$(POSTGRES_PASSWORD)@postgres:5432/userctl"
    );
    for service in ["cache", "gateway"] {
        let container =
            &find(&objects, "Deployment", service)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["env"][0]["name"], "REDIS_PASSWORD", "{service}");
        assert_eq!(
            env(container, "USERSVC_REDIS_URL")["value"],
            "redis://:$(REDIS_PASSWORD)@redis:6379"
        );
    }
    let redis =
        &find(&objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(redis["args"][2], "$(REDIS_PASSWORD)");
    // No Secret object anywhere, and every value is a literal or a reference.
    assert!(objects.iter().all(|(_, object)| object["kind"] != "Secret"));
}

#[test]
fn each_service_mounts_only_the_ca_and_its_own_certificate_and_key() {
    let objects = objects(&export(Replicas::default()));
    for service in ["gateway", "cache", "store"] {
        let pod = &find(&objects, "Deployment", service)["spec"]["template"]["spec"];
        let sources = pod["volumes"][0]["projected"]["sources"]
            .as_array()
            .expect("sources");
        assert_eq!(
            sources[0]["secret"]["name"],
            format!("userctl-{service}-tls")
        );
        let keys: Vec<&Value> = sources[0]["secret"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| &item["key"])
            .collect();
        assert_eq!(
            keys,
            [
                &json!("ca.crt"),
                &json!(format!("{service}.crt")),
                &json!(format!("{service}.key"))
            ]
        );
        let signing_keys = sources
            .iter()
            .any(|source| source["secret"]["name"] == SIGNING_KEYS_SECRET);
        assert_eq!(signing_keys, service == "gateway", "{service}");
        assert_eq!(pod["volumes"][0]["projected"]["defaultMode"], 0o440);
    }
}

#[test]
fn the_gateway_is_probed_over_grpc_and_the_tls_services_from_inside() {
    let objects = objects(&export(Replicas::default()));
    let container = |service: &str| {
        find(&objects, "Deployment", service)["spec"]["template"]["spec"]["containers"][0].clone()
    };
    let gateway = container("gateway");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(gateway[probe]["grpc"], json!({"port": 50051}), "{probe}");
    }
    for (service, port) in [("cache", 50052), ("store", 50053)] {
        let container = container(service);
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["exec"]["command"],
                json!([
                    "/usersvc",
                    "health",
                    "--addr",
                    format!("127.0.0.1:{port}"),
                    "--tls-server-name",
                    service
                ]),
                "{service} {probe}"
            );
        }
    }
}

#[test]
fn every_pod_is_non_root_read_only_without_capabilities_and_under_runtime_default_seccomp() {
    let objects = objects(&export(Replicas::default()));
    let workloads: Vec<&Value> = objects
        .iter()
        .map(|(_, object)| object)
        .filter(|object| object["kind"] == "Deployment" || object["kind"] == "StatefulSet")
        .collect();
    assert_eq!(workloads.len(), 5);
    for workload in workloads {
        let pod = &workload["spec"]["template"]["spec"];
        let name = &workload["metadata"]["name"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"], container_security(), "{name}");
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}"
        );
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{name}"
        );
    }
}

#[test]
fn cache_and_store_services_are_headless_and_the_gateway_has_both_ports() {
    let objects = objects(&export(Replicas::default()));
    for name in ["cache", "store", "redis", "postgres"] {
        assert_eq!(
            find(&objects, "Service", name)["spec"]["clusterIP"],
            "None",
            "{name}"
        );
    }
    let gateway = &find(&objects, "Service", "gateway")["spec"];
    assert!(gateway.get("clusterIP").is_none());
    assert_eq!(gateway["ports"][0]["port"], 50051);
    assert_eq!(gateway["ports"][1]["port"], 8080);
    for name in ["gateway", "cache", "store"] {
        let budget = &find(&objects, "PodDisruptionBudget", name)["spec"];
        assert_eq!(budget["maxUnavailable"], 1);
    }
}

#[test]
fn postgres_allows_every_store_replicas_pool_and_one_more_during_a_rollout() {
    let objects = objects(&export(replicas(1, 1, 4)));
    let postgres =
        &find(&objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        postgres["args"][2],
        format!("max_connections={}", 16 * 5 + 10)
    );
}

#[test]
fn network_policies_open_only_the_gateway_and_each_hop_to_its_callers() {
    let objects = objects(&export(Replicas::default()));
    let from = |policy: &str| -> Vec<String> {
        find(&objects, "NetworkPolicy", policy)["spec"]["ingress"]
            .as_array()
            .expect("ingress")
            .iter()
            .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
            .map(|peer| {
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    };
    assert!(from("userctl-gateway").is_empty(), "from anywhere");
    assert_eq!(from("userctl-cache"), ["gateway"]);
    assert_eq!(from("userctl-store"), ["cache"]);
    assert_eq!(from("userctl-redis"), ["cache", "gateway"]);
    assert_eq!(from("userctl-postgres"), ["store"]);
    let deny = &find(&objects, "NetworkPolicy", "userctl-default-deny")["spec"];
    assert_eq!(deny["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(deny.get("ingress").is_none() && deny.get("egress").is_none());
    let dns = &find(&objects, "NetworkPolicy", "userctl-dns")["spec"]["egress"][0]["ports"];
    assert_eq!(dns[0]["port"], 53);
}

#[test]
fn every_object_is_labelled_with_the_stack_and_its_service() {
    for (file, object) in objects(&export(Replicas::default())) {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/part-of"], "userctl", "{file}");
        let name = labels["app.kubernetes.io/name"].as_str().expect("name");
        assert!(
            ["gateway", "cache", "store", "redis", "postgres", "userctl"].contains(&name),
            "{file}: {name}"
        );
    }
}

#[test]
fn the_base_lists_every_resource_and_the_secrets_script_makes_every_secret_named() {
    let files = render(&export(Replicas::default()));
    let names: Vec<&str> = files.iter().map(|file| file.name).collect();
    assert_eq!(
        names,
        [
            "kustomization.yaml",
            "gateway.yaml",
            "cache.yaml",
            "store.yaml",
            "redis.yaml",
            "postgres.yaml",
            "network-policies.yaml",
            "create-secrets.sh"
        ]
    );
    let kustomization = &files[0].content;
    for name in &names[1..names.len() - 1] {
        assert!(
            kustomization.contains(&format!("- \"{name}\"")),
            "{kustomization}"
        );
    }
    assert!(
        files
            .iter()
            .all(|file| file.executable == file.name.ends_with(".sh"))
    );
    let mut secrets: Vec<String> = vec![
        SIGNING_KEYS_SECRET.into(),
        REDIS_SECRET.into(),
        POSTGRES_SECRET.into(),
    ];
    secrets.extend(
        [Holder::Store, Holder::Cache, Holder::Gateway]
            .into_iter()
            .map(tls_secret),
    );
    for secret in secrets {
        let named = secret.replace("store", "$service");
        assert!(
            CREATE_SECRETS.contains(&secret)
                || CREATE_SECRETS.contains(&named)
                || CREATE_SECRETS.contains("\"userctl-$service-tls\""),
            "create-secrets.sh does not make {secret}"
        );
        let manifests: String = files[1..]
            .iter()
            .map(|file| file.content.as_str())
            .collect();
        assert!(
            manifests.contains(&format!("\"{secret}\"")),
            "{secret} is not used"
        );
    }
}
