//! The one error type of `userctl`: a message, an optional hint, and the exit code DESIGN.md
//! fixes. Every failure becomes one line on stderr.

use std::{fmt, process::ExitCode};

/// Exit codes scripts rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The operation failed.
    Failed = 1,
    /// The command line was wrong.
    Usage = 2,
    /// Authentication is needed or was refused.
    Auth = 3,
    /// The stack or the Docker engine cannot be reached.
    Unreachable = 4,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Exit::Failed, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(Exit::Auth, message)
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(Exit::Unreachable, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hint {
            Some(hint) => write!(f, "{}; {hint}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CliError {}

/// An error with its whole chain of causes on one line, for messages built from library errors.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Prints `error: …` on one line and returns the exit code.
pub fn report(err: &CliError) -> ExitCode {
    let line = err.to_string().replace('\n', " ");
    eprintln!("error: {line}");
    ExitCode::from(err.exit as u8)
}

impl From<crate::config::ConfigError> for CliError {
    fn from(err: crate::config::ConfigError) -> Self {
        use crate::config::ConfigError;
        let message = err.to_string();
        match err {
            ConfigError::Invalid(_) => Self::usage(message),
            ConfigError::MissingFile(_) => {
                Self::usage(message).with_hint("check --file or USERCTL_FILE")
            }
            ConfigError::Io { .. } => Self::failed(message),
        }
    }
}
