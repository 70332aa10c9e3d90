//! The dashboard's state: the live [`Model`], what the user is looking at, and what each key
//! does. Rendering reads it (`Widget for &App`, in the `ui` module); nothing here draws or does
//! I/O.

use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::time::Instant;

use crate::{
    model::{Model, ReplicaId, Update},
    source::Service,
};

/// What the event loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// Fixed facts for the header.
#[derive(Debug, Clone)]
pub struct Header {
    /// What this dashboard watches, e.g. "project userctl · local runtime".
    pub title: String,
    /// The refresh interval, which is also one sparkline bar.
    pub refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct App {
    pub header: Header,
    /// Whether to use colour (`NO_COLOR` turns it off); state is always spelled out too.
    pub color: bool,
    live: Model,
    /// The model as it was when the user paused; data keeps arriving into `live` meanwhile,
    /// so resuming shows the present and no event is lost.
    frozen: Option<Model>,
    /// The selected row; it stays on its replica as rows come and go.
    selected: ReplicaId,
    logs_open: bool,
    help_open: bool,
}

impl App {
    pub fn new(header: Header, color: bool, started: Instant) -> Self {
        Self {
            header,
            color,
            live: Model::new(started),
            frozen: None,
            selected: ReplicaId::new(Service::Gateway, 1),
            logs_open: false,
            help_open: false,
        }
    }

    pub fn apply(&mut self, update: Update, at: Instant) {
        self.live.apply(update, at);
    }

    /// What the screen shows: the live model, or the frozen one while paused.
    pub fn shown(&self) -> &Model {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// The selected row: the replica chosen, or the nearest still shown if it went away.
    pub fn selected(&self) -> ReplicaId {
        self.selected_index()
            .and_then(|index| self.shown().services.get(index))
            .map_or(self.selected, |view| view.id())
    }

    /// Where the selected row is in the shown model: the replica chosen, else the row that took
    /// its place (the rows are sorted, so the next one down), else the last.
    fn selected_index(&self) -> Option<usize> {
        let services = &self.shown().services;
        let last = services.len().checked_sub(1)?;
        Some(
            services
                .iter()
                .position(|view| view.id() >= self.selected)
                .unwrap_or(last),
        )
    }

    pub fn logs_open(&self) -> bool {
        self.logs_open
    }

    pub fn help_open(&self) -> bool {
        self.help_open
    }

    /// The service whose logs the logs feed should fetch, if any: the selected replica's
    /// service (runtimes keep logs per service, or only the first replica's).
    pub fn logs_wanted(&self) -> Option<Service> {
        self.logs_open.then(|| self.selected().service)
    }

    /// A terminal event; only key presses matter (resizes just redraw).
    pub fn handle_event(&mut self, event: &Event) -> Action {
        match event {
            Event::Key(key) if key.kind == KeyEventKind::Press => self.handle_key(*key),
            _ => Action::Continue,
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
            KeyCode::Char('q') => Action::Quit,
            // Esc closes what is open first, so it never quits by surprise.
            KeyCode::Esc if self.help_open => {
                self.help_open = false;
                Action::Continue
            }
            KeyCode::Esc if self.logs_open => {
                self.logs_open = false;
                Action::Continue
            }
            KeyCode::Esc => Action::Quit,
            KeyCode::Char('?') => {
                self.help_open = !self.help_open;
                Action::Continue
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.select(-1);
                Action::Continue
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.select(1);
                Action::Continue
            }
            KeyCode::Enter | KeyCode::Char('l') => {
                self.logs_open = !self.logs_open;
                Action::Continue
            }
            KeyCode::Char('p') => {
                self.frozen = match self.frozen.take() {
                    Some(_) => None,
                    None => Some(self.live.clone()),
                };
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn select(&mut self, step: isize) {
        let Some(current) = self.selected_index() else {
            return;
        };
        let services = &self.shown().services;
        let index = current
            .saturating_add_signed(step)
            .min(services.len().saturating_sub(1));
        if let Some(view) = services.get(index) {
            self.selected = view.id();
        }
    }
}

#[cfg(test)]
mod tests {
    use userctl_proto::cache::v1::Stats;

    use super::*;

    fn app() -> App {
        App::new(
            Header {
                title: "test".into(),
                refresh: Duration::from_secs(1),
            },
            false,
            Instant::now(),
        )
    }

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn q_and_ctrl_c_quit() {
        assert_eq!(press(&mut app(), KeyCode::Char('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app().handle_key(ctrl_c), Action::Quit);
    }

    #[test]
    fn esc_closes_help_then_logs_then_quits() {
        let mut app = app();
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Continue);
        assert!(!app.help_open() && app.logs_open());
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Continue);
        assert!(!app.logs_open());
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Quit);
    }

    #[test]
    fn arrows_select_within_the_five_services_and_logs_follow_the_selection() {
        let mut app = app();
        press(&mut app, KeyCode::Up);
        assert_eq!(app.selected(), ReplicaId::new(Service::Gateway, 1));
        for _ in 0..10 {
            press(&mut app, KeyCode::Down);
        }
        assert_eq!(app.selected(), ReplicaId::new(Service::Postgres, 1));
        press(&mut app, KeyCode::Up);
        assert_eq!(app.logs_wanted(), None);
        press(&mut app, KeyCode::Char('l'));
        assert_eq!(app.logs_wanted(), Some(Service::Redis));
    }

    #[test]
    fn pause_freezes_the_screen_but_not_the_data() {
        let mut app = app();
        let t0 = Instant::now();
        let stats = |hits| Update::Stats {
            replica: 1,
            stats: Stats {
                hits,
                redis_up: true,
                ..Stats::default()
            },
        };
        app.apply(stats(1), t0);
        press(&mut app, KeyCode::Char('p'));
        app.apply(stats(5), t0);
        assert!(app.paused());
        assert_eq!(app.shown().cache.latest().map(|s| s.hits), Some(1));
        press(&mut app, KeyCode::Char('p'));
        assert_eq!(app.shown().cache.latest().map(|s| s.hits), Some(5));
    }

    #[test]
    fn the_selection_stays_on_its_replica_and_moves_down_when_it_goes_away() {
        use crate::source::ServiceRow;

        let mut app = app();
        let t0 = Instant::now();
        let rows = |caches: u16, proxy: bool| {
            let mut rows = vec![ServiceRow::new(Service::Gateway, "running")];
            if proxy {
                rows.push(ServiceRow::new(Service::Proxy, "running"));
            }
            rows.extend((1..=caches).map(|replica| ServiceRow {
                replica,
                ..ServiceRow::new(Service::Cache, "running")
            }));
            rows.push(ServiceRow::new(Service::Store, "running"));
            Update::Runtime(Ok(rows))
        };
        app.apply(rows(3, false), t0);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        assert_eq!(app.selected(), ReplicaId::new(Service::Cache, 2));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.logs_wanted(), Some(Service::Cache));

        // A row added above (the proxy, first) does not move the selection off cache.2.
        app.apply(rows(3, true), t0);
        assert_eq!(app.selected(), ReplicaId::new(Service::Cache, 2));
        assert_eq!(app.shown().services[0].service, Service::Proxy);

        // Scaled to one cache replica: the row below takes its place.
        app.apply(rows(1, true), t0);
        assert_eq!(app.selected(), ReplicaId::new(Service::Store, 1));
        assert_eq!(app.logs_wanted(), Some(Service::Store));
        press(&mut app, KeyCode::Up);
        assert_eq!(app.selected(), ReplicaId::new(Service::Cache, 1));
    }
}
