//! The `[console]` table: where the web console listens, if anywhere (see
//! [`crate::console`]).
//!
//! ```toml
//! [console]
//! listen = "127.0.0.1:9091"   # unset (the default): no console
//! allow_non_loopback = false
//! ```

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigProblem;

/// The `[console]` table of the service configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// HTTP address of the console and its `/api/`. Unset: no console.
    pub listen: Option<SocketAddr>,
    /// The console is plain HTTP: an address off loopback is refused
    /// unless this is true (put a TLS-terminating proxy in front). When
    /// `[auth]` has credentials, every `/api/` call needs a token with role
    /// `subscribe`, as `Alerts.Subscribe` does.
    pub allow_non_loopback: bool,
}

impl ConsoleConfig {
    /// Adds a problem for an address the console may not listen on.
    pub fn check(&self, problems: &mut Vec<ConfigProblem>) {
        if let Some(addr) = self.listen {
            if !addr.ip().is_loopback() && !self.allow_non_loopback {
                problems.push(ConfigProblem {
                    key: "console.listen",
                    message: format!(
                        "{addr} is not a loopback address and the console is plain HTTP; \
                         set console.allow_non_loopback = true to serve it there (behind a TLS proxy)"
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_loopback_unless_allowed() {
        let mut problems = Vec::new();
        ConsoleConfig::default().check(&mut problems);
        assert!(problems.is_empty());
        let open = ConsoleConfig {
            listen: Some("0.0.0.0:9091".parse().unwrap()),
            allow_non_loopback: false,
        };
        open.check(&mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "console.listen");
        let allowed = ConsoleConfig {
            allow_non_loopback: true,
            ..open
        };
        let mut problems = Vec::new();
        allowed.check(&mut problems);
        assert!(problems.is_empty());
    }
}
