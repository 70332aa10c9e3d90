use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tonic::{Code, Status};

use super::{http::envelope, password::PasswordError, validate::Violations};

/// Everything a gateway call can fail with, whatever the transport. The two mappings below,
/// [`From<GatewayError> for Status`] for gRPC and [`IntoResponse`] for HTTP, are the only places
/// that decide what a client sees; internal detail is logged (by [`GatewayError::log`]) and
/// never sent.
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
    /// Garbage, unknown, spent, expired, revoked or another stack's: one answer for all.
    #[error("refresh token refused")]
    BadRefreshToken,
    #[error("too many failed logins")]
    Throttled(std::time::Duration),
    #[error("too many registrations from this peer")]
    RegistrationsThrottled(std::time::Duration),
    /// The peer has its share of password hashes queued or running.
    #[error("too many password hashes queued for this peer")]
    HashingBusy,
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Classifies a failed call to the cache; `NotFound` is for the caller to interpret.
    pub fn upstream(status: Status) -> Self {
        // A failure of the connection itself (e.g. the cache draining during a restart sends
        // GOAWAY, which tonic reports as INTERNAL) means "unavailable", whatever its code.
        if crate::client::is_transport_failure(&status) {
            return Self::Unavailable(format!("transport: {}", status.message()));
        }
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

    /// Logs what the client is not told.
    fn log(&self) {
        match self {
            Self::BadToken(reason) => tracing::debug!(reason, "token refused"),
            Self::Unavailable(detail) => tracing::warn!(detail, "dependency unavailable"),
            Self::Internal(detail) => tracing::error!(detail, "internal error"),
            _ => {}
        }
    }

    /// Whole seconds a throttled client should wait (at least one).
    fn retry_after_secs(retry_after: std::time::Duration) -> u64 {
        retry_after.as_secs_f64().ceil().max(1.0) as u64
    }

    /// For a refusal to be retried later: its wait and what the client is told, the same on
    /// both transports.
    fn retry_later(&self) -> Option<(u64, String)> {
        match self {
            Self::Throttled(retry_after) => {
                let secs = Self::retry_after_secs(*retry_after);
                Some((secs, format!("too many failed logins; retry in {secs} s")))
            }
            Self::RegistrationsThrottled(retry_after) => {
                let secs = Self::retry_after_secs(*retry_after);
                Some((
                    secs,
                    format!("too many registrations from this address; try again in {secs} s"),
                ))
            }
            Self::HashingBusy => {
                let secs = Self::retry_after_secs(BUSY_RETRY_AFTER);
                Some((
                    secs,
                    format!(
                        "too many password checks in progress from this address; try again in {secs} s"
                    ),
                ))
            }
            _ => None,
        }
    }
}

impl From<PasswordError> for GatewayError {
    fn from(err: PasswordError) -> Self {
        match err {
            PasswordError::Busy => Self::HashingBusy,
            err => Self::Internal(err.to_string()),
        }
    }
}

/// A busy peer is told to come back in a second: by then a hash or two of its own have run.
const BUSY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        err.log();
        match err {
            GatewayError::Invalid(violations) => crate::server::invalid_argument(&violations),
            GatewayError::EmailTaken => {
                Status::already_exists("an account with this email already exists")
            }
            GatewayError::BadCredentials => Status::unauthenticated("invalid email or password"),
            GatewayError::MissingToken => Status::unauthenticated(
                "missing bearer token in the authorization metadata; log in first",
            ),
            GatewayError::BadToken(_) => {
                Status::unauthenticated("invalid or expired token; log in again")
            }
            GatewayError::BadRefreshToken => {
                Status::unauthenticated("invalid refresh token; log in again")
            }
            GatewayError::Throttled(_)
            | GatewayError::RegistrationsThrottled(_)
            | GatewayError::HashingBusy => {
                use tonic_types::{ErrorDetails, StatusExt as _};
                let (secs, message) = err.retry_later().unwrap_or_default();
                let details =
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(secs)));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            GatewayError::Unavailable(_) => {
                Status::unavailable("the user service is unavailable; retry shortly")
            }
            GatewayError::Internal(_) => Status::internal("internal error"),
        }
    }
}

/// The HTTP mapping: the same errors, the same messages, the HTTP status and the JSON envelope
/// of the original design.
impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.log();
        // RFC 6750: a 401 names the scheme the client should use.
        let unauthenticated = |message: &str| {
            let mut response =
                envelope::failure(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"userctl\""),
            );
            response
        };
        match self {
            Self::Invalid(violations) => envelope::invalid(&violations),
            Self::EmailTaken => envelope::failure(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                "an account with this email already exists",
            ),
            Self::BadCredentials => unauthenticated("invalid email or password"),
            Self::MissingToken => {
                unauthenticated("missing bearer token in the Authorization header; log in first")
            }
            Self::BadToken(_) => unauthenticated("invalid or expired token; log in again"),
            Self::BadRefreshToken => unauthenticated("invalid refresh token; log in again"),
            Self::Throttled(_) | Self::RegistrationsThrottled(_) | Self::HashingBusy => {
                let (secs, message) = self.retry_later().unwrap_or_default();
                let mut response =
                    envelope::failure(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                response
            }
            Self::Unavailable(_) => envelope::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the user service is unavailable; retry shortly",
            ),
            Self::Internal(_) => envelope::failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            ),
        }
    }
}
