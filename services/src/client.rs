//! Outbound gRPC channels: one long-lived, lazily connected channel per dependency, with a
//! connect timeout and a deadline on every call, so a dependency that is down costs a caller at
//! most [`CALL_TIMEOUT`], never a hang; over mutual TLS when the service has its TLS files.
//!
//! The address rule: whether a hop uses TLS follows from the TLS flags alone. Addresses are
//! written `http://host:port` (or `https://`, the same with TLS); an `https://` address without
//! the TLS flags is refused at start rather than silently sent in plaintext.

use std::time::Duration;

use tonic::{
    Status,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

/// Deadline on every call a service makes to the next one.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum InvalidAddress {
    #[error("invalid address {addr:?}: expected a URL such as http://127.0.0.1:50053")]
    Malformed { addr: String },
    #[error(
        "address {addr:?} asks for TLS, but --tls-ca, --tls-cert and --tls-key are not set; \
         write it http:// for plaintext"
    )]
    HttpsWithoutTls { addr: String },
    #[error("cannot use the TLS settings for {addr:?}")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A channel to `addr` that connects on first use and reconnects by itself; with `tls`, over
/// mutual TLS whatever the scheme of `addr` says.
pub fn channel(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, InvalidAddress> {
    let malformed = || InvalidAddress::Malformed {
        addr: addr.to_owned(),
    };
    let (scheme, rest) = addr.split_once("://").ok_or_else(malformed)?;
    let endpoint = match (scheme, tls) {
        ("http" | "https", Some(tls)) => Endpoint::from_shared(format!("https://{rest}"))
            .map_err(|_| malformed())?
            .tls_config(tls)
            .map_err(|source| InvalidAddress::Tls {
                addr: addr.to_owned(),
                source,
            })?,
        ("http", None) => Endpoint::from_shared(addr.to_owned()).map_err(|_| malformed())?,
        ("https", None) => {
            return Err(InvalidAddress::HttpsWithoutTls {
                addr: addr.to_owned(),
            });
        }
        _ => return Err(malformed()),
    };
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
