//! What can stop the dashboard. A service or the runtime going away is not here: the dashboard
//! shows that and keeps going.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// stdin or stdout is not a terminal (a pipe, a file, a CI job).
    #[error("the dashboard needs a terminal")]
    NotATerminal,
    #[error("cannot open the dashboard log {}", path.display())]
    LogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A bug: the dashboard stops rather than show data that no longer comes.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("terminal error while {action}")]
    Terminal {
        action: &'static str,
        #[source]
        source: io::Error,
    },
}
