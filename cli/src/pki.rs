//! The stack's own certificate authority: one per project, made by the first `up`, which signs a
//! certificate for each party inside the stack. The services check each other by these
//! (docs/design.md, "Mutual TLS inside the stack"). Only generation and file names live here;
//! [`crate::home`] writes and forgets the files.
//!
//! | holder | its certificate is for | used as |
//! | --- | --- | --- |
//! | `store` | `store` | server (to the cache); client only for its own health check |
//! | `cache` | `cache` | server (to the gateway, dashboard, bench) and client (to the store) |
//! | `gateway` | `gateway` | client (to the cache); its own ports stay plaintext |
//! | `userctl` | `userctl` | client: the dashboard, the bench, `status` health checks |

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::stack::Service;

/// The CA's certificate, which every holder trusts.
pub const CA_CERT: &str = "ca.crt";
/// The CA's key: kept beside it so the stack's certificates can be reissued from it by hand.
pub const CA_KEY: &str = "ca.key";

/// Who holds a certificate of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Store,
    Cache,
    Gateway,
    /// `userctl` itself: the dashboard, the bench, health checks.
    Userctl,
}

impl Holder {
    pub const ALL: [Holder; 4] = [Self::Store, Self::Cache, Self::Gateway, Self::Userctl];

    /// The name its certificate is for, which the other end checks.
    pub fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Cache => "cache",
            Self::Gateway => "gateway",
            Self::Userctl => "userctl",
        }
    }

    pub fn cert_file(self) -> &'static str {
        match self {
            Self::Store => "store.crt",
            Self::Cache => "cache.crt",
            Self::Gateway => "gateway.crt",
            Self::Userctl => "userctl.crt",
        }
    }

    pub fn key_file(self) -> &'static str {
        match self {
            Self::Store => "store.key",
            Self::Cache => "cache.key",
            Self::Gateway => "gateway.key",
            Self::Userctl => "userctl.key",
        }
    }

    /// The holder a `usersvc` service is; None for Redis and Postgres.
    pub fn of(service: Service) -> Option<Self> {
        match service {
            Service::Store => Some(Self::Store),
            Service::Cache => Some(Self::Cache),
            Service::Gateway => Some(Self::Gateway),
            Service::Redis | Service::Postgres | Service::Proxy => None,
        }
    }

    /// The name a client checks when it calls this holder over TLS; None for the gateway,
    /// whose ports are the stack's plaintext front door, and for `userctl`, which serves nothing.
    pub fn server_name(self) -> Option<&'static str> {
        match self {
            Self::Store | Self::Cache => Some(self.name()),
            Self::Gateway | Self::Userctl => None,
        }
    }

    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        match self {
            // The store calls no one, but its container's health check presents its
            // certificate: it must be usable as a client too.
            Self::Store | Self::Cache => vec![ServerAuth, ClientAuth],
            Self::Gateway | Self::Userctl => vec![ClientAuth],
        }
    }
}

/// Every file of a complete set, in a fixed order (the runtimes hash them in it).
pub fn files() -> Vec<&'static str> {
    let mut files = vec![CA_CERT, CA_KEY];
    for holder in Holder::ALL {
        files.push(holder.cert_file());
        files.push(holder.key_file());
    }
    files
}

/// A new CA for `project` and a certificate for every holder: (file name, PEM) in
/// [`files`] order. Keys are ECDSA P-256.
pub fn issue(project: &str) -> Result<Vec<(&'static str, String)>, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("userctl {project} stack CA"));
    // It signs the holders' certificates and nothing else, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut files = vec![(CA_CERT, ca_cert.pem()), (CA_KEY, ca_key.serialize_pem())];
    let issuer = Issuer::new(ca, ca_key);
    for holder in Holder::ALL {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![holder.name().to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, holder.name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = holder.usages();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        files.push((holder.cert_file(), cert.pem()));
        files.push((holder.key_file(), key.serialize_pem()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_every_file_once_and_each_issue_is_new() {
        let first = issue("t").expect("issue");
        let names: Vec<&str> = first.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, files());
        assert!(first.iter().all(|(name, pem)| {
            pem.starts_with("-----BEGIN ")
                && (name.ends_with(".key") == pem.contains("PRIVATE KEY"))
        }));
        let second = issue("t").expect("issue");
        assert_ne!(first[0].1, second[0].1, "a new CA each time");
    }
}
