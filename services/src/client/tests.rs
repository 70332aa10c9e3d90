//! The address rules, the membership rule and name re-resolution. This machine has no name
//! that resolves to several addresses, so the resolver here is a table the test changes; the
//! servers behind it are real.

use std::sync::Mutex;

use tonic_health::pb::health_client::HealthClient;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn found(ports: &[u16]) -> HashMap<SocketAddr, String> {
    ports
        .iter()
        .map(|port| (addr(*port), format!("http://{}", addr(*port))))
        .collect()
}

fn inserted(changes: &[Change<SocketAddr, String>]) -> Vec<SocketAddr> {
    let mut addrs: Vec<_> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Insert(addr, _) => Some(*addr),
            Change::Remove(_) => None,
        })
        .collect();
    addrs.sort();
    addrs
}

fn removed(changes: &[Change<SocketAddr, String>]) -> Vec<SocketAddr> {
    let mut addrs: Vec<_> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Remove(addr) => Some(*addr),
            Change::Insert(..) => None,
        })
        .collect();
    addrs.sort();
    addrs
}

#[test]
fn one_url_with_an_ip_address_is_a_plain_channel_as_before() {
    for url in [
        "http://127.0.0.1:50052",
        "http://[::1]:50052",
        " http://10.0.0.1:1 ",
    ] {
        assert_eq!(
            Replicas::parse(url).expect("valid"),
            Replicas::Single(url.trim().to_owned()),
            "{url}"
        );
    }
}

#[test]
fn a_list_or_a_name_is_balanced() {
    let Replicas::Balanced(targets) =
        Replicas::parse("http://127.0.0.1:1, http://cache:50052").expect("valid")
    else {
        panic!("a list is balanced");
    };
    assert_eq!(
        targets,
        [
            Target {
                scheme: "http".into(),
                host: "127.0.0.1".into(),
                port: 1
            },
            Target {
                scheme: "http".into(),
                host: "cache".into(),
                port: 50052
            },
        ]
    );
    assert!(matches!(
        Replicas::parse("http://localhost:50052"),
        Ok(Replicas::Balanced(targets)) if targets.len() == 1
    ));
}

#[test]
fn a_list_with_an_empty_or_unusable_entry_is_refused_naming_it() {
    for (value, named) in [
        ("http://127.0.0.1:1,", ""),
        ("http://127.0.0.1:1,cache:50052", "cache:50052"),
        (
            "http://127.0.0.1:1,http://cache:1/path",
            "http://cache:1/path",
        ),
        ("not a url", "not a url"),
    ] {
        let err = Replicas::parse(value).expect_err(value).to_string();
        assert!(err.contains(&format!("{named:?}")), "{value}: {err}");
    }
}

#[test]
fn the_balance_holds_the_serving_replicas_or_every_replica_when_none_serves() {
    let mut membership = Membership::default();
    let joined = membership.resolved(found(&[1, 2]));
    assert_eq!(joined.len(), 2);
    // Nothing has answered yet: both, so the first calls fail fast if neither is up.
    assert_eq!(inserted(&membership.rebalance()), [addr(1), addr(2)]);

    let generation = |port| membership.known[&addr(port)].generation;
    let (one, two) = (generation(1), generation(2));
    membership.report(addr(1), one, Health::Serving);
    membership.report(addr(2), two, Health::Down);
    assert_eq!(removed(&membership.rebalance()), [addr(2)]);

    // The serving one goes down too: every known replica again.
    membership.report(addr(1), one, Health::Down);
    assert_eq!(inserted(&membership.rebalance()), [addr(2)]);
    membership.report(addr(2), two, Health::Serving);
    assert_eq!(removed(&membership.rebalance()), [addr(1)]);
}

