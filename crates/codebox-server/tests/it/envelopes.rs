//! Error-envelope snapshots: every client mistake gets the envelope, the right
//! status and code, and a useful `field`; never axum's defaults.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::support::{build, TestApp};

/// The `error` object without the (random) request id, after checking that
/// the envelope is complete and the status is the code's.
fn snapshot(reply: &crate::support::Reply) -> Value {
    let code = reply.error_code();
    let expected_status = codebox_types::ErrorCode::ALL
        .into_iter()
        .find(|candidate| candidate.as_str() == code)
        .map(|candidate| candidate.http_status())
        .expect("a catalogue code");
    assert_eq!(reply.status.as_u16(), expected_status, "{}", reply.text());
    let mut error = reply.json()["error"].clone();
    error
        .as_object_mut()
        .expect("error is an object")
        .remove("request_id");
    error
}

async fn create_with(app: &TestApp, body: &str) -> crate::support::Reply {
    app.call(build(
        Method::POST,
        "/api/v1/sandboxes",
        Some(&app.alice.key),
        Some(body.to_owned()),
    ))
    .await
}

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let app = TestApp::start().await;
    let reply = create_with(&app, r#"{"runtime": "#).await;
    assert_eq!(
        snapshot(&reply),
        json!({"code": "INVALID_JSON", "message": "the body is not valid JSON: EOF while parsing a value"})
    );
}

#[tokio::test]
async fn unknown_field_is_named() {
    let app = TestApp::start().await;
    let reply = create_with(&app, r#"{"runtime": "bash", "gpu": 1}"#).await;
    let error = snapshot(&reply);
    assert_eq!(error["code"], "VALIDATION_ERROR");
    assert_eq!(error["field"], "gpu");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("unknown field `gpu`")),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_type_is_named() {
    let app = TestApp::start().await;
    let reply = create_with(
        &app,
        r#"{"runtime": "bash", "resources": {"cpu": "two", "memory": 512}}"#,
    )
    .await;
    assert_eq!(
        snapshot(&reply),
        json!({"code": "VALIDATION_ERROR", "field": "resources.cpu",
               "message": "invalid type: string \"two\", expected f64"})
    );
}

#[tokio::test]
async fn missing_runtime_is_named() {
    let app = TestApp::start().await;
    let reply = create_with(&app, "{}").await;
    assert_eq!(
        snapshot(&reply),
        json!({"code": "VALIDATION_ERROR", "field": "runtime", "message": "missing field `runtime`"})
    );
}

#[tokio::test]
async fn unknown_runtime_lists_the_available_ones() {
    let app = TestApp::start().await;
    let reply = create_with(&app, r#"{"runtime": "cobol85"}"#).await;
    let error = snapshot(&reply);
    assert_eq!(error["code"], "VALIDATION_ERROR");
    assert_eq!(error["field"], "runtime");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("cobol85"), "{message}");
    for runtime in app.core.runtimes() {
        assert!(
            message.contains(&runtime.name),
            "{message} lacks {}",
            runtime.name
        );
    }
}

#[tokio::test]
async fn resources_out_of_range_are_named() {
    let app = TestApp::start().await;
    let runtime = app.runtime_name();
    for (resources, field) in [
        (json!({"cpu": 0.05, "memory": 512}), "resources.cpu"),
        (json!({"cpu": 17, "memory": 512}), "resources.cpu"),
        (json!({"cpu": 1, "memory": 127}), "resources.memory"),
        (json!({"cpu": 1, "memory": 32769}), "resources.memory"),
    ] {
        let body = json!({"runtime": runtime, "resources": resources}).to_string();
        let error = snapshot(&create_with(&app, &body).await);
        assert_eq!(error["code"], "VALIDATION_ERROR", "{body}");
        assert_eq!(error["field"], field, "{body}");
    }
}

#[tokio::test]
async fn oversized_command_is_413() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let limit = app.core.settings().limits.max_code_size;
    let cmd = "x".repeat(usize::try_from(limit).expect("fits") + 1);
    let reply = app
        .post(
            &format!("/api/v1/sandboxes/{id}/commands"),
            Some(&app.alice.key),
            &json!({"cmd": cmd}),
        )
        .await;
    assert_eq!(snapshot(&reply)["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn oversized_body_is_413_before_parsing() {
    let app = TestApp::start().await;
    let huge = format!(
        r#"{{"runtime": "{}"}}"#,
        "x".repeat(app.state.settings().max_body_bytes + 1)
    );
    let reply = create_with(&app, &huge).await;
    assert_eq!(
        snapshot(&reply),
        json!({"code": "PAYLOAD_TOO_LARGE",
               "message": format!("request body larger than {} bytes", app.state.settings().max_body_bytes)})
    );
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = TestApp::start().await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/sandboxes")
        .header("x-api-key", &app.alice.key)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"runtime": "bash"}"#))
        .expect("valid request");
    let reply = app.call(request).await;
    assert_eq!(snapshot(&reply)["code"], "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn unknown_route_is_404_envelope() {
    let app = TestApp::start().await;
    let reply = app.get("/api/v2/nothing", Some(&app.alice.key)).await;
    assert_eq!(
        snapshot(&reply),
        json!({"code": "NOT_FOUND", "message": "no such route"})
    );
    let reply = app.get("/nothing", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_method_is_405_envelope_with_allow() {
    let app = TestApp::start().await;
    let request = build(Method::PUT, "/api/v1/sandboxes", Some(&app.alice.key), None);
    let reply = app.call(request).await;
    assert_eq!(
        snapshot(&reply),
        json!({"code": "METHOD_NOT_ALLOWED", "message": "method not allowed on this route"})
    );
    let allow = reply.headers[header::ALLOW].to_str().expect("ascii");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn malformed_sandbox_ids_are_404_not_400() {
    let app = TestApp::start().await;
    for path in [
        "/api/v1/sandboxes/not-an-id",
        "/api/v1/sandboxes/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/sandboxes/%FF%FE",
        "/api/v1/sandboxes/aaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let reply = app.get(path, Some(&app.alice.key)).await;
        assert_eq!(snapshot(&reply)["code"], "NOT_FOUND", "{path}");
    }
}

#[tokio::test]
async fn client_request_ids_are_echoed_and_hostile_ones_replaced() {
    let app = TestApp::start().await;
    let mut request = build(Method::GET, "/api/v1/nothing", None, None);
    request
        .headers_mut()
        .insert("x-request-id", "trace-123".parse().expect("valid"));
    let reply = app.call(request).await;
    assert_eq!(reply.headers["x-request-id"], "trace-123");
    assert_eq!(reply.json()["error"]["request_id"], "trace-123");

    let mut request = build(Method::GET, "/health", None, None);
    request
        .headers_mut()
        .insert("x-request-id", "<script>".parse().expect("valid"));
    let reply = app.call(request).await;
    assert_ne!(reply.headers["x-request-id"], "<script>");
}
