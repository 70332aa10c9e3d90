//! `usersvc health --addr ADDR`: exits 0 when the server there reports SERVING. It is the
//! container health check, so images need no shell, curl or grpc-health-probe.

use std::time::Duration;

use tonic::transport::ClientTlsConfig;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Address(#[from] crate::client::InvalidAddress),
    #[error("{addr} did not answer the health check: {status}")]
    Unreachable { addr: String, status: String },
    #[error("{addr} is {status:?}")]
    NotServing { addr: String, status: ServingStatus },
}

/// Checks the overall health of the server at `addr` (an `http://host:port` URL or `host:port`);
/// with `tls`, over mutual TLS (see [`crate::client::channel`]).
pub async fn probe(
    addr: &str,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
) -> Result<(), ProbeError> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let channel = crate::client::channel(&url, tls.as_ref())?;
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(timeout);
    let response = client
        .check(request)
        .await
        .map_err(|status| ProbeError::Unreachable {
            addr: url.clone(),
            status: status.message().to_owned(),
        })?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        status => Err(ProbeError::NotServing { addr: url, status }),
    }
}
