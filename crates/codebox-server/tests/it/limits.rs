//! Rate limits and the per-user quota, through the API.

use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use codebox_config::RateLimit;
use serde_json::json;

use crate::support::{build, from_peer, Options, TestApp};

fn limit(requests: u32) -> RateLimit {
    RateLimit {
        requests,
        window: Duration::from_secs(900),
    }
}

fn retry_after_seconds(reply: &crate::support::Reply) -> u64 {
    reply.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}

#[tokio::test]
async fn failed_auth_is_limited_per_ip_with_retry_after() {
    let mut options = Options::default();
    options.server.rate_limits.anonymous_per_ip = limit(3);
    let app = TestApp::with(options).await;
    let anonymous =
        |peer: &str| from_peer(build(Method::GET, "/api/v1/runtimes", None, None), peer);
    for _ in 0..3 {
        let reply = app.call(anonymous("192.0.2.1:4000")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let limited = app.call(anonymous("192.0.2.1:4001")).await;
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    assert!(retry_after_seconds(&limited) >= 1);
    // Another client is not affected; wrong keys count like no key.
    assert_eq!(
        app.call(anonymous("192.0.2.2:4000")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong_key = from_peer(
        build(Method::GET, "/api/v1/runtimes", Some("cbx_wrong"), None),
        "192.0.2.1:4002",
    );
    assert_eq!(app.call(wrong_key).await.error_code(), "RATE_LIMITED");
    // Probes are never limited.
    let health = from_peer(build(Method::GET, "/health", None, None), "192.0.2.1:4003");
    assert_eq!(app.call(health).await.status, StatusCode::OK);
}

#[tokio::test]
async fn users_have_a_request_budget() {
    let mut options = Options::default();
    options.server.rate_limits.per_user_requests = limit(2);
    let app = TestApp::with(options).await;
    for _ in 0..2 {
        let reply = app.get("/api/v1/runtimes", Some(&app.alice.key)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = app.get("/api/v1/runtimes", Some(&app.alice.key)).await;
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    assert!(retry_after_seconds(&limited) >= 1);
    let other = app.get("/api/v1/runtimes", Some(&app.bob.key)).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn creates_have_their_own_budget() {
    let mut options = Options::default();
    options.server.rate_limits.per_user_creates = limit(1);
    let app = TestApp::with(options).await;
    app.create_sandbox(&app.alice).await;
    let body = json!({"runtime": app.runtime_name()});
    let limited = app
        .post("/api/v1/sandboxes", Some(&app.alice.key), &body)
        .await;
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    // Other requests of the same user still pass.
    let listing = app.get("/api/v1/sandboxes", Some(&app.alice.key)).await;
    assert_eq!(listing.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_respect_the_quota_exactly() {
    let app = TestApp::start().await;
    let quota = app.core.settings().limits.max_sandboxes_per_user;
    let body = json!({"runtime": app.runtime_name()}).to_string();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let router = app.router.clone();
        let request = build(
            Method::POST,
            "/api/v1/sandboxes",
            Some(&app.alice.key),
            Some(body.clone()),
        );
        tasks.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let response = router.oneshot(request).await.expect("infallible");
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("readable")
                .to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON"),
            )
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (status, json) = task.await.expect("task finished");
        if status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
            assert_eq!(json["error"]["code"], "RESOURCE_LIMIT_ERROR");
            assert_eq!(
                json["error"]["message"],
                format!("sandboxes limit exceeded: {quota}")
            );
        }
    }
    assert_eq!(created, quota);
    let listing = app
        .get("/api/v1/sandboxes?status=running", Some(&app.alice.key))
        .await
        .json();
    assert_eq!(
        listing["data"]["sandboxes"].as_array().map(Vec::len),
        Some(usize::try_from(quota).expect("small"))
    );
}

#[tokio::test]
async fn requests_over_the_request_timeout_are_cut_with_504() {
    let mut options = Options::default();
    options.server.request_timeout = Duration::from_secs(1);
    let app = TestApp::with(options).await;
    let id = app.create_sandbox(&app.alice).await;
    let reply = app
        .post(
            &format!("/api/v1/sandboxes/{id}/commands"),
            Some(&app.alice.key),
            &json!({"cmd": "sleep 30", "timeout": 60}),
        )
        .await;
    assert_eq!(reply.error_code(), "TIMEOUT");
}
