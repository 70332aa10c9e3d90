use std::{net::IpAddr, sync::Arc, time::Duration};

use prometheus::IntCounter;
use tonic::{Code, Request, Response, Status};
use userctl_proto::{
    gateway::v1::{
        LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, Profile, RefreshRequest,
        RegisterRequest, WhoAmIRequest, gateway_server::Gateway,
    },
    user::v1::{
        CreateSessionRequest, CreateUserRequest, ReadUserRequest, RefreshSessionRequest,
        RevokeSessionRequest, User, read_user_request::Key, user_store_client::UserStoreClient,
    },
};

use crate::client;

use super::{
    error::GatewayError,
    password::{PasswordError, Passwords},
    throttle::{LoginThrottle, Reservation},
    token::TokenKeys,
    validate,
};

/// Register, Login and WhoAmI, whatever the transport: the gRPC `Gateway` impl below and the
/// HTTP/JSON handlers in [`super::http`] both call the `pub(crate)` methods, so validation,
/// throttling and token rules exist once.
#[derive(Clone)]
pub struct GatewayService {
    /// The entry cache, which speaks the store's interface.
    users: UserStoreClient<client::Traced>,
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
        users: UserStoreClient<client::Traced>,
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
        let refresh = RefreshToken::new();
        let request = CreateSessionRequest {
            user_id,
            refresh_hash: refresh.hash(),
            lifetime_secs: SESSION_LIFETIME_SECS,
        };
        // Never retried: a session that reached the store would be opened twice.
        let mut users = self.users.clone();
        let session = client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            users.create_session(request).await
        })
        .await
        .map_err(GatewayError::upstream)?
        .into_inner();
        tracing::info!(user_id, "logged in");
        self.tokens(user_id, &session.id, refresh)
    }

    /// A new refresh token for the session of `refresh_token`, which is spent, and an access
    /// token. Every refusal is one generic UNAUTHENTICATED; failures spend the peer's login
    /// budget.
    pub(crate) async fn refresh(
        &self,
        refresh_token: &str,
        peer: Option<IpAddr>,
    ) -> Result<LoginResponse, GatewayError> {
        let reservation = self.reserve_peer(peer).await?;
        let Some(presented) = RefreshToken::parse(refresh_token) else {
            self.counters.failed.inc();
            return Err(GatewayError::BadRefreshToken);
        };
        let next = RefreshToken::new();
        let request = RefreshSessionRequest {
            refresh_hash: presented.hash(),
            next_refresh_hash: next.hash(),
            lifetime_secs: SESSION_LIFETIME_SECS,
        };
        // Never retried: the first attempt may have spent the token, and a second would then
        // look like reuse and end the session.
        let mut users = self.users.clone();
        let refreshed = client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            users.refresh_session(request).await
        })
        .await;
        let session = match refreshed {
            Ok(session) => session.into_inner(),
            Err(status) if status.code() == Code::Unauthenticated => {
                self.counters.failed.inc();
                return Err(GatewayError::BadRefreshToken);
            }
            Err(status) => {
                self.throttle.release(reservation).await;
                return Err(GatewayError::upstream(status));
            }
        };
        self.throttle.release(reservation).await;
        self.tokens(session.user_id, &session.id, next)
    }

    /// Ends the session of the access token in `authorization`: its access tokens are refused
    /// from the next read on, by every gateway, and its refresh token too.
    pub(crate) async fn logout(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<(), GatewayError> {
        let reservation = self.reserve_peer(peer).await?;
        let verified = match bearer_token(authorization).and_then(|token| {
            self.keys
                .verify(token)
                .map_err(|err| GatewayError::BadToken(err.to_string()))
        }) {
            Ok(verified) => verified,
            Err(err) => {
                self.counters.failed.inc();
                return Err(err);
            }
        };
        self.throttle.release(reservation).await;
        let request = RevokeSessionRequest {
            session_id: verified.session_id,
        };
        // Idempotent in the store, so a retry cannot do harm; sent once like every write.
        let mut users = self.users.clone();
        let revoked = client::once(|deadline| async move {
            let mut request = Request::new(request);
            request.set_timeout(deadline);
            users.revoke_session(request).await
        })
        .await;
        match revoked {
            Ok(_) => {
                tracing::info!(user_id = verified.user_id, "logged out");
                Ok(())
            }
            // A session the store no longer has: nothing left to end.
            Err(status) if status.code() == Code::NotFound => Err(GatewayError::BadToken(
                "the session no longer exists".into(),
            )),
            Err(status) => Err(GatewayError::upstream(status)),
        }
    }

    /// One attempt against the peer's failed-login budget (a refresh or a logout), or the
    /// throttled answer, counted.
    async fn reserve_peer(&self, peer: Option<IpAddr>) -> Result<Reservation, GatewayError> {
        self.throttle
            .reserve_peer(peer)
            .await
            .map_err(|retry_after| {
                self.counters.throttled.inc();
                GatewayError::Throttled(retry_after)
            })
    }

    /// The answer to a login or a refresh: an access token in `session_id` and `refresh`.
    fn tokens(
        &self,
        user_id: i64,
        session_id: &str,
        refresh: RefreshToken,
    ) -> Result<LoginResponse, GatewayError> {
        let (access_token, expires_at) = self
            .keys
            .issue(user_id, session_id)
            .map_err(|err| GatewayError::Internal(err.to_string()))?;
        Ok(LoginResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
            refresh_token: refresh.0,
        })
    }

    /// Whether `password` is the account's, and its id if it exists.
    async fn judge(
        &self,
        email: &str,
        password: String,
        peer: Option<IpAddr>,
    ) -> Result<(Option<i64>, bool), GatewayError> {
        let found = match self.read_user(Key::Email(email.to_owned()), "", None).await {
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
        let verified = self
            .keys
            .verify(token)
            .map_err(|err| GatewayError::BadToken(err.to_string()))?;
        // The session rides along: the cache checks it in the same Redis round trip.
        let read = self
            .read_user(Key::Id(verified.user_id), &verified.session_id, budget)
            .await;
        match read {
            Ok(user) => Ok(profile(user)),
            // A valid signature for an account that is gone (e.g. its data was wiped).
            Err(status) if status.code() == Code::NotFound => Err(GatewayError::BadToken(
                "the account no longer exists".into(),
            )),
            // Logged out, reused refresh token, or expired.
            Err(status) if status.code() == Code::FailedPrecondition => {
                Err(GatewayError::BadToken("the session has ended".into()))
            }
            Err(status) => Err(GatewayError::upstream(status)),
        }
    }

    /// A read: retried on another cache replica when an attempt fails in transport, every
    /// attempt within `budget` (the caller's deadline) when it is shorter than the default.
    /// `session_id` (may be empty) must be an active session of the user read.
    async fn read_user(
        &self,
        key: Key,
        session_id: &str,
        budget: Option<Duration>,
    ) -> Result<User, Status> {
        let response = client::idempotent(budget, |deadline| {
            let mut users = self.users.clone();
            let mut request = Request::new(ReadUserRequest {
                key: Some(key.clone()),
                session_id: session_id.to_owned(),
            });
            request.set_timeout(deadline);
            async move { users.read_user(request).await }
        })
        .await?;
        Ok(response.into_inner())
    }
}

