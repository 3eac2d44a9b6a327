//! Request ids: a client's `x-request-id` is kept when it is short and plain
//! (so it can be correlated with the client's own logs), anything else is
//! replaced by a fresh random id. The id is echoed in the response header and in
//! every error body.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The request and response header carrying the id.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced, not truncated.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The id of one request, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The client's id if well-formed, else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(&REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| is_well_formed(value))
            .map(|value| Self(value.to_owned()))
            .unwrap_or_else(Self::generate)
    }

    /// 128 random bits, hex.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random number generator is available");
        Self(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("request ids are checked to be visible ASCII")
    }
}

/// 1 to 64 characters of `[A-Za-z0-9._:-]`: safe in headers, logs and JSON
/// without escaping, and too short to carry a payload into the logs.
fn is_well_formed(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_ID_HEADER.clone(),
            HeaderValue::from_str(value).expect("test values are valid header values"),
        );
        headers
    }

    #[test]
    fn keeps_a_well_formed_client_id() {
        let id = RequestId::from_headers(&headers_with("client-42.a:b_c"));
        assert_eq!(id.as_str(), "client-42.a:b_c");
    }

    #[test]
    fn replaces_hostile_or_long_ids() {
        for bad in ["", "a b", "<script>", "x\"y", &"a".repeat(65)] {
            let id = RequestId::from_headers(&headers_with(bad));
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 32);
        }
    }

    #[test]
    fn generated_ids_are_distinct() {
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
