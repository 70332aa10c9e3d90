//! `userctl dashboard`: a live terminal view of a running stack — the cache's hit ratio and
//! counters over every cache replica, the health of each replica, what changed, and the logs of
//! one service or of the whole stack, merged and filtered.
//!
//! Layout:
//!
//! - [`source`]: what the dashboard asks of the runtime ([`RuntimeSource`]); the CLI implements
//!   it over Docker or the local supervisor, so this crate knows neither.
//! - `feeds`: one task per live source (`WatchStats` per cache replica, `Health/Watch` per
//!   `usersvc` replica, runtime polls, logs), each pushing [`Update`]s into a channel and
//!   retrying with backoff.
//! - [`model`]: the data and how updates change it: ratios from counter deltas, events on
//!   transitions. No I/O, no clock.
//! - [`logs`]: log lines read for the logs pane — time, source, level — merged in time order,
//!   and the `/` filter.
//! - [`app`]: the [`App`] — the model plus what the user is looking at, and what keys do.
//! - `ui`: rendering, a pure `Widget for &App` (snapshot-tested with `TestBackend`), one
//!   module per panel.
//! - [`format`]: how durations, latencies and sizes are printed, here and by `userctl bench`.
//! - `terminal`: raw mode and the alternate screen, restored on exit, error and panic.
//!
//! [`run`] wires them: it redraws only when an update or a key arrives, so an idle dashboard
//! costs next to nothing.

pub mod app;
mod error;
mod feeds;
pub mod format;
pub mod logs;
pub mod model;
pub mod source;
mod terminal;
mod ui;

use std::{io::IsTerminal as _, path::PathBuf, sync::Arc, time::Duration};

use crossterm::event::EventStream;
use futures::StreamExt as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    time::Instant,
};

pub use app::{Action, App, Header};
pub use error::DashboardError;
pub use model::{ReplicaId, Update, hit_ratio};
pub use source::{LogLine, LogScope, RuntimeSource, Service, ServiceRow, SourceError};

/// Where the stack's gRPC services answer, as `http://host:port` URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub gateway: String,
    pub cache: String,
    pub store: String,
}

/// What the dashboard presents to the cache and the store, which accept only callers with a
/// certificate from the stack's CA, and the CA it checks their certificates against (PEM).
#[derive(Clone)]
pub struct ClientTls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

// The key is never printed.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub endpoints: Endpoints,
    /// Mutual TLS to the cache and store; None: plaintext (a stack started by hand).
    pub tls: Option<ClientTls>,
    /// How often counters and runtime state refresh; also one sparkline bar.
    pub refresh: Duration,
    /// What is watched, for the header (e.g. "project userctl · local runtime").
    pub title: String,
    /// Whether to use colour; `NO_COLOR` callers pass false.
    pub color: bool,
    /// Where stderr (so any tracing output) goes while the dashboard owns the terminal;
    /// `None` discards it.
    pub log_file: Option<PathBuf>,
}

/// Whether stdin and stdout are a terminal the dashboard can take over.
pub fn has_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Runs the dashboard until the user quits (or a terminating signal arrives), then gives the
/// terminal back as it was.
pub async fn run(config: Config, runtime: Arc<dyn RuntimeSource>) -> Result<(), DashboardError> {
    if !has_terminal() {
        return Err(DashboardError::NotATerminal);
    }
    let mut session = terminal::Session::enter(config.log_file.as_deref())?;
    let (updates_tx, updates) = mpsc::channel(256);
    let (logs_tx, logs_rx) = watch::channel(None);
    let mut feeds = feeds::Feeds::start(
        &config.endpoints,
        config.tls.clone(),
        config.refresh,
        runtime,
        updates_tx,
        logs_rx,
    );
    let header = Header {
        title: config.title,
        refresh: config.refresh,
    };
    let app = App::new(header, config.color, Instant::now());
    let result = event_loop(&mut session, app, &mut feeds, updates, logs_tx).await;
    feeds.stop().await;
    drop(session);
    result
}

/// Applies updates and keys as they come and redraws after each batch.
async fn event_loop(
    session: &mut terminal::Session,
    mut app: App,
    feeds: &mut feeds::Feeds,
    mut updates: mpsc::Receiver<Update>,
    logs_wanted: watch::Sender<Option<LogScope>>,
) -> Result<(), DashboardError> {
    let signal_error = |source| DashboardError::Terminal {
        action: "listening for signals",
        source,
    };
    // Ctrl-C arrives as a key in raw mode; these come from `kill` or a closed terminal.
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut keys = EventStream::new();
    session.draw(&app)?;
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { return Ok(()) };
                track_replicas(feeds, &update);
                app.apply(update, Instant::now());
                // Several sources often report at once: one redraw for all of them.
                while let Ok(update) = updates.try_recv() {
                    track_replicas(feeds, &update);
                    app.apply(update, Instant::now());
                }
            }
            event = keys.next() => match event {
                Some(Ok(event)) => {
                    if app.handle_event(&event) == Action::Quit {
                        return Ok(());
                    }
                }
                Some(Err(source)) => {
                    return Err(DashboardError::Terminal { action: "reading keys", source });
                }
                None => return Ok(()),
            },
            failure = feeds.failure() => return Err(DashboardError::Internal(failure)),
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
        logs_wanted.send_if_modified(|current| {
            let wanted = app.logs_wanted();
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
        session.draw(&app)?;
    }
}

/// The runtime's rows say which replicas exist and where each answers now.
fn track_replicas(feeds: &mut feeds::Feeds, update: &Update) {
    if let Update::Runtime(Ok(rows)) = update {
        feeds.track(rows);
    }
}
