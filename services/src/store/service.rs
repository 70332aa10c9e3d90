use tonic::{Request, Response, Status};
use userctl_proto::user::v1::{
    CreateSessionRequest, CreateUserRequest, ReadUserRequest, RefreshSessionRequest,
    RevokeSessionRequest, Session, User, read_user_request::Key, user_store_server::UserStore,
};

use super::{
    database::{Database, UserRecord},
    error::StoreError,
    hash_policy,
};

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

    async fn read(&self, request: ReadUserRequest) -> Result<UserRecord, StoreError> {
        let found = match request.key {
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
}

#[tonic::async_trait]
impl UserStore for StoreService {
    async fn create_session(
        &self,
        _request: Request<CreateSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    async fn refresh_session(
        &self,
        _request: Request<RefreshSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    async fn revoke_session(
        &self,
        _request: Request<RevokeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
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
        Ok(Response::new(self.read(request.into_inner()).await?.into()))
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
