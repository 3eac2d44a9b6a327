//! The system routes and dependency failures: `/ready` when the store is down,
//! authentication failing closed, panics, metrics, docs.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{header, StatusCode};
use codebox_store::{
    ApiKeyRecord, ExecutionRecord, NewApiKey, Page, PurgeReport, SandboxFilter, SandboxRecord,
    Store, StoreError, User,
};
use codebox_types::{ApiKeyId, SandboxId, SandboxStatus, TerminationReason, UserId};
use time::OffsetDateTime;

use crate::support::{Options, TestApp};

const HEALTHY: u8 = 0;
/// Every call fails as if the database were unreachable.
const DOWN: u8 = 1;
/// Sandbox reads panic (a bug deep below a handler).
const PANICS: u8 = 2;

/// A store that fails on demand.
struct FlakyStore {
    inner: Arc<dyn Store>,
    mode: Arc<AtomicU8>,
}

impl FlakyStore {
    fn gate(&self, operation: &'static str) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            DOWN => Err(StoreError::Unavailable {
                operation,
                source: Box::new(std::io::Error::other("connection refused (test)")),
            }),
            PANICS if operation.contains("sandbox") => {
                panic!("secret internal detail: /var/lib/codebox/db.sqlite")
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate("ping")?;
        self.inner.ping().await
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        self.gate("count_users")?;
        self.inner.count_users().await
    }
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.gate("create_user")?;
        self.inner.create_user(user).await
    }
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.gate("get_user")?;
        self.inner.get_user(id).await
    }
    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.gate("get_user_by_name")?;
        self.inner.get_user_by_name(name).await
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.gate("list_users")?;
        self.inner.list_users().await
    }
    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        self.gate("create_api_key")?;
        self.inner.create_api_key(key).await
    }
    async fn find_api_key(&self, hash: &str) -> Result<Option<(ApiKeyRecord, User)>, StoreError> {
        self.gate("find_api_key")?;
        self.inner.find_api_key(hash).await
    }
    async fn list_api_keys(&self, user: Option<&UserId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.gate("list_api_keys")?;
        self.inner.list_api_keys(user).await
    }
    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<bool, StoreError> {
        self.gate("revoke_api_key")?;
        self.inner.revoke_api_key(id).await
    }
    async fn insert_sandbox(&self, record: &SandboxRecord, max: u32) -> Result<(), StoreError> {
        self.gate("insert_sandbox")?;
        self.inner.insert_sandbox(record, max).await
    }
    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        self.gate("get_sandbox")?;
        self.inner.get_sandbox(id).await
    }
    async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SandboxRecord>, StoreError> {
        self.gate("list_sandboxes")?;
        self.inner.list_sandboxes(filter, cursor, limit).await
    }
    async fn mark_sandbox_running(&self, id: &SandboxId) -> Result<bool, StoreError> {
        self.gate("mark_sandbox_running")?;
        self.inner.mark_sandbox_running(id).await
    }
    async fn end_sandbox(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: TerminationReason,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.gate("end_sandbox")?;
        self.inner.end_sandbox(id, status, reason, at).await
    }
    async fn set_sandbox_expiry(
        &self,
        id: &SandboxId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.gate("set_sandbox_expiry")?;
        self.inner.set_sandbox_expiry(id, expires_at).await
    }
    async fn list_live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        self.gate("list_live_sandboxes")?;
        self.inner.list_live_sandboxes().await
    }
    async fn list_expired_sandboxes(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<SandboxId>, StoreError> {
        self.gate("list_expired_sandboxes")?;
        self.inner.list_expired_sandboxes(now).await
    }
    async fn insert_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        self.gate("insert_execution")?;
        self.inner.insert_execution(record).await
    }
    async fn list_executions(
        &self,
        sandbox_id: &SandboxId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<ExecutionRecord>, StoreError> {
        self.gate("list_executions")?;
        self.inner.list_executions(sandbox_id, cursor, limit).await
    }
    async fn purge(
        &self,
        executions_before: OffsetDateTime,
        sandboxes_before: OffsetDateTime,
    ) -> Result<PurgeReport, StoreError> {
        self.gate("purge")?;
        self.inner.purge(executions_before, sandboxes_before).await
    }
}

async fn app_with_flaky_store() -> (TestApp, Arc<AtomicU8>) {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let handle = Arc::clone(&mode);
    let options = Options {
        wrap_store: Box::new(move |inner| {
            Arc::new(FlakyStore {
                inner,
                mode: handle,
            })
        }),
        ..Options::default()
    };
    (TestApp::with(options).await, mode)
}

