//! The data the dashboard shows and how each [`Update`] changes it. No I/O and no clock: every
//! update comes with the instant it arrived, so tests drive it with made-up times.
//!
//! A service may run as several replicas, so the model keeps one view per replica the runtime
//! reports (`cache`, or `cache.1`, `cache.2`… once there are several), and the cache's counters
//! per cache replica, shown summed: the stack's hit ratio is the one over every replica.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Duration,
};

use tokio::time::Instant;
use userctl_proto::{
    cache::v1::{RedisBreaker, Stats},
    requests::v1::RequestStats,
};

use crate::{
    logs::{self, Entry},
    source::{LogLine, LogScope, Service, ServiceRow, label},
};

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

/// One replica of one service: a row of the services table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId {
    pub service: Service,
    /// From 1.
    pub replica: u16,
}

impl ReplicaId {
    pub fn new(service: Service, replica: u16) -> Self {
        Self { service, replica }
    }

    fn of(row: &ServiceRow) -> Self {
        Self::new(row.service, row.replica)
    }

    /// Shown whether or not the runtime reports it: the first replica of every service a stack
    /// always has. Other replicas, and the proxy, are shown while they are reported.
    fn permanent(self) -> bool {
        self.replica == 1 && self.service.always_there()
    }
}

/// Something a feed learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A `CacheStats/WatchStats` sample from one cache replica.
    Stats { replica: u16, stats: Stats },
    /// One cache replica's stats stream could not be opened, failed or ended; the feed retries.
    StatsLost { replica: u16, reason: String },
    /// A `grpc.health.v1.Health/Watch` report from one `usersvc` replica.
    Health { id: ReplicaId, health: GrpcHealth },
    /// A runtime status poll: the rows, or why the runtime could not answer.
    Runtime(Result<Vec<ServiceRow>, String>),
    /// A `Requests/GetRequestStats` answer from one `usersvc` replica.
    Requests { id: ReplicaId, stats: RequestStats },
    /// Recent logs of one service or of every one, or why they could not be read.
    Logs {
        scope: LogScope,
        lines: Result<Vec<(Service, Vec<LogLine>)>, String>,
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

    /// Several replicas' windows as one: rates add up, and the ratio is the one of the summed
    /// rates (each window spans one refresh interval, so rates weigh as counts would).
    fn sum(windows: impl IntoIterator<Item = Self>) -> Option<Self> {
        windows.into_iter().reduce(|total, window| {
            let hits_per_sec = total.hits_per_sec + window.hits_per_sec;
            let misses_per_sec = total.misses_per_sec + window.misses_per_sec;
            let reads = hits_per_sec + misses_per_sec;
            Self {
                ratio: match (total.ratio, window.ratio) {
                    (None, None) => None,
                    _ if reads > 0.0 => Some(hits_per_sec / reads),
                    _ => None,
                },
                hits_per_sec,
                misses_per_sec,
            }
        })
    }
}

/// What one cache replica's counters say.
#[derive(Debug, Clone)]
pub struct ReplicaStats {
    pub link: Link,
    /// The newest sample; kept (and shown as stale) while the stream is down.
    pub latest: Option<Stats>,
    /// Rates and ratio over the last interval.
    pub window: Option<Window>,
    /// The sample the next window is measured from.
    previous: Option<(Stats, Instant)>,
}

impl ReplicaStats {
    fn connecting() -> Self {
        Self {
            link: Link::Connecting,
            latest: None,
            window: None,
            previous: None,
        }
    }
}

/// What the cache's counters say, over every cache replica.
#[derive(Debug, Clone)]
pub struct CacheView {
    /// By replica number: those the runtime reports, and the first always.
    pub replicas: BTreeMap<u16, ReplicaStats>,
    /// Hit ratio per interval in thousandths, over every replica, oldest first; `None` for an
    /// interval with no reads or a gap in the data.
    pub history: VecDeque<Option<u64>>,
    /// The replicas heard from since the last bar: a bar is drawn once every streaming
    /// replica has had its say, so there is one per interval however many replicas report.
    round: BTreeSet<u16>,
}

