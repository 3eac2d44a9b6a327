//! Users, API keys and JWTs.
//!
//! API keys are `cbx_` followed by 32 random bytes in unpadded base64url. Only
//! HMAC-SHA256(API_KEY_SECRET, key) is stored and looked up; because the hash is
//! keyed, a database lookup by hash leaks nothing useful through timing.
//!
//! JWTs are HS256 only (the header's `alg` must be exactly `HS256`; `none`,
//! `HS512` and everything else are refused), `exp` is required, `nbf` honoured,
//! both with a bounded leeway. `sub` names the user: a user id if it has the id
//! format, otherwise a user name (names can never have the id format, so the
//! two never collide). Hand-written with `hmac` + `sha2` + `base64`: the whole
//! verifier is this file.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use codebox_store::{ApiKeyRecord, NewApiKey, Store, User};
use codebox_types::{ApiKeyId, UserId};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::error::CoreError;
use crate::settings::Secrets;

type HmacSha256 = Hmac<Sha256>;

/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "cbx_";
/// Random bytes in a key (256 bits).
const API_KEY_BYTES: usize = 32;
/// Characters of the key kept in listings to tell keys apart.
const DISPLAY_PREFIX_LEN: usize = 12;
/// Anything longer is not a key or a token we issue; refuse before hashing.
const MAX_CREDENTIAL_LEN: usize = 8192;
/// Leeway is capped whatever the config says.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Users and credentials. Needs only the store, so the `codebox users` and
/// `codebox keys` commands work without a runtime.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    secrets: Secrets,
    jwt_leeway: Duration,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("secrets", &self.secrets)
            .field("jwt_leeway", &self.jwt_leeway)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, secrets: Secrets, jwt_leeway: Duration) -> Self {
        Self {
            store,
            secrets,
            jwt_leeway: jwt_leeway.min(MAX_LEEWAY),
        }
    }

    /// Hex HMAC-SHA256 of `key` under the API key secret.
    pub fn hash_api_key(&self, key: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.secrets.api_key_secret)
            .expect("HMAC accepts keys of any length");
        mac.update(key.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The user of a live API key.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<User, CoreError> {
        if !key.starts_with(API_KEY_PREFIX) || key.len() > MAX_CREDENTIAL_LEN {
            return Err(CoreError::Unauthorized);
        }
        let hash = self.hash_api_key(key);
        match self.store.find_api_key(&hash).await? {
            Some((_record, user)) => Ok(user),
            None => {
                // Never the key itself: its display prefix is enough to tell
                // a typo from a probe.
                let prefix: String = key.chars().take(DISPLAY_PREFIX_LEN).collect();
                tracing::info!(audit = "auth_failed", %prefix, "unknown or revoked API key");
                Err(CoreError::Unauthorized)
            }
        }
    }

    /// The user named by a valid HS256 JWT's `sub`.
    pub async fn authenticate_jwt(&self, token: &str) -> Result<User, CoreError> {
        let secret = self
            .secrets
            .jwt_secret
            .as_deref()
            .ok_or(CoreError::Unauthorized)?;
        let claims = verify_jwt(token, secret, self.jwt_leeway, OffsetDateTime::now_utc())
            .inspect_err(|_| tracing::info!(audit = "auth_failed", "invalid JWT"))?;
        let user = match claims.sub.parse::<UserId>() {
            Ok(id) => self.store.get_user(&id).await?,
            Err(_) => self.store.get_user_by_name(&claims.sub).await?,
        };
        user.ok_or_else(|| {
            tracing::info!(audit = "auth_failed", "valid JWT for an unknown user");
            CoreError::Unauthorized
        })
    }

    /// Creates a user. Names are 1-64 of `[A-Za-z0-9_.-]` and never id-shaped.
    pub async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, CoreError> {
        validate_user_name(name)?;
        let user = User {
            id: UserId::generate(),
            name: name.to_owned(),
            is_admin,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store
            .create_user(&user)
            .await
            .map_err(|error| match error {
                codebox_store::StoreError::Conflict { .. } => CoreError::Conflict {
                    message: format!("user {name:?} already exists"),
                },
                other => other.into(),
            })?;
        Ok(user)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, CoreError> {
        Ok(self.store.list_users().await?)
    }

    /// Whether the database has no users yet (first start).
    pub async fn is_empty(&self) -> Result<bool, CoreError> {
        Ok(self.store.count_users().await? == 0)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<User, CoreError> {
        self.store
            .get_user_by_name(name)
            .await?
            .ok_or(CoreError::NotFound)
    }

    /// A new random key for `user`: the plaintext (shown once) and its record.
    pub async fn create_api_key(
        &self,
        user: &User,
        name: Option<String>,
    ) -> Result<(String, ApiKeyRecord), CoreError> {
        let mut bytes = [0u8; API_KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| CoreError::internal(error.to_string()))?;
        let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let record = self.store_api_key(user, &key, name).await?;
        Ok((key, record))
    }

    /// Stores a key chosen by the operator (`CODEBOX_BOOTSTRAP_API_KEY`).
    pub async fn import_api_key(
        &self,
        user: &User,
        key: &str,
        name: Option<String>,
    ) -> Result<ApiKeyRecord, CoreError> {
        if !key.starts_with(API_KEY_PREFIX) || key.len() < API_KEY_PREFIX.len() + 20 {
            return Err(CoreError::validation(
                "api_key",
                format!("must start with {API_KEY_PREFIX} and have at least 20 more characters"),
            ));
        }
        if key.len() > MAX_CREDENTIAL_LEN
            || key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(CoreError::validation(
                "api_key",
                "must be printable and not too long",
            ));
        }
        self.store_api_key(user, key, name).await
    }

    async fn store_api_key(
        &self,
        user: &User,
        key: &str,
        name: Option<String>,
    ) -> Result<ApiKeyRecord, CoreError> {
        let new_key = NewApiKey {
            id: ApiKeyId::generate(),
            user_id: user.id.clone(),
            name,
            prefix: key.chars().take(DISPLAY_PREFIX_LEN).collect(),
            hash: self.hash_api_key(key),
            created_at: OffsetDateTime::now_utc(),
        };
        let record = self.store.create_api_key(&new_key).await?;
        tracing::info!(audit = "api_key_created", key_id = %record.id, user_id = %user.id, "API key created");
        Ok(record)
    }

    /// All keys, or one user's, revoked ones included.
    pub async fn list_api_keys(&self, user: Option<&User>) -> Result<Vec<ApiKeyRecord>, CoreError> {
        Ok(self.store.list_api_keys(user.map(|user| &user.id)).await?)
    }

    /// Revokes a key; `NotFound` when there is no such live key.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), CoreError> {
        let id: ApiKeyId = id.parse().map_err(|_| CoreError::NotFound)?;
        if self.store.revoke_api_key(&id).await? {
            tracing::info!(audit = "api_key_revoked", key_id = %id, "API key revoked");
            Ok(())
        } else {
            Err(CoreError::NotFound)
        }
    }
}

fn validate_user_name(name: &str) -> Result<(), CoreError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.len() > 64 || !valid_chars {
        return Err(CoreError::validation(
            "name",
            "must be 1 to 64 of [A-Za-z0-9_.-]",
        ));
    }
    if name.parse::<UserId>().is_ok() {
        return Err(CoreError::validation(
            "name",
            "must not have the format of a user id",
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The claims codebox reads; others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies an HS256 JWT at `now` and returns its claims. Every failure is
/// `Unauthorized`: a client learns nothing about which check failed.
pub fn verify_jwt(
    token: &str,
    secret: &[u8],
    leeway: Duration,
    now: OffsetDateTime,
) -> Result<Claims, CoreError> {
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err(CoreError::Unauthorized);
    }
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CoreError::Unauthorized);
    };
    // The algorithm is fixed: the header is checked, never trusted to choose.
    let header: Header = decode_json(header_part)?;
    if header.alg != "HS256" {
        return Err(CoreError::Unauthorized);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| CoreError::Unauthorized)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(header_part.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| CoreError::Unauthorized)?;
    let claims: Claims = decode_json(payload)?;
    check_times(&claims, leeway.min(MAX_LEEWAY), now)?;
    Ok(claims)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, CoreError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| CoreError::Unauthorized)?;
    serde_json::from_slice(&bytes).map_err(|_| CoreError::Unauthorized)
}