#[tokio::test]
async fn ready_is_503_with_retry_after_when_the_store_is_down() {
    let (app, mode) = app_with_flaky_store().await;
    let reply = app.get("/ready", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["data"]["ready"], true);

    mode.store(DOWN, Ordering::SeqCst);
    let reply = app.get("/ready", None).await;
    assert_eq!(reply.error_code(), "SERVICE_UNAVAILABLE");
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    let json = reply.json();
    assert_eq!(json["data"]["ready"], false);
    let database = json["data"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["name"] == "database")
        .cloned()
        .expect("a database check");
    assert_eq!(database["ok"], false);
    // Liveness does not depend on the database.
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);

    mode.store(HEALTHY, Ordering::SeqCst);
    assert_eq!(app.get("/ready", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn authentication_fails_closed_when_the_store_is_down() {
    let (app, mode) = app_with_flaky_store().await;
    mode.store(DOWN, Ordering::SeqCst);
    let reply = app.get("/api/v1/sandboxes", Some(&app.alice.key)).await;
    assert_eq!(reply.error_code(), "SERVICE_UNAVAILABLE");
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert!(
        !reply.text().contains("connection refused"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_panic_is_a_500_envelope_without_internals() {
    let (app, mode) = app_with_flaky_store().await;
    let id = app.create_sandbox(&app.alice).await;
    mode.store(PANICS, Ordering::SeqCst);
    let reply = app
        .get(&format!("/api/v1/sandboxes/{id}"), Some(&app.alice.key))
        .await;
    assert_eq!(reply.error_code(), "INTERNAL_ERROR");
    assert_eq!(
        reply.json()["error"]["message"],
        codebox_server::INTERNAL_MESSAGE
    );
    assert!(!reply.text().contains("secret"), "{}", reply.text());
    mode.store(HEALTHY, Ordering::SeqCst);
    // The server goes on serving.
    let reply = app
        .get(&format!("/api/v1/sandboxes/{id}"), Some(&app.alice.key))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_use_route_templates_and_include_the_core_families() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    app.get(&format!("/api/v1/sandboxes/{id}"), Some(&app.alice.key))
        .await;
    app.get("/no/such/path/12345", None).await;
    let reply = app.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers[header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|value| value.starts_with("application/openmetrics-text")));
    let text = reply.text();
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/sandboxes/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(!text.contains(&id), "raw ids must not become labels");
    assert!(!text.contains("12345"), "raw paths must not become labels");
    for family in [
        "http_request_duration_seconds_bucket",
        "sandbox_create_duration_seconds",
        "sandboxes_active",
        "sandbox_creation_failures",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
}

#[tokio::test]
async fn docs_page_is_self_contained() {
    let app = TestApp::start().await;
    let reply = app.get("/docs", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let page = reply.text();
    assert!(page.contains("/api/v1/sandboxes/{id}/commands"));
    assert!(!page.contains("<script"));
    assert!(!page.contains(" src="), "the page loads nothing");
    assert!(reply.headers.contains_key(header::CONTENT_SECURITY_POLICY));
}

#[tokio::test]
async fn no_cors_headers_unless_configured() {
    use axum::http::Method;
    let app = TestApp::start().await;
    let mut request = crate::support::build(Method::GET, "/health", None, None);
    request.headers_mut().insert(
        header::ORIGIN,
        "https://app.example".parse().expect("valid"),
    );
    let reply = app.call(request).await;
    assert!(!reply
        .headers
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let mut options = Options::default();
    options.server.cors_allowed_origins = vec!["https://app.example".to_owned()];
    let app = TestApp::with(options).await;
    let mut preflight = crate::support::build(Method::OPTIONS, "/api/v1/sandboxes", None, None);
    let headers = preflight.headers_mut();
    headers.insert(
        header::ORIGIN,
        "https://app.example".parse().expect("valid"),
    );
    headers.insert(
        header::ACCESS_CONTROL_REQUEST_METHOD,
        "POST".parse().expect("valid"),
    );
    let reply = app.call(preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let mut foreign = crate::support::build(Method::GET, "/health", None, None);
    foreign.headers_mut().insert(
        header::ORIGIN,
        "https://evil.example".parse().expect("valid"),
    );
    let reply = app.call(foreign).await;
    assert!(!reply
        .headers
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let mut options = Options::default();
    options.server.metrics_on_api_port = false;
    let app = TestApp::with(options).await;
    let health = Arc::new(codebox_store::RedisHealth::default());
    let state = app.state.clone().with_redis_health(health);
    // Off the API port...
    assert_eq!(app.get("/metrics", None).await.error_code(), "NOT_FOUND");
    // ...and on the metrics router, with the Redis failure counter.
    let reply = {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = crate::support::build(axum::http::Method::GET, "/metrics", None, None);
        let response = codebox_server::metrics_router(state)
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("readable")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    };
    assert!(reply.contains("redis_failures_total 0"), "{reply}");
    assert!(reply.contains("http_requests_total"), "{reply}");
}

/// Captured log output.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn slow_requests_are_logged_as_warnings_with_their_route() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let mut request = crate::support::build(
        axum::http::Method::POST,
        &format!("/api/v1/sandboxes/{id}/commands"),
        Some(&app.alice.key),
        Some(serde_json::json!({"cmd": "sleep 2"}).to_string()),
    );
    request
        .headers_mut()
        .insert(header::USER_AGENT, "codebox-test/1".parse().expect("valid"));
    assert_eq!(app.call(request).await.status, StatusCode::OK);
    let text = String::from_utf8(logs.0.lock().expect("not poisoned").clone()).expect("utf-8");
    let line = text
        .lines()
        .find(|line| line.contains("slow request"))
        .unwrap_or_else(|| panic!("no slow-request warning in {text}"));
    let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(entry["level"], "WARN");
    assert_eq!(entry["fields"]["route"], "/api/v1/sandboxes/{id}/commands");
    assert_eq!(entry["fields"]["method"], "POST");
    assert_eq!(entry["fields"]["user_agent"], "codebox-test/1");
    assert!(entry["fields"]["duration_ms"]
        .as_u64()
        .is_some_and(|ms| ms > 1000));
    let span = &entry["span"];
    assert_eq!(span["request_id"].as_str().map(str::len), Some(32));
    assert_eq!(span["user_id"], app.alice.user.id.to_string());
    assert_eq!(span["sandbox_id"], id);
}
