//! Outbound gRPC channels: one long-lived, lazily connected channel per dependency, with a
//! connect timeout and a deadline on every call, so a dependency that is down costs a caller at
//! most [`CALL_TIMEOUT`], never a hang.

use std::time::Duration;

use tonic::{
    Status,
    transport::{Channel, Endpoint},
};

/// Deadline on every call a service makes to the next one.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("invalid address {addr:?}: expected a URL such as http://127.0.0.1:50053")]
pub struct InvalidAddress {
    addr: String,
}

/// A channel to `addr` that connects on first use and reconnects by itself.
pub fn channel(addr: &str) -> Result<Channel, InvalidAddress> {
    let endpoint = Endpoint::from_shared(addr.to_owned()).map_err(|_| InvalidAddress {
        addr: addr.to_owned(),
    })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Whether a failed call was never answered by the peer: the status was made here, from a
/// transport error (connection refused or reset, a GOAWAY while the peer shuts down, a
/// timeout), rather than received from the peer. Such a status can carry any code — tonic
/// maps a GOAWAY with NO_ERROR, which a peer sends while it drains, to INTERNAL — yet it always
/// means "the dependency is unavailable; retry shortly".
pub fn is_transport_failure(status: &Status) -> bool {
    // Statuses received from the peer are decoded from its headers and never have a source.
    std::error::Error::source(status).is_some()
}
