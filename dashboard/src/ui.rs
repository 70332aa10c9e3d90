//! Rendering: a pure function of [`App`] into a buffer, so `TestBackend` snapshots pin it down.
//!
//! ```text
//!  header: what is watched, refresh, LIVE/PAUSED
//!  services table                         (gateway, cache, store, redis, postgres)
//!  cache numbers        | hit-ratio sparkline
//!  events               | logs of the selected service (when open)
//!  footer: keys
//! ```
//!
//! Small terminals lose panels from the bottom up and columns from the right; below
//! [`MIN_WIDTH`]×[`MIN_HEIGHT`] only a note is drawn. State is always spelled out in words or
//! symbols, so the screen reads the same without colour.

use std::time::Duration;

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, SparklineBar, Table, Widget, Wrap},
};
use userctl_proto::cache::v1::Stats;

use crate::{
    app::App,
    model::{CacheView, GrpcHealth, Link, Model, RATIO_SCALE, ServiceView, Severity},
    source::Service,
};

pub const MIN_WIDTH: u16 = 20;
pub const MIN_HEIGHT: u16 = 4;
/// Borders, the column titles and five rows.
const SERVICES_HEIGHT: u16 = 8;
/// Borders and six lines of numbers.
const CACHE_HEIGHT: u16 = 8;
/// The cache numbers' width when the sparkline sits beside them.
const CACHE_WIDTH: u16 = 56;
const SPARKLINE_MIN_WIDTH: u16 = 20;
/// A key line is worth a row only on a roomy screen.
const FOOTER_MIN_HEIGHT: u16 = 24;
/// Wide enough to show events and logs side by side.
const SIDE_BY_SIDE_WIDTH: u16 = 100;
/// Below this a bottom pane (events, logs) shows too little to be worth it.
const BOTTOM_MIN_HEIGHT: u16 = 3;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme::new(self.color);
        let Some(panes) = Panes::plan(area, self.logs_open()) else {
            Paragraph::new("too small")
                .wrap(Wrap { trim: true })
                .style(theme.dim)
                .render(area, buf);
            return;
        };
        let model = self.shown();
        header(self, &theme).render(panes.header, buf);
        if let Some(area) = panes.services {
            services(self, model, &theme, area, buf);
        }
        if let Some(area) = panes.cache {
            cache(&model.cache, &theme, area, buf);
        }
        if let Some(area) = panes.sparkline {
            sparkline(&model.cache, self.header.refresh, &theme, area, buf);
        }
        if let Some(area) = panes.events {
            events(model, &theme, area, buf);
        }
        if let Some(area) = panes.logs {
            logs(self, model, &theme, area, buf);
        }
        if let Some(area) = panes.footer {
            Paragraph::new(" q quit  ↑↓ select  enter logs  p pause  ? help")
                .style(theme.dim)
                .render(area, buf);
        }
        if self.help_open() {
            help(&theme, area, buf);
        }
    }
}

/// Where each panel goes; `None` for what does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Panes {
    header: Rect,
    services: Option<Rect>,
    cache: Option<Rect>,
    sparkline: Option<Rect>,
    events: Option<Rect>,
    logs: Option<Rect>,
    footer: Option<Rect>,
}

