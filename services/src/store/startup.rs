use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tonic::service::interceptor::InterceptedService;
use userctl_proto::user::v1::user_store_server::UserStoreServer;

use super::{
    Config,
    database::{ConnectError, Database},
    service::StoreService,
};
use crate::{
    secret_url::SecretUrlError,
    server::{MAX_REQUEST_BYTES, ServeError, Server},
    tls::{CACHE_NAME, Callers, TlsError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error(transparent)]
    DatabaseUrl(#[from] SecretUrlError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Connects to the database (retrying for `config.connect_timeout` while it starts), applies
/// migrations and binds the listener.
pub async fn build(config: &Config) -> Result<(Server, Database), StartupError> {
    // Read before the database is waited for: a bad TLS file fails at once.
    let tls = config.tls.load()?;
    let db = Database::open(&config.database_url()?)?;
    (|| db.migrate())
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .with_total_delay(Some(config.connect_timeout))
                .without_max_times(),
        )
        .when(ConnectError::is_transient)
        .notify(|err, wait| tracing::info!(error = %err, retry_in = ?wait, "database not ready"))
        .await?;
    let service = UserStoreServer::new(StoreService::new(db.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    // Users and their password hashes: for the cache only (with TLS the gateway reaches the
    // store through the cache; it checks the server it calls is the cache).
    let service = InterceptedService::new(service, Callers(&[CACHE_NAME]));
    let server = Server::bind(config.listen)
        .await?
        .tls(tls.as_ref().map(|tls| tls.acceptor()))
        .add_service(service);
    Ok((server, db))
}
