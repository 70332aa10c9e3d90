//! Password hashing with argon2id (m=19456 KiB, t=2, p=1: OWASP's choice and the crate's
//! default). Each hash takes tens of milliseconds of CPU and 19 MiB of memory, so it is bounded
//! three ways (docs/design.md, "Passwords"):
//!
//! - **Memory**: at most `hash_concurrency` hashes run at once, each in one of as many argon2
//!   buffers, made the first time they are needed and then reused for every hash, never freed.
//!   Letting argon2 allocate 19 MiB per hash on whichever blocking thread runs it kept that
//!   memory forever: glibc gives each thread its own arena and, once a large block is freed,
//!   raises its mmap threshold above 19 MiB, so every later hash landed in an arena that is
//!   never returned to the system.
//! - **Fairness**: a peer address may have at most `hash_concurrency` hashes waiting for a
//!   buffer; its others wait behind those, in a queue of its own. The buffers are handed out
//!   first come, first served among the waiting hashes, so another peer's login waits behind at
//!   most `hash_concurrency` hashes of each busy peer, however many that peer sent.
//! - **Queue length**: a peer with `jobs_per_peer` hashes queued or running is refused at once
//!   ([`PasswordError::Busy`]) instead of queueing without end.
//!
//! The PHC string is built here (argon2's `PasswordHasher` would allocate its own memory), and a
//! stored hash is verified by recomputing it with its own salt and parameters into a buffer and
//! comparing in constant time, as argon2's `PasswordVerifier` does.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(#[from] argon2::password_hash::Error),
    #[error("the hashing task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("the hashing pool is closed")]
    Closed,
    /// The peer already has its share of hashes queued or running.
    #[error("too many password hashes queued from this address")]
    Busy,
}

/// The hashing pool; cheap to clone (every clone shares the buffers).
#[derive(Clone)]
pub struct Passwords {
    pool: Arc<Pool>,
}

/// Verified against when an email is unknown, so that a login for an account that does not
/// exist costs the same time as one with a wrong password: a hash of a password no one knows,
/// under the parameters every hash is made with (a test holds the two together).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$TEOdzGj3Y8AxIK6sarCQ2w$Z1N9C1YqDAr349qVpMJM8Dsdxw8C8xlDx0OeKOd+kcU";

struct Pool {
    /// One permit per buffer: holding one means a buffer is free (or not made yet) for the
    /// holder.
    permits: Arc<Semaphore>,
    /// Buffers made and not checked out. Each holds the blocks the gateway's own parameters
    /// need: the most a stored hash may ask for.
    buffers: Mutex<Vec<Vec<Block>>>,
    /// How many buffers one peer may be waiting for or using at once.
    share: usize,
    jobs_per_peer: usize,
    peers: Mutex<HashMap<Option<IpAddr>, PeerJobs>>,
}

/// A peer's hashes that are queued or running.
struct PeerJobs {
    jobs: usize,
    /// `share` permits: a hash holds one while it waits for a buffer and while it runs.
    turns: Arc<Semaphore>,
}

impl Passwords {
    /// `max_concurrent` hashes run at once, each in its own buffer; a peer may have
    /// `jobs_per_peer` hashes queued or running. Nothing is allocated until the first hash.
    pub fn new(max_concurrent: usize, jobs_per_peer: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        let pool = Pool {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            buffers: Mutex::new(Vec::with_capacity(max_concurrent)),
            share: max_concurrent,
            jobs_per_peer: jobs_per_peer.max(1),
            peers: Mutex::new(HashMap::new()),
        };
        Self {
            pool: Arc::new(pool),
        }
    }

    /// An argon2id PHC string with a fresh random salt.
    pub async fn hash(
        &self,
        password: String,
        peer: Option<IpAddr>,
    ) -> Result<String, PasswordError> {
        let mut buffer = Pool::check_out(&self.pool, peer).await?;
        tokio::task::spawn_blocking(move || hash_into(&password, &mut buffer.blocks)).await?
    }

    /// Whether `password` matches `hash`. With no hash (unknown account) it still does the
    /// work of a verification and answers false.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
        peer: Option<IpAddr>,
    ) -> Result<bool, PasswordError> {
        let mut buffer = Pool::check_out(&self.pool, peer).await?;
        let matched = tokio::task::spawn_blocking(move || {
            let known = hash.is_some();
            let hash = hash.as_deref().unwrap_or(DUMMY_HASH);
            let matched = verify_into(&password, hash, &mut buffer.blocks);
            known && matched
        })
        .await?;
        Ok(matched)
    }
}

