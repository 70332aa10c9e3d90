//! One request followed across the stack (docs/design.md, "Tracing a request"): a real local
//! stack takes the caller's W3C `traceparent` or starts a trace, returns it on HTTP and gRPC
//! responses, and `userctl logs --trace ID` shows the request's lines from the gateway, the
//! cache and the store in time order.

use userctl_proto::gateway::v1::{WhoAmIRequest, gateway_client::GatewayClient};
use userctl_tests::{
    cli::{Run, Userctl},
    e2e::{self, Teardown},
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PASSWORD: &str = "correct horse battery staple";

struct Stack {
    userctl: Userctl,
    http: String,
    gateway: String,
    // Dropped after `userctl`'s last use: `down --volumes` needs the home.
    _teardown: Teardown,
    _home: tempfile::TempDir,
}

async fn stack() -> Stack {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let teardown = Teardown(userctl.clone());
    let up = userctl.run(e2e::LOCAL_UP).await.ok();
    Stack {
        http: e2e::printed(&up, "http "),
        gateway: e2e::printed(&up, "gateway "),
        userctl,
        _teardown: teardown,
        _home: home,
    }
}

/// The trace id a response's `traceparent` names.
fn trace_id_of(traceparent: &str) -> String {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "traceparent {traceparent:?}");
    assert_eq!(fields[1].len(), 32, "traceparent {traceparent:?}");
    fields[1].to_owned()
}

/// The sources (`gateway`, `cache.2`…) of `logs --trace` output, and a check that every line
/// names the trace and the lines are in time order.
fn sources(run: &Run, trace_id: &str) -> Vec<String> {
    let mut previous = String::new();
    run.stdout
        .lines()
        .map(|line| {
            assert!(line.contains(trace_id), "a line of another request: {line}");
            let (source, text) = line.split_once(" | ").expect("source | text");
            let timestamp = text.split_whitespace().next().expect("timestamp");
            assert!(
                *timestamp >= *previous,
                "out of time order at {line}\n{}",
                run.stdout
            );
            previous = timestamp.to_owned();
            source.trim().to_owned()
        })
        .collect()
}

fn has(sources: &[String], service: &str) -> bool {
    sources
        .iter()
        .any(|source| source == service || source.starts_with(&format!("{service}.")))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_through_http_is_followed_through_gateway_cache_and_store() {
    let stack = stack().await;
    let http = reqwest::Client::new();

    // The caller starts the trace: the gateway keeps its id and hands it on.
    let caller = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let registered = http
        .post(format!("{}/api/auth/register", stack.http))
        .header("traceparent", &caller)
        .json(&serde_json::json!({
            "Email": "trace@example.com",
            "FullName": "Tracy",
            "Password": PASSWORD,
            "ConfirmPassword": PASSWORD,
        }))
        .send()
        .await
        .expect("register over HTTP");
    assert!(registered.status().is_success(), "{registered:?}");
    let returned = registered.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(trace_id_of(&returned), TRACE_ID);
    assert_ne!(
        returned, caller,
        "the gateway answers with a span of its own"
    );

    let traced = stack.userctl.run(&["logs", "--trace", TRACE_ID]).await.ok();
    let seen = sources(&traced, TRACE_ID);
    for service in ["gateway", "cache", "store"] {
        assert!(has(&seen, service), "no {service} line:\n{}", traced.stdout);
    }
    assert!(
        traced.stdout.contains("Register") || traced.stdout.contains("/api/auth/register"),
        "{}",
        traced.stdout
    );

    // No traceparent: the gateway starts a trace and says which; the whole header value is
    // accepted as the id.
    let login = http
        .post(format!("{}/api/auth/login", stack.http))
        .json(&serde_json::json!({ "Email": "trace@example.com", "Password": PASSWORD }))
        .send()
        .await
        .expect("login over HTTP");
    assert!(login.status().is_success(), "{login:?}");
    let started = login.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let login_trace = trace_id_of(&started);
    assert_ne!(login_trace, TRACE_ID);
    let traced = stack.userctl.run(&["logs", "--trace", &started]).await.ok();
    let seen = sources(&traced, &login_trace);
    assert!(has(&seen, "gateway"), "{}", traced.stdout);
    assert!(has(&seen, "cache"), "{}", traced.stdout);
    assert!(
        !traced.stdout.contains(TRACE_ID),
        "the register's lines are not the login's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_answers_carry_the_trace_and_bad_ids_are_refused_plainly() {
    let stack = stack().await;
    let mut gateway = GatewayClient::connect(stack.gateway.clone())
        .await
        .expect("connect");
    let mut request = tonic::Request::new(WhoAmIRequest {});
    let caller = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", caller.parse().expect("ascii"));
    // No token: refused, and still traced.
    let refused = gateway.who_am_i(request).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let returned = refused.metadata().get("traceparent").expect("traceparent");
    assert_eq!(trace_id_of(returned.to_str().expect("ascii")), TRACE_ID);
    let traced = stack.userctl.run(&["logs", "--trace", TRACE_ID]).await.ok();
    assert!(
        traced.stdout.contains("Unauthenticated"),
        "{}",
        traced.stdout
    );

    // Not a trace id: a usage error naming the expected form.
    let bad = stack
        .userctl
        .run(&["logs", "--trace", "not-a-trace"])
        .await
        .expect_code(2);
    assert!(bad.stderr.contains("32 hex digits"), "{}", bad.stderr);

    // A well-formed id no service logged: one line saying so.
    let unknown = stack
        .userctl
        .run(&["logs", "--trace", "0123456789abcdef0123456789abcdef"])
        .await
        .expect_code(1);
    assert!(unknown.stdout.is_empty(), "{}", unknown.stdout);
    let first = unknown.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("no service has logged trace 0123456789abcdef0123456789abcdef"),
        "{}",
        unknown.stderr
    );
}
