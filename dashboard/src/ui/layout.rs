//! Where each panel goes on a screen of a given size.

use ratatui::layout::{Constraint, Layout, Rect};

pub const MIN_WIDTH: u16 = 20;
pub const MIN_HEIGHT: u16 = 4;
/// Borders and the column titles, above the rows.
const SERVICES_FRAME: u16 = 3;
/// The services table's height with five rows, a stack without replicas. More rows take more
/// lines, up to this or half the body, whichever is more; past that the table scrolls.
const SERVICES_HEIGHT: u16 = SERVICES_FRAME + 5;
/// Borders and six lines of numbers.
const CACHE_HEIGHT: u16 = 8;
/// The cache numbers' width when the sparkline sits beside them.
const CACHE_WIDTH: u16 = 56;
const SPARKLINE_MIN_WIDTH: u16 = 20;
/// A key line is worth a row only on a roomy screen.
const FOOTER_MIN_HEIGHT: u16 = 24;
/// Wide enough to show events and logs side by side.
const SIDE_BY_SIDE_WIDTH: u16 = 100;
/// The events pane's width beside the logs.
const EVENTS_BESIDE_LOGS: u16 = 48;
/// Below this a bottom pane (events, logs) shows too little to be worth it.
const BOTTOM_MIN_HEIGHT: u16 = 3;

/// Where each panel goes; `None` for what does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    pub header: Rect,
    pub services: Option<Rect>,
    pub cache: Option<Rect>,
    pub sparkline: Option<Rect>,
    pub events: Option<Rect>,
    pub logs: Option<Rect>,
    pub footer: Option<Rect>,
}

impl Panes {
    /// `rows`: how many rows the services table has.
    pub fn plan(area: Rect, logs_open: bool, rows: usize) -> Option<Self> {
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
        let wanted = u16::try_from(rows)
            .unwrap_or(u16::MAX)
            .saturating_add(SERVICES_FRAME)
            .min(SERVICES_HEIGHT.max(body.height / 2));
        let (services_height, cache_height) = if body.height >= wanted + CACHE_HEIGHT {
            (wanted, CACHE_HEIGHT)
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
                // Events are short lines; log lines are long and want the room.
                let [events, logs] =
                    Layout::horizontal([Constraint::Max(EVENTS_BESIDE_LOGS), Constraint::Fill(1)])
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
