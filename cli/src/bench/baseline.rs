//! Same-run baselines: what a bare gRPC unary call (plaintext, and over mutual TLS as the
//! stack's inner hops are), a bare Redis GET, one token verify and argon2id hashing cost on
//! this machine now, so the stack's figures read as ratios that survive a noisy machine.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use rand::Rng as _;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::{
    Request, Response, Status,
    transport::{Certificate, Channel, Identity, ServerTlsConfig},
};
use userctl_proto::{
    bench::v1::{
        EchoMessage,
        echo_client::EchoClient,
        echo_server::{Echo, EchoServer},
    },
    gateway::v1::{WhoAmIRequest, gateway_client::GatewayClient},
};

use super::{
    Target,
    load::{self, Limits, Measurement, Outcome},
};
use crate::{
    client,
    error::{CliError, Result},
    home::TlsIdentity,
    pki::{self, Holder},
};

#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Bare gRPC unary echo, 1 in flight (latency) and at the bench's concurrency (throughput).
    pub echo_single: Measurement,
    pub echo_loaded: Measurement,
    /// The same over mutual TLS, when the stack's services talk over it: its inner hops
    /// (gateway to cache, cache to store) then pay what this pays.
    pub echo_tls_single: Option<Measurement>,
    pub echo_tls_loaded: Option<Measurement>,
    /// Redis GET of a cached user's bytes against the stack's Redis, 1 in flight.
    pub redis_get: Option<Measurement>,
    pub redis_note: Option<String>,
    /// One argon2id hash here, in milliseconds (the cost that bounds login).
    pub argon2_hash_ms: f64,
    /// argon2id hashes per second with every core hashing at once, in this process: the most
    /// logins (and registrations) per second this machine can serve.
    pub argon2_parallel_per_sec: f64,
    /// One in-process verify of a token signed with the stack's algorithm, in microseconds
    /// (every WhoAmI pays it).
    pub token_verify_us: f64,
    pub token_algorithm: userctl_keys::Algorithm,
}

/// Measures every baseline; `token` is a bench account's, for the whoami payload.
pub async fn measure(
    target: &Target,
    limits: Limits,
    token: &str,
    gateway: &GatewayClient<Channel>,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
) -> Result<Baselines> {
    // The same bytes a whoami answer carries.
    let mut probe = gateway.clone();
    let profile = probe
        .who_am_i(client::authorized(WhoAmIRequest {}, token)?)
        .await
        .map_err(|status| client::status_error(&status))?
        .into_inner();
    let payload = prost::Message::encode_to_vec(&profile);
    let single = Limits {
        concurrency: 1,
        ..limits
    };
    let echo = EchoBaseline::start(None)
        .map_err(|err| CliError::failed(format!("cannot start the echo baseline: {err}")))?;
    let (echo_single, echo_loaded) = echo.measure(&payload, limits, "echo", progress).await?;
    let (echo_tls_single, echo_tls_loaded) = if target.cache_tls.is_some() {
        let echo = EchoBaseline::start(Some(EchoTls::issue()?)).map_err(|err| {
            CliError::failed(format!("cannot start the TLS echo baseline: {err}"))
        })?;
        let (single, loaded) = echo
            .measure(&payload, limits, "echo over TLS", progress)
            .await?;
        (Some(single), Some(loaded))
    } else {
        (None, None)
    };

    let (redis_get, redis_note) = match &target.redis_url {
        Some(url) => match redis_baseline(url, payload, single, progress).await {
            Ok(m) => (Some(m), None),
            Err(err) => (None, Some(format!("Redis baseline failed: {err}"))),
        },
        None => (None, Some("the stack's Redis is not reachable from the host (docker runtime); run the bench on the local runtime for this baseline".into())),
    };
    // About a second of hashing on every core: on blocking threads, not the async workers.
    let (argon2_hash_ms, argon2_parallel_per_sec) =
        tokio::task::spawn_blocking(|| (argon2_hash_ms(), argon2_parallel_per_sec()))
            .await
            .map_err(|err| CliError::failed(format!("the argon2id baseline failed: {err}")))?;
    Ok(Baselines {
        echo_single,
        echo_loaded,
        echo_tls_single,
        echo_tls_loaded,
        redis_get,
        redis_note,
        argon2_hash_ms,
        argon2_parallel_per_sec,
        token_verify_us: token_verify_us(target.token_algorithm)?,
        token_algorithm: target.token_algorithm,
    })
}

