//! The gateway's HTTP/JSON front door, beside its gRPC API: the routes of the design this
//! project follows (`/api/auth/register`, `/api/auth/login`, `/api/auth/user-profile`), so a
//! browser frontend written for it works unchanged, plus the operational routes.
//!
//! - [`envelope`]: the JSON wire format (`{"Result", "Error"}`) and request-body extraction.
//! - [`routes`]: the handlers, each a thin shell over a [`GatewayService`] method.
//! - [`metrics`]: `/metrics` and the per-request span, deadline and counts.
//! - [`page`]: the reference page at `/` (with `/app.js` and `/app.css`) built on the JSON API.
//! - `openapi.json`: the hand-written OpenAPI 3 document served at `/api/openapi.json`.
//!
//! Its own listener (`--http-listen`), started and drained with the gRPC server by the same
//! cancellation token, with its own accept loop for the limits a client must not escape
//! ([`HttpLimits`]).

pub mod envelope;
pub mod metrics;
pub mod page;
pub mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit},
    http::{HeaderName, HeaderValue, Method, header},
    middleware,
    routing::{get, post},
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower::ServiceExt as _;
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::metrics::Metrics;
use super::service::GatewayService;
use crate::{
    requests::Recorder,
    server::{DRAIN_GRACE, MAX_REQUEST_BYTES, ServeError},
};

/// The API's description; a test checks it against the router.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
/// How long shutdown waits for in-flight HTTP requests, as for gRPC.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a browser may cache a CORS preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// What every handler can reach.
#[derive(Clone)]
pub struct HttpState {
    /// The one implementation of Register, Login and WhoAmI, shared with gRPC.
    pub gateway: GatewayService,
    /// The cache channel the service uses, for `/readyz` to health-check.
    pub cache: Channel,
    pub metrics: Arc<Metrics>,
    /// The gateway's calls per route, beside its gRPC ones (`userctl.requests.v1.Requests`).
    pub requests: Arc<Recorder>,
    /// Cancelled when the gateway starts to drain: `/readyz` then answers 503, so a proxy
    /// checking it moves away during the grace period.
    pub draining: CancellationToken,
}

/// The routes, with the body limit, CORS for `cors` (when there is one) and observation.
pub fn router(state: HttpState, cors: Option<CorsLayer>) -> Router {
    let observed = (state.metrics.clone(), state.requests.clone());
    let mut router = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::stylesheet))
        .route("/api", get(routes::welcome))
        .route("/api/", get(routes::welcome))
        .route("/api/auth/register", post(routes::register))
        .route("/api/auth/login", post(routes::login))
        .route("/api/auth/refresh", post(routes::refresh))
        .route("/api/auth/logout", post(routes::logout))
        .route("/api/auth/user-profile", get(routes::user_profile))
        .route("/api/openapi.json", get(routes::openapi))
        .route(routes::JWKS_PATH, get(routes::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(routes::openid_configuration),
        )
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.layer(middleware::from_fn_with_state(observed, metrics::observe))
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid CORS origin {origin:?}: expected scheme://host[:port], such as http://localhost:3000"
)]
pub struct InvalidOrigin {
    origin: String,
}

const TRACEPARENT: HeaderName = HeaderName::from_static(crate::trace::HEADER);

/// CORS for exactly `origins` (none: no CORS layer, so browsers refuse cross-origin calls).
/// Tokens travel in a header, never a cookie, so credentials are not allowed.
pub fn cors(origins: &[String]) -> Result<Option<CorsLayer>, InvalidOrigin> {
    let origins = origins
        .iter()
        .map(|origin| origin.trim().trim_end_matches('/'))
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            parse_origin(origin).ok_or_else(|| InvalidOrigin {
                origin: origin.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            // A frontend may start the trace, and may read the one it belongs to.
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, TRACEPARENT])
            .expose_headers([TRACEPARENT])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

/// An origin as browsers send it: `http` or `https`, a host, an optional port, no path. `*` is
/// refused: list the frontends.
fn parse_origin(origin: &str) -> Option<HeaderValue> {
    let (scheme, rest) = origin.split_once("://")?;
    let plausible = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', '*', ' ']);
    if !plausible {
        return None;
    }
    HeaderValue::from_str(origin).ok()
}

/// What one client may hold of the HTTP door.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Longest the gateway waits for a request's headers, counted from when it starts waiting
    /// (so also between requests on a kept-alive connection): a client sending a byte every
    /// few seconds, or nothing at all, loses its connection.
    pub header_timeout: Duration,
    /// Connections served at once; the next waits in the listen backlog until one closes.
    pub max_connections: usize,
}

/// A bound, not yet serving HTTP server.
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    limits: HttpLimits,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        router: Router,
        limits: HttpLimits,
    ) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        Ok(Self {
            listener,
            addr,
            router,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled and [`DRAIN_GRACE`] has passed (`/readyz` says 503
    /// meanwhile), then stops accepting and waits up to [`DRAIN_TIMEOUT`] for in-flight
    /// requests: the gRPC door's order.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self {
            listener,
            router,
            limits,
            ..
        } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let connections = GracefulShutdown::new();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let stopping = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        tokio::pin!(stopping);
        loop {
            // The permit is taken before accepting, so a full house leaves new connections in
            // the kernel's backlog rather than accepting and dropping them.
            let accepted = tokio::select! {
                () = &mut stopping => break,
                accepted = async {
                    let permit = permits.clone().acquire_owned().await;
                    (permit, listener.accept().await)
                } => accepted,
            };
            let (permit, (stream, peer)) = match accepted {
                (Ok(permit), Ok(accepted)) => (permit, accepted),
                (_, Err(err)) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine, so keep serving after a breath.
                    tracing::warn!(%err, "cannot accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                (Err(_closed), _) => break,
            };
            // As on the gRPC door: small answers must not wait for the peer's delayed ACK.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
            let router = router.clone();
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request)
            });
            let connection =
                connections.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%err, %peer, "HTTP connection ended");
                }
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "HTTP drain timed out; closing connections");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
