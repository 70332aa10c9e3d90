//! Hostile clients: a table of bad inputs through every entry point (the public gateway and the
//! private `UserStore` of cache and store), malformed bytes on the wire, brute force, account
//! enumeration by timing, and secrets in logs and files.
//!
//! Token attacks (alg none, wrong key, bad claims, tampering, ghost accounts) are in tokens.rs;
//! duplicate and invalid registrations in accounts.rs.

use std::{
    future::Future,
    num::NonZeroU32,
    os::unix::fs::PermissionsExt as _,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf as _, BufMut as _};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::Channel,
};
use tonic_types::StatusExt as _;
use userctl_proto::{
    cache::v1::{WatchStatsRequest, cache_stats_client::CacheStatsClient},
    gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest, gateway_client::GatewayClient},
    user::v1::{CreateUserRequest, ReadUserRequest, read_user_request::Key},
};
use userctl_tests::{
    cli::Userctl,
    database::TestDatabase,
    e2e::Teardown,
    load::{Load, Summary, bearer, median, whoami},
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const PASSWORD: &str = "correct horse battery staple";
/// What any attacker sees for a wrong password or an unknown email.
const BAD_CREDENTIALS: &str = "invalid email or password";
/// Largest request any service accepts (services/src/server.rs).
const CAP: usize = usersvc::server::MAX_REQUEST_BYTES;

/// Text that would betray how the services are built, where their files are, or a secret.
const LEAKS: &[&str] = &[
    "sqlx",
    "select ",
    "insert ",
    "postgres",
    "sqlite",
    "redis",
    "$argon2",
    "panick",
    ".rs:",
    "/tmp/",
    "/work/",
    "/home/",
    "/usr/",
    "backtrace",
    "jwt.key",
];

#[track_caller]
fn assert_no_leak(what: &str, status: &Status) {
    let text = format!(
        "{} {}",
        status.message(),
        String::from_utf8_lossy(status.details())
    )
    .to_lowercase();
    for leak in LEAKS {
        assert!(
            !text.contains(leak),
            "{what}: the answer mentions {leak:?}: {status:?}"
        );
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// Budgets so large that the throttle never interferes.
fn unthrottled() -> StackOptions {
    StackOptions {
        failed_logins_per_account: nz(1_000_000),
        failed_logins_per_peer: nz(1_000_000),
        ..StackOptions::default()
    }
}

fn register(email: &str, full_name: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.into(),
        full_name: full_name.into(),
        password: password.into(),
    }
}

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: password.into(),
    }
}

fn create(email: &str, full_name: &str, password_hash: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.into(),
        full_name: full_name.into(),
        password_hash: password_hash.into(),
    }
}

fn read(key: Key) -> ReadUserRequest {
    ReadUserRequest { key: Some(key) }
}

/// A WhoAmI with these raw `authorization` values (none, one, or repeated).
fn whoami_with(values: &[AsciiMetadataValue]) -> Request<WhoAmIRequest> {
    let mut request = Request::new(WhoAmIRequest {});
    for value in values {
        request
            .metadata_mut()
            .append("authorization", value.clone());
    }
    request
}

fn ascii(value: &str) -> AsciiMetadataValue {
    value.parse().expect("visible ASCII")
}

type Outcome = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// One row of the table: what is sent where, and the status the contract promises.
struct Case {
    name: String,
    expect: Code,
    call: Outcome,
}

/// `case!(name, expected code, client, method(request))`: the call runs later, in table order.
macro_rules! case {
    ($name:expr, $expect:expr, $client:expr, $method:ident($request:expr) $(,)?) => {{
        let mut client = $client;
        let request = $request;
        Case {
            name: $name.into(),
            expect: $expect,
            call: Box::pin(async move { client.$method(request).await.map(drop) }),
        }
    }};
}

