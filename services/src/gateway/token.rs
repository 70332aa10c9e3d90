//! Access tokens: HS256 JWTs with `sub`, `iss`, `aud`, `iat`, `nbf` and `exp`. Verification pins
//! the algorithm and requires and checks every one of those claims, with no leeway: a token is
//! valid while `now < exp`, and its `sub` is a user id written the one way `issue` writes it.

use std::{
    fmt, fs, io,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "userctl";
pub const AUDIENCE: &str = "userctl";
/// HS256 with a shorter key is brute-forceable; RFC 7518 asks for at least the hash size.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the JWT key file {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the JWT key has {0} bytes; it needs at least {MIN_KEY_BYTES}")]
    TooShort(usize),
}

/// Why a token was refused; only ever logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the subject is not a user id")]
    BadSubject,
    #[error("the token expired")]
    Expired,
}

/// Signs and verifies tokens with one HS256 key.
pub struct JwtKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

// Never print key material.
impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    pub fn from_file(path: &Path, ttl: Duration) -> Result<Self, KeyError> {
        let bytes = fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(bytes.trim_ascii_end(), ttl)
    }

    pub fn new(secret: &[u8], ttl: Duration) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["sub", "iss", "aud", "exp", "nbf"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        })
    }

    /// A token for `user_id` and its expiry in seconds since the epoch.
    pub fn issue(&self, user_id: i64) -> Result<(String, u64), jsonwebtoken::errors::Error> {
        let now = now_secs();
        let exp = now + self.ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, exp))
    }

    /// The user id a valid token was issued for.
    pub fn verify(&self, token: &str) -> Result<i64, TokenError> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        // The library accepts `exp == now`; a token's last valid second is `exp - 1`.
        if claims.exp <= now_secs() {
            return Err(TokenError::Expired);
        }
        user_id(&claims.sub).ok_or(TokenError::BadSubject)
    }
}

/// The id in a `sub` exactly as `issue` writes it: `"01"`, `"+1"` and `" 1"` are not user 1,
/// so no second spelling of a subject ever verifies.
fn user_id(sub: &str) -> Option<i64> {
    let id: i64 = sub.parse().ok()?;
    (id.to_string() == sub).then_some(id)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> JwtKey {
        JwtKey::new(SECRET, Duration::from_secs(900)).expect("key")
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("sign")
    }

    fn claims() -> serde_json::Value {
        let now = now();
        serde_json::json!({"sub": "7", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 60})
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let key = key();
        let (token, exp) = key.issue(42).expect("issue");
        assert_eq!(key.verify(&token).expect("valid"), 42);
        assert!(exp >= now() + 899);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            JwtKey::new(&SECRET[..31], Duration::from_secs(1)),
            Err(KeyError::TooShort(31))
        ));
    }

    #[test]
    fn tokens_missing_or_breaking_a_claim_are_refused() {
        let key = key();
        assert!(key.verify(&sign(&claims(), SECRET)).is_ok());
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
                key.verify(&sign(&claims, SECRET)).is_err(),
                "bad {claim} accepted"
            );
        }
        for claim in ["exp", "nbf", "aud", "iss", "sub"] {
            let mut claims = claims();
            claims.as_object_mut().expect("object").remove(claim);
            assert!(
                key.verify(&sign(&claims, SECRET)).is_err(),
                "missing {claim} accepted"
            );
        }
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

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        assert!(
            key()
                .verify(&sign(&claims(), b"another key, also thirty-two bytes!"))
                .is_err()
        );
    }
}
