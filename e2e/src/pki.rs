//! The certificates and keys a control plane needs, made fresh for every cluster.
//!
//! One CA signs the apiserver's serving certificate and every client certificate; the
//! apiserver trusts client certificates from that CA, so a component's identity is its
//! certificate's subject (CN = user, O = groups), exactly as in a kubeadm cluster. A separate
//! key signs service-account tokens.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// A user the apiserver authenticates by client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl ClientIdentity {
    pub fn new(user: &str, groups: &[&str]) -> Self {
        Self {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// Members of `system:masters` bypass authorization: the cluster administrator.
    pub fn admin() -> Self {
        Self::new("modelfleet-admin", &["system:masters"])
    }
}

/// PEM files of one client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub identity: ClientIdentity,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every PEM file of a cluster, written into one directory, and the CA that signs more.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
    dir: PathBuf,
    ca_pem: String,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

impl Pki {
    /// Makes a CA, a serving certificate valid for `serving_names` (IPs or DNS names) and
    /// the service-account signing key, and writes them under `dir`.
    pub fn create(dir: &Path, serving_names: &[String]) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the PKI directory", e))?;

        let ca_key = KeyPair::generate().map_err(Error::pki)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(Error::pki)?;
        ca_params.distinguished_name = distinguished_name("modelfleet-local-ca", &[]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(Error::pki)?;

        let mut serving_params =
            CertificateParams::new(serving_names.to_vec()).map_err(Error::pki)?;
        serving_params.distinguished_name = distinguished_name("kube-apiserver", &[]);
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate().map_err(Error::pki)?;
        let serving_cert = serving_params
            .signed_by(&serving_key, &Issuer::from_params(&ca_params, &ca_key))
            .map_err(Error::pki)?;

        let sa_key = KeyPair::generate().map_err(Error::pki)?;

        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
            dir: dir.to_path_buf(),
            ca_pem: ca_cert.pem(),
            ca_params,
            ca_key,
        };
        write(&pki.ca_cert, &pki.ca_pem)?;
        write(&pki.serving_cert, &serving_cert.pem())?;
        write(&pki.serving_key, &serving_key.serialize_pem())?;
        write(&pki.service_account_key, &sa_key.serialize_pem())?;
        write(&pki.service_account_pub, &sa_key.public_key_pem())?;
        Ok(pki)
    }

    /// Issues a client certificate for `identity`, written as `<file_stem>.crt/.key`.
    pub fn issue_client(
        &self,
        identity: &ClientIdentity,
        file_stem: &str,
    ) -> Result<ClientCredentials, Error> {
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::pki)?;
        let groups: Vec<&str> = identity.groups.iter().map(String::as_str).collect();
        params.distinguished_name = distinguished_name(&identity.user, &groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(Error::pki)?;
        let cert = params.signed_by(&key, &issuer).map_err(Error::pki)?;
        let credentials = ClientCredentials {
            identity: identity.clone(),
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        write(&credentials.cert, &cert.pem())?;
        write(&credentials.key, &key.serialize_pem())?;
        Ok(credentials)
    }

    /// The CA certificate, PEM encoded (what a client must trust).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

fn distinguished_name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    for org in organizations {
        name.push(DnType::OrganizationName, *org);
    }
    name
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::io(&format!("writing {}", path.display()), e))
}
