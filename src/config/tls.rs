//! `[tls]`: TLS on the gRPC port, optional client certificates (mTLS), and
//! where the ports may listen without them.
//!
//! Without `cert` and `key` the gRPC port is plaintext, which is allowed on
//! a loopback address only unless `allow_plaintext_non_loopback` is set.
//! The metrics endpoint is plain HTTP without credentials: a non-loopback
//! `metrics_listen` needs `auth.allow_metrics_non_loopback`.
//!
//! ```toml
//! [tls]
//! cert = "/etc/airbag/tls/server.pem"
//! key = "/etc/airbag/tls/server.key"
//! # client_ca = "/etc/airbag/tls/clients-ca.pem"   # mTLS
//! # require_client_cert = true
//! # allow_plaintext_non_loopback = false
//! # handshake_timeout_ms = 10000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::ConfigProblem;

/// TLS settings of the gRPC port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM (leaf first).
    pub cert: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified
    /// against: turns on mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse connections without a client certificate.
    /// When false, such clients may still authenticate with a token.
    pub require_client_cert: bool,
    /// Serve plaintext gRPC on a non-loopback address anyway (say, behind
    /// a proxy that terminates TLS on the same host).
    pub allow_plaintext_non_loopback: bool,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            require_client_cert: true,
            allow_plaintext_non_loopback: false,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// Longest handshake timeout accepted.
const MAX_HANDSHAKE_TIMEOUT_MS: u64 = 600_000;

impl TlsConfig {
    /// True when the gRPC port serves TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// True when client certificates are verified.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Every problem with the TLS settings: missing halves, unreadable
    /// files, PEM files without what they should hold.
    pub(super) fn problems(&self, out: &mut Vec<ConfigProblem>) {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                if let Err(e) = read_certificates(cert) {
                    out.push(ConfigProblem {
                        key: "tls.cert",
                        message: e.to_string(),
                    });
                }
                if let Err(e) = read_private_key(key) {
                    out.push(ConfigProblem {
                        key: "tls.key",
                        message: e.to_string(),
                    });
                }
            }
            (Some(_), None) => out.push(ConfigProblem {
                key: "tls.key",
                message: "missing: tls.cert is set, so tls.key must name the server's private key (PEM)".into(),
            }),
            (None, Some(_)) => out.push(ConfigProblem {
                key: "tls.cert",
                message: "missing: tls.key is set, so tls.cert must name the server's certificate (PEM)".into(),
            }),
            (None, None) => {}
        }
        if let Some(ca) = &self.client_ca {
            if !self.enabled() {
                out.push(ConfigProblem {
                    key: "tls.client_ca",
                    message: "client certificates need TLS: set tls.cert and tls.key too".into(),
                });
            }
            if let Err(e) = read_certificates(ca) {
                out.push(ConfigProblem {
                    key: "tls.client_ca",
                    message: e.to_string(),
                });
            }
        }
        if !(1..=MAX_HANDSHAKE_TIMEOUT_MS).contains(&self.handshake_timeout_ms) {
            out.push(ConfigProblem {
                key: "tls.handshake_timeout_ms",
                message: format!(
                    "must be between 1 and {MAX_HANDSHAKE_TIMEOUT_MS}, got {}",
                    self.handshake_timeout_ms
                ),
            });
        }
    }
}

/// Why a PEM file (a certificate chain, a CA bundle, a private key) cannot
/// be used. Each names the file; none shows what is in it.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a file", .path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is {size} bytes; a PEM file may be at most {MAX_PEM_BYTES}", .path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}: not a valid PEM certificate file: {source}", .path.display())]
    CertificatePem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no `-----BEGIN CERTIFICATE-----` block in this file", .path.display())]
    NoCertificate { path: PathBuf },
    /// `index` counts from 1.
    #[error("{}: certificate {index} does not parse: {source}", .path.display())]
    Certificate {
        path: PathBuf,
        index: usize,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error(
        "{}: no `-----BEGIN PRIVATE KEY-----` (or RSA / EC PRIVATE KEY) block in this file",
        .path.display()
    )]
    NoPrivateKey { path: PathBuf },
    /// The PEM parser's own error is left out: it may quote the key.
    #[error("{}: not a valid PEM private key file", .path.display())]
    PrivateKey { path: PathBuf },
}

/// The certificates of a PEM file, checked to be there and to parse.
///
/// # Errors
/// The file cannot be read, or holds no `CERTIFICATE` block, or a block
/// that is not valid base64 or not a certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::CertificatePem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    for (i, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|source| PemError::Certificate {
            path: path.to_path_buf(),
            index: i + 1,
            source,
        })?;
    }
    Ok(certs)
}

