//! The HTTP door in a real browser: headless Chromium, driven over the WebDriver protocol by
//! chromedriver, against a stack of real services (SQLite, its own Redis).
//!
//! - A page on another origin (a different port is a different origin) registers, logs in and
//!   reads the profile with `fetch()` when the gateway allows that origin, and is refused by
//!   the browser, before anything reaches the gateway's handlers, when it does not.
//! - The gateway's own page at `GET /` works as a user meets it: typing, submitting, errors
//!   beside their field, the profile after logging in.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    process::{Child, Command},
    task::JoinHandle,
};
use userctl_tests::{
    database::TestDatabase,
    redis::RedisServer,
    stack::{StackOptions, TestStack},
};

const PASSWORD: &str = "correct horse battery staple";
/// How long the browser gets for a page's calls to settle; generous for a loaded machine.
const SETTLE: Duration = Duration::from_secs(20);
/// The key WebDriver names an element reference by (W3C WebDriver, "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A stack (SQLite, its own Redis) whose gateway allows `cors_origins`.
struct Stack {
    stack: TestStack,
    _db: TestDatabase,
    _redis: RedisServer,
}

impl Stack {
    async fn start(cors_origins: Vec<String>) -> Self {
        let db = TestDatabase::sqlite();
        let redis = RedisServer::start().await;
        let options = StackOptions {
            cors_origins,
            ..StackOptions::default()
        };
        let stack = TestStack::start_with(&db, &redis, options).await;
        Self {
            stack,
            _db: db,
            _redis: redis,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.stack.http_addr)
    }

    /// Registers `email` from outside any browser; the status.
    async fn register_directly(&self, email: &str) -> StatusCode {
        Client::new()
            .post(self.url("/api/auth/register"))
            .json(&json!({
                "FullName": "Ann Lee", "Email": email,
                "Password": PASSWORD, "ConfirmPassword": PASSWORD,
            }))
            .send()
            .await
            .expect("register directly")
            .status()
    }
}

/// `tests/fixtures/browser/frontend.html`, served on 127.0.0.1:0 for any path: a frontend on an
/// origin of its own. Stops when dropped.
struct Frontend {
    origin: String,
    server: JoinHandle<()>,
}

