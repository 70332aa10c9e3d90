//! The recent log lines of the selected row's service.

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    text::Line,
    widgets::{Block, Paragraph, Widget},
};

use super::theme::Theme;
use crate::{app::App, model::Model};

pub fn render(app: &App, model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let service = app.selected().service;
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
