//! A server in-process: SQLite in memory, the fake runtime (with streaming code
//! execution), two users with keys.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use codebox_core::{Core, CoreSettings, Secrets, User};
use codebox_runtime::fake::FakeRuntime;
use codebox_server::{router, AppState, ServerSettings};
use codebox_store::LocalRateLimiter;
use codebox_store::{SqliteStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const JWT_SECRET: &[u8] = b"test-jwt-secret-0123456789abcdef";

/// A user and one of its API keys.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub key: String,
}

/// Wraps the store, e.g. in one that fails on demand.
pub type StoreWrapper = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send>;

/// What a test can change before the app starts.
pub struct Options {
    pub server: ServerSettings,
    pub core: CoreSettings,
    pub wrap_store: StoreWrapper,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            core: CoreSettings::with_defaults(Secrets {
                api_key_secret: b"test-api-key-secret".to_vec(),
                jwt_secret: Some(JWT_SECRET.to_vec()),
            }),
            wrap_store: Box::new(|store| store),
        }
    }
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub core: Arc<Core>,
    pub runtime: Arc<FakeRuntime>,
    pub alice: Caller,
    pub bob: Caller,
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
        let store = (options.wrap_store)(store);
        let runtime = Arc::new(FakeRuntime::new());
        let core = Arc::new(Core::new(store, Arc::clone(&runtime) as _, options.core));
        let alice = caller(&core, "alice").await;
        let bob = caller(&core, "bob").await;
        let state = AppState::new(
            Arc::clone(&core),
            options.server,
            Arc::new(LocalRateLimiter::new(10_000)),
        );
        Self {
            router: router(state.clone()),
            state,
            core,
            runtime,
            alice,
            bob,
        }
    }

    /// Sends one request through the whole router.
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

    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.call(build(Method::GET, path, key, None)).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> Reply {
        self.call(build(Method::DELETE, path, key, None)).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.call(build(Method::POST, path, key, Some(body.to_string())))
            .await
    }

    /// Creates a sandbox for `caller` and returns its id.
    pub async fn create_sandbox(&self, caller: &Caller) -> String {
        let reply = self
            .post(
                "/api/v1/sandboxes",
                Some(&caller.key),
                &serde_json::json!({"runtime": self.runtime_name()}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()["data"]["id"]
            .as_str()
            .expect("the view has an id")
            .to_owned()
    }

    /// A runtime the fake offers.
    pub fn runtime_name(&self) -> String {
        self.core
            .runtimes()
            .first()
            .expect("the fake runtime offers runtimes")
            .name
            .clone()
    }
}

async fn caller(core: &Core, name: &str) -> Caller {
    let user = core.create_user(name, false).await.expect("user created");
    let (key, _) = core.create_api_key(&user, None).await.expect("key created");
    Caller { user, key }
}

/// A request with an optional API key and an optional JSON body.
pub fn build(method: Method, path: &str, key: Option<&str>, body: Option<String>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("x-api-key", key);
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(body)
        }
        None => Body::empty(),
    };
    builder.body(body).expect("test requests are well-formed")
}

/// Marks a request as coming from `peer`, as the real server does.
pub fn from_peer(mut request: Request<Body>, peer: &str) -> Request<Body> {
    let address: SocketAddr = peer.parse().expect("a socket address");
    request.extensions_mut().insert(ConnectInfo(address));
    request
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

    /// The envelope's error code; fails unless this is a complete error envelope.
    pub fn error_code(&self) -> String {
        let json = self.json();
        assert_eq!(json["success"], false, "{json}");
        let request_id = json["error"]["request_id"]
            .as_str()
            .expect("errors carry a request id");
        assert_eq!(
            self.headers["x-request-id"], request_id,
            "the body and the header carry the same request id"
        );
        json["error"]["code"]
            .as_str()
            .expect("errors carry a code")
            .to_owned()
    }
}
