//! What every service's gRPC server has in common: health, reflection (v1 and v1alpha), request
//! limits, mutual TLS when it is configured, one deadline for a new connection's TLS handshake
//! and HTTP/2 preface together, a cap on connections held at once, a maximum connection age, and a shutdown that drains in order
//! (docs/design.md, "Replicas"): report NOT_SERVING, wait [`DRAIN_GRACE`] for balanced clients
//! to move away, then stop accepting and finish what is in flight.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tonic::{
    codegen::{Service, http},
    server::NamedService,
    service::Routes,
    transport::server::Connected,
};
use tonic_health::server::HealthReporter;
use userctl_proto::requests::v1::requests_server::RequestsServer;

use crate::requests::{Recorder, RequestsService};

/// Longest a single request may run on the server before it is cancelled with DEADLINE_EXCEEDED.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests and open streams (Health/Watch, WatchStats)
/// before it gives up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server keeps serving after it reports NOT_SERVING, before it stops
/// accepting: balanced clients watching its health leave it within milliseconds, so this covers
/// those that poll instead (a proxy's health check, a re-resolving client) and calls already on
/// their way. The HTTP door waits as long.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Age at which a connection is asked to go away (GOAWAY), so a long-lived client spreads over
/// the replicas that exist now rather than those it met first (after a rolling restart).
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long an aged connection's in-flight calls may still run: as long as any request may.
const MAX_CONNECTION_AGE_GRACE: Duration = REQUEST_TIMEOUT;
/// How long a new connection has to finish its TLS handshake (with TLS) and send the HTTP/2
/// preface, unless [`Server::handshake_timeout`] says otherwise.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections a server holds at once, unless [`Server::max_connections`] says otherwise;
/// further ones wait in the listen backlog until one closes, so no client can exhaust the
/// process's file descriptors.
pub const MAX_CONNECTIONS: usize = 1024;
/// The client's HTTP/2 connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
/// Largest request any service accepts; the biggest legitimate one is a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// TLS handshakes under way at once; further connections wait in the listen backlog. Each is
/// bounded by the handshake deadline, so a crowd of silent clients delays others, never for ever.
const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the bound address")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, not yet serving gRPC server with health and reflection.
pub struct Server {
    listener: TcpListener,
    routes: Routes,
    health: HealthReporter,
    serving: Vec<&'static str>,
    handshake_timeout: Duration,
    max_connections: usize,
    /// `None`: plaintext.
    tls: Option<TlsAcceptor>,
    /// Calls, errors and times per RPC, served as `userctl.requests.v1.Requests`.
    requests: Arc<Recorder>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and registers health; reflection is added when
    /// the server runs, listing exactly the services added by then.
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let routes = Routes::new(health_service);
        let requests = Arc::new(Recorder::default());
        let server = Self {
            listener,
            routes,
            health,
            serving: Vec::new(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            tls: None,
            requests: requests.clone(),
        };
        Ok(server.add_service(RequestsServer::new(RequestsService(requests))))
    }

    /// What every call answered here is recorded in; the gateway's HTTP door records there too.
    pub fn requests(&self) -> Arc<Recorder> {
        self.requests.clone()
    }

    /// Serves over TLS that requires a client certificate (see [`crate::tls`]); `None` keeps
    /// plaintext.
    pub fn tls(mut self, tls: Option<TlsAcceptor>) -> Self {
        self.tls = tls;
        self
    }

    /// Whether callers must present a certificate from the stack's CA.
    pub fn is_mutual_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// How long a new connection has to finish its TLS handshake and send the HTTP/2 preface
    /// before it is closed: without it, a client that connects and says nothing holds its
    /// connection forever.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How many connections are served at once; further ones wait in the listen backlog.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Adds a service; it reports SERVING (by name and as the server's overall health) once
    /// the server runs.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.serving.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::LocalAddr)
    }

    /// Serves until `shutdown` is cancelled, then reports NOT_SERVING, keeps serving for
    /// [`DRAIN_GRACE`], stops accepting, and waits up to [`DRAIN_TIMEOUT`] for in-flight
    /// requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Self {
            listener,
            routes,
            health,
            serving,
            handshake_timeout,
            max_connections,
            tls,
            requests,
        } = self;
        let routes = with_reflection(routes, &serving)?;
        for name in &serving {
            health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let draining = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.cancelled().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                for name in serving {
                    health
                        .set_service_status(name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                tracing::info!(grace = ?DRAIN_GRACE, "reported NOT_SERVING; serving on while clients move away");
                tokio::time::sleep(DRAIN_GRACE).await;
            }
        };
        let router = tonic::transport::Server::builder()
            .layer(crate::trace::Layer::new(requests))
            .timeout(REQUEST_TIMEOUT)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_connection_age(MAX_CONNECTION_AGE)
            .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
            .add_routes(routes);
        let accepted = accepted(listener, handshake_timeout, max_connections);
        // The TLS accept is done here rather than by tonic's `tls_config`, whose handshake
        // happens above the incoming stream: the preface deadline would then count TLS bytes,
        // and a client that finished its handshake and went silent would never be dropped.
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match tls {
                None => Box::pin(router.serve_with_incoming_shutdown(
                    accepted.map(|accepted| accepted.map(PrefaceDeadline::plain)),
                    draining,
                )),
                Some(acceptor) => Box::pin(
                    router.serve_with_incoming_shutdown(tls_incoming(accepted, acceptor), draining),
                ),
            };

        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_GRACE + DRAIN_TIMEOUT).await } => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out; closing open streams");
            }
        }
        Ok(())
    }
}

