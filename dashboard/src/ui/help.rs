//! The help overlay: the keys, and what the columns and numbers mean.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, Widget},
};

use super::theme::Theme;

pub fn render(theme: &Theme, area: Rect, buf: &mut Buffer) {
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
