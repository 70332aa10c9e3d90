//! Password hashing with argon2id (m=19456 KiB, t=2, p=1: OWASP's choice and the crate's
//! default). Each hash takes tens of milliseconds of CPU and 19 MiB, so it runs on the blocking
//! pool behind a semaphore: a burst of logins queues instead of starving the runtime or memory.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the hashing task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("the hashing pool is closed")]
    Closed,
}

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when an email is unknown, so that a login for an account that does not
    /// exist costs the same time as one with a wrong password.
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// Computes the dummy hash, so call it once at start-up.
    pub fn new(max_concurrent: usize) -> Result<Self, PasswordError> {
        let dummy_hash = hash_now("userctl dummy password, never valid")?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// An argon2id PHC string with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Closed)?;
        tokio::task::spawn_blocking(move || hash_now(&password)).await?
    }

    /// Whether `password` matches `hash`. With no hash (unknown account) it still does the
    /// work of a verification and answers false.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let dummy = self.dummy_hash.clone();
        let matched = tokio::task::spawn_blocking(move || {
            let known = hash.is_some();
            let hash = hash.as_deref().unwrap_or(&dummy);
            // An unparsable stored hash is a mismatch, not an error the caller could observe.
            let matched = PasswordHash::new(hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            });
            known && matched
        })
        .await?;
        Ok(matched)
    }
}

fn hash_now(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let passwords = Passwords::new(2).expect("dummy hash");
        let hash = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let passwords = Passwords::new(1).expect("dummy hash");
        assert!(
            !passwords
                .verify("userctl dummy password, never valid".into(), None)
                .await
                .expect("verify")
        );
    }
}
