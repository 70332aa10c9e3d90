//! The services table: one row per service, columns dropped from the right on narrow screens.

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Cell, Row, Table, Widget},
};

use super::theme::Theme;
use crate::{
    app::App,
    format,
    model::{GrpcHealth, Link, Model, ServiceView},
    source::Service,
};

/// One column of the services table; narrower screens drop the highest `drop_order` first.
struct Column {
    title: &'static str,
    width: u16,
    drop_order: u8,
    /// Comes from the runtime's last answer, so it goes stale (dim) while the runtime is down.
    from_runtime: bool,
    cell: fn(&ServiceView, &Model, &Theme) -> Span<'static>,
}

const COLUMNS: [Column; 8] = [
    Column {
        title: "  SERVICE",
        width: 10,
        drop_order: 0,
        from_runtime: false,
        cell: |view, _, _| Span::raw(view.service.name()),
    },
    Column {
        title: "STATE",
        width: 10,
        from_runtime: true,
        drop_order: 0,
        cell: state_cell,
    },
    Column {
        title: "HEALTH",
        width: 9,
        from_runtime: true,
        drop_order: 2,
        cell: health_cell,
    },
    Column {
        title: "LIVE",
        width: 13,
        from_runtime: false,
        drop_order: 0,
        cell: live_cell,
    },
    Column {
        title: "UPTIME",
        width: 6,
        from_runtime: true,
        drop_order: 1,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.uptime)
                    .map_or_else(|| "-".to_owned(), format::duration),
            )
        },
    },
    Column {
        title: "RESTARTS",
        width: 8,
        from_runtime: true,
        drop_order: 2,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.restarts)
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            )
        },
    },
    Column {
        title: "CPU",
        width: 6,
        from_runtime: true,
        drop_order: 3,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.cpu_percent)
                    .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            )
        },
    },
    Column {
        title: "MEM",
        width: 9,
        from_runtime: true,
        drop_order: 3,
        cell: |view, _, _| {
            Span::raw(
                view.row
                    .as_ref()
                    .and_then(|row| row.memory_bytes)
                    .map_or_else(|| "-".to_owned(), format::bytes),
            )
        },
    },
];

fn state_cell(view: &ServiceView, model: &Model, theme: &Theme) -> Span<'static> {
    match &view.row {
        Some(row) => {
            let style = match row.state.as_str() {
                "running" => theme.ok,
                "external" | "unused" => theme.dim,
                "restarting" | "starting" | "created" => theme.warn,
                _ => theme.bad,
            };
            Span::styled(row.state.clone(), style)
        }
        None if model.runtime == Link::Connecting => Span::styled("…", theme.dim),
        None => Span::styled("unknown", theme.bad),
    }
}

fn health_cell(view: &ServiceView, _: &Model, theme: &Theme) -> Span<'static> {
    match view.row.as_ref().map(|row| row.health.as_str()) {
        None | Some("none" | "") => Span::styled("-", theme.dim),
        Some("healthy") => Span::styled("healthy", theme.ok),
        Some("starting") => Span::styled("starting", theme.warn),
        Some(other) => Span::styled(other.to_owned(), theme.bad),
    }
}

/// Live health: `Health/Watch` for the `usersvc` services, the cache's view of Redis.
fn live_cell(view: &ServiceView, model: &Model, theme: &Theme) -> Span<'static> {
    if view.service == Service::Redis {
        return match (&model.cache.link, &model.cache.latest) {
            (Link::Up, Some(stats)) if stats.redis_up => Span::styled("● up", theme.ok),
            (Link::Up, Some(_)) => Span::styled("✗ down", theme.bad),
            _ => Span::styled("-", theme.dim),
        };
    }
    if !view.service.is_grpc() {
        return Span::styled("-", theme.dim);
    }
    match view.grpc {
        GrpcHealth::Connecting => Span::styled("… connecting", theme.dim),
        GrpcHealth::Serving => Span::styled("● serving", theme.ok),
        GrpcHealth::NotServing => Span::styled("! not serving", theme.warn),
        GrpcHealth::Unreachable => Span::styled("✗ unreachable", theme.bad),
    }
}

pub fn render(app: &App, model: &Model, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let inner_width = area.width.saturating_sub(2);
    let columns = fitting_columns(inner_width);
    let header = Row::new(
        columns
            .iter()
            .map(|column| Cell::from(Span::styled(column.title, theme.title))),
    );
    let stale = matches!(model.runtime, Link::Down(_));
    let rows = model.services.iter().map(|view| {
        let selected = view.service == app.selected();
        let cells = columns.iter().enumerate().map(|(i, column)| {
            let mut span = (column.cell)(view, model, theme);
            if stale && column.from_runtime {
                span = span.style(theme.dim);
            }
            // A marker as well as reverse video, for terminals that show neither colour nor
            // reverse.
            let marker = match (i, selected) {
                (0, true) => "▶ ",
                (0, false) => "  ",
                _ => "",
            };
            Cell::from(Line::from(vec![Span::raw(marker), span]))
        });
        let row = Row::new(cells);
        if selected {
            row.style(theme.selected)
        } else {
            row
        }
    });
    let title = match &model.runtime {
        Link::Up => Line::from(" Services "),
        Link::Connecting => Line::from(vec![
            Span::raw(" Services "),
            Span::styled("· asking the runtime… ", theme.dim),
        ]),
        Link::Down(reason) => Line::from(vec![
            Span::raw(" Services "),
            Span::styled(format!("· runtime: {reason}; retrying "), theme.bad),
        ]),
    };
    Table::new(rows, columns.iter().map(|column| column.width))
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

/// The columns that fit `width`, dropping whole groups in `drop_order`.
fn fitting_columns(width: u16) -> Vec<&'static Column> {
    for keep_up_to in (0..=3).rev() {
        let kept: Vec<&Column> = COLUMNS
            .iter()
            .filter(|column| column.drop_order <= keep_up_to)
            .collect();
        let needed: u16 = kept.iter().map(|column| column.width + 1).sum();
        if needed <= width + 1 {
            return kept;
        }
    }
    COLUMNS
        .iter()
        .filter(|column| column.drop_order == 0)
        .collect()
}
