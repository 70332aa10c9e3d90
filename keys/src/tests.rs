use super::*;

const T: u64 = 1_800_000_000;
const TTL: u64 = 900;

fn sign(key: &Key) -> String {
    let mut header = jsonwebtoken::Header::new(key.algorithm().jwt());
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "1"}),
        key.encoding_key(),
    )
    .expect("sign")
}

fn verifies(key: &Key, token: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(key.algorithm().jwt());
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding_key(), &validation).is_ok()
}

#[test]
fn a_new_set_signs_at_once_and_reads_back_as_written() {
    for alg in [Algorithm::EdDSA, Algorithm::RS256] {
        let set = KeySet::generate(alg, T).expect("generate");
        let key = set.signing(T).expect("signs");
        assert_eq!(key.algorithm(), alg);
        assert_eq!(set.state(key, T), KeyState::Signing);
        assert!(verifies(key, &sign(key)), "{alg}");

        let read = KeySet::parse(&set.to_json(), T).expect("reads back");
        assert_eq!(read.keys()[0].kid(), key.kid());
        // The key read back verifies what the key written signed.
        assert!(verifies(&read.keys()[0], &sign(key)), "{alg}");
    }
}

#[test]
fn the_jwks_has_public_parts_only() {
    for alg in [Algorithm::EdDSA, Algorithm::RS256] {
        let set = KeySet::generate(alg, T).expect("generate");
        let jwks = serde_json::to_value(set.jwks(T)).expect("json");
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kid"], set.keys()[0].kid());
        assert_eq!(jwk["alg"], alg.name());
        assert_eq!(jwk["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{alg}: {private} in {jwk}");
        }
        let text = jwks.to_string();
        assert!(!text.contains("PRIVATE"), "{text}");
    }
}

#[test]
fn a_rotation_publishes_first_signs_later_and_retires_after_the_last_token_expired() {
    let mut set = KeySet::generate(Algorithm::EdDSA, T).expect("generate");
    let old = set.keys()[0].kid().to_owned();
    let new = set.add(Algorithm::RS256, T + 10).expect("add");
    let state = |set: &KeySet, kid: &str, now| set.state(set.get(kid).expect("kid"), now);

    // Pending: published, the old key still signs.
    assert_eq!(state(&set, &new, T + 10), KeyState::Pending);
    assert_eq!(set.signing(T + 10).expect("signs").kid(), old);
    assert_eq!(set.jwks(T + 10).keys.len(), 2);

    set.activate(&new, T + 13, TTL).expect("activate");
    assert_eq!(state(&set, &new, T + 12), KeyState::Next);
    assert_eq!(set.signing(T + 12).expect("signs").kid(), old);
    assert_eq!(state(&set, &new, T + 13), KeyState::Signing);
    assert_eq!(state(&set, &old, T + 13), KeyState::Previous);

    let retires = T + 13 + TTL + CLOCK_SKEW_SECS;
    assert_eq!(set.get(&old).expect("old").retires_at(), Some(retires));
    assert_eq!(state(&set, &old, retires - 1), KeyState::Previous);
    assert_eq!(state(&set, &old, retires), KeyState::Retired);
    assert_eq!(set.jwks(retires).keys.len(), 1);

    // The next rotation forgets the retired key.
    let newest = set.add(Algorithm::EdDSA, retires).expect("add");
    let kids: Vec<&str> = set.keys().iter().map(Key::kid).collect();
    assert_eq!(kids, [new.as_str(), newest.as_str()]);
}

#[test]
fn a_set_that_is_not_whole_and_sound_is_refused_naming_why() {
    let set = KeySet::generate(Algorithm::EdDSA, T).expect("generate");
    let mut file: serde_json::Value = serde_json::from_slice(&set.to_json()).expect("json");

    let refused = |value: &serde_json::Value| {
        KeySet::parse(value.to_string().as_bytes(), T)
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(&serde_json::json!("hello")).starts_with("it is not a key set"));
    assert_eq!(refused(&serde_json::json!({"keys": []})), "it has no key");

    let mut twice = file.clone();
    let first = twice["keys"][0].clone();
    twice["keys"].as_array_mut().expect("keys").push(first);
    assert!(refused(&twice).ends_with("is listed twice"));

    // An Ed25519 key labelled RS256: the wrong kind of key.
    let mut wrong_kind = file.clone();
    wrong_kind["keys"][0]["alg"] = "RS256".into();
    assert!(refused(&wrong_kind).ends_with("is not a valid RS256 private key"));

    let mut renamed = file.clone();
    renamed["keys"][0]["kid"] = "another".into();
    assert!(refused(&renamed).contains("does not match its id"));

    file["keys"][0]["signs_from"] = (T + 1).into();
    assert_eq!(refused(&file), "it has no key that signs now");
}

#[test]
fn errors_never_carry_key_material() {
    let set = KeySet::generate(Algorithm::EdDSA, T).expect("generate");
    let debug = format!("{set:?}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
}

#[test]
fn algorithms_are_named_as_users_type_them() {
    assert_eq!("eddsa".parse(), Ok(Algorithm::EdDSA));
    assert_eq!("Ed25519".parse(), Ok(Algorithm::EdDSA));
    assert_eq!("RS256".parse(), Ok(Algorithm::RS256));
    assert_eq!(
        "hs256".parse::<Algorithm>(),
        Err("unknown signing algorithm \"hs256\": expected eddsa or rs256".to_owned())
    );
}
