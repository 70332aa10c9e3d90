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
//! cancellation token.

pub mod envelope;
pub mod metrics;
pub mod page;
pub mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, Method, header},
    middleware,
    routing::{get, post},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::metrics::Metrics;
use super::service::GatewayService;
use crate::server::{MAX_REQUEST_BYTES, ServeError};

/// The API's description; a test checks it against the router.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
/// How long shutdown waits for in-flight HTTP requests, as for gRPC.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
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
}

/// The routes, with the body limit, CORS for `cors` (when there is one) and observation.
pub fn router(state: HttpState, cors: Option<CorsLayer>) -> Router {
    let metrics = state.metrics.clone();
    let mut router = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::stylesheet))
        .route("/api", get(routes::welcome))
        .route("/api/", get(routes::welcome))
        .route("/api/auth/register", post(routes::register))
        .route("/api/auth/login", post(routes::login))
        .route("/api/auth/user-profile", get(routes::user_profile))
        .route("/api/openapi.json", get(routes::openapi))
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
    router.layer(middleware::from_fn_with_state(metrics, metrics::observe))
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid CORS origin {origin:?}: expected scheme://host[:port], such as http://localhost:3000"
)]
pub struct InvalidOrigin {
    origin: String,
}

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
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
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

/// A bound, not yet serving HTTP server.
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, router: Router) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        Ok(Self {
            listener,
            addr,
            router,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and waits up to
    /// [`DRAIN_TIMEOUT`] for in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::select! {
            result = server => result,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "HTTP drain timed out; closing connections");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
