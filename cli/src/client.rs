//! Talking to the stack over gRPC, and what each status means to a user: a message, a hint and
//! an exit code.

use std::time::Duration;

use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use userctl_proto::gateway::v1::gateway_client::GatewayClient;

use crate::{
    error::{CliError, Exit, Result},
    home::{ProjectHome, TlsIdentity},
    stack::{GATEWAY_PORT, loopback_url},
};

/// The gateway `up` publishes by default.
pub fn default_gateway() -> String {
    loopback_url(GATEWAY_PORT)
}
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Generous: a login may queue behind other password hashes.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `--gateway`, else what the last `up` recorded, else the default address.
pub fn gateway_addr(home: &ProjectHome, flag: Option<String>) -> Result<String> {
    if let Some(addr) = flag {
        return Ok(addr);
    }
    Ok(home
        .stack()?
        .map_or_else(default_gateway, |stack| stack.gateway))
}

/// A connected channel, or exit 4 with a hint to start the stack.
pub async fn connect(addr: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|_| {
            CliError::usage(format!(
                "invalid gateway address {addr:?}; expected a URL such as {}",
                default_gateway()
            ))
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    endpoint.connect().await.map_err(|_| {
        CliError::unreachable(format!("cannot reach the gateway at {addr}"))
            .with_hint("is the stack up? run `userctl up`")
    })
}

/// A connected channel to the stack's cache or store, whose certificate must be for
/// `server_name`: over mutual TLS with `identity` (the `userctl` certificate `up` made), or
/// plaintext without one. Exit 4 when it does not answer.
pub async fn connect_internal(
    addr: &str,
    server_name: &str,
    identity: Option<&TlsIdentity>,
) -> Result<Channel> {
    let invalid = || {
        CliError::usage(format!(
            "invalid {server_name} address {addr:?}; expected a URL such as http://127.0.0.1:50052"
        ))
    };
    let endpoint = match identity {
        Some(identity) => identity
            .endpoint(addr, server_name)
            .map_err(|_| invalid())?,
        None => Endpoint::from_shared(addr.to_owned()).map_err(|_| invalid())?,
    };
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|_| {
            CliError::unreachable(format!("cannot reach the {server_name} at {addr}"))
                .with_hint("is the stack up? run `userctl up`")
        })
}

pub async fn gateway(addr: &str) -> Result<GatewayClient<Channel>> {
    Ok(GatewayClient::new(connect(addr).await?))
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> Result<Request<T>> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        CliError::auth("the saved token is corrupt").with_hint("run `userctl login` again")
    })?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// What a failed gateway call means to the user.
pub fn status_error(status: &Status) -> CliError {
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument => CliError::new(Exit::Usage, message),
        Code::AlreadyExists => {
            CliError::failed(message).with_hint("log in with `userctl login`, or use another email")
        }
        Code::Unauthenticated => CliError::auth(message),
        Code::ResourceExhausted => {
            CliError::failed(message).with_hint("wait a little and try again")
        }
        Code::Unavailable => CliError::unreachable(format!("the stack is unavailable: {message}"))
            .with_hint("check `userctl status`"),
        Code::DeadlineExceeded => CliError::unreachable("the gateway did not answer in time")
            .with_hint("check `userctl status`"),
        _ => CliError::failed(format!("the gateway failed: {message}")),
    }
}
