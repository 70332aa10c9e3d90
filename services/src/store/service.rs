use tonic::{Request, Response, Status};
use userctl_proto::user::v1::{
    CreateUserRequest, ReadUserRequest, User, read_user_request::Key, user_store_server::UserStore,
};

use super::{
    database::{Database, UserRecord},
    error::StoreError,
};

/// Longest email the store accepts (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
const MAX_FULL_NAME: usize = 200;
const MAX_PASSWORD_HASH: usize = 512;

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
        if email.is_empty() || email.len() > MAX_EMAIL {
            return Err(StoreError::InvalidArgument {
                field: "email",
                reason: "must be 1 to 254 bytes",
            });
        }
        if request.full_name.len() > MAX_FULL_NAME {
            return Err(StoreError::InvalidArgument {
                field: "full_name",
                reason: "must be at most 200 bytes",
            });
        }
        if !request.password_hash.starts_with("$argon2id$")
            || request.password_hash.len() > MAX_PASSWORD_HASH
        {
            return Err(StoreError::InvalidArgument {
                field: "password_hash",
                reason: "must be an argon2id PHC string",
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
    #[tracing::instrument(skip_all, err(level = "debug"))]
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let user = self.create(request.into_inner()).await?;
        tracing::info!(user_id = user.id, "user created");
        Ok(Response::new(user.into()))
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
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