impl Panes {
    fn plan(area: Rect, logs_open: bool) -> Option<Self> {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            return None;
        }
        let footer_height = u16::from(area.height >= FOOTER_MIN_HEIGHT);
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(footer_height),
        ])
        .areas(area);

        // The cache numbers matter most, then the services, then the rest.
        let (services_height, cache_height) = if body.height >= SERVICES_HEIGHT + CACHE_HEIGHT {
            (SERVICES_HEIGHT, CACHE_HEIGHT)
        } else if body.height >= CACHE_HEIGHT + 4 {
            (body.height - CACHE_HEIGHT, CACHE_HEIGHT)
        } else {
            (0, body.height.min(CACHE_HEIGHT))
        };
        let [services, mut cache_row, mut bottom] = Layout::vertical([
            Constraint::Length(services_height),
            Constraint::Length(cache_height),
            Constraint::Fill(1),
        ])
        .areas(body);

        // Logs the user asked for take the cache's room rather than not showing.
        if logs_open && bottom.height < BOTTOM_MIN_HEIGHT + 2 {
            bottom = cache_row.union(bottom);
            cache_row = Rect::ZERO;
        }
        let (cache, sparkline) = if cache_row.width >= CACHE_WIDTH + SPARKLINE_MIN_WIDTH {
            let [cache, sparkline] =
                Layout::horizontal([Constraint::Length(CACHE_WIDTH), Constraint::Fill(1)])
                    .areas(cache_row);
            (cache, sparkline)
        } else {
            (cache_row, Rect::ZERO)
        };
        let (events, logs) = match (bottom.height >= BOTTOM_MIN_HEIGHT, logs_open) {
            (false, _) => (Rect::ZERO, Rect::ZERO),
            (true, false) => (bottom, Rect::ZERO),
            (true, true) if bottom.width >= SIDE_BY_SIDE_WIDTH => {
                let [events, logs] =
                    Layout::horizontal([Constraint::Percentage(40), Constraint::Fill(1)])
                        .areas(bottom);
                (events, logs)
            }
            (true, true) => (Rect::ZERO, bottom),
        };
        Some(Self {
            header,
            services: non_empty(services),
            cache: non_empty(cache),
            sparkline: non_empty(sparkline),
            events: non_empty(events),
            logs: non_empty(logs),
            footer: non_empty(footer),
        })
    }
}

fn non_empty(area: Rect) -> Option<Rect> {
    (area.width > 0 && area.height > 0).then_some(area)
}

/// Colours, or none at all for `NO_COLOR`; bold and reverse are not colour and stay.
struct Theme {
    ok: Style,
    warn: Style,
    bad: Style,
    dim: Style,
    title: Style,
    selected: Style,
}

impl Theme {
    fn new(color: bool) -> Self {
        let title = Style::new().add_modifier(Modifier::BOLD);
        let selected = Style::new().add_modifier(Modifier::REVERSED);
        if color {
            Self {
                ok: Style::new().fg(Color::Green),
                warn: Style::new().fg(Color::Yellow),
                bad: Style::new().fg(Color::Red),
                dim: Style::new().fg(Color::DarkGray),
                title,
                selected,
            }
        } else {
            Self {
                ok: Style::new(),
                warn: Style::new(),
                bad: Style::new(),
                dim: Style::new(),
                title,
                selected,
            }
        }
    }

    fn severity(&self, severity: Severity) -> (Style, &'static str) {
        match severity {
            Severity::Info => (self.ok, "·"),
            Severity::Warning => (self.warn, "!"),
            Severity::Problem => (self.bad, "✗"),
        }
    }
}

fn header<'a>(app: &'a App, theme: &Theme) -> Line<'a> {
    let mode = if app.paused() {
        Span::styled(" PAUSED ", theme.warn.add_modifier(Modifier::REVERSED))
    } else {
        Span::styled(" LIVE ", theme.ok)
    };
    Line::from(vec![
        Span::styled(" userctl dashboard", theme.title),
        Span::raw(format!(
            " · {} · every {} ",
            app.header.title,
            short_duration(app.header.refresh)
        )),
        mode,
        Span::styled(" ? help", theme.dim),
    ])
}

/// One column of the services table; narrower screens drop the highest `drop_order` first.
struct Column {
    title: &'static str,
    width: u16,
    drop_order: u8,
    /// Comes from the runtime's last answer, so it goes stale (dim) while the runtime is down.
    from_runtime: bool,
    cell: fn(&ServiceView, &Model, &Theme) -> Span<'static>,
}

