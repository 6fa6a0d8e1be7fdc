//! Certificates from an ACME CA (Let's Encrypt, or a test CA such as pebble),
//! obtained and renewed over TLS-ALPN-01 on the HTTPS port itself.
//!
//! Owns the ACME account and certificate cache (in `DATA_DIR/acme`), the task
//! that drives issuance and renewal, and the certificate resolver of the HTTPS
//! port: the ACME certificate once there is one, the self-signed certificate
//! until then, and the challenge certificate to a CA validating TLS-ALPN-01.
//! The protocol itself (orders, challenges, renewal at two thirds of the
//! lifetime, back-off after failures) is `rustls-acme`'s.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use futures_util::StreamExt;
use rustls::ClientConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::caches::DirCache;
use rustls_acme::{AcmeConfig, AcmeState, EventOk, ResolvesServerCertAcme};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;

use crate::config::AcmeSettings;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The issuance and renewal of one certificate, to be driven by [`Acme::run`].
pub struct Acme {
    state: AcmeState<std::io::Error>,
    domains: String,
    directory: String,
}

impl fmt::Debug for Acme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acme")
            .field("domains", &self.domains)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// Prepares the ACME client; nothing is sent until [`Acme::run`].
    /// Returns it with the resolver that serves what it obtains.
    pub fn new(
        settings: &AcmeSettings,
        data_dir: &Path,
    ) -> anyhow::Result<(Self, Arc<ResolvesServerCertAcme>)> {
        let cache_dir = data_dir.join("acme");
        fs::create_dir_all(&cache_dir).with_context(|| {
            format!(
                "cannot create the ACME cache directory {}",
                cache_dir.display()
            )
        })?;
        let config = match &settings.directory_ca {
            Some(path) => AcmeConfig::new_with_client_config(
                &settings.domains,
                directory_client_config(path)?,
            ),
            None => AcmeConfig::new(&settings.domains),
        };
        let mut config = config
            .directory(&settings.directory)
            .cache(DirCache::new(cache_dir));
        if let Some(contact) = &settings.contact {
            config = config.contact_push(contact);
        }
        let state = config.state();
        let resolver = state.resolver();
        Ok((
            Self {
                state,
                domains: settings.domains.join(", "),
                directory: settings.directory.clone(),
            },
            resolver,
        ))
    }

    /// Obtains the certificate, then renews it, until `shutdown`. `trusted`
    /// turns true once a certificate from the CA is served (from the cache or new).
    pub async fn run(mut self, trusted: Arc<AtomicBool>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let event = tokio::select! {
                event = self.state.next() => event,
                _ = shutdown.changed() => return,
            };
            match event {
                Some(Ok(EventOk::DeployedNewCert)) => {
                    trusted.store(true, Ordering::Relaxed);
                    tracing::info!(domains = %self.domains, directory = %self.directory, "obtained a new certificate over ACME and now serve it");
                }
                Some(Ok(EventOk::DeployedCachedCert)) => {
                    trusted.store(true, Ordering::Relaxed);
                    tracing::info!(domains = %self.domains, "serving the ACME certificate kept in the data directory");
                }
                Some(Ok(event)) => tracing::debug!(?event, "ACME"),
                Some(Err(error)) => tracing::warn!(
                    domains = %self.domains,
                    directory = %self.directory,
                    "could not obtain a certificate over ACME ({error}); the current certificate stays in use and Duet tries again"
                ),
                None => return,
            }
        }
    }
}

/// A client configuration that trusts only the CA in `path`, for the directory's HTTPS.
fn directory_client_config(path: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let bytes = fs::read(path)
        .with_context(|| format!("cannot read the ACME directory CA {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&bytes) {
        let certificate = certificate.with_context(|| {
            format!("the ACME directory CA {} is not valid PEM", path.display())
        })?;
        roots.add(certificate).with_context(|| {
            format!(
                "the ACME directory CA {} holds an unusable certificate",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        anyhow::bail!(
            "the ACME directory CA {} holds no certificate",
            path.display()
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate of the HTTPS port under `--acme`.
#[derive(Debug)]
pub struct CertResolver {
    acme: Arc<ResolvesServerCertAcme>,
    /// Served until the CA's certificate arrives.
    fallback: Arc<CertifiedKey>,
}

impl CertResolver {
    pub fn new(acme: Arc<ResolvesServerCertAcme>, fallback: Arc<CertifiedKey>) -> Self {
        Self { acme, fallback }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|protocol| protocol == ACME_TLS_ALPN));
        if challenge {
            // Only the challenge certificate answers a validation; no fallback.
            return self.acme.resolve(hello);
        }
        self.acme
            .resolve(hello)
            .or_else(|| Some(Arc::clone(&self.fallback)))
    }
}