/// The median of a few hundred in-process verifies of one token signed with a new key of
/// `alg`, with the checks the gateway makes (algorithm pinned, issuer, audience, expiry).
fn token_verify_us(alg: userctl_keys::Algorithm) -> Result<f64> {
    use jsonwebtoken::{Header, Validation};
    let now = crate::home::now_secs();
    let set = userctl_keys::KeySet::generate(alg, now).map_err(|err| {
        CliError::failed(format!("cannot make a key for the verify baseline: {err}"))
    })?;
    let key = &set.keys()[0];
    let claims = serde_json::json!({
        "sub": "1", "iss": "userctl", "aud": "userctl", "iat": now, "nbf": now,
        "exp": now + 600, "jti": "bench", "sid": "AAAAAAAAAAAAAAAAAAAAAA",
    });
    let mut header = Header::new(alg.jwt());
    header.kid = Some(key.kid().to_owned());
    let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())
        .map_err(|err| CliError::failed(format!("cannot sign for the verify baseline: {err}")))?;
    let decoding = key.decoding_key();
    let mut validation = Validation::new(alg.jwt());
    validation.set_issuer(&["userctl"]);
    validation.set_audience(&["userctl"]);
    let mut times: Vec<f64> = (0..300)
        .map(|_| {
            let started = Instant::now();
            let verified =
                jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation);
            let took = started.elapsed().as_secs_f64() * 1e6;
            debug_assert!(verified.is_ok());
            took
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

async fn redis_baseline(
    url: &str,
    payload: Vec<u8>,
    limits: Limits,
    progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
) -> Result<Measurement, redis::RedisError> {
    use redis::AsyncCommands as _;
    // With TCP_NODELAY, as the cache connects.
    let info = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let mut conn = redis::Client::open(info)?
        .get_multiplexed_async_connection()
        .await?;
    let key = format!("userctl:bench:{}", rand::rng().random::<u64>());
    let _: () = conn.set_ex(&key, payload, 120).await?;
    let op = {
        let key = key.clone();
        let conn = conn.clone();
        move || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move { Outcome::from(conn.get::<_, Vec<u8>>(&key).await.is_ok()) }
        }
    };
    let measurement = load::drive(limits, op, progress("redis GET (1)")).await;
    let _: () = conn.del(&key).await?;
    Ok(measurement)
}

/// The median of a few argon2id hashes with the gateway's parameters, here and now.
fn argon2_hash_ms() -> f64 {
    let mut blocks = argon2_memory();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            argon2_hash(&mut blocks);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Hashes per second with one thread hashing on every core at once for about a second: what
/// the machine can hash at most, with the memory bandwidth and caches the cores share.
fn argon2_parallel_per_sec() -> f64 {
    const FOR: Duration = Duration::from_secs(1);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let hashes: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut blocks = argon2_memory();
                    let mut hashes = 0;
                    while started.elapsed() < FOR {
                        argon2_hash(&mut blocks);
                        hashes += 1;
                    }
                    hashes
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(0))
            .sum()
    });
    hashes as f64 / started.elapsed().as_secs_f64()
}

/// The working memory of one argon2id hash with the gateway's parameters. The gateway reuses
/// its buffers, so the baseline does too: memory fresh from the kernel for every hash would
/// make hashing here slower than in the gateway.
fn argon2_memory() -> Vec<argon2::Block> {
    vec![argon2::Block::new(); argon2::Params::DEFAULT.block_count()]
}

