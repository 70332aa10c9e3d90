//! Whether a `usersvc` service answers its gRPC health check: how the local runtime knows a
//! process is ready (the docker runtime asks the engine's health check instead). `up`,
//! `status` and the supervisor (while it converges) all ask the same way.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{home::ProjectHome, pki::Holder, stack::Service};

/// How long one health check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether `service` at `addr` answers its health check: over mutual TLS with the `userctl`
/// certificate for the store and cache, plaintext for the gateway and the proxy in front of
/// the gateways (whose answer is a gateway's).
pub async fn serving(home: &ProjectHome, service: Service, addr: &str) -> bool {
    let server_name = Holder::of(service).and_then(Holder::server_name);
    let endpoint = match server_name {
        None => Endpoint::from_shared(addr.to_owned()).ok(),
        Some(name) => match home.tls_identity(Holder::Userctl) {
            Ok(Some(identity)) => identity.endpoint(addr, name).ok(),
            // No certificates: the stack cannot be serving over mutual TLS either.
            _ => None,
        },
    };
    match endpoint {
        Some(endpoint) => is_serving(endpoint, CHECK_TIMEOUT).await,
        None => false,
    }
}

/// Whether the server at `endpoint` reports SERVING, within `timeout`.
pub async fn is_serving(endpoint: Endpoint, timeout: Duration) -> bool {
    let check = async {
        let channel = endpoint.connect_timeout(timeout).connect().await.ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(response.into_inner().status() == ServingStatus::Serving)
    };
    tokio::time::timeout(timeout, check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
