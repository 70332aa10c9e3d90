//! Rendering: a pure function of [`App`] into a buffer, so `TestBackend` snapshots pin it down.
//!
//! ```text
//!  header: what is watched, refresh, LIVE/PAUSED
//!  services table, a row per replica      (proxy, gateway, cache, store, redis, postgres)
//!  cache numbers        | hit-ratio sparkline
//!  events, or requests    | logs of the selected service or the stack (when open)
//!  per hop (r)          |
//!  footer: keys
//! ```
//!
//! Small terminals lose panels from the bottom up and columns from the right; below
//! `layout::MIN_WIDTH`×`MIN_HEIGHT` only a note is drawn. State is always spelled out in words or
//! symbols, so the screen reads the same without colour.
//!
//! - `layout`: where each panel goes for a given size.
//! - `theme`: colours, or none for `NO_COLOR`.
//! - one module per panel: `header`, `services`, `cache`, `sparkline`, `events`, `requests`,
//!   `logs`, `help`. Figures are formatted by [`crate::format`].

mod cache;
mod events;
mod header;
mod help;
mod layout;
mod logs;
mod requests;
mod services;
mod sparkline;
mod theme;

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    widgets::{Paragraph, Widget, Wrap},
};

use crate::app::App;
use layout::Panes;
use theme::Theme;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme::new(self.color);
        let Some(panes) = Panes::plan(area, self.logs_open(), self.shown().services.len()) else {
            Paragraph::new("too small")
                .wrap(Wrap { trim: true })
                .style(theme.dim)
                .render(area, buf);
            return;
        };
        let model = self.shown();
        header::header(self, &theme).render(panes.header, buf);
        if let Some(area) = panes.services {
            services::render(self, model, &theme, area, buf);
        }
        if let Some(area) = panes.cache {
            cache::render(&model.cache, &theme, area, buf);
        }
        if let Some(area) = panes.sparkline {
            sparkline::render(&model.cache, self.header.refresh, &theme, area, buf);
        }
        if let Some(area) = panes.events {
            if self.requests_open() {
                requests::render(model, &theme, area, buf);
            } else {
                events::render(model, &theme, area, buf);
            }
        }
        if let Some(area) = panes.logs {
            logs::render(self, &theme, area, buf);
        }
        if let Some(area) = panes.footer {
            header::footer(self, &theme, area, buf);
        }
        if self.help_open() {
            help::render(&theme, area, buf);
        }
    }
}

#[cfg(test)]
mod tests;