const COLUMNS: [Column; 8] = [
    Column {
        title: "  SERVICE",
        width: 10,
        drop_order: 0,
        from_runtime: false,
        cell: |view, _, _| Span::raw(view.service.name()),
    },
    Column {
        title: "STATE",
        width: 10,
        from_runtime: true,
        drop_order: 0,
        cell: state_cell,
    },
    Column {
        title: "HEALTH",
        width: 9,
        from_runtime: true,
        drop_order: 2,
        cell: health_cell,
    },
    Column {
        title: "LIVE",
        width: 13,
        from_runtime: false,
        drop_order: 0,
        cell: live_cell,
    },
    Column {
        title: "UPTIME",
        width: 6,
        from_runtime: true,
        drop_order: 1,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.uptime)
                    .map_or_else(|| "-".to_owned(), short_duration),
            )
        },
    },
    Column {
        title: "RESTARTS",
        width: 8,
        from_runtime: true,
        drop_order: 2,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.restarts)
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            )
        },
    },
    Column {
        title: "CPU",
        width: 6,
        from_runtime: true,
        drop_order: 3,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.cpu_percent)
                    .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            )
        },
    },
    Column {
        title: "MEM",
        width: 9,
        from_runtime: true,
        drop_order: 3,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.memory_bytes)
                    .map_or_else(|| "-".to_owned(), bytes),
            )
        },
    },
];

fn state_cell(view: &ServiceView, model: &Model, theme: &Theme) -> Span<'static> {
    match &view.row {
        Some(row) => {
            let style = match row.state.as_str() {
                "running" => theme.ok,
                "external" | "unused" => theme.dim,
                "restarting" | "starting" | "created" => theme.warn,
                _ => theme.bad,
            };
            Span::styled(row.state.clone(), style)
        }
        None if model.runtime == Link::Connecting => Span::styled("…", theme.dim),
        None => Span::styled("unknown", theme.bad),
    }
}

fn health_cell(view: &ServiceView, _: &Model, theme: &Theme) -> Span<'static> {
    match view.row.as_ref().map(|row| row.health.as_str()) {
        None | Some("none" | "") => Span::styled("-", theme.dim),
        Some("healthy") => Span::styled("healthy", theme.ok),
        Some("starting") => Span::styled("starting", theme.warn),
        Some(other) => Span::styled(other.to_owned(), theme.bad),
    }
}

/// Live health: `Health/Watch` for the `usersvc` services, the cache's view of Redis.
fn live_cell(view: &ServiceView, model: &Model, theme: &Theme) -> Span<'static> {
    if view.service == Service::Redis {
        return match (&model.cache.link, &model.cache.latest) {
            (Link::Up, Some(stats)) if stats.redis_up => Span::styled("● up", theme.ok),
            (Link::Up, Some(_)) => Span::styled("✗ down", theme.bad),
            _ => Span::styled("-", theme.dim),
        };
    }
    if !view.service.is_grpc() {
        return Span::styled("-", theme.dim);
    }
    match view.grpc {
        GrpcHealth::Connecting => Span::styled("… connecting", theme.dim),
        GrpcHealth::Serving => Span::styled("● serving", theme.ok),
        GrpcHealth::NotServing => Span::styled("! not serving", theme.warn),
        GrpcHealth::Unreachable => Span::styled("✗ unreachable", theme.bad),
    }
}

