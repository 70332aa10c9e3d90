//! What one client can cost or trick the gateway's doors, over raw TCP sockets as an attacker
//! would send bytes: made-up methods must not grow `/metrics`, an ambiguous request is refused
//! rather than guessed at, and a connection that is slow, silent or one too many cannot be
//! held (HTTP headers and the HTTP/2 preface both have a deadline, HTTP and gRPC connections a
//! cap).

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use userctl_tests::{
    database::TestDatabase,
    hostile::{login, register},
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

/// A stack (SQLite, its own Redis) whose HTTP door the test talks to byte by byte.
struct Door {
    stack: TestStack,
    _db: TestDatabase,
    _redis: RedisServer,
}

impl Door {
    async fn start_with(options: StackOptions) -> Self {
        let db = TestDatabase::sqlite();
        let redis = RedisServer::start().await;
        let stack = TestStack::start_with(&db, &redis, options).await;
        Self {
            stack,
            _db: db,
            _redis: redis,
        }
    }

    async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    fn addr(&self) -> &str {
        self.stack.http_addr.trim_start_matches("http://")
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr()).await.expect("connect")
    }

    async fn connect_grpc(&self) -> TcpStream {
        TcpStream::connect(self.stack.gateway_addr.trim_start_matches("http://"))
            .await
            .expect("connect to gRPC")
    }

    /// Sends `head` (request line and headers, without the blank line) on a new connection
    /// and reads the whole answer.
    async fn send(&self, head: &str) -> String {
        let mut socket = self.connect().await;
        let request = format!("{head}\r\nHost: gateway\r\nConnection: close\r\n\r\n");
        socket
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
            .await
            .expect("the gateway answers within 10 s")
            .expect("read answer");
        String::from_utf8_lossy(&answer).into_owned()
    }

    async fn metrics(&self) -> String {
        let answer = self.send("GET /metrics HTTP/1.1").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer
    }
}

fn series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|line| line.starts_with("userctl_gateway_http_"))
        .count()
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let door = Door::start().await;
    // One made-up method first, so the label it gets exists before the baseline.
    door.send("BREW /api HTTP/1.1").await;
    door.send("GET /no/such/path/0 HTTP/1.1").await;
    let before = door.metrics().await;

    for n in 0..20 {
        door.send(&format!("MADEUP{n} /api HTTP/1.1")).await;
        door.send(&format!("MADEUP{n} /no/such/path/{n} HTTP/1.1"))
            .await;
    }
    let huge = "X".repeat(60 * 1024);
    for n in 0..5 {
        door.send(&format!("{huge}{n} /api HTTP/1.1")).await;
    }
    let after = door.metrics().await;

    assert!(
        !after.contains("MADEUP") && !after.contains("XXXX") && !after.contains("/no/such"),
        "a client-chosen method or path became a label:\n{}",
        &after[..after.len().min(4000)]
    );
    // The /metrics requests themselves add at most their own few series.
    let grown = series(&after).saturating_sub(series(&before));
    assert!(grown <= 40, "{grown} new series from 45 made-up requests");
    assert!(
        after.len() < 64 * 1024,
        "/metrics grew to {} bytes",
        after.len()
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let door = Door::start().await;
    let mut gateway = door.stack.gateway().await;
    let password = "correct horse battery staple";
    gateway
        .register(register("two@example.com", "Two", password))
        .await
        .expect("register");
    let token = gateway
        .login(login("two@example.com", password))
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let one = door
        .send(&format!(
            "GET /api/auth/user-profile HTTP/1.1\r\nAuthorization: Bearer {token}"
        ))
        .await;
    assert!(one.starts_with("HTTP/1.1 200"), "one valid header: {one}");

    for (first, second) in [
        (format!("Bearer {token}"), "Bearer forged".to_owned()),
        ("Bearer forged".to_owned(), format!("Bearer {token}")),
        (format!("Bearer {token}"), format!("Bearer {token}")),
    ] {
        let answer = door
            .send(&format!(
                "GET /api/auth/user-profile HTTP/1.1\r\nAuthorization: {first}\r\nAuthorization: {second}"
            ))
            .await;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "two authorization headers were not refused: {answer}"
        );
    }
}

/// The header timeout the slow-client tests run with, so they take a second, not ten.
const SHORT: Duration = Duration::from_millis(500);
/// How long past its timeout a connection may take to be closed (a loaded test machine).
const SLACK: Duration = Duration::from_secs(3);

fn short_timeouts() -> StackOptions {
    StackOptions {
        header_timeout: SHORT,
        ..StackOptions::default()
    }
}

