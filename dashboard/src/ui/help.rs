//! The help overlay: the keys, and what the columns and numbers mean.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, Widget},
};

use super::theme::Theme;

pub fn render(theme: &Theme, area: Rect, buf: &mut Buffer) {
    let popup = area.centered(Constraint::Max(66), Constraint::Max(22));
    let key = |keys: &'static str, what: &'static str| {
        Line::from(vec![
            Span::styled(format!("  {keys:<16}"), theme.title),
            Span::raw(what),
        ])
    };
    let lines = vec![
        key("q, Ctrl-C", "quit"),
        key("Esc", "close help or logs, else quit"),
        key("↑ ↓  (k j)", "select a row (one per replica)"),
        key("Enter, l", "show or hide the selected service's logs"),
        key("a", "logs: the whole stack merged, or the service"),
        key("/", "logs: filter by a word or regex (Enter, Esc)"),
        key("n  N", "logs: next / previous line shown; f follows"),
        key("r", "requests per hop in place of the events"),
        key("p", "pause or resume the screen (data keeps coming)"),
        key("?", "this help"),
        Line::raw(""),
        Line::styled("  HEALTH  the runtime's own health check", theme.dim),
        Line::styled(
            "  LIVE    gRPC Health/Watch; for redis, the cache's view",
            theme.dim,
        ),
        Line::raw(""),
        Line::raw("  Hit ratio = hits / (hits + misses) over every cache replica;"),
        Line::raw("  negative hits (cached not-found) are counted on their own."),
        Line::raw("  \"now\" is the last interval, \"since start\" since the caches"),
        Line::raw("  started, as `userctl stats` totals CacheStats/GetStats. The"),
        Line::raw("  sparkline spans 0-100% (its lowest step includes 0%); blank"),
        Line::raw("  means no reads."),
    ];
    Clear.render(popup, buf);
    Paragraph::new(lines)
        .block(Block::bordered().title(" Help · ? or Esc closes "))
        .render(popup, buf);
}