/// Runs every case, then prints and asserts: each got its status and leaked nothing.
async fn run_table(cases: Vec<Case>) {
    let total = cases.len();
    let mut wrong = Vec::new();
    for Case { name, expect, call } in cases {
        let result = call.await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        if let Err(status) = &result {
            assert_no_leak(&name, status);
        }
        if code != expect {
            wrong.push(format!("{name}: expected {expect:?}, got {result:?}"));
        }
    }
    println!(
        "{total} hostile cases, {} answered off-contract",
        wrong.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// An email of exactly `len` bytes that is otherwise valid.
fn email_of(len: usize) -> String {
    let domain_len = len - 64 - 1;
    format!("{}@{}.com", "a".repeat(64), "b".repeat(domain_len - 4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_entry_point_answers_bad_input_with_its_documented_status() {
    let db = TestDatabase::postgres().await;
    let redis = RedisServer::start().await;
    let stack = TestStack::start_with(&db, &redis, unthrottled()).await;
    let gateway = stack.gateway().await;
    let ok_token = {
        let mut gateway = gateway.clone();
        gateway
            .register(register("owner@example.com", "Owner", PASSWORD))
            .await
            .expect("register");
        gateway
            .login(login("owner@example.com", PASSWORD))
            .await
            .expect("login")
            .into_inner()
            .access_token
    };
    let g = || gateway.clone();
    let big = |n: usize| "x".repeat(n);
    use Code::{InvalidArgument as Invalid, OutOfRange, Unauthenticated};
    const OK: Code = Code::Ok;

    let mut cases = vec![
        // Register: empty, at and past every cap, control characters.
        case!(
            "register: all empty",
            Invalid,
            g(),
            register(register("", "", ""))
        ),
        case!(
            "register: blank email",
            Invalid,
            g(),
            register(register(" \t ", "N", PASSWORD)),
        ),
        case!(
            "register: email of 254 bytes (the cap)",
            OK,
            g(),
            register(register(&email_of(254), "N", PASSWORD)),
        ),
        case!(
            "register: email of 255 bytes",
            Invalid,
            g(),
            register(register(&email_of(255), "N", PASSWORD)),
        ),
        case!(
            // 'İ' is 2 bytes and lower-cases to 3: the cap applies to what is stored.
            "register: email over the cap only once lower-cased",
            Invalid,
            g(),
            register(register(
                &format!("a@{}.com", "İ".repeat(84)),
                "N",
                PASSWORD
            )),
        ),
        case!(
            "register: local part of 65 bytes",
            Invalid,
            g(),
            register(register(
                &format!("{}@example.com", "a".repeat(65)),
                "N",
                PASSWORD,
            )),
        ),
        case!(
            "register: email with NUL",
            Invalid,
            g(),
            register(register("a\0b@example.com", "N", PASSWORD)),
        ),
        case!(
            "register: email with CR LF",
            Invalid,
            g(),
            register(register("a\r\nb@example.com", "N", PASSWORD)),
        ),
        case!(
            "register: email with BEL",
            Invalid,
            g(),
            register(register("a\u{7}@example.com", "N", PASSWORD)),
        ),
        case!(
            "register: two @",
            Invalid,
            g(),
            register(register("a@b@example.com", "N", PASSWORD)),
        ),
        case!(
            "register: name of 100 characters (the cap)",
            OK,
            g(),
            register(register("name100@example.com", &big(100), PASSWORD)),
        ),
        case!(
            // 100 characters of 4 bytes each: the store must take what the gateway accepts.
            "register: name of 100 four-byte characters",
            OK,
            g(),
            register(register("emoji@example.com", &"😀".repeat(100), PASSWORD)),
        ),
        case!(
            "register: name of 101 characters",
            Invalid,
            g(),
            register(register("name101@example.com", &big(101), PASSWORD)),
        ),
        case!(
            "register: name of 60 KiB (under the request cap)",
            Invalid,
            g(),
            register(register("big@example.com", &big(60 * 1024), PASSWORD)),
        ),
        case!(
            "register: request over the 64 KiB cap",
            OutOfRange,
            g(),
            register(register("huge@example.com", &big(CAP + 1), PASSWORD)),
        ),
        case!(
            "register: name with a newline",
            Invalid,
            g(),
            register(register("nl@example.com", "Ann\nLee", PASSWORD)),
        ),
        case!(
            "register: name with NUL",
            Invalid,
            g(),
            register(register("nul@example.com", "Ann\0", PASSWORD)),
        ),
        case!(
            "register: name with an ANSI escape",
            Invalid,
            g(),
            register(register("esc@example.com", "\u{1b}[31mAnn", PASSWORD)),
        ),
        case!(
            "register: password of 7 characters",
            Invalid,
            g(),
            register(register("p7@example.com", "N", "1234567")),
        ),
        case!(
            "register: password of 129 characters",
            Invalid,
            g(),
            register(register("p129@example.com", "N", &big(129))),
        ),
        case!(
            "register: password of 60 KiB",
            Invalid,
            g(),
            register(register("p60k@example.com", "N", &big(60 * 1024))),
        ),
        case!(
            "register: password with NUL",
            Invalid,
            g(),
            register(register("pnul@example.com", "N", "password\0password")),
        ),
        // SQL metacharacters are data: stored verbatim, no error.
        case!(
            "register: SQL in the email",
            OK,
            g(),
            register(register(
                "x';drop/**/table/**/users;--@example.com",
                "N",
                PASSWORD,
            )),
        ),
        case!(
            "register: SQL in the name",
            OK,
            g(),
            register(register(
                "bobby@example.com",
                "Robert'); DROP TABLE users;-- %_\\ $1",
                PASSWORD,
            )),
        ),
        // Login: shape only.
        case!("login: all empty", Invalid, g(), login(login("", ""))),
        case!(
            "login: email of 255 bytes",
            Invalid,
            g(),
            login(login(&email_of(255), PASSWORD)),
        ),
        case!(
            "login: password of 129 characters",
            Invalid,
            g(),
            login(login("owner@example.com", &big(129))),
        ),
        case!(
            "login: password of 60 KiB",
            Invalid,
            g(),
            login(login("owner@example.com", &big(60 * 1024))),
        ),
        case!(
            "login: request over the 64 KiB cap",
            OutOfRange,
            g(),
            login(login("owner@example.com", &big(CAP + 1))),
        ),
        case!(
            "login: email with NUL",
            Invalid,
            g(),
            login(login("owner\0@example.com", PASSWORD)),
        ),
        case!(
            "login: email with a newline",
            Invalid,
            g(),
            login(login("owner@example.com\nx", PASSWORD)),
        ),
        case!(
            "login: SQL injection in the email",
            Unauthenticated,
            g(),
            login(login("' OR '1'='1' --", PASSWORD)),
        ),
        case!(
            "login: SQL injection in the password",
            Unauthenticated,
            g(),
            login(login("owner@example.com", "' OR '1'='1' --")),
        ),
        // WhoAmI: malformed authorization metadata.
        case!(
            "whoami: no metadata",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[])),
        ),
        case!(
            "whoami: empty authorization",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[ascii("")])),
        ),
        case!(
            "whoami: tab instead of a space",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[ascii(&format!("Bearer\t{ok_token}"))])),
        ),
        case!(
            "whoami: four dots",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[ascii("Bearer ....")])),
        ),
        case!(
            "whoami: a JWT of 10,000 segments",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[ascii(&format!(
                "Bearer {}",
                "a.".repeat(5_000)
            ))])),
        ),
        case!(
            "whoami: 12 KiB of token",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[ascii(&format!("Bearer {}", big(12 * 1024)))])),
        ),
        case!(
            "whoami: non-ASCII bytes",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[MetadataValue::try_from(
                &b"Bearer \xff\xfe\x80"[..]
            )
            .expect("obs-text value")])),
        ),
        case!(
            "whoami: a bad value before a good one",
            Unauthenticated,
            g(),
            who_am_i(whoami_with(&[
                ascii("Basic Zm9vOmJhcg=="),
                ascii(&format!("Bearer {ok_token}")),
            ])),
        ),
        case!(
            "whoami: the token in a binary header",
            Unauthenticated,
            g(),
            who_am_i({
                let mut request = Request::new(WhoAmIRequest {});
                request.metadata_mut().insert_bin(
                    "authorization-bin",
                    MetadataValue::from_bytes(format!("Bearer {ok_token}").as_bytes()),
                );
                request
            }),
        ),
        case!(
            "whoami: extra spaces around a good token",
            OK,
            g(),
            who_am_i(whoami_with(&[ascii(&format!("Bearer   {ok_token}  "))])),
        ),
    ];

    // The private interface, on the cache and on the store alike.
    for (layer, client) in [
        ("cache", stack.cache().await),
        ("store", stack.store().await),
    ] {
        let c = || client.clone();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        cases.extend([
            case!(
                format!("{layer} create: all empty"),
                Invalid,
                c(),
                create_user(create("", "", "")),
            ),
            case!(
                format!("{layer} create: email of 255 bytes"),
                Invalid,
                c(),
                create_user(create(&email_of(255), "N", hash)),
            ),
            case!(
                format!("{layer} create: not an argon2id hash"),
                Invalid,
                c(),
                create_user(create(
                    &format!("plain-{layer}@example.com"),
                    "N",
                    "hunter2"
                )),
            ),
            case!(
                format!("{layer} create: NUL in the email"),
                Invalid,
                c(),
                create_user(create(&format!("a\0{layer}@example.com"), "N", hash)),
            ),
            case!(
                format!("{layer} create: NUL in the name"),
                Invalid,
                c(),
                create_user(create(&format!("nul-{layer}@example.com"), "A\0B", hash)),
            ),
            case!(
                format!("{layer} create: NUL in the hash"),
                Invalid,
                c(),
                create_user(create(
                    &format!("nulhash-{layer}@example.com"),
                    "N",
                    &format!("{hash}\0"),
                )),
            ),
            case!(
                format!("{layer} create: request over the 64 KiB cap"),
                OutOfRange,
                c(),
                create_user(create(&format!("big-{layer}@example.com"), &big(CAP), hash)),
            ),
            case!(
                format!("{layer} create: SQL in every field"),
                OK,
                c(),
                create_user(create(
                    &format!("';delete/**/from/**/users;--{layer}@example.com"),
                    "'); DELETE FROM users; --",
                    &format!("{hash}'--"),
                )),
            ),
            case!(
                format!("{layer} read: no key"),
                Invalid,
                c(),
                read_user(ReadUserRequest { key: None })
            ),
            case!(
                format!("{layer} read: id 0"),
                Code::NotFound,
                c(),
                read_user(read(Key::Id(0)))
            ),
            case!(
                format!("{layer} read: id -1"),
                Code::NotFound,
                c(),
                read_user(read(Key::Id(-1)))
            ),
            case!(
                format!("{layer} read: id i64::MAX"),
                Code::NotFound,
                c(),
                read_user(read(Key::Id(i64::MAX))),
            ),
            case!(
                format!("{layer} read: empty email"),
                Code::NotFound,
                c(),
                read_user(read(Key::Email(String::new()))),
            ),
            case!(
                format!("{layer} read: email of 60 KiB"),
                Code::NotFound,
                c(),
                read_user(read(Key::Email(big(60 * 1024)))),
            ),
            case!(
                format!("{layer} read: email with NUL"),
                Code::NotFound,
                c(),
                read_user(read(Key::Email("owner\0@example.com".into()))),
            ),
            case!(
                format!("{layer} read: SQL injection"),
                Code::NotFound,
                c(),
                read_user(read(Key::Email("' OR 1=1 --".into()))),
            ),
            case!(
                format!("{layer} read: Redis glob characters"),
                Code::NotFound,
                c(),
                read_user(read(Key::Email("*".into()))),
            ),
            case!(
                format!("{layer} read: a RESP command smuggled in CR LF"),
                Code::NotFound,
                c(),
                read_user(read(Key::Email("x\r\nFLUSHALL\r\n".into()))),
            ),
        ]);
    }
    // CacheStats and health take no user input worth the name, but must not break on extremes.
    let stats = CacheStatsClient::new(
        Channel::from_shared(stack.cache_addr.clone())
            .expect("address")
            .connect()
            .await
            .expect("connect"),
    );
    for interval_ms in [0, 1, u32::MAX] {
        let mut stats = stats.clone();
        cases.push(Case {
            name: format!("watch stats every {interval_ms} ms"),
            expect: OK,
            call: Box::pin(async move {
                let mut stream = stats
                    .watch_stats(WatchStatsRequest { interval_ms })
                    .await?
                    .into_inner();
                stream
                    .message()
                    .await?
                    .map(drop)
                    .ok_or_else(|| Status::aborted("no message"))
            }),
        });
    }
    run_table(cases).await;

    // SQL metacharacters came back verbatim, and the table they named is still there.
    let mut gateway = gateway.clone();
    let token = gateway
        .login(login("bobby@example.com", PASSWORD))
        .await
        .expect("SQL-named account logs in")
        .into_inner()
        .access_token;
    let me = gateway
        .who_am_i(bearer(WhoAmIRequest {}, &token))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.full_name, "Robert'); DROP TABLE users;-- %_\\ $1");
    gateway
        .login(login("x';drop/**/table/**/users;--@example.com", PASSWORD))
        .await
        .expect("SQL-shaped email logs in");
    let emoji = gateway
        .login(login("emoji@example.com", PASSWORD))
        .await
        .expect("four-byte name logs in")
        .into_inner()
        .access_token;
    let me = gateway
        .who_am_i(bearer(WhoAmIRequest {}, &emoji))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.full_name, "😀".repeat(100));
    // Nothing was flushed by the smuggled command: the owner's cached entry still hits.
    let before = stack.stats().await.hits;
    gateway
        .who_am_i(bearer(WhoAmIRequest {}, &ok_token))
        .await
        .expect("owner still there");
    assert_eq!(
        stack.stats().await.hits,
        before + 1,
        "the cache was not flushed"
    );
    assert!(db.emails().await.len() >= 6);
}