/// Reads (and discards) whatever the server sends until it closes the connection, and says
/// how long that took; panics if it is still open after `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    match tokio::time::timeout(within, socket.read_to_end(&mut sink)).await {
        // A reset is a close as well.
        Ok(_) => started.elapsed(),
        Err(_) => panic!("the connection is still open after {within:?}"),
    }
}

/// Reads one answer's status line and headers off a kept-alive connection.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = socket.read(&mut byte).await.expect("read answer");
        assert_eq!(read, 1, "the connection closed mid-answer");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn a_client_sending_its_headers_a_byte_at_a_time_is_disconnected() {
    let door = Door::start_with(short_timeouts()).await;
    let socket = door.connect().await;
    let (mut reader, mut writer) = socket.into_split();
    // 40 bytes at one every 100 ms: four seconds of headers that never end, eight timeouts.
    let trickle = tokio::spawn(async move {
        for byte in b"GET /api HTTP/1.1\r\nHost: gateway\r\nX-Slow: abcdefghij".iter() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(SHORT + SLACK, reader.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "a slow-loris connection was still open after {:?}",
        started.elapsed()
    );
    trickle.abort();
}

#[tokio::test]
async fn idle_http_connections_are_closed() {
    let door = Door::start_with(short_timeouts()).await;
    // A connection that never sends a byte.
    let mut silent = door.connect().await;
    let waited = closed_within(&mut silent, SHORT + SLACK).await;
    assert!(waited >= SHORT / 2, "closed after only {waited:?}");

    // A kept-alive connection after its request is answered.
    let mut kept = door.connect().await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .expect("send request");
    let head = read_head(&mut kept).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    closed_within(&mut kept, SHORT + SLACK).await;
}

#[tokio::test]
async fn a_grpc_connection_that_never_sends_the_http2_preface_is_dropped() {
    let door = Door::start_with(short_timeouts()).await;
    let mut silent = door.connect_grpc().await;
    closed_within(&mut silent, SHORT + SLACK).await;

    // Half a preface, then nothing.
    let mut halfway = door.connect_grpc().await;
    halfway
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("send half a preface");
    closed_within(&mut halfway, SHORT + SLACK).await;

    // A real client that connected as long ago still works.
    let mut gateway = door.stack.gateway().await;
    gateway
        .login(login("nobody@example.com", "wrong password"))
        .await
        .expect_err("no such account");
}

#[tokio::test]
async fn http_connections_beyond_the_cap_wait_for_one_to_close() {
    let door = Door::start_with(StackOptions {
        http_max_connections: 2,
        // Longer than the test, so the two held connections are not closed as idle.
        header_timeout: Duration::from_secs(20),
        ..StackOptions::default()
    })
    .await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = door.connect().await;
        socket.write_all(request).await.expect("send request");
        // Answered, so served and holding its place.
        assert!(read_head(&mut socket).await.starts_with("HTTP/1.1 200"));
        held.push(socket);
    }

    let mut third = door.connect().await;
    third.write_all(request).await.expect("send request");
    let early = tokio::time::timeout(Duration::from_millis(500), read_head(&mut third)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two were held: {early:?}"
    );

    drop(held.pop());
    let head = tokio::time::timeout(SLACK, read_head(&mut third))
        .await
        .expect("the third connection is served once one closes");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Whether the gateway answers a health check on `channel` within `within`.
async fn answers(channel: &Channel, within: Duration) -> bool {
    let mut health = HealthClient::new(channel.clone());
    let check = health.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(tokio::time::timeout(within, check).await, Ok(Ok(_)))
}

#[tokio::test]
async fn grpc_connections_beyond_the_cap_wait_for_one_to_close() {
    let door = Door::start_with(StackOptions {
        grpc_max_connections: 2,
        ..StackOptions::default()
    })
    .await;
    // Each channel is one HTTP/2 connection of its own.
    let endpoint = Endpoint::from_shared(door.stack.gateway_addr.clone()).expect("gateway URL");
    let mut held = Vec::new();
    for _ in 0..2 {
        let channel = endpoint.connect().await.expect("connect");
        assert!(
            answers(&channel, SLACK).await,
            "a connection within the cap is served"
        );
        held.push(channel);
    }

    let third = endpoint.connect_lazy();
    assert!(
        !answers(&third, Duration::from_millis(500)).await,
        "a third connection was served while two were held"
    );

    drop(held.pop());
    assert!(
        answers(&third, SLACK).await,
        "the third connection is served once one closes"
    );
}
