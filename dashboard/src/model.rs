//! The data the dashboard shows and how each [`Update`] changes it. No I/O and no clock: every
//! update comes with the instant it arrived, so tests drive it with made-up times.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;
use userctl_proto::cache::v1::Stats;

use crate::source::{Service, ServiceRow};

/// Hit-ratio samples kept for the sparkline: ten minutes at the default one-second refresh.
const HISTORY: usize = 600;
/// Events kept; the pane shows the newest that fit.
const EVENTS: usize = 200;
/// Resolution of the sparkline: ratios are kept in thousandths.
pub const RATIO_SCALE: u64 = 1000;

/// The one definition of the hit ratio, shared with every other reader of `CacheStats`:
/// hits / (hits + misses). Negative hits are counted separately by the cache and are not part
/// of it. `None` when there were no reads.
pub fn hit_ratio(hits: u64, misses: u64) -> Option<f64> {
    let reads = hits.saturating_add(misses);
    (reads > 0).then(|| hits as f64 / reads as f64)
}

/// Something a feed learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A `CacheStats/WatchStats` sample.
    Stats(Stats),
    /// The stats stream could not be opened, failed or ended; the feed retries.
    StatsLost(String),
    /// A `grpc.health.v1.Health/Watch` report from one `usersvc` service.
    Health {
        service: Service,
        health: GrpcHealth,
    },
    /// A runtime status poll: the rows, or why the runtime could not answer.
    Runtime(Result<Vec<ServiceRow>, String>),
    /// Recent logs of one service, or why they could not be read.
    Logs {
        service: Service,
        lines: Result<Vec<String>, String>,
    },
}

/// A service's live gRPC health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcHealth {
    /// Nothing heard yet.
    Connecting,
    Serving,
    /// It answers but reports NOT_SERVING (or UNKNOWN): starting or draining.
    NotServing,
    /// No connection, or the watch stream broke.
    Unreachable,
}

/// Whether a feed is getting data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    /// Why the last attempt failed; the feed is retrying.
    Down(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Problem,
}

/// A state change worth a line in the events pane.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Since the dashboard started: stable across time zones and in tests.
    pub at: Duration,
    pub severity: Severity,
    pub text: String,
}

/// Counter deltas between two consecutive samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Hit ratio over the window; `None` when nothing was read.
    pub ratio: Option<f64>,
    pub hits_per_sec: f64,
    pub misses_per_sec: f64,
}

impl Window {
    fn between(before: &Stats, after: &Stats, span: Duration) -> Self {
        let hits = after.hits.saturating_sub(before.hits);
        let misses = after.misses.saturating_sub(before.misses);
        let secs = span.as_secs_f64();
        let per_sec = |count: u64| if secs > 0.0 { count as f64 / secs } else { 0.0 };
        Self {
            ratio: hit_ratio(hits, misses),
            hits_per_sec: per_sec(hits),
            misses_per_sec: per_sec(misses),
        }
    }
}

/// What the cache's counters say.
#[derive(Debug, Clone)]
pub struct CacheView {
    pub link: Link,
    /// The newest sample; kept (and shown as stale) while the stream is down.
    pub latest: Option<Stats>,
    /// Rates and ratio over the last interval.
    pub window: Option<Window>,
    /// Hit ratio per interval in thousandths, oldest first; `None` for an interval with no
    /// reads or a gap in the data.
    pub history: VecDeque<Option<u64>>,
    /// The sample the next window is measured from.
    previous: Option<(Stats, Instant)>,
}

impl CacheView {
    /// Hit ratio since the cache started: the same figure `GetStats` gives.
    pub fn ratio_since_start(&self) -> Option<f64> {
        self.latest
            .as_ref()
            .and_then(|stats| hit_ratio(stats.hits, stats.misses))
    }

    fn push_history(&mut self, point: Option<u64>) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }
}

/// One service: what the runtime says and what its gRPC health says.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub service: Service,
    /// `None` until the runtime reports it (or when it stops reporting it).
    pub row: Option<ServiceRow>,
    /// Only meaningful for the `usersvc` services.
    pub grpc: GrpcHealth,
}

/// The last logs fetched for a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Logs {
    pub service: Service,
    pub lines: Result<Vec<String>, String>,
}

