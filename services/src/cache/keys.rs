//! Key names and lifetimes. Keys are namespaced (`userctl:`) so the cache can share a Redis,
//! and versioned (`v1:`) so a change of value format never reads old bytes.

use std::time::Duration;

use rand::Rng;

const PREFIX: &str = "userctl:v1:user";
const SESSION_PREFIX: &str = "userctl:v1:session";

/// `userctl:v1:user:id:{id}` → a `User` as protobuf bytes, or empty for "no such user".
pub fn by_id(id: i64) -> String {
    format!("{PREFIX}:id:{id}")
}

/// `userctl:v1:user:email:{email}` → the user's id as decimal text, or empty for "no such
/// user". The email must already be normalised.
pub fn by_email(email: &str) -> String {
    format!("{PREFIX}:email:{email}")
}

/// `userctl:v1:session:{id}` → the `Session` as protobuf bytes: its owner and `expires_at`
/// while active, or with `revoked_at` set once revoked. The id must be well-formed
/// (`crate::session::is_well_formed`), so it cannot reach into another key.
pub fn session(id: &str) -> String {
    format!("{SESSION_PREFIX}:{id}")
}

/// How long a revoked session's entry lives: at least the longest access token lifetime, so
/// no token naming the session outlives the entry that refuses it.
pub const REVOKED_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an active session stays cached: the user TTL (jittered like it), cut at the
/// session's `expires_at`; `None` when that second has come by `now`.
pub fn active_session_ttl(ttl: Duration, expires_at: i64, now: i64) -> Option<u64> {
    let left = u64::try_from(expires_at.checked_sub(now)?).ok()?;
    (left > 0).then(|| jittered(ttl).min(left))
}

/// `ttl` ±10%, whole seconds, at least one: keys written together do not expire together.
pub fn jittered(ttl: Duration) -> u64 {
    let secs = ttl.as_secs_f64() * rand::rng().random_range(0.9..=1.1);
    (secs.round() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_versioned() {
        assert_eq!(by_id(42), "userctl:v1:user:id:42");
        assert_eq!(
            by_email("ann@example.com"),
            "userctl:v1:user:email:ann@example.com"
        );
        assert_eq!(
            session("AAAAAAAAAAAAAAAAAAAAAA"),
            "userctl:v1:session:AAAAAAAAAAAAAAAAAAAAAA"
        );
    }

    #[test]
    fn an_active_session_is_never_cached_past_its_expiry() {
        let ttl = Duration::from_secs(300);
        assert_eq!(active_session_ttl(ttl, 1_000, 1_000), None);
        assert_eq!(active_session_ttl(ttl, 999, 1_000), None);
        assert_eq!(active_session_ttl(ttl, 1_010, 1_000), Some(10));
        let far = active_session_ttl(ttl, 1_000_000, 1_000).expect("active");
        assert!((270..=330).contains(&far), "{far}");
        assert_eq!(active_session_ttl(ttl, i64::MIN, 1_000), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let secs = jittered(Duration::from_secs(300));
            assert!((270..=330).contains(&secs), "{secs}");
        }
        assert_eq!(jittered(Duration::from_millis(10)), 1);
    }
}
