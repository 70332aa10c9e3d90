//! The top line (what is watched, how often, live or paused) and the key line at the bottom.

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    style::Modifier,
    text::{Line, Span},
    widgets::{Paragraph, Widget},
};

use super::theme::Theme;
use crate::{app::App, format};

pub fn header<'a>(app: &'a App, theme: &Theme) -> Line<'a> {
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
            format::duration(app.header.refresh)
        )),
        mode,
        Span::styled(" ? help", theme.dim),
    ])
}

pub fn footer(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let keys = if app.logs_pane().typing.is_some() {
        " type a filter (a word or a regex)  enter applies  esc drops"
    } else if app.logs_open() {
        " q quit  / filter  n N move  f follow  a stack/service  enter close  ? help"
    } else {
        " q quit  ↑↓ select  enter logs  r requests  p pause  ? help"
    };
    Paragraph::new(keys).style(theme.dim).render(area, buf);
}
