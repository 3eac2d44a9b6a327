//! The per-sandbox tokens of the E2B surface, derived, never stored.
//!
//! `envdAccessToken` (sent as `X-Access-Token` to envd, port 49983) and
//! `trafficAccessToken` (sent as `E2B-Traffic-Access-Token` to the code
//! interpreter, port 49999) are HMAC-SHA256 of a label and the sandbox id under
//! a key derived from `API_KEY_SECRET`. They are bearer secrets scoped to one
//! sandbox: anyone holding one can act inside that sandbox only, and rotating
//! `API_KEY_SECRET` revokes every one of them (with every API key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation from the API-key hashes made with the same secret.
const KEY_LABEL: &[u8] = b"codebox-e2b-sandbox-tokens-v1";

/// Which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `envdAccessToken` / `X-Access-Token`.
    Envd,
    /// `trafficAccessToken` / `E2B-Traffic-Access-Token`.
    Traffic,
}

impl TokenKind {
    fn label(self) -> &'static str {
        match self {
            TokenKind::Envd => "e2b-envd:",
            TokenKind::Traffic => "e2b-traffic:",
        }
    }
}

/// Mints and checks sandbox tokens. `Debug` never shows the key.
#[derive(Clone)]
pub struct SandboxTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for SandboxTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxTokens").finish_non_exhaustive()
    }
}

impl SandboxTokens {
    /// Tokens keyed from the service's `API_KEY_SECRET`.
    pub fn new(api_key_secret: &[u8]) -> Self {
        let mut mac = new_mac(api_key_secret);
        mac.update(KEY_LABEL);
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, kind: TokenKind, sandbox_id: &str) -> HmacSha256 {
        let mut mac = new_mac(&self.key);
        mac.update(kind.label().as_bytes());
        mac.update(sandbox_id.as_bytes());
        mac
    }

    /// The token of `kind` for `sandbox_id` (43 characters of base64url).
    pub fn mint(&self, kind: TokenKind, sandbox_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(kind, sandbox_id).finalize().into_bytes())
    }

    /// Whether `presented` is the token of `kind` for `sandbox_id`, compared
    /// in constant time.
    pub fn verify(&self, kind: TokenKind, sandbox_id: &str, presented: &str) -> bool {
        let presented = presented.trim();
        if presented.len() != 43 {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        self.mac(kind, sandbox_id).verify_slice(&bytes).is_ok()
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_sandbox_kind_and_secret() {
        let tokens = SandboxTokens::new(b"secret-one");
        let envd = tokens.mint(TokenKind::Envd, "abc");
        assert_eq!(envd.len(), 43);
        assert!(tokens.verify(TokenKind::Envd, "abc", &envd));
        assert!(!tokens.verify(TokenKind::Traffic, "abc", &envd));
        assert!(!tokens.verify(TokenKind::Envd, "abd", &envd));
        let other = SandboxTokens::new(b"secret-two");
        assert!(!other.verify(TokenKind::Envd, "abc", &envd));
        assert_ne!(envd, tokens.mint(TokenKind::Traffic, "abc"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let tokens = SandboxTokens::new(b"k");
        let good = tokens.mint(TokenKind::Envd, "abc");
        for bad in [
            "",
            "x",
            &good[..42],
            &format!("{good}A"),
            &good.replace('A', "*"),
        ] {
            if bad != good {
                assert!(!tokens.verify(TokenKind::Envd, "abc", bad), "{bad}");
            }
        }
    }
}
