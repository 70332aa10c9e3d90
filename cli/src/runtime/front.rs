//! The proxy in front of two or more gateways: HAProxy's configuration, as text every runtime
//! writes where its HAProxy reads it. Users keep one gRPC and one HTTP address however many
//! gateways run; with one gateway there is no proxy (its hop would cost every call).
//!
//! What it does (`docs/design.md`, "Replicas"):
//! - gRPC end to end over HTTP/2 (`proto h2` on both sides), the HTTP door beside it;
//! - health from each gateway's `/readyz`, which turns 503 the moment a gateway starts
//!   draining, so a stopping gateway leaves the rotation before it stops accepting;
//! - a call whose gateway went away (refused connection, closed without an answer) is sent
//!   once more to another gateway — except registrations and refreshes: a `Register` that
//!   reached a gateway may have been stored, and sending it again would answer "already exists"
//!   for an account the caller just made; a `Refresh` may have spent its token, and a second
//!   try would look like reuse and end the session. Connection failures (nothing was sent) are
//!   retried for every call.
//!
//! Nothing here does I/O.

use std::fmt::Write as _;

use crate::stack::{GATEWAY_PORT, HTTP_PORT, Replicas, Service};

/// Where HAProxy finds the gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateways {
    /// Fixed addresses (the local runtime: one port pair per replica on 127.0.0.1). A change
    /// means a new configuration and a reload.
    Listed(Vec<GatewayAddr>),
    /// A DNS name that resolves to every replica (a container network alias, a swarm
    /// `tasks.` name), asked again every second through `resolver`; up to `slots` replicas,
    /// so scaling needs no new configuration.
    Dns {
        name: String,
        grpc_port: u16,
        http_port: u16,
        slots: u16,
        /// `host:port` of the DNS server (Docker's embedded one is `127.0.0.11:53`).
        resolver: String,
    },
}

/// One gateway replica's gRPC and HTTP ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddr {
    pub host: String,
    pub grpc_port: u16,
    pub http_port: u16,
}

/// What the proxy listens on and where it sends calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Front {
    /// `host:port` for gRPC and for the HTTP door.
    pub grpc_bind: String,
    pub http_bind: String,
    pub gateways: Gateways,
}

/// The gRPC methods and HTTP routes never resent after they reached a gateway: a registration
/// may have created the account, and a refresh may have spent its token (a second try would
/// look like reuse of a stolen token and end the session).
const ONCE_RPCS: &str = "/userctl.gateway.v1.Gateway/Register /userctl.gateway.v1.Gateway/Refresh";
const ONCE_ROUTES: &str = "/api/auth/register /api/auth/refresh";

/// Docker's DNS server inside every user-defined network, overlays included.
const DOCKER_DNS: &str = "127.0.0.11:53";

/// The configuration of a proxy in a container (docker or swarm) in front of the gateways,
/// found by their network alias through Docker's DNS, with a slot for as many replicas as the
/// machine holds, so a scale needs no new configuration.
pub fn in_container() -> String {
    config(&Front {
        grpc_bind: format!("0.0.0.0:{GATEWAY_PORT}"),
        http_bind: format!("0.0.0.0:{HTTP_PORT}"),
        gateways: Gateways::Dns {
            name: Service::Gateway.name().to_owned(),
            grpc_port: GATEWAY_PORT,
            http_port: HTTP_PORT,
            slots: Replicas::max(),
            resolver: DOCKER_DNS.to_owned(),
        },
    })
}

/// The health check of every gateway server. Two failed checks take a gateway out, the second
/// 200 ms after the first: a draining one leaves within 700 ms, inside its 1 s grace, and one
/// check that a busy machine answered late does not take out a gateway that may be the only
/// one serving while another restarts.
pub const GATEWAY_CHECK: &str = "inter 500ms fastinter 200ms fall 2 rise 1";

/// The HAProxy configuration for `front`.
pub fn config(front: &Front) -> String {
    let mut text = format!(
        "# Written by userctl: the proxy in front of the gateway replicas.
global
    log stdout format raw local0 info
    maxconn 4096

defaults
    log global
    mode http
    option dontlognull
    timeout connect 2s
    timeout client 1h
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 5m
    # A call whose gateway went away is sent once more, to another gateway.
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    # Health from /readyz: 503 as soon as a gateway starts draining.
    option httpchk GET /readyz
    default-server {GATEWAY_CHECK}
    # Longer than the gateway's own 1 s budget for /readyz (it asks the cache), so its answer
    # decides and not the proxy's patience: with the default (inter, 500 ms) a busy machine or
    # a restarting cache timed every gateway out at once and left none in rotation.
    timeout check 2s
",
    );
    if let Gateways::Dns { resolver, .. } = &front.gateways {
        let _ = write!(
            text,
            "
resolvers dns
    nameserver dns {resolver}
    hold valid 1s
    hold obsolete 1s
    accepted_payload_size 8192
"
        );
    }
    let _ = write!(
        text,
        "
frontend grpc
    bind {grpc} proto h2
    default_backend gateways_grpc

frontend http
    bind {http}
    default_backend gateways_http

backend gateways_grpc
    http-request disable-l7-retry if {{ path {ONCE_RPCS} }}
{grpc_servers}
backend gateways_http
    http-request disable-l7-retry if METH_POST {{ path {ONCE_ROUTES} }}
{http_servers}",
        grpc = front.grpc_bind,
        http = front.http_bind,
        grpc_servers = servers(&front.gateways, Door::Grpc),
        http_servers = servers(&front.gateways, Door::Http),
    );
    text
}

