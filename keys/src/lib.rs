//! The token signing keys of one stack: the file `userctl` writes (`signing-keys.json`, mode
//! 0600) and every gateway replica reads, and the rules both apply to it (docs/design.md,
//! "Signing keys").
//!
//! The file lists every key still of use, each with its id (`kid`: the RFC 7638 thumbprint of
//! its public key), its algorithm (one per key, RFC 8725), its private key (PKCS#8 PEM), the
//! second it starts to sign (`signs_from`) and the second it retires (`retires_at`). At any
//! second a key is in one [`KeyState`]:
//!
//! - **signing**: of the keys whose `signs_from` has come, the one whose came last; every
//!   gateway signs with it;
//! - **next** (a `signs_from` still ahead) or **pending** (none yet): published and accepted,
//!   not yet signing, so every gateway knows a key before any gateway signs with it;
//! - **previous**: signed before, published and accepted until `retires_at`, which is when the
//!   last token it can have signed has expired — a rotation logs nobody out;
//! - **retired**: neither published nor accepted; the next rotation removes it from the file.
//!
//! A rotation is [`KeySet::add`] (a pending key) then [`KeySet::activate`] (it signs from a
//! given second, and every older key retires one token lifetime after that). Where the file
//! reaches every gateway at once, both go in one write with `signs_from` a few seconds ahead;
//! where the gateways are replaced to see a new file (a swarm's secrets), each step is a write
//! of its own, rolled out before the next.

use std::{fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    DecodingKey, EncodingKey,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
        ThumbprintHash,
    },
};
use rand::Rng as _;
use rsa::{
    pkcs1::EncodeRsaPrivateKey as _,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding},
    traits::PublicKeyParts as _,
};
use serde::{Deserialize, Serialize};

/// The key set's file name, in `userctl`'s project directory and wherever a gateway reads it.
pub const FILE_NAME: &str = "signing-keys.json";

/// Bits of a generated RSA key: RFC 7518 asks for at least 2048.
const RSA_BITS: usize = 2048;

/// Seconds added to a key's retirement beyond the lifetime of the tokens it signed, for clocks
/// of different machines that disagree a little.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// A signing algorithm the stack offers: EdDSA (Ed25519) by default, RS256 for verifiers
/// without EdDSA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[default]
    EdDSA,
    RS256,
}

impl Algorithm {
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    /// The name in a JWT header and a JWK (`EdDSA`, `RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "eddsa" | "ed25519" => Ok(Self::EdDSA),
            "rs256" => Ok(Self::RS256),
            _ => Err(format!(
                "unknown signing algorithm {value:?}: expected eddsa or rs256"
            )),
        }
    }
}

/// Where a key stands at one second; see the module's documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Pending,
    Next,
    Signing,
    Previous,
    Retired,
}

impl KeyState {
    /// Whether tokens signed with the key are accepted and its public key published.
    pub fn is_published(self) -> bool {
        self != Self::Retired
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Next => "next",
            Self::Signing => "signing",
            Self::Previous => "previous",
            Self::Retired => "retired",
        }
    }
}

/// Why a key set could not be read or made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("it is not a key set: {0}")]
    Format(String),
    #[error("it has no key")]
    Empty,
    #[error("key {kid} is listed twice")]
    DuplicateKid { kid: String },
    #[error("key {kid} is not a valid {alg} private key")]
    BadKey { kid: String, alg: Algorithm },
    #[error("key {kid} does not match its id (its thumbprint is {thumbprint})")]
    KidMismatch { kid: String, thumbprint: String },
    #[error("it has no key that signs now")]
    NoSigningKey,
    #[error("there is no key {kid}")]
    UnknownKid { kid: String },
    #[error("cannot make an {alg} key: {reason}")]
    Generate { alg: Algorithm, reason: String },
}

/// One key as the file holds it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    kid: String,
    alg: Algorithm,
    created_at: u64,
    signs_from: Option<u64>,
    retires_at: Option<u64>,
    private_key: String,
}

