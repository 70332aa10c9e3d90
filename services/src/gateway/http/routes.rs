//! The handlers: each turns JSON into the gateway's request, calls the same
//! [`GatewayService`] method the gRPC API calls, and turns the answer back into JSON. Failures
//! are [`GatewayError`]s, mapped to HTTP beside their gRPC mapping in `gateway::error`.

use std::{
    net::SocketAddr,
    time::{Duration, UNIX_EPOCH},
};

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use userctl_proto::gateway::v1::{LoginRequest, LoginResponse, Profile, RegisterRequest};

use super::{
    HttpState,
    envelope::{self, JsonObject, Rejection},
};
use crate::gateway::{error::GatewayError, token, validate};

/// Where the public keys are served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long `/readyz` waits for the cache's health check: a probe must answer fast.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Health checks `/readyz` makes before it calls the cache unavailable, and the pause between.
const READY_ATTEMPTS: u32 = 3;
const READY_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The original's user shape; `UserName` is the email, as it was there.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct User {
    #[serde(rename = "ID")]
    id: i64,
    full_name: String,
    user_name: String,
    email: String,
}

impl From<Profile> for User {
    fn from(profile: Profile) -> Self {
        Self {
            id: profile.id,
            full_name: profile.full_name,
            user_name: profile.email.clone(),
            email: profile.email,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Token {
    token: String,
    /// RFC 3339, UTC.
    expired: String,
    /// Exchanged at `/api/auth/refresh` for the next pair; valid once.
    refresh_token: String,
}

impl From<LoginResponse> for Token {
    fn from(login: LoginResponse) -> Self {
        let expires_at =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(login.expires_at).unwrap_or(0));
        Self {
            token: login.access_token,
            expired: humantime::format_rfc3339_seconds(expires_at).to_string(),
            refresh_token: login.refresh_token,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    status: &'static str,
}

pub async fn welcome() -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Welcome {
        message: &'static str,
        version: &'static str,
        docs: &'static str,
    }
    envelope::success(Welcome {
        message: "Welcome to the userctl API",
        version: env!("CARGO_PKG_VERSION"),
        docs: "/api/openapi.json",
    })
}

pub async fn register(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: JsonObject,
) -> Result<Response, GatewayError> {
    let mut violations = validate::Violations::new();
    let request = RegisterRequest {
        email: body.string("Email", "email", &mut violations),
        full_name: body.string("FullName", "full_name", &mut violations),
        password: body.string("Password", "password", &mut violations),
    };
    let confirmation = body.string("ConfirmPassword", "confirm_password", &mut violations);
    if confirmation != request.password {
        violations.push(("confirm_password", "must match Password"));
    }
    if !violations.is_empty() {
        let more = validate::registration(request).err();
        return Err(GatewayError::Invalid(every_violation(violations, more)));
    }
    let profile = state.gateway.register(request, Some(peer.ip())).await?;
    Ok(envelope::success(User::from(profile)))
}

pub async fn login(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: JsonObject,
) -> Result<Response, GatewayError> {
    let mut violations = validate::Violations::new();
    let request = LoginRequest {
        email: body.string("Email", "email", &mut violations),
        password: body.string("Password", "password", &mut violations),
    };
    if !violations.is_empty() {
        let more = validate::login(&request).err();
        return Err(GatewayError::Invalid(every_violation(violations, more)));
    }
    let login = state.gateway.login(request, Some(peer.ip())).await?;
    Ok(envelope::success(Token::from(login)))
}

/// `{RefreshToken}` → a new access token and refresh token, as login answers. A refresh token
/// of the wrong type or shape is refused like a wrong one: 401, one message for every case.
pub async fn refresh(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: JsonObject,
) -> Result<Response, GatewayError> {
    let mut ignored = validate::Violations::new();
    let token = body.string("RefreshToken", "refresh_token", &mut ignored);
    let refreshed = state.gateway.refresh(&token, Some(peer.ip())).await?;
    Ok(envelope::success(Token::from(refreshed)))
}

/// Ends the session of the bearer token; its tokens are refused from then on.
pub async fn logout(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let authorization = the_authorization(&headers)?;
    state.gateway.logout(authorization, Some(peer.ip())).await?;
    Ok(envelope::success(Status {
        status: "logged out",
    }))
}

pub async fn user_profile(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let authorization = the_authorization(&headers)?;
    let profile = state.gateway.who_am_i(authorization, None).await?;
    Ok(envelope::success(User::from(profile)))
}

/// The one `Authorization` header, if any. Only that header is read: never a query string or
/// cookie, which leak into logs and invite CSRF. Two of them are refused rather than one
/// picked: a proxy and the gateway could each pick a different one.
fn the_authorization(headers: &HeaderMap) -> Result<Option<&[u8]>, GatewayError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let authorization = values.next().map(|value| value.as_bytes());
    if values.next().is_some() {
        return Err(GatewayError::BadToken(
            "more than one authorization header".into(),
        ));
    }
    Ok(authorization)
}

/// What this layer found plus what the gateway's own rules say about the other fields, so a
/// client can show every problem at once.
fn every_violation(
    mut found: validate::Violations,
    more: Option<validate::Violations>,
) -> validate::Violations {
    for (field, reason) in more.unwrap_or_default() {
        if !found.iter().any(|(seen, _)| *seen == field) {
            found.push((field, reason));
        }
    }
    found
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::OPENAPI_JSON,
    )
        .into_response()
}

/// The public keys tokens are signed with (RFC 7517), every key not retired: what a service
/// needs to verify a token on its own. Cacheable for a minute; a new key is published seconds
/// before it signs, so a verifier that meets a `kid` it does not know fetches this again.
pub async fn jwks(State(state): State<HttpState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        Json(state.gateway.jwks()),
    )
        .into_response()
}