/// Everything the screen shows about the stack.
#[derive(Debug, Clone)]
pub struct Model {
    started: Instant,
    /// In [`Service::ALL`] order.
    pub services: Vec<ServiceView>,
    pub runtime: Link,
    pub cache: CacheView,
    /// Oldest first.
    pub events: VecDeque<Event>,
    pub logs: Option<Logs>,
}

impl Model {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            services: Service::ALL
                .into_iter()
                .map(|service| ServiceView {
                    service,
                    row: None,
                    grpc: GrpcHealth::Connecting,
                })
                .collect(),
            runtime: Link::Connecting,
            cache: CacheView {
                link: Link::Connecting,
                latest: None,
                window: None,
                history: VecDeque::with_capacity(HISTORY),
                previous: None,
            },
            events: VecDeque::with_capacity(EVENTS),
            logs: None,
        }
    }

    pub fn service(&self, service: Service) -> &ServiceView {
        &self.services[service.index()]
    }

    pub fn apply(&mut self, update: Update, at: Instant) {
        match update {
            Update::Stats(stats) => self.stats(stats, at),
            Update::StatsLost(reason) => self.stats_lost(reason, at),
            Update::Health { service, health } => self.health(service, health, at),
            Update::Runtime(Ok(rows)) => self.runtime_rows(rows, at),
            Update::Runtime(Err(reason)) => self.runtime_failed(reason, at),
            Update::Logs { service, lines } => self.logs = Some(Logs { service, lines }),
        }
    }

    fn stats(&mut self, stats: Stats, at: Instant) {
        if matches!(self.cache.link, Link::Down(_)) {
            self.event(at, Severity::Info, "cache stats: connected again");
        }
        self.cache.link = Link::Up;

        match (
            self.cache.latest.as_ref().map(|s| s.redis_up),
            stats.redis_up,
        ) {
            (Some(true), false) => self.event(
                at,
                Severity::Problem,
                "redis: went down; the cache falls through to the store",
            ),
            (None, false) => self.event(
                at,
                Severity::Problem,
                "redis: down; the cache falls through to the store",
            ),
            (Some(false), true) => self.event(at, Severity::Info, "redis: came back"),
            _ => {}
        }

        self.cache.window = None;
        match self.cache.previous.take() {
            Some((before, _)) if restarted(&before, &stats) => {
                self.event(
                    at,
                    Severity::Warning,
                    "cache: restarted; its counters start again from zero",
                );
                self.cache.push_history(None);
            }
            Some((before, then)) => {
                let window = Window::between(&before, &stats, at.duration_since(then));
                self.cache.push_history(
                    window
                        .ratio
                        .map(|r| (r * RATIO_SCALE as f64).round() as u64),
                );
                self.cache.window = Some(window);
            }
            None => {}
        }
        self.cache.previous = Some((stats, at));
        self.cache.latest = Some(stats);
    }

    fn stats_lost(&mut self, reason: String, at: Instant) {
        match self.cache.link {
            Link::Up => {
                self.event(
                    at,
                    Severity::Problem,
                    format!("cache stats: lost ({reason}); retrying"),
                );
                // A gap in the sparkline, and no window measured across the outage.
                self.cache.push_history(None);
            }
            Link::Connecting => self.event(
                at,
                Severity::Problem,
                format!("cache stats: cannot connect ({reason}); retrying"),
            ),
            Link::Down(_) => {}
        }
        self.cache.link = Link::Down(reason);
        self.cache.previous = None;
        self.cache.window = None;
    }

    fn health(&mut self, service: Service, health: GrpcHealth, at: Instant) {
        let before = std::mem::replace(&mut self.services[service.index()].grpc, health);
        let name = service.name();
        match (before, health) {
            (before, after) if before == after => {}
            // The first good news is not news.
            (GrpcHealth::Connecting, GrpcHealth::Serving) | (_, GrpcHealth::Connecting) => {}
            (_, GrpcHealth::Serving) => self.event(at, Severity::Info, format!("{name}: serving")),
            (_, GrpcHealth::NotServing) => {
                self.event(at, Severity::Warning, format!("{name}: not serving"));
            }
            (_, GrpcHealth::Unreachable) => {
                self.event(at, Severity::Problem, format!("{name}: unreachable"));
            }
        }
    }

    fn runtime_rows(&mut self, rows: Vec<ServiceRow>, at: Instant) {
        if matches!(self.runtime, Link::Down(_)) {
            self.event(at, Severity::Info, "runtime: answering again");
        }
        self.runtime = Link::Up;
        for service in Service::ALL {
            let after = rows.iter().find(|row| row.service == service).cloned();
            let before = self.services[service.index()].row.take();
            if let Some(before) = &before {
                self.row_changes(before, after.as_ref(), at);
            }
            self.services[service.index()].row = after;
        }
    }

    fn row_changes(&mut self, before: &ServiceRow, after: Option<&ServiceRow>, at: Instant) {
        let name = before.service.name();
        let Some(after) = after else {
            self.event(
                at,
                Severity::Problem,
                format!("{name}: no longer reported by the runtime"),
            );
            return;
        };
        if before.state != after.state {
            let severity = if after.state == "running" {
                Severity::Info
            } else {
                Severity::Problem
            };
            self.event(
                at,
                severity,
                format!("{name}: {} → {}", before.state, after.state),
            );
        }
        if let (Some(old), Some(new)) = (before.restarts, after.restarts)
            && new > old
        {
            self.event(
                at,
                Severity::Warning,
                format!("{name}: restarted ({new} restarts)"),
            );
        }
        if let (Some(old), Some(new)) = (&before.address, &after.address)
            && old != new
        {
            self.event(
                at,
                Severity::Info,
                format!("{name}: now published at {new}"),
            );
        }
        if before.health != after.health && after.health != "none" {
            let severity = match after.health.as_str() {
                "healthy" => Severity::Info,
                "starting" => Severity::Warning,
                _ => Severity::Problem,
            };
            self.event(at, severity, format!("{name}: {}", after.health));
        }
    }

    fn runtime_failed(&mut self, reason: String, at: Instant) {
        if !matches!(self.runtime, Link::Down(_)) {
            self.event(
                at,
                Severity::Problem,
                format!("runtime: {reason}; retrying"),
            );
        }
        self.runtime = Link::Down(reason);
    }

    fn event(&mut self, at: Instant, severity: Severity, text: impl Into<String>) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at: at.saturating_duration_since(self.started),
            severity,
            text: text.into(),
        });
    }
}

