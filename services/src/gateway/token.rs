//! Access tokens: JWTs signed with the stack's key set ([`userctl_keys`]), with `sub`, `iss`,
//! `aud`, `iat`, `nbf`, `exp`, `jti` and `sid` (the session they belong to), and the signing
//! key's id (`kid`) in the header, so any service can verify them from the published keys
//! (`/.well-known/jwks.json`).
//!
//! Verification looks the `kid` up among the keys published now and pins that key's one
//! algorithm (RFC 8725): a token naming another algorithm — HS256 "signed" with a public key
//! included — or an unknown or retired key is refused. Every claim is required and checked
//! with no leeway: a token is valid while `now < exp`, and its `sub` is a user id written the
//! one way `issue` writes it.
//!
//! The key set is a file that `userctl` replaces to rotate keys; [`TokenKeys::watch`] reads it
//! again every [`RELOAD_INTERVAL`], so every gateway replica takes a new key within about a
//! second (a file it cannot read keeps the keys it has, and says why once).
//!
//! A token verified once is remembered until it expires ([`verified`]), so a client calling
//! with the same token again costs a lookup, not a signature check.

mod verified;

use std::{
    collections::HashMap,
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, Header, Validation, jwk::JwkSet};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use userctl_keys::{Algorithm, KeySet, KeySetError};

pub const ISSUER: &str = "userctl";
pub const AUDIENCE: &str = "userctl";
/// How often the key set file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    pub sid: String,
}

/// What a valid token says: whose it is, and in which session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user_id: i64,
    pub session_id: String,
}

/// Why the key set could not be loaded at start: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing keys file {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the signing keys file {path} is unusable: {source}")]
    Invalid {
        path: String,
        #[source]
        source: KeySetError,
    },
}

/// Why a token was refused; only ever logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token names no key")]
    NoKid,
    #[error("the token names a key that is not published")]
    UnknownKid,
    #[error("the subject is not a user id")]
    BadSubject,
    #[error("the token names no session")]
    NoSession,
    #[error("the token expired")]
    Expired,
}

/// Why no token could be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no signing key signs now")]
    NoSigningKey,
    #[error(transparent)]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The key set as read, with what verification needs of each key made once.
struct Loaded {
    /// The file's bytes, to tell a changed file from the same one read again.
    bytes: Vec<u8>,
    set: KeySet,
    verifiers: HashMap<String, (DecodingKey, Algorithm)>,
}

impl Loaded {
    fn read(path: &Path, now: u64) -> Result<Self, KeyError> {
        let bytes = fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, bytes, now)
    }

    fn parse(path: &Path, bytes: Vec<u8>, now: u64) -> Result<Self, KeyError> {
        let set = KeySet::parse(&bytes, now).map_err(|source| KeyError::Invalid {
            path: path.display().to_string(),
            source,
        })?;
        let verifiers = set
            .keys()
            .iter()
            .map(|key| (key.kid().to_owned(), (key.decoding_key(), key.algorithm())))
            .collect();
        Ok(Self {
            bytes,
            set,
            verifiers,
        })
    }

    /// Whether the key `kid` names is one tokens may be verified with at `now`.
    fn publishes(&self, kid: &str, now: u64) -> bool {
        self.set
            .get(kid)
            .is_some_and(|key| self.set.state(key, now).is_published())
    }
}

/// Signs and verifies tokens with the stack's key set, read from `path` and read again when it
/// changes.
pub struct TokenKeys {
    path: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    validations: [(Algorithm, Validation); 2],
    ttl: Duration,
    verified: verified::Verifications,
}