impl CacheView {
    /// Up while any replica's stream is; else down if one failed; else still connecting.
    pub fn link(&self) -> Link {
        let links = || self.replicas.values().map(|replica| &replica.link);
        if links().any(|link| *link == Link::Up) {
            return Link::Up;
        }
        links()
            .find(|link| matches!(link, Link::Down(_)))
            .cloned()
            .unwrap_or(Link::Connecting)
    }

    /// How many replicas' streams are up, of how many are watched.
    pub fn live(&self) -> (usize, usize) {
        let up = self
            .replicas
            .values()
            .filter(|replica| replica.link == Link::Up)
            .count();
        (up, self.replicas.len())
    }

    /// Every replica's newest sample as one: counters summed (a stale sample counts: those
    /// hits happened), read times the slowest replica's, uptime the youngest's, and Redis up
    /// only if every replica that streams now says so.
    pub fn latest(&self) -> Option<Stats> {
        let samples = || self.replicas.values().filter_map(|r| r.latest.as_ref());
        let live: Vec<bool> = self
            .replicas
            .values()
            .filter(|replica| replica.link == Link::Up)
            .filter_map(|replica| replica.latest.as_ref().map(|s| s.redis_up))
            .collect();
        let redis_up = if live.is_empty() {
            samples().all(|s| s.redis_up)
        } else {
            live.into_iter().all(|up| up)
        };
        samples()
            .copied()
            .reduce(|total, s| Stats {
                hits: total.hits + s.hits,
                misses: total.misses + s.misses,
                negative_hits: total.negative_hits + s.negative_hits,
                store_calls: total.store_calls + s.store_calls,
                redis_errors: total.redis_errors + s.redis_errors,
                redis_up,
                coalesced: total.coalesced + s.coalesced,
                read_p50_us: total.read_p50_us.max(s.read_p50_us),
                read_p99_us: total.read_p99_us.max(s.read_p99_us),
                uptime_secs: total.uptime_secs.min(s.uptime_secs),
                creates: total.creates + s.creates,
                redis_breaker: worse_breaker(total.redis_breaker(), s.redis_breaker()).into(),
                breaker_opens: total.breaker_opens + s.breaker_opens,
                redis_skipped: total.redis_skipped + s.redis_skipped,
            })
            .map(|total| Stats { redis_up, ..total })
    }

    /// The last interval over every replica streaming now.
    pub fn window(&self) -> Option<Window> {
        Window::sum(
            self.replicas
                .values()
                .filter(|replica| replica.link == Link::Up)
                .filter_map(|replica| replica.window),
        )
    }

    /// Hit ratio since the caches started: the same figure `GetStats` gives, summed over the
    /// replicas as `userctl stats` sums it.
    pub fn ratio_since_start(&self) -> Option<f64> {
        self.latest()
            .and_then(|stats| hit_ratio(stats.hits, stats.misses))
    }

    /// Counts `replica` in this interval's round; true when the round is complete.
    fn heard_from(&mut self, replica: u16) -> bool {
        self.round.insert(replica);
        self.round_complete()
    }

    fn round_complete(&self) -> bool {
        !self.round.is_empty()
            && self
                .replicas
                .iter()
                .filter(|(_, replica)| replica.link == Link::Up)
                .all(|(number, _)| self.round.contains(number))
    }

    /// The bar for the round just completed: the ratio over every streaming replica's last
    /// interval (a gap if none was measured, as after a restart).
    fn close_round(&mut self) {
        let point = self.window().and_then(|window| window.ratio);
        self.push_history(point.map(|r| (r * RATIO_SCALE as f64).round() as u64));
        self.round.clear();
    }

    fn push_history(&mut self, point: Option<u64>) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }
}

/// One replica of a service: what the runtime says and what its gRPC health says.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub service: Service,
    /// From 1.
    pub replica: u16,
    /// `None` until the runtime reports it (or when it stops reporting it).
    pub row: Option<ServiceRow>,
    /// Only meaningful for the `usersvc` services.
    pub grpc: GrpcHealth,
}

