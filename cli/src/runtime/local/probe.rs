//! Whether a `usersvc` service answers its gRPC health check: how the local runtime knows a
//! process is ready (the docker runtime asks the engine's health check instead).

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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
