//! `usersvc store|cache|gateway|health|signing-keys`: parses flags, wires a service, runs it
//! until SIGTERM. It lives in the library, and `main` only calls [`main`]: polling a
//! service's future is what compiles every async function it awaits, and in a release build a
//! binary that polled it would compile them all again beside the library's copies.

use std::{process::ExitCode, time::Duration};

use crate::{cache, gateway, health, shutdown, store, telemetry, tls::TlsArgs};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "usersvc",
    version,
    about = "The services of userctl: store, cache and gateway"
)]
struct Cli {
    /// Log as one JSON object per line instead of text.
    #[arg(long, global = true, env = "USERSVC_LOG_JSON")]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The entry store: users in Postgres or SQLite.
    Store(store::Config),
    /// The entry cache: cache-aside over Redis in front of the store.
    Cache(cache::Config),
    /// The gateway: register, login and whoami over gRPC and HTTP/JSON, the only public API.
    Gateway(gateway::Config),
    /// Write a new token signing key set for `gateway --signing-keys` (one key, signing from
    /// now) to a new file, mode 0600; `userctl up` makes its own.
    SigningKeys {
        /// The file to create; an existing one is never replaced.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// eddsa (Ed25519), or rs256 for verifiers without EdDSA
        #[arg(long, default_value = "eddsa", value_parser = |value: &str| value.parse::<userctl_keys::Algorithm>())]
        algorithm: userctl_keys::Algorithm,
    },
    /// Exit 0 when the service at ADDR reports SERVING (a container health check).
    Health {
        #[arg(long, env = "USERSVC_HEALTH_ADDR")]
        addr: String,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Probe over mutual TLS (with the --tls-* files), expecting the server's certificate
        /// to be for this name: `store` or `cache`. Without it, plaintext (the gateway's port).
        #[arg(long, env = "USERSVC_HEALTH_SERVER_NAME", value_name = "NAME")]
        tls_server_name: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// Said once at start by a service that serves or calls in plaintext.
const PLAINTEXT: &str =
    "serving plaintext: any local process can call it; userctl up turns on mutual TLS";

/// The whole `usersvc` command: its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_command(cli))
}

async fn run_command(cli: Cli) -> ExitCode {
    if let Command::Health {
        addr,
        timeout,
        tls_server_name,
        tls,
    } = &cli.command
    {
        let tls = match (tls_server_name, tls.load()) {
            (_, Err(err)) => {
                eprintln!("unhealthy: {err}");
                return ExitCode::FAILURE;
            }
            (None, Ok(_)) => None,
            (Some(name), Ok(Some(tls))) => Some(tls.client(name)),
            (Some(_), Ok(None)) => {
                eprintln!("unhealthy: --tls-server-name needs --tls-ca, --tls-cert and --tls-key");
                return ExitCode::FAILURE;
            }
        };
        return match health::probe(addr, *timeout, tls).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("unhealthy: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::SigningKeys { out, algorithm } = &cli.command {
        return match write_signing_keys(out, *algorithm) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let _logs = telemetry::init(cli.log_json);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    match command {
        Command::Store(config) => {
            tracing::info!(?config, "starting store");
            let (server, db) = store::build(&config)
                .await
                .context("cannot start the store")?;
            let addr = server.local_addr()?;
            if server.is_mutual_tls() {
                tracing::info!(%addr, "store serving over mutual TLS: callers need a certificate from the stack's CA");
            } else {
                tracing::warn!(%addr, "store {PLAINTEXT}");
            }
            server.run_until_stopped(shutdown).await?;
            db.close().await;
        }
        Command::Cache(config) => {
            tracing::info!(?config, "starting cache");
            let (server, probe) = cache::build(&config, shutdown.clone())
                .await
                .context("cannot start the cache")?;
            let addr = server.local_addr()?;
            if server.is_mutual_tls() {
                tracing::info!(%addr, "cache serving over mutual TLS: callers need a certificate from the stack's CA");
            } else {
                tracing::warn!(%addr, "cache {PLAINTEXT}");
            }
            server.run_until_stopped(shutdown).await?;
            probe.await?;
        }
        Command::Gateway(config) => {
            tracing::info!(?config, "starting gateway");
            let cache_tls = config.tls.ca.is_some();
            let gateway = gateway::build(&config, &shutdown)
                .await
                .context("cannot start the gateway")?;
            match gateway.http_addr() {
                Some(http) => {
                    tracing::info!(addr = %gateway.local_addr()?, %http, cache_tls, "gateway serving gRPC and HTTP");
                }
                None => {
                    tracing::info!(addr = %gateway.local_addr()?, cache_tls, "gateway serving gRPC (HTTP off)")
                }
            }
            gateway.run_until_stopped(shutdown).await?;
        }
        Command::Health { .. } | Command::SigningKeys { .. } => {
            unreachable!("handled before logging starts")
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// A new key set in a new file, readable by its owner only.
fn write_signing_keys(
    out: &std::path::Path,
    algorithm: userctl_keys::Algorithm,
) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let set = userctl_keys::KeySet::generate(algorithm, gateway::token::now_secs())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "cannot create {} (an existing file is never replaced)",
                out.display()
            )
        })?;
    file.write_all(&set.to_json())
        .with_context(|| format!("cannot write {}", out.display()))
}
