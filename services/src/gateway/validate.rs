//! Input rules for the public API. Every rule a request breaks is reported, each naming its
//! field, so a client can show all of them at once.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest};

pub const MIN_PASSWORD_CHARS: usize = 8;
/// OWASP ASVS asks that at least 64 be accepted; 128 bounds the hashing cost of one request.
pub const MAX_PASSWORD_CHARS: usize = 128;
pub const MAX_FULL_NAME_CHARS: usize = 100;
/// RFC 5321's limit on a forward path.
pub const MAX_EMAIL_BYTES: usize = 254;

pub type Violations = Vec<(&'static str, &'static str)>;

/// A registration that passed every rule; the email is normalised and the name trimmed.
#[derive(Debug)]
pub struct Registration {
    pub email: String,
    pub full_name: String,
    pub password: String,
}

pub fn registration(request: RegisterRequest) -> Result<Registration, Violations> {
    let email = crate::email::normalize(&request.email);
    let full_name = request.full_name.trim().to_owned();
    let mut violations = Violations::new();
    if let Err(reason) = check_email(&email) {
        violations.push(("email", reason));
    }
    if let Err(reason) = check_full_name(&full_name) {
        violations.push(("full_name", reason));
    }
    if let Err(reason) = check_password(&request.password) {
        violations.push(("password", reason));
    }
    if violations.is_empty() {
        Ok(Registration {
            email,
            full_name,
            password: request.password,
        })
    } else {
        Err(violations)
    }
}

/// Login only checks shape, never the rules a password had to meet when it was set, so the
/// answer reveals nothing about which accounts exist.
pub fn login(request: &LoginRequest) -> Result<String, Violations> {
    let email = crate::email::normalize(&request.email);
    let mut violations = Violations::new();
    if email.is_empty() {
        violations.push(("email", "is required"));
    } else if email.len() > MAX_EMAIL_BYTES {
        violations.push(("email", "must be at most 254 bytes"));
    } else if email.contains(char::is_control) {
        // No account can have one (registration refuses them), so this reveals nothing; it
        // spares a lookup, and a NUL used to reach Postgres and fail as INTERNAL
        // (tests/input_validation.rs).
        violations.push(("email", "must not contain control characters"));
    }
    if request.password.is_empty() {
        violations.push(("password", "is required"));
    } else if request.password.chars().count() > MAX_PASSWORD_CHARS {
        violations.push(("password", "must be at most 128 characters"));
    }
    if violations.is_empty() {
        Ok(email)
    } else {
        Err(violations)
    }
}

/// A pragmatic address check: one `@`, a plausible local part and a dotted domain, no spaces or
/// control characters. Deliverability is not ours to prove.
fn check_email(email: &str) -> Result<(), &'static str> {
    if email.is_empty() {
        return Err("is required");
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err("must be at most 254 bytes");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must look like name@example.com");
    };
    if email.chars().any(is_invisible) {
        return Err("must not contain invisible, control or line-separator characters");
    }
    let bad_char = |c: char| c.is_whitespace() || c == '@';
    let plausible = !local.is_empty()
        && local.len() <= 64
        && !local.contains(bad_char)
        && !domain.contains(bad_char)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if plausible {
        Ok(())
    } else {
        Err("must look like name@example.com")
    }
}

fn check_full_name(full_name: &str) -> Result<(), &'static str> {
    if full_name.is_empty() {
        return Err("is required");
    }
    if full_name.chars().count() > MAX_FULL_NAME_CHARS {
        return Err("must be at most 100 characters");
    }
    if full_name.contains(char::is_control) || full_name.contains(is_line_separator) {
        return Err("must not contain control characters");
    }
    if full_name.contains(is_bidi_control) {
        return Err("must not contain bidirectional overrides or isolates");
    }
    Ok(())
}

/// Characters that change nothing visible, so two addresses that print alike could be two
/// accounts: format (Cf: U+200B, U+FEFF, U+00AD, U+202E...), control (Cc) and the line and
/// paragraph separators (U+2028, U+2029).
fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::Control
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// Embeddings, overrides and isolates reorder the text printed after a name (a name ending in
/// U+202E shows the next column backwards). Other format characters stay allowed in names:
/// ZWJ and ZWNJ are part of emoji sequences and of how Persian and Indic scripts are written.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_password(password: &str) -> Result<(), &'static str> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err("must be at least 8 characters");
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err("must be at most 128 characters");
    }
    if password.contains('\0') {
        return Err("must not contain NUL characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(email: &str, name: &str, password: &str) -> Result<Registration, Violations> {
        registration(RegisterRequest {
            email: email.into(),
            full_name: name.into(),
            password: password.into(),
        })
    }

    #[test]
    fn a_valid_registration_is_normalised() {
        let ok = register(" Ann@Example.COM ", "  Ann Lee ", "correct horse").expect("valid");
        assert_eq!(ok.email, "ann@example.com");
        assert_eq!(ok.full_name, "Ann Lee");
    }

    #[test]
    fn every_broken_rule_is_reported_with_its_field() {
        let violations = register("nope", "", "short").expect_err("invalid");
        let fields: Vec<_> = violations.iter().map(|(field, _)| *field).collect();
        assert_eq!(fields, ["email", "full_name", "password"]);
    }

    #[test]
    fn bad_emails_are_refused() {
        for email in [
            "",
            "a@b",
            "@example.com",
            "a@.com",
            "a@example.",
            "a b@example.com",
            "a@@example.com",
            "a@exa..mple.com",
            "a\u{7}@example.com",
            "a\u{200B}@example.com",
            "a\u{FEFF}@example.com",
            "a\u{AD}@example.com",
            "a@exam\u{202E}ple.com",
            "a\u{2028}@example.com",
            "a\u{2029}@example.com",
            "a\u{2060}@example.com",
        ] {
            assert!(check_email(email).is_err(), "{email:?} accepted");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_of_8_to_128_characters_are_accepted() {
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"é".repeat(128)).is_ok());
        assert!(check_password(&"x".repeat(64)).is_ok());
        assert!(check_password("1234567").is_err());
        assert!(check_password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn names_with_control_characters_are_refused() {
        assert!(check_full_name("Ann\nLee").is_err());
        assert!(check_full_name(&"a".repeat(101)).is_err());
        assert!(check_full_name("Ann\u{1b}[31mLee").is_err());
        assert!(check_full_name("Ann\u{2028}Lee").is_err());
    }

    #[test]
    fn names_with_bidi_overrides_or_isolates_are_refused() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert!(check_full_name(&format!("Ann{c}Lee")).is_err(), "{c:?}");
        }
    }

    #[test]
    fn names_keep_letters_of_every_script_and_emoji_sequences() {
        for name in [
            "Zoë Ångström",
            "李小龍",
            "محمد",
            "क्षत्रिय",
            "👩\u{200D}💻 Ann",
        ] {
            assert!(check_full_name(name).is_ok(), "{name:?} refused");
        }
    }
}
