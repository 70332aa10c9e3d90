//! The store's only SQL. Both dialects expose the same `user_records` and `session_records`
//! views (see `migrations/`), so every read below is one text run against either pool. The
//! session writes that set a time, and the locks a refresh takes, differ by dialect: they are
//! [`SessionSql`], one text per dialect side by side.

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

/// A row of `session_records`. `active`: neither revoked nor expired, by the database's clock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub active: bool,
}

/// What spending a refresh token came to.
#[derive(Debug)]
pub enum Refresh {
    /// The token was spent and the next one issued; the session lives on.
    Rotated(SessionRecord),
    /// No such token.
    Unknown,
    /// The token is unspent but its session is revoked or expired; nothing changed.
    Ended,
    /// The token was already spent: its session is now revoked (reuse detection).
    Reused(SessionRecord),
}

/// The session statements that differ by dialect.
struct SessionSql {
    /// Opens a write transaction. SQLite: `BEGIN IMMEDIATE` takes the database's one write
    /// lock at once, so a refresh's read and its writes see no other writer in between (a
    /// deferred transaction would read, then fail to upgrade with SQLITE_BUSY under load).
    begin: &'static str,
    /// `$1` id, `$2` user id, `$3` lifetime in seconds; inserts nothing for an unknown user.
    insert_session: &'static str,
    /// `$1` hash → (session id, spent); Postgres locks the token's row until commit.
    lock_token: &'static str,
    /// `$1` session id; Postgres locks the session's row until commit.
    lock_session: &'static str,
    /// `$1` hash.
    spend_token: &'static str,
    /// `$1` session id, `$2` lifetime in seconds from now.
    extend_session: &'static str,
    /// `$1` session id; keeps the first revocation's time.
    revoke_session: &'static str,
}

const POSTGRES_SESSIONS: SessionSql = SessionSql {
    begin: "BEGIN",
    insert_session: "INSERT INTO sessions (id, user_id, expires_at) \
        SELECT $1, id, now() + $3 * INTERVAL '1 second' FROM users WHERE id = $2",
    lock_token: "SELECT session_id, spent_at IS NOT NULL AS spent FROM refresh_tokens \
        WHERE hash = $1 FOR UPDATE",
    lock_session: "SELECT id FROM sessions WHERE id = $1 FOR UPDATE",
    spend_token: "UPDATE refresh_tokens SET spent_at = now() WHERE hash = $1",
    extend_session: "UPDATE sessions SET expires_at = now() + $2 * INTERVAL '1 second' WHERE id = $1",
    revoke_session: "UPDATE sessions SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1",
};

/// SQLite has no row locks: `BEGIN IMMEDIATE` serialises every session write instead, so the
/// "lock" statements are plain reads.
const SQLITE_SESSIONS: SessionSql = SessionSql {
    begin: "BEGIN IMMEDIATE",
    insert_session: "INSERT INTO sessions (id, user_id, expires_at) \
        SELECT $1, id, CAST(strftime('%s', 'now') AS INTEGER) + $3 FROM users WHERE id = $2",
    lock_token: "SELECT session_id, spent_at IS NOT NULL AS spent FROM refresh_tokens \
        WHERE hash = $1",
    lock_session: "SELECT id FROM sessions WHERE id = $1",
    spend_token: "UPDATE refresh_tokens SET spent_at = CAST(strftime('%s', 'now') AS INTEGER) \
        WHERE hash = $1",
    extend_session: "UPDATE sessions SET expires_at = CAST(strftime('%s', 'now') AS INTEGER) + $2 \
        WHERE id = $1",
    revoke_session: "UPDATE sessions \
        SET revoked_at = COALESCE(revoked_at, CAST(strftime('%s', 'now') AS INTEGER)) WHERE id = $1",
};

