//! The local proxy's gateways, changed in place. HAProxy could load a new configuration
//! (SIGUSR2), but its old worker then closes its client connections, and a long-lived gRPC
//! client loses what it had in flight on them. Its runtime API (a Unix socket in the
//! project's directory) adds and removes servers in the running worker instead, so scaling the
//! gateways touches no client connection; the configuration file is still rewritten, for a
//! proxy that restarts. When the API fails, the supervisor falls back to a reload.

use std::path::{Path, PathBuf};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
};

use super::plan::{GatewayPorts, Plan};
use crate::runtime::front;

/// The backends [`front::config`] writes, one per door.
const GRPC_BACKEND: &str = "gateways_grpc";
const HTTP_BACKEND: &str = "gateways_http";
/// The health check every gateway server gets, as the configuration's `default-server` line
/// says (servers added at run time do not inherit it).
const CHECK: &str = front::GATEWAY_CHECK;
/// Longest path a Unix socket address holds (`sun_path`, less the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where the proxy's runtime API listens.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("haproxy.sock")
}

/// The proxy's configuration for `plan`, with its runtime API socket (level admin, mode 0600:
/// only this user may change the servers); none with one gateway.
pub fn config(plan: &Plan, dir: &Path) -> Option<String> {
    let text = front::config(&plan.front()?);
    let socket = socket_path(dir);
    let socket = socket.display().to_string();
    if socket.len() > MAX_SOCKET_PATH {
        // HAProxy would refuse to start; without the API, changes reload instead.
        return Some(text);
    }
    Some(text.replacen(
        "global\n",
        &format!("global\n    stats socket {socket} mode 600 level admin\n"),
        1,
    ))
}

/// Makes the running proxy's servers those of `new`: adds and enables the gateways that are
/// new, and puts those that go away in maintenance (no new calls; what they have in flight
/// finishes). [`forget`] deletes them once they have stopped.
pub async fn apply(dir: &Path, old: &[GatewayPorts], new: &[GatewayPorts]) -> Result<(), String> {
    let socket = socket_path(dir);
    for (index, ports) in new.iter().enumerate() {
        if old.get(index) == Some(ports) {
            continue;
        }
        let name = server(index);
        if index < old.len() {
            // Same replica, other ports: not what a scale does, but be exact.
            for backend in [GRPC_BACKEND, HTTP_BACKEND] {
                ask(&socket, &format!("disable server {backend}/{name}")).await?;
                ask(&socket, &format!("del server {backend}/{name}")).await?;
            }
        }
        add(&socket, GRPC_BACKEND, &name, &grpc_server(ports)).await?;
        add(&socket, HTTP_BACKEND, &name, &http_server(ports)).await?;
    }
    for index in new.len()..old.len() {
        for backend in [GRPC_BACKEND, HTTP_BACKEND] {
            ask(
                &socket,
                &format!("disable server {backend}/{}", server(index)),
            )
            .await?;
        }
    }
    Ok(())
}

/// Deletes the servers of the gateways from `from` on (stopped by now); a server still
/// holding a connection stays, in maintenance, until the next reload.
pub async fn forget(dir: &Path, from: usize, to: usize) {
    let socket = socket_path(dir);
    for index in from..to {
        for backend in [GRPC_BACKEND, HTTP_BACKEND] {
            let _ = ask(&socket, &format!("del server {backend}/{}", server(index))).await;
        }
    }
}

/// `gateway1` for the first replica, as [`front::config`] names them.
fn server(index: usize) -> String {
    format!("gateway{}", index + 1)
}

fn grpc_server(ports: &GatewayPorts) -> String {
    format!(
        "127.0.0.1:{} proto h2 check port {} check-proto h1 {CHECK}",
        ports.grpc, ports.http
    )
}

fn http_server(ports: &GatewayPorts) -> String {
    format!("127.0.0.1:{} check port {} {CHECK}", ports.http, ports.http)
}

async fn add(socket: &Path, backend: &str, name: &str, line: &str) -> Result<(), String> {
    let answer = ask(socket, &format!("add server {backend}/{name} {line}")).await?;
    if !answer.contains("New server registered") {
        return Err(format!("adding {backend}/{name}: {}", answer.trim()));
    }
    ask(socket, &format!("enable health {backend}/{name}")).await?;
    ask(socket, &format!("enable server {backend}/{name}")).await?;
    Ok(())
}

/// Sends one command and returns the answer; an answer other than the empty one a command
/// that succeeded gives, or the one `add`/`del` give, is an error.
async fn ask(socket: &Path, command: &str) -> Result<String, String> {
    let talk = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), talk)
        .await
        .map_err(|_| format!("{command}: the proxy did not answer"))?
        .map_err(|err| format!("{command}: {err} ({})", socket.display()))?;
    let fine = answer.trim().is_empty()
        || answer.contains("New server registered")
        || answer.contains("Server deleted");
    if fine {
        Ok(answer)
    } else {
        Err(format!("{command}: {}", answer.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_added_at_run_time_match_the_configuration() {
        let gateways = [
            GatewayPorts {
                grpc: 41001,
                http: 41002,
            },
            GatewayPorts {
                grpc: 41003,
                http: 41004,
            },
        ];
        let text = front::config(&front::Front {
            grpc_bind: "127.0.0.1:50051".into(),
            http_bind: "127.0.0.1:8080".into(),
            gateways: front::Gateways::Listed(
                gateways
                    .iter()
                    .map(|ports| front::GatewayAddr {
                        host: "127.0.0.1".into(),
                        grpc_port: ports.grpc,
                        http_port: ports.http,
                    })
                    .collect(),
            ),
        });
        for backend in [GRPC_BACKEND, HTTP_BACKEND] {
            assert!(text.contains(&format!("backend {backend}\n")), "{text}");
        }
        assert!(
            text.contains(&format!("default-server {CHECK}\n")),
            "{text}"
        );
        let grpc = format!("server {} {}", server(1), grpc_server(&gateways[1]));
        let http = format!("server {} {}", server(1), http_server(&gateways[1]));
        let without_check = |line: &str| line.replace(&format!(" {CHECK}"), "");
        assert!(text.contains(&without_check(&grpc)), "{grpc}\n{text}");
        assert!(text.contains(&without_check(&http)), "{http}\n{text}");
    }
}