/// The private key of a PEM file.
///
/// # Errors
/// The file cannot be read or holds no private key; the error never
/// shows the file's contents.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read_pem_file(path)?;
    let path = path.to_path_buf();
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::NoPrivateKey { path },
        _ => PemError::PrivateKey { path },
    })
}

/// Largest PEM file read (a certificate bundle is a few hundred KiB at most).
const MAX_PEM_BYTES: u64 = 16 << 20;

fn read_pem_file(path: &Path) -> Result<Vec<u8>, PemError> {
    let read = |source| PemError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(PemError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(PemError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    std::fs::read(path).map_err(read)
}

/// Problems with where the ports listen: plaintext gRPC on a non-loopback
/// address without the override, metrics on a non-loopback address
/// without the override. Checked on the configured addresses by
/// [`super::ServiceConfig::validate`] and on the bound ones at start.
pub fn exposure_problems(
    grpc: SocketAddr,
    metrics: SocketAddr,
    tls: &TlsConfig,
    allow_metrics_non_loopback: bool,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if !tls.enabled() && !grpc.ip().is_loopback() && !tls.allow_plaintext_non_loopback {
        out.push(ConfigProblem {
            key: "listen",
            message: format!(
                "{grpc} is not a loopback address and TLS is off: tokens and ticks would cross the network in \
                 plaintext. Set tls.cert and tls.key (see README, Security), or set \
                 tls.allow_plaintext_non_loopback = true (flag --allow-plaintext-non-loopback) to serve \
                 plaintext anyway"
            ),
        });
    }
    if !metrics.ip().is_loopback() && !allow_metrics_non_loopback {
        out.push(ConfigProblem {
            key: "metrics_listen",
            message: format!(
                "{metrics} is not a loopback address and the metrics endpoint has no TLS or credentials: \
                 set auth.allow_metrics_non_loopback = true to serve it there anyway"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(problems: &[ConfigProblem]) -> Vec<&'static str> {
        problems.iter().map(|p| p.key).collect()
    }

    #[test]
    fn half_a_key_pair_is_named() {
        let mut out = Vec::new();
        TlsConfig {
            cert: Some("/nonexistent/server.pem".into()),
            ..TlsConfig::default()
        }
        .problems(&mut out);
        assert_eq!(keys(&out), ["tls.key"]);
        assert!(out[0].message.contains("tls.cert is set"), "{}", out[0]);
    }

    #[test]
    fn unreadable_and_empty_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mut out = Vec::new();
        TlsConfig {
            cert: Some(empty.clone()),
            key: Some(dir.path().join("missing.key")),
            client_ca: Some(empty.clone()),
            handshake_timeout_ms: 0,
            ..TlsConfig::default()
        }
        .problems(&mut out);
        assert_eq!(
            keys(&out),
            ["tls.cert", "tls.key", "tls.client_ca", "tls.handshake_timeout_ms"]
        );
        assert!(
            out[0].message.contains("empty.pem: no `-----BEGIN CERTIFICATE-----`"),
            "{}",
            out[0]
        );
        assert!(out[1].message.starts_with("cannot read "), "{}", out[1]);
        assert!(out[1].message.contains("missing.key"), "{}", out[1]);
    }

    #[test]
    fn a_private_key_error_does_not_show_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = read_private_key(&bad).unwrap_err();
        assert!(matches!(error, PemError::PrivateKey { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("bad.key"), "{message}");
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_allowed() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let v6_local: SocketAddr = "[::1]:50051".parse().unwrap();
        let plain = TlsConfig::default();
        let problems = exposure_problems(any, local, &plain, false);
        assert_eq!(keys(&problems), ["listen"]);
        assert!(
            problems[0].message.contains("tls.allow_plaintext_non_loopback"),
            "{}",
            problems[0]
        );
        assert!(exposure_problems(v6_local, local, &plain, false).is_empty());
        let allowed = TlsConfig {
            allow_plaintext_non_loopback: true,
            ..TlsConfig::default()
        };
        assert!(exposure_problems(any, local, &allowed, false).is_empty());
        let with_tls = TlsConfig {
            cert: Some("c".into()),
            key: Some("k".into()),
            ..TlsConfig::default()
        };
        assert!(exposure_problems(any, local, &with_tls, false).is_empty());
        assert_eq!(
            keys(&exposure_problems(local, any, &with_tls, false)),
            ["metrics_listen"]
        );
        assert!(exposure_problems(local, any, &with_tls, true).is_empty());
    }
}
