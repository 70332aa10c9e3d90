//! Key names and lifetimes. Keys are namespaced (`userctl:`) so the cache can share a Redis,
//! and versioned (`v1:`) so a change of value format never reads old bytes.

use std::time::Duration;

use rand::Rng;

const PREFIX: &str = "userctl:v1:user";

/// `userctl:v1:user:id:{id}` → a `User` as protobuf bytes, or empty for "no such user".
pub fn by_id(id: i64) -> String {
    format!("{PREFIX}:id:{id}")
}

/// `userctl:v1:user:email:{email}` → the user's id as decimal text, or empty for "no such
/// user". The email must already be normalised.
pub fn by_email(email: &str) -> String {
    format!("{PREFIX}:email:{email}")
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