/// One argon2id hash with the gateway's parameters (argon2's defaults), in `blocks`.
fn argon2_hash(blocks: &mut [argon2::Block]) {
    let mut out = [0u8; 32];
    let _ = argon2::Argon2::default().hash_password_into_with_memory(
        b"bench password",
        b"bench salt 16 by",
        &mut out,
        blocks,
    );
}

/// What the echo baseline needs to speak mutual TLS the way the stack's inner hops do: a
/// throwaway CA of the same kind as the stack's (`pki::issue`), the echo server serving as
/// the cache holder and the bench calling as `userctl`.
pub struct EchoTls {
    server: ServerTlsConfig,
    client: TlsIdentity,
}

impl EchoTls {
    pub fn issue() -> Result<Self> {
        let files = pki::issue("bench")
            .map_err(|err| CliError::failed(format!("cannot make the TLS echo's CA: {err}")))?;
        let file = |name: &str| {
            files
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, pem)| pem.clone().into_bytes())
                .unwrap_or_default()
        };
        let ca = file(pki::CA_CERT);
        let server = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                file(Holder::Cache.cert_file()),
                file(Holder::Cache.key_file()),
            ))
            .client_ca_root(Certificate::from_pem(&ca));
        let client = TlsIdentity {
            ca,
            cert: file(Holder::Userctl.cert_file()),
            key: file(Holder::Userctl.key_file()),
        };
        Ok(Self { server, client })
    }
}

/// The echo server runs on one thread of its own, like one service core.
pub struct EchoBaseline {
    pub addr: SocketAddr,
    /// The identity the bench calls with, when the echo speaks mutual TLS.
    client_tls: Option<TlsIdentity>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Echoer;

#[tonic::async_trait]
impl Echo for Echoer {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

impl EchoBaseline {
    pub fn start(tls: Option<EchoTls>) -> std::io::Result<Self> {
        let (server_tls, client_tls) = match tls {
            Some(EchoTls { server, client }) => (Some(server), Some(client)),
            None => (None, None),
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(config) = server_tls {
            builder = builder
                .tls_config(config)
                .map_err(|err| std::io::Error::other(err.to_string()))?;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = builder
                        .add_service(EchoServer::new(Echoer))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await;
                });
            })?;
        Ok(Self {
            addr,
            client_tls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub async fn client(&self) -> Result<EchoClient<Channel>, tonic::transport::Error> {
        let addr = format!("http://{}", self.addr);
        let endpoint = match &self.client_tls {
            Some(identity) => identity.endpoint(&addr, Holder::Cache.name())?,
            None => tonic::transport::Endpoint::from_shared(addr)?,
        };
        let channel = endpoint
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(EchoClient::new(channel))
    }

    /// Echoes `payload` 1 in flight, then at `limits`' concurrency; `name` names the phases.
    async fn measure(
        &self,
        payload: &[u8],
        limits: Limits,
        name: &str,
        progress: &dyn Fn(&str) -> Box<dyn Fn() + Send + Sync>,
    ) -> Result<(Measurement, Measurement)> {
        let client = self
            .client()
            .await
            .map_err(|err| CliError::failed(format!("cannot reach the {name} baseline: {err}")))?;
        let payload = payload.to_vec();
        let op = move || {
            let mut client = client.clone();
            let payload = payload.clone();
            async move { Outcome::from(client.echo(EchoMessage { payload }).await.is_ok()) }
        };
        let single = Limits {
            concurrency: 1,
            ..limits
        };
        let echo_single = load::drive(single, op.clone(), progress(&format!("{name} (1)"))).await;
        let echo_loaded = load::drive(limits, op, progress(name)).await;
        Ok((echo_single, echo_loaded))
    }
}

impl Drop for EchoBaseline {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
