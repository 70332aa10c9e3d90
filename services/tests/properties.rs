//! Properties of the gateway's input rules and of token parsing, over generated input: what
//! no table of examples covers. Each property runs proptest's default 256 cases.

use proptest::prelude::*;
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest};
use usersvc::{
    email,
    gateway::{
        token::TokenKeys,
        validate::{self, MAX_EMAIL_BYTES, MAX_FULL_NAME_CHARS, MAX_PASSWORD_CHARS},
    },
    store::service::{MAX_EMAIL_BYTES as STORE_EMAIL_BYTES, MAX_FULL_NAME_BYTES},
};

/// One Ed25519 key set for every case, read from a file that is gone once read.
fn key() -> &'static TokenKeys {
    static KEYS: std::sync::LazyLock<TokenKeys> = std::sync::LazyLock::new(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(userctl_keys::FILE_NAME);
        let now = usersvc::gateway::token::now_secs();
        let set =
            userctl_keys::KeySet::generate(userctl_keys::Algorithm::EdDSA, now).expect("keys");
        std::fs::write(&path, set.to_json()).expect("write");
        TokenKeys::load(&path, std::time::Duration::from_secs(900)).expect("load")
    });
    &KEYS
}

/// A session id as the store makes them.
const SID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// The id of the one key, for headers that name it.
fn kid() -> String {
    key().jwks().keys[0].common.key_id.clone().expect("kid")
}

/// Arbitrary text, and text near the shapes the rules look at.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "\\PC{0,300}",
        "[a-zA-Z0-9._+-]{0,70}@[a-zA-Z0-9.-]{0,200}",
        "[ \\t\\n\\x00\\x07İ@.a-z]{0,40}",
        "[😀é]{90,110}",
    ]
}

/// A character a name or password may hold.
fn printable() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("not a control character", |c| !c.is_control())
}

/// A character a name may hold: printable, and not a separator or bidi control, which would
/// reorder what is printed after the name.
fn name_char() -> impl Strategy<Value = char> {
    printable().prop_filter("not a separator or bidi control", |c| {
        !matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

proptest! {
    #[test]
    fn registration_accepts_only_what_the_store_can_hold(
        email in text(),
        full_name in text(),
        password in text(),
    ) {
        let request = RegisterRequest {
            email: email.clone(),
            full_name: full_name.clone(),
            password: password.clone(),
        };
        match validate::registration(request) {
            Ok(ok) => {
                prop_assert_eq!(&ok.email, &email::normalize(&email));
                prop_assert!(ok.email.len() <= MAX_EMAIL_BYTES);
                prop_assert!(ok.email.len() <= STORE_EMAIL_BYTES);
                prop_assert_eq!(ok.email.matches('@').count(), 1);
                prop_assert!(!ok.email.contains(|c: char| c.is_control() || c.is_whitespace()));
                prop_assert_eq!(ok.full_name.as_str(), full_name.trim());
                prop_assert!(!ok.full_name.is_empty());
                prop_assert!(ok.full_name.chars().count() <= MAX_FULL_NAME_CHARS);
                prop_assert!(ok.full_name.len() <= MAX_FULL_NAME_BYTES, "the store would refuse it");
                prop_assert!(!ok.full_name.contains(char::is_control));
                let chars = ok.password.chars().count();
                prop_assert!((8..=MAX_PASSWORD_CHARS).contains(&chars));
                prop_assert!(!ok.password.contains('\0'));
            }
            Err(violations) => {
                prop_assert!(!violations.is_empty());
                let mut fields: Vec<_> = violations.iter().map(|(field, _)| *field).collect();
                prop_assert!(fields.iter().all(|f| ["email", "full_name", "password"].contains(f)));
                fields.dedup();
                prop_assert_eq!(fields.len(), violations.len(), "one violation per field");
            }
        }
    }

    #[test]
    fn every_well_formed_registration_is_accepted(
        local in "[a-zA-Z0-9._+-]{1,64}",
        domain in "[a-zA-Z0-9-]{1,60}(\\.[a-zA-Z0-9-]{1,60}){1,2}",
        name in prop::collection::vec(name_char(), 1..=MAX_FULL_NAME_CHARS),
        password in prop::collection::vec(printable(), 8..=MAX_PASSWORD_CHARS),
    ) {
        let name: String = name.into_iter().collect();
        prop_assume!(!name.trim().is_empty());
        let email = format!("{local}@{domain}");
        prop_assume!(email.len() <= MAX_EMAIL_BYTES);
        let request = RegisterRequest {
            email: email.clone(),
            full_name: name,
            password: password.into_iter().collect(),
        };
        let accepted = validate::registration(request);
        prop_assert!(accepted.is_ok(), "{:?}", accepted);
    }

    #[test]
    fn login_passes_on_only_a_plausible_normalised_email(email in text(), password in text()) {
        let request = LoginRequest { email: email.clone(), password };
        if let Ok(normalised) = validate::login(&request) {
            prop_assert_eq!(&normalised, &email::normalize(&email));
            prop_assert!(!normalised.is_empty() && normalised.len() <= MAX_EMAIL_BYTES);
            prop_assert!(!normalised.contains(char::is_control));
        }
    }

    #[test]
    fn arbitrary_strings_never_verify(token in prop_oneof![
        ".*",
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,60}",
        "[A-Za-z0-9_.=+/-]{0,400}",
    ]) {
        prop_assert!(key().verify(&token).is_err());
    }

    #[test]
    fn tokens_of_any_header_and_claims_never_verify_unsigned(
        alg in prop_oneof![
            Just("none".to_owned()), Just("HS256".to_owned()), Just("RS256".to_owned()),
            Just("ES256".to_owned()), Just("HS512".to_owned()), Just("EdDSA".to_owned()),
            "[A-Za-z0-9]{0,8}",
        ],
        sub in prop_oneof![any::<i64>().prop_map(|id| id.to_string()), ".*"],
        exp in any::<i64>(),
        signature in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        // Naming the real key, so the refusal is the signature's, not the header's.
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid()});
        let claims = serde_json::json!({
            "sub": sub, "iss": "userctl", "aud": "userctl", "iat": 0, "nbf": 0, "exp": exp,
            "jti": "j", "sid": SID,
        });
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(&signature),
        );
        prop_assert!(key().verify(&token).is_err(), "{}", token);
    }

    #[test]
    fn an_issued_token_verifies_to_its_user(id in any::<i64>()) {
        let key = key();
        let (token, _) = key.issue(id, SID).expect("issue");
        prop_assert_eq!(key.verify(&token).expect("valid").user_id, id);
    }

    #[test]
    fn an_issued_token_with_any_one_character_changed_is_refused(
        id in any::<i64>(),
        position in any::<prop::sample::Index>(),
        replacement in prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=".chars().collect::<Vec<_>>()
        ),
    ) {
        let key = key();
        let (token, _) = key.issue(id, SID).expect("issue");
        let at = position.index(token.len());
        prop_assume!(token.as_bytes()[at] != replacement as u8);
        let mut tampered = token.clone();
        tampered.replace_range(at..=at, &replacement.to_string());
        prop_assert!(key.verify(&tampered).is_err(), "{} accepted", tampered);
    }
}
