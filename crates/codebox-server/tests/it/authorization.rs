//! Every route, called unauthenticated and as the wrong user.

use axum::http::{Method, StatusCode};
use codebox_server::openapi::RouteDoc;
use codebox_server::route_docs;
use serde_json::json;

use crate::support::{build, Reply, TestApp};

/// A request for `doc` on sandbox `id` with `key`, with a valid body.
fn request_for(
    app: &TestApp,
    doc: &RouteDoc,
    id: &str,
    key: Option<&str>,
) -> axum::http::Request<axum::body::Body> {
    let mut path = doc
        .path
        .replace("{id}", id)
        .replace("{cid}", "default-python")
        .replace("{pid}", "1001");
    if doc.params.iter().any(|param| param.name == "path") {
        path.push_str("?path=notes.txt");
    }
    let method = Method::from_bytes(doc.method.to_ascii_uppercase().as_bytes()).expect("valid");
    let body = match doc.operation_id {
        "create_sandbox" => Some(json!({"runtime": app.runtime_name()})),
        "set_sandbox_timeout" => Some(json!({"timeout": 60})),
        "run_command" => Some(json!({"cmd": "echo hi"})),
        "execute_code" => Some(json!({"code": "1 + 1"})),
        "create_context" => Some(json!({"language": "python"})),
        "make_directory" => Some(json!({"path": "d"})),
        "start_process" => Some(json!({"cmd": "sleep 100"})),
        "signal_process" => Some(json!({"signal": "SIGTERM"})),
        "move_path" => Some(json!({"from": "a", "to": "b"})),
        _ => None,
    };
    build(method, &path, key, body.map(|body| body.to_string()))
}

async fn call_every_route(app: &TestApp, id: &str, key: Option<&str>) -> Vec<(RouteDoc, Reply)> {
    let mut replies = Vec::new();
    for doc in route_docs() {
        let reply = app.call(request_for(app, &doc, id, key)).await;
        replies.push((doc, reply));
    }
    replies
}

#[tokio::test]
async fn every_authenticated_route_rejects_missing_and_bad_credentials() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    for key in [None, Some("cbx_not-a-real-key"), Some("garbage")] {
        for (doc, reply) in call_every_route(&app, &id, key).await {
            if doc.authenticated {
                assert_eq!(
                    reply.status,
                    StatusCode::UNAUTHORIZED,
                    "{} {}",
                    doc.method,
                    doc.path
                );
                assert_eq!(reply.error_code(), "UNAUTHORIZED");
            } else {
                assert_ne!(reply.status, StatusCode::UNAUTHORIZED, "{}", doc.path);
            }
        }
    }
    // Alice's sandbox survived all of that.
    let reply = app
        .get(&format!("/api/v1/sandboxes/{id}"), Some(&app.alice.key))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn another_users_sandbox_is_not_found_on_every_sandbox_route() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    for (doc, reply) in call_every_route(&app, &id, Some(&app.bob.key)).await {
        if doc.path.contains("{id}") {
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{} {}",
                doc.method,
                doc.path
            );
            assert_eq!(reply.error_code(), "NOT_FOUND");
        } else {
            assert!(
                reply.status.is_success(),
                "{} {}: {}",
                doc.method,
                doc.path,
                reply.text()
            );
        }
    }
    // Bob's listing does not show it, and it still runs for Alice.
    let listing = app
        .get("/api/v1/sandboxes", Some(&app.bob.key))
        .await
        .json();
    let ids: Vec<&str> = listing["data"]["sandboxes"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|sandbox| sandbox["id"].as_str())
        .collect();
    assert!(!ids.contains(&id.as_str()));
    let reply = app
        .get(&format!("/api/v1/sandboxes/{id}"), Some(&app.alice.key))
        .await;
    assert_eq!(reply.json()["data"]["status"], "running");
}

#[tokio::test]
async fn credentials_in_the_query_string_are_ignored() {
    let app = TestApp::start().await;
    let key = &app.alice.key;
    for path in [
        format!("/api/v1/runtimes?api_key={key}"),
        format!("/api/v1/runtimes?x-api-key={key}"),
        format!("/api/v1/runtimes?access_token={key}"),
    ] {
        let reply = app.get(&path, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn bearer_jwts_authenticate_and_bad_ones_do_not() {
    let app = TestApp::start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let secret = crate::support::JWT_SECRET;
    let valid = codebox_core::sign_jwt(
        &json!({"sub": app.alice.user.id.to_string(), "exp": now + 600}),
        secret,
    );
    let expired = codebox_core::sign_jwt(
        &json!({"sub": app.alice.user.id.to_string(), "exp": now - 3600}),
        secret,
    );
    let forged = codebox_core::sign_jwt(
        &json!({"sub": app.alice.user.id.to_string(), "exp": now + 600}),
        b"another secret",
    );
    let bearer = |token: &str| {
        let mut request = build(Method::GET, "/api/v1/runtimes", None, None);
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("valid header"),
        );
        request
    };
    assert_eq!(app.call(bearer(&valid)).await.status, StatusCode::OK);
    assert_eq!(
        app.call(bearer(&expired)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.call(bearer(&forged)).await.status,
        StatusCode::UNAUTHORIZED
    );
}
