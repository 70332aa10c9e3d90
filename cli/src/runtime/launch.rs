//! How each `usersvc` service is started, written once: its subcommand, flags, environment and
//! listen ports, the addresses of the services it depends on, and its TLS files: every runtime
//! turns mutual TLS on. Every runtime turns a [`Launch`] into its own thing (a container, a
//! supervised process); nothing here does I/O.

use std::time::Duration;

use crate::{
    pki::{self, Holder},
    stack::{Ports, Service},
};

/// What a runtime knows about where things are, from the services' point of view.
#[derive(Debug, Clone)]
pub struct Wiring<'a> {
    /// The address the services bind: every interface inside a container, loopback locally.
    pub bind: &'a str,
    /// The ports the services listen on (inside a container, the fixed defaults).
    pub listen: Ports,
    /// How the cache reaches the store, and the gateway the cache (`http://host:port`).
    pub store_addr: String,
    pub cache_addr: String,
    pub database_url: Secret,
    pub redis_url: Secret,
    /// Where the gateway reads its signing key.
    pub signing_keys_file: String,
    /// The directory holding the stack's CA certificate and each service's certificate and
    /// key, under the names [`pki`] gives them.
    pub tls_dir: String,
    /// Browser origins the gateway's HTTP door allows.
    pub cors_origins: &'a [String],
    /// Lifetime of the access tokens the gateway signs.
    pub token_ttl: Duration,
}

/// A setting that carries a password: the value itself (a local process, a container whose
/// environment only the engine's owner reads), or where an orchestrator mounts it as a file
/// (a swarm secret), which `usersvc` reads through the flag's `-file` twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    File(String),
}

impl Secret {
    /// The environment variable that carries it: `key`, or `key_FILE` for a file.
    fn env(&self, key: &'static str, file_key: &'static str) -> (&'static str, String) {
        match self {
            Self::Value(value) => (key, value.clone()),
            Self::File(path) => (file_key, path.clone()),
        }
    }
}

/// How one `usersvc` service is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub service: Service,
    /// After the `usersvc` program: the subcommand, then flags.
    pub args: Vec<String>,
    /// `USERSVC_*` settings, in a fixed order (the docker runtime hashes them).
    pub env: Vec<(&'static str, String)>,
    /// The gRPC port it listens on, which its health check asks.
    pub grpc_port: u16,
    /// The HTTP/JSON port, for the gateway.
    pub http_port: Option<u16>,
    /// The name its gRPC server's certificate is for, which a health check over mutual TLS
    /// expects; None for the gateway, whose ports are plaintext.
    pub tls_server_name: Option<&'static str>,
}

impl Launch {
    /// `KEY=value` pairs, as a container's environment is written.
    pub fn env_pairs(&self) -> Vec<String> {
        self.env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect()
    }
}

/// The three `usersvc` services, in start order.
pub fn all(wiring: &Wiring<'_>) -> Vec<Launch> {
    [Service::Store, Service::Cache, Service::Gateway]
        .into_iter()
        .filter_map(|service| launch(wiring, service))
        .collect()
}

