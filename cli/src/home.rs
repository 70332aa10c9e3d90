//! Where `userctl` keeps its state: `USERCTL_HOME` (default: the platform data dir, e.g.
//! `~/.local/share/userctl`), one directory per project. Secrets (the saved token, the signing keys,
//! generated database passwords, TLS keys) are written atomically with mode 0600.
//!
//! ```text
//! $USERCTL_HOME/<project>/
//!   token          the access token of the last login (or refresh)
//!   refresh-token  its refresh token, spent by the next refresh
//!   signing-keys.json  the gateways' token signing keys, made on first `up` (userctl-keys)
//!   secrets.json   generated Redis and Postgres passwords
//!   tls/           the stack's CA and certificates, generated on first `up` (see pki.rs)
//!   stack.json     which runtime `up` used and the addresses it chose
//!   local/         the local runtime: supervisor state, logs, SQLite file
//! ```

use std::{
    fs, io,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use rand::{Rng as _, distr::Alphanumeric};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use userctl_keys::{Algorithm, KeySet};

use crate::{
    pki::{self, Holder},
    stack::{RuntimeKind, StoreKind},
};

/// What can go wrong with the files under `USERCTL_HOME`.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find a home directory")]
    NoHomeDir,
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is corrupt: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot generate the stack's certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    #[error("cannot make a token signing key: {0}")]
    SigningKey(userctl_keys::KeySetError),
}

pub type Result<T, E = HomeError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct ProjectHome {
    pub name: String,
    pub dir: PathBuf,
}

/// What `up` recorded, so that other commands know where the stack is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackRecord {
    pub runtime: RuntimeKind,
    pub store: StoreKind,
    pub gateway: String,
    pub cache: String,
    pub store_addr: String,
    /// The gateway's HTTP/JSON front door, when it has one.
    #[serde(default)]
    pub http: Option<String>,
}