impl ServiceView {
    fn new(id: ReplicaId, row: Option<ServiceRow>) -> Self {
        Self {
            service: id.service,
            replica: id.replica,
            row,
            grpc: GrpcHealth::Connecting,
        }
    }

    pub fn id(&self) -> ReplicaId {
        ReplicaId::new(self.service, self.replica)
    }
}

/// The last logs fetched, merged in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Logs {
    pub scope: LogScope,
    pub lines: Result<Vec<Entry>, String>,
}

/// How a cache replica's new sample relates to its previous one.
enum Sample {
    First,
    Measured,
    Restarted,
}

/// Everything the screen shows about the stack.
#[derive(Debug, Clone)]
pub struct Model {
    started: Instant,
    /// In [`Service::ALL`] then replica order.
    pub services: Vec<ServiceView>,
    pub runtime: Link,
    /// Whether the runtime has answered once: its first answer is the baseline, not news.
    polled: bool,
    pub cache: CacheView,
    /// Oldest first.
    pub events: VecDeque<Event>,
    pub logs: Option<Logs>,
    /// Each `usersvc` replica's last two answers about its calls.
    requests: BTreeMap<ReplicaId, RequestSamples>,
}

/// The two latest answers of one replica: rates are their difference.
#[derive(Debug, Clone)]
struct RequestSamples {
    latest: (RequestStats, Instant),
    previous: Option<(RequestStats, Instant)>,
}

