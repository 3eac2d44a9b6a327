//! Which surface a request is for, decided from its `Host` and its
//! `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers (like E2B's edge proxy), and
//! then from its path.
//!
//! 1. With a configured domain `D`, a Host `api.D` is the control plane and a
//!    Host `{port}-{sandboxId}.D` is that sandbox's port (the subdomain mode of
//!    every SDK version). Any other name under `D` is unroutable.
//! 2. Otherwise the `E2b-Sandbox-*` headers, sent by current SDKs on every
//!    sandbox request in the one-URL mode, select the sandbox and port.
//! 3. Otherwise `/sandboxes…` and `/v2/sandboxes…` are the control plane (the
//!    native API lives under `/api/v1`, so they do not collide) and everything
//!    else is the native API.

use axum::http::{header, HeaderMap, Uri};

pub const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
pub const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The native codebox API.
    Native,
    /// The E2B control plane (`/sandboxes`, `/v2/sandboxes`, ...).
    Control,
    /// A port of a sandbox (49983 envd, 49999 code interpreter).
    Sandbox { id: String, port: u16 },
    /// Addressed to the E2B surface, but not to anything that can exist.
    Unroutable(&'static str),
}

/// Decides the destination of a request.
pub fn destination(uri: &Uri, headers: &HeaderMap, domain: Option<&str>) -> Destination {
    if let (Some(domain), Some(host)) = (domain, host_of(uri, headers)) {
        if let Some(destination) = by_host(&host, domain) {
            return destination;
        }
    }
    if let Some(destination) = by_headers(headers) {
        return destination;
    }
    if is_control_path(uri.path()) {
        Destination::Control
    } else {
        Destination::Native
    }
}

/// The request's host name, lowercase, without the port.
fn host_of(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = match uri.host() {
        Some(host) => host.to_owned(),
        None => {
            let value = headers.get(header::HOST)?.to_str().ok()?;
            strip_port(value).to_owned()
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: never a name under the domain.
        return host;
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn by_host(host: &str, domain: &str) -> Option<Destination> {
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    if label == "api" {
        return Some(Destination::Control);
    }
    Some(
        parse_sandbox_label(label).unwrap_or(Destination::Unroutable(
            "no such host: expected api.<domain> or <port>-<sandboxId>.<domain>",
        )),
    )
}

/// `{port}-{sandboxId}` (one label; ids never contain `-`).
fn parse_sandbox_label(label: &str) -> Option<Destination> {
    let (port, id) = label.split_once('-')?;
    if id.is_empty() || id.contains(['-', '.']) || port.is_empty() {
        return None;
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse().ok()?;
    Some(Destination::Sandbox {
        id: id.to_owned(),
        port,
    })
}

fn by_headers(headers: &HeaderMap) -> Option<Destination> {
    let id = headers.get(SANDBOX_ID_HEADER);
    let port = headers.get(SANDBOX_PORT_HEADER);
    if id.is_none() && port.is_none() {
        return None;
    }
    let id = id.and_then(|value| value.to_str().ok()).map(str::trim);
    let port = port
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u16>().ok());
    Some(match (id, port) {
        (Some(id), Some(port)) if !id.is_empty() => Destination::Sandbox {
            id: id.to_owned(),
            port,
        },
        _ => Destination::Unroutable(
            "E2b-Sandbox-Id and E2b-Sandbox-Port must both be present and valid",
        ),
    })
}

fn is_control_path(path: &str) -> bool {
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    rest == "/sandboxes" || rest.starts_with("/sandboxes/")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn route(path: &str, pairs: &[(&str, &str)], domain: Option<&str>) -> Destination {
        let uri: Uri = path.parse().expect("uri");
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        destination(&uri, &headers, domain)
    }

    fn sandbox(id: &str, port: u16) -> Destination {
        Destination::Sandbox {
            id: id.to_owned(),
            port,
        }
    }

    #[test]
    fn paths_without_headers_or_domain() {
        assert_eq!(route("/v2/sandboxes", &[], None), Destination::Control);
        assert_eq!(
            route("/sandboxes/abc/timeout", &[], None),
            Destination::Control
        );
        assert_eq!(route("/sandboxesx", &[], None), Destination::Native);
        assert_eq!(route("/api/v1/sandboxes", &[], None), Destination::Native);
        assert_eq!(route("/health", &[], None), Destination::Native);
        assert_eq!(route("/execute", &[], None), Destination::Native);
    }

    #[test]
    fn sandbox_headers_route_every_path() {
        let headers = [("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "49983")];
        assert_eq!(route("/health", &headers, None), sandbox("abc", 49983));
        assert_eq!(route("/sandboxes", &headers, None), sandbox("abc", 49983));
        for bad in [
            &[("E2b-Sandbox-Id", "abc")][..],
            &[("E2b-Sandbox-Port", "49999")][..],
            &[("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "99999")][..],
            &[("E2b-Sandbox-Id", " "), ("E2b-Sandbox-Port", "49999")][..],
        ] {
            assert!(matches!(
                route("/execute", bad, None),
                Destination::Unroutable(_)
            ));
        }
    }

    #[test]
    fn hosts_under_the_domain() {
        let d = Some("e2b.test");
        assert_eq!(
            route("/health", &[("host", "api.e2b.test")], d),
            Destination::Control
        );
        assert_eq!(
            route("/execute", &[("host", "49999-abc2.E2B.test:443")], d),
            sandbox("abc2", 49999)
        );
        // Host wins over headers, as in E2B's proxy.
        assert_eq!(
            route(
                "/x",
                &[
                    ("host", "49983-abc.e2b.test"),
                    ("E2b-Sandbox-Id", "other"),
                    ("E2b-Sandbox-Port", "49999"),
                ],
                d
            ),
            sandbox("abc", 49983)
        );
        for host in [
            "x.e2b.test",
            "49999-a-b.e2b.test",
            "-abc.e2b.test",
            "a.b.e2b.test",
            "99999999-a.e2b.test",
        ] {
            assert!(
                matches!(route("/", &[("host", host)], d), Destination::Unroutable(_)),
                "{host}"
            );
        }
        // Other hosts fall through to headers and paths.
        assert_eq!(
            route("/health", &[("host", "localhost:3000")], d),
            Destination::Native
        );
        assert_eq!(
            route("/health", &[("host", "e2b.test")], d),
            Destination::Native
        );
        assert_eq!(
            route("/health", &[("host", "evile2b.test")], d),
            Destination::Native
        );
        assert_eq!(
            route("/health", &[("host", "[::1]:3000")], d),
            Destination::Native
        );
    }
}
