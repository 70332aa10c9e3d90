use std::{net::IpAddr, sync::Arc, time::Duration};

use prometheus::IntCounter;
use tonic::{Code, Request, Response, Status, transport::Channel};
use userctl_proto::{
    gateway::v1::{
        LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, Profile, RefreshRequest,
        RegisterRequest, WhoAmIRequest, gateway_server::Gateway,
    },
    user::v1::{
        CreateUserRequest, ReadUserRequest, User, read_user_request::Key,
        user_store_client::UserStoreClient,
    },
};

use crate::client;

use super::{
    error::GatewayError,
    password::{PasswordError, Passwords},
    throttle::LoginThrottle,
    token::TokenKeys,
    validate,
};

/// Register, Login and WhoAmI, whatever the transport: the gRPC `Gateway` impl below and the
/// HTTP/JSON handlers in [`super::http`] both call the `pub(crate)` methods, so validation,
/// throttling and token rules exist once.
#[derive(Clone)]
pub struct GatewayService {
    /// The entry cache, which speaks the store's interface.
    users: UserStoreClient<Channel>,
    passwords: Passwords,
    keys: Arc<TokenKeys>,
    throttle: Arc<LoginThrottle>,
    /// Counted here rather than per transport, so `/metrics` sees gRPC and HTTP logins alike.
    counters: LoginCounters,
}

/// What the service counts about logins; `/metrics` exposes them.
#[derive(Clone)]
pub struct LoginCounters {
    /// Wrong password or unknown account.
    pub failed: IntCounter,
    /// Refused before any password work because the account or peer is locked out.
    pub throttled: IntCounter,
    /// Registrations refused because the peer spent its registration budget.
    pub registrations_throttled: IntCounter,
    /// Registrations and logins refused because their peer had its share of hashes queued.
    pub hashing_busy: IntCounter,
}

impl GatewayService {
    pub fn new(
        users: UserStoreClient<Channel>,
        passwords: Passwords,
        keys: Arc<TokenKeys>,
        throttle: LoginThrottle,
        counters: LoginCounters,
    ) -> Self {
        Self {
            users,
            passwords,
            keys,
            throttle: Arc::new(throttle),
            counters,
        }
    }