fn services(app: &App, model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let inner_width = area.width.saturating_sub(2);
    let columns = fitting_columns(inner_width);
    let header = Row::new(
        columns
            .iter()
            .map(|column| Cell::from(Span::styled(column.title, theme.title))),
    );
    let stale = matches!(model.runtime, Link::Down(_));
    let rows = model.services.iter().map(|view| {
        let selected = view.service == app.selected();
        let cells = columns.iter().enumerate().map(|(i, column)| {
            let mut span = (column.cell)(view, model, theme);
            if stale && column.from_runtime {
                span = span.style(theme.dim);
            }
            // A marker as well as reverse video, for terminals that show neither colour nor
            // reverse.
            let marker = match (i, selected) {
                (0, true) => "▶ ",
                (0, false) => "  ",
                _ => "",
            };
            Cell::from(Line::from(vec![Span::raw(marker), span]))
        });
        let row = Row::new(cells);
        if selected {
            row.style(theme.selected)
        } else {
            row
        }
    });
    let title = match &model.runtime {
        Link::Up => Line::from(" Services "),
        Link::Connecting => Line::from(vec![
            Span::raw(" Services "),
            Span::styled("· asking the runtime… ", theme.dim),
        ]),
        Link::Down(reason) => Line::from(vec![
            Span::raw(" Services "),
            Span::styled(format!("· runtime: {reason}; retrying "), theme.bad),
        ]),
    };
    Table::new(rows, columns.iter().map(|column| column.width))
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

/// The columns that fit `width`, dropping whole groups in `drop_order`.
fn fitting_columns(width: u16) -> Vec<&'static Column> {
    for keep_up_to in (0..=3).rev() {
        let kept: Vec<&Column> = COLUMNS
            .iter()
            .filter(|column| column.drop_order <= keep_up_to)
            .collect();
        let needed: u16 = kept.iter().map(|column| column.width + 1).sum();
        if needed <= width + 1 {
            return kept;
        }
    }
    COLUMNS
        .iter()
        .filter(|column| column.drop_order == 0)
        .collect()
}

fn cache(cache: &CacheView, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let title = match &cache.link {
        Link::Up => Line::from(vec![
            Span::raw(" Cache "),
            Span::styled("· live ", theme.ok),
        ]),
        Link::Connecting => Line::from(vec![
            Span::raw(" Cache "),
            Span::styled("· connecting… ", theme.dim),
        ]),
        Link::Down(_) => Line::from(vec![
            Span::raw(" Cache "),
            Span::styled("· unreachable, retrying ", theme.bad),
        ]),
    };
    // Last known numbers stay, dimmed, while the stream is down.
    let value = if cache.link == Link::Up {
        Style::new()
    } else {
        theme.dim
    };
    let stats = cache.latest.as_ref();
    let count =
        |pick: fn(&Stats) -> u64| stats.map_or_else(|| "-".to_owned(), |s| pick(s).to_string());
    let window = cache.window.as_ref();
    let now = match window {
        Some(window) => window
            .ratio
            .map_or_else(|| "- (no reads)".to_owned(), percent),
        None => "-".to_owned(),
    };
    let since_start = cache
        .ratio_since_start()
        .map_or_else(|| "-".to_owned(), percent);
    let rate = |pick: fn(&crate::model::Window) -> f64| {
        window.map_or_else(|| "-".to_owned(), |w| format!("{:.1}", pick(w)))
    };
    let redis = match stats {
        None => Span::styled("-", theme.dim),
        Some(_) if cache.link != Link::Up => Span::styled("? (no stats)", theme.dim),
        Some(s) if s.redis_up => Span::styled("● up", theme.ok),
        Some(_) => Span::styled("✗ down (store serves reads)", theme.bad),
    };
    let latency =
        |pick: fn(&Stats) -> u64| stats.map_or_else(|| "-".to_owned(), |s| micros(pick(s)));

    let label = |text: &'static str| Span::styled(format!("{text:<11}"), theme.title);
    let pair = |name: &'static str, text: String| {
        vec![
            Span::raw(format!("{name} ")),
            Span::styled(text, value),
            Span::raw("  "),
        ]
    };
    let line = |name: &'static str, parts: Vec<Vec<Span<'static>>>| {
        Line::from(
            std::iter::once(label(name))
                .chain(parts.into_iter().flatten())
                .collect::<Vec<_>>(),
        )
    };
    let lines = vec![
        line(
            "Hit ratio",
            vec![pair("now", now), pair("since start", since_start)],
        ),
        line(
            "Per second",
            vec![
                pair("hits", rate(|w| w.hits_per_sec)),
                pair("misses", rate(|w| w.misses_per_sec)),
            ],
        ),
        line(
            "Totals",
            vec![
                pair("hits", count(|s| s.hits)),
                pair("misses", count(|s| s.misses)),
                pair("negative hits", count(|s| s.negative_hits)),
            ],
        ),
        line(
            "Store",
            vec![
                pair("calls", count(|s| s.store_calls)),
                pair("coalesced misses", count(|s| s.coalesced)),
            ],
        ),
        Line::from(vec![
            label("Redis"),
            redis,
            Span::raw("  errors "),
            Span::styled(count(|s| s.redis_errors), value),
        ]),
        line(
            "Read time",
            vec![
                pair("p50", latency(|s| s.read_p50_us)),
                pair("p99", latency(|s| s.read_p99_us)),
            ],
        ),
    ];
    Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn sparkline(cache: &CacheView, refresh: Duration, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let bars = usize::from(area.width.saturating_sub(2));
    let skip = cache.history.len().saturating_sub(bars);
    let shown: Vec<Option<u64>> = cache.history.iter().skip(skip).copied().collect();
    let span = refresh.saturating_mul(u32::try_from(shown.len()).unwrap_or(u32::MAX));
    let block = Block::bordered().title(format!(" Hit ratio, last {} ", short_duration(span)));
    // A ratio of 0% still gets the lowest visible bar, so it differs from an interval with no
    // reads (blank); colour says how good each ratio is.
    let floor = RATIO_SCALE.div_ceil(u64::from(area.height.saturating_sub(2)).max(1) * 8);
    let bars = shown.into_iter().map(|point| {
        let bar = SparklineBar::from(point.map(|p| p.max(floor)));
        match point {
            Some(p) if p >= RATIO_SCALE * 9 / 10 => bar.style(theme.ok),
            Some(p) if p >= RATIO_SCALE / 2 => bar.style(theme.warn),
            Some(_) => bar.style(theme.bad),
            None => bar,
        }
    });
    Sparkline::default()
        .block(block)
        .data(bars)
        .max(RATIO_SCALE)
        .render(area, buf);
}

