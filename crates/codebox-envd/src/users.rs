//! Which sandbox user a request acts as, and where its relative paths start.
//!
//! RPCs name the user in `Authorization: Basic base64("<user>:")`, `/files` in
//! the `username` query parameter; neither means the default user `user`.
//! codebox sandboxes run every request as `user` (uid 1000, no capability);
//! `root` is refused with `permission_denied` until the agent can act as the
//! sandbox's root, and any other name with `unauthenticated` (envd's answer
//! to an unknown user).

use axum::http::{header, HeaderMap};
use base64::Engine;

use crate::connect::{Code, RpcError};

/// The default (and, today, the only served) sandbox user.
pub const DEFAULT_USER: &str = "user";
/// The default user's home: relative paths start here.
pub const HOME: &str = "/home/user";
/// Longest username considered.
const MAX_USERNAME: usize = 64;

/// The user a request acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxUser {
    User,
}

impl SandboxUser {
    pub fn home(self) -> &'static str {
        match self {
            SandboxUser::User => HOME,
        }
    }
}

/// A username as a sandbox user.
pub fn named(name: Option<&str>) -> Result<SandboxUser, RpcError> {
    match name {
        None | Some("") | Some(DEFAULT_USER) => Ok(SandboxUser::User),
        Some("root") => Err(RpcError::new(
            Code::PermissionDenied,
            "acting as root is not supported by this server: sandboxes run requests as \"user\"",
        )),
        Some(other) => {
            let shown: String = other.chars().take(MAX_USERNAME).collect();
            Err(RpcError::new(
                Code::Unauthenticated,
                format!("unknown user {shown:?}: the sandbox has the user \"user\""),
            ))
        }
    }
}

/// The user of an RPC from its `Authorization: Basic` header.
pub fn from_headers(headers: &HeaderMap) -> Result<SandboxUser, RpcError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return named(None);
    };
    let malformed = || {
        RpcError::new(
            Code::Unauthenticated,
            "Authorization: malformed Basic credentials",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = text.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return Err(malformed());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let username = decoded.split(':').next().unwrap_or_default();
    named(Some(username))
}

/// A path as the agent takes it: relative ones start at the user's home (the
/// agent resolves every path inside the sandbox; this only picks the base).
pub fn resolve(user: SandboxUser, path: &str) -> Result<String, RpcError> {
    if path.contains('\0') {
        return Err(RpcError::invalid("path: contains NUL"));
    }
    if path.is_empty() {
        return Ok(user.home().to_owned());
    }
    if path.starts_with('/') {
        return Ok(path.to_owned());
    }
    if let Some(rest) = path.strip_prefix("~/") {
        return Ok(format!("{}/{rest}", user.home()));
    }
    if path == "~" {
        return Ok(user.home().to_owned());
    }
    Ok(format!("{}/{path}", user.home()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn basic_credentials_name_the_user() {
        assert_eq!(from_headers(&HeaderMap::new()), Ok(SandboxUser::User));
        // base64("user:")
        assert_eq!(
            from_headers(&basic("Basic dXNlcjo=")),
            Ok(SandboxUser::User)
        );
        // base64("root:")
        let root = from_headers(&basic("Basic cm9vdDo=")).expect_err("root refused");
        assert_eq!(root.code, Code::PermissionDenied);
        // base64("nobody:")
        let other = from_headers(&basic("Basic bm9ib2R5Og==")).expect_err("unknown user");
        assert_eq!(other.code, Code::Unauthenticated);
        assert!(from_headers(&basic("Basic !!!")).is_err());
        assert!(from_headers(&basic("Bearer abc")).is_err());
    }

    #[test]
    fn relative_paths_start_at_home() {
        let user = SandboxUser::User;
        assert_eq!(resolve(user, "a.txt").as_deref(), Ok("/home/user/a.txt"));
        assert_eq!(resolve(user, "").as_deref(), Ok("/home/user"));
        assert_eq!(resolve(user, "~/x").as_deref(), Ok("/home/user/x"));
        assert_eq!(resolve(user, "/etc/passwd").as_deref(), Ok("/etc/passwd"));
        // Traversal is the agent's business (it resolves inside the sandbox);
        // the path is passed on as it is.
        assert_eq!(
            resolve(user, "../../etc").as_deref(),
            Ok("/home/user/../../etc")
        );
        assert!(resolve(user, "a\0b").is_err());
    }
}
