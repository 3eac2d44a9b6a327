//! Random identifiers. Every id carries 128 bits from the OS CSPRNG and is encoded
//! as 26 lowercase base32 characters (`a-z`, `2-7`): safe in URLs, in DNS labels
//! (the E2B subdomain mode needs lowercase alphanumerics without `-`), and in file
//! names. An id is never a credential.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Length of an encoded 128-bit id.
pub const ID_LEN: usize = 26;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id: expected {ID_LEN} characters from [a-z2-7]")]
pub struct IdParseError;

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS CSPRNG failing is not recoverable for a service that mints ids.
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    encode_base32(&bytes)
}

fn encode_base32(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(ID_LEN);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn validate(value: &str) -> Result<(), IdParseError> {
    let valid = value.len() == ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(IdParseError)
    }
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(random_id())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                validate(value)?;
                Ok(Self(value.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdParseError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                validate(&value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// Identifies a sandbox across the API, the store and the runtime.
    SandboxId
);
id_type!(
    /// Identifies a user (tenant).
    UserId
);
id_type!(
    /// Identifies an API key record (not the secret key itself).
    ApiKeyId
);
id_type!(
    /// Identifies one execution (a command or a code cell).
    ExecutionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), ID_LEN);
        assert_eq!(a.as_str().parse::<SandboxId>(), Ok(a.clone()));
    }

    #[test]
    fn hostile_ids_are_rejected() {
        for bad in [
            "",
            "../../etc/passwd",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "abcdefghijklmnopqrstuvwxy-",
            "abcdefghijklmnopqrstuvwxyz0",
            "abcdefghijklmnopqrstuvwxy1",
        ] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_rejects_invalid_ids() {
        let parsed: Result<SandboxId, _> = serde_json::from_str("\"../x\"");
        assert!(parsed.is_err());
    }
}
