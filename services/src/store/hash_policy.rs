//! Which password hashes the store keeps: argon2id PHC strings at least as strong as the
//! gateway's own (m=19456 KiB, t=2, p=1), with a real salt and output. A caller that could
//! plant a weak hash (bcrypt, argon2id with m=8) would create an account that is cheap to crack
//! from a leaked table; one with absurd parameters would make every login for it cost the
//! gateway gigabytes. Both are refused, whoever the caller is.

use argon2::{Algorithm, Params, PasswordHash, Version};

/// The stack's own parameters are the floor.
pub const MIN_MEMORY_KIB: u32 = 19_456;
pub const MIN_ITERATIONS: u32 = 2;
pub const MIN_LANES: u32 = 1;
/// Ceilings, so one verification stays within what the gateway can afford: 256 MiB and a
/// few seconds of CPU at most.
pub const MAX_MEMORY_KIB: u32 = 262_144;
pub const MAX_ITERATIONS: u32 = 16;
pub const MAX_LANES: u32 = 16;
/// Argon2's own recommendation is 16 bytes of salt; 8 is the least any implementation writes.
pub const MIN_SALT_BYTES: usize = 8;
pub const MIN_OUTPUT_BYTES: usize = 16;

/// What the store tells a caller whose hash it refuses (the field is `password_hash`).
pub const REQUIREMENT: &str = "must be an argon2id PHC string (v=19) with m >= 19456, t >= 2, p >= 1 \
     (at most m=262144, t=16, p=16), a salt of at least 8 bytes and an output of at least 16 bytes";

/// Whether the store keeps `hash`.
pub fn is_acceptable(hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    if Algorithm::try_from(parsed.algorithm) != Ok(Algorithm::Argon2id)
        || parsed.version != Some(Version::V0x13.into())
    {
        return false;
    }
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let salt_bytes = parsed.salt.map_or(0, |salt| {
        let mut buf = [0u8; 64];
        salt.decode_b64(&mut buf).map_or(0, <[u8]>::len)
    });
    let output_bytes = parsed.hash.map_or(0, |output| output.len());
    (MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&params.m_cost())
        && (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&params.t_cost())
        && (MIN_LANES..=MAX_LANES).contains(&params.p_cost())
        && salt_bytes >= MIN_SALT_BYTES
        && output_bytes >= MIN_OUTPUT_BYTES
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, password_hash::SaltString};

    use super::*;

    fn hash_with(m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).expect("params");
        let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        argon2::Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .expect("hash")
            .to_string()
    }

    #[test]
    fn the_gateways_own_hashes_are_kept() {
        assert!(is_acceptable(&hash_with(19_456, 2, 1)));
        assert!(is_acceptable(&hash_with(65_536, 3, 4)));
        assert!(is_acceptable(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
        ));
    }

    #[test]
    fn weaker_or_other_hashes_are_refused() {
        for (what, hash) in [
            ("m too low", hash_with(8, 2, 1)),
            ("t too low", hash_with(19_456, 1, 1)),
            ("m absurd", hash_with(1 << 20, 2, 1)),
            (
                "argon2i",
                hash_with(19_456, 2, 1).replacen("argon2id", "argon2i", 1),
            ),
            (
                "version 16",
                hash_with(19_456, 2, 1).replacen("v=19", "v=16", 1),
            ),
            (
                "bcrypt",
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(),
            ),
            ("plain text", "hunter2".into()),
            ("prefix only", "$argon2id$".into()),
            (
                "no salt",
                "$argon2id$v=19$m=19456,t=2,p=1$$aGFzaGhhc2hoYXNoaGFzaA".into(),
            ),
            (
                "short salt",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA".into(),
            ),
            (
                "short output",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
            ),
            (
                "no output",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ".into(),
            ),
            (
                "trailing junk",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'--".into(),
            ),
        ] {
            assert!(!is_acceptable(&hash), "{what}: {hash}");
        }
    }
}
