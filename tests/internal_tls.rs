//! Mutual TLS inside a real stack (`userctl up --runtime local`): the store and the cache
//! answer only callers holding a certificate from the stack's own CA, and only the right
//! holder may read or write users; the store keeps no password hash weaker than the stack's,
//! whoever sends it. The front door stays as it was.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, sync::Arc, time::Duration};

use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use userctl_proto::user::v1::{
    CreateUserRequest, ReadUserRequest, read_user_request::Key, user_store_client::UserStoreClient,
};
use userctl_tests::{
    cli::Userctl,
    e2e::{self, PASSWORD, Teardown},
    tls::{Caller, channel},
};
use usersvc::gateway::password::Passwords;

/// A local stack with one registered account, and where its services and certificates are.
struct Stack {
    userctl: Userctl,
    // Fields drop in order: `down --volumes` must run while the home it reads still exists,
    // or the stack outlives the test.
    _teardown: Teardown,
    _home: tempfile::TempDir,
    store: String,
    cache: String,
    tls_dir: PathBuf,
}

const EMAIL: &str = "ann@example.com";

async fn stack() -> Stack {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let teardown = Teardown(userctl.clone());
    userctl.run(e2e::LOCAL_UP).await.ok();
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                EMAIL,
                "--name",
                "Ann",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await
        .ok();
    let rows = e2e::status(&userctl).await;
    let address = |service| {
        e2e::row(&rows, service)["address"]
            .as_str()
            .expect("address")
            .to_owned()
    };
    Stack {
        store: address("store"),
        cache: address("cache"),
        tls_dir: userctl.project_dir().join("tls"),
        userctl,
        _teardown: teardown,
        _home: home,
    }
}

impl Stack {
    fn users(&self, service: &str, caller: &Caller) -> UserStoreClient<tonic::transport::Channel> {
        let addr = if service == "store" {
            &self.store
        } else {
            &self.cache
        };
        UserStoreClient::new(channel(addr, service, &self.tls_dir, caller))
    }
}

fn read_ann() -> ReadUserRequest {
    ReadUserRequest {
        key: Some(Key::Email(EMAIL.into())),
        session_id: String::new(),
    }
}

fn create(email: &str, password_hash: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.into(),
        full_name: "Mallory".into(),
        password_hash: password_hash.into(),
    }
}

