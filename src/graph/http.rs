//! The one HTTP client used for tokens and Graph calls alike.
//!
//! Trust: the platform's roots, plus — when `SSL_CERT_FILE` is set — the PEM certificates
//! in that file. Both are added explicitly: left to itself, the platform verifier reads
//! `SSL_CERT_FILE` *instead of* the system store, which would drop the public roots
//! that `login.microsoftonline.com` and `graph.microsoft.com` need.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variable naming an extra PEM bundle to trust.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// Where Linux distributions keep the system bundle (the order Go's crypto/x509 uses).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Idle pooled connections are dropped before servers usually close them, so that a
/// request is rarely written into a connection the server is closing (which would make
/// a POST's outcome ambiguous for no reason).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot read the CA bundle {}: {source}", path.display())]
    ReadCaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA bundle {} holds no readable PEM certificate", path.display())]
    NoCertificates { path: PathBuf },
    #[error("the CA bundle {} is not valid PEM: {source}", path.display())]
    InvalidCaFile {
        path: PathBuf,
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// The client for the process: platform roots, plus `SSL_CERT_FILE` when set.
/// `timeout` bounds every request that does not set its own (token requests).
pub fn build_client(timeout: Duration) -> Result<reqwest::Client, HttpClientError> {
    let extra = std::env::var_os(SSL_CERT_FILE)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    build_client_with_ca_file(timeout, extra.as_deref())
}

/// As [`build_client`], with the extra bundle given explicitly.
pub fn build_client_with_ca_file(
    timeout: Duration,
    extra_ca_file: Option<&Path>,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("guestreset/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // Neither Graph nor the token service redirects; a redirect would carry the bearer token.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = extra_ca_file {
        let mut roots = system_roots();
        let extra = read_pem_bundle(path)?;
        tracing::info!(
            ca_file = %path.display(),
            extra_certificates = extra.len(),
            system_certificates = roots.len(),
            "trusting the system roots and the extra CA bundle"
        );
        roots.extend(extra);
        builder = builder.tls_certs_only(roots);
    }
    builder.build().map_err(HttpClientError::Build)
}

fn read_pem_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpClientError> {
    let pem = std::fs::read(path).map_err(|source| HttpClientError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
        HttpClientError::InvalidCaFile {
            path: path.to_owned(),
            source,
        }
    })?;
    if certs.is_empty() {
        return Err(HttpClientError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The system bundle, read from its well-known place (never from `SSL_CERT_FILE`).
fn system_roots() -> Vec<reqwest::Certificate> {
    for candidate in SYSTEM_BUNDLES {
        let path = Path::new(candidate);
        if !path.is_file() {
            continue;
        }
        match read_pem_bundle(path) {
            Ok(certs) => return certs,
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable system CA bundle"),
        }
    }
    tracing::warn!("no system CA bundle found; only the extra CA bundle is trusted");
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let err = build_client_with_ca_file(
            Duration::from_secs(5),
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .unwrap_err();
        assert!(matches!(err, HttpClientError::ReadCaFile { .. }));
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("graph-http-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = build_client_with_ca_file(Duration::from_secs(5), Some(&path)).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(
            matches!(
                err,
                HttpClientError::NoCertificates { .. } | HttpClientError::InvalidCaFile { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn client_without_extra_roots_builds() {
        build_client_with_ca_file(Duration::from_secs(5), None).unwrap();
    }
}
