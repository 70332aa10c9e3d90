//! The logs pane: the selected service's lines, or the whole stack's merged in time order, as
//! `time source text`, levels coloured, the filter's matches marked, following the newest line
//! unless `n`/`N` chose one.

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget},
};

use super::theme::Theme;
use crate::{
    app::{App, ShownLogs},
    logs::{Entry, Filter, Level},
    source::LogScope,
};

/// `HH:MM:SS.mmm`
const TIME_WIDTH: usize = 12;
/// `gateway.2`, `postgres`
const SOURCE_WIDTH: usize = 9;

pub fn render(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let pane = app.logs_pane();
    let mut rows = usize::from(area.height.saturating_sub(2));
    let mut head = Vec::new();
    if let Filter::Invalid { error, .. } = &pane.filter {
        head.push(Line::styled(
            format!("filter is not a regex: {error}; showing every line"),
            theme.bad,
        ));
    }
    let foot = pane
        .typing
        .as_ref()
        .map(|typing| Line::styled(format!("/{typing}█"), theme.title));
    rows = rows.saturating_sub(head.len() + usize::from(foot.is_some()));

    let shown = app.shown_logs();
    let mut title = format!(" Logs · {}", scope_name(app));
    let body: Vec<Line> = match &shown {
        Some(Ok(shown)) => {
            title.push_str(&counts(&pane.filter, shown));
            lines(shown, &pane.filter, theme, rows)
        }
        Some(Err(reason)) => vec![Line::styled(
            format!("cannot read the logs: {reason}"),
            theme.bad,
        )],
        None if app.paused() => vec![Line::styled("paused; p resumes", theme.dim)],
        None => vec![Line::styled("loading…", theme.dim)],
    };
    title.push_str(" · enter closes ");
    let mut text = head;
    text.extend(body.into_iter().take(rows));
    if let Some(foot) = foot {
        while text.len() < usize::from(area.height.saturating_sub(3)) {
            text.push(Line::raw(""));
        }
        text.push(foot);
    }
    Paragraph::new(text)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn scope_name(app: &App) -> String {
    match app.logs_wanted() {
        Some(LogScope::Service(service)) => service.name().to_owned(),
        Some(LogScope::Stack) | None => "whole stack".to_owned(),
    }
}

/// ` · /query 12 of 200 · following`
fn counts(filter: &Filter, shown: &ShownLogs) -> String {
    let mut text = String::new();
    if let Filter::On { query, .. } = filter {
        text.push_str(&format!(
            " · /{query} {} of {}",
            shown.lines.len(),
            shown.fetched
        ));
    }
    match shown.cursor {
        None => text.push_str(" · following"),
        Some(at) => text.push_str(&format!(" · line {} of {}", at + 1, shown.lines.len())),
    }
    text
}

/// The window of lines that fits: the newest while following, else around the chosen one.
fn lines<'a>(shown: &ShownLogs<'a>, filter: &Filter, theme: &Theme, rows: usize) -> Vec<Line<'a>> {
    if shown.lines.is_empty() {
        let empty = if shown.fetched == 0 {
            "no log lines"
        } else {
            "no line matches the filter; / changes it"
        };
        return vec![Line::styled(empty, theme.dim)];
    }
    let len = shown.lines.len();
    let start = match shown.cursor {
        None => len.saturating_sub(rows),
        Some(at) => at.saturating_sub(rows / 2).min(len.saturating_sub(rows)),
    };
    shown.lines[start..]
        .iter()
        .take(rows)
        .enumerate()
        .map(|(i, entry)| {
            let chosen = shown.cursor == Some(start + i);
            line(entry, filter, theme, chosen)
        })
        .collect()
}

fn line<'a>(entry: &'a Entry, filter: &Filter, theme: &Theme, chosen: bool) -> Line<'a> {
    let level = match entry.level {
        Level::Error => theme.bad,
        Level::Warn => theme.warn,
        Level::Debug => theme.dim,
        Level::Info | Level::Unknown => Style::new(),
    };
    let time = entry.time.as_deref().unwrap_or("");
    let mut spans = vec![
        Span::styled(format!("{time:<TIME_WIDTH$} "), theme.dim),
        Span::raw(format!("{:<SOURCE_WIDTH$} ", entry.source)),
    ];
    // The filter looks at `source text`: its matches in the text start after `source `.
    let offset = entry.source.len() + 1;
    let matched = Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    let mut at = 0;
    for range in filter.spans(&entry.searchable()) {
        let (Some(from), Some(to)) = (
            range.start.checked_sub(offset),
            range.end.checked_sub(offset),
        ) else {
            continue;
        };
        if from < at || !entry.text.is_char_boundary(from) || !entry.text.is_char_boundary(to) {
            continue;
        }
        spans.push(Span::styled(&entry.text[at..from], level));
        spans.push(Span::styled(&entry.text[from..to], level.patch(matched)));
        at = to;
    }
    spans.push(Span::styled(&entry.text[at..], level));
    let line = Line::from(spans);
    if chosen {
        line.style(theme.selected)
    } else {
        line
    }
}
