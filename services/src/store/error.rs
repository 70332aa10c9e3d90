use tonic::{Code, Status};

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
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::AlreadyExists,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
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
