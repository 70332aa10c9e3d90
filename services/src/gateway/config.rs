use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "USERSVC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// The entry cache (or, without a cache, the store: both speak UserStore).
    #[arg(
        long,
        env = "USERSVC_CACHE_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub cache_addr: String,

    /// File holding the HS256 signing key: at least 32 bytes (trailing whitespace is ignored).
    #[arg(long, env = "USERSVC_JWT_SECRET_FILE")]
    pub jwt_secret_file: PathBuf,

    /// Lifetime of an access token.
    #[arg(long, env = "USERSVC_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// Password hashes computed at once (each holds 19 MiB); default: one per core.
    #[arg(long, env = "USERSVC_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Failed logins per minute for one account before it is throttled.
    #[arg(long, env = "USERSVC_FAILED_LOGINS_PER_ACCOUNT", default_value = "5")]
    pub failed_logins_per_account: NonZeroU32,

    /// Failed logins per minute from one peer address before it is throttled.
    #[arg(long, env = "USERSVC_FAILED_LOGINS_PER_PEER", default_value = "30")]
    pub failed_logins_per_peer: NonZeroU32,
}
