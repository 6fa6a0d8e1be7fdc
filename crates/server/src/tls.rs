//! The TLS identity of the server: a certificate given by the operator, or a
//! self-signed one made on first run and kept in the data directory.
//!
//! Owns certificate files and the rustls server configuration; nothing here
//! touches sockets.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::acme::{ACME_TLS_ALPN, Acme, CertResolver};
use crate::config::CertificateSource;

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const NAMES_FILE: &str = "cert-names.txt";

/// The certificate in use and how it came to be.
#[derive(Debug)]
pub struct Identity {
    pub server_config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, as `AA:BB:…`.
    pub fingerprint: String,
    /// Where the certificate was read from.
    pub cert_path: PathBuf,
    /// True when this run made a new self-signed certificate.
    pub generated: bool,
    /// True while browsers are expected to trust the certificate served: one
    /// given by the operator, or one from the ACME CA once it has arrived. A
    /// self-signed one is not, and Chromium refuses `turns:` with it.
    pub trusted: Arc<AtomicBool>,
    /// With `--acme`: the issuance and renewal the server must drive (taken
    /// by the server when it starts). The fields above then describe the
    /// self-signed certificate served until the CA's arrives.
    pub acme: Option<Acme>,
    /// With `--acme`: the names and the directory, for humans.
    pub acme_for: Option<String>,
}

/// Loads the configured certificate, or loads or makes the self-signed one.
pub fn load_identity(
    source: &CertificateSource,
    data_dir: &Path,
    names: &[String],
) -> anyhow::Result<Identity> {
    let (cert_path, key_path, generated) = match source {
        CertificateSource::Files { cert, key } => (cert.clone(), key.clone(), false),
        CertificateSource::SelfSigned | CertificateSource::Acme(_) => {
            let generated = ensure_self_signed(data_dir, names)?;
            (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE), generated)
        }
    };
    let chain = read_chain(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = chain
        .first()
        .map(|leaf| fingerprint(leaf.as_ref()))
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key_error = || {
        format!(
            "the key {} does not fit the certificate {}",
            key_path.display(),
            cert_path.display()
        )
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?
        .with_no_client_auth();
    let mut alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let (mut server_config, acme) = match source {
        CertificateSource::Acme(settings) => {
            let self_signed = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
                .with_context(key_error)?;
            let (acme, resolver) = Acme::new(settings, data_dir)?;
            alpn.push(ACME_TLS_ALPN.to_vec());
            let resolver = CertResolver::new(resolver, Arc::new(self_signed));
            (builder.with_cert_resolver(Arc::new(resolver)), Some(acme))
        }
        _ => (
            builder
                .with_single_cert(chain, key)
                .with_context(key_error)?,
            None,
        ),
    };
    server_config.alpn_protocols = alpn;
    Ok(Identity {
        server_config: Arc::new(server_config),
        fingerprint,
        cert_path,
        generated,
        trusted: Arc::new(AtomicBool::new(matches!(
            source,
            CertificateSource::Files { .. }
        ))),
        acme_for: match source {
            CertificateSource::Acme(settings) => Some(format!(
                "{} from {}",
                settings.domains.join(", "),
                settings.directory
            )),
            _ => None,
        },
        acme,
    })
}

/// The names the generated certificate covers: loopback, the host name, the domains.
pub fn self_signed_names(domains: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = host_name() {
        names.push(host);
    }
    for domain in domains {
        let domain = domain.trim().to_ascii_lowercase();
        if !domain.is_empty() {
            names.push(domain);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// SHA-256 of DER bytes as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Makes the certificate unless one for exactly these names is already kept.
/// Returns true when it made one.
fn ensure_self_signed(data_dir: &Path, names: &[String]) -> anyhow::Result<bool> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    let names_path = data_dir.join(NAMES_FILE);
    let wanted = names.join("\n");
    if cert_path.exists() && key_path.exists() {
        let kept = fs::read_to_string(&names_path).unwrap_or_default();
        if kept.trim() == wanted {
            return Ok(false);
        }
    }
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .context("cannot generate a self-signed certificate")?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    fs::write(&names_path, wanted)
        .with_context(|| format!("cannot write {}", names_path.display()))?;
    Ok(true)
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = fs::read(path)
        .with_context(|| format!("cannot read the certificate {}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the certificate {} is not valid PEM", path.display()))?;
    if chain.is_empty() {
        bail!(
            "the certificate file {} holds no certificate",
            path.display()
        );
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes =
        fs::read(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .with_context(|| format!("the key file {} holds no PEM private key", path.display()))
}

fn host_name() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.parse::<IpAddr>().is_err()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duet-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generates_once_then_reuses() -> anyhow::Result<()> {
        let dir = temp_dir("reuse");
        let names = self_signed_names(&[]);
        let first = load_identity(&CertificateSource::SelfSigned, &dir, &names)?;
        assert!(first.generated);
        let second = load_identity(&CertificateSource::SelfSigned, &dir, &names)?;
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.join(KEY_FILE))?.permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A new domain needs a new certificate.
        let third = load_identity(
            &CertificateSource::SelfSigned,
            &dir,
            &self_signed_names(&["call.example.org".to_owned()]),
        )?;
        assert!(third.generated);
        assert_ne!(third.fingerprint, first.fingerprint);
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn names_cover_loopback_and_domains() {
        let names = self_signed_names(&["Call.Example.org".to_owned()]);
        for name in ["localhost", "127.0.0.1", "::1", "call.example.org"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    #[test]
    fn a_missing_key_file_is_named_in_the_error() {
        let dir = temp_dir("missing");
        let source = CertificateSource::Files {
            cert: dir.join("nope.pem"),
            key: dir.join("nokey.pem"),
        };
        let error = load_identity(&source, &dir, &[])
            .err()
            .map(|e| format!("{e:#}"));
        assert!(error.unwrap_or_default().contains("nope.pem"));
    }
}
