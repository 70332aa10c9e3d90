//! Snapshots of whole screens (`TestBackend`), and what must hold at every size.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::{Terminal, backend::TestBackend, style::Color};
use tokio::time::Instant;
use userctl_proto::cache::v1::{RedisBreaker, Stats};

use crate::{
    app::{App, Header},
    format::percent,
    model::{GrpcHealth, ReplicaId, Update},
    source::{LogLine, LogScope, Service, ServiceRow},
};

fn row(service: Service, state: &str, health: &str, uptime: u64) -> ServiceRow {
    ServiceRow {
        health: health.into(),
        address: None,
        restarts: Some(u64::from(service == Service::Cache)),
        uptime: Some(Duration::from_secs(uptime)),
        cpu_percent: Some(0.4),
        memory_bytes: Some(12_900_000),
        ..ServiceRow::new(service, state)
    }
}

fn healthy_rows() -> Vec<ServiceRow> {
    vec![
        row(Service::Gateway, "running", "healthy", 3725),
        row(Service::Cache, "running", "healthy", 3600),
        row(Service::Store, "running", "healthy", 3725),
        row(Service::Redis, "running", "healthy", 3730),
        row(Service::Postgres, "running", "healthy", 3730),
    ]
}

fn stats(second: u64, redis_up: bool, redis_errors: u64) -> Stats {
    Stats {
        hits: 1000 + second * 95,
        misses: 100 + second * 5,
        negative_hits: 3,
        store_calls: 120 + second * 5,
        redis_errors,
        redis_up,
        coalesced: 2,
        read_p50_us: 412,
        read_p99_us: 1830,
        uptime_secs: 3600 + second,
        creates: 4,
        redis_breaker: if redis_up {
            RedisBreaker::Closed
        } else {
            RedisBreaker::Open
        }
        .into(),
        breaker_opens: u64::from(!redis_up),
        redis_skipped: if redis_up { 0 } else { 40 * second },
    }
}

/// An app that has watched a healthy stack for `seconds`, one sample a second.
fn watched(seconds: u64) -> (App, Instant) {
    let t0 = Instant::now();
    let header = Header {
        title: "project demo · docker runtime".into(),
        refresh: Duration::from_secs(1),
    };
    let mut app = App::new(header, false, t0);
    app.apply(Update::Runtime(Ok(healthy_rows())), t0);
    for service in [Service::Gateway, Service::Cache, Service::Store] {
        let health = GrpcHealth::Serving;
        let id = ReplicaId::new(service, 1);
        app.apply(Update::Health { id, health }, t0);
    }
    for second in 0..=seconds {
        let at = t0 + Duration::from_secs(second);
        let stats = stats(second, true, 0);
        app.apply(Update::Stats { replica: 1, stats }, at);
    }
    (app, t0)
}

fn healthy() -> App {
    watched(30).0
}

/// Redis stopped 30 s in: the cache fails open and counts errors.
fn degraded() -> App {
    let (mut app, t0) = watched(30);
    for second in 31..=35 {
        let at = t0 + Duration::from_secs(second);
        let mut sample = stats(second, false, (second - 30) * 40);
        sample.hits = stats(30, true, 0).hits;
        sample.misses = stats(30, true, 0).misses + (second - 30) * 40;
        app.apply(
            Update::Stats {
                replica: 1,
                stats: sample,
            },
            at,
        );
    }
    let mut rows = healthy_rows();
    rows[3] = ServiceRow {
        uptime: None,
        ..row(Service::Redis, "exited", "none", 0)
    };
    app.apply(Update::Runtime(Ok(rows)), t0 + Duration::from_secs(35));
    app
}

/// Everything went away 30 s in: no stats, no health, no runtime.
fn unreachable() -> App {
    let (mut app, t0) = watched(30);
    let at = t0 + Duration::from_secs(31);
    app.apply(
        Update::StatsLost {
            replica: 1,
            reason: "Connection refused (os error 111)".into(),
        },
        at,
    );
    for service in [Service::Gateway, Service::Cache, Service::Store] {
        let health = GrpcHealth::Unreachable;
        let id = ReplicaId::new(service, 1);
        app.apply(Update::Health { id, health }, at);
    }
    app.apply(
        Update::Runtime(Err("cannot reach the Docker engine".into())),
        at,
    );
    app
}