const INSERT_TOKEN: &str = "INSERT INTO refresh_tokens (hash, session_id) VALUES ($1, $2)";
const SELECT_SESSION: &str = "SELECT id, user_id, created_at, expires_at, revoked_at, active \
    FROM session_records WHERE id = $1";

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

    fn sessions(&self) -> &'static SessionSql {
        match self {
            Database::Postgres(_) => &POSTGRES_SESSIONS,
            Database::Sqlite(_) => &SQLITE_SESSIONS,
        }
    }

    /// Opens session `id` for `user_id` with its first refresh token. `None` when there is no
    /// such user; a hash already stored fails with a unique-violation database error.
    pub async fn insert_session(
        &self,
        id: &str,
        user_id: i64,
        refresh_hash: &[u8],
        lifetime_secs: i64,
    ) -> Result<Option<SessionRecord>, sqlx::Error> {
        let sql = self.sessions();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(sql.begin).await?;
            let inserted = sqlx::query(sql.insert_session)
                .bind(id)
                .bind(user_id)
                .bind(lifetime_secs)
                .execute(&mut *tx)
                .await?;
            if inserted.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query(INSERT_TOKEN).bind(refresh_hash).bind(id).execute(&mut *tx).await?;
            let session = sqlx::query_as(SELECT_SESSION).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(session))
        })
    }

    /// Spends `refresh_hash` and makes `next_hash` its session's only valid token, in one
    /// transaction holding the token's and the session's locks, so of concurrent refreshes with
    /// one token exactly one rotates; the others find it spent, which is reuse.
    pub async fn refresh_session(
        &self,
        refresh_hash: &[u8],
        next_hash: &[u8],
        lifetime_secs: i64,
    ) -> Result<Refresh, sqlx::Error> {
        let sql = self.sessions();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(sql.begin).await?;
            let token: Option<(String, bool)> = sqlx::query_as(sql.lock_token)
                .bind(refresh_hash)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((session_id, spent)) = token else {
                return Ok(Refresh::Unknown);
            };
            sqlx::query(sql.lock_session).bind(&session_id).execute(&mut *tx).await?;
            if spent {
                sqlx::query(sql.revoke_session).bind(&session_id).execute(&mut *tx).await?;
                let session = sqlx::query_as(SELECT_SESSION).bind(&session_id).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                return Ok(Refresh::Reused(session));
            }
            let session: SessionRecord =
                sqlx::query_as(SELECT_SESSION).bind(&session_id).fetch_one(&mut *tx).await?;
            if !session.active {
                return Ok(Refresh::Ended);
            }
            sqlx::query(sql.spend_token).bind(refresh_hash).execute(&mut *tx).await?;
            sqlx::query(INSERT_TOKEN).bind(next_hash).bind(&session_id).execute(&mut *tx).await?;
            sqlx::query(sql.extend_session)
                .bind(&session_id)
                .bind(lifetime_secs)
                .execute(&mut *tx)
                .await?;
            let session = sqlx::query_as(SELECT_SESSION).bind(&session_id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Refresh::Rotated(session))
        })
    }

    /// Revokes session `id`, keeping the first revocation's time. `None` when there is none.
    pub async fn revoke_session(&self, id: &str) -> Result<Option<SessionRecord>, sqlx::Error> {
        let sql = self.sessions();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(sql.begin).await?;
            let revoked = sqlx::query(sql.revoke_session).bind(id).execute(&mut *tx).await?;
            if revoked.rows_affected() == 0 {
                return Ok(None);
            }
            let session = sqlx::query_as(SELECT_SESSION).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(session))
        })
    }

    pub async fn session_by_id(&self, id: &str) -> Result<Option<SessionRecord>, sqlx::Error> {
        with_pool!(self, pool => sqlx::query_as(SELECT_SESSION).bind(id).fetch_optional(pool).await)
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    //! The session queries against a real SQLite file; tests/sessions_store.rs runs them on
    //! Postgres too, through the services.

    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    async fn database_with_user() -> (Database, i64, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Database::open(&url).expect("open");
        db.migrate().await.expect("migrate");
        let user = db
            .insert_user("ann@example.com", "Ann", HASH)
            .await
            .expect("user");
        (db, user.id, dir)
    }

    #[tokio::test]
    async fn a_refresh_rotates_and_a_spent_token_revokes_its_session() {
        let (db, user_id, _dir) = database_with_user().await;
        let session = db
            .insert_session("AAAAAAAAAAAAAAAAAAAAAA", user_id, &[1; 32], 60)
            .await
            .expect("insert")
            .expect("the user exists");
        assert!(session.active && session.revoked_at.is_none());
        assert_eq!(session.user_id, user_id);

        let Refresh::Rotated(rotated) = db
            .refresh_session(&[1; 32], &[2; 32], 120)
            .await
            .expect("refresh")
        else {
            panic!("the first refresh rotates");
        };
        assert!(rotated.expires_at >= session.expires_at + 60, "{rotated:?}");

        let Refresh::Reused(revoked) = db
            .refresh_session(&[1; 32], &[3; 32], 60)
            .await
            .expect("reuse")
        else {
            panic!("a spent token is reuse");
        };
        assert!(!revoked.active && revoked.revoked_at.is_some());
        assert!(matches!(
            db.refresh_session(&[2; 32], &[4; 32], 60)
                .await
                .expect("refresh"),
            Refresh::Ended
        ));
        assert!(matches!(
            db.refresh_session(&[9; 32], &[5; 32], 60)
                .await
                .expect("refresh"),
            Refresh::Unknown
        ));
    }

    #[tokio::test]
    async fn an_unknown_user_gets_no_session_and_a_revoke_keeps_its_first_time() {
        let (db, user_id, _dir) = database_with_user().await;
        assert!(
            db.insert_session("AAAAAAAAAAAAAAAAAAAAAA", user_id + 1, &[1; 32], 60)
                .await
                .expect("insert")
                .is_none()
        );
        assert!(
            db.revoke_session("AAAAAAAAAAAAAAAAAAAAAA")
                .await
                .expect("revoke")
                .is_none()
        );
        db.insert_session("AAAAAAAAAAAAAAAAAAAAAA", user_id, &[1; 32], 60)
            .await
            .expect("insert")
            .expect("the user exists");
        let first = db
            .revoke_session("AAAAAAAAAAAAAAAAAAAAAA")
            .await
            .expect("revoke");
        let second = db
            .revoke_session("AAAAAAAAAAAAAAAAAAAAAA")
            .await
            .expect("revoke");
        assert_eq!(
            first.and_then(|s| s.revoked_at),
            second.and_then(|s| s.revoked_at)
        );
    }

    #[tokio::test]
    async fn of_concurrent_refreshes_with_one_token_exactly_one_rotates() {
        let (db, user_id, _dir) = database_with_user().await;
        db.insert_session("AAAAAAAAAAAAAAAAAAAAAA", user_id, &[1; 32], 60)
            .await
            .expect("insert")
            .expect("the user exists");
        let refreshes = (2..10u8).map(|next| {
            let db = db.clone();
            tokio::spawn(async move { db.refresh_session(&[1; 32], &[next; 32], 60).await })
        });
        let mut rotated = 0;
        for refresh in futures::future::join_all(refreshes).await {
            match refresh.expect("task").expect("refresh") {
                Refresh::Rotated(_) => rotated += 1,
                Refresh::Reused(_) | Refresh::Ended => {}
                Refresh::Unknown => panic!("the token exists"),
            }
        }
        assert_eq!(rotated, 1);
    }
}