/// A hash as the gateway itself writes them: argon2id, m=19456, t=2, p=1.
async fn strong_hash() -> String {
    Passwords::new(1, 1)
        .hash(PASSWORD.into(), None)
        .await
        .expect("hash")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_and_cache_refuse_callers_without_a_certificate_from_the_stacks_ca() {
    let stack = stack().await;
    let strong = strong_hash().await;
    let outsiders = [
        ("plaintext", Caller::Plaintext),
        ("TLS without a certificate", Caller::NoCertificate),
        (
            "a gateway certificate from another CA",
            Caller::from_another_ca("gateway"),
        ),
        (
            "a cache certificate from another CA",
            Caller::from_another_ca("cache"),
        ),
    ];
    for service in ["store", "cache"] {
        for (who, caller) in &outsiders {
            let mut users = stack.users(service, caller);
            let read = users.read_user(read_ann()).await;
            assert!(read.is_err(), "{service} answered {who}: {read:?}");
            let planted = users
                .create_user(create(&format!("{service}@evil.test"), &strong))
                .await;
            assert!(planted.is_err(), "{service} let {who} create: {planted:?}");
        }
    }

    // The stack itself works: the gateway reaches the cache, the cache the store.
    e2e::login(&stack.userctl, EMAIL).await.ok();
    let me = stack
        .userctl
        .run(&["whoami", "--output", "json"])
        .await
        .ok();
    assert!(me.stdout.contains(EMAIL), "{me:?}");
    // And nothing an outsider sent was written.
    let mut users = stack.users("cache", &Caller::holder(&stack.tls_dir, "gateway"));
    for service in ["store", "cache"] {
        let status = users
            .read_user(ReadUserRequest {
                key: Some(Key::Email(format!("{service}@evil.test"))),
                session_id: String::new(),
            })
            .await
            .expect_err("never created");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
}

enum Outcome {
    Read,
    Denied,
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_cache_reads_the_store_and_only_the_gateway_and_userctl_read_the_cache() {
    let stack = stack().await;
    let holder = |name| Caller::holder(&stack.tls_dir, name);
    // Every holder's certificate is the stack's; where it has no business, it is refused by name.
    for (service, caller, expected) in [
        ("store", "cache", Outcome::Read),
        ("store", "gateway", Outcome::Denied),
        ("store", "userctl", Outcome::Denied),
        ("cache", "gateway", Outcome::Read),
        ("cache", "userctl", Outcome::Read),
        ("cache", "store", Outcome::Denied),
    ] {
        let result = stack
            .users(service, &holder(caller))
            .read_user(read_ann())
            .await;
        match (expected, result) {
            (Outcome::Read, Ok(user)) => assert_eq!(user.into_inner().email, EMAIL),
            (Outcome::Denied, Err(status)) if status.code() == Code::PermissionDenied => {}
            (_, other) => panic!("{caller} → {service}: {other:?}"),
        }
    }
    // Health stays open to every certificate of the stack: the dashboard and `status` use it.
    for service in ["store", "cache"] {
        let addr = if service == "store" {
            &stack.store
        } else {
            &stack.cache
        };
        let mut health =
            HealthClient::new(channel(addr, service, &stack.tls_dir, &holder("userctl")));
        health
            .check(HealthCheckRequest::default())
            .await
            .unwrap_or_else(|status| panic!("{service} health: {status:?}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_weak_password_hashes_even_from_the_cache() {
    let stack = stack().await;
    let mut store = stack.users("store", &Caller::holder(&stack.tls_dir, "cache"));
    for (what, hash) in [
        (
            "argon2id m=8,t=1,p=1",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ),
        (
            "bcrypt",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ),
        ("a bare word", "x"),
    ] {
        let status = store
            .create_user(create("weak@example.com", hash))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("password_hash"),
            "{what}: {status:?}"
        );
    }
    store
        .create_user(create("strong@example.com", &strong_hash().await))
        .await
        .expect("a hash as strong as the stack's is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stacks_keys_are_private_never_printed_and_forgotten_by_down_volumes() {
    let stack = stack().await;
    let dir_mode = std::fs::metadata(&stack.tls_dir)
        .expect("tls dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&stack.tls_dir).expect("tls dir") {
        let entry = entry.expect("entry");
        let mode = entry.metadata().expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", entry.path().display());
        files += 1;
    }
    assert_eq!(
        files, 10,
        "the CA and four holders, a certificate and a key each"
    );

    let config = stack
        .userctl
        .run(&["config", "--output", "json"])
        .await
        .ok();
    let status = stack.userctl.run(&["status"]).await.ok();
    for run in [&config, &status] {
        assert!(
            !run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"),
            "{run:?}"
        );
    }
    let logs = stack.userctl.run(&["logs"]).await.ok();
    assert!(!logs.stdout.contains("PRIVATE KEY"), "keys in the logs");

    let down = stack.userctl.run(&["down", "--volumes"]).await.ok();
    assert!(down.stdout.contains("CA and certificates"), "{down:?}");
    assert!(!stack.tls_dir.exists(), "the certificates are gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_finishes_its_tls_handshake_and_then_says_nothing_is_dropped() {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
    use tokio::io::AsyncReadExt as _;
    use tokio_rustls::{TlsConnector, rustls};

    let stack = stack().await;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(stack.tls_dir.join("ca.crt")).expect("ca") {
        roots.add(ca.expect("ca")).expect("trusted");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(stack.tls_dir.join("cache.crt"))
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert");
    let key = PrivateKeyDer::from_pem_file(stack.tls_dir.join("cache.key")).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];

    let addr = stack.store.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("store").expect("name"), tcp)
        .await
        .expect("the handshake completes with the stack's certificate");
    // The server speaks first (its HTTP/2 settings); the caller never sends its preface.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 256];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent caller still holds its connection after 30 s (the deadline is 10 s)"
    );
}