/// The stack's TLS files as (name, content), in [`pki::files`] order.
pub type TlsFiles = Vec<(&'static str, Vec<u8>)>;

/// A TLS identity of the stack, as PEM: the CA to check servers against, and a certificate and
/// key to present. The key is never printed.
#[derive(Clone)]
pub struct TlsIdentity {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl TlsIdentity {
    /// An endpoint that calls `addr` (`http://` or `https://`, the same here) over mutual TLS,
    /// presenting this identity and checking that the server's certificate is for
    /// `server_name`, wherever it answers.
    pub fn endpoint(
        &self,
        addr: &str,
        server_name: &str,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(server_name);
        Endpoint::from_shared(format!("https://{rest}"))?.tls_config(config)
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Passwords generated for the stack's Redis and Postgres, kept so data volumes stay usable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub redis_password: String,
    pub postgres_password: String,
}

impl ProjectHome {
    pub fn resolve(project: &str) -> Result<Self> {
        let root = match std::env::var_os("USERCTL_HOME") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => directories::ProjectDirs::from("", "", "userctl")
                .map(|dirs| dirs.data_dir().to_path_buf())
                .ok_or(HomeError::NoHomeDir)?,
        };
        Ok(Self {
            name: project.to_owned(),
            dir: root.join(project),
        })
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    pub fn signing_keys_path(&self) -> PathBuf {
        self.dir.join(userctl_keys::FILE_NAME)
    }

    pub fn local_dir(&self) -> PathBuf {
        self.dir.join("local")
    }

    fn stack_path(&self) -> PathBuf {
        self.dir.join("stack.json")
    }

    fn secrets_path(&self) -> PathBuf {
        self.dir.join("secrets.json")
    }

    pub fn token(&self) -> Result<Option<String>> {
        read_optional(&self.token_path()).map(|token| token.map(|t| t.trim().to_owned()))
    }

    pub fn save_token(&self, token: &str) -> Result<()> {
        write_private(&self.token_path(), token.as_bytes())
    }

    fn refresh_token_path(&self) -> PathBuf {
        self.dir.join("refresh-token")
    }

    pub fn refresh_token(&self) -> Result<Option<String>> {
        read_optional(&self.refresh_token_path()).map(|token| token.map(|t| t.trim().to_owned()))
    }

    /// Saves a login's or a refresh's two tokens, the refresh token first: a crash between the
    /// two writes leaves a refresh token that still works beside an older access token.
    pub fn save_tokens(&self, access_token: &str, refresh_token: &str) -> Result<()> {
        write_private(&self.refresh_token_path(), refresh_token.as_bytes())?;
        self.save_token(access_token)
    }

    /// Whether a token was there to forget.
    pub fn forget_token(&self) -> Result<bool> {
        let refresh = remove_optional(&self.refresh_token_path())?;
        Ok(remove_optional(&self.token_path())? || refresh)
    }

    /// Holds the lock on the saved tokens while it lives, so two `userctl` processes never
    /// spend one refresh token (the second would look like a thief and end the session).
    pub fn lock_tokens(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|err| io_error("create", &self.dir, err))?;
        let path = self.dir.join("tokens.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|err| io_error("open", &path, err))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error("lock", &path, io::Error::from(errno)))
    }

    pub fn stack(&self) -> Result<Option<StackRecord>> {
        match read_optional(&self.stack_path())? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|err| HomeError::Corrupt {
                    path: self.stack_path(),
                    reason: err.to_string(),
                }),
        }
    }

    pub fn save_stack(&self, record: &StackRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(|source| HomeError::Encode {
            what: "the stack record",
            source,
        })?;
        write_private(&self.stack_path(), &json)
    }

    pub fn forget_stack(&self) -> Result<bool> {
        remove_optional(&self.stack_path())
    }

    /// The token signing key set, made the first time (one Ed25519 key that signs from now).
    pub fn ensure_signing_keys(&self) -> Result<PathBuf> {
        let path = self.signing_keys_path();
        if read_optional(&path)?.is_none() {
            let set = KeySet::generate(Algorithm::default(), now_secs())
                .map_err(HomeError::SigningKey)?;
            self.save_signing_keys(&set)?;
        }
        Ok(path)
    }

    /// The token signing key set, when the stack has one.
    pub fn signing_keys(&self) -> Result<Option<KeySet>> {
        let path = self.signing_keys_path();
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        KeySet::parse(text.as_bytes(), now_secs())
            .map(Some)
            .map_err(|err| HomeError::Corrupt {
                path,
                reason: err.to_string(),
            })
    }

    /// Replaces the key set file at once (a gateway never reads half of one).
    pub fn save_signing_keys(&self, set: &KeySet) -> Result<()> {
        write_private(&self.signing_keys_path(), &set.to_json())
    }

    /// Forgets the signing keys with the data it signed tokens for, so the next `up` generates a
    /// new one: a token from before a wipe must not verify once account ids start over.
    pub fn forget_signing_keys(&self) -> Result<bool> {
        remove_optional(&self.signing_keys_path())
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// The stack's CA and certificates (see [`pki`]), issued the first time, and issued anew
    /// when any file of the set is missing (a set is only ever used whole). Returns the
    /// directory.
    pub fn ensure_tls(&self) -> Result<PathBuf> {
        let dir = self.tls_dir();
        let complete = pki::files().iter().all(|name| dir.join(name).is_file());
        if !complete {
            self.ensure_dir(&dir)?;
            for (name, pem) in pki::issue(&self.name)? {
                write_private(&dir.join(name), pem.as_bytes())?;
            }
        }
        Ok(dir)
    }

    /// The bytes of every TLS file in [`pki::files`] order, for a runtime to hash or upload;
    /// None before the first `up`.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>> {
        let dir = self.tls_dir();
        let mut files = Vec::new();
        for name in pki::files() {
            let path = dir.join(name);
            match fs::read(&path) {
                Ok(bytes) => files.push((name, bytes)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(io_error("read", &path, err)),
            }
        }
        Ok(Some(files))
    }

    /// What `holder` presents, and the CA it trusts; None before the first `up`.
    pub fn tls_identity(&self, holder: Holder) -> Result<Option<TlsIdentity>> {
        let dir = self.tls_dir();
        let read = |name: &str| match fs::read(dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("read", &dir.join(name), err)),
        };
        let (Some(ca), Some(cert), Some(key)) = (
            read(pki::CA_CERT)?,
            read(holder.cert_file())?,
            read(holder.key_file())?,
        ) else {
            return Ok(None);
        };
        Ok(Some(TlsIdentity { ca, cert, key }))
    }

    /// Forgets the CA and certificates with the data of the stack they protected, so the next
    /// `up` makes a new CA: nothing from before a wipe is trusted after it.
    pub fn forget_tls(&self) -> Result<bool> {
        let dir = self.tls_dir();
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_error("remove", &dir, err)),
        }
    }

    /// The stack's generated passwords, created the first time.
    pub fn ensure_secrets(&self) -> Result<Secrets> {
        if let Some(text) = read_optional(&self.secrets_path())?
            && let Ok(secrets) = serde_json::from_str(&text)
        {
            return Ok(secrets);
        }
        let secrets = Secrets {
            redis_password: random_password(),
            postgres_password: random_password(),
        };
        let json = serde_json::to_vec_pretty(&secrets).map_err(|source| HomeError::Encode {
            what: "the generated passwords",
            source,
        })?;
        write_private(&self.secrets_path(), &json)?;
        Ok(secrets)
    }

    /// Forgets generated passwords, once the data they protected is gone.
    pub fn forget_secrets(&self) -> Result<bool> {
        remove_optional(&self.secrets_path())
    }

    pub fn ensure_dir(&self, dir: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| io_error("create", dir, err))
    }
}