#[test]
fn a_replica_that_stops_resolving_leaves_and_its_watcher_stops() {
    let mut membership = Membership::default();
    let joined = membership.resolved(found(&[1, 2]));
    membership.rebalance();
    let watcher_of_two = joined
        .iter()
        .find(|joined| joined.addr == addr(2))
        .map(|joined| (joined.generation, joined.watcher.clone()))
        .expect("joined");

    assert!(membership.resolved(found(&[1])).is_empty());
    assert_eq!(removed(&membership.rebalance()), [addr(2)]);
    assert!(watcher_of_two.1.is_cancelled());

    // It resolves again: a new member, whose old watcher's reports no longer count.
    let joined = membership.resolved(found(&[1, 2]));
    assert_eq!(joined.len(), 1);
    membership.report(
        addr(1),
        membership.known[&addr(1)].generation,
        Health::Serving,
    );
    membership.report(addr(2), watcher_of_two.0, Health::Serving);
    let changes = membership.rebalance();
    assert!(inserted(&changes).is_empty(), "{changes:?}");
}

/// A resolver answering from a table the test edits, failing for names it lacks.
fn table(entries: &Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>) -> Resolver {
    let entries = entries.clone();
    Arc::new(move |host, _port| {
        let answer = entries.lock().expect("table").get(&host).cloned();
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    })
}

#[tokio::test]
async fn a_name_is_re_resolved_and_a_failed_lookup_keeps_what_it_resolved_to_last() {
    let entries = Arc::new(Mutex::new(HashMap::from([(
        "cache.test".to_owned(),
        vec![addr(1), addr(2)],
    )])));
    let (changes, _receiver) = mpsc::channel(8);
    let mut discovery = Discovery {
        targets: vec![
            Target::parse("http://cache.test:50052").expect("target"),
            Target::parse("http://127.0.0.1:3").expect("target"),
        ],
        tls: None,
        resolver: table(&entries),
        changes,
        membership: Membership::default(),
        last_resolved: HashMap::new(),
    };
    let mut resolved: Vec<_> = discovery.resolve().await.into_values().collect();
    resolved.sort();
    // The resolver's port is the URL's: the table's ports stand for the replicas' own.
    assert_eq!(
        resolved,
        [
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3"
        ]
    );

    entries.lock().expect("table").clear();
    assert_eq!(
        discovery.resolve().await.len(),
        3,
        "a failed lookup keeps the last answer"
    );

    entries
        .lock()
        .expect("table")
        .insert("cache.test".into(), vec![addr(2)]);
    let mut resolved: Vec<_> = discovery.resolve().await.into_keys().collect();
    resolved.sort();
    assert_eq!(resolved, [addr(2), addr(3)]);
}

/// A real server with health only, on 127.0.0.1:0.
async fn health_server() -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let server = crate::server::Server::bind(addr(0)).await.expect("bind");
    let bound = server.local_addr().expect("address");
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { server.run_until_stopped(stop).await.expect("serves") }
    });
    (bound, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_drains_leaves_the_balance_before_it_stops_answering() {
    let (first, stop_first, first_task) = health_server().await;
    let (second, _stop_second, _second_task) = health_server().await;
    let entries = Arc::new(Mutex::new(HashMap::from([(
        "users.test".to_owned(),
        vec![first, second],
    )])));
    let shutdown = CancellationToken::new();
    let targets = vec![Target::parse("http://users.test:1").expect("target")];
    // The table answers with the servers' own addresses, ports and all.
    let channel = balanced(targets, None, table(&entries), &shutdown);
    let mut client = HealthClient::new(channel);
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    client.check(check()).await.expect("both serve");

    let drained = tokio::spawn(async move {
        stop_first.cancel();
        first_task.await.expect("drains");
    });
    let mut failed = 0;
    while !drained.is_finished() {
        if client.check(check()).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "calls failed while a replica drained");
    for _ in 0..20 {
        client
            .check(check())
            .await
            .expect("the other replica answers");
    }
    shutdown.cancel();
}

#[test]
fn the_callers_budget_is_its_grpc_timeout_in_any_unit() {
    let budget = |value: &str| {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().expect("ascii"));
        caller_budget(&metadata)
    };
    assert_eq!(budget("250m"), Some(Duration::from_millis(250)));
    assert_eq!(budget("2S"), Some(Duration::from_secs(2)));
    assert_eq!(budget("1M"), Some(Duration::from_secs(60)));
    assert_eq!(budget("1H"), Some(Duration::from_secs(3600)));
    assert_eq!(budget("900u"), Some(Duration::from_micros(900)));
    assert_eq!(budget("5n"), Some(Duration::from_nanos(5)));
    for malformed in ["", "m", "123456789m", "12x", "-5m", "1.5S", "5"] {
        assert_eq!(budget(malformed), None, "{malformed:?}");
    }
    assert_eq!(caller_budget(&MetadataMap::new()), None);
}

