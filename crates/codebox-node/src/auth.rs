//! The shared API<->node secret. Every node API request carries it as
//! `Authorization: Bearer <secret>`; the node compares keyed digests of the
//! presented and expected values (constant time, and the length of the secret
//! does not leak).
//!
//! Limits (see docs/scale-out.md): the secret travels in clear over plain
//! HTTP, so the node port must sit on a private network that only API
//! replicas reach (a Kubernetes NetworkPolicy); anyone who can read that
//! traffic can replay it. mTLS is the planned upgrade.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header value prefix.
pub const BEARER: &str = "Bearer ";

/// A node secret (never printed).
#[derive(Clone)]
pub struct NodeSecret {
    value: String,
    digest_key: [u8; 32],
}

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret([redacted])")
    }
}

impl NodeSecret {
    pub fn new(value: impl Into<String>) -> Self {
        let mut digest_key = [0u8; 32];
        // A per-process random key: the comparison's timing depends on no
        // attacker-known value. Falls back to a fixed key only if the OS has
        // no randomness, which keeps the comparison correct (still constant time).
        let _ = getrandom::fill(&mut digest_key);
        Self {
            value: value.into(),
            digest_key,
        }
    }

    /// The `Authorization` header value a client sends.
    pub fn header_value(&self) -> String {
        format!("{BEARER}{}", self.value)
    }

    fn digest(&self, value: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.digest_key) else {
            return Vec::new();
        };
        mac.update(value);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether an `Authorization` header value carries this secret.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else {
            return false;
        };
        let Some(presented) = header.strip_prefix(BEARER.as_bytes()) else {
            return false;
        };
        let expected = self.digest(self.value.as_bytes());
        let presented = self.digest(presented);
        expected.len() == 32
            && expected.len() == presented.len()
            && expected
                .iter()
                .zip(presented.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_is_accepted() {
        let secret = NodeSecret::new("a".repeat(40));
        assert!(secret.accepts(Some(secret.header_value().as_bytes())));
        assert!(!secret.accepts(None));
        assert!(!secret.accepts(Some(b"Bearer ")));
        assert!(!secret.accepts(Some(format!("Bearer {}", "a".repeat(39)).as_bytes())));
        assert!(!secret.accepts(Some(format!("Bearer {}b", "a".repeat(40)).as_bytes())));
        assert!(
            !secret.accepts(Some("a".repeat(40).as_bytes())),
            "scheme required"
        );
        assert!(!format!("{secret:?}").contains("aaaa"));
    }
}