/// Counters only grow while a cache runs; any going back means a new process.
fn restarted(before: &Stats, after: &Stats) -> bool {
    after.uptime_secs < before.uptime_secs
        || after.hits < before.hits
        || after.misses < before.misses
        || after.store_calls < before.store_calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(hits: u64, misses: u64, uptime_secs: u64) -> Stats {
        Stats {
            hits,
            misses,
            redis_up: true,
            uptime_secs,
            ..Stats::default()
        }
    }

    fn texts(model: &Model) -> Vec<&str> {
        model.events.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn the_hit_ratio_is_hits_over_hits_plus_misses() {
        assert_eq!(hit_ratio(3, 1), Some(0.75));
        assert_eq!(hit_ratio(0, 5), Some(0.0));
        assert_eq!(hit_ratio(0, 0), None);
    }

    #[test]
    fn the_ratio_now_comes_from_counter_deltas_and_since_start_from_totals() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Stats(sample(90, 10, 5)), t0);
        assert_eq!(model.cache.window, None, "one sample has no window yet");
        assert_eq!(model.cache.ratio_since_start(), Some(0.9));

        model.apply(
            Update::Stats(sample(100, 30, 7)),
            t0 + Duration::from_secs(2),
        );
        let window = model.cache.window.expect("a window after two samples");
        assert_eq!(window.ratio, Some(10.0 / 30.0));
        assert_eq!(window.hits_per_sec, 5.0);
        assert_eq!(window.misses_per_sec, 10.0);
        assert_eq!(model.cache.ratio_since_start(), Some(100.0 / 130.0));
        assert_eq!(model.cache.history, [Some(333)]);
    }

    #[test]
    fn an_idle_interval_has_no_ratio_and_leaves_a_gap_in_the_history() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Stats(sample(5, 5, 1)), t0);
        model.apply(Update::Stats(sample(5, 5, 2)), t0 + Duration::from_secs(1));
        let window = model.cache.window.expect("window");
        assert_eq!(window.ratio, None);
        assert_eq!(window.hits_per_sec, 0.0);
        assert_eq!(model.cache.history, [None]);
    }

    #[test]
    fn a_cache_restart_starts_a_new_baseline_instead_of_a_negative_delta() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Stats(sample(500, 50, 100)), t0);
        model.apply(Update::Stats(sample(2, 1, 0)), t0 + Duration::from_secs(1));
        assert_eq!(model.cache.window, None);
        assert!(texts(&model).iter().any(|t| t.contains("cache: restarted")));
        model.apply(Update::Stats(sample(6, 1, 1)), t0 + Duration::from_secs(2));
        let window = model.cache.window.expect("window after the new baseline");
        assert_eq!(window.ratio, Some(1.0));
    }

    #[test]
    fn redis_going_down_and_coming_back_are_events() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Stats(sample(1, 0, 1)), t0);
        let down = Stats {
            redis_up: false,
            redis_errors: 3,
            ..sample(1, 3, 2)
        };
        model.apply(Update::Stats(down), t0 + Duration::from_secs(1));
        model.apply(Update::Stats(sample(1, 3, 3)), t0 + Duration::from_secs(2));
        assert_eq!(
            texts(&model),
            [
                "redis: went down; the cache falls through to the store",
                "redis: came back"
            ]
        );
        assert_eq!(model.events[1].at, Duration::from_secs(2));
    }

    #[test]
    fn losing_the_stats_stream_is_one_event_until_it_comes_back() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Stats(sample(1, 0, 1)), t0);
        for _ in 0..3 {
            model.apply(Update::StatsLost("connection refused".into()), t0);
        }
        assert_eq!(model.cache.link, Link::Down("connection refused".into()));
        assert!(
            model.cache.latest.is_some(),
            "the last sample stays on screen"
        );
        model.apply(Update::Stats(sample(2, 0, 2)), t0);
        assert_eq!(model.cache.window, None, "no window across the outage");
        assert_eq!(
            texts(&model),
            [
                "cache stats: lost (connection refused); retrying",
                "cache stats: connected again"
            ]
        );
    }

    #[test]
    fn health_transitions_are_events_but_the_first_serving_is_not() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        let health = |health| Update::Health {
            service: Service::Store,
            health,
        };
        model.apply(health(GrpcHealth::Serving), t0);
        model.apply(health(GrpcHealth::Serving), t0);
        model.apply(health(GrpcHealth::Unreachable), t0);
        model.apply(health(GrpcHealth::Unreachable), t0);
        model.apply(health(GrpcHealth::Serving), t0);
        assert_eq!(texts(&model), ["store: unreachable", "store: serving"]);
        assert_eq!(model.service(Service::Store).grpc, GrpcHealth::Serving);
    }

    #[test]
    fn runtime_state_changes_and_restarts_are_events() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        let row = |state: &str, restarts| ServiceRow {
            restarts: Some(restarts),
            ..ServiceRow::new(Service::Cache, state)
        };
        model.apply(Update::Runtime(Ok(vec![row("running", 0)])), t0);
        assert!(model.events.is_empty(), "the first poll is the baseline");
        model.apply(Update::Runtime(Ok(vec![row("restarting", 0)])), t0);
        model.apply(Update::Runtime(Ok(vec![row("running", 1)])), t0);
        model.apply(Update::Runtime(Err("engine gone".into())), t0);
        model.apply(Update::Runtime(Err("engine gone".into())), t0);
        model.apply(Update::Runtime(Ok(vec![row("running", 1)])), t0);
        assert_eq!(
            texts(&model),
            [
                "cache: running → restarting",
                "cache: restarting → running",
                "cache: restarted (1 restarts)",
                "runtime: engine gone; retrying",
                "runtime: answering again",
            ]
        );
    }

    #[test]
    fn a_service_republished_on_another_port_is_an_event() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        let row = |port: u16| ServiceRow {
            address: Some(format!("http://127.0.0.1:{port}")),
            ..ServiceRow::new(Service::Cache, "running")
        };
        model.apply(Update::Runtime(Ok(vec![row(32815)])), t0);
        model.apply(Update::Runtime(Ok(vec![row(32837)])), t0);
        assert_eq!(
            texts(&model),
            ["cache: now published at http://127.0.0.1:32837"]
        );
    }

    #[test]
    fn history_and_events_are_bounded() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        for i in 0..(HISTORY as u64 + 10) {
            let up = i % 2 == 0;
            let stats = Stats {
                redis_up: up,
                ..sample(i, 0, i)
            };
            model.apply(Update::Stats(stats), t0 + Duration::from_secs(i));
        }
        assert_eq!(model.cache.history.len(), HISTORY);
        assert_eq!(model.events.len(), EVENTS);
    }
}
