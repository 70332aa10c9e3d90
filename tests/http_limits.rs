//! What one client can cost or trick the gateway's HTTP door, over raw TCP sockets as an
//! attacker would send bytes: made-up methods must not grow `/metrics`, and an ambiguous
//! request is refused rather than guessed at.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
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
