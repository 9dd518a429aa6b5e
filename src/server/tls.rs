//! TLS for the gRPC port (rustls, through tonic): the server identity, the
//! client CA for mutual TLS, and reading the verified client
//! certificate's subject.

use std::time::Duration;

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::tls::{read_certificates, read_private_key, TlsConfig};

/// The tonic TLS settings for `config`, or `None` for plaintext. The
/// files are read and the key checked against the certificate now, so a
/// mistake stops the start rather than the first handshake.
///
/// # Errors
/// A file cannot be read or parsed, or the key does not belong to the
/// certificate; the message names the file and never shows a key.
pub fn server_tls_config(config: &TlsConfig) -> Result<Option<ServerTlsConfig>, String> {
    let (Some(cert_path), Some(key_path)) = (&config.cert, &config.key) else {
        if config.enabled() {
            return Err("tls.cert and tls.key must both be set".into());
        }
        return Ok(None);
    };
    // Parsed first for clear messages; tonic takes the PEM text.
    read_certificates(cert_path).map_err(|e| format!("tls.cert: {e}"))?;
    read_private_key(key_path).map_err(|e| format!("tls.key: {e}"))?;
    let cert = std::fs::read(cert_path).map_err(|e| format!("tls.cert: cannot read {}: {e}", cert_path.display()))?;
    let key = std::fs::read(key_path).map_err(|e| format!("tls.key: cannot read {}: {e}", key_path.display()))?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(Duration::from_millis(config.handshake_timeout_ms));
    if let Some(ca_path) = &config.client_ca {
        read_certificates(ca_path).map_err(|e| format!("tls.client_ca: {e}"))?;
        let ca =
            std::fs::read(ca_path).map_err(|e| format!("tls.client_ca: cannot read {}: {e}", ca_path.display()))?;
        tls = tls
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(!config.require_client_cert);
    }
    // Builds the acceptor once, which checks that the key matches.
    Server::builder().tls_config(tls.clone()).map_err(|e| {
        format!(
            "tls.cert {} and tls.key {} cannot be used together: {}",
            cert_path.display(),
            key_path.display(),
            error_chain(&e)
        )
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