fn check_times(claims: &Claims, leeway: Duration, now: OffsetDateTime) -> Result<(), CoreError> {
    let now = now.unix_timestamp();
    let leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
    if claims.exp.saturating_add(leeway) <= now {
        return Err(CoreError::Unauthorized);
    }
    match claims.nbf {
        Some(nbf) if nbf.saturating_sub(leeway) > now => Err(CoreError::Unauthorized),
        _ => Ok(()),
    }
}

/// Signs claims as an HS256 JWT (tools and tests; the server only verifies).
pub fn sign_jwt(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid timestamp")
    }

    fn token_with(header: &str, claims: serde_json::Value, secret: &[u8]) -> String {
        let header = URL_SAFE_NO_PAD.encode(header);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn verify(token: &str) -> Result<Claims, CoreError> {
        verify_jwt(token, SECRET, Duration::from_secs(30), now())
    }

    #[test]
    fn a_valid_token_verifies() {
        let token = sign_jwt(&json!({"sub": "alice", "exp": 1_800_000_100}), SECRET);
        assert_eq!(
            verify(&token).map(|claims| claims.sub).ok(),
            Some("alice".to_owned())
        );
    }

    #[test]
    fn expiry_is_required_and_enforced_with_bounded_leeway() {
        let missing = sign_jwt(&json!({"sub": "alice"}), SECRET);
        assert!(matches!(verify(&missing), Err(CoreError::Unauthorized)));
        let expired = sign_jwt(&json!({"sub": "alice", "exp": 1_800_000_000 - 31}), SECRET);
        assert!(verify(&expired).is_err());
        let within_leeway = sign_jwt(&json!({"sub": "alice", "exp": 1_800_000_000 - 29}), SECRET);
        assert!(verify(&within_leeway).is_ok());
        // A huge configured leeway is capped at five minutes.
        let old = sign_jwt(&json!({"sub": "alice", "exp": 1_800_000_000 - 301}), SECRET);
        assert!(verify_jwt(&old, SECRET, Duration::from_secs(86_400), now()).is_err());
        let not_yet = sign_jwt(
            &json!({"sub": "a", "exp": 1_900_000_000, "nbf": 1_800_000_100}),
            SECRET,
        );
        assert!(verify(&not_yet).is_err());
    }

    #[test]
    fn other_algorithms_are_refused() {
        let claims = json!({"sub": "alice", "exp": 1_800_000_100});
        let hs512_header = token_with(r#"{"alg":"HS512","typ":"JWT"}"#, claims.clone(), SECRET);
        assert!(verify(&hs512_header).is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert!(verify(&none).is_err());
        let lowercase = token_with(r#"{"alg":"hs256"}"#, claims, SECRET);
        assert!(verify(&lowercase).is_err());
    }

    #[test]
    fn tampering_is_detected() {
        let token = sign_jwt(&json!({"sub": "alice", "exp": 1_800_000_100}), SECRET);
        let wrong_key = sign_jwt(&json!({"sub": "alice", "exp": 1_800_000_100}), b"other");
        assert!(verify(&wrong_key).is_err());
        let (head, _) = token.rsplit_once('.').expect("three parts");
        let (header, _) = head.split_once('.').expect("three parts");
        let forged_payload =
            URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": 1_800_000_100}).to_string());
        let signature = token.rsplit_once('.').expect("three parts").1;
        assert!(verify(&format!("{header}.{forged_payload}.{signature}")).is_err());
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "...",
            &"x".repeat(MAX_CREDENTIAL_LEN + 1),
        ] {
            assert!(verify(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn user_names_are_never_id_shaped() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name(UserId::generate().as_str()).is_err());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("a b").is_err());
        assert!(validate_user_name(&"a".repeat(65)).is_err());
    }
}