/// Two gateways behind the proxy and two cache replicas, watched for 30 s: the cache replicas
/// take different shares of the reads and the second is slower.
fn replicated() -> App {
    let t0 = Instant::now();
    let header = Header {
        title: "project demo · local runtime".into(),
        refresh: Duration::from_secs(1),
    };
    let mut app = App::new(header, false, t0);
    let replica = |service, replica: u16, uptime| ServiceRow {
        replica,
        address: Some(format!("http://127.0.0.1:{}", 40000 + replica)),
        restarts: Some(0),
        ..row(service, "running", "healthy", uptime)
    };
    let mut rows = healthy_rows();
    rows.extend([
        replica(Service::Proxy, 1, 3725),
        replica(Service::Gateway, 2, 3725),
        replica(Service::Cache, 2, 600),
    ]);
    app.apply(Update::Runtime(Ok(rows)), t0);
    for (service, replica) in [
        (Service::Gateway, 1),
        (Service::Gateway, 2),
        (Service::Cache, 1),
        (Service::Cache, 2),
        (Service::Store, 1),
    ] {
        let id = ReplicaId::new(service, replica);
        let health = GrpcHealth::Serving;
        app.apply(Update::Health { id, health }, t0);
    }
    for second in 0..=30 {
        let at = t0 + Duration::from_secs(second);
        let first = stats(second, true, 0);
        app.apply(
            Update::Stats {
                replica: 1,
                stats: first,
            },
            at,
        );
        let stats = Stats {
            hits: 200 + second * 45,
            misses: 50 + second * 5,
            read_p99_us: 2400,
            uptime_secs: 600 + second,
            ..first
        };
        app.apply(Update::Stats { replica: 2, stats }, at);
    }
    app
}

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .expect("draw");
    terminal
}

fn screen(app: &App, width: u16, height: u16) -> String {
    render(app, width, height).backend().to_string()
}

fn press(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn a_healthy_stack() {
    insta::assert_snapshot!(screen(&healthy(), 100, 30));
}

#[test]
fn a_healthy_stack_on_an_80x24_terminal() {
    insta::assert_snapshot!(screen(&healthy(), 80, 24));
}

#[test]
fn redis_down_shows_the_cache_failing_open() {
    insta::assert_snapshot!(screen(&degraded(), 100, 30));
}

#[test]
fn an_unreachable_stack_shows_every_source_down() {
    insta::assert_snapshot!(screen(&unreachable(), 100, 30));
}

#[test]
fn two_cache_replicas_and_two_gateways_behind_the_proxy() {
    insta::assert_snapshot!(screen(&replicated(), 100, 30));
}

#[test]
fn the_cache_panel_shows_the_sum_over_the_replicas() {
    let app = replicated();
    let screen = screen(&app, 100, 30);
    let total = |second| stats(second, true, 0).hits + 200 + second * 45;
    assert!(
        screen.contains(&format!("Totals     hits {} ", total(30))),
        "{screen}"
    );
    let (hits, misses) = (total(30), stats(30, true, 0).misses + 50 + 30 * 5);
    let ratio = crate::hit_ratio(hits, misses).expect("reads");
    assert!(
        screen.contains(&format!("since start {}", percent(ratio))),
        "{screen}"
    );
    // 95 + 45 hits and 5 + 5 misses a second over both.
    assert!(screen.contains("now 93.3%"), "{screen}");
}

#[test]
fn the_selected_replica_stays_in_view_on_a_short_screen() {
    let mut app = replicated();
    for _ in 0..7 {
        press(&mut app, KeyCode::Down);
    }
    let screen = screen(&app, 80, 18);
    assert!(screen.contains("▶ postgres"), "{screen}");
    press(&mut app, KeyCode::Enter);
    let screen = self::screen(&app, 120, 40);
    assert!(screen.contains("Logs · postgres"), "{screen}");
}

#[test]
fn before_anything_answers() {
    let header = Header {
        title: "project demo · local runtime".into(),
        refresh: Duration::from_millis(500),
    };
    let app = App::new(header, false, Instant::now());
    insta::assert_snapshot!(screen(&app, 80, 24));
}

/// A few requests' worth of lines from every service, as each program stamps them.
fn stack_logs() -> Vec<(Service, Vec<LogLine>)> {
    let line = |text: String| LogLine {
        replica: None,
        text,
    };
    let usersvc = |second: u32, level: &str, trace: u32, rpc: &str, what: &str| {
        line(format!(
            "2026-12-02T20:40:{second:02}.{:06}Z  {level} request{{trace_id=4bf92f3577b34da6a3ce929d0e0e{trace:04} rpc={rpc}}}: {what}",
            trace * 1000
        ))
    };
    let hops = |service: Service, rpc: &str, elapsed: u32| {
        let lines = (0..12)
            .map(|i| {
                let (level, what) = match i {
                    7 => (
                        "WARN",
                        format!("answered code=Unavailable elapsed_us={elapsed}"),
                    ),
                    _ => (
                        "INFO",
                        format!("answered code=OK elapsed_us={}", elapsed + i * 7),
                    ),
                };
                usersvc(10 + i, level, i, rpc, &what)
            })
            .collect();
        (service, lines)
    };
    vec![
        hops(Service::Gateway, "Gateway/WhoAmI", 812),
        hops(Service::Cache, "UserStore/ReadUser", 402),
        hops(Service::Store, "UserStore/ReadUser", 190),
        (
            Service::Redis,
            vec![line(
                "1:M 02 Dec 2026 20:40:15.500 * Background saving started".into(),
            )],
        ),
    ]
}

fn with_stack_logs() -> App {
    let (mut app, t0) = watched(5);
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('a'));
    app.apply(
        Update::Logs {
            scope: LogScope::Stack,
            lines: Ok(stack_logs()),
        },
        t0,
    );
    app
}

