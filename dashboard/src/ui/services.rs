//! The services table: one row per replica, columns dropped from the right on narrow screens,
//! scrolled to keep the selected row in view when the rows outnumber the lines.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    text::{Line, Span},
    widgets::{Block, Cell, Row, StatefulWidget, Table, TableState},
};

use super::theme::Theme;
use crate::{
    app::App,
    format,
    model::{GrpcHealth, Link, Model, ServiceView},
    source::Service,
};

/// The name column at its narrowest: the selection marker and `postgres`. It is always the
/// first column.
const NAME_WIDTH: u16 = 10;
/// The selection marker before each name.
const MARKER_WIDTH: u16 = 2;

/// One column of the services table; narrower screens drop the highest `drop_order` first.
struct Column {
    title: &'static str,
    /// The least it takes; the name column widens for long replica names.
    width: u16,
    drop_order: u8,
    /// Comes from the runtime's last answer, so it goes stale (dim) while the runtime is down.
    from_runtime: bool,
    cell: fn(&ServiceView, &Model, &Theme) -> Span<'static>,
}

const COLUMNS: [Column; 8] = [
    Column {
        title: "  SERVICE",
        width: NAME_WIDTH,
        drop_order: 0,
        from_runtime: false,
        cell: |view, model, _| Span::raw(model.label(view.id())),
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
        return match (model.cache.link(), model.cache.latest()) {
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
    let name_width = model
        .services
        .iter()
        .map(|view| model.label(view.id()).chars().count())
        .max()
        .and_then(|longest| u16::try_from(longest).ok())
        .map_or(NAME_WIDTH, |longest| {
            (longest + MARKER_WIDTH).max(NAME_WIDTH)
        });
    let columns = fitting_columns(inner_width, name_width);
    let header = Row::new(
        columns
            .iter()
            .map(|column| Cell::from(Span::styled(column.title, theme.title))),
    );
    let stale = matches!(model.runtime, Link::Down(_));
    let selected = app.selected();
    let rows = model.services.iter().map(|view| {
        let selected = view.id() == selected;
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
    let widths = columns
        .iter()
        .enumerate()
        .map(|(i, column)| Constraint::Length(if i == 0 { name_width } else { column.width }));
    // The state only scrolls; the row's own style and marker show the selection.
    let mut state = TableState::default()
        .with_selected(model.services.iter().position(|view| view.id() == selected));
    Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title))
        .render(area, buf, &mut state);
}

/// The columns that fit `width`, dropping whole groups in `drop_order`. The first, the name,
/// always stays, and takes `name_width`.
fn fitting_columns(width: u16, name_width: u16) -> Vec<&'static Column> {
    for keep_up_to in (0..=3).rev() {
        let kept: Vec<&Column> = COLUMNS
            .iter()
            .filter(|column| column.drop_order <= keep_up_to)
            .collect();
        let others: u16 = kept.iter().skip(1).map(|column| column.width + 1).sum();
        if name_width + 1 + others <= width + 1 {
            return kept;
        }
    }
    COLUMNS
        .iter()
        .filter(|column| column.drop_order == 0)
        .collect()
}