impl Pool {
    /// Waits for a buffer: first for one of the peer's turns, then for a buffer among every
    /// peer's waiting hashes (both queues are first come, first served).
    async fn check_out(pool: &Arc<Self>, peer: Option<IpAddr>) -> Result<Buffer, PasswordError> {
        let (ticket, turns) = Ticket::take(pool, peer)?;
        let turn = turns
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let free = pool
            .buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        // With a permit and no free buffer, fewer than `hash_concurrency` buffers exist yet:
        // make one. It is kept for good, so no more than that many are ever made, and a block
        // this large is mapped on its own and never freed (see the module doc).
        let blocks = free.unwrap_or_else(|| vec![Block::new(); Params::DEFAULT.block_count()]);
        Ok(Buffer {
            blocks,
            pool: pool.clone(),
            _permit: permit,
            _turn: turn,
            _ticket: ticket,
        })
    }
}

/// Counts one queued or running hash against its peer until dropped.
struct Ticket {
    pool: Arc<Pool>,
    peer: Option<IpAddr>,
}

impl Ticket {
    /// The ticket and the peer's turns, or [`PasswordError::Busy`] when the peer has its
    /// `jobs_per_peer` hashes already.
    fn take(
        pool: &Arc<Pool>,
        peer: Option<IpAddr>,
    ) -> Result<(Self, Arc<Semaphore>), PasswordError> {
        let mut peers = pool
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = peers.entry(peer).or_insert_with(|| PeerJobs {
            jobs: 0,
            turns: Arc::new(Semaphore::new(pool.share)),
        });
        if entry.jobs >= pool.jobs_per_peer {
            return Err(PasswordError::Busy);
        }
        entry.jobs += 1;
        let turns = entry.turns.clone();
        let ticket = Self {
            pool: pool.clone(),
            peer,
        };
        Ok((ticket, turns))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut peers = self
            .pool
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = peers.get_mut(&self.peer) {
            entry.jobs = entry.jobs.saturating_sub(1);
            // An idle peer leaves nothing behind, so the map stays as small as the live peers.
            if entry.jobs == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// A checked-out argon2 buffer, given back (and its permit with it) when dropped.
struct Buffer {
    blocks: Vec<Block>,
    pool: Arc<Pool>,
    // Dropped after `drop` below has put the buffer back, so a permit is never free without
    // a buffer.
    _permit: OwnedSemaphorePermit,
    _turn: OwnedSemaphorePermit,
    _ticket: Ticket,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        self.pool
            .buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(blocks);
    }
}

/// The PHC string of `password` under the default parameters, computed in `buffer`.
fn hash_into(password: &str, buffer: &mut [Block]) -> Result<String, PasswordError> {
    let argon2 = Argon2::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes)?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        Ok(argon2.hash_password_into_with_memory(
            password.as_bytes(),
            salt_raw,
            out,
            &mut *buffer,
        )?)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` recomputes to the stored `hash`, under the hash's own salt and
/// parameters, in `buffer`. An unparsable hash, or one that needs more memory than the buffer
/// holds, is a mismatch: not an error the caller could observe.
fn verify_into(password: &str, hash: &str, buffer: &mut [Block]) -> bool {
    recompute(password, hash, buffer).unwrap_or(false)
}

fn recompute(
    password: &str,
    hash: &str,
    buffer: &mut [Block],
) -> Result<bool, argon2::password_hash::Error> {
    let parsed = PasswordHash::new(hash)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    if params.block_count() > buffer.len() {
        // The store refuses hashes weaker than ours, and one this much stronger would need
        // memory the pool does not have: refuse it rather than allocate per call.
        tracing::warn!(
            m_cost = params.m_cost(),
            "a stored password hash needs more memory than the gateway hashes with; it cannot be verified"
        );
        return Ok(false);
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Ok(false);
    };
    let mut salt_bytes = [0; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let argon2 = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        Ok(argon2.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut *buffer)?)
    })?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let passwords = Passwords::new(2, 8);
        let hash = passwords
            .hash("correct horse".into(), PEER)
            .await
            .expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()), PEER)
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash), PEER)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crates_own_hasher_and_verifier() {
        let passwords = Passwords::new(1, 8);
        let ours = passwords
            .hash("correct horse".into(), PEER)
            .await
            .expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        // A stored hash with weaker (older) parameters still verifies with its own.
        let salt = SaltString::generate(&mut OsRng);
        let weaker = Params::new(8 * 1024, 1, 1, None).expect("params");
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, weaker)
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert!(
            passwords
                .verify("correct horse".into(), Some(theirs.clone()), PEER)
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(theirs), PEER)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_hash_needing_more_memory_than_the_pool_has_does_not_verify() {
        let passwords = Passwords::new(1, 8);
        let salt = SaltString::generate(&mut OsRng);
        let stronger = Params::new(2 * Params::DEFAULT_M_COST, 1, 1, None).expect("params");
        let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, stronger)
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert!(
            !passwords
                .verify("correct horse".into(), Some(hash), PEER)
                .await
                .expect("verify")
        );
    }

    #[test]
    fn the_dummy_hash_has_the_parameters_every_hash_is_made_with() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a PHC string");
        let params = Params::try_from(&dummy).expect("params");
        let default = Argon2::default();
        let default = default.params();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert_eq!(
            dummy.hash.map(|output| output.len()),
            Some(Params::DEFAULT_OUTPUT_LEN)
        );
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        assert_eq!(dummy.version, Some(Version::V0x13.into()));
    }

    #[tokio::test]
    async fn no_buffer_is_made_before_the_first_hash_nor_more_than_the_concurrency() {
        let passwords = Passwords::new(2, 64);
        let made = || passwords.pool.buffers.lock().expect("lock").len();
        assert_eq!(made(), 0);
        let hashes = (0..6).map(|i| passwords.hash(format!("password {i}"), PEER));
        for hash in futures::future::join_all(hashes).await {
            hash.expect("hash");
        }
        assert_eq!(made(), 2);
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let passwords = Passwords::new(1, 8);
        assert!(
            !passwords
                .verify("userctl dummy password, never valid".into(), None, PEER)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn unparsable_hashes_are_a_mismatch() {
        let passwords = Passwords::new(1, 8);
        for hash in [
            "",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$md5$x",
            "not a hash",
        ] {
            assert!(
                !passwords
                    .verify("x".into(), Some(hash.into()), PEER)
                    .await
                    .expect("verify"),
                "{hash:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_peer_past_its_jobs_is_refused_at_once_and_others_are_not() {
        let passwords = Passwords::new(1, 2);
        let other = Some(IpAddr::from([127, 0, 0, 2]));
        // Two hashes of PEER: one running, one queued behind it.
        let held = Pool::check_out(&passwords.pool, PEER).await.expect("first");
        let queued = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.hash("queued".into(), PEER).await }
        });
        until(|| jobs(&passwords, PEER) == 2).await;
        assert!(matches!(
            passwords.hash("third".into(), PEER).await,
            Err(PasswordError::Busy)
        ));
        let other_hash = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.hash("other".into(), other).await }
        });
        drop(held);
        queued.await.expect("task").expect("the queued hash runs");
        other_hash
            .await
            .expect("task")
            .expect("another peer is served");
        assert!(
            passwords.pool.peers.lock().expect("lock").is_empty(),
            "idle peers leave nothing behind"
        );
    }

    #[tokio::test]
    async fn another_peer_is_served_before_a_busy_peers_backlog() {
        let passwords = Passwords::new(1, 64);
        let other = Some(IpAddr::from([127, 0, 0, 2]));
        let held = Pool::check_out(&passwords.pool, PEER).await.expect("first");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, peer) in [(0, PEER), (1, PEER), (2, PEER), (3, other)] {
            let (pool, order) = (passwords.pool.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let buffer = Pool::check_out(&pool, peer).await.expect("buffer");
                order.lock().expect("lock").push(i);
                drop(buffer);
            }));
            // Each in line before the next, so the order they arrived in is known.
            until(|| jobs(&passwords, peer) == if peer == PEER { i + 2 } else { 1 }).await;
        }
        drop(held);
        for task in tasks {
            task.await.expect("task");
        }
        // With one buffer, PEER may wait for it with one hash at a time (its others wait for
        // PEER's turn): the other peer's hash, sent last, is served first.
        assert_eq!(*order.lock().expect("lock"), [3, 0, 1, 2]);
    }

    fn jobs(passwords: &Passwords, peer: Option<IpAddr>) -> usize {
        passwords
            .pool
            .peers
            .lock()
            .expect("lock")
            .get(&peer)
            .map_or(0, |entry| entry.jobs)
    }

    /// Waits (yielding, bounded) until `condition` holds.
    pub(super) async fn until(condition: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition never held");
    }
}