/// A connection just accepted.
struct Accepted {
    /// With TCP_NODELAY: without it a small response can wait for the peer's delayed ACK,
    /// ~40 ms (it showed as a 40 ms p99 in the bench).
    stream: TcpStream,
    /// When it must have finished its handshakes.
    deadline: Instant,
    /// Its place among the server's connections, held until it closes.
    place: OwnedSemaphorePermit,
}

/// Every accepted connection, no more than `max_connections` at once: the next is accepted
/// only when a place is free, so the rest wait in the listen backlog.
fn accepted(
    listener: TcpListener,
    handshake_timeout: Duration,
    max_connections: usize,
) -> impl Stream<Item = io::Result<Accepted>> {
    let places = Arc::new(Semaphore::new(max_connections));
    futures::stream::unfold(listener, move |listener| {
        let places = places.clone();
        async move {
            let place = places.acquire_owned().await.ok()?;
            let accepted = listener.accept().await.and_then(|(stream, _)| {
                stream.set_nodelay(true)?;
                Ok(Accepted {
                    stream,
                    deadline: Instant::now() + handshake_timeout,
                    place,
                })
            });
            Some((accepted, listener))
        }
    })
}

/// The accepted connections that complete a TLS handshake, with a client certificate the CA
/// signed, before their deadline; the rest are closed and logged at debug level. Handshakes run
/// side by side, so one slow client does not hold up the others.
fn tls_incoming(
    accepted: impl Stream<Item = io::Result<Accepted>>,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = io::Result<PrefaceDeadline<TlsStream<TcpStream>>>> {
    accepted
        .map(move |accepted| {
            let acceptor = acceptor.clone();
            async move {
                let Accepted {
                    stream,
                    deadline,
                    place,
                } = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => return Some(Err(err)),
                };
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => Some(Ok(PrefaceDeadline::new(stream, deadline, place))),
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "refused a connection at the TLS handshake");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(
                            "closing a connection that did not finish its TLS handshake in time"
                        );
                        None
                    }
                }
            }
        })
        .buffer_unordered(MAX_HANDSHAKES)
        .filter_map(std::future::ready)
}

/// A connection that fails its reads once `deadline` passes before the first
/// [`PREFACE_LEN`] bytes have arrived, so the HTTP/2 server closes it; after that it is the
/// plain stream. hyper's HTTP/2 server has no such timeout of its own, and its keepalive pings
/// start only after the handshake. Over TLS it wraps the decrypted stream, and the deadline is
/// the one the TLS handshake already ran against: one budget for both.
struct PrefaceDeadline<S> {
    stream: S,
    /// `None` once the preface has arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Preface bytes still to come.
    awaited: usize,
    /// The connection's place among the server's (see [`accepted`]), given back when it closes.
    _place: OwnedSemaphorePermit,
}

impl<S> PrefaceDeadline<S> {
    fn new(stream: S, deadline: Instant, place: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            awaited: PREFACE_LEN,
            _place: place,
        }
    }
}

impl PrefaceDeadline<TcpStream> {
    fn plain(accepted: Accepted) -> Self {
        Self::new(accepted.stream, accepted.deadline, accepted.place)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                self.awaited = self.awaited.saturating_sub(read);
                if self.awaited == 0 {
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = self
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    tracing::debug!("closing a connection that sent no HTTP/2 preface in time");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface in time",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What the stream underneath says: the peer's address (the login throttle counts by it) and,
/// over TLS, its certificate (see [`crate::tls::Callers`]).
impl<S: Connected> Connected for PrefaceDeadline<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Adds reflection v1 and v1alpha (many clients still speak only v1alpha), advertising only
/// what this server serves: the descriptor set holds every userctl service.
fn with_reflection(routes: Routes, serving: &[&'static str]) -> Result<Routes, ServeError> {
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(userctl_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        serving
            .iter()
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    let v1 = builder()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()?;
    let v1alpha = builder()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// INVALID_ARGUMENT with one `BadRequest` field violation per entry (for clients that read
/// rich error details) and the same facts in the message (for those that do not).
pub fn invalid_argument(violations: &[(&str, &str)]) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};

    let message = violations
        .iter()
        .map(|(field, reason)| format!("{field}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for (field, reason) in violations {
        details.add_bad_request_violation(*field, *reason);
    }
    tonic::Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}
