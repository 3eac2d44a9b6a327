//! The envd router in front of a real `Core` (SQLite in memory) with the fake
//! runtime or the Linux one, the `EnvdTarget` extension inserted as the E2B
//! gateway does; Connect calls and envelope parsing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::Router;
use codebox_core::{Core, CoreSettings, CreateSandboxRequest, Secrets, User};
use codebox_envd::EnvdTarget;
use codebox_runtime::Runtime;
use codebox_store::{SqliteStore, Store};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const TOKEN: &str = "envd-test-token";

pub struct Env {
    pub router: Router,
    pub core: Arc<Core>,
    pub user: User,
    pub sandbox: String,
    /// Kept for the Linux runtime's root directory.
    pub _root: Option<tempfile::TempDir>,
}

async fn env_with(runtime: Arc<dyn Runtime>, root: Option<tempfile::TempDir>) -> Env {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_in_memory()
            .await
            .expect("in-memory SQLite opens"),
    );
    let settings = CoreSettings::with_defaults(Secrets {
        api_key_secret: b"envd-test-secret".to_vec(),
        jwt_secret: None,
    });
    let core = Arc::new(Core::new(store, runtime, settings));
    let user = core.create_user("alice", false).await.expect("user");
    let runtime_name = core
        .runtimes()
        .first()
        .expect("a runtime is offered")
        .name
        .clone();
    let record = core
        .create_sandbox(
            &user,
            CreateSandboxRequest {
                runtime: runtime_name,
                resources: None,
                timeout: Some(300),
                metadata: None,
                env_vars: Some(BTreeMap::from([("FROM_SANDBOX".into(), "yes".into())])),
            },
        )
        .await
        .expect("sandbox");
    let sandbox = record.id.to_string();
    let router = with_target(&core, &user, &sandbox, TOKEN);
    Env {
        router,
        core,
        user,
        sandbox,
        _root: root,
    }
}

/// The router as the gateway mounts it for one sandbox.
pub fn with_target(core: &Arc<Core>, user: &User, sandbox: &str, token: &str) -> Router {
    codebox_envd::router(Arc::clone(core)).layer(axum::Extension(EnvdTarget {
        sandbox_id: sandbox.to_owned(),
        owner: user.clone(),
        access_token: token.to_owned(),
    }))
}

pub async fn fake() -> Env {
    let runtime = Arc::new(codebox_runtime::fake::FakeRuntime::new());
    env_with(runtime, None).await
}

pub async fn linux() -> Env {
    let agent = std::env::var_os("CODEBOX_AGENT_PATH").expect(
        "CODEBOX_AGENT_PATH is unset: build the static agent with \
         `CODEBOX_AGENT_PATH=$(scripts/build-agent)`",
    );
    let root = tempfile::tempdir().expect("tempdir");
    let mut config =
        codebox_runtime::LinuxRuntimeConfig::new(root.path().join("runtime"), agent.into());
    let salt = codebox_types::SandboxId::generate()
        .as_str()
        .bytes()
        .fold(0u32, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u32::from(b))
        });
    config.pool_size = 0;
    config.cgroup_parent = format!("codebox-envd-test-{}", salt % 1_000_000_000);
    config.max_sandboxes = 4;
    config.uid_base = 200_000_000 + (salt % 5000) * 4 * 65_536;
    let runtime = codebox_runtime::LinuxRuntime::new(config).expect("the Linux runtime starts");
    runtime.recover().await.expect("recover");
    env_with(Arc::new(runtime), Some(root)).await
}

/// A finished response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The envelopes of a streaming body.
    pub fn frames(&self) -> Vec<(u8, Value)> {
        let mut frames = Vec::new();
        let mut rest = &self.body[..];
        while !rest.is_empty() {
            assert!(rest.len() >= 5, "a truncated envelope header");
            let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let payload = &rest[5..5 + length];
            frames.push((
                rest[0],
                serde_json::from_slice(payload).expect("envelopes hold JSON"),
            ));
            rest = &rest[5 + length..];
        }
        frames
    }
}

pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flags];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

impl Env {
    pub async fn send(&self, request: Request<Body>) -> axum::response::Response {
        self.router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible")
    }

    pub async fn call(&self, request: Request<Body>) -> Reply {
        let response = self.send(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("bodies are readable")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A unary Connect call.
    pub async fn unary(&self, method: &str, message: Value, extra: &[(&str, &str)]) -> Reply {
        let mut request = Request::post(method).header(header::CONTENT_TYPE, "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        self.call(
            request
                .body(Body::from(message.to_string()))
                .expect("a valid request"),
        )
        .await
    }

    /// A server-streaming request (one envelope).
    pub fn stream_request(method: &str, message: &Value, extra: &[(&str, &str)]) -> Request<Body> {
        let mut request =
            Request::post(method).header(header::CONTENT_TYPE, "application/connect+json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request
            .body(Body::from(envelope(0, message.to_string().as_bytes())))
            .expect("a valid request")
    }

    /// A server-streaming call read to its end.
    pub async fn stream(&self, method: &str, message: Value, extra: &[(&str, &str)]) -> Reply {
        self.call(Self::stream_request(method, &message, extra))
            .await
    }

    /// A server-streaming call read frame by frame.
    pub async fn open_stream(&self, method: &str, message: Value) -> FrameReader {
        let response = self.send(Self::stream_request(method, &message, &[])).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/connect+json"))
        );
        FrameReader {
            body: StreamExt::boxed(response.into_body().into_data_stream()),
            buffer: Vec::new(),
        }
    }
}

/// Reads envelopes as they arrive.
pub struct FrameReader {
    body: futures_util::stream::BoxStream<'static, Result<axum::body::Bytes, axum::Error>>,
    buffer: Vec<u8>,
}

impl FrameReader {
    pub async fn next(&mut self) -> Option<(u8, Value)> {
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if self.buffer.len() >= 5 + length {
                    let flags = self.buffer[0];
                    let value = serde_json::from_slice(&self.buffer[5..5 + length])
                        .expect("envelopes hold JSON");
                    self.buffer.drain(..5 + length);
                    return Some((flags, value));
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => panic!("the stream failed: {error}"),
                None => return None,
            }
        }
    }

    /// The next frame that is not a keepalive.
    pub async fn next_event(&mut self) -> (u8, Value) {
        loop {
            let frame = self.next().await.expect("the stream goes on");
            if frame.1["event"].get("keepalive").is_none() {
                return frame;
            }
        }
    }
}

/// Decodes a base64 field.
pub fn b64(value: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .expect("valid base64")
}
