//! Who may call what. Each gRPC method needs a [`Role`]: `Ingest` needs
//! `ingest`, `Alerts.Subscribe` needs `subscribe`, every `RuleAdmin` call
//! needs `admin`; health and reflection are open. A caller proves who it
//! is with `authorization: Bearer <token>` metadata (compared by SHA-256,
//! in constant time) or, with mutual TLS, its certificate's subject CN.
//! When the request carries a token, the token decides.
//!
//! No credential, or one the server does not know: `UNAUTHENTICATED`. A
//! known principal without the role: `PERMISSION_DENIED`. Tokens never
//! appear in a message or a log line; principals are named by their
//! configured name or certificate subject.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::codegen::http::HeaderMap;
use tonic::Status;

use crate::config::auth::{AuthConfig, CredentialList, Role, Roles, TokenCredential};
use crate::config::ConfigProblem;
use crate::wire::proto;

/// What a gRPC method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health, reflection, and paths no service answers.
    Open,
    Needs(Role),
}

/// The access a request path (`/package.Service/Method`) needs.
pub fn access_of(path: &str) -> Access {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or("", |(service, _)| service);
    match service {
        proto::ingest_server::SERVICE_NAME => Access::Needs(Role::Ingest),
        proto::alerts_server::SERVICE_NAME => Access::Needs(Role::Subscribe),
        proto::rule_admin_server::SERVICE_NAME => Access::Needs(Role::Admin),
        _ => Access::Open,
    }
}

/// Who a caller turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Auth is off (no credentials, loopback plaintext).
    Anonymous,
    /// A token, by its configured name.
    Token(String),
    /// A client certificate, by its subject CN.
    Certificate(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Token(name) => write!(f, "token `{name}`"),
            Principal::Certificate(subject) => write!(f, "certificate `{subject}`"),
        }
    }
}

/// Checks credentials against the configured ones.
#[derive(Debug)]
pub struct Authenticator {
    enabled: bool,
    tokens: Vec<TokenCredential>,
    subjects: HashMap<String, Roles>,
    /// Whether client certificates can be presented (mutual TLS).
    certificates_possible: bool,
}

impl Authenticator {
    /// Auth on, with these credentials.
    pub fn new(credentials: CredentialList, mutual_tls: bool) -> Self {
        Authenticator {
            enabled: true,
            tokens: credentials.tokens,
            subjects: credentials.subjects.into_iter().map(|s| (s.subject, s.roles)).collect(),
            certificates_possible: mutual_tls,
        }
    }

    /// Auth off: every call is allowed.
    pub fn disabled() -> Self {
        Authenticator {
            enabled: false,
            tokens: Vec::new(),
            subjects: HashMap::new(),
            certificates_possible: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Decides whether a call to `path`, needing `role`, may go ahead.
    /// `subject` is the verified client certificate's CN, if any.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a known credential, `PERMISSION_DENIED`
    /// without the role.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        subject: Option<&str>,
        role: Role,
        path: &str,
    ) -> Result<Principal, Status> {
        if !self.enabled {
            return Ok(Principal::Anonymous);
        }
        let (principal, roles) = self.authenticate(headers, subject)?;
        if roles.contains(role) {
            Ok(principal)
        } else {
            Err(Status::permission_denied(format!(
                "{principal} (roles: {roles}) may not call {path}: it needs role `{}`",
                role.name()
            )))
        }
    }

    fn authenticate(&self, headers: &HeaderMap, subject: Option<&str>) -> Result<(Principal, Roles), Status> {
        if let Some(value) = headers.get(tonic::codegen::http::header::AUTHORIZATION) {
            let token = bearer_token(value.as_bytes())
                .ok_or_else(|| Status::unauthenticated("the `authorization` metadata must be `Bearer <token>`"))?;
            return match self.token(token) {
                Some(known) => Ok((Principal::Token(known.name.clone()), known.roles)),
                None => Err(Status::unauthenticated("the bearer token is not known to this server")),
            };
        }
        if let Some(subject) = subject {
            return match self.subjects.get(subject) {
                Some(roles) => Ok((Principal::Certificate(subject.to_string()), *roles)),
                None => Err(Status::unauthenticated(format!(
                    "the client certificate subject `{subject}` is not known to this server"
                ))),
            };
        }
        Err(Status::unauthenticated(if self.certificates_possible {
            "no credentials: send `authorization: Bearer <token>` metadata or connect with a client certificate"
        } else {
            "no credentials: send `authorization: Bearer <token>` metadata"
        }))
    }

    /// The configured token whose hash is the presented token's. Every
    /// configured hash is compared, each in constant time.
    fn token(&self, presented: &[u8]) -> Option<&TokenCredential> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for known in &self.tokens {
            if bool::from(known.sha256.ct_eq(&digest)) {
                found = Some(known);
            }
        }
        found
    }
}

/// The credentials in force, shared by the gate and whoever reloads them:
/// the configured tokens and certificate subjects, and the token file
/// read again on every reload (SIGHUP, a rules reload, `RuleAdmin.Reload`),
/// so a token is added or revoked without a restart. A token file that
/// cannot be read or has errors keeps the credentials in force.
#[derive(Clone, Debug)]
pub struct Credentials {
    current: Arc<ArcSwap<Authenticator>>,
    config: Arc<AuthConfig>,
    mutual_tls: bool,
}

