//! What the hostile-client tests share: the requests they forge, the budgets that keep the
//! throttle out of the way, and the check that no answer betrays how the services are built.

use std::num::NonZeroU32;

use tonic::{Request, Status, metadata::AsciiMetadataValue};
use userctl_proto::gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest};

use crate::stack::StackOptions;

pub const PASSWORD: &str = "correct horse battery staple";
/// What any attacker sees for a wrong password or an unknown email.
pub const BAD_CREDENTIALS: &str = "invalid email or password";

/// Text that would betray how the services are built, where their files are, or a secret.
pub const LEAKS: &[&str] = &[
    "sqlx",
    "select ",
    "insert ",
    "postgres",
    "sqlite",
    "redis",
    "$argon2",
    "panick",
    ".rs:",
    "/tmp/",
    "/work/",
    "/home/",
    "/usr/",
    "backtrace",
    "signing-keys.json",
    "private key",
];

#[track_caller]
pub fn assert_no_leak(what: &str, status: &Status) {
    let text = format!(
        "{} {}",
        status.message(),
        String::from_utf8_lossy(status.details())
    )
    .to_lowercase();
    for leak in LEAKS {
        assert!(
            !text.contains(leak),
            "{what}: the answer mentions {leak:?}: {status:?}"
        );
    }
}

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// Budgets so large that the throttle never interferes.
pub fn unthrottled() -> StackOptions {
    StackOptions {
        failed_logins_per_account: nz(1_000_000),
        failed_logins_per_peer: nz(1_000_000),
        registrations_per_peer: nz(1_000_000),
        ..StackOptions::default()
    }
}

pub fn register(email: &str, full_name: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.into(),
        full_name: full_name.into(),
        password: password.into(),
    }
}

pub fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: password.into(),
    }
}

/// A WhoAmI with these raw `authorization` values (none, one, or repeated).
pub fn whoami_with(values: &[AsciiMetadataValue]) -> Request<WhoAmIRequest> {
    let mut request = Request::new(WhoAmIRequest {});
    for value in values {
        request
            .metadata_mut()
            .append("authorization", value.clone());
    }
    request
}

pub fn ascii(value: &str) -> AsciiMetadataValue {
    value.parse().expect("visible ASCII")
}
