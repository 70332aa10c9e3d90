//! Owning the terminal: raw mode and the alternate screen while the dashboard runs, and the
//! terminal as it was afterwards — on a normal exit, on an error and on a panic.
//!
//! Anything written to stderr meanwhile (tracing, a library's warning) would scribble over the
//! screen, so stderr goes to a log file (or nowhere) for as long as the session lasts.

use std::{
    fs::{File, OpenOptions},
    io::{self, Stdout},
    os::{fd::OwnedFd, unix::fs::OpenOptionsExt as _},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crossterm::{
    cursor::{Hide, Show},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use crate::{DashboardError, app::App};

/// Whether a session owns the terminal; the panic hook outlives sessions and must do nothing
/// once they have ended.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen; dropping it gives the terminal back.
pub struct Session {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    /// Declared after `terminal`, so stderr comes back only once the screen is restored.
    _stderr: StderrDiversion,
}

impl Session {
    /// Takes over the terminal; stderr goes to `log_file` (appended) or, without one, nowhere.
    pub fn enter(log_file: Option<&Path>) -> Result<Self, DashboardError> {
        let stderr = StderrDiversion::start(log_file)?;
        install_panic_hook(stderr.original.clone());
        ACTIVE.store(true, Ordering::SeqCst);
        let terminal = raw_terminal().map_err(|source| {
            restore_terminal();
            ACTIVE.store(false, Ordering::SeqCst);
            DashboardError::Terminal {
                action: "setting up the terminal",
                source,
            }
        })?;
        Ok(Self {
            terminal,
            _stderr: stderr,
        })
    }

    pub fn draw(&mut self, app: &App) -> Result<(), DashboardError> {
        self.terminal
            .draw(|frame| frame.render_widget(app, frame.area()))
            .map(drop)
            .map_err(|source| DashboardError::Terminal {
                action: "drawing",
                source,
            })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        restore_terminal();
        ACTIVE.store(false, Ordering::SeqCst);
    }
}

fn raw_terminal() -> io::Result<Terminal<CrosstermBackend<Stdout>>> {
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen, Hide)?;
    Terminal::new(CrosstermBackend::new(io::stdout()))
}

/// Best effort: each step is worth trying even if another fails.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
}

/// On a panic while a session is active: give back the terminal and stderr first, so the
/// panic message (printed by the previous hook) lands on a sane screen.
fn install_panic_hook(original_stderr: Arc<OwnedFd>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if ACTIVE.swap(false, Ordering::SeqCst) {
            restore_terminal();
            let _ = nix::unistd::dup2_stderr(&*original_stderr);
        }
        previous(info);
    }));
}

/// stderr pointed at a file until dropped.
struct StderrDiversion {
    /// A duplicate of the original stderr; shared with the panic hook, which may need it after
    /// this is gone, so it is never closed.
    original: Arc<OwnedFd>,
}

impl StderrDiversion {
    fn start(log_file: Option<&Path>) -> Result<Self, DashboardError> {
        let (target, shown) = match log_file {
            Some(path) => (
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path),
                path,
            ),
            None => (
                OpenOptions::new().write(true).open("/dev/null"),
                Path::new("/dev/null"),
            ),
        };
        let target: File = target.map_err(|source| DashboardError::LogFile {
            path: shown.to_path_buf(),
            source,
        })?;
        let diversion = |err: nix::Error| DashboardError::Terminal {
            action: "redirecting stderr",
            source: io::Error::from(err),
        };
        let original = nix::unistd::dup(io::stderr()).map_err(diversion)?;
        nix::unistd::dup2_stderr(&target).map_err(diversion)?;
        Ok(Self {
            original: Arc::new(original),
        })
    }
}

impl Drop for StderrDiversion {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2_stderr(&*self.original);
    }
}
