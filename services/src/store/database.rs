//! The store's only SQL. Both dialects expose the same `user_records` view (see
//! `migrations/`), so every query below is one text run against either pool.

use std::{str::FromStr, time::Duration};

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions},
};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a query waits for a free connection before the store answers UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
    Unknown,
}

impl Dialect {
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Unknown
        }
    }
}

/// A row of `user_records`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub full_name: String,
    pub password_hash: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds; the body is compiled once
/// per dialect.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database URL: expected postgres://… or sqlite://…")]
    UnsupportedUrl,
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl ConnectError {
    /// Whether the database may simply not be up yet, so trying again can help.
    pub fn is_transient(&self) -> bool {
        use sqlx::migrate::MigrateError;
        let sql = match self {
            Self::Connect(err) | Self::Migrate(MigrateError::Execute(err)) => err,
            _ => return false,
        };
        match sql {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            // 57P03: "the database system is starting up".
            sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
            _ => false,
        }
    }
}

impl Database {
    /// Opens a pool for `url` without connecting yet; [`Database::migrate`] makes the first
    /// connection.
    pub fn open(url: &str) -> Result<Self, ConnectError> {
        match Dialect::of(url) {
            Dialect::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(ConnectError::InvalidUrl)?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                Ok(Self::Postgres(pool))
            }
            Dialect::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(ConnectError::InvalidUrl)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                Ok(Self::Sqlite(pool))
            }
            Dialect::Unknown => Err(ConnectError::UnsupportedUrl),
        }
    }

    /// Applies pending migrations; idempotent, and safe when several stores start at once
    /// (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        match self {
            Database::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Database::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Inserts a user whose email is already normalised. A taken email fails with a
    /// unique-violation database error.
    pub async fn insert_user(
        &self,
        email: &str,
        full_name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, sqlx::Error> {
        let insert =
            "INSERT INTO users (email, full_name, password_hash) VALUES ($1, $2, $3) RETURNING id";
        let select = "SELECT id, email, full_name, password_hash, created_at FROM user_records WHERE id = $1";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(insert)
                .bind(email)
                .bind(full_name)
                .bind(password_hash)
                .fetch_one(&mut *tx)
                .await?;
            let user = sqlx::query_as(select).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, sqlx::Error> {
        let select = "SELECT id, email, full_name, password_hash, created_at FROM user_records WHERE id = $1";
        with_pool!(self, pool => sqlx::query_as(select).bind(id).fetch_optional(pool).await)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, sqlx::Error> {
        let select = "SELECT id, email, full_name, password_hash, created_at FROM user_records WHERE email = $1";
        with_pool!(self, pool => sqlx::query_as(select).bind(email).fetch_optional(pool).await)
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