// Never print key material.
impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("path", &self.path)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Reads the key set at `path`, which must hold a key that signs now.
    pub fn load(path: &Path, ttl: Duration) -> Result<Self, KeyError> {
        let loaded = Loaded::read(path, now_secs())?;
        Ok(Self {
            path: path.to_owned(),
            loaded: RwLock::new(Arc::new(loaded)),
            validations: [Algorithm::EdDSA, Algorithm::RS256].map(|alg| (alg, validation(alg))),
            ttl,
            verified: verified::Verifications::default(),
        })
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again; a changed file that reads as a key set with a key that signs now
    /// replaces the keys. Returns whether it did.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let bytes = fs::read(&self.path).map_err(|source| KeyError::Read {
            path: self.path.display().to_string(),
            source,
        })?;
        if bytes == self.loaded().bytes {
            return Ok(false);
        }
        let loaded = Loaded::parse(&self.path, bytes, now_secs())?;
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Reads the file every [`RELOAD_INTERVAL`] until `shutdown`; a failure is logged once
    /// until the file changes again, and the keys already read stay in use.
    pub fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let keys = self.clone();
                let outcome = tokio::task::spawn_blocking(move || keys.reload()).await;
                match outcome {
                    Ok(Ok(true)) => {
                        last_error = None;
                        let kids: Vec<String> = self
                            .loaded()
                            .set
                            .keys()
                            .iter()
                            .map(|key| key.kid().to_owned())
                            .collect();
                        tracing::info!(?kids, "read a new signing key set");
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(err)) => {
                        let text = err.to_string();
                        if last_error.as_ref() != Some(&text) {
                            tracing::warn!(error = %text, "kept the signing keys already read");
                            last_error = Some(text);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "reading the signing keys failed"),
                }
            }
        });
    }

    /// A token for `user_id` in `session_id`, signed with the key that signs now, and its
    /// expiry in seconds since the epoch.
    pub fn issue(&self, user_id: i64, session_id: &str) -> Result<(String, u64), IssueError> {
        let now = now_secs();
        let loaded = self.loaded();
        let key = loaded.set.signing(now).ok_or(IssueError::NoSigningKey)?;
        let exp = now + self.ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp,
            jti: token_id(),
            sid: session_id.to_owned(),
        };
        let mut header = Header::new(key.algorithm().jwt());
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())?;
        Ok((token, exp))
    }

    /// The user and session a valid token was issued for.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let now = now_secs();
        let loaded = self.loaded();
        if let Some(verified) = self
            .verified
            .get(token, now, |kid| loaded.publishes(kid, now))
        {
            return Ok(verified);
        }
        let kid = jsonwebtoken::decode_header(token)?
            .kid
            .ok_or(TokenError::NoKid)?;
        let Some((decoding, alg)) = loaded
            .verifiers
            .get(&kid)
            .filter(|_| loaded.publishes(&kid, now))
        else {
            return Err(TokenError::UnknownKid);
        };
        let validation = self
            .validations
            .iter()
            .find_map(|(a, validation)| (a == alg).then_some(validation))
            .expect("a validation for every algorithm");
        let claims = jsonwebtoken::decode::<Claims>(token, decoding, validation)?.claims;
        // The library accepts `exp == now`; a token's last valid second is `exp - 1`.
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        let user_id = user_id(&claims.sub).ok_or(TokenError::BadSubject)?;
        // A `sid` no session could have is refused here, never sent to the cache.
        if !crate::session::is_well_formed(&claims.sid) {
            return Err(TokenError::NoSession);
        }
        let verified = Verified {
            user_id,
            session_id: claims.sid,
        };
        self.verified
            .insert(token, &kid, claims.exp, &verified, now);
        Ok(verified)
    }

    /// The public keys published now, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        self.loaded().set.jwks(now_secs())
    }
}

/// What a token signed with a key of `alg` must satisfy: that algorithm alone, and every
/// claim, with no leeway.
fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg.jwt());
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["sub", "iss", "aud", "exp", "nbf"]);
    validation
}

