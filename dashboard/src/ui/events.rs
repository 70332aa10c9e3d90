//! What changed, newest first.

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget},
};

use super::theme::Theme;
use crate::{format, model::Model};

pub fn render(model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
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
                    Span::styled(format::clock(event.at), theme.dim),
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
