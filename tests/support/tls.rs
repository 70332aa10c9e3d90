//! Calling the stack's internal services the way an outsider would: plaintext, over TLS with
//! no client certificate, with a certificate from another CA, or with one of the stack's own
//! certificates read from the project's home.

use std::{path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a test presents itself to a service of the stack.
pub enum Caller {
    /// `http://`: no TLS at all.
    Plaintext,
    /// TLS that trusts the stack's CA but presents no certificate.
    NoCertificate,
    /// A certificate and key (PEM) presented over TLS that trusts the stack's CA.
    Certificate { cert: Vec<u8>, key: Vec<u8> },
}

impl Caller {
    /// One of the stack's own certificates (`store`, `cache`, `gateway`, `userctl`).
    pub fn holder(tls_dir: &Path, name: &str) -> Self {
        Self::Certificate {
            cert: std::fs::read(tls_dir.join(format!("{name}.crt"))).expect("certificate"),
            key: std::fs::read(tls_dir.join(format!("{name}.key"))).expect("key"),
        }
    }

    /// A certificate for `name`, as good as the stack's in every way except that another CA
    /// signed it.
    pub fn from_another_ca(name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name
            .push(DnType::CommonName, "an impostor CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        Self::Certificate {
            cert: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
        }
    }
}

/// A lazily connected channel to `addr` (`http://127.0.0.1:PORT`, as `status` reports it),
/// checking over TLS that the server's certificate is for `server_name` and from the CA in
/// `tls_dir`. Failures show on the first call.
pub fn channel(addr: &str, server_name: &str, tls_dir: &Path, caller: &Caller) -> Channel {
    let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let ca = std::fs::read(tls_dir.join("ca.crt")).expect("the stack's CA");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(server_name);
    let endpoint = match caller {
        Caller::Plaintext => Endpoint::from_shared(format!("http://{rest}")).expect("address"),
        Caller::NoCertificate => Endpoint::from_shared(format!("https://{rest}"))
            .expect("address")
            .tls_config(tls)
            .expect("TLS config"),
        Caller::Certificate { cert, key } => Endpoint::from_shared(format!("https://{rest}"))
            .expect("address")
            .tls_config(tls.identity(Identity::from_pem(cert, key)))
            .expect("TLS config"),
    };
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}