    pub(crate) async fn register(
        &self,
        request: RegisterRequest,
        peer: Option<IpAddr>,
    ) -> Result<Profile, GatewayError> {
        let registration = validate::registration(request).map_err(GatewayError::Invalid)?;
        // Counted before the hash, so a flood is refused before it costs any; never given
        // back, so a flood of taken emails counts as much as one of new ones.
        if let Some(peer) = peer
            && let Err(retry_after) = self.throttle.reserve_registration(peer).await
        {
            self.counters.registrations_throttled.inc();
            return Err(GatewayError::RegistrationsThrottled(retry_after));
        }
        let password_hash = self
            .passwords
            .hash(registration.password, peer)
            .await
            .map_err(|err| self.password_error(err))?;
        let request = CreateUserRequest {
            email: registration.email,
            full_name: registration.full_name,
            password_hash,
        };
        // Never retried: a registration that reached the cache may have been stored, and a
        // second attempt would answer ALREADY_EXISTS for the caller's own account.
        let mut users = self.users.clone();
        let user = client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            users.create_user(request).await
        })
        .await
        .map_err(GatewayError::upstream)?;
        let profile = profile(user.into_inner());
        tracing::info!(user_id = profile.id, "registered");
        Ok(profile)
    }

    pub(crate) async fn login(
        &self,
        request: LoginRequest,
        peer: Option<IpAddr>,
    ) -> Result<LoginResponse, GatewayError> {
        let email = validate::login(&request).map_err(GatewayError::Invalid)?;
        // Reserved before any password work, so concurrent guesses cannot overtake the count.
        let reservation = match self.throttle.reserve(&email, peer).await {
            Ok(reservation) => reservation,
            Err(retry_after) => {
                self.counters.throttled.inc();
                return Err(GatewayError::Throttled(retry_after));
            }
        };
        let judged = self.judge(&email, request.password, peer).await;
        if !matches!(judged, Ok((_, false))) {
            // Only a wrong password spends the budget, not a success or our own failure.
            self.throttle.release(reservation).await;
        }
        let (user_id, matched) = judged?;
        if !matched {
            self.counters.failed.inc();
            return Err(GatewayError::BadCredentials);
        }
        let user_id = user_id.ok_or(GatewayError::BadCredentials)?;
        let (access_token, expires_at) = self
            .keys
            .issue(user_id)
            .map_err(|err| GatewayError::Internal(err.to_string()))?;
        tracing::info!(user_id, "logged in");
        Ok(LoginResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
            refresh_token: String::new(),
        })
    }

    /// Whether `password` is the account's, and its id if it exists.
    async fn judge(
        &self,
        email: &str,
        password: String,
        peer: Option<IpAddr>,
    ) -> Result<(Option<i64>, bool), GatewayError> {
        let found = match self.read_user(Key::Email(email.to_owned()), None).await {
            Ok(user) => Some(user),
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(GatewayError::upstream(status)),
        };
        // Verify even when the account is unknown, so both failures take as long.
        let user_id = found.as_ref().map(|user| user.id);
        let hash = found.map(|user| user.password_hash);
        let matched = self
            .passwords
            .verify(password, hash, peer)
            .await
            .map_err(|err| self.password_error(err))?;
        Ok((user_id, matched))
    }

    /// Counts a refusal for a busy peer; every password error becomes the caller's error.
    fn password_error(&self, err: PasswordError) -> GatewayError {
        if matches!(err, PasswordError::Busy) {
            self.counters.hashing_busy.inc();
        }
        err.into()
    }

    /// The public keys tokens are signed with now.
    pub(crate) fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.keys.jwks()
    }

    /// The profile behind `authorization` (the raw `authorization` header or metadata value),
    /// read within the caller's `budget` when it gave one.
    pub(crate) async fn who_am_i(
        &self,
        authorization: Option<&[u8]>,
        budget: Option<Duration>,
    ) -> Result<Profile, GatewayError> {
        let token = bearer_token(authorization)?;
        let user_id = self
            .keys
            .verify(token)
            .map_err(|err| GatewayError::BadToken(err.to_string()))?;
        match self.read_user(Key::Id(user_id), budget).await {
            Ok(user) => Ok(profile(user)),
            // A valid signature for an account that is gone (e.g. its data was wiped).
            Err(status) if status.code() == Code::NotFound => Err(GatewayError::BadToken(
                "the account no longer exists".into(),
            )),
            Err(status) => Err(GatewayError::upstream(status)),
        }
    }

    /// A read: retried on another cache replica when an attempt fails in transport, every
    /// attempt within `budget` (the caller's deadline) when it is shorter than the default.
    async fn read_user(&self, key: Key, budget: Option<Duration>) -> Result<User, Status> {
        let response = client::idempotent(budget, |deadline| {
            let mut users = self.users.clone();
            let mut request = Request::new(ReadUserRequest {
                key: Some(key.clone()),
                session_id: String::new(),
            });
            request.set_timeout(deadline);
            async move { users.read_user(request).await }
        })
        .await?;
        Ok(response.into_inner())
    }
}

/// The token from `authorization: Bearer <jwt>` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(authorization: Option<&[u8]>) -> Result<&str, GatewayError> {
    let value = authorization.ok_or(GatewayError::MissingToken)?;
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|value| value.is_ascii())
        .ok_or_else(|| GatewayError::BadToken("non-ASCII authorization".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(GatewayError::BadToken(
            "authorization is not `Bearer <token>`".into(),
        )),
    }
}

/// What a client may see of a user: everything but the password hash.
fn profile(user: User) -> Profile {
    Profile {
        id: user.id,
        email: user.email,
        full_name: user.full_name,
        created_at: user.created_at,
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn refresh(
        &self,
        _request: Request<RefreshRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    async fn logout(
        &self,
        _request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        Err(Status::unimplemented("sessions are not implemented yet"))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<Profile>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        Ok(Response::new(
            self.register(request.into_inner(), peer).await?,
        ))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        Ok(Response::new(self.login(request.into_inner(), peer).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<Profile>, Status> {
        // Two entries could be read differently by a proxy and by us: refuse, as HTTP does.
        let mut entries = request.metadata().get_all("authorization").iter();
        let authorization = entries.next();
        if entries.next().is_some() {
            return Err(GatewayError::BadToken("more than one authorization entry".into()).into());
        }
        let budget = client::caller_budget(request.metadata());
        Ok(Response::new(
            self.who_am_i(authorization.map(|value| value.as_bytes()), budget)
                .await?,
        ))
    }
}
