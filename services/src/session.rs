//! What the store and the cache agree on about sessions beyond the proto: the shape of an id,
//! the limits of a request, and two pieces of metadata the store adds for the cache.
//!
//! The metadata exists because the contract (`userctl.user.v1`) answers a session read with a
//! `User` alone and a reused refresh token with a bare UNAUTHENTICATED. The cache needs more
//! to do its job: when a session it may cache ends, and which session a reuse revoked. Both
//! travel as response metadata, which a caller that does not know them ignores, and the cache
//! strips the second before it answers (the gateway gets one generic refusal).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// A refresh token is stored as its SHA-256.
pub const REFRESH_HASH_BYTES: usize = 32;

/// The longest a session may live without a refresh: 400 days.
pub const MAX_LIFETIME_SECS: i64 = 400 * 24 * 60 * 60;

/// What a caller is told when a refresh is refused, whatever the reason: unknown, spent,
/// revoked and expired look alike.
pub const REFRESH_REFUSED: &str = "the refresh token is not valid";

/// What a session read is told when its session is missing, another user's, revoked or expired.
pub const SESSION_ENDED: &str = "the session has ended";

/// Response metadata of the store's `ReadUser` with a session: the session's `expires_at`
/// (seconds since the epoch, decimal), so the cache never keeps it as active past that second.
pub const EXPIRES_AT_HEADER: &str = "userctl-session-expires-at";

/// Error metadata of the store's `RefreshSession` when a spent token revoked its session: that
/// `Session`, protobuf-encoded, so the cache can publish the revocation to every gateway.
pub const REVOKED_HEADER: &str = "userctl-revoked-session-bin";

/// A new session id: 128 bits from the thread's CSPRNG, base64url without padding (22 chars).
pub fn new_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Whether `id` could have been made by [`new_id`]; anything else names no session and is
/// never put in a query or a Redis key.
pub fn is_well_formed(id: &str) -> bool {
    id.len() == 22
        && URL_SAFE_NO_PAD
            .decode(id)
            .is_ok_and(|bytes| bytes.len() == 16)
}

/// Whether a session may be given `secs` to live.
pub fn is_valid_lifetime(secs: i64) -> bool {
    (1..=MAX_LIFETIME_SECS).contains(&secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_22_base64url_characters_and_differ() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 22);
        assert!(is_well_formed(&a) && is_well_formed(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn other_strings_are_not_session_ids() {
        for id in [
            "",
            "short",
            "AAAAAAAAAAAAAAAAAAAAAAA",     // 23 characters
            "AAAAAAAAAAAAAAAAAAAA+/",      // standard alphabet
            "AAAAAAAAAAAAAAAAAAAA\0A",     // NUL
            "AAAAAAAAAAAAAAAAAAAAAB",      // trailing bits set: not canonical
            "userctl:v1:user:id:1:xxxxxx", // a key injection attempt
        ] {
            assert!(!is_well_formed(id), "{id:?}");
        }
        assert!(is_well_formed("AAAAAAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn lifetimes_run_from_one_second_to_400_days() {
        assert!(!is_valid_lifetime(0));
        assert!(!is_valid_lifetime(-1));
        assert!(is_valid_lifetime(1));
        assert!(is_valid_lifetime(MAX_LIFETIME_SECS));
        assert!(!is_valid_lifetime(MAX_LIFETIME_SECS + 1));
    }
}