/// A read that fails in transport and then hangs is cut at the caller's budget, retry
/// included, rather than at the longer default.
#[tokio::test]
async fn a_retried_read_ends_within_the_callers_budget() {
    let started = tokio::time::Instant::now();
    let mut attempts = Vec::new();
    let outcome: Result<(), Status> = idempotent(Some(Duration::from_millis(400)), |deadline| {
        attempts.push(deadline);
        let first = attempts.len() == 1;
        async move {
            if first {
                // A failure made here, from a transport error: it has a source.
                Err(Status::from_error(Box::new(io::Error::from(
                    io::ErrorKind::ConnectionReset,
                ))))
            } else {
                std::future::pending().await
            }
        }
    })
    .await;
    let status = outcome.expect_err("cut at the budget");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < CALL_TIMEOUT,
        "cut at the caller's 400 ms, not the default {CALL_TIMEOUT:?}: {took:?}"
    );
    assert_eq!(attempts.len(), 2, "retried, then cut while the retry hung");
    assert_eq!(attempts[0], Duration::from_millis(400));
    assert!(attempts[1] < Duration::from_millis(400), "{attempts:?}");

    // A budget longer than the default is held to the default.
    let started = tokio::time::Instant::now();
    let outcome: Result<(), Status> = idempotent(Some(Duration::from_secs(60)), |_| {
        std::future::pending::<Result<(), Status>>()
    })
    .await;
    assert!(outcome.is_err());
    let took = started.elapsed();
    assert!(took >= CALL_TIMEOUT, "held to the default: {took:?}");
}

/// A read is retried while its attempts fail in transport (the balance has not yet dropped the
/// replica that went away), with pauses that grow, three attempts at most, so a caller with no
/// replica left hears so promptly; a status the peer sent is never retried.
#[tokio::test]
async fn a_read_is_retried_twice_at_most_and_never_after_the_peer_answered() {
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let outcome: Result<u32, Status> = idempotent(None, |_| {
        attempts += 1;
        let attempt = attempts;
        async move {
            if attempt < 3 {
                Err(Status::from_error(Box::new(io::Error::from(
                    io::ErrorKind::ConnectionRefused,
                ))))
            } else {
                Ok(attempt)
            }
        }
    })
    .await;
    assert_eq!(outcome.expect("the third attempt lands"), 3);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(25 + 50),
        "paused 25 and 50 ms between attempts: {took:?}"
    );

    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let outcome: Result<(), Status> = idempotent(None, |_| {
        attempts += 1;
        async {
            Err(Status::from_error(Box::new(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            ))))
        }
    })
    .await;
    assert!(outcome.is_err());
    assert_eq!(
        attempts, 3,
        "no replica left: three attempts, then the failure"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "promptly, not at the deadline"
    );

    let mut attempts = 0;
    let outcome: Result<(), Status> = idempotent(None, |_| {
        attempts += 1;
        async { Err(Status::not_found("no such user")) }
    })
    .await;
    assert_eq!(outcome.expect_err("answered").code(), tonic::Code::NotFound);
    assert_eq!(attempts, 1, "an answer from the peer is not retried");
}