impl Frontend {
    async fn start() -> Self {
        let page = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/browser/frontend.html"),
        )
        .expect("read the frontend fixture");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let page = page.clone();
                tokio::spawn(async move {
                    // The request is not looked at: one GET per connection, one answer.
                    let mut request = [0; 4096];
                    let _ = stream.read(&mut request).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        page.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&page).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            origin: format!("http://{addr}"),
            server,
        }
    }

    /// The page, calling `api` as `email`.
    fn url(&self, api: &str, email: &str) -> String {
        format!("{}/?api={api}&email={email}", self.origin)
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// chromedriver on a free loopback port with one headless Chromium session. Dropping it kills
/// chromedriver's whole process group, the browser with it, even when the test panicked.
struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: Client,
    _profile: TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver; scripts/test installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("WebDriver client");
        userctl_tests::eventually(Duration::from_secs(20), || async {
            let status = match http.get(format!("{base}/status")).send().await {
                Ok(response) => response.json::<Value>().await.unwrap_or_default(),
                Err(error) => Value::String(error.to_string()),
            };
            match status["value"]["ready"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(format!("chromedriver not ready: {status}")),
            }
        })
        .await
        .expect("chromedriver is ready");

        let profile = tempfile::tempdir().expect("browser profile directory");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args},
        }}});
        let mut browser = Self {
            driver,
            session: String::new(),
            base,
            http,
            _profile: profile,
        };
        let created = browser.command("POST", "/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {created}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test with its message.
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("WebDriver JSON");
        let value = answer["value"].clone();
        if let Some(error) = value["error"].as_str() {
            panic!("WebDriver {method} {path}: {error}: {}", value["message"]);
        }
        value
    }

    fn session_path(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    async fn open(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), json!({"url": url}))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                "POST",
                &self.session_path("/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css}: {found}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = self.session_path(&format!("/element/{element}/value"));
        self.command("POST", &path, json!({"text": text})).await;
    }

    async fn clear(&self, css: &str) {
        let element = self.find(css).await;
        let path = self.session_path(&format!("/element/{element}/clear"));
        self.command("POST", &path, json!({})).await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        let path = self.session_path(&format!("/element/{element}/click"));
        self.command("POST", &path, json!({})).await;
    }

    /// The element's text as the page has it now (`textContent`, shown or not).
    async fn text(&self, css: &str) -> String {
        let value = self
            .command(
                "POST",
                &self.session_path("/execute/sync"),
                json!({
                    "script": "const e = document.querySelector(arguments[0]); \
                               return e ? e.textContent : null;",
                    "args": [css],
                }),
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the text of `css` is not empty and satisfies `done`; that text.
    async fn wait_for_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let outcome = userctl_tests::eventually(SETTLE, || async {
            let text = self.text(css).await;
            if !text.is_empty() && done(&text) {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
        outcome.unwrap_or_else(|last| panic!("{css} never settled; it last read {last:?}"))
    }

    /// Closes the session (and the browser) politely; the drop guard covers a panic.
    async fn quit(self) {
        self.command("DELETE", &self.session_path(""), json!({}))
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = signal::killpg(Pid::from_raw(pid), signal::Signal::SIGKILL);
        }
    }
}

/// A loopback port free right now: chromedriver takes a port number, not a listener.
fn free_port() -> u16 {
    let listener = StdListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_frontend_on_an_allowed_origin_registers_logs_in_and_reads_the_profile() {
    let frontend = Frontend::start().await;
    let stack = Stack::start(vec![frontend.origin.clone()]).await;
    let browser = Browser::start().await;

    let email = "cors-allowed@example.com";
    browser
        .open(&frontend.url(&stack.stack.http_addr, email))
        .await;
    let outcome = browser.wait_for_text("#outcome", |_| true).await;
    assert_eq!(outcome, format!("profile: Ann Lee <{email}>"));
    browser.quit().await;
}

#[tokio::test]
async fn a_frontend_on_an_origin_not_allowed_is_refused_by_the_browser_before_any_write() {
    let frontend = Frontend::start().await;
    let stack = Stack::start(vec!["http://localhost:3000".to_owned()]).await;
    let browser = Browser::start().await;

    let email = "cors-refused@example.com";
    browser
        .open(&frontend.url(&stack.stack.http_addr, email))
        .await;
    let outcome = browser.wait_for_text("#outcome", |_| true).await;
    assert_eq!(outcome, "error: TypeError: Failed to fetch");
    // The JSON POST was preflighted and the preflight refused, so the registration never ran:
    // the same account can still be made from outside a browser.
    assert_eq!(stack.register_directly(email).await, StatusCode::OK);
    browser.quit().await;
}

#[tokio::test]
async fn the_built_in_page_registers_shows_field_errors_logs_in_and_shows_the_profile() {
    let stack = Stack::start(Vec::new()).await;
    let browser = Browser::start().await;
    browser.open(&stack.url("/")).await;

    let email = "page@example.com";
    browser
        .type_into("#register input[name=FullName]", "Ann Lee")
        .await;
    browser
        .type_into("#register input[name=Email]", email)
        .await;
    browser
        .type_into("#register input[name=Password]", PASSWORD)
        .await;
    browser
        .type_into("#register input[name=ConfirmPassword]", "something else")
        .await;
    browser.click("#register button").await;
    let reason = browser
        .wait_for_text(r#"#register [data-error-for="ConfirmPassword"]"#, |_| true)
        .await;
    assert_eq!(reason, "must match Password");
    let message = browser.text("#register .message").await;
    assert!(message.contains("must match Password"), "{message}");

    browser.clear("#register input[name=ConfirmPassword]").await;
    browser
        .type_into("#register input[name=ConfirmPassword]", PASSWORD)
        .await;
    browser.click("#register button").await;
    let registered = browser
        .wait_for_text("#register .message", |text| text.starts_with("Registered"))
        .await;
    assert_eq!(registered, format!("Registered {email}. Log in below."));
    assert_eq!(
        browser
            .text(r#"#register [data-error-for="ConfirmPassword"]"#)
            .await,
        ""
    );

    // Registering filled in the login form's email: only the password is typed.
    browser
        .type_into("#login input[name=Password]", PASSWORD)
        .await;
    browser.click("#login button").await;
    let shown = browser.wait_for_text("#profile-email", |_| true).await;
    assert_eq!(shown, email);
    assert_eq!(browser.text("#profile-full-name").await, "Ann Lee");
    assert!(!browser.text("#profile-expires").await.is_empty());
    let hidden = browser
        .command(
            "POST",
            &browser.session_path("/execute/sync"),
            json!({"script": "return document.getElementById('profile').hidden;", "args": []}),
        )
        .await;
    assert_eq!(hidden, Value::Bool(false));
    browser.quit().await;
}
