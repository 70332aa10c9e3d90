//! The Docker engine as the runtime sees it: connecting, and turning bollard's errors into
//! [`RuntimeError`]s with what we were doing, in one place, so every other file of the docker
//! runtime speaks of the engine's words, never of bollard's wrappers.

use std::{io, time::Duration};

use bollard::{Docker, errors::Error as EngineError};

use crate::runtime::RuntimeError;

/// How long `connect` waits for an engine to answer: `up --runtime auto` falls back to the
/// local runtime when none does, and should not hang first.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request once connected (bollard's default): importing the services image or pulling
/// can take a while before the engine answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Connects to the local engine (`DOCKER_HOST`, else the default socket) and settles on the API
/// version it speaks. EngineUnreachable when no engine answers or the socket is not ours to use.
pub async fn connect() -> Result<Docker, RuntimeError> {
    let docker = Docker::connect_with_defaults()
        .map_err(unreachable)?
        .with_timeout(CONNECT_TIMEOUT);
    let mut docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.set_timeout(REQUEST_TIMEOUT);
    Ok(docker)
}

pub fn is_not_found(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

pub fn ignore_missing(result: Result<(), EngineError>) -> Result<(), EngineError> {
    match result {
        Err(err) if is_not_found(&err) => Ok(()),
        other => other,
    }
}

/// An engine error with what we were doing; the engine's own message without bollard's
/// "Docker responded with status code …" wrapper.
pub fn engine(context: impl Into<String>, err: EngineError) -> RuntimeError {
    RuntimeError::other(context, engine_message(err))
}

pub fn engine_message(err: EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        EngineError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Why no engine answered, in a few words.
fn unreachable(err: EngineError) -> RuntimeError {
    let reason = match &err {
        EngineError::SocketNotFoundError(path) => format!("no engine socket at {path}"),
        EngineError::IOError { err } if err.kind() == io::ErrorKind::PermissionDenied => {
            "permission denied on the engine socket".to_owned()
        }
        EngineError::IOError { err } if err.kind() == io::ErrorKind::ConnectionRefused => {
            "the engine socket refused the connection".to_owned()
        }
        EngineError::RequestTimeoutError => {
            format!(
                "no answer within {}",
                humantime::format_duration(CONNECT_TIMEOUT)
            )
        }
        other => other.to_string().replace('\n', " "),
    };
    RuntimeError::EngineUnreachable(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_the_engines_words() {
        let err = engine(
            "creating container t-store",
            EngineError::DockerResponseServerError {
                status_code: 409,
                message: "name in use\n".into(),
            },
        );
        assert_eq!(err.to_string(), "creating container t-store: name in use");
    }
}
