//! The cache's numbers: hit ratios, rates, totals, Redis and read times, summed over every cache
//! replica (read times: the slowest replica's).

use std::time::Duration;

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    style::Style,
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget},
};
use userctl_proto::cache::v1::{RedisBreaker, Stats};

use super::theme::Theme;
use crate::{
    format,
    model::{CacheView, Link},
};

pub fn render(cache: &CacheView, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let link = cache.link();
    let (live, watched) = cache.live();
    let status = match &link {
        Link::Up if live < watched => vec![Span::styled(
            format!("· {live} of {watched} replicas live "),
            theme.warn,
        )],
        Link::Up if watched > 1 => vec![
            Span::styled("· live ", theme.ok),
            Span::raw(format!("· {watched} replicas ")),
        ],
        Link::Up => vec![Span::styled("· live ", theme.ok)],
        Link::Connecting => vec![Span::styled("· connecting… ", theme.dim)],
        Link::Down(_) => vec![Span::styled("· unreachable, retrying ", theme.bad)],
    };
    let title = Line::from([vec![Span::raw(" Cache ")], status].concat());
    // Last known numbers stay, dimmed, while the streams are down.
    let value = if link == Link::Up {
        Style::new()
    } else {
        theme.dim
    };
    let stats = cache.latest();
    let stats = stats.as_ref();
    let count =
        |pick: fn(&Stats) -> u64| stats.map_or_else(|| "-".to_owned(), |s| pick(s).to_string());
    let window = cache.window();
    let window = window.as_ref();
    let now = match window {
        Some(window) => window
            .ratio
            .map_or_else(|| "- (no reads)".to_owned(), format::percent),
        None => "-".to_owned(),
    };
    let since_start = cache
        .ratio_since_start()
        .map_or_else(|| "-".to_owned(), format::percent);
    let rate = |pick: fn(&crate::model::Window) -> f64| {
        window.map_or_else(|| "-".to_owned(), |w| format!("{:.1}", pick(w)))
    };
    let redis = match stats {
        None => Span::styled("-", theme.dim),
        Some(_) if link != Link::Up => Span::styled("? (no stats)", theme.dim),
        Some(s) if s.redis_up => Span::styled("● up", theme.ok),
        Some(_) => Span::styled("✗ down", theme.bad),
    };
    // The cache reports 0 before it has timed a read.
    let latency = |pick: fn(&Stats) -> u64| match stats.map(pick) {
        None | Some(0) => "-".to_owned(),
        Some(us) => format::latency(Duration::from_micros(us)),
    };

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
            Span::raw("  breaker "),
            breaker(stats, link == Link::Up, theme),
        ]),
        line(
            "Read time",
            vec![
                pair("p50", latency(|s| s.read_p50_us)),
                pair("p99", latency(|s| s.read_p99_us)),
                if watched > 1 {
                    vec![Span::styled("slowest replica", theme.dim)]
                } else {
                    Vec::new()
                },
            ],
        ),
    ];
    Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

/// The Redis breaker's state (open: reads go straight to the store); dimmed when it is only
/// the last known one.
fn breaker(stats: Option<&Stats>, live: bool, theme: &Theme) -> Span<'static> {
    let span = match stats.map(Stats::redis_breaker) {
        None | Some(RedisBreaker::Unspecified) => Span::styled("-", theme.dim),
        Some(RedisBreaker::Closed) => Span::styled("closed", theme.ok),
        Some(RedisBreaker::HalfOpen) => Span::styled("half-open", theme.warn),
        Some(RedisBreaker::Open) => Span::styled("open", theme.bad),
    };
    if live { span } else { span.style(theme.dim) }
}
