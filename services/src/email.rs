//! The one definition of an email address's canonical form, shared by every service so that
//! `Ann@Example.com ` and `ann@example.com` are the same account everywhere.

use std::sync::OnceLock;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Trims surrounding whitespace and lower-cases.
pub fn normalize(email: &str) -> String {
    email.trim().to_lowercase()
}

/// What logs say instead of an address: 16 hex digits of HMAC-SHA256 under a key drawn at
/// start and never stored. Lines about one account agree within a process, so an operator can
/// follow an attack on it, but a log that leaks cannot be reversed by hashing likely
/// addresses, nor matched across restarts or replicas.
pub fn log_id(email: &str) -> String {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return "unhashable".to_owned();
    };
    mac.update(normalize(email).as_bytes());
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_trims_and_lowercases() {
        assert_eq!(normalize("  Ann@Example.COM\n"), "ann@example.com");
    }

    #[test]
    fn log_id_is_stable_per_account_and_hides_the_address() {
        let id = log_id("ann@example.com");
        assert_eq!(id, log_id(" Ann@Example.com"));
        assert_ne!(id, log_id("bob@example.com"));
        assert_eq!(id.len(), 16);
        assert!(!id.contains("ann"));
    }
}