fn events(model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let rows = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line> = if model.events.is_empty() {
        vec![Line::styled("no changes yet", theme.dim)]
    } else {
        model
            .events
            .iter()
            .rev()
            .take(rows)
            .map(|event| {
                let (style, symbol) = theme.severity(event.severity);
                Line::from(vec![
                    Span::styled(clock(event.at), theme.dim),
                    Span::styled(format!(" {symbol} "), style),
                    Span::raw(event.text.clone()),
                ])
            })
            .collect()
    };
    Paragraph::new(lines)
        .block(Block::bordered().title(" Events (time since start, newest first) "))
        .render(area, buf);
}

fn logs(app: &App, model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let service = app.selected();
    let rows = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line> = match &model.logs {
        Some(logs) if logs.service == service => match &logs.lines {
            Ok(lines) if lines.is_empty() => vec![Line::styled("no log lines", theme.dim)],
            Ok(lines) => lines[lines.len().saturating_sub(rows)..]
                .iter()
                .map(|line| Line::raw(line.clone()))
                .collect(),
            Err(reason) => vec![Line::styled(
                format!("cannot read the logs: {reason}"),
                theme.bad,
            )],
        },
        _ if app.paused() => vec![Line::styled("paused; p resumes", theme.dim)],
        _ => vec![Line::styled("loading…", theme.dim)],
    };
    Paragraph::new(lines)
        .block(Block::bordered().title(format!(" Logs · {} · enter closes ", service.name())))
        .render(area, buf);
}

