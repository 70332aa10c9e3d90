//! Per hop: what the gateway, the cache and the store each answered, per RPC, over all the
//! replicas of each — calls and errors a second over the last interval, the code most often
//! answered instead of OK, and p50/p99 of the slowest replica.

use std::time::Duration;

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget},
};

use super::theme::Theme;
use crate::{
    format,
    model::{HopRow, Model},
};

pub fn render(model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let rows = usize::from(area.height.saturating_sub(3));
    let hops = fitting(model.hops(), rows);
    let mut lines = vec![Line::styled(
        format!(
            "{:<8} {:<26} {:>8} {:>7} {:>8} {:>8}  {}",
            "HOP", "RPC", "CALLS/S", "ERR/S", "P50", "P99", "TOP ERROR"
        ),
        theme.title,
    )];
    if hops.is_empty() {
        lines.push(Line::styled("no calls answered yet", theme.dim));
    }
    lines.extend(hops.iter().map(|hop| row(hop, theme)));
    Paragraph::new(lines)
        .block(Block::bordered().title(" Requests per hop (r: events) "))
        .render(area, buf);
}

/// The rows that fit in `rows` lines: the busiest RPC of every hop first, then the next
/// busiest, so a short pane still shows each hop; in hop order.
fn fitting(hops: Vec<HopRow>, rows: usize) -> Vec<HopRow> {
    if hops.len() <= rows {
        return hops;
    }
    // `hops` is in hop order, busiest first within a hop: rank each row within its hop.
    let mut ranked: Vec<(usize, usize)> = Vec::with_capacity(hops.len());
    for (i, hop) in hops.iter().enumerate() {
        let rank = match i.checked_sub(1).map(|before| hops[before].service) {
            Some(service) if service == hop.service => ranked[i - 1].0 + 1,
            _ => 0,
        };
        ranked.push((rank, i));
    }
    ranked.sort();
    let mut kept: Vec<usize> = ranked.into_iter().take(rows).map(|(_, i)| i).collect();
    kept.sort_unstable();
    let mut hops: Vec<Option<HopRow>> = hops.into_iter().map(Some).collect();
    kept.into_iter().filter_map(|i| hops[i].take()).collect()
}

fn row<'a>(hop: &'a HopRow, theme: &Theme) -> Line<'a> {
    let rate = |rate: Option<f64>| rate.map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}"));
    let micros = |us: u64| format::latency(Duration::from_micros(us));
    let errors = hop.errors_per_sec.unwrap_or(0.0);
    let error_style = if errors > 0.0 { theme.bad } else { theme.dim };
    let top = hop
        .top_error
        .as_ref()
        .map_or_else(String::new, |(code, count)| format!("{code} ×{count}"));
    Line::from(vec![
        Span::raw(format!(
            "{:<8} {:<26} {:>8} ",
            hop.service.name(),
            truncate(&hop.rpc, 26),
            rate(hop.calls_per_sec)
        )),
        Span::styled(format!("{:>7}", rate(hop.errors_per_sec)), error_style),
        Span::raw(format!(
            " {:>8} {:>8}  ",
            micros(hop.p50_us),
            micros(hop.p99_us)
        )),
        Span::styled(top, error_style),
    ])
}

/// At most `width` characters, with `…` when cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}