impl Credentials {
    pub fn new(authenticator: Authenticator, config: AuthConfig, mutual_tls: bool) -> Self {
        Credentials {
            current: Arc::new(ArcSwap::from_pointee(authenticator)),
            config: Arc::new(config),
            mutual_tls,
        }
    }

    /// The authenticator in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<Authenticator>> {
        self.current.load()
    }

    /// Reads the credentials again (the token file, if one is set) and
    /// puts them in force; returns how many tokens there are now. With
    /// auth off (no credential configured at start), nothing changes.
    ///
    /// # Errors
    /// The token file cannot be read or has errors: the credentials in
    /// force are kept.
    pub fn reload(&self) -> Result<usize, Vec<ConfigProblem>> {
        if !self.current.load().enabled() {
            return Ok(0);
        }
        let credentials = self.config.credentials()?;
        let tokens = credentials.tokens.len();
        self.current
            .store(Arc::new(Authenticator::new(credentials, self.mutual_tls)));
        Ok(tokens)
    }

    /// [`Credentials::reload`], with the outcome logged (never a token).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(tokens) if self.current.load().enabled() => {
                tracing::info!(audit = "credentials", tokens, "Credentials reloaded.");
            }
            Ok(_) => {}
            Err(problems) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::warn!(
                    audit = "credentials",
                    problems = %problems.join("; "),
                    "Credentials could not be reloaded; those in force are kept."
                );
            }
        }
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme is
/// case-insensitive); `None` for another scheme or an empty token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::{token_sha256_hex, SubjectCredential};
    use tonic::codegen::http::HeaderValue;

    fn authenticator() -> Authenticator {
        let hash = |t: &[u8]| {
            let hex = token_sha256_hex(t);
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
            }
            out
        };
        Authenticator::new(
            CredentialList {
                tokens: vec![
                    TokenCredential {
                        name: "feed".into(),
                        sha256: hash(b"feed-secret"),
                        roles: [Role::Ingest].into_iter().collect(),
                    },
                    TokenCredential {
                        name: "ops".into(),
                        sha256: hash(b"ops-secret"),
                        roles: [Role::Admin, Role::Subscribe].into_iter().collect(),
                    },
                ],
                subjects: vec![SubjectCredential {
                    subject: "desk".into(),
                    roles: [Role::Subscribe].into_iter().collect(),
                }],
            },
            true,
        )
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn methods_map_to_roles() {
        assert_eq!(access_of("/airbag.v1.Ingest/Ingest"), Access::Needs(Role::Ingest));
        assert_eq!(access_of("/airbag.v1.Alerts/Subscribe"), Access::Needs(Role::Subscribe));
        assert_eq!(access_of("/airbag.v1.RuleAdmin/Reload"), Access::Needs(Role::Admin));
        assert_eq!(access_of("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access_of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(access_of("/airbag.v1.Ingestx/Ingest"), Access::Open);
        assert_eq!(access_of("garbage"), Access::Open);
    }

    #[test]
    fn tokens_and_subjects_decide_and_secrets_stay_out_of_messages() {
        let auth = authenticator();
        let path = "/airbag.v1.RuleAdmin/Reload";
        assert_eq!(
            auth.authorize(&bearer("Bearer ops-secret"), None, Role::Admin, path)
                .unwrap(),
            Principal::Token("ops".into())
        );
        assert_eq!(
            auth.authorize(&bearer("bearer  feed-secret "), None, Role::Ingest, path)
                .unwrap(),
            Principal::Token("feed".into())
        );
        let denied = auth
            .authorize(&bearer("Bearer feed-secret"), None, Role::Admin, path)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            denied.message(),
            "token `feed` (roles: ingest) may not call /airbag.v1.RuleAdmin/Reload: it needs role `admin`"
        );
        let unknown = auth
            .authorize(&bearer("Bearer wrong-secret"), Some("desk"), Role::Subscribe, path)
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(!unknown.message().contains("wrong-secret"), "{}", unknown.message());
        let basic = auth
            .authorize(&bearer("Basic b3BzOnNlY3JldA=="), None, Role::Admin, path)
            .unwrap_err();
        assert_eq!(basic.code(), tonic::Code::Unauthenticated);
        assert!(!basic.message().contains("b3Bz"), "{}", basic.message());
        assert_eq!(
            auth.authorize(&HeaderMap::new(), Some("desk"), Role::Subscribe, path)
                .unwrap(),
            Principal::Certificate("desk".into())
        );
        let stranger = auth
            .authorize(&HeaderMap::new(), Some("stranger"), Role::Subscribe, path)
            .unwrap_err();
        assert_eq!(stranger.code(), tonic::Code::Unauthenticated);
        let none = auth
            .authorize(&HeaderMap::new(), None, Role::Subscribe, path)
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert!(none.message().contains("client certificate"), "{}", none.message());
        assert_eq!(
            Authenticator::disabled()
                .authorize(&HeaderMap::new(), None, Role::Admin, path)
                .unwrap(),
            Principal::Anonymous
        );
    }
}
