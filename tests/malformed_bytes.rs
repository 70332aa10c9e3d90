//! Bytes no generated client would send: messages that do not parse, and header lists over
//! the HTTP/2 limit. Each is refused without an answer that says anything about the service,
//! and everyone else keeps being served.

use bytes::{Buf as _, BufMut as _};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};
use userctl_proto::gateway::v1::RegisterRequest;
use userctl_tests::{
    database::TestDatabase,
    hostile::{PASSWORD, ascii, assert_no_leak, login, register, whoami_with},
    redis::RedisServer,
    stack::TestStack,
};

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
