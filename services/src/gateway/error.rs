use tonic::{Code, Status};

use super::{password::PasswordError, validate::Violations};

/// Everything a gateway RPC can fail with. [`From<GatewayError> for Status`] is the one place
/// that decides what a client sees; internal detail is logged there and never sent.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid request")]
    Invalid(Violations),
    #[error("email already registered")]
    EmailTaken,
    /// Unknown email and wrong password alike.
    #[error("bad credentials")]
    BadCredentials,
    #[error("no bearer token")]
    MissingToken,
    #[error("token refused: {0}")]
    BadToken(String),
    #[error("too many failed logins")]
    Throttled(std::time::Duration),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Classifies a failed call to the cache; `NotFound` is for the caller to interpret.
    pub fn upstream(status: Status) -> Self {
        match status.code() {
            Code::AlreadyExists => Self::EmailTaken,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted => {
                Self::Unavailable(format!("{:?}: {}", status.code(), status.message()))
            }
            code => Self::Internal(format!("upstream {code:?}: {}", status.message())),
        }
    }
}

impl From<PasswordError> for GatewayError {
    fn from(err: PasswordError) -> Self {
        Self::Internal(err.to_string())
    }
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        match err {
            GatewayError::Invalid(violations) => crate::server::invalid_argument(&violations),
            GatewayError::EmailTaken => {
                Status::already_exists("an account with this email already exists")
            }
            GatewayError::BadCredentials => Status::unauthenticated("invalid email or password"),
            GatewayError::MissingToken => Status::unauthenticated(
                "missing bearer token in the authorization metadata; log in first",
            ),
            GatewayError::BadToken(reason) => {
                tracing::debug!(reason, "token refused");
                Status::unauthenticated("invalid or expired token; log in again")
            }
            GatewayError::Throttled(retry_after) => {
                use tonic_types::{ErrorDetails, StatusExt as _};
                let secs = retry_after.as_secs().max(1);
                let details =
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(secs)));
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("too many failed logins; retry in {secs} s"),
                    details,
                )
            }
            GatewayError::Unavailable(detail) => {
                tracing::warn!(detail, "dependency unavailable");
                Status::unavailable("the user service is unavailable; retry shortly")
            }
            GatewayError::Internal(detail) => {
                tracing::error!(detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