/// One RPC of one hop, over every replica of its service.
#[derive(Debug, Clone, PartialEq)]
pub struct HopRow {
    pub service: Service,
    pub rpc: String,
    /// Over the last interval; `None` before a replica has answered twice.
    pub calls_per_sec: Option<f64>,
    pub errors_per_sec: Option<f64>,
    /// The code or status most often answered instead of OK since the start, and how often.
    pub top_error: Option<(String, u64)>,
    /// Of the slowest replica, over its recent calls.
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Model {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            services: Service::ALL
                .into_iter()
                .map(|service| ReplicaId::new(service, 1))
                .filter(|id| id.permanent())
                .map(|id| ServiceView::new(id, None))
                .collect(),
            runtime: Link::Connecting,
            polled: false,
            cache: CacheView {
                replicas: BTreeMap::from([(1, ReplicaStats::connecting())]),
                history: VecDeque::with_capacity(HISTORY),
                round: BTreeSet::new(),
            },
            events: VecDeque::with_capacity(EVENTS),
            logs: None,
            requests: BTreeMap::new(),
        }
    }

    pub fn view(&self, id: ReplicaId) -> Option<&ServiceView> {
        self.services.iter().find(|view| view.id() == id)
    }

    /// How a replica is named on screen and in events.
    pub fn label(&self, id: ReplicaId) -> String {
        label(id.service, id.replica, self.replicas_of(id.service) > 1)
    }

    fn replicas_of(&self, service: Service) -> usize {
        self.services
            .iter()
            .filter(|view| view.service == service)
            .count()
    }

    pub fn apply(&mut self, update: Update, at: Instant) {
        match update {
            Update::Stats { replica, stats } => self.stats(replica, stats, at),
            Update::StatsLost { replica, reason } => self.stats_lost(replica, reason, at),
            Update::Health { id, health } => self.health(id, health, at),
            Update::Runtime(Ok(rows)) => self.runtime_rows(rows, at),
            Update::Runtime(Err(reason)) => self.runtime_failed(reason, at),
            Update::Requests { id, stats } => self.requests_answered(id, stats, at),
            Update::Logs { scope, lines } => {
                let lines = lines.map(logs::merge);
                self.logs = Some(Logs { scope, lines });
            }
        }
    }

    fn requests_answered(&mut self, id: ReplicaId, stats: RequestStats, at: Instant) {
        // A replica the runtime stopped reporting: its feed is being stopped.
        if self.view(id).is_none() {
            return;
        }
        let samples = match self.requests.remove(&id) {
            Some(samples) => RequestSamples {
                previous: Some(samples.latest),
                latest: (stats, at),
            },
            None => RequestSamples {
                latest: (stats, at),
                previous: None,
            },
        };
        self.requests.insert(id, samples);
    }

    /// Every RPC each hop answered, over its replicas: front to back, busiest first.
    pub fn hops(&self) -> Vec<HopRow> {
        let mut rows: BTreeMap<(Service, String), HopRow> = BTreeMap::new();
        for (id, samples) in &self.requests {
            let (latest, now) = &samples.latest;
            for rpc in &latest.rpcs {
                let row = rows
                    .entry((id.service, rpc.rpc.clone()))
                    .or_insert_with(|| HopRow {
                        service: id.service,
                        rpc: rpc.rpc.clone(),
                        calls_per_sec: None,
                        errors_per_sec: None,
                        top_error: None,
                        p50_us: 0,
                        p99_us: 0,
                    });
                row.p50_us = row.p50_us.max(rpc.p50_us);
                row.p99_us = row.p99_us.max(rpc.p99_us);
                let errors: u64 = rpc.errors.values().sum();
                if let Some((code, count)) = rpc.errors.iter().max_by_key(|(_, count)| **count) {
                    let more = row.top_error.as_ref().is_none_or(|(_, top)| count > top);
                    if more {
                        row.top_error = Some((code.clone(), *count));
                    }
                }
                let Some((before, then)) = &samples.previous else {
                    continue;
                };
                let secs = now.saturating_duration_since(*then).as_secs_f64();
                let earlier = before.rpcs.iter().find(|earlier| earlier.rpc == rpc.rpc);
                let (calls_then, errors_then) = earlier.map_or((0, 0), |earlier| {
                    (earlier.calls, earlier.errors.values().sum())
                });
                if secs > 0.0 {
                    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
                    *row.calls_per_sec.get_or_insert(0.0) += rate(rpc.calls, calls_then);
                    *row.errors_per_sec.get_or_insert(0.0) += rate(errors, errors_then);
                }
            }
        }
        let mut rows: Vec<HopRow> = rows.into_values().collect();
        rows.sort_by(|a, b| {
            let busy = |row: &HopRow| row.calls_per_sec.unwrap_or(0.0);
            a.service
                .cmp(&b.service)
                .then(busy(b).total_cmp(&busy(a)))
                .then(a.rpc.cmp(&b.rpc))
        });
        rows
    }

    fn stats(&mut self, replica: u16, stats: Stats, at: Instant) {
        let id = ReplicaId::new(Service::Cache, replica);
        // A replica the runtime stopped reporting: its feed is being stopped.
        if self.view(id).is_none() {
            return;
        }
        let name = self.label(id);
        let redis_before = self.cache.latest().map(|s| s.redis_up);
        let entry = self
            .cache
            .replicas
            .entry(replica)
            .or_insert_with(ReplicaStats::connecting);
        let reconnected = matches!(entry.link, Link::Down(_));
        entry.link = Link::Up;
        entry.window = None;
        let sample = match entry.previous.take() {
            Some((before, _)) if restarted(&before, &stats) => Sample::Restarted,
            Some((before, then)) => {
                entry.window = Some(Window::between(&before, &stats, at.duration_since(then)));
                Sample::Measured
            }
            None => Sample::First,
        };
        entry.previous = Some((stats, at));
        entry.latest = Some(stats);

        if reconnected {
            self.event(at, Severity::Info, format!("{name} stats: connected again"));
        }
        match (redis_before, self.cache.latest().map(|s| s.redis_up)) {
            (Some(true), Some(false)) => self.event(
                at,
                Severity::Problem,
                "redis: went down; the cache falls through to the store",
            ),
            (None, Some(false)) => self.event(
                at,
                Severity::Problem,
                "redis: down; the cache falls through to the store",
            ),
            (Some(false), Some(true)) => self.event(at, Severity::Info, "redis: came back"),
            _ => {}
        }
        if let Sample::Restarted = sample {
            self.event(
                at,
                Severity::Warning,
                format!("{name}: restarted; its counters start again from zero"),
            );
        }
        // A first sample measures nothing yet: that replica joins the next round.
        if !matches!(sample, Sample::First) && self.cache.heard_from(replica) {
            self.cache.close_round();
        }
    }

    fn stats_lost(&mut self, replica: u16, reason: String, at: Instant) {
        let id = ReplicaId::new(Service::Cache, replica);
        if self.view(id).is_none() {
            return;
        }
        let name = self.label(id);
        let entry = self
            .cache
            .replicas
            .entry(replica)
            .or_insert_with(ReplicaStats::connecting);
        let before = std::mem::replace(&mut entry.link, Link::Down(reason.clone()));
        // No window measured across the outage.
        entry.previous = None;
        entry.window = None;
        match before {
            Link::Up => {
                self.event(
                    at,
                    Severity::Problem,
                    format!("{name} stats: lost ({reason}); retrying"),
                );
                if self.cache.link() == Link::Up {
                    // The others may have been waiting only for this one.
                    if self.cache.round_complete() {
                        self.cache.close_round();
                    }
                } else {
                    // A gap in the sparkline once no replica reports.
                    self.cache.push_history(None);
                    self.cache.round.clear();
                }
            }
            Link::Connecting => self.event(
                at,
                Severity::Problem,
                format!("{name} stats: cannot connect ({reason}); retrying"),
            ),
            Link::Down(_) => {}
        }
    }

    fn health(&mut self, id: ReplicaId, health: GrpcHealth, at: Instant) {
        let name = self.label(id);
        let Some(view) = self.services.iter_mut().find(|view| view.id() == id) else {
            return;
        };
        let before = std::mem::replace(&mut view.grpc, health);
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

    /// Views follow the rows: a replica the runtime reports gets one (news after the first
    /// answer), and one it no longer reports loses it, except the first replica of each
    /// service, which stays, marked unknown.
    fn runtime_rows(&mut self, rows: Vec<ServiceRow>, at: Instant) {
        if matches!(self.runtime, Link::Down(_)) {
            self.event(at, Severity::Info, "runtime: answering again");
        }
        self.runtime = Link::Up;
        let mut rows: BTreeMap<ReplicaId, ServiceRow> = rows
            .into_iter()
            .map(|row| (ReplicaId::of(&row), row))
            .collect();
        let mut views: BTreeMap<ReplicaId, ServiceView> = std::mem::take(&mut self.services)
            .into_iter()
            .map(|view| (view.id(), view))
            .collect();
        let ids: BTreeSet<ReplicaId> = views.keys().chain(rows.keys()).copied().collect();
        // Named over the replicas before and after, so a scale from one cache to two (or back)
        // speaks of `cache.1` and `cache.2`.
        let several = |service: Service| ids.iter().filter(|id| id.service == service).count() > 1;
        let names: BTreeMap<ReplicaId, String> = ids
            .iter()
            .map(|id| (*id, label(id.service, id.replica, several(id.service))))
            .collect();
        for id in ids {
            let name = &names[&id];
            match (views.remove(&id), rows.remove(&id)) {
                (Some(mut view), row) if row.is_some() || id.permanent() => {
                    if let Some(before) = &view.row {
                        self.row_changes(name, before, row.as_ref(), at);
                    }
                    view.row = row;
                    self.services.push(view);
                }
                (Some(view), _) => {
                    if view.row.is_some() {
                        self.event(
                            at,
                            Severity::Warning,
                            format!("{name}: no longer reported by the runtime"),
                        );
                    }
                    if id.service == Service::Cache {
                        self.cache.replicas.remove(&id.replica);
                        self.cache.round.remove(&id.replica);
                    }
                    self.requests.remove(&id);
                }
                (None, row) => {
                    if self.polled {
                        self.event(
                            at,
                            Severity::Info,
                            format!("{name}: reported by the runtime"),
                        );
                    }
                    if id.service == Service::Cache {
                        self.cache
                            .replicas
                            .entry(id.replica)
                            .or_insert_with(ReplicaStats::connecting);
                    }
                    self.services.push(ServiceView::new(id, row));
                }
            }
        }
        self.polled = true;
    }

    fn row_changes(
        &mut self,
        name: &str,
        before: &ServiceRow,
        after: Option<&ServiceRow>,
        at: Instant,
    ) {
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

/// Of two replicas' breakers, the one to show for the stack: an open breaker anywhere means
/// some reads skip Redis.
fn worse_breaker(a: RedisBreaker, b: RedisBreaker) -> RedisBreaker {
    let rank = |state| match state {
        RedisBreaker::Unspecified => 0,
        RedisBreaker::Closed => 1,
        RedisBreaker::HalfOpen => 2,
        RedisBreaker::Open => 3,
    };
    if rank(b) > rank(a) { b } else { a }
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

    /// A sample from cache replica 1.
    fn stats_of(stats: Stats) -> Update {
        Update::Stats { replica: 1, stats }
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
        model.apply(stats_of(sample(90, 10, 5)), t0);
        assert_eq!(model.cache.window(), None, "one sample has no window yet");
        assert_eq!(model.cache.ratio_since_start(), Some(0.9));

        model.apply(stats_of(sample(100, 30, 7)), t0 + Duration::from_secs(2));
        let window = model.cache.window().expect("a window after two samples");
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
        model.apply(stats_of(sample(5, 5, 1)), t0);
        model.apply(stats_of(sample(5, 5, 2)), t0 + Duration::from_secs(1));
        let window = model.cache.window().expect("window");
        assert_eq!(window.ratio, None);
        assert_eq!(window.hits_per_sec, 0.0);
        assert_eq!(model.cache.history, [None]);
    }

    #[test]
    fn a_cache_restart_starts_a_new_baseline_instead_of_a_negative_delta() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(stats_of(sample(500, 50, 100)), t0);
        model.apply(stats_of(sample(2, 1, 0)), t0 + Duration::from_secs(1));
        assert_eq!(model.cache.window(), None);
        assert!(texts(&model).iter().any(|t| t.contains("cache: restarted")));
        model.apply(stats_of(sample(6, 1, 1)), t0 + Duration::from_secs(2));
        let window = model.cache.window().expect("window after the new baseline");
        assert_eq!(window.ratio, Some(1.0));
    }

    #[test]
    fn redis_going_down_and_coming_back_are_events() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(stats_of(sample(1, 0, 1)), t0);
        let down = Stats {
            redis_up: false,
            redis_errors: 3,
            ..sample(1, 3, 2)
        };
        model.apply(stats_of(down), t0 + Duration::from_secs(1));
        model.apply(stats_of(sample(1, 3, 3)), t0 + Duration::from_secs(2));
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
        model.apply(stats_of(sample(1, 0, 1)), t0);
        for _ in 0..3 {
            model.apply(
                Update::StatsLost {
                    replica: 1,
                    reason: "connection refused".into(),
                },
                t0,
            );
        }
        assert_eq!(model.cache.link(), Link::Down("connection refused".into()));
        assert!(
            model.cache.latest().is_some(),
            "the last sample stays on screen"
        );
        model.apply(stats_of(sample(2, 0, 2)), t0);
        assert_eq!(model.cache.window(), None, "no window across the outage");
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
        let store = ReplicaId::new(Service::Store, 1);
        let health = |health| Update::Health { id: store, health };
        model.apply(health(GrpcHealth::Serving), t0);
        model.apply(health(GrpcHealth::Serving), t0);
        model.apply(health(GrpcHealth::Unreachable), t0);
        model.apply(health(GrpcHealth::Unreachable), t0);
        model.apply(health(GrpcHealth::Serving), t0);
        assert_eq!(texts(&model), ["store: unreachable", "store: serving"]);
        assert_eq!(model.view(store).map(|v| v.grpc), Some(GrpcHealth::Serving));
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
            model.apply(stats_of(stats), t0 + Duration::from_secs(i));
        }
        assert_eq!(model.cache.history.len(), HISTORY);
        assert_eq!(model.events.len(), EVENTS);
    }

    fn running(service: Service, replica: u16) -> ServiceRow {
        ServiceRow {
            replica,
            ..ServiceRow::new(service, "running")
        }
    }

    /// Two gateways behind the proxy, `caches` cache replicas, one of everything else.
    fn stack(caches: u16) -> Vec<ServiceRow> {
        let mut rows = vec![
            running(Service::Postgres, 1),
            running(Service::Redis, 1),
            running(Service::Store, 1),
        ];
        rows.extend((1..=caches).map(|replica| running(Service::Cache, replica)));
        rows.extend([
            running(Service::Gateway, 2),
            running(Service::Gateway, 1),
            running(Service::Proxy, 1),
        ]);
        rows
    }

    fn labels(model: &Model) -> Vec<String> {
        model.services.iter().map(|v| model.label(v.id())).collect()
    }

    fn cache_sample(replica: u16, hits: u64, misses: u64, uptime_secs: u64) -> Update {
        Update::Stats {
            replica,
            stats: sample(hits, misses, uptime_secs),
        }
    }

    #[test]
    fn a_row_per_replica_front_to_back_named_as_userctl_logs_names_them() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        assert_eq!(
            labels(&model),
            ["gateway", "cache", "store", "redis", "postgres"],
            "the first replica of each service before the runtime answers"
        );
        model.apply(Update::Runtime(Ok(stack(2))), t0);
        assert_eq!(
            labels(&model),
            [
                "proxy",
                "gateway.1",
                "gateway.2",
                "cache.1",
                "cache.2",
                "store",
                "redis",
                "postgres"
            ]
        );
        assert!(
            model.services.iter().all(|view| view.row.is_some()),
            "every view has its own row"
        );
        assert!(model.events.is_empty(), "the first poll is the baseline");
        assert_eq!(
            model.cache.live(),
            (0, 2),
            "both cache replicas are watched"
        );
    }

    #[test]
    fn replicas_that_come_and_go_are_events_and_their_rows_follow() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Runtime(Ok(stack(1))), t0);
        model.apply(Update::Runtime(Ok(stack(2))), t0);
        assert_eq!(model.services.len(), 8);
        model.apply(cache_sample(2, 10, 0, 1), t0);
        assert_eq!(model.cache.latest().map(|s| s.hits), Some(10));

        let mut one_gateway = stack(1);
        one_gateway.retain(|row| row.service != Service::Proxy && row.replica == 1);
        model.apply(Update::Runtime(Ok(one_gateway)), t0);
        assert_eq!(
            labels(&model),
            ["gateway", "cache", "store", "redis", "postgres"]
        );
        assert_eq!(
            model.cache.live(),
            (0, 1),
            "cache.2's figures leave with it"
        );
        assert_eq!(model.cache.latest(), None);
        // A sample the stopped feed had already sent changes nothing.
        model.apply(cache_sample(2, 20, 0, 2), t0);
        assert_eq!(model.cache.latest(), None);

        // The first replica of a service stays, unknown, when the runtime stops reporting it.
        model.apply(Update::Runtime(Ok(Vec::new())), t0);
        assert_eq!(model.services.len(), 5);
        assert!(model.services.iter().all(|view| view.row.is_none()));
        assert_eq!(
            texts(&model)[..4],
            [
                "cache.2: reported by the runtime",
                "proxy: no longer reported by the runtime",
                "gateway.2: no longer reported by the runtime",
                "cache.2: no longer reported by the runtime",
            ]
        );
        assert!(texts(&model).contains(&"gateway: no longer reported by the runtime"));
    }

    #[test]
    fn health_is_watched_per_replica() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Runtime(Ok(stack(2))), t0);
        let cache = |replica| ReplicaId::new(Service::Cache, replica);
        for replica in [1, 2] {
            let health = GrpcHealth::Serving;
            model.apply(
                Update::Health {
                    id: cache(replica),
                    health,
                },
                t0,
            );
        }
        let health = GrpcHealth::Unreachable;
        model.apply(
            Update::Health {
                id: cache(2),
                health,
            },
            t0,
        );
        // A replica the runtime does not report is not shown, whatever its feed says.
        let health = GrpcHealth::Unreachable;
        model.apply(
            Update::Health {
                id: cache(3),
                health,
            },
            t0,
        );
        assert_eq!(texts(&model), ["cache.2: unreachable"]);
        assert_eq!(
            model.view(cache(1)).map(|v| v.grpc),
            Some(GrpcHealth::Serving)
        );
        assert_eq!(
            model.view(cache(2)).map(|v| v.grpc),
            Some(GrpcHealth::Unreachable)
        );
        assert!(model.view(cache(3)).is_none());
    }

    #[test]
    fn the_cache_figures_are_the_sum_over_its_replicas() {
        let t0 = Instant::now();
        let second = |n| t0 + Duration::from_secs(n);
        let mut model = Model::new(t0);
        model.apply(Update::Runtime(Ok(stack(2))), t0);
        model.apply(cache_sample(1, 90, 10, 5), t0);
        model.apply(cache_sample(2, 10, 10, 3), t0);
        assert_eq!(model.cache.ratio_since_start(), Some(100.0 / 120.0));
        assert_eq!(
            model.cache.window(),
            None,
            "one sample each has no window yet"
        );

        // One second on: replica 1 read 10 hits, replica 2 read 10 misses.
        model.apply(cache_sample(1, 100, 10, 6), second(1));
        model.apply(cache_sample(2, 10, 20, 4), second(1));
        let window = model.cache.window().expect("a window over both");
        assert_eq!(window.hits_per_sec, 10.0);
        assert_eq!(window.misses_per_sec, 10.0);
        assert_eq!(window.ratio, Some(0.5));
        let total = model.cache.latest().expect("a total");
        assert_eq!((total.hits, total.misses), (110, 30));
        assert_eq!(total.uptime_secs, 4, "the youngest replica's uptime");
        assert_eq!(model.cache.ratio_since_start(), hit_ratio(110, 30));
        assert_eq!(model.cache.live(), (2, 2));
        // One bar per interval, not one per replica's sample.
        assert_eq!(model.cache.history.len(), 1);

        // Replica 2's stream breaks: the panel goes on with replica 1, and says so.
        model.apply(
            Update::StatsLost {
                replica: 2,
                reason: "connection refused".into(),
            },
            second(2),
        );
        model.apply(cache_sample(1, 120, 10, 7), second(2));
        assert_eq!(model.cache.link(), Link::Up);
        assert_eq!(model.cache.live(), (1, 2));
        let window = model.cache.window().expect("replica 1's window");
        assert_eq!((window.hits_per_sec, window.ratio), (20.0, Some(1.0)));
        assert_eq!(
            model.cache.latest().map(|s| s.hits),
            Some(130),
            "replica 2's last count still counts"
        );
        assert_eq!(model.cache.history, [Some(500), Some(1000)]);
        assert_eq!(
            texts(&model),
            ["cache.2 stats: lost (connection refused); retrying"]
        );
    }

    #[test]
    fn redis_is_up_only_if_every_streaming_cache_replica_says_so() {
        let t0 = Instant::now();
        let mut model = Model::new(t0);
        model.apply(Update::Runtime(Ok(stack(2))), t0);
        model.apply(cache_sample(1, 1, 0, 1), t0);
        model.apply(cache_sample(2, 1, 0, 1), t0);
        let down = Stats {
            redis_up: false,
            ..sample(1, 1, 2)
        };
        model.apply(
            Update::Stats {
                replica: 2,
                stats: down,
            },
            t0,
        );
        assert_eq!(model.cache.latest().map(|s| s.redis_up), Some(false));
        model.apply(cache_sample(2, 1, 1, 3), t0);
        assert_eq!(
            texts(&model),
            [
                "redis: went down; the cache falls through to the store",
                "redis: came back"
            ]
        );
    }
}
