//! Values that must never reach a log line or `codebox config print`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a redacted value prints as.
pub const REDACTED: &str = "[redacted]";

/// A secret string. `Debug` and `Serialize` print [`REDACTED`]; only
/// [`Secret::expose`] gives the value, so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call it only where the value is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value == REDACTED {
            // `codebox config print` output fed back in: never run with the
            // placeholder as a real secret.
            return Err(serde::de::Error::custom(
                "this is a redacted placeholder from `codebox config print`, not a secret",
            ));
        }
        Ok(Secret(value))
    }
}

/// A connection URL (`postgres://user:password@host/db`) that may carry a
/// password. `Debug` and `Serialize` show it with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The full URL, password included. Only for opening the connection.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by [`REDACTED`].
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }

    /// The scheme, lowercased (`postgres`, `sqlite`, `redis`, ...), if any.
    pub fn scheme(&self) -> Option<String> {
        self.0
            .split_once("://")
            .or_else(|| self.0.split_once(':'))
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
    }
}

/// Replaces the password of `scheme://user:password@host...` (if any).
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; a password may hold '@',
    // so the userinfo ends at the LAST '@' within the authority.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}{host}{tail}"),
        None => url.to_owned(),
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for ConnectionUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for ConnectionUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.contains(&format!(":{REDACTED}@")) {
            return Err(serde::de::Error::custom(
                "the password is a redacted placeholder from `codebox config print`",
            ));
        }
        Ok(ConnectionUrl(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        let yaml = serde_yaml::to_string(&secret).expect("serialises");
        assert!(!yaml.contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
        assert!(
            serde_yaml::from_str::<Secret>(&yaml).is_err(),
            "placeholder read back"
        );
        let url = ConnectionUrl::new("postgres://app:pw@db/x");
        let printed = serde_yaml::to_string(&url).expect("serialises");
        assert!(serde_yaml::from_str::<ConnectionUrl>(&printed).is_err());
    }

    #[test]
    fn url_passwords_are_redacted() {
        let url = ConnectionUrl::new("postgres://app:p@ss:w@rd@db.internal:5432/codebox?x=1");
        assert_eq!(
            url.redacted(),
            "postgres://app:[redacted]@db.internal:5432/codebox?x=1"
        );
        assert!(!format!("{url:?}").contains("ss:w"));
        assert_eq!(url.scheme().as_deref(), Some("postgres"));
        let plain = ConnectionUrl::new("redis://localhost:6379/0");
        assert_eq!(plain.redacted(), "redis://localhost:6379/0");
        let user_only = ConnectionUrl::new("postgres://app@db/x");
        assert_eq!(user_only.redacted(), "postgres://app@db/x");
    }
}
