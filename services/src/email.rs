//! The one definition of an email address's canonical form, shared by every service so that
//! `Ann@Example.com ` and `ann@example.com` are the same account everywhere.

/// Trims surrounding whitespace and lower-cases.
pub fn normalize(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_trims_and_lowercases() {
        assert_eq!(normalize("  Ann@Example.COM\n"), "ann@example.com");
    }
}
