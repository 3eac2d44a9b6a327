//! `e2b.*`: the E2B-compatible surface (control plane, envd, code interpreter)
//! served next to the native API, and its optional TLS listener for the
//! subdomain addressing mode.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The E2B compatibility gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2bConfig {
    /// Serve the E2B API on the main listener (and on `e2b.tls.listen`).
    pub enabled: bool,
    /// The sandbox domain `D`: `api.D` reaches the control plane and
    /// `{port}-{sandboxId}.D` a sandbox (needs wildcard DNS, and TLS on 443
    /// for the SDKs). Unset: only the one-URL mode (`E2B_API_URL` =
    /// `E2B_SANDBOX_URL`) works.
    pub domain: Option<String>,
    /// The `envdVersion` reported to the SDKs (`X.Y.Z`, at least `0.1.0`).
    /// Unset: the highest version whose behaviour codebox implements.
    pub envd_version: Option<String>,
    pub tls: E2bTlsConfig,
}

impl Default for E2bConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: None,
            envd_version: None,
            tls: E2bTlsConfig::default(),
        }
    }
}

/// An extra HTTPS listener serving the same service (subdomain mode on 443).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2bTlsConfig {
    /// `address:port` to listen on, e.g. `0.0.0.0:443`; unset: no TLS listener.
    pub listen: Option<String>,
    /// PEM certificate chain (a wildcard `*.D` plus `api.D`).
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key: Option<PathBuf>,
}

impl E2bConfig {
    /// Why this section is unusable, naming the key; `None` when it is fine.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(domain) = &self.domain {
            if !is_domain(domain) {
                return Some((
                    "e2b.domain",
                    "must be a lowercase DNS name such as sandboxes.example.com".to_owned(),
                ));
            }
        }
        if let Some(version) = &self.envd_version {
            if !is_supported_version(version) {
                return Some((
                    "e2b.envd_version",
                    "must be X.Y.Z (digits) and at least 0.1.0".to_owned(),
                ));
            }
        }
        let tls = &self.tls;
        if tls.listen.is_some() && (tls.cert.is_none() || tls.key.is_none()) {
            return Some((
                "e2b.tls.listen",
                "needs both e2b.tls.cert and e2b.tls.key".to_owned(),
            ));
        }
        None
    }
}

/// Lowercase labels of `a-z0-9-`, at least two, none empty or edged by `-`.
fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 200
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `X.Y.Z` of digits, at least `0.1.0` (the SDKs refuse anything older).
fn is_supported_version(version: &str) -> bool {
    let parts: Vec<Option<u64>> = version.split('.').map(|part| part.parse().ok()).collect();
    match parts.as_slice() {
        [Some(major), Some(minor), Some(_)] => (*major, *minor) >= (0, 1),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_versions_are_checked() {
        assert!(is_domain("e2b.test"));
        assert!(is_domain("sandboxes.example-1.com"));
        assert!(!is_domain("E2B.test"));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("a..b"));
        assert!(!is_domain("-a.b"));
        assert!(is_supported_version("0.5.7"));
        assert!(is_supported_version("1.0.0"));
        assert!(!is_supported_version("0.0.9"));
        assert!(!is_supported_version("v0.5.7"));
        assert!(!is_supported_version("0.5"));
    }

    #[test]
    fn tls_listener_needs_cert_and_key() {
        let mut config = E2bConfig::default();
        assert_eq!(config.problem(), None);
        config.tls.listen = Some("0.0.0.0:443".to_owned());
        assert_eq!(config.problem().map(|p| p.0), Some("e2b.tls.listen"));
        config.tls.cert = Some("/c.pem".into());
        config.tls.key = Some("/k.pem".into());
        assert_eq!(config.problem(), None);
    }
}
