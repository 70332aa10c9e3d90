use userctl_proto::{
    gateway::v1::gateway_server::GatewayServer, user::v1::user_store_client::UserStoreClient,
};

use super::{
    Config,
    password::{PasswordError, Passwords},
    service::GatewayService,
    throttle::LoginThrottle,
    token::{JwtKey, KeyError},
};
use crate::{
    client::{self, InvalidAddress},
    server::{MAX_REQUEST_BYTES, ServeError, Server},
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid --cache-addr")]
    CacheAddr(#[from] InvalidAddress),
    #[error(transparent)]
    Passwords(#[from] PasswordError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Loads the signing key (refusing a short one) and binds the listener. The cache need not be
/// up yet: the channel connects on first use.
pub async fn build(config: &Config) -> Result<Server, StartupError> {
    let key = JwtKey::from_file(&config.jwt_secret_file, config.token_ttl)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let passwords = Passwords::new(config.hash_concurrency.unwrap_or(cores))?;
    let users = UserStoreClient::new(client::channel(&config.cache_addr)?);
    let throttle = LoginThrottle::new(
        config.failed_logins_per_account,
        config.failed_logins_per_peer,
    );
    let gateway = GatewayService::new(users, passwords, key, throttle);
    let server = Server::bind(config.listen)
        .await?
        .add_service(GatewayServer::new(gateway).max_decoding_message_size(MAX_REQUEST_BYTES));
    Ok(server)
}