/// One key, read: its times, its signing key and its public key.
#[derive(Clone)]
pub struct Key {
    entry: Entry,
    encoding: EncodingKey,
    jwk: Jwk,
}

// Never print key material.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.entry.kid)
            .field("alg", &self.entry.alg)
            .field("signs_from", &self.entry.signs_from)
            .field("retires_at", &self.entry.retires_at)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn generate(alg: Algorithm, now: u64) -> Result<Self, KeySetError> {
        let failed = |reason: &dyn fmt::Display| KeySetError::Generate {
            alg,
            reason: reason.to_string(),
        };
        let private_key = match alg {
            Algorithm::EdDSA => {
                let seed: [u8; 32] = rand::rng().random();
                ed25519_dalek::SigningKey::from_bytes(&seed)
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|err| failed(&err))?
            }
            Algorithm::RS256 => rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|err| failed(&err))?
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|err| failed(&err))?,
        };
        let mut key = Self::read(Entry {
            kid: String::new(),
            alg,
            created_at: now,
            signs_from: None,
            retires_at: None,
            private_key: private_key.to_string(),
        })?;
        key.entry.kid = key.thumbprint();
        key.jwk.common.key_id = Some(key.entry.kid.clone());
        Ok(key)
    }

    /// Reads the private key of `entry` for its algorithm and derives its public key.
    fn read(entry: Entry) -> Result<Self, KeySetError> {
        let bad = || KeySetError::BadKey {
            kid: entry.kid.clone(),
            alg: entry.alg,
        };
        let (encoding, parameters) = match entry.alg {
            Algorithm::EdDSA => {
                let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&entry.private_key)
                    .map_err(|_| bad())?;
                let der = key.to_pkcs8_der().map_err(|_| bad())?;
                let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
                (
                    EncodingKey::from_ed_der(der.as_bytes()),
                    AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                        key_type: OctetKeyPairType::OctetKeyPair,
                        curve: EllipticCurve::Ed25519,
                        x,
                    }),
                )
            }
            Algorithm::RS256 => {
                let key =
                    rsa::RsaPrivateKey::from_pkcs8_pem(&entry.private_key).map_err(|_| bad())?;
                if key.size() * 8 < RSA_BITS {
                    return Err(bad());
                }
                let der = key.to_pkcs1_der().map_err(|_| bad())?;
                (
                    EncodingKey::from_rsa_der(der.as_bytes()),
                    AlgorithmParameters::RSA(RSAKeyParameters {
                        key_type: RSAKeyType::RSA,
                        n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                        e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
                    }),
                )
            }
        };
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(match entry.alg {
                    Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                    Algorithm::RS256 => KeyAlgorithm::RS256,
                }),
                key_id: Some(entry.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: parameters,
        };
        Ok(Self {
            entry,
            encoding,
            jwk,
        })
    }

    fn thumbprint(&self) -> String {
        self.jwk.thumbprint(ThumbprintHash::SHA256)
    }

    pub fn kid(&self) -> &str {
        &self.entry.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.entry.alg
    }

    pub fn created_at(&self) -> u64 {
        self.entry.created_at
    }

    pub fn signs_from(&self) -> Option<u64> {
        self.entry.signs_from
    }

    pub fn retires_at(&self) -> Option<u64> {
        self.entry.retires_at
    }

    /// The private key, to sign with.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The public key, to verify with: made from the published JWK, so a token verifies here
    /// exactly when it verifies for a service that reads the JWKS.
    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_jwk(&self.jwk).expect("a JWK made from a key that was read")
    }

    /// The public key as published: `kid`, `alg`, `use`, and its public parameters only.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }
}

/// The file's shape.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<Entry>,
}