#[test]
fn the_logs_pane_shows_the_selected_service() {
    let (mut app, t0) = watched(5);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    let lines = (1..=40)
        .map(|i| LogLine {
            replica: None,
            text: format!("cache log line {i}"),
        })
        .collect();
    app.apply(
        Update::Logs {
            scope: LogScope::Service(Service::Cache),
            lines: Ok(vec![(Service::Cache, lines)]),
        },
        t0,
    );
    insta::assert_snapshot!(screen(&app, 120, 32));
    insta::assert_snapshot!("logs_on_a_small_terminal", screen(&app, 60, 16));
}

#[test]
fn the_whole_stacks_logs_merged_in_time_order() {
    let app = with_stack_logs();
    insta::assert_snapshot!("stack_logs_160x45", screen(&app, 160, 45));
    insta::assert_snapshot!("stack_logs_80x24", screen(&app, 80, 24));
}

#[test]
fn a_filter_being_typed_then_applied_then_a_line_chosen() {
    let mut app = with_stack_logs();
    press(&mut app, KeyCode::Char('/'));
    for c in "cache.*unavailable".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    insta::assert_snapshot!("filter_typed_80x24", screen(&app, 80, 24));
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('/'));
    for _ in 0.."unavailable".len() {
        press(&mut app, KeyCode::Backspace);
    }
    for c in "ok".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('N'));
    press(&mut app, KeyCode::Char('N'));
    insta::assert_snapshot!("filter_applied_line_chosen_160x45", screen(&app, 160, 45));
}

#[test]
fn a_filter_that_is_no_regex_is_an_error_in_the_pane() {
    let mut app = with_stack_logs();
    press(&mut app, KeyCode::Char('/'));
    for c in "elapsed_us=(".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    press(&mut app, KeyCode::Enter);
    let screen = screen(&app, 160, 45);
    assert!(
        screen.contains("filter is not a regex: unclosed group; showing every line"),
        "{screen}"
    );
    insta::assert_snapshot!("filter_not_a_regex_80x24", self::screen(&app, 80, 24));
}

