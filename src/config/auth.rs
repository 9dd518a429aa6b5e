//! `[auth]`: who may call what. Principals are bearer tokens (configured
//! by the SHA-256 of the token, never the token itself) and, with mutual
//! TLS, client certificate subjects; each has one or more [`Role`]s.
//!
//! Auth is off only when no credential is configured and the gRPC port is
//! plaintext on a loopback address; a server with TLS or on another
//! address must have credentials ([`auth_problems`]).
//!
//! ```toml
//! [auth]
//! # token_file = "/etc/airbag/tokens.toml"   # more [[tokens]], same form
//! [[auth.tokens]]
//! name = "feed-a"                 # shown in logs instead of the token
//! sha256 = "<64 hex digits: `airbag token hash`>"
//! roles = ["ingest"]
//! [[auth.certificates]]
//! subject = "risk-desk.example"   # the client certificate's subject CN
//! roles = ["subscribe", "admin"]
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ConfigProblem;

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `Ingest.Ingest`.
    Ingest,
    /// `Alerts.Subscribe`.
    Subscribe,
    /// `RuleAdmin`: list, validate, reload, status.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Subscribe, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Subscribe => "subscribe",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of roles.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        Roles(iter.into_iter().fold(0, |bits, r| bits | r.bit()))
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| self.contains(**r))
            .map(|r| r.name())
            .collect();
        if names.is_empty() {
            f.write_str("no roles")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// A bearer token, as configured: its name and the SHA-256 of the token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it; logs and errors name the principal by this.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
    pub roles: Vec<Role>,
}

/// A client certificate subject (its CN) and its roles.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    pub subject: String,
    pub roles: Vec<Role>,
}

/// The `[auth]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens.
    pub tokens: Vec<TokenEntry>,
    /// A TOML file of more `[[tokens]]`, read at start.
    pub token_file: Option<PathBuf>,
    /// Client certificate subjects (needs `tls.client_ca`).
    pub certificates: Vec<CertificateEntry>,
    /// Serve the metrics endpoint (plain HTTP, no credentials) on a
    /// non-loopback address.
    pub allow_metrics_non_loopback: bool,
}

/// A token ready to compare against: its name, hash and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCredential {
    pub name: String,
    pub sha256: [u8; 32],
    pub roles: Roles,
}

/// A certificate subject ready to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectCredential {
    pub subject: String,
    pub roles: Roles,
}

/// Every credential the server accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialList {
    pub tokens: Vec<TokenCredential>,
    pub subjects: Vec<SubjectCredential>,
}

impl CredentialList {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.subjects.is_empty()
    }
}

/// The token file: `[[tokens]]` tables only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// Largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 16 << 20;

impl AuthConfig {
    /// True when any credential is configured (in the file or the token
    /// file), without reading the token file.
    pub fn has_credentials(&self) -> bool {
        !self.tokens.is_empty() || !self.certificates.is_empty() || self.token_file.is_some()
    }