#[derive(Clone, Copy)]
enum Door {
    Grpc,
    Http,
}

/// The `server` lines of one backend; every check asks the replica's HTTP port.
fn servers(gateways: &Gateways, door: Door) -> String {
    // The check asks the HTTP door, over HTTP/1.1 whatever the server's own protocol.
    let (proto, check_proto) = match door {
        Door::Grpc => (" proto h2", " check-proto h1"),
        Door::Http => ("", ""),
    };
    match gateways {
        Gateways::Listed(addrs) => addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                let port = match door {
                    Door::Grpc => addr.grpc_port,
                    Door::Http => addr.http_port,
                };
                format!(
                    "    server gateway{} {}:{port}{proto} check port {}{check_proto}\n",
                    index + 1,
                    addr.host,
                    addr.http_port
                )
            })
            .collect(),
        Gateways::Dns {
            name,
            grpc_port,
            http_port,
            slots,
            ..
        } => {
            let port = match door {
                Door::Grpc => grpc_port,
                Door::Http => http_port,
            };
            // One `server` line per slot rather than a `server-template`: HAProxy 2.6 gives
            // the template's copies every setting but `check-proto`, so from the second slot on
            // the check spoke h2 to the HTTP door and timed out. Servers naming one host get
            // distinct addresses from its answer, as a template's do.
            (1..=*slots)
                .map(|slot| {
                    format!(
                        "    server gateway{slot} {name}:{port}{proto} check port {http_port}\
                         {check_proto} resolvers dns init-addr none\n"
                    )
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Front {
        Front {
            grpc_bind: "127.0.0.1:50051".into(),
            http_bind: "127.0.0.1:8080".into(),
            gateways: Gateways::Listed(vec![
                GatewayAddr {
                    host: "127.0.0.1".into(),
                    grpc_port: 41001,
                    http_port: 41002,
                },
                GatewayAddr {
                    host: "127.0.0.1".into(),
                    grpc_port: 41003,
                    http_port: 41004,
                },
            ]),
        }
    }

    #[test]
    fn every_listed_gateway_serves_both_doors_and_is_checked_on_its_http_port() {
        let text = config(&listed());
        assert!(text.contains("bind 127.0.0.1:50051 proto h2"), "{text}");
        assert!(text.contains("bind 127.0.0.1:8080\n"), "{text}");
        assert!(
            text.contains(
                "server gateway1 127.0.0.1:41001 proto h2 check port 41002 check-proto h1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("server gateway2 127.0.0.1:41004 check port 41004"),
            "{text}"
        );
        assert!(!text.contains("resolvers dns"), "{text}");
    }

    #[test]
    fn a_check_waits_longer_than_the_gateways_own_readiness_budget() {
        // /readyz gives the cache 1 s (services/src/gateway/http/routes.rs, READY_TIMEOUT); a
        // shorter check timeout drops a gateway that is merely slow to say it is ready.
        let text = config(&listed());
        assert!(text.contains("timeout check 2s"), "{text}");
    }

    #[test]
    fn registrations_and_refreshes_are_never_resent_after_they_reached_a_gateway() {
        let text = config(&listed());
        assert!(text.contains("retry-on conn-failure empty-response response-timeout"));
        assert!(text.contains(
            "disable-l7-retry if { path /userctl.gateway.v1.Gateway/Register \
             /userctl.gateway.v1.Gateway/Refresh }"
        ));
        assert!(text.contains(
            "disable-l7-retry if METH_POST { path /api/auth/register /api/auth/refresh }"
        ));
    }

    #[test]
    fn dns_discovery_has_a_slot_for_every_replica_the_machine_holds() {
        let text = config(&Front {
            grpc_bind: "0.0.0.0:50051".into(),
            http_bind: "0.0.0.0:8080".into(),
            gateways: Gateways::Dns {
                name: "gateway".into(),
                grpc_port: 50051,
                http_port: 8080,
                slots: 8,
                resolver: "127.0.0.11:53".into(),
            },
        });
        assert!(text.contains("nameserver dns 127.0.0.11:53"), "{text}");
        for slot in 1..=8 {
            assert!(
                text.contains(&format!(
                    "server gateway{slot} gateway:50051 proto h2 check port 8080 check-proto h1 \
                     resolvers dns init-addr none\n"
                )),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "server gateway{slot} gateway:8080 check port 8080 resolvers dns"
                )),
                "{text}"
            );
        }
        assert!(!text.contains("gateway9"), "{text}");
    }
}
