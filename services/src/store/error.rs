use prost::Message as _;
use tonic::{Code, Status, metadata::MetadataValue};
use userctl_proto::user::v1::Session;

use crate::session;

/// Everything a store RPC can fail with; mapped to the wire in one place, below.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{field}: {reason}")]
    InvalidArgument {
        field: &'static str,
        reason: &'static str,
    },
    #[error("a user with this email already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
    /// A refresh token hash (or, beyond all odds, a session id) that is already stored.
    #[error("{field} is already in use")]
    InUse { field: &'static str },
    #[error("no such session")]
    SessionNotFound,
    /// A session read whose session is missing, another user's, revoked or expired.
    #[error("the session has ended")]
    SessionEnded,
    /// A refresh token that is unknown, or whose session is revoked or expired.
    #[error("refresh refused")]
    RefreshRefused,
    /// A spent refresh token, presented again: its session, now revoked.
    #[error("refresh token reused; session revoked")]
    RefreshReused(Session),
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::AlreadyExists,
            sqlx::Error::Database(db) if is_unavailable(db.code().as_deref()) => {
                Self::Unavailable(err)
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

/// SQLSTATEs that mean "the database is going away or cannot take us now", not "this query
/// is wrong": connection exceptions (class 08), the server shutting down or starting
/// (57P01..57P03), too many connections (53300). A query cut off by a database shutdown used
/// to answer INTERNAL (found by tests/faults.rs).
fn is_unavailable(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
    })
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::InvalidArgument { field, reason } => {
                crate::server::invalid_argument(&[(field, reason)])
            }
            StoreError::AlreadyExists => {
                Status::already_exists("a user with this email already exists")
            }
            StoreError::NotFound => Status::not_found("no such user"),
            StoreError::InUse { field } => {
                Status::already_exists(format!("{field} is already in use"))
            }
            StoreError::SessionNotFound => Status::not_found("no such session"),
            StoreError::SessionEnded => Status::failed_precondition(session::SESSION_ENDED),
            StoreError::RefreshRefused => Status::unauthenticated(session::REFRESH_REFUSED),
            StoreError::RefreshReused(revoked) => {
                // Same words as any refusal; the revoked session rides in metadata for the
                // cache, which publishes the revocation and strips it (crate::session).
                let mut status = Status::unauthenticated(session::REFRESH_REFUSED);
                status.metadata_mut().insert_bin(
                    session::REVOKED_HEADER,
                    MetadataValue::from_bytes(&revoked.encode_to_vec()),
                );
                status
            }
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("the database is unavailable; retry shortly")
            }
            StoreError::Database(source) => {
                tracing::error!(error = %source, "database error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_unavailable;

    #[test]
    fn a_database_going_away_is_unavailable_and_a_bad_query_is_not() {
        for code in ["57P01", "57P02", "57P03", "53300", "08006", "08001"] {
            assert!(is_unavailable(Some(code)), "{code}");
        }
        for code in ["22021", "42601", "23505", "40001"] {
            assert!(!is_unavailable(Some(code)), "{code}");
        }
        assert!(!is_unavailable(None));
    }
}