/// 32 alphanumeric characters: ~190 bits, and safe inside a URL.
pub fn random_password() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Writes `bytes` to `path` with mode 0600, atomically: a reader sees the old file or the new
/// one, never half of one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|err| io_error("create", parent, err))?;
    }
    // A temporary name of its own per write (in the same directory, so the rename is atomic):
    // concurrent saves of one file must not share, and remove, each other's temporary file.
    let parent = path.parent().unwrap_or(Path::new("."));
    let write = || -> io::Result<()> {
        // Created with mode 0600.
        let mut file = tempfile::NamedTempFile::new_in(parent)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|err| err.error)?;
        Ok(())
    };
    write().map_err(|err| io_error("write", path, err))
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("read", path, err)),
    }
}

/// Seconds since the epoch, the clock key times are written in.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn remove_optional(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_error("remove", path, err)),
    }
}

pub fn io_error(action: &'static str, path: &Path, source: io::Error) -> HomeError {
    HomeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn secrets_are_written_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = ProjectHome {
            name: "t".into(),
            dir: dir.path().join("t"),
        };
        home.save_token("abc").expect("save");
        let key = home.ensure_signing_keys().expect("key");
        for path in [home.token_path(), key] {
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        assert_eq!(home.token().expect("read").as_deref(), Some("abc"));
    }

    #[test]
    fn concurrent_saves_of_one_file_all_succeed_and_leave_one_whole_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let versions: Vec<String> = (0..16)
            .map(|i| format!("version {i} ").repeat(500))
            .collect();
        std::thread::scope(|scope| {
            for version in &versions {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_private(path, version.as_bytes()).expect("a concurrent save");
                    }
                });
            }
        });
        let text = fs::read_to_string(&path).expect("read");
        assert!(versions.contains(&text), "one whole version, not a mix");
        let left: Vec<_> = fs::read_dir(dir.path()).expect("dir").flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind: {left:?}");
    }

    #[test]
    fn the_certificates_are_made_once_private_and_forgotten_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = ProjectHome {
            name: "t".into(),
            dir: dir.path().join("t"),
        };
        assert!(home.tls_files().expect("read").is_none());
        let tls = home.ensure_tls().expect("issue");
        let first = home.tls_files().expect("read").expect("a whole set");
        for (name, _) in &first {
            let mode = fs::metadata(tls.join(name))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        home.ensure_tls().expect("reuse");
        let again = home.tls_files().expect("read").expect("a whole set");
        assert_eq!(first, again, "reused, not reissued");
        assert!(home.tls_identity(Holder::Userctl).expect("read").is_some());

        assert!(home.forget_tls().expect("forget"));
        assert!(
            !home.forget_tls().expect("forget"),
            "nothing left to forget"
        );
        home.ensure_tls().expect("issue");
        let after = home.tls_files().expect("read").expect("a whole set");
        assert_ne!(first[0].1, after[0].1, "a new CA after forgetting");
    }

    #[test]
    fn the_signing_keys_are_made_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = ProjectHome {
            name: "t".into(),
            dir: dir.path().to_path_buf(),
        };
        let first = fs::read(home.ensure_signing_keys().expect("key")).expect("read");
        let second = fs::read(home.ensure_signing_keys().expect("key")).expect("read");
        assert_eq!(first, second);
        let set = home.signing_keys().expect("read").expect("a key set");
        assert_eq!(set.keys().len(), 1);
    }
}
