use std::{fmt, net::SocketAddr, time::Duration};

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

    /// How long to keep retrying the first database connection (the database may still be
    /// starting when the store does).
    #[arg(long, env = "USERSVC_CONNECT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

// The database URL may carry a password: never print it.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database",
                &super::database::Dialect::of(&self.database_url),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}
