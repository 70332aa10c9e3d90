//! Tokens verified recently. A client presents the same access token on every call until it
//! expires, and checking its signature is the costliest thing a WhoAmI does in the gateway (an
//! Ed25519 verify takes tens of microseconds; BENCHMARKS.md). This remembers what a token
//! verified to, keyed by the token's exact text, so only the very bytes that passed ever hit,
//! and only until the token expires.
//!
//! A hit is still checked against what can change after a token was verified: its key must
//! still be published (a retired key stops verifying at once; a `kid` is its key's thumbprint,
//! so a published `kid` is the same key) and it must not have expired. Sessions are not
//! remembered here: the cache checks the session on every call, so a logout takes effect at
//! once as before.
//!
//! Bounded: at most [`CAPACITY`] tokens. When full, expired entries go; if none had expired,
//! all go. Distinct valid tokens cost a login each, so a flood of them costs verifies, never
//! memory.

use std::{collections::HashMap, sync::RwLock};

use super::Verified;

/// Tokens remembered at most: about 4 MB of a gateway's memory when full.
pub const CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
struct Entry {
    verified: Verified,
    /// The key that signed it.
    kid: Box<str>,
    /// Its `exp`: valid while `now < exp`.
    exp: u64,
}

#[derive(Debug, Default)]
pub struct Verifications {
    entries: RwLock<HashMap<Box<str>, Entry>>,
}

impl Verifications {
    /// What `token` verified to, if it did, has not expired at `now`, and its key is one
    /// that `published` still accepts.
    pub fn get(
        &self,
        token: &str,
        now: u64,
        published: impl FnOnce(&str) -> bool,
    ) -> Option<Verified> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries
            .get(token)
            .filter(|entry| now < entry.exp && published(&entry.kid))?;
        Some(entry.verified.clone())
    }

    /// Remembers that `token`, signed by `kid`, verified to `verified` until `exp`.
    pub fn insert(&self, token: &str, kid: &str, exp: u64, verified: &Verified, now: u64) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, entry| now < entry.exp);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                verified: verified.clone(),
                kid: kid.into(),
                exp,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn verified(user_id: i64) -> Verified {
        Verified {
            user_id,
            session_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        }
    }

    #[test]
    fn a_token_is_remembered_by_its_exact_text_until_it_expires() {
        let remembered = Verifications::default();
        remembered.insert("a.b.c", "kid", NOW + 60, &verified(7), NOW);
        assert_eq!(remembered.get("a.b.c", NOW, |_| true), Some(verified(7)));
        assert_eq!(remembered.get("a.b.C", NOW, |_| true), None);
        assert_eq!(
            remembered.get("a.b.c", NOW + 59, |_| true),
            Some(verified(7))
        );
        assert_eq!(
            remembered.get("a.b.c", NOW + 60, |_| true),
            None,
            "exp is not valid"
        );
    }

    #[test]
    fn a_token_whose_key_is_no_longer_published_is_not_remembered() {
        let remembered = Verifications::default();
        remembered.insert("a.b.c", "old", NOW + 60, &verified(7), NOW);
        assert_eq!(remembered.get("a.b.c", NOW, |kid| kid != "old"), None);
    }

    #[test]
    fn it_never_holds_more_than_its_capacity_and_drops_expired_tokens_first() {
        let remembered = Verifications::default();
        for n in 0..CAPACITY {
            // Half of them expire at NOW + 1.
            let exp = if n % 2 == 0 { NOW + 1 } else { NOW + 60 };
            remembered.insert(&format!("token-{n}"), "kid", exp, &verified(1), NOW);
        }
        assert_eq!(remembered.len(), CAPACITY);
        remembered.insert("one more", "kid", NOW + 60, &verified(2), NOW + 1);
        assert_eq!(remembered.len(), CAPACITY / 2 + 1);
        assert!(remembered.get("token-1", NOW + 1, |_| true).is_some());

        // With nothing expired, a full map starts over rather than grow.
        for n in 0..CAPACITY {
            remembered.insert(
                &format!("fresh-{n}"),
                "kid",
                NOW + 60,
                &verified(1),
                NOW + 1,
            );
        }
        assert!(remembered.len() <= CAPACITY);
    }
}
