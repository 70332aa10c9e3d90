//! The dashboard's state: the live [`Model`], what the user is looking at, and what each key
//! does. Rendering reads it (`Widget for &App`, in the `ui` module); nothing here draws or does
//! I/O.

use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::time::Instant;

use crate::{
    logs::{Entry, Filter},
    model::{Model, ReplicaId, Update},
    source::{LogScope, Service},
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
    logs: LogsPane,
    /// The requests per hop in place of the events.
    requests_open: bool,
    help_open: bool,
}

/// What the user does with the logs pane: whose logs, the filter, following or a line chosen.
#[derive(Debug, Clone, Default)]
pub struct LogsPane {
    /// The whole stack merged, rather than the selected service.
    pub whole_stack: bool,
    pub filter: Filter,
    /// What is being typed after `/`, until Enter applies it or Esc drops it.
    pub typing: Option<String>,
    /// The line `n`/`N` moved to, and where it was among the shown lines; `None` follows the
    /// newest line.
    cursor: Option<(Entry, usize)>,
}

/// The logs pane's lines as shown: those the filter lets through, and the chosen one.
#[derive(Debug)]
pub struct ShownLogs<'a> {
    pub lines: Vec<&'a Entry>,
    /// How many were fetched, before filtering.
    pub fetched: usize,
    /// Index into `lines`; `None` while following the newest.
    pub cursor: Option<usize>,
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
            logs: LogsPane::default(),
            requests_open: false,
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

    pub fn requests_open(&self) -> bool {
        self.requests_open
    }

    pub fn help_open(&self) -> bool {
        self.help_open
    }

    pub fn logs_pane(&self) -> &LogsPane {
        &self.logs
    }

    /// Whose logs the logs feed should fetch, if any: the selected replica's service (every
    /// replica of it), or the whole stack.
    pub fn logs_wanted(&self) -> Option<LogScope> {
        self.logs_open.then(|| {
            if self.logs.whole_stack {
                LogScope::Stack
            } else {
                LogScope::Service(self.selected().service)
            }
        })
    }

    /// The fetched lines the filter lets through, when they are the ones wanted.
    pub fn shown_logs(&self) -> Option<Result<ShownLogs<'_>, &str>> {
        let logs = self.shown().logs.as_ref()?;
        if Some(logs.scope) != self.logs_wanted() {
            return None;
        }
        let entries = match &logs.lines {
            Ok(entries) => entries,
            Err(reason) => return Some(Err(reason)),
        };
        let lines: Vec<&Entry> = entries
            .iter()
            .filter(|entry| self.logs.filter.matches(entry))
            .collect();
        let cursor = self.logs.cursor.as_ref().and_then(|(chosen, was)| {
            let last = lines.len().checked_sub(1)?;
            // The same line if it is still there; else the place it was at.
            Some(
                lines
                    .iter()
                    .rposition(|entry| *entry == chosen)
                    .unwrap_or((*was).min(last)),
            )
        });
        Some(Ok(ShownLogs {
            lines,
            fetched: entries.len(),
            cursor,
        }))
    }

    /// A terminal event; only key presses matter (resizes just redraw).
    pub fn handle_event(&mut self, event: &Event) -> Action {
        match event {
            Event::Key(key) if key.kind == KeyEventKind::Press => self.handle_key(*key),
            _ => Action::Continue,
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        if self.logs.typing.is_some() {
            self.type_filter(key.code);
            return Action::Continue;
        }
        if self.logs_open && !self.help_open && self.logs_key(key.code) {
            return Action::Continue;
        }
        match key.code {
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
            KeyCode::Char('r') => {
                self.requests_open = !self.requests_open;
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

    /// A key while a filter is being typed: every printable key is text, so `q` types a q.
    fn type_filter(&mut self, code: KeyCode) {
        let Some(typing) = &mut self.logs.typing else {
            return;
        };
        match code {
            KeyCode::Char(c) => typing.push(c),
            KeyCode::Backspace => {
                typing.pop();
            }
            KeyCode::Enter => {
                self.logs.filter = Filter::new(typing);
                self.logs.typing = None;
                self.logs.cursor = None;
            }
            KeyCode::Esc => self.logs.typing = None,
            _ => {}
        }
    }

    /// The logs pane's own keys; false for a key it leaves to the rest.
    fn logs_key(&mut self, code: KeyCode) -> bool {
        match code {
            KeyCode::Char('/') => {
                self.logs.typing = Some(self.logs.filter.query().to_owned());
            }
            KeyCode::Char('n') => self.move_in_logs(1),
            KeyCode::Char('N') => self.move_in_logs(-1),
            KeyCode::Char('f') | KeyCode::End => self.logs.cursor = None,
            KeyCode::Char('a') => {
                self.logs.whole_stack = !self.logs.whole_stack;
                self.logs.cursor = None;
            }
            _ => return false,
        }
        true
    }

    /// `n` moves to the next (newer) line the filter lets through, `N` to the previous
    /// (older) one; from following, `N` takes the newest.
    fn move_in_logs(&mut self, step: isize) {
        let chosen = match self.shown_logs() {
            Some(Ok(shown)) => {
                let Some(last) = shown.lines.len().checked_sub(1) else {
                    return;
                };
                let index = match shown.cursor {
                    None if step > 0 => return,
                    None => last,
                    Some(at) => at.saturating_add_signed(step).min(last),
                };
                (shown.lines[index].clone(), index)
            }
            _ => return,
        };
        self.logs.cursor = Some(chosen);
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
        assert_eq!(app.logs_wanted(), Some(LogScope::Service(Service::Redis)));
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
        assert_eq!(app.logs_wanted(), Some(LogScope::Service(Service::Cache)));

        // A row added above (the proxy, first) does not move the selection off cache.2.
        app.apply(rows(3, true), t0);
        assert_eq!(app.selected(), ReplicaId::new(Service::Cache, 2));
        assert_eq!(app.shown().services[0].service, Service::Proxy);

        // Scaled to one cache replica: the row below takes its place.
        app.apply(rows(1, true), t0);
        assert_eq!(app.selected(), ReplicaId::new(Service::Store, 1));
        assert_eq!(app.logs_wanted(), Some(LogScope::Service(Service::Store)));
        press(&mut app, KeyCode::Up);
        assert_eq!(app.selected(), ReplicaId::new(Service::Cache, 1));
    }

    fn logs(app: &mut App, texts: &[&str]) {
        let lines = texts
            .iter()
            .map(|text| crate::source::LogLine {
                replica: None,
                text: (*text).to_owned(),
            })
            .collect();
        let scope = app.logs_wanted().expect("logs open");
        let service = match scope {
            LogScope::Service(service) => service,
            LogScope::Stack => Service::Gateway,
        };
        app.apply(
            Update::Logs {
                scope,
                lines: Ok(vec![(service, lines)]),
            },
            Instant::now(),
        );
    }

    fn shown_texts(app: &App) -> (Vec<String>, Option<usize>) {
        let shown = app.shown_logs().expect("logs shown").expect("read");
        let texts = shown.lines.iter().map(|entry| entry.text.clone()).collect();
        (texts, shown.cursor)
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    #[test]
    fn a_typed_filter_narrows_the_logs_and_q_is_text_while_typing() {
        let mut app = app();
        press(&mut app, KeyCode::Enter);
        logs(
            &mut app,
            &[
                "INFO answered code=OK",
                "WARN quiet",
                "INFO answered code=NotFound",
            ],
        );
        press(&mut app, KeyCode::Char('/'));
        type_text(&mut app, "q");
        assert_eq!(
            app.logs_pane().typing.as_deref(),
            Some("q"),
            "q typed, not quit"
        );
        press(&mut app, KeyCode::Backspace);
        type_text(&mut app, "answered");
        // Nothing is filtered until Enter.
        assert_eq!(shown_texts(&app).0.len(), 3);
        press(&mut app, KeyCode::Enter);
        assert_eq!(
            shown_texts(&app).0,
            ["INFO answered code=OK", "INFO answered code=NotFound"]
        );

        // Esc drops an edit and keeps the filter; an empty filter shows everything.
        press(&mut app, KeyCode::Char('/'));
        type_text(&mut app, "zzz");
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.logs_pane().filter.query(), "answered");
        assert!(app.logs_open());
        press(&mut app, KeyCode::Char('/'));
        for _ in 0.."answered".len() {
            press(&mut app, KeyCode::Backspace);
        }
        press(&mut app, KeyCode::Enter);
        assert_eq!(shown_texts(&app).0.len(), 3);
    }

    #[test]
    fn an_invalid_regex_filters_nothing_and_says_why() {
        let mut app = app();
        press(&mut app, KeyCode::Enter);
        logs(&mut app, &["INFO one", "INFO two"]);
        press(&mut app, KeyCode::Char('/'));
        type_text(&mut app, "one(");
        press(&mut app, KeyCode::Enter);
        assert!(matches!(app.logs_pane().filter, Filter::Invalid { .. }));
        assert_eq!(shown_texts(&app).0.len(), 2);
    }

    #[test]
    fn n_and_shift_n_move_between_lines_and_f_follows_again() {
        let mut app = app();
        press(&mut app, KeyCode::Enter);
        logs(&mut app, &["INFO a1", "INFO b", "INFO a2", "INFO a3"]);
        press(&mut app, KeyCode::Char('/'));
        // The filter sees `gateway INFO a1`: the service's name is searchable too.
        type_text(&mut app, "a[0-9]");
        press(&mut app, KeyCode::Enter);
        assert_eq!(shown_texts(&app).1, None, "following");
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(shown_texts(&app).1, None, "nothing newer than the newest");
        press(&mut app, KeyCode::Char('N'));
        assert_eq!(shown_texts(&app).1, Some(2));
        press(&mut app, KeyCode::Char('N'));
        press(&mut app, KeyCode::Char('N'));
        press(&mut app, KeyCode::Char('N'));
        assert_eq!(shown_texts(&app).1, Some(0), "stops at the oldest");
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(shown_texts(&app).1, Some(1));

        // New lines arrive: the chosen line stays chosen.
        logs(&mut app, &["INFO b", "INFO a2", "INFO a3", "INFO a4"]);
        let (texts, cursor) = shown_texts(&app);
        assert_eq!(cursor.map(|at| texts[at].as_str()), Some("INFO a2"));

        press(&mut app, KeyCode::Char('f'));
        assert_eq!(shown_texts(&app).1, None);
    }

    #[test]
    fn a_asks_for_the_whole_stack_and_back() {
        let mut app = app();
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.logs_wanted(), Some(LogScope::Stack));
        // Lines fetched for another scope are not shown as this one's.
        assert!(app.shown_logs().is_none());
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.logs_wanted(), Some(LogScope::Service(Service::Gateway)));
    }
}
