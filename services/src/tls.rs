//! Mutual TLS between the services (docs/design.md, "Mutual TLS inside the stack"): the three
//! flags every service takes, the files they name (read once, at start), and what a server and
//! a client make of them. Without the flags a service speaks plaintext, as `usersvc` started by
//! hand always has; `userctl up` always passes them.
//!
//! Each hop checks the other end by a fixed name, not by its address: a server's certificate
//! must be for its service name (`store`, `cache`), so `127.0.0.1:50053`, `store:50053` or a
//! replica's DNS name all work. A caller's certificate says who it is (`cache`, `gateway`,
//! `userctl`), and [`Callers`] lets only the right ones read and write users.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier},
};
use tonic::{
    Request, Status,
    transport::{Certificate, ClientTlsConfig, Identity},
};

/// The server name the store's certificate is for.
pub const STORE_NAME: &str = "store";
/// The server name the cache's certificate is for.
pub const CACHE_NAME: &str = "cache";
/// The gateway's client certificate.
pub const GATEWAY_NAME: &str = "gateway";
/// The certificate of `userctl` itself: the dashboard, the bench, health checks.
pub const USERCTL_NAME: &str = "userctl";

/// `--tls-ca`, `--tls-cert`, `--tls-key`: all three, or none for plaintext.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// The stack's CA certificate (PEM). With it, --tls-cert and --tls-key: a server accepts
    /// only callers with a certificate this CA signed, and a client trusts only servers it signed.
    #[arg(long = "tls-ca", env = "USERSVC_TLS_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,

    /// This service's certificate (PEM), signed by --tls-ca.
    #[arg(long = "tls-cert", env = "USERSVC_TLS_CERT", value_name = "PATH")]
    pub cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long = "tls-key", env = "USERSVC_TLS_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "mutual TLS needs --tls-ca, --tls-cert and --tls-key together \
         (USERSVC_TLS_CA, USERSVC_TLS_CERT, USERSVC_TLS_KEY): {missing} missing"
    )]
    Partial { missing: String },
    #[error("cannot read {what} {}: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} holds no PEM {what}", .path.display())]
    NoPem { what: &'static str, path: PathBuf },
    #[error("the CA certificate {} is unusable: {source}", .path.display())]
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("--tls-cert and --tls-key do not make a usable certificate: {0}")]
    Identity(#[source] rustls::Error),
    #[error("cannot check client certificates against the CA: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// The TLS files, read and checked. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server: Arc<ServerConfig>,
}

// The key must never be printed.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl TlsArgs {
    /// None without any of the three flags; the files, checked, with all three; an error naming
    /// what is missing with some.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        let (ca, cert, key) = match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => return Ok(None),
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            _ => {
                let missing: Vec<&str> = [
                    (self.ca.is_none(), "--tls-ca"),
                    (self.cert.is_none(), "--tls-cert"),
                    (self.key.is_none(), "--tls-key"),
                ]
                .into_iter()
                .filter_map(|(absent, flag)| absent.then_some(flag))
                .collect();
                return Err(TlsError::Partial {
                    missing: missing.join(" and "),
                });
            }
        };
        Tls::from_pem(
            read(ca, "the CA certificate")?,
            read(cert, "the certificate")?,
            read(key, "the key")?,
            (ca, cert, key),
        )
        .map(Some)
    }
}

impl Tls {
    fn from_pem(
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        (ca_path, cert_path, key_path): (&Path, &Path, &Path),
    ) -> Result<Self, TlsError> {
        let no_pem = |what, path: &Path| TlsError::NoPem {
            what,
            path: path.to_path_buf(),
        };
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| no_pem("certificate", ca_path))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| no_pem("certificate", cert_path))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| no_pem("key", key_path))?;
        if cas.is_empty() {
            return Err(no_pem("certificate", ca_path));
        }
        if chain.is_empty() {
            return Err(no_pem("certificate", cert_path));
        }

        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|source| TlsError::Ca {
                path: ca_path.to_path_buf(),
                source,
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Client certificates are required, not optional: a caller without one fails the
        // handshake and never reaches a service.
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(TlsError::Verifier)?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Identity)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(TlsError::Identity)?;
        // gRPC clients (tonic, grpcurl) insist on negotiating HTTP/2.
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
            server: Arc::new(server),
        })
    }

    /// Accepts connections as a server that requires a client certificate from the CA.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.clone())
    }

    /// Connects as a client presenting this certificate, to a server whose certificate the CA
    /// signed for `server_name`.
    pub fn client(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Lets a `UserStore` call through only from a caller whose client certificate is for one of
/// the names given: the store serves the cache; the cache serves the gateway and `userctl`
/// (the bench reads through it). Health,
/// reflection and `CacheStats` stay open to any certificate of the stack (the dashboard's and
/// the bench's is `userctl`). Over plaintext there is no certificate and nothing to check.
#[derive(Debug, Clone, Copy)]
pub struct Callers(pub &'static [&'static str]);

impl tonic::service::Interceptor for Callers {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(certs) = request.peer_certs() else {
            return Ok(request);
        };
        let allowed = certs.first().is_some_and(|leaf| {
            webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| {
                self.0.iter().any(|name| {
                    ServerName::try_from(*name)
                        .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
        });
        if allowed {
            Ok(request)
        } else {
            Err(Status::permission_denied(format!(
                "this certificate may not call UserStore here; only {} may",
                self.0.join(" and ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_mean_plaintext_and_some_name_what_is_missing() {
        assert!(TlsArgs::default().load().expect("plaintext").is_none());
        let partial = TlsArgs {
            ca: Some("ca.crt".into()),
            ..TlsArgs::default()
        };
        let err = partial.load().expect_err("partial").to_string();
        assert!(err.contains("--tls-cert and --tls-key missing"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let args = TlsArgs {
            ca: Some("/nonexistent/ca.crt".into()),
            cert: Some("/nonexistent/store.crt".into()),
            key: Some("/nonexistent/store.key".into()),
        };
        let err = args.load().expect_err("missing files").to_string();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }
}
