//! Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Every request logs a line per hop ([`crate::trace`]), so lines are handed to a writer thread
//! rather than written by the task that logs them: a request pays for formatting its line, not
//! for a `write` to a file or pipe, and lines that arrive together leave in one write.

use std::io::{BufWriter, IsTerminal as _};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer thread before a logging task waits for it in turn: a burst of
/// some seconds at full load. Never dropped: a line that is logged is written.
const QUEUED_LINES: usize = 128 * 1024;

/// Installs the global subscriber; `json` switches to one JSON object per line, which is what
/// container log collectors want. Lines still queued are written when the guard drops, so hold
/// it until the process ends.
#[must_use = "dropping the guard stops the writer thread"]
pub fn init(json: bool) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(false)
        .thread_name("usersvc-logs")
        .finish(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    guard
}
