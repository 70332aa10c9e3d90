//! Brute-force protection: failed logins are counted per account and per peer address with a
//! GCRA budget (governor); a key that spends its budget is refused, before any password work,
//! until the budget refills. Successful logins cost nothing, so a busy legitimate client is
//! never slowed.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Peer(IpAddr),
}

pub struct LoginThrottle {
    per_account: DefaultKeyedRateLimiter<String>,
    per_peer: DefaultKeyedRateLimiter<IpAddr>,
    /// Keys that spent their failure budget, and when they may try again.
    locked: DashMap<Key, Instant>,
    clock: DefaultClock,
}

impl LoginThrottle {
    /// `per_account` and `per_peer` failures per minute, each also the burst allowed.
    pub fn new(per_account: NonZeroU32, per_peer: NonZeroU32) -> Self {
        Self {
            per_account: RateLimiter::keyed(Quota::per_minute(per_account)),
            per_peer: RateLimiter::keyed(Quota::per_minute(per_peer)),
            locked: DashMap::new(),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(retry_after)` while the account or the peer is locked out.
    pub fn check(&self, email: &str, peer: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let keys = std::iter::once(Key::Account(email.to_owned())).chain(peer.map(Key::Peer));
        let wait = keys
            .filter_map(|key| {
                self.locked
                    .get(&key)
                    .map(|until| until.saturating_duration_since(now))
            })
            .max()
            .unwrap_or_default();
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a failed login against the account and the peer.
    pub fn failed(&self, email: &str, peer: Option<IpAddr>) {
        let now = self.clock.now();
        if let Err(not_until) = self.per_account.check_key(&email.to_owned()) {
            self.lock(
                Key::Account(email.to_owned()),
                not_until.wait_time_from(now),
            );
        }
        if let Some(peer) = peer
            && let Err(not_until) = self.per_peer.check_key(&peer)
        {
            self.lock(Key::Peer(peer), not_until.wait_time_from(now));
        }
    }

    fn lock(&self, key: Key, wait: Duration) {
        // An address in a log is personal data and tells a reader which accounts exist.
        let key_for_log = match &key {
            Key::Account(email) => format!("account {}", crate::email::log_id(email)),
            Key::Peer(peer) => format!("peer {peer}"),
        };
        tracing::warn!(key = %key_for_log, retry_after = ?wait, "too many failed logins; throttling");
        if self.locked.len() > SWEEP_ABOVE {
            let now = Instant::now();
            self.locked.retain(|_, until| *until > now);
            self.per_account.retain_recent();
            self.per_peer.retain_recent();
        }
        self.locked.insert(key, Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn an_account_is_locked_after_its_failure_budget() {
        let throttle = LoginThrottle::new(nz(3), nz(100));
        for _ in 0..3 {
            assert!(throttle.check("a@example.com", None).is_ok());
            throttle.failed("a@example.com", None);
        }
        assert!(
            throttle.check("a@example.com", None).is_ok(),
            "the budget is spent, not exceeded"
        );
        throttle.failed("a@example.com", None);
        let wait = throttle.check("a@example.com", None).expect_err("locked");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            throttle.check("b@example.com", None).is_ok(),
            "other accounts are not affected"
        );
    }

    #[test]
    fn a_peer_is_locked_across_accounts() {
        let throttle = LoginThrottle::new(nz(100), nz(2));
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        for i in 0..3 {
            throttle.failed(&format!("user{i}@example.com"), peer);
        }
        assert!(throttle.check("fresh@example.com", peer).is_err());
        assert!(
            throttle
                .check("fresh@example.com", Some(IpAddr::from([10, 0, 0, 2])))
                .is_ok()
        );
    }
}