/// A token id (`jti`): 128 random bits, base64url.
fn token_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The id in a `sub` exactly as `issue` writes it: `"01"`, `"+1"` and `" 1"` are not user 1,
/// so no second spelling of a subject ever verifies.
fn user_id(sub: &str) -> Option<i64> {
    let id: i64 = sub.parse().ok()?;
    (id.to_string() == sub).then_some(id)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm as Jwt, EncodingKey};

    use super::*;

    const TTL: Duration = Duration::from_secs(900);
    /// A session id as the store makes them.
    const SID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    /// A key set file in a directory of its own, and the keys read from it.
    struct Fixture {
        dir: tempfile::TempDir,
        set: KeySet,
        keys: TokenKeys,
    }

    impl Fixture {
        fn new(alg: Algorithm) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let set = KeySet::generate(alg, now()).expect("key set");
            fs::write(dir.path().join("keys.json"), set.to_json()).expect("write");
            let keys = TokenKeys::load(&dir.path().join("keys.json"), TTL).expect("load");
            Self { dir, set, keys }
        }

        fn write(&self, set: &KeySet) {
            fs::write(self.dir.path().join("keys.json"), set.to_json()).expect("write");
        }

        fn sign(&self, claims: &serde_json::Value) -> String {
            let key = &self.set.keys()[0];
            let mut header = Header::new(key.algorithm().jwt());
            header.kid = Some(key.kid().to_owned());
            jsonwebtoken::encode(&header, claims, key.encoding_key()).expect("sign")
        }
    }

    fn now() -> u64 {
        now_secs()
    }

    fn claims() -> serde_json::Value {
        let now = now();
        serde_json::json!({"sub": "7", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 60, "jti": "j", "sid": SID})
    }

    #[test]
    fn an_issued_token_names_its_key_and_verifies_to_its_user() {
        for alg in [Algorithm::EdDSA, Algorithm::RS256] {
            let fixture = Fixture::new(alg);
            let (token, exp) = fixture.keys.issue(42, SID).expect("issue");
            let verified = fixture.keys.verify(&token).expect("valid");
            assert_eq!((verified.user_id, verified.session_id.as_str()), (42, SID));
            assert!(exp >= now() + 899);
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(header.alg, alg.jwt());
            assert_eq!(header.kid.as_deref(), Some(fixture.set.keys()[0].kid()));
        }
    }

    #[test]
    fn a_missing_or_unsound_key_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nothing.json");
        let err = TokenKeys::load(&missing, TTL).expect_err("missing");
        assert!(err.to_string().contains("nothing.json"), "{err}");
        let garbage = dir.path().join("garbage.json");
        fs::write(&garbage, "0123456789abcdef0123456789abcdef").expect("write");
        let err = TokenKeys::load(&garbage, TTL).expect_err("not a key set");
        assert!(
            err.to_string().starts_with(&format!(
                "the signing keys file {} is unusable",
                garbage.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn tokens_missing_or_breaking_a_claim_are_refused() {
        let fixture = Fixture::new(Algorithm::EdDSA);
        assert!(fixture.keys.verify(&fixture.sign(&claims())).is_ok());
        let now = now();
        let broken = [
            ("exp", serde_json::json!(now - 1)),
            ("exp", serde_json::json!(now)),
            ("nbf", serde_json::json!(now + 60)),
            ("aud", serde_json::json!("someone-else")),
            ("iss", serde_json::json!("someone-else")),
            ("sub", serde_json::json!("not-a-number")),
        ];
        for (claim, value) in broken {
            let mut claims = claims();
            claims[claim] = value;
            assert!(
                fixture.keys.verify(&fixture.sign(&claims)).is_err(),
                "bad {claim} accepted"
            );
        }
        for claim in ["exp", "nbf", "aud", "iss", "sub", "sid"] {
            let mut claims = claims();
            claims.as_object_mut().expect("object").remove(claim);
            assert!(
                fixture.keys.verify(&fixture.sign(&claims)).is_err(),
                "missing {claim} accepted"
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        for alg in [Algorithm::EdDSA, Algorithm::RS256] {
            let fixture = Fixture::new(alg);
            let key = &fixture.set.keys()[0];
            // What a verifier that trusts the header's `alg` would take as the HMAC secret.
            let public = serde_json::to_vec(key.jwk()).expect("jwk");
            let mut header = Header::new(Jwt::HS256);
            header.kid = Some(key.kid().to_owned());
            let forged =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public))
                    .expect("sign");
            assert!(fixture.keys.verify(&forged).is_err(), "{alg}");
        }
    }

    #[test]
    fn a_token_naming_no_key_or_an_unknown_one_is_refused() {
        let fixture = Fixture::new(Algorithm::EdDSA);
        let other = Fixture::new(Algorithm::EdDSA);
        let foreign = other.sign(&claims());
        assert!(matches!(
            fixture.keys.verify(&foreign),
            Err(TokenError::UnknownKid)
        ));
        let key = &fixture.set.keys()[0];
        let no_kid = jsonwebtoken::encode(&Header::new(Jwt::EdDSA), &claims(), key.encoding_key())
            .expect("sign");
        assert!(matches!(
            fixture.keys.verify(&no_kid),
            Err(TokenError::NoKid)
        ));
    }

    #[test]
    fn a_rotated_file_is_read_again_and_old_tokens_stay_valid() {
        let fixture = Fixture::new(Algorithm::EdDSA);
        let (before, _) = fixture.keys.issue(1, SID).expect("issue");
        assert!(!fixture.keys.reload().expect("same file"), "unchanged");

        let mut set = fixture.set.clone();
        let kid = set.add(Algorithm::RS256, now()).expect("add");
        set.activate(&kid, now(), TTL.as_secs()).expect("activate");
        fixture.write(&set);
        assert!(fixture.keys.reload().expect("new file"), "changed");

        let (after, _) = fixture.keys.issue(1, SID).expect("issue");
        let header = jsonwebtoken::decode_header(&after).expect("header");
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(fixture.keys.verify(&before).expect("old token").user_id, 1);
        assert_eq!(fixture.keys.verify(&after).expect("new token").user_id, 1);
        assert_eq!(fixture.keys.jwks().keys.len(), 2);

        // A broken file keeps the keys already read.
        fs::write(fixture.dir.path().join("keys.json"), "{").expect("write");
        assert!(fixture.keys.reload().is_err());
        assert_eq!(fixture.keys.verify(&after).expect("still valid").user_id, 1);
    }

    #[test]
    fn a_remembered_token_stops_verifying_once_its_key_is_no_longer_published() {
        let fixture = Fixture::new(Algorithm::EdDSA);
        let (token, _) = fixture.keys.issue(5, SID).expect("issue");
        assert_eq!(fixture.keys.verify(&token).expect("valid").user_id, 5);
        assert_eq!(fixture.keys.verify(&token).expect("remembered").user_id, 5);

        // Another key set with none of the old keys: the remembered token is refused.
        fixture.write(&KeySet::generate(Algorithm::EdDSA, now()).expect("key set"));
        assert!(fixture.keys.reload().expect("new file"));
        assert!(matches!(
            fixture.keys.verify(&token),
            Err(TokenError::UnknownKid)
        ));
    }

    #[test]
    fn only_the_canonical_spelling_of_a_user_id_is_a_subject() {
        assert_eq!(user_id("7"), Some(7));
        assert_eq!(user_id("9223372036854775807"), Some(i64::MAX));
        // No account has these ids; the lookup refuses them as it refuses any unknown id.
        assert_eq!(user_id("0"), Some(0));
        assert_eq!(user_id("-1"), Some(-1));
        for sub in [
            "01",
            "+1",
            " 1",
            "1 ",
            "-01",
            "-0",
            "00",
            "1e0",
            "",
            "9223372036854775808",
        ] {
            assert_eq!(user_id(sub), None, "{sub:?} accepted");
        }
    }
}
