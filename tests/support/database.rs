//! A fresh database per test: a SQLite file in a temporary directory, or a new database on the
//! Postgres server named by `USERCTL_TEST_POSTGRES_URL` (which the README's test command starts).

use std::str::FromStr as _;

use sqlx::{Connection as _, Executor as _, postgres::PgConnectOptions};
use tempfile::TempDir;

pub enum TestDatabase {
    Sqlite { url: String, _dir: TempDir },
    Postgres { url: String },
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for sqlite");
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        Self::Sqlite { url, _dir: dir }
    }

    pub async fn postgres() -> Self {
        let admin = std::env::var("USERCTL_TEST_POSTGRES_URL").expect(
            "USERCTL_TEST_POSTGRES_URL names a Postgres server for tests; run the README's test command (scripts/test), which starts one",
        );
        let name = format!("userctl_test_{}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the test Postgres");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        conn.close().await.ok();
        Self::Postgres {
            url: with_database(&admin, &name),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url } => url,
        }
    }

    /// Every email in the users table, for checking what was really written.
    pub async fn emails(&self) -> Vec<String> {
        let query = "SELECT email FROM users ORDER BY email";
        match self {
            Self::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url)
                    .await
                    .expect("open sqlite");
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .expect("read users")
            }
            Self::Postgres { url } => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect postgres");
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .expect("read users")
            }
        }
    }

    /// A connection that can hold locks (Postgres only), to make the store slow on purpose.
    pub async fn postgres_connection(&self) -> sqlx::PgConnection {
        match self {
            Self::Postgres { url } => sqlx::PgConnection::connect(url)
                .await
                .expect("connect postgres"),
            Self::Sqlite { .. } => panic!("postgres_connection on a SQLite database"),
        }
    }
}

/// `admin` with its database replaced by `name`, keeping host, user and query parameters.
fn with_database(admin: &str, name: &str) -> String {
    // Validate the admin URL once so a typo fails here, clearly.
    PgConnectOptions::from_str(admin)
        .expect("USERCTL_TEST_POSTGRES_URL is a valid postgres:// URL");
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{name}?{query}"),
        None => format!("{root}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_database_keeps_host_and_query() {
        assert_eq!(
            super::with_database("postgres://pg@localhost/postgres?host=/tmp/x", "t1"),
            "postgres://pg@localhost/t1?host=/tmp/x"
        );
        assert_eq!(
            super::with_database("postgres://u:p@127.0.0.1:5/db", "t2"),
            "postgres://u:p@127.0.0.1:5/t2"
        );
    }
}