/// The one `authorization` metadata entry, if any. Two could be read differently by a proxy and
/// by us: refused, as HTTP does.
fn the_authorization(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<&[u8]>, GatewayError> {
    let mut entries = metadata.get_all("authorization").iter();
    let authorization = entries.next().map(|value| value.as_bytes());
    if entries.next().is_some() {
        return Err(GatewayError::BadToken(
            "more than one authorization entry".into(),
        ));
    }
    Ok(authorization)
}

/// How long a session lives without a refresh: each refresh token is good for this long, once.
pub const SESSION_LIFETIME_SECS: i64 = 30 * 24 * 60 * 60;

/// A refresh token: 256 random bits, base64url, handed to the client once; only its SHA-256 is
/// stored (a token this random needs no slow hash).
struct RefreshToken(String);

impl RefreshToken {
    /// The length of every token this gateway makes.
    const LEN: usize = 43;

    fn new() -> Self {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        use rand::Rng as _;
        let bytes: [u8; 32] = rand::rng().random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A presented token, if it has the shape of one this gateway made (anything else is
    /// refused before any store call).
    fn parse(token: &str) -> Option<Self> {
        (token.len() == Self::LEN
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(token.to_owned()))
    }

    fn hash(&self) -> Vec<u8> {
        use sha2::Digest as _;
        sha2::Sha256::digest(self.0.as_bytes()).to_vec()
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
    #[tracing::instrument(level = "debug", skip_all)]
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let token = request.into_inner().refresh_token;
        Ok(Response::new(self.refresh(&token, peer).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let authorization = the_authorization(request.metadata())?;
        self.logout(authorization, peer).await?;
        Ok(Response::new(LogoutResponse {}))
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
        let authorization = the_authorization(request.metadata())?;
        let budget = client::caller_budget(request.metadata());
        Ok(Response::new(self.who_am_i(authorization, budget).await?))
    }
}