fn help(theme: &Theme, area: Rect, buf: &mut Buffer) {
    let popup = area.centered(Constraint::Max(66), Constraint::Max(18));
    let key = |keys: &'static str, what: &'static str| {
        Line::from(vec![
            Span::styled(format!("  {keys:<16}"), theme.title),
            Span::raw(what),
        ])
    };
    let lines = vec![
        key("q, Ctrl-C", "quit"),
        key("Esc", "close help or logs, else quit"),
        key("↑ ↓  (k j)", "select a service"),
        key("Enter, l", "show or hide the selected service's logs"),
        key("p", "pause or resume the screen (data keeps coming)"),
        key("?", "this help"),
        Line::raw(""),
        Line::styled("  HEALTH  the runtime's own health check", theme.dim),
        Line::styled(
            "  LIVE    gRPC Health/Watch; for redis, the cache's view",
            theme.dim,
        ),
        Line::raw(""),
        Line::raw("  Hit ratio = hits / (hits + misses); negative hits (cached"),
        Line::raw("  not-found) are counted on their own. \"now\" is the last"),
        Line::raw("  interval, \"since start\" since the cache started, as"),
        Line::raw("  CacheStats/GetStats reports it. The sparkline spans 0-100%"),
        Line::raw("  (its lowest step includes 0%); blank means no reads."),
    ];
    Clear.render(popup, buf);
    Paragraph::new(lines)
        .block(Block::bordered().title(" Help · ? or Esc closes "))
        .render(popup, buf);
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn micros(us: u64) -> String {
    match us {
        0 => "-".to_owned(),
        1..1000 => format!("{us} µs"),
        _ => format!("{:.1} ms", us as f64 / 1000.0),
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= 1024.0 * MIB {
        format!("{:.1} GiB", n / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", n / MIB)
    }
}

/// `45s`, `12m05s`, `3h02m`, `2d04h`: two units at most, for narrow columns.
fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 if duration.subsec_millis() > 0 => format!("{}ms", duration.subsec_millis()),
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// `hh:mm:ss` of a time since the dashboard started.
fn clock(at: Duration) -> String {
    let secs = at.as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{Terminal, backend::TestBackend};
    use tokio::time::Instant;

    use super::*;
    use crate::{
        app::Header,
        model::Update,
        source::{Service, ServiceRow},
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
            app.apply(Update::Health { service, health }, t0);
        }
        for second in 0..=seconds {
            let at = t0 + Duration::from_secs(second);
            app.apply(Update::Stats(stats(second, true, 0)), at);
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
            app.apply(Update::Stats(sample), at);
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
            Update::StatsLost("Connection refused (os error 111)".into()),
            at,
        );
        for service in [Service::Gateway, Service::Cache, Service::Store] {
            let health = GrpcHealth::Unreachable;
            app.apply(Update::Health { service, health }, at);
        }
        app.apply(
            Update::Runtime(Err("cannot reach the Docker engine".into())),
            at,
        );
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
    fn before_anything_answers() {
        let header = Header {
            title: "project demo · local runtime".into(),
            refresh: Duration::from_millis(500),
        };
        let app = App::new(header, false, Instant::now());
        insta::assert_snapshot!(screen(&app, 80, 24));
    }

    #[test]
    fn the_logs_pane_shows_the_selected_service() {
        let (mut app, t0) = watched(5);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        let lines = (1..=40).map(|i| format!("cache log line {i}")).collect();
        app.apply(
            Update::Logs {
                service: Service::Cache,
                lines: Ok(lines),
            },
            t0,
        );
        insta::assert_snapshot!(screen(&app, 120, 32));
        insta::assert_snapshot!("logs_on_a_small_terminal", screen(&app, 60, 16));
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

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(725)), "12m05s");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(
            short_duration(Duration::from_secs(2 * 86400 + 4 * 3600)),
            "2d04h"
        );
        assert_eq!(clock(Duration::from_secs(3725)), "01:02:05");
    }
}