/// A stack's keys, in the order they were made.
#[derive(Clone, Debug)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// A new set of one key of `alg` that signs from `now`.
    pub fn generate(alg: Algorithm, now: u64) -> Result<Self, KeySetError> {
        let mut key = Key::generate(alg, now)?;
        key.entry.signs_from = Some(now);
        Ok(Self { keys: vec![key] })
    }

    /// Reads a key set: every key must read as its algorithm and match its id, and some key
    /// must sign at `now`.
    pub fn parse(bytes: &[u8], now: u64) -> Result<Self, KeySetError> {
        let file: File =
            serde_json::from_slice(bytes).map_err(|err| KeySetError::Format(err.to_string()))?;
        if file.keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        let mut keys: Vec<Key> = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            if keys.iter().any(|key| key.kid() == entry.kid) {
                return Err(KeySetError::DuplicateKid { kid: entry.kid });
            }
            let key = Key::read(entry)?;
            let thumbprint = key.thumbprint();
            if thumbprint != key.entry.kid {
                return Err(KeySetError::KidMismatch {
                    kid: key.entry.kid,
                    thumbprint,
                });
            }
            keys.push(key);
        }
        let set = Self { keys };
        set.signing(now).ok_or(KeySetError::NoSigningKey)?;
        Ok(set)
    }

    /// The file's bytes (with private keys: write them 0600).
    pub fn to_json(&self) -> Vec<u8> {
        let file = File {
            keys: self.keys.iter().map(|key| key.entry.clone()).collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("a key set encodes");
        bytes.push(b'\n');
        bytes
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|key| key.kid() == kid)
    }

    /// The key that signs at `now`: of those whose `signs_from` has come and that have not
    /// retired, the one whose came last (the later-made one when two came together).
    pub fn signing(&self, now: u64) -> Option<&Key> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, key)| !is_retired(key, now))
            .filter_map(|(at, key)| Some((key.signs_from()?, at, key)))
            .filter(|(signs_from, _, _)| *signs_from <= now)
            .max_by_key(|(signs_from, at, _)| (*signs_from, *at))
            .map(|(_, _, key)| key)
    }

    pub fn state(&self, key: &Key, now: u64) -> KeyState {
        if is_retired(key, now) {
            return KeyState::Retired;
        }
        match key.signs_from() {
            None => KeyState::Pending,
            Some(signs_from) if signs_from > now => KeyState::Next,
            Some(_) if self.signing(now).is_some_and(|s| s.kid() == key.kid()) => KeyState::Signing,
            Some(_) => KeyState::Previous,
        }
    }

    /// The public keys of every key not retired at `now`: what `/.well-known/jwks.json` serves.
    pub fn jwks(&self, now: u64) -> JwkSet {
        JwkSet {
            keys: self
                .keys
                .iter()
                .filter(|key| self.state(key, now).is_published())
                .map(|key| key.jwk.clone())
                .collect(),
        }
    }

    /// Adds a new key of `alg`, pending (published, not signing), and drops the keys retired
    /// at `now`. Returns its id.
    pub fn add(&mut self, alg: Algorithm, now: u64) -> Result<String, KeySetError> {
        let key = Key::generate(alg, now)?;
        let kid = key.kid().to_owned();
        self.keys.retain(|key| !is_retired(key, now));
        self.keys.push(key);
        Ok(kid)
    }

    /// Key `kid` signs from `signs_from`; every other key that has no retirement yet retires
    /// once a token it signed just before then has expired (`token_ttl_secs` later, and
    /// [`CLOCK_SKEW_SECS`]).
    pub fn activate(
        &mut self,
        kid: &str,
        signs_from: u64,
        token_ttl_secs: u64,
    ) -> Result<(), KeySetError> {
        let Some(at) = self.keys.iter().position(|key| key.kid() == kid) else {
            return Err(KeySetError::UnknownKid {
                kid: kid.to_owned(),
            });
        };
        let retires_at = signs_from
            .saturating_add(token_ttl_secs)
            .saturating_add(CLOCK_SKEW_SECS);
        for (i, key) in self.keys.iter_mut().enumerate() {
            if i == at {
                key.entry.signs_from = Some(signs_from);
                key.entry.retires_at = None;
            } else if key.entry.retires_at.is_none() {
                key.entry.retires_at = Some(retires_at);
            }
        }
        Ok(())
    }
}

fn is_retired(key: &Key, now: u64) -> bool {
    key.retires_at().is_some_and(|retires_at| retires_at <= now)
}

#[cfg(test)]
mod tests;