    /// Reads the token file and checks every entry: names, hashes, roles,
    /// duplicates.
    ///
    /// # Errors
    /// Every problem found; token hashes are quoted only by principal
    /// name.
    pub fn credentials(&self) -> Result<CredentialList, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut entries: Vec<(&'static str, TokenEntry)> =
            self.tokens.iter().map(|t| ("auth.tokens", t.clone())).collect();
        if let Some(path) = &self.token_file {
            match read_token_file(path) {
                Ok(more) if more.is_empty() => problems.push(ConfigProblem {
                    key: "auth.token_file",
                    message: format!("{} has no [[tokens]] tables", path.display()),
                }),
                Ok(more) => entries.extend(more.into_iter().map(|t| ("auth.token_file", t))),
                Err(e) => problems.push(ConfigProblem {
                    key: "auth.token_file",
                    message: e.to_string(),
                }),
            }
        }
        let mut list = CredentialList::default();
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for (key, entry) in entries {
            let mut problem = |message: String| problems.push(ConfigProblem { key, message });
            let name = entry.name.trim();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                problem(format!(
                    "token name `{}` must be 1 to 128 printable characters",
                    entry.name.escape_default()
                ));
                continue;
            }
            if !names.insert(name.to_string()) {
                problem(format!("token name `{name}` is used twice"));
            }
            if entry.roles.is_empty() {
                problem(format!("token `{name}` has no roles (ingest, subscribe, admin)"));
            }
            match parse_sha256(&entry.sha256) {
                Ok(sha256) => {
                    if !hashes.insert(sha256) {
                        problem(format!("token `{name}` has the same sha256 as another token"));
                    }
                    list.tokens.push(TokenCredential {
                        name: name.to_string(),
                        sha256,
                        roles: entry.roles.iter().copied().collect(),
                    });
                }
                Err(why) => problem(format!("token `{name}`: sha256 {why}")),
            }
        }
        let mut subjects = HashSet::new();
        for entry in &self.certificates {
            let mut problem = |message: String| {
                problems.push(ConfigProblem {
                    key: "auth.certificates",
                    message,
                })
            };
            if entry.subject.is_empty() || entry.subject.chars().any(char::is_control) {
                problem(format!(
                    "subject `{}` must be a certificate's common name",
                    entry.subject.escape_default()
                ));
                continue;
            }
            if !subjects.insert(entry.subject.clone()) {
                problem(format!("subject `{}` is listed twice", entry.subject));
            }
            if entry.roles.is_empty() {
                problem(format!(
                    "subject `{}` has no roles (ingest, subscribe, admin)",
                    entry.subject
                ));
            }
            list.subjects.push(SubjectCredential {
                subject: entry.subject.clone(),
                roles: entry.roles.iter().copied().collect(),
            });
        }
        if problems.is_empty() {
            Ok(list)
        } else {
            Err(problems)
        }
    }
}

/// Problems with auth as a whole: certificate subjects without mutual TLS,
/// and a server that needs credentials (TLS, or a non-loopback address)
/// but has none.
pub(super) fn auth_problems(
    auth: &AuthConfig,
    tls: &super::tls::TlsConfig,
    listen_loopback: bool,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if !auth.certificates.is_empty() && !tls.mutual() {
        out.push(ConfigProblem {
            key: "auth.certificates",
            message: "client certificates are verified only with mutual TLS: set tls.client_ca".into(),
        });
    }
    if !auth.has_credentials() && (tls.enabled() || !listen_loopback) {
        out.push(ConfigProblem {
            key: "auth",
            message: "no credentials configured; auth is off only for plaintext on a loopback address. Add \
                      [[auth.tokens]] (hash a token with `airbag token hash`) or, with tls.client_ca, \
                      [[auth.certificates]]"
                .into(),
        });
    }
    out
}

/// The SHA-256 of a token, as the config holds it (64 lower-case hex
/// digits).
pub fn token_sha256_hex(token: &[u8]) -> String {
    Sha256::digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a configured token hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("must be 64 hex digits (the SHA-256 of the token, from `airbag token hash`), got {0} characters")]
    Length(usize),
    /// The position counts characters from 1.
    #[error("has a character that is not a hex digit at position {0}")]
    NotHex(usize),
}

fn parse_sha256(text: &str) -> Result<[u8; 32], HashError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(HashError::Length(text.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
            _ => return Err(HashError::NotHex(i * 2 + 1)),
        }
    }
    Ok(out)
}

/// Why the token file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is {size} bytes; the limit is {MAX_TOKEN_FILE_BYTES}", .path.display())]
    TooLarge { path: PathBuf, size: u64 },
    /// Not TOML, an unknown key or a value of the wrong type, at a
    /// 1-based line and column.
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

