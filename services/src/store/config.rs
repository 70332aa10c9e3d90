use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use crate::secret_url::{self, SecretUrlError};

#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "USERSVC_LISTEN", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,

    /// `postgres://user:pass@host/db` or `sqlite://path/to/file.db`; migrations run at start.
    #[arg(
        long,
        env = "USERSVC_DATABASE_URL",
        default_value = "sqlite://userctl.db"
    )]
    pub database_url: String,

    /// A file holding the database URL (an orchestrator's secret), instead of --database-url.
    #[arg(
        long,
        env = "USERSVC_DATABASE_URL_FILE",
        value_name = "PATH",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,

    /// How long to keep retrying the first database connection (the database may still be
    /// starting when the store does).
    #[arg(long, env = "USERSVC_CONNECT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

impl Config {
    /// The database URL, from its file when one is given.
    pub fn database_url(&self) -> Result<String, SecretUrlError> {
        match &self.database_url_file {
            Some(path) => secret_url::read("--database-url-file", path),
            None => Ok(self.database_url.clone()),
        }
    }
}

// The database URL may carry a password: never print it.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database",
                &match &self.database_url_file {
                    Some(path) => format!("from {}", path.display()),
                    None => format!("{:?}", super::database::Dialect::of(&self.database_url)),
                },
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}
