//! The one error type of `userctl`: a message, an optional hint, and the exit code
//! `docs/design.md` fixes. Every failure becomes one line on stderr. Library errors
//! ([`RuntimeError`], [`HomeError`]) get their exit code and hint here, and only here.

use std::{fmt, process::ExitCode};

use crate::{
    home::HomeError,
    output,
    runtime::RuntimeError,
    stack::{BUILD_IMAGES_COMMAND, StoreKind},
};

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

impl From<HomeError> for CliError {
    fn from(err: HomeError) -> Self {
        let message = chain(&err);
        match err {
            HomeError::NoHomeDir => {
                Self::failed(message).with_hint("set USERCTL_HOME to a writable directory")
            }
            HomeError::Corrupt { .. } => {
                Self::failed(message).with_hint("run `userctl down` and `userctl up` again")
            }
            HomeError::Io { .. }
            | HomeError::Encode { .. }
            | HomeError::Certificates(_)
            | HomeError::SigningKey(_) => Self::failed(message),
        }
    }
}

impl From<RuntimeError> for CliError {
    fn from(err: RuntimeError) -> Self {
        let message = chain(&err);
        match err {
            RuntimeError::EngineUnreachable(_) => Self::unreachable(message).with_hint(
                "start Docker (and check you may use its socket), or pass --runtime local",
            ),
            RuntimeError::ImageUnavailable { local: None, .. } => Self::failed(message)
                .with_hint(format!(
                    "with no registry, run `{BUILD_IMAGES_COMMAND}` to build the images locally"
                )),
            RuntimeError::ImageUnavailable {
                local: Some(local), ..
            } => Self::failed(message).with_hint(format!(
                "neither is {local}: run `{BUILD_IMAGES_COMMAND}` to build it"
            )),
            RuntimeError::PortTaken { .. } => Self::failed(message).with_hint(
                "free the port, or choose another with --gateway-port/--http-port/--cache-port/--store-port (0: any free port)",
            ),
            RuntimeError::Unhealthy { service, .. } | RuntimeError::Exited { service, .. } => {
                Self::failed(message).with_hint(format!("see `userctl logs {service}`"))
            }
            RuntimeError::LocalNeedsSqlite { store } => {
                let store = match store {
                    StoreKind::Postgres => "Postgres",
                    StoreKind::Sqlite => "SQLite",
                };
                Self::failed(message).with_hint(format!(
                    "pass --store sqlite, or --runtime docker for {store}"
                ))
            }
            RuntimeError::SwarmNeedsPostgres => {
                Self::usage(message).with_hint("drop --store sqlite, or pass --runtime docker")
            }
            RuntimeError::SwarmInactive => Self::failed(message).with_hint(
                "`userctl up --runtime swarm --init-swarm` makes this machine a single-node swarm; or join one with `docker swarm join`",
            ),
            RuntimeError::SwarmWorker => Self::failed(message)
                .with_hint("run userctl on a manager node (`docker node ls` there lists them)"),
            RuntimeError::SwarmForeign { .. } => Self::failed(message).with_hint(
                "choose another project name (--project or USERCTL_PROJECT), or remove that service",
            ),
            RuntimeError::NotUp { .. } => Self::failed(message).with_hint("run `userctl up` first"),
            RuntimeError::NothingToSupervise { .. } => {
                Self::usage(message).with_hint("`userctl up --runtime local` starts this")
            }
            RuntimeError::Home(home) => home.into(),
            RuntimeError::Other { .. } => Self::failed(message),
        }
    }
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

/// A command line clap refused, as every other error: one line, exit 2. clap's own text is
/// several paragraphs (the message, tips, usage, a pointer to `--help`); the line keeps the
/// message and the tips, and the hint points to `--help`.
pub fn command_line(err: &clap::Error) -> CliError {
    let text = err.render().to_string();
    let mut paragraphs = text.split("\n\n");
    let message = paragraphs.next().unwrap_or_default();
    let tips = paragraphs.flat_map(str::lines).filter_map(|line| {
        line.trim()
            .strip_prefix("tip:")
            .map(|tip| format!("tip: {}", tip.trim()))
    });
    let message = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .chain(tips)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned();
    CliError::usage(message).with_hint("see --help")
}

/// Prints `error: …` on one line and returns the exit code.
pub fn report(err: &CliError) -> ExitCode {
    eprintln!("{}", line(err));
    ExitCode::from(err.exit as u8)
}

/// The one line `report` prints. Messages can carry a server's text (a status message), so
/// every character a terminal would act on is escaped, as for any other text from a server.
fn line(err: &CliError) -> String {
    format!(
        "error: {}",
        output::printable(&err.to_string().replace('\n', " "))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_is_one_line_with_no_raw_control_characters() {
        let err =
            CliError::auth("Eve\u{1b}[2J\u{9b}31m\u{202E}x\nsecond line").with_hint("a \u{7} hint");
        assert_eq!(
            line(&err),
            r"error: Eve\u{1b}[2J\u{9b}31m\u{202e}x second line; a \u{7} hint"
        );
    }

    #[test]
    fn a_refused_command_line_is_one_line_with_its_message_and_tips() {
        use clap::Parser as _;
        for (args, says) in [
            (
                &["userctl", "scale", "cache=0"][..],
                "invalid value 'cache=0' for '<SERVICE=N>...': cache=0: a stack needs at least one cache",
            ),
            (
                &["userctl", "login"],
                "the following required arguments were not provided: --email <EMAIL>",
            ),
            (
                &["userctl", "stauts"],
                "unrecognized subcommand 'stauts' tip: ",
            ),
        ] {
            let err = crate::args::Cli::try_parse_from(args).expect_err("refused");
            let err = command_line(&err);
            assert_eq!(err.exit, Exit::Usage, "{args:?}");
            let line = line(&err);
            assert!(line.starts_with("error: "), "{line}");
            assert!(!line.starts_with("error: error"), "{line}");
            assert!(line.contains(says), "{args:?}: {line}");
            assert!(line.ends_with("; see --help"), "{line}");
            assert!(!line.contains('\n') && !line.contains("Usage:"), "{line}");
        }
    }

    #[test]
    fn an_unavailable_image_names_the_command_that_builds_it() {
        let err = CliError::from(RuntimeError::ImageUnavailable {
            image: "redis:7.2.5".into(),
            reason: "no registry".into(),
            local: Some("userctl-local/redis:7".into()),
        });
        assert_eq!(err.exit, Exit::Failed);
        assert!(
            err.hint
                .as_deref()
                .is_some_and(|hint| hint.contains(BUILD_IMAGES_COMMAND)),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_engine_exits_4() {
        let err = CliError::from(RuntimeError::EngineUnreachable("no socket".into()));
        assert_eq!(err.exit, Exit::Unreachable);
    }

    #[test]
    fn a_corrupt_record_inside_a_runtime_error_keeps_its_hint() {
        let err = CliError::from(RuntimeError::Home(HomeError::Corrupt {
            path: "stack.json".into(),
            reason: "eof".into(),
        }));
        assert!(err.hint.is_some_and(|hint| hint.contains("userctl down")));
    }
}