fn read_token_file(path: &Path) -> Result<Vec<TokenEntry>, TokenFileError> {
    let read = |source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(TokenFileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let file: TokenFile = toml::from_str(&text).map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map_or((0, 0), |s| crate::rules::load::line_col(&text, s.start));
        TokenFileError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_string(),
        }
    })?;
    Ok(file.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, sha256: &str, roles: &[Role]) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            sha256: sha256.into(),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            token_sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let parsed = parse_sha256(&token_sha256_hex(b"abc").to_uppercase()).unwrap();
        assert_eq!(parsed[0], 0xba);
        assert_eq!(parsed[31], 0xad);
        assert_eq!(parse_sha256("abc"), Err(HashError::Length(3)));
        assert_eq!(parse_sha256(&"0g".repeat(32)), Err(HashError::NotHex(1)));
    }

    #[test]
    fn bad_entries_are_named_without_showing_hashes() {
        let good = token_sha256_hex(b"one");
        let auth = AuthConfig {
            tokens: vec![
                entry("feed", &good, &[Role::Ingest]),
                entry("feed", &token_sha256_hex(b"two"), &[Role::Admin]),
                entry("short", "abc123", &[Role::Admin]),
                entry("nohex", &"zz".repeat(32), &[Role::Admin]),
                entry("copy", &good, &[]),
            ],
            certificates: vec![CertificateEntry {
                subject: String::new(),
                roles: vec![Role::Admin],
            }],
            ..AuthConfig::default()
        };
        let problems = auth.credentials().unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "auth.tokens: token name `feed` is used twice",
                "auth.tokens: token `short`: sha256 must be 64 hex digits (the SHA-256 of the token, from \
                 `airbag token hash`), got 6 characters",
                "auth.tokens: token `nohex`: sha256 has a character that is not a hex digit at position 1",
                "auth.tokens: token `copy` has no roles (ingest, subscribe, admin)",
                "auth.tokens: token `copy` has the same sha256 as another token",
                "auth.certificates: subject `` must be a certificate's common name",
            ]
        );
    }

    #[test]
    fn the_token_file_adds_tokens_and_reports_its_errors_with_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let hash = token_sha256_hex(b"from-file");
        std::fs::write(
            &path,
            format!("[[tokens]]\nname = \"ops\"\nsha256 = \"{hash}\"\nroles = [\"admin\", \"subscribe\"]\n"),
        )
        .unwrap();
        let auth = AuthConfig {
            token_file: Some(path.clone()),
            ..AuthConfig::default()
        };
        let list = auth.credentials().unwrap();
        assert_eq!(list.tokens.len(), 1);
        assert_eq!(list.tokens[0].roles.to_string(), "subscribe, admin");

        std::fs::write(&path, "[[tokens]]\nname = \"ops\"\nroles = [\"root\"]\n").unwrap();
        let problems = auth.credentials().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "auth.token_file");
        assert!(
            problems[0].message.contains("tokens.toml:3:10: unknown variant `root`"),
            "{}",
            problems[0]
        );

        std::fs::write(&path, "# no tokens yet\n").unwrap();
        let problems = auth.credentials().unwrap_err();
        assert!(
            problems[0].message.ends_with("tokens.toml has no [[tokens]] tables"),
            "{}",
            problems[0]
        );

        let missing = AuthConfig {
            token_file: Some(dir.path().join("nope.toml")),
            ..AuthConfig::default()
        };
        let problems = missing.credentials().unwrap_err();
        assert!(problems[0].message.starts_with("cannot read "), "{}", problems[0]);
    }

    #[test]
    fn credentials_are_required_off_loopback_plaintext() {
        let tls = crate::config::tls::TlsConfig::default();
        let none = AuthConfig::default();
        assert!(auth_problems(&none, &tls, true).is_empty());
        assert_eq!(auth_problems(&none, &tls, false)[0].key, "auth");
        let with_tls = crate::config::tls::TlsConfig {
            cert: Some("c".into()),
            key: Some("k".into()),
            ..crate::config::tls::TlsConfig::default()
        };
        assert_eq!(auth_problems(&none, &with_tls, true)[0].key, "auth");
        let subjects = AuthConfig {
            certificates: vec![CertificateEntry {
                subject: "desk".into(),
                roles: vec![Role::Subscribe],
            }],
            ..AuthConfig::default()
        };
        let problems = auth_problems(&subjects, &with_tls, true);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("set tls.client_ca"), "{}", problems[0]);
    }
}
