//! The sandbox lifecycle through the API, in-process.

use axum::http::StatusCode;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::support::TestApp;

fn timestamp(value: &serde_json::Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a string"), &Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn create_returns_the_full_view() {
    let app = TestApp::start().await;
    let runtime = app.runtime_name();
    let reply = app
        .post(
            "/api/v1/sandboxes",
            Some(&app.alice.key),
            &json!({"runtime": runtime, "resources": {"cpu": 1, "memory": 512},
                    "timeout": 120, "metadata": {"team": "a"}, "env_vars": {"FOO": "bar"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["success"], true);
    let view = &json["data"];
    assert_eq!(view["status"], "running");
    assert_eq!(view["runtime"], runtime.as_str());
    assert_eq!(view["resources"], json!({"cpu": 1.0, "memory": 512}));
    assert_eq!(view["metadata"], json!({"team": "a"}));
    assert!(view["isolation"].is_string());
    assert!(view.get("ended_at").is_none());
    assert!(view["id"].as_str().is_some_and(|id| id.len() == 26));
    let lifetime = timestamp(&view["expires_at"]) - timestamp(&view["created_at"]);
    assert_eq!(lifetime.whole_seconds(), 120);
    // Environment variables are not echoed back.
    assert!(view.get("env_vars").is_none());
}

#[tokio::test]
async fn list_filters_by_status_and_metadata() {
    let app = TestApp::start().await;
    let runtime = app.runtime_name();
    for team in ["a", "b"] {
        let reply = app
            .post(
                "/api/v1/sandboxes",
                Some(&app.alice.key),
                &json!({"runtime": runtime, "metadata": {"team": team}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let all = app
        .get("/api/v1/sandboxes", Some(&app.alice.key))
        .await
        .json();
    assert_eq!(all["data"]["sandboxes"].as_array().map(Vec::len), Some(2));
    assert!(all["data"]["next_cursor"].is_null());
    let team_a = app
        .get(
            "/api/v1/sandboxes?metadata.team=a&status=running",
            Some(&app.alice.key),
        )
        .await
        .json();
    let sandboxes = team_a["data"]["sandboxes"].as_array().expect("a list");
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0]["metadata"]["team"], "a");

    let bad = app
        .get("/api/v1/sandboxes?status=sleeping", Some(&app.alice.key))
        .await;
    assert_eq!(bad.error_code(), "VALIDATION_ERROR");
    assert_eq!(bad.json()["error"]["field"], "status");
}

#[tokio::test]
async fn list_paginates_with_a_cursor() {
    let app = TestApp::start().await;
    for _ in 0..3 {
        app.create_sandbox(&app.alice).await;
    }
    let first = app
        .get("/api/v1/sandboxes?limit=2", Some(&app.alice.key))
        .await
        .json();
    assert_eq!(first["data"]["sandboxes"].as_array().map(Vec::len), Some(2));
    let cursor = first["data"]["next_cursor"].as_str().expect("a next page");
    let second = app
        .get(
            &format!("/api/v1/sandboxes?limit=2&cursor={cursor}"),
            Some(&app.alice.key),
        )
        .await
        .json();
    assert_eq!(
        second["data"]["sandboxes"].as_array().map(Vec::len),
        Some(1)
    );
    let forged = app
        .get("/api/v1/sandboxes?cursor=forged", Some(&app.alice.key))
        .await;
    assert_eq!(forged.error_code(), "VALIDATION_ERROR");
}

#[tokio::test]
async fn commands_run_and_are_recorded() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let reply = app
        .post(
            &format!("/api/v1/sandboxes/{id}/commands"),
            Some(&app.alice.key),
            &json!({"cmd": "echo hi", "timeout": 10}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let result = &reply.json()["data"];
    for field in [
        "stdout",
        "stderr",
        "exit_code",
        "timed_out",
        "truncated",
        "duration_ms",
    ] {
        assert!(result.get(field).is_some(), "{field} missing from {result}");
    }
    let executions = app
        .get(
            &format!("/api/v1/sandboxes/{id}/executions"),
            Some(&app.alice.key),
        )
        .await;
    assert_eq!(executions.status, StatusCode::OK, "{}", executions.text());
    let listed = executions.json();
    assert_eq!(
        listed["data"]["executions"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn timeout_extends_the_lifetime() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let before = app
        .get(&format!("/api/v1/sandboxes/{id}"), Some(&app.alice.key))
        .await
        .json();
    let reply = app
        .post(
            &format!("/api/v1/sandboxes/{id}/timeout"),
            Some(&app.alice.key),
            &json!({"timeout": 3600}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let after = reply.json();
    assert!(timestamp(&after["data"]["expires_at"]) > timestamp(&before["data"]["expires_at"]));
    let too_long = app
        .post(
            &format!("/api/v1/sandboxes/{id}/timeout"),
            Some(&app.alice.key),
            &json!({"timeout": 90 * 86_400}),
        )
        .await;
    assert_eq!(too_long.error_code(), "VALIDATION_ERROR");
    assert_eq!(too_long.json()["error"]["field"], "timeout");
}

#[tokio::test]
async fn delete_returns_the_final_view_then_the_sandbox_is_gone() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let path = format!("/api/v1/sandboxes/{id}");
    let reply = app.delete(&path, Some(&app.alice.key)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let view = &reply.json()["data"];
    assert_eq!(view["status"], "terminated");
    assert_eq!(view["termination_reason"], "killed");
    assert!(view["ended_at"].is_string());

    for reply in [
        app.get(&path, Some(&app.alice.key)).await,
        app.delete(&path, Some(&app.alice.key)).await,
        app.post(
            &format!("{path}/commands"),
            Some(&app.alice.key),
            &json!({"cmd": "true"}),
        )
        .await,
    ] {
        assert_eq!(reply.error_code(), "SANDBOX_GONE");
        assert_eq!(reply.json()["error"]["reason"], "killed");
    }
    // The history of an ended sandbox stays readable.
    let executions = app
        .get(&format!("{path}/executions"), Some(&app.alice.key))
        .await;
    assert_eq!(executions.status, StatusCode::OK);
}

#[tokio::test]
async fn runtimes_are_listed() {
    let app = TestApp::start().await;
    let reply = app.get("/api/v1/runtimes", Some(&app.alice.key)).await;
    let runtimes = reply.json()["data"]["runtimes"].clone();
    let names: Vec<&str> = runtimes
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|runtime| runtime["name"].as_str())
        .collect();
    assert!(names.contains(&app.runtime_name().as_str()));
    assert!(runtimes[0]["version"].is_string());
}
