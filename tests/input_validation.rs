//! Bad input through every entry point, as a table: the public gateway and the private
//! `UserStore` of cache and store alike answer each row with its documented status, and no
//! answer mentions how the services are built.
//!
//! Token attacks (alg none, wrong key, bad claims, tampering, ghost accounts) are in tokens.rs;
//! duplicate and invalid registrations in accounts.rs.

use std::{future::Future, pin::Pin};

use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use userctl_proto::{
    cache::v1::{WatchStatsRequest, cache_stats_client::CacheStatsClient},
    gateway::v1::WhoAmIRequest,
    user::v1::{CreateUserRequest, ReadUserRequest, read_user_request::Key},
};
use userctl_tests::{
    database::TestDatabase,
    hostile::{PASSWORD, ascii, assert_no_leak, login, register, unthrottled, whoami_with},
    load::bearer,
    redis::RedisServer,
    stack::TestStack,
};

/// Largest request any service accepts (services/src/server.rs).
const CAP: usize = usersvc::server::MAX_REQUEST_BYTES;

fn create(email: &str, full_name: &str, password_hash: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.into(),
        full_name: full_name.into(),
        password_hash: password_hash.into(),
    }
}

fn read(key: Key) -> ReadUserRequest {
    ReadUserRequest {
        key: Some(key),
        session_id: String::new(),
    }
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
                format!("{layer} create: SQL in the email and the name"),
                OK,
                c(),
                create_user(create(
                    &format!("';delete/**/from/**/users;--{layer}@example.com"),
                    "'); DELETE FROM users; --",
                    hash,
                )),
            ),
            case!(
                format!("{layer} create: SQL after the hash"),
                Invalid,
                c(),
                create_user(create(
                    &format!("sqlhash-{layer}@example.com"),
                    "N",
                    &format!("{hash}'--"),
                )),
            ),
            case!(
                format!("{layer} create: argon2id weaker than the stack's (m=8, t=1)"),
                Invalid,
                c(),
                create_user(create(
                    &format!("weak-{layer}@example.com"),
                    "N",
                    "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                )),
            ),
            case!(
                format!("{layer} create: a bcrypt hash"),
                Invalid,
                c(),
                create_user(create(
                    &format!("bcrypt-{layer}@example.com"),
                    "N",
                    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                )),
            ),
            case!(
                format!("{layer} read: no key"),
                Invalid,
                c(),
                read_user(ReadUserRequest {
                    key: None,
                    session_id: String::new(),
                })
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
