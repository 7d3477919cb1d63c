//! TLS for the registry's gRPC port, mutual TLS for agents, and `registry tls init`,
//! which writes a CA and certificates so TLS can be turned on in minutes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_common::fs::{ReadError, read};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to replace the certificates in {dir}")]
    Exists { path: PathBuf, dir: PathBuf },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The server side: our certificate and key; with a client CA, clients may present a
/// certificate signed by it (agents must; see `agent_service`).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TlsError> {
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(true);
    }
    Ok(config)
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, text).map_err(err)?;
    if private {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

fn params(name: &str, sans: Vec<String>) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Corral");
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    Ok(p)
}

/// Writes `ca.pem` + `ca.key`, `registry.pem` + `registry.key` (valid for `hosts`, plus
/// localhost and 127.0.0.1), and client certificates `agent.pem` + `agent.key` and
/// `admin.pem` + `admin.key`. Keys are mode 0600. The files written.
pub fn init(dir: &Path, hosts: &[String], force: bool) -> Result<Vec<PathBuf>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let names = ["ca", "registry", "agent", "admin"];
    if !force {
        for n in names {
            let path = dir.join(format!("{n}.pem"));
            if path.exists() {
                return Err(TlsError::Exists {
                    path,
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    let mut ca_params = params("Corral CA", Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_pem_key = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let mut written = Vec::new();
    let mut out = |name: &str, cert: String, key: String| -> Result<(), TlsError> {
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        write(&c, &cert, false)?;
        write(&k, &key, true)?;
        written.push(c);
        written.push(k);
        Ok(())
    };
    out("ca", ca.pem(), ca_pem_key)?;
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    sans.extend(hosts.iter().cloned());
    sans.dedup();
    let leaves: [(&str, Vec<String>, ExtendedKeyUsagePurpose); 3] = [
        ("registry", sans, ExtendedKeyUsagePurpose::ServerAuth),
        (
            "agent",
            vec!["corral-agent".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        (
            "admin",
            vec!["corral-admin".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ];
    for (name, sans, usage) in leaves {
        let mut p = params(&format!("corral {name}"), sans)?;
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        out(name, cert.pem(), key.serialize_pem())?;
    }
    Ok(written)
}
