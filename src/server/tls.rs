//! TLS for the gRPC port (rustls, through tonic): the server identity, the
//! client CA for mutual TLS, and reading the verified client
//! certificate's subject.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::tls::{read_certificates, read_private_key, PemError, TlsConfig};

/// Why the TLS settings cannot be used. Each names the `[tls]` key and
/// the file; none shows a key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert and tls.key must both be set")]
    HalfAPair,
    /// A file named by `key` (`tls.cert`, `tls.key`, `tls.client_ca`).
    #[error("{key}: {source}")]
    File {
        key: &'static str,
        #[source]
        source: PemError,
    },
    /// The key does not belong to the certificate, or rustls refuses the
    /// pair; the message carries rustls's reasons.
    #[error(
        "tls.cert {} and tls.key {} cannot be used together: {}",
        .cert.display(),
        .key.display(),
        error_chain(.source)
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The tonic TLS settings for `config`, or `None` for plaintext. The
/// files are read and the key checked against the certificate now, so a
/// mistake stops the start rather than the first handshake.
///
/// # Errors
/// A file cannot be read or parsed, or the key does not belong to the
/// certificate.
pub fn server_tls_config(config: &TlsConfig) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&config.cert, &config.key) else {
        if config.enabled() {
            return Err(TlsError::HalfAPair);
        }
        return Ok(None);
    };
    let file = |key: &'static str| move |source: PemError| TlsError::File { key, source };
    let read = |key: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsError::File {
            key,
            source: PemError::Read {
                path: path.to_path_buf(),
                source,
            },
        })
    };
    // Parsed first for clear messages; tonic takes the PEM text.
    read_certificates(cert_path).map_err(file("tls.cert"))?;
    read_private_key(key_path).map_err(file("tls.key"))?;
    let cert = read("tls.cert", cert_path)?;
    let key = read("tls.key", key_path)?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(Duration::from_millis(config.handshake_timeout_ms));
    if let Some(ca_path) = &config.client_ca {
        read_certificates(ca_path).map_err(file("tls.client_ca"))?;
        let ca = read("tls.client_ca", ca_path)?;
        tls = tls
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(!config.require_client_cert);
    }
    // Builds the acceptor once, which checks that the key matches.
    Server::builder()
        .tls_config(tls.clone())
        .map_err(|source| TlsError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            source,
        })?;
    Ok(Some(tls))
}

/// The first common name (CN) of a DER certificate's subject.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// An error and its sources, joined by `: `, for messages that must say
/// why (a TLS file or handshake that failed deep inside rustls).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_file() {
        let half = TlsConfig {
            key: Some("/nonexistent/server.key".into()),
            ..TlsConfig::default()
        };
        let error = server_tls_config(&half).unwrap_err();
        assert!(matches!(error, TlsError::HalfAPair), "{error:?}");
        assert_eq!(error.to_string(), "tls.cert and tls.key must both be set");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("server.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let missing = TlsConfig {
            cert: Some(empty.clone()),
            key: Some(dir.path().join("server.key")),
            ..TlsConfig::default()
        };
        let error = server_tls_config(&missing).unwrap_err();
        assert!(
            matches!(&error, TlsError::File { key: "tls.cert", source: PemError::NoCertificate { path } } if *path == empty),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "tls.cert: {}: no `-----BEGIN CERTIFICATE-----` block in this file",
                empty.display()
            )
        );
    }
}