/// Two answers a second apart from each usersvc service about its calls.
fn with_requests() -> App {
    use userctl_proto::requests::v1::{RequestStats, RpcStats};

    let (mut app, t0) = watched(5);
    let rpc = |name: &str, calls: u64, errors: &[(&str, u64)], p50_us, p99_us| RpcStats {
        rpc: name.into(),
        calls,
        errors: errors
            .iter()
            .map(|(code, count)| ((*code).to_owned(), *count))
            .collect(),
        p50_us,
        p99_us,
    };
    for (second, scale) in [(5, 0), (6, 1)] {
        let at = t0 + Duration::from_secs(second);
        let answers = [
            (
                Service::Gateway,
                vec![
                    rpc("Gateway/WhoAmI", 9000 + scale * 1200, &[], 812, 2400),
                    rpc(
                        "Gateway/Login",
                        40 + scale * 8,
                        &[("Unauthenticated", 3 + scale * 2)],
                        31_000,
                        52_000,
                    ),
                    rpc(
                        "POST /api/auth/login",
                        12 + scale * 2,
                        &[("429", 2)],
                        33_000,
                        61_000,
                    ),
                ],
            ),
            (
                Service::Cache,
                vec![
                    rpc("UserStore/ReadUser", 9100 + scale * 1210, &[], 402, 1900),
                    rpc("UserStore/CreateSession", 40 + scale * 5, &[], 2100, 4800),
                ],
            ),
            (
                Service::Store,
                vec![
                    rpc(
                        "UserStore/ReadUser",
                        300 + scale * 60,
                        &[("Unavailable", scale)],
                        190,
                        900,
                    ),
                    rpc("UserStore/CreateSession", 40 + scale * 5, &[], 1500, 3900),
                ],
            ),
        ];
        for (service, rpcs) in answers {
            let id = ReplicaId::new(service, 1);
            let stats = RequestStats { rpcs };
            app.apply(Update::Requests { id, stats }, at);
        }
    }
    press(&mut app, KeyCode::Char('r'));
    app
}

#[test]
fn requests_per_hop_in_place_of_the_events() {
    let app = with_requests();
    let screen = screen(&app, 160, 45);
    // 1,200 WhoAmI calls in the second between the two answers.
    assert!(screen.contains("1200.0"), "{screen}");
    insta::assert_snapshot!("requests_per_hop_160x45", screen);
    insta::assert_snapshot!("requests_per_hop_80x24", self::screen(&app, 80, 24));
}

#[test]
fn the_help_overlay() {
    let mut app = healthy();
    press(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn paused_is_shown_in_the_header() {
    let mut app = healthy();
    press(&mut app, KeyCode::Char('p'));
    let screen = screen(&app, 80, 24);
    assert!(screen.contains("PAUSED"), "{screen}");
}

#[test]
fn small_terminals_lose_panels_not_their_wits() {
    let app = degraded();
    insta::assert_snapshot!("size_1x1", screen(&app, 1, 1));
    insta::assert_snapshot!("size_10x3", screen(&app, 10, 3));
    insta::assert_snapshot!("size_30x6", screen(&app, 30, 6));
    insta::assert_snapshot!("size_50x12", screen(&app, 50, 12));
    insta::assert_snapshot!("size_70x18", screen(&app, 70, 18));
}

#[test]
fn every_size_renders_without_panicking() {
    let mut app = degraded();
    press(&mut app, KeyCode::Char('?'));
    for width in (0..=130).step_by(3) {
        for height in 0..=40 {
            render(&app, width, height);
        }
    }
    press(&mut app, KeyCode::Char('?'));
    press(&mut app, KeyCode::Enter);
    for width in (0..=130).step_by(7) {
        for height in 0..=40 {
            render(&app, width, height);
        }
    }
    // More rows than some screens have lines, the last one selected.
    let mut app = replicated();
    for _ in 0..10 {
        press(&mut app, KeyCode::Down);
    }
    for width in (0..=130).step_by(7) {
        for height in 0..=40 {
            render(&app, width, height);
        }
    }
}

#[test]
fn the_screen_shows_the_same_ratio_as_get_stats() {
    let app = healthy();
    let latest = stats(30, true, 0);
    let ratio = crate::hit_ratio(latest.hits, latest.misses).expect("reads");
    let screen = screen(&app, 100, 30);
    assert!(
        screen.contains(&format!("since start {}", percent(ratio))),
        "{screen}"
    );
}

#[test]
fn colour_marks_redis_down_in_red_and_no_color_leaves_it_plain() {
    let mut app = degraded();
    let find_down = |terminal: &Terminal<TestBackend>| {
        let buffer = terminal.backend().buffer();
        buffer
            .content()
            .iter()
            .position(|cell| cell.symbol() == "✗")
            .map(|i| buffer.content()[i].fg)
    };
    assert_eq!(find_down(&render(&app, 100, 30)), Some(Color::Reset));
    app.color = true;
    assert_eq!(find_down(&render(&app, 100, 30)), Some(Color::Red));
}
