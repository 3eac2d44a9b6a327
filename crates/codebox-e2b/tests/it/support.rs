//! A server in-process: SQLite in memory, the fake runtime, the native router
//! behind the E2B gateway, two users with keys.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use codebox_core::{Core, CoreSettings, Secrets};
use codebox_e2b::{E2bSettings, E2bState};
use codebox_runtime::fake::FakeRuntime;
use codebox_server::{AppState, ServerSettings};
use codebox_store::{LocalRateLimiter, SqliteStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct Caller {
    pub key: String,
}

pub struct TestApp {
    pub router: Router,
    pub e2b: E2bState,
    pub alice: Caller,
    pub bob: Caller,
}

#[derive(Default)]
pub struct Options {
    pub server: ServerSettings,
    pub domain: Option<String>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("in-memory SQLite opens"),
        );
        let runtime = Arc::new(FakeRuntime::new());
        let settings = CoreSettings::with_defaults(Secrets {
            api_key_secret: b"test-api-key-secret".to_vec(),
            jwt_secret: None,
        });
        let core = Arc::new(Core::new(store, runtime as _, settings));
        let alice = caller(&core, "alice").await;
        let bob = caller(&core, "bob").await;
        let app = AppState::new(
            Arc::clone(&core),
            options.server,
            Arc::new(LocalRateLimiter::new(10_000)),
        );
        let e2b_settings = E2bSettings {
            domain: options.domain,
            ..E2bSettings::default()
        };
        let e2b = E2bState::new(app.clone(), e2b_settings);
        let router = codebox_e2b::router(codebox_server::router(app), e2b.clone());
        Self {
            router,
            e2b,
            alice,
            bob,
        }
    }

    pub async fn call(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("in-memory bodies are readable")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A control-plane request with `key` as X-API-Key.
    pub async fn control(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            builder = builder.header("x-api-key", key);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.call(builder.body(body).expect("valid request")).await
    }

    /// Creates a `code-interpreter-v1` sandbox for `caller`: its create answer.
    pub async fn create(&self, caller: &Caller) -> Value {
        let reply = self
            .control(
                Method::POST,
                "/v2/sandboxes",
                Some(&caller.key),
                Some(serde_json::json!({"templateID": "code-interpreter-v1", "metadata": {}, "envVars": {}})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()
    }

    /// A request to a sandbox port, routed by the E2b-Sandbox-* headers.
    pub async fn sandbox(
        &self,
        id: &str,
        port: u16,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("e2b-sandbox-id", id)
            .header("e2b-sandbox-port", port.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.call(builder.body(body).expect("valid request")).await
    }
}

async fn caller(core: &Core, name: &str) -> Caller {
    let user = core.create_user(name, false).await.expect("user created");
    let (key, _) = core.create_api_key(&user, None).await.expect("key created");
    Caller { key }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every NDJSON line, parsed; panics on a blank or non-JSON line.
    pub fn lines(&self) -> Vec<Value> {
        let text = self.text();
        assert!(
            text.ends_with('\n'),
            "the last line ends with a newline: {text:?}"
        );
        text.split_terminator('\n')
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
            })
            .collect()
    }
}

pub fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {value}"))
}
