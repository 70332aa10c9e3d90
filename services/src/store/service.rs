use tonic::{Request, Response, Status, metadata::MetadataValue};
use userctl_proto::user::v1::{
    CreateSessionRequest, CreateUserRequest, ReadUserRequest, RefreshSessionRequest,
    RevokeSessionRequest, Session, User, read_user_request::Key, user_store_server::UserStore,
};

use super::{
    database::{Database, Refresh, SessionRecord, UserRecord},
    error::StoreError,
    hash_policy,
};
use crate::session;

/// Longest email the store accepts (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// The gateway allows 100 characters, and a character is up to 4 bytes in UTF-8. (It was 200
/// bytes, so a valid name of emoji failed as INTERNAL: found by tests/input_validation.rs.)
pub const MAX_FULL_NAME_BYTES: usize = 400;
pub const MAX_PASSWORD_HASH_BYTES: usize = 512;

#[derive(Debug, Clone)]
pub struct StoreService {
    db: Database,
}

impl StoreService {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    async fn create(&self, request: CreateUserRequest) -> Result<UserRecord, StoreError> {
        // The gateway validates properly; the store only refuses what would corrupt its table.
        let email = crate::email::normalize(&request.email);
        // Postgres text cannot hold NUL: refuse it here rather than fail in the database as
        // INTERNAL (found by tests/input_validation.rs).
        for (field, value) in [
            ("email", &email),
            ("full_name", &request.full_name),
            ("password_hash", &request.password_hash),
        ] {
            if value.contains('\0') {
                return Err(StoreError::InvalidArgument {
                    field,
                    reason: "must not contain NUL characters",
                });
            }
        }
        if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
            return Err(StoreError::InvalidArgument {
                field: "email",
                reason: "must be 1 to 254 bytes",
            });
        }
        if request.full_name.len() > MAX_FULL_NAME_BYTES {
            return Err(StoreError::InvalidArgument {
                field: "full_name",
                reason: "must be at most 400 bytes",
            });
        }
        if request.password_hash.len() > MAX_PASSWORD_HASH_BYTES
            || !hash_policy::is_acceptable(&request.password_hash)
        {
            return Err(StoreError::InvalidArgument {
                field: "password_hash",
                reason: hash_policy::REQUIREMENT,
            });
        }
        Ok(self
            .db
            .insert_user(&email, &request.full_name, &request.password_hash)
            .await?)
    }

    /// The user, and with `session_id` that session's `expires_at` once it is known to be the
    /// user's and active.
    async fn read(
        &self,
        request: ReadUserRequest,
    ) -> Result<(UserRecord, Option<i64>), StoreError> {
        let session_id = request.session_id;
        if !session_id.is_empty() {
            check_session_id(&session_id)?;
        }
        let user = self.read_user(request.key).await?;
        if session_id.is_empty() {
            return Ok((user, None));
        }
        match self.db.session_by_id(&session_id).await? {
            Some(found) if found.active && found.user_id == user.id => {
                Ok((user, Some(found.expires_at)))
            }
            _ => Err(StoreError::SessionEnded),
        }
    }

    async fn read_user(&self, key: Option<Key>) -> Result<UserRecord, StoreError> {
        let found = match key {
            Some(Key::Id(id)) => self.db.user_by_id(id).await?,
            // No stored email holds a NUL (see `create`), and Postgres would refuse the query.
            Some(Key::Email(email)) if email.contains('\0') => None,
            Some(Key::Email(email)) => {
                self.db
                    .user_by_email(&crate::email::normalize(&email))
                    .await?
            }
            None => {
                return Err(StoreError::InvalidArgument {
                    field: "key",
                    reason: "set id or email",
                });
            }
        };
        found.ok_or(StoreError::NotFound)
    }

    async fn create_session(
        &self,
        request: CreateSessionRequest,
    ) -> Result<SessionRecord, StoreError> {
        check_hash("refresh_hash", &request.refresh_hash)?;
        check_lifetime(request.lifetime_secs)?;
        let id = session::new_id();
        self.db
            .insert_session(
                &id,
                request.user_id,
                &request.refresh_hash,
                request.lifetime_secs,
            )
            .await
            .map_err(in_use("refresh_hash"))?
            .ok_or(StoreError::NotFound)
    }

    async fn refresh_session(
        &self,
        request: RefreshSessionRequest,
    ) -> Result<SessionRecord, StoreError> {
        check_hash("refresh_hash", &request.refresh_hash)?;
        check_hash("next_refresh_hash", &request.next_refresh_hash)?;
        if request.next_refresh_hash == request.refresh_hash {
            return Err(StoreError::InvalidArgument {
                field: "next_refresh_hash",
                reason: "must differ from refresh_hash",
            });
        }
        check_lifetime(request.lifetime_secs)?;
        let refresh = self
            .db
            .refresh_session(
                &request.refresh_hash,
                &request.next_refresh_hash,
                request.lifetime_secs,
            )
            .await
            .map_err(in_use("next_refresh_hash"))?;
        match refresh {
            Refresh::Rotated(rotated) => Ok(rotated),
            Refresh::Unknown | Refresh::Ended => Err(StoreError::RefreshRefused),
            Refresh::Reused(revoked) => {
                tracing::warn!(
                    session_id = %revoked.id,
                    user_id = revoked.user_id,
                    "a spent refresh token was presented again; session revoked"
                );
                Err(StoreError::RefreshReused(revoked.into()))
            }
        }
    }

    async fn revoke_session(
        &self,
        request: RevokeSessionRequest,
    ) -> Result<SessionRecord, StoreError> {
        check_session_id(&request.session_id)?;
        self.db
            .revoke_session(&request.session_id)
            .await?
            .ok_or(StoreError::SessionNotFound)
    }
}