/// Protobuf bytes as they are, in both directions: lets a test put on the wire what no
/// generated client would (invalid UTF-8 in a string, truncated fields, wrong wire types).
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 128, "one-byte length");
    let mut out = vec![(number << 3) | 2, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

async fn raw_call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(addr.to_owned())
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn bytes_that_are_not_a_valid_message_are_refused_and_the_service_keeps_serving() {
    // A message that does not parse never reaches our code: tonic answers INTERNAL, which is
    // what gRPC's status-code guide prescribes for "error parsing request proto". The contract
    // checked here is that it is refused, says nothing about the service, and breaks nothing.
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let invalid_utf8: &[u8] = b"ann\xff\xfe@example.com";
    let register = "/userctl.gateway.v1.Gateway/Register";
    let create = "/userctl.user.v1.UserStore/CreateUser";
    let read = "/userctl.user.v1.UserStore/ReadUser";
    let cases: Vec<(&str, &str, &'static str, Vec<u8>, Code)> = vec![
        (
            "register: invalid UTF-8 email",
            &stack.gateway_addr,
            register,
            [
                field(1, invalid_utf8),
                field(2, b"N"),
                field(3, PASSWORD.as_bytes()),
            ]
            .concat(),
            Code::Internal,
        ),
        (
            "register: invalid UTF-8 password",
            &stack.gateway_addr,
            register,
            [
                field(1, b"u@example.com"),
                field(2, b"N"),
                field(3, b"\xc3\x28pass1234"),
            ]
            .concat(),
            Code::Internal,
        ),
        (
            "register: truncated field",
            &stack.gateway_addr,
            register,
            vec![0x0a, 0x7f, b'a'],
            Code::Internal,
        ),
        (
            "register: a string field sent as a varint",
            &stack.gateway_addr,
            register,
            vec![0x08, 0x01],
            Code::Internal,
        ),
        (
            "register: unknown fields only (parses as empty)",
            &stack.gateway_addr,
            register,
            field(15, b"ignored"),
            Code::InvalidArgument,
        ),
        (
            "login: invalid UTF-8 email",
            &stack.gateway_addr,
            "/userctl.gateway.v1.Gateway/Login",
            [field(1, invalid_utf8), field(2, PASSWORD.as_bytes())].concat(),
            Code::Internal,
        ),
        (
            "gateway: a method that does not exist",
            &stack.gateway_addr,
            "/userctl.gateway.v1.Gateway/DropUsers",
            Vec::new(),
            Code::Unimplemented,
        ),
        (
            "cache create: invalid UTF-8 name",
            &stack.cache_addr,
            create,
            [
                field(1, b"c@example.com"),
                field(2, b"\xff"),
                field(3, b"$argon2id$x"),
            ]
            .concat(),
            Code::Internal,
        ),
        (
            "cache read: invalid UTF-8 email",
            &stack.cache_addr,
            read,
            field(2, invalid_utf8),
            Code::Internal,
        ),
        (
            "store create: invalid UTF-8 email",
            &stack.store_addr,
            create,
            [
                field(1, invalid_utf8),
                field(2, b"N"),
                field(3, b"$argon2id$x"),
            ]
            .concat(),
            Code::Internal,
        ),
        (
            "store read: invalid UTF-8 email",
            &stack.store_addr,
            read,
            field(2, invalid_utf8),
            Code::Internal,
        ),
    ];
    let total = cases.len();
    for (name, addr, path, body, expect) in cases {
        let status = raw_call(addr, path, body).await.expect_err(name);
        assert_eq!(status.code(), expect, "{name}: {status:?}");
        assert_no_leak(name, &status);
    }
    assert!(db.emails().await.is_empty(), "nothing was written");
    // Everyone still serves.
    let mut gateway = stack.gateway().await;
    gateway
        .register(register_ok("after@example.com"))
        .await
        .expect("the gateway still serves");
    println!("{total} malformed messages refused; services still serving");
}

fn register_ok(email: &str) -> RegisterRequest {
    register(email, "After", PASSWORD)
}

#[tokio::test]
async fn oversized_metadata_is_refused_without_harm() {
    // Header lists over the server's HTTP/2 limit (16 KiB, hyper's default) never reach the
    // service: the server refuses them at the HTTP/2 layer, a little over with HTTP 431 (which
    // tonic reports as UNKNOWN), far over by closing that one connection with a GOAWAY (which
    // the client's transport reports as RESOURCE_EXHAUSTED or INTERNAL). What is promised: no
    // answer from the service at all, and no harm to anyone else's connection.
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut bystander = stack.gateway().await;
    bystander
        .register(register_ok("bystander@example.com"))
        .await
        .expect("register");
    let mut outcomes = Vec::new();
    for (name, request) in [
        ("a 17 KiB authorization value", {
            whoami_with(&[ascii(&format!("Bearer {}", "x".repeat(17 * 1024)))])
        }),
        ("a 64 KiB authorization value", {
            whoami_with(&[ascii(&format!("Bearer {}", "x".repeat(64 * 1024)))])
        }),
        ("200 headers of 1 KiB", {
            let mut request = whoami_with(&[ascii("Bearer x")]);
            for i in 0..200 {
                request.metadata_mut().insert(
                    format!("x-junk-{i}")
                        .parse::<tonic::metadata::MetadataKey<_>>()
                        .expect("key"),
                    ascii(&"y".repeat(1024)),
                );
            }
            request
        }),
    ] {
        // A connection of its own: the server closes it.
        let status = stack
            .gateway()
            .await
            .who_am_i(request)
            .await
            .expect_err(name);
        assert_no_leak(name, &status);
        let http_431 =
            status.code() == Code::Unknown && status.message().contains("HTTP status code 431");
        let goaway = std::error::Error::source(&status).is_some()
            && matches!(status.code(), Code::Internal | Code::ResourceExhausted);
        assert!(
            http_431 || goaway,
            "{name}: refused at the HTTP/2 layer, not answered by the service: {status:?}"
        );
        outcomes.push(format!("{name}: {:?}", status.code()));
        bystander
            .login(login("bystander@example.com", PASSWORD))
            .await
            .expect("another connection is unaffected");
    }
    println!("{}", outcomes.join("; "));
}

/// Logs in with `password` until RESOURCE_EXHAUSTED or `limit` attempts; returns the attempt
/// (1-based) that was refused, and the status.
async fn fail_until_throttled(
    gateway: &mut GatewayClient<Channel>,
    email: impl Fn(usize) -> String,
    password: &str,
    limit: usize,
) -> (usize, Status) {
    for attempt in 1..=limit {
        let status = gateway
            .login(login(&email(attempt), password))
            .await
            .expect_err("wrong credentials");
        match status.code() {
            Code::Unauthenticated => assert_eq!(status.message(), BAD_CREDENTIALS),
            Code::ResourceExhausted => return (attempt, status),
            _ => panic!("attempt {attempt}: {status:?}"),
        }
    }
    panic!("not throttled after {limit} failed logins");
}

#[track_caller]
fn assert_retry_info(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay >= Duration::from_secs(1) && delay <= Duration::from_secs(60),
        "{delay:?}"
    );
    assert!(
        status
            .message()
            .starts_with("too many failed logins; retry in"),
        "{status:?}"
    );
    delay
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_with_retry_information() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions::default();
    let budget = options.failed_logins_per_account.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    for email in ["victim@example.com", "bystander@example.com"] {
        gateway
            .register(register(email, "N", PASSWORD))
            .await
            .expect("register");
    }

    let (refused_at, status) = fail_until_throttled(
        &mut gateway,
        |_| "victim@example.com".into(),
        "not the password",
        budget + 5,
    )
    .await;
    let delay = assert_retry_info(&status);
    assert!(
        (budget..=budget + 2).contains(&refused_at),
        "refused at attempt {refused_at} with a budget of {budget}"
    );
    // Locked means locked: the right password is refused too (and costs no hashing).
    let status = gateway
        .login(login("VICTIM@example.com", PASSWORD))
        .await
        .expect_err("locked account");
    assert_retry_info(&status);
    // Another account from the same peer is not affected.
    gateway
        .login(login("bystander@example.com", PASSWORD))
        .await
        .expect("other accounts log in");
    println!(
        "account budget {budget}: attempt {refused_at} refused with RESOURCE_EXHAUSTED, retry in {delay:?}"
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_peer_across_accounts() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions {
        failed_logins_per_account: nz(1_000),
        failed_logins_per_peer: nz(10),
        ..StackOptions::default()
    };
    let budget = options.failed_logins_per_peer.get() as usize;
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(register("real@example.com", "N", PASSWORD))
        .await
        .expect("register");

    let (refused_at, status) = fail_until_throttled(
        &mut gateway,
        |i| format!("guess{i}@example.com"),
        PASSWORD,
        budget + 5,
    )
    .await;
    let delay = assert_retry_info(&status);
    assert!(
        (budget..=budget + 2).contains(&refused_at),
        "refused at attempt {refused_at} with a budget of {budget}"
    );
    // The peer is locked, whatever account it tries next.
    let status = gateway
        .login(login("real@example.com", PASSWORD))
        .await
        .expect_err("locked peer");
    assert_retry_info(&status);
    println!(
        "peer budget {budget}: attempt {refused_at} (each a different email) refused, retry in {delay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_does_not_starve_whoami() {
    // Throttling off, so every flooding login does a full argon2 verification: the worst case
    // for the gateway's CPU. WhoAmI needs no password work and must stay quick.
    const FLOODERS: usize = 16;
    const CALLS: usize = 400;
    // On top of the same-run quiet p99: what two argon2 threads on two cores (the hashing
    // pool's size here) cost a request that needs a few hundred microseconds of CPU, with
    // headroom for a busy machine. A starved whoami would instead queue behind the hashing,
    // as long as a flooding login waits (printed: around a second here).
    const MARGIN: Duration = Duration::from_millis(250);
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start_with(&db, &redis, unthrottled()).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(register("reader@example.com", "N", PASSWORD))
        .await
        .expect("register");
    let token: Arc<str> = gateway
        .login(login("reader@example.com", PASSWORD))
        .await
        .expect("login")
        .into_inner()
        .access_token
        .into();
    let whoami_load = || {
        let (gateway, token) = (gateway.clone(), token.clone());
        Load::start(2, CALLS, move |_| {
            let (mut gateway, token) = (gateway.clone(), token.clone());
            async move {
                gateway
                    .who_am_i(whoami(&token, Duration::from_secs(10)))
                    .await
                    .map(drop)
            }
        })
    };

    let quiet = whoami_load();
    quiet.wait_for_calls(CALLS, Duration::from_secs(30)).await;
    let quiet = Summary::of(&quiet.stop().await);

    let flood = Load::start(FLOODERS, 100_000, {
        let gateway = gateway.clone();
        move |n| {
            let mut gateway = gateway.clone();
            async move {
                let status = gateway
                    .login(login(
                        &format!("reader{}@example.com", n % 3),
                        "wrong password",
                    ))
                    .await
                    .expect_err("wrong password");
                if status.code() == Code::Unauthenticated {
                    Ok(())
                } else {
                    Err(status)
                }
            }
        }
    });
    // Let the flood fill the hashing pool before measuring.
    flood
        .wait_for_calls(FLOODERS, Duration::from_secs(30))
        .await;
    let flooded_started = Instant::now();
    let flooded = whoami_load();
    flooded.wait_for_calls(CALLS, Duration::from_secs(60)).await;
    let flooded_calls = flooded.stop().await;
    let flood_seconds = flooded_started.elapsed().as_secs_f64();
    let flood_calls = flood.stop().await;
    let flooded = Summary::of(&flooded_calls);
    let logins = Summary::of(&flood_calls);

    println!("whoami, quiet:          {quiet}");
    println!("whoami, during flood:   {flooded}");
    println!(
        "flood: {FLOODERS} clients, {logins} ({:.0} wrong-password logins/s while whoami was measured)",
        flood_calls
            .iter()
            .filter(|c| c.started >= flooded_started)
            .count() as f64
            / flood_seconds
    );
    assert_eq!(
        logins.failures, 0,
        "every flooding login got UNAUTHENTICATED"
    );
    assert_eq!(quiet.failures + flooded.failures, 0);
    assert_eq!(flooded.calls, CALLS, "whoami kept being served");
    let bound = quiet.p99 + MARGIN;
    assert!(
        flooded.p99 <= bound,
        "whoami p99 during the flood {:?} exceeds the quiet p99 {:?} + {MARGIN:?}",
        flooded.p99,
        quiet.p99
    );
}

/// Medians of `samples` interleaved logins of each kind, and every distinct answer seen.
async fn login_medians(
    gateway: &mut GatewayClient<Channel>,
    samples: usize,
    mut before_each: impl AsyncFnMut(bool),
    request: impl Fn(usize, bool) -> LoginRequest,
) -> (Duration, Duration, std::collections::BTreeSet<String>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut answers = std::collections::BTreeSet::new();
    for i in 0..samples * 2 {
        let is_first = i % 2 == 0;
        before_each(is_first).await;
        let request = request(i, is_first);
        let started = Instant::now();
        let status = gateway.login(request).await.expect_err("refused");
        let took = started.elapsed();
        answers.insert(format!(
            "{:?} {:?} {:?}",
            status.code(),
            status.message(),
            status.details()
        ));
        if is_first { &mut first } else { &mut second }.push(took);
    }
    (median(&first), median(&second), answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    // Samples of each kind interleaved, so a change of machine load hits both alike; compared
    // in like cache states. Cold: a never-seen unknown email against the known account just
    // evicted from the cache (both read the store). Warm: one unknown email again and again
    // (a cached "no such user") against the cached known account. Tolerance: 5 ms plus 20% of
    // the larger median; both are one argon2 verification (tens of ms), and skipping it for
    // unknown emails would differ by all of it.
    const SAMPLES: usize = 20;
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let options = StackOptions {
        negative_ttl: Duration::from_secs(300),
        ..unthrottled()
    };
    let stack = TestStack::start_with(&db, &redis, options).await;
    let mut gateway = stack.gateway().await;
    let known = gateway
        .register(register("known@example.com", "N", PASSWORD))
        .await
        .expect("register")
        .into_inner();
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let known_keys = [
        format!("userctl:v1:user:id:{}", known.id),
        "userctl:v1:user:email:known@example.com".to_owned(),
    ];
    let wrong_password = || login("known@example.com", "wrong password");

    let (cold_unknown, cold_known, cold_answers) = login_medians(
        &mut gateway,
        SAMPLES,
        async |is_unknown| {
            if !is_unknown {
                let _: () = redis::AsyncCommands::del(&mut conn, &known_keys)
                    .await
                    .expect("evict");
            }
        },
        |i, is_unknown| {
            if is_unknown {
                login(&format!("cold{i}@example.com"), PASSWORD)
            } else {
                wrong_password()
            }
        },
    )
    .await;
    let (warm_unknown, warm_known, warm_answers) = login_medians(
        &mut gateway,
        SAMPLES,
        async |_| {},
        |_, is_unknown| {
            if is_unknown {
                login("warm@example.com", PASSWORD)
            } else {
                wrong_password()
            }
        },
    )
    .await;

    let tolerance = |a: Duration, b: Duration| Duration::from_millis(5) + a.max(b) / 5;
    println!(
        "median login, cold: unknown email {cold_unknown:?}, wrong password {cold_known:?} (tolerance {:?})",
        tolerance(cold_unknown, cold_known)
    );
    println!(
        "median login, warm: unknown email {warm_unknown:?}, wrong password {warm_known:?} (tolerance {:?})",
        tolerance(warm_unknown, warm_known)
    );
    println!(
        "not asserted: a first probe of an unknown email (cold) against a recently active \
         account (warm) differs by one store read: {:+.1} ms here",
        (cold_unknown.as_secs_f64() - warm_known.as_secs_f64()) * 1e3
    );
    let answers: std::collections::BTreeSet<_> = cold_answers.union(&warm_answers).collect();
    assert_eq!(answers.len(), 1, "one answer for both: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|answer| answer.starts_with("Unauthenticated \"invalid email or password\"")),
        "{answers:?}"
    );
    for (state, unknown, known) in [
        ("cold", cold_unknown, cold_known),
        ("warm", warm_unknown, warm_known),
    ] {
        assert!(
            unknown.abs_diff(known) <= tolerance(unknown, known),
            "{state}: timing tells them apart: {unknown:?} vs {known:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_and_their_files_are_private() {
    // The real thing: `userctl up --runtime local` starts supervised usersvc processes that log
    // to files, at debug level for our own code; then the account commands run as a user's.
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let run = |args: &[&str], stdin: &str| {
        let mut command = userctl.command(args);
        command.env("RUST_LOG", "info,usersvc=trace");
        let stdin = stdin.to_owned();
        async move {
            let run = userctl_tests::cli::run_command(command, &stdin).await;
            (Some(run.code), format!("{}{}", run.stdout, run.stderr))
        }
    };
    let password = "Sup3r-secret-passphrase!";
    let wrong = "An0ther-secret-guess!";
    let mut printed = String::new();
    let mut expect = |(code, output): (Option<i32>, String), want: i32| {
        assert_eq!(code, Some(want), "{output}");
        printed.push_str(&output);
    };
    expect(run(userctl_tests::e2e::LOCAL_UP, "").await, 0);
    let email = ["--email", "sec@example.com"];
    let register_args = [
        &["register", "--name", "Sec", "--password-stdin"][..],
        &email,
    ]
    .concat();
    let login_args = [&["login", "--password-stdin"][..], &email].concat();
    expect(run(&register_args, &format!("{password}\n")).await, 0);
    expect(run(&register_args, &format!("{password}\n")).await, 1);
    expect(run(&login_args, &format!("{wrong}\n")).await, 3);
    expect(run(&login_args, &format!("{password}\n")).await, 0);
    expect(run(&["whoami"], "").await, 0);
    let project = userctl.project_dir();
    let token = std::fs::read_to_string(project.join("token")).expect("saved token");
    // A forged token (right shape, wrong key) is refused, and not logged either.
    let forged = {
        let mut parts: Vec<String> = token.trim().split('.').map(str::to_owned).collect();
        parts[2] = "A".repeat(43);
        parts.join(".")
    };
    std::fs::write(project.join("token"), &forged).expect("forge");
    expect(run(&["whoami"], "").await, 3);
    for service in ["gateway", "cache", "store"] {
        expect(run(&["logs", service, "--tail", "1000"], "").await, 0);
    }

    let key = std::fs::read_to_string(project.join("jwt.key")).expect("jwt key");
    let mut logs = printed;
    let mut files = Vec::new();
    for dir in [project.join("local"), project.join("local/logs")] {
        for entry in std::fs::read_dir(&dir).expect("local dir").flatten() {
            let path = entry.path();
            let name = path.display().to_string();
            if name.ends_with(".log") {
                logs.push_str(&std::fs::read_to_string(&path).expect("log"));
                files.push(name);
            }
        }
    }
    assert!(
        logs.contains("registered") && logs.contains("logged in"),
        "the logs saw the requests: {files:?}"
    );
    let mut secrets = vec![
        ("the JWT key", key.trim().to_owned()),
        ("the password", password.to_owned()),
        ("the wrong password", wrong.to_owned()),
        ("the token", token.trim().to_owned()),
        ("the forged token", forged.clone()),
        (
            "a token's signature",
            token.trim().rsplit('.').next().unwrap_or("").to_owned(),
        ),
        ("an argon2 hash", "$argon2id$".to_owned()),
    ];
    if let Ok(text) = std::fs::read_to_string(project.join("secrets.json")) {
        let json: serde_json::Value = serde_json::from_str(&text).expect("secrets JSON");
        if let Some(redis) = json["redis_password"].as_str() {
            secrets.push(("the Redis password", redis.to_owned()));
        }
    }
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} is a real secret");
        assert!(
            !logs.contains(secret.as_str()),
            "{what} appears in the logs or output"
        );
    }
    let mut modes = Vec::new();
    for file in ["jwt.key", "token", "secrets.json", "local/redis.conf"] {
        let path = project.join(file);
        if let Ok(meta) = std::fs::metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} is private");
            modes.push(format!("{file} {mode:o}"));
        }
    }
    assert!(modes.iter().any(|m| m.starts_with("jwt.key")), "{modes:?}");
    // Redis listens on loopback only and answers nobody without the generated password.
    if let Ok(conf) = std::fs::read_to_string(project.join("local/redis.conf")) {
        assert!(conf.contains("bind 127.0.0.1"), "{conf}");
        let port = conf
            .lines()
            .find_map(|line| line.strip_prefix("port "))
            .expect("port line");
        let reply = redis_ping(&format!("127.0.0.1:{port}")).await;
        assert!(reply.starts_with("-NOAUTH"), "Redis answered {reply:?}");
        modes.push(format!("redis without password: {}", reply.trim()));
    }
    println!(
        "{} bytes of logs from {files:?} and command output searched for {} secrets: none found; {}",
        logs.len(),
        secrets.len(),
        modes.join(", ")
    );
    userctl.run(&["down", "--volumes"]).await.ok();
}

async fn redis_ping(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect redis");
    stream.write_all(b"PING\r\n").await.expect("write");
    let mut reply = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    String::from_utf8_lossy(&reply[..n]).into_owned()
}