/// How `service` starts; None for Redis and Postgres, which are not `usersvc`.
pub fn launch(wiring: &Wiring<'_>, service: Service) -> Option<Launch> {
    let listen = |port: u16| format!("{}:{port}", wiring.bind);
    let (grpc_port, http_port, mut env) = match service {
        Service::Store => (
            wiring.listen.store,
            None,
            vec![
                ("USERSVC_LISTEN", listen(wiring.listen.store)),
                wiring
                    .database_url
                    .env("USERSVC_DATABASE_URL", "USERSVC_DATABASE_URL_FILE"),
            ],
        ),
        Service::Cache => (
            wiring.listen.cache,
            None,
            vec![
                ("USERSVC_LISTEN", listen(wiring.listen.cache)),
                wiring
                    .redis_url
                    .env("USERSVC_REDIS_URL", "USERSVC_REDIS_URL_FILE"),
                ("USERSVC_STORE_ADDR", wiring.store_addr.clone()),
            ],
        ),
        Service::Gateway => (
            wiring.listen.gateway,
            Some(wiring.listen.http),
            vec![
                ("USERSVC_LISTEN", listen(wiring.listen.gateway)),
                ("USERSVC_CACHE_ADDR", wiring.cache_addr.clone()),
                // The throttle's counters, shared by every gateway replica.
                wiring
                    .redis_url
                    .env("USERSVC_REDIS_URL", "USERSVC_REDIS_URL_FILE"),
                ("USERSVC_SIGNING_KEYS", wiring.signing_keys_file.clone()),
                (
                    "USERSVC_TOKEN_TTL",
                    humantime::format_duration(wiring.token_ttl).to_string(),
                ),
                ("USERSVC_HTTP_LISTEN", listen(wiring.listen.http)),
            ],
        ),
        Service::Redis | Service::Postgres | Service::Proxy => return None,
    };
    let holder = Holder::of(service)?;
    let tls_file = |name: &str| format!("{}/{name}", wiring.tls_dir.trim_end_matches('/'));
    env.extend([
        ("USERSVC_TLS_CA", tls_file(pki::CA_CERT)),
        ("USERSVC_TLS_CERT", tls_file(holder.cert_file())),
        ("USERSVC_TLS_KEY", tls_file(holder.key_file())),
    ]);
    let mut args = vec![service.name().to_owned()];
    if service == Service::Gateway {
        // A repeatable flag: an environment variable could hold only one origin.
        for origin in wiring.cors_origins {
            args.push("--cors-origin".to_owned());
            args.push(origin.clone());
        }
    }
    Some(Launch {
        service,
        args,
        env,
        grpc_port,
        http_port,
        tls_server_name: holder.server_name(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{CACHE_PORT, STORE_PORT};

    fn wiring(origins: &[String]) -> Wiring<'_> {
        Wiring {
            bind: "0.0.0.0",
            listen: Ports::default(),
            store_addr: format!("http://store:{STORE_PORT}"),
            cache_addr: format!("http://cache:{CACHE_PORT}"),
            database_url: Secret::Value("sqlite:///data/userctl.db".into()),
            redis_url: Secret::Value("redis://:pw@redis:6379".into()),
            signing_keys_file: "/run/secrets/signing-keys.json".into(),
            tls_dir: "/run/secrets".into(),
            cors_origins: origins,
            token_ttl: Duration::from_secs(900),
        }
    }

    fn env(launch: &Launch, key: &str) -> Option<String> {
        launch
            .env
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.clone())
    }

    #[test]
    fn each_service_reaches_the_next_hop_at_the_address_it_was_given() {
        let launches = all(&wiring(&[]));
        let services: Vec<Service> = launches.iter().map(|launch| launch.service).collect();
        assert_eq!(services, [Service::Store, Service::Cache, Service::Gateway]);
        assert_eq!(
            env(&launches[1], "USERSVC_STORE_ADDR").as_deref(),
            Some("http://store:50053")
        );
        assert_eq!(
            env(&launches[2], "USERSVC_CACHE_ADDR").as_deref(),
            Some("http://cache:50052")
        );
        assert_eq!(
            env(&launches[2], "USERSVC_REDIS_URL"),
            env(&launches[1], "USERSVC_REDIS_URL"),
            "the gateway's throttle shares the cache's Redis"
        );
        assert_eq!(
            env(&launches[0], "USERSVC_LISTEN").as_deref(),
            Some("0.0.0.0:50053")
        );
    }

    #[test]
    fn only_the_gateway_serves_http_and_takes_cors_origins() {
        let origins = [
            "http://localhost:3000".to_owned(),
            "https://a.test".to_owned(),
        ];
        let launches = all(&wiring(&origins));
        assert_eq!(launches[0].args, ["store"]);
        assert_eq!(launches[1].args, ["cache"]);
        assert_eq!(
            launches[2].args,
            [
                "gateway",
                "--cors-origin",
                "http://localhost:3000",
                "--cors-origin",
                "https://a.test"
            ]
        );
        assert_eq!(launches[2].http_port, Some(8080));
        assert!(
            launches[..2]
                .iter()
                .all(|launch| launch.http_port.is_none())
        );
    }

    #[test]
    fn every_service_gets_the_ca_and_its_own_certificate_and_key() {
        for launch in all(&wiring(&[])) {
            let name = launch.service.name();
            assert_eq!(
                env(&launch, "USERSVC_TLS_CA").as_deref(),
                Some("/run/secrets/ca.crt")
            );
            assert_eq!(
                env(&launch, "USERSVC_TLS_CERT"),
                Some(format!("/run/secrets/{name}.crt"))
            );
            assert_eq!(
                env(&launch, "USERSVC_TLS_KEY"),
                Some(format!("/run/secrets/{name}.key"))
            );
            let expected = (launch.service != Service::Gateway).then_some(name);
            assert_eq!(launch.tls_server_name, expected, "{name}");
        }
    }

    #[test]
    fn redis_and_postgres_are_not_usersvc() {
        assert!(launch(&wiring(&[]), Service::Redis).is_none());
        assert!(launch(&wiring(&[]), Service::Postgres).is_none());
    }
}