fn check_hash(field: &'static str, hash: &[u8]) -> Result<(), StoreError> {
    if hash.len() == session::REFRESH_HASH_BYTES {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument {
            field,
            reason: "must be 32 bytes (the SHA-256 of the refresh token)",
        })
    }
}

fn check_lifetime(secs: i64) -> Result<(), StoreError> {
    if session::is_valid_lifetime(secs) {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument {
            field: "lifetime_secs",
            reason: "must be 1 to 34560000 seconds (400 days)",
        })
    }
}

fn check_session_id(id: &str) -> Result<(), StoreError> {
    if session::is_well_formed(id) {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument {
            field: "session_id",
            reason: "must be a session id: 22 base64url characters",
        })
    }
}

/// A unique violation on a session write is a value already stored in `field`, not an email.
fn in_use(field: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |err| match StoreError::from(err) {
        StoreError::AlreadyExists => StoreError::InUse { field },
        other => other,
    }
}

#[tonic::async_trait]
impl UserStore for StoreService {
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let created = self.create_session(request.into_inner()).await?;
        tracing::info!(session_id = %created.id, user_id = created.user_id, "session created");
        Ok(Response::new(created.into()))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let rotated = self.refresh_session(request.into_inner()).await?;
        tracing::debug!(session_id = %rotated.id, "session refreshed");
        Ok(Response::new(rotated.into()))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let revoked = self.revoke_session(request.into_inner()).await?;
        tracing::info!(session_id = %revoked.id, user_id = revoked.user_id, "session revoked");
        Ok(Response::new(revoked.into()))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let user = self.create(request.into_inner()).await?;
        tracing::info!(user_id = user.id, "user created");
        Ok(Response::new(user.into()))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn read_user(&self, request: Request<ReadUserRequest>) -> Result<Response<User>, Status> {
        let (user, session_expires_at) = self.read(request.into_inner()).await?;
        let mut response = Response::new(user.into());
        if let Some(expires_at) = session_expires_at {
            response
                .metadata_mut()
                .insert(session::EXPIRES_AT_HEADER, MetadataValue::from(expires_at));
        }
        Ok(response)
    }
}

impl From<UserRecord> for User {
    fn from(record: UserRecord) -> Self {
        User {
            id: record.id,
            email: record.email,
            full_name: record.full_name,
            password_hash: record.password_hash,
            created_at: record.created_at,
        }
    }
}

impl From<SessionRecord> for Session {
    fn from(record: SessionRecord) -> Self {
        Session {
            id: record.id,
            user_id: record.user_id,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at.unwrap_or(0),
        }
    }
}