/// Discovery (OpenID Connect Discovery's document, with only what this gateway implements):
/// the issuer its tokens name, where its keys are, the algorithms they sign with and the
/// claims tokens carry. `jwks_uri` is built from the request's `Host`, so it names the address
/// the caller reached (behind a proxy, the proxy's).
pub async fn openid_configuration(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok())
        .filter(|host| !host.as_str().contains('@'));
    let jwks_uri = match host {
        Some(host) => format!("http://{host}{JWKS_PATH}"),
        None => JWKS_PATH.to_owned(),
    };
    let mut algorithms: Vec<String> = state
        .gateway
        .jwks()
        .keys
        .iter()
        .filter_map(|jwk| jwk.common.key_algorithm)
        .map(|alg| alg.to_string())
        .collect();
    algorithms.sort();
    algorithms.dedup();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(json!({
            "issuer": token::ISSUER,
            "jwks_uri": jwks_uri,
            "subject_types_supported": ["public"],
            "claims_supported": ["sub", "iss", "aud", "iat", "nbf", "exp", "jti", "sid"],
            "access_token_signing_alg_values_supported": algorithms,
        })),
    )
        .into_response()
}

/// The process answers: nothing else is checked, so an orchestrator restarts only a hung one.
pub async fn healthz() -> Response {
    envelope::success(Status { status: "alive" })
}

/// The gateway can do its work: it is not draining, and the cache (its one dependency) answers
/// its health check.
pub async fn readyz(State(state): State<HttpState>) -> Response {
    if state.draining.is_cancelled() {
        return envelope::failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "this gateway is shutting down; retry shortly",
        );
    }
    let client = HealthClient::new(state.cache.clone());
    match tokio::time::timeout(READY_TIMEOUT, cache_serving(client)).await {
        Ok(true) => envelope::success(Status { status: "ready" }),
        outcome => {
            tracing::debug!(?outcome, "not ready: the cache does not answer SERVING");
            envelope::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the user service is unavailable; retry shortly",
            )
        }
    }
}

/// Whether a cache replica answers SERVING, asking up to [`READY_ATTEMPTS`] times: a replica
/// that has just begun to drain answers NOT_SERVING until the balance drops it (milliseconds
/// later), and while another replica serves, that is no reason for a proxy to take this
/// gateway out of rotation.
async fn cache_serving(mut client: HealthClient<tonic::transport::Channel>) -> bool {
    for attempt in 1..=READY_ATTEMPTS {
        let answer = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if answer.is_ok_and(|response| response.get_ref().status() == ServingStatus::Serving) {
            return true;
        }
        if attempt < READY_ATTEMPTS {
            tokio::time::sleep(READY_RETRY_PAUSE).await;
        }
    }
    false
}

pub async fn metrics(State(state): State<HttpState>) -> Response {
    state.metrics.render()
}

pub async fn not_found() -> Rejection {
    Rejection::NotFound
}

pub async fn method_not_allowed() -> Rejection {
    Rejection::MethodNotAllowed
}
