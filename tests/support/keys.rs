//! Signing keys for test stacks: a key set file as `userctl` writes it (`signing-keys.json`,
//! one Ed25519 key that signs from now, mode 0600), and tokens signed with a stack's key, as
//! its gateway signs them (its algorithm, its `kid` in the header) but with whatever claims a
//! test asks for.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::Header;
use userctl_keys::{Algorithm, KeySet};

/// Seconds since the epoch, as the gateway reads its clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A new key set of one Ed25519 key that signs from now.
pub fn generate() -> KeySet {
    KeySet::generate(Algorithm::EdDSA, now_secs()).expect("a new key set")
}

/// Writes a new key set to `dir/signing-keys.json` (0600) and returns the file's path.
pub fn write_key_set(dir: &Path) -> PathBuf {
    let path = dir.join(userctl_keys::FILE_NAME);
    std::fs::write(&path, generate().to_json()).expect("write the key set");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("make the key set private");
    path
}

/// Replaces the key set file at `path` with `set` at once (a gateway reading it every second
/// never sees half of one), as `userctl` rotates keys.
pub fn replace_key_set(path: &Path, set: &KeySet) {
    let dir = path.parent().expect("the key set's directory");
    let next = dir.join(format!(".{}.next", userctl_keys::FILE_NAME));
    std::fs::write(&next, set.to_json()).expect("write the key set");
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600))
        .expect("make the key set private");
    std::fs::rename(&next, path).expect("replace the key set");
}

/// The key set in `path` (a stack's, or one in a `userctl` home).
pub fn read_key_set(path: &Path) -> KeySet {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|err| panic!("read the key set {}: {err}", path.display()));
    KeySet::parse(&bytes, now_secs())
        .unwrap_or_else(|err| panic!("the key set {}: {err}", path.display()))
}

/// `claims` signed with the key of `set` that signs now, its `kid` in the header.
pub fn sign_with(set: &KeySet, claims: &serde_json::Value) -> String {
    let key = set.signing(now_secs()).expect("a key that signs now");
    let mut header = Header::new(key.algorithm().jwt());
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, claims, key.encoding_key()).expect("sign")
}

/// `claims` signed with the key that signs now in the key set file at `path`.
pub fn sign(path: &Path, claims: &serde_json::Value) -> String {
    sign_with(&read_key_set(path), claims)
}

/// A session id of the right shape that no store ever made: a token naming it reaches the
/// cache and the store, and is refused there.
pub const NO_SESSION: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// The claims the gateway issues for user `sub` in session `sid`, valid for `ttl_secs` from
/// now. A token is accepted only in a live session of its user ([`crate::stack::TestStack::open_session`]).
pub fn claims(sub: &str, sid: &str, ttl_secs: u64) -> serde_json::Value {
    let now = now_secs();
    serde_json::json!({
        "sub": sub, "iss": "userctl", "aud": "userctl",
        "iat": now, "nbf": now, "exp": now + ttl_secs, "jti": format!("test-{sub}-{now}"),
        "sid": sid,
    })
}

/// The private key material in the key set file at `path`: every line of each key's PEM body,
/// which must appear in no log, output or service spec.
pub fn private_key_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("read the key set {}: {err}", path.display()));
    let file: serde_json::Value = serde_json::from_str(&text).expect("a key set is JSON");
    let lines: Vec<String> = file["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .flat_map(|key| {
            key["private_key"]
                .as_str()
                .expect("a private key")
                .lines()
                .filter(|line| !line.starts_with("-----") && !line.is_empty())
                .map(str::to_owned)
                .collect::<Vec<String>>()
        })
        .collect();
    assert!(!lines.is_empty(), "no private key in {}", path.display());
    lines
}
