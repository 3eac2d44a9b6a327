//! Process routes against the fake runtime: background start, list, stdin,
//! reattach, signals, and the streamed foreground form.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::TestApp;

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect()
}

#[tokio::test]
async fn a_background_process_takes_stdin_streams_and_ends_by_close() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let base = format!("/api/v1/sandboxes/{id}/processes");
    let started = app
        .post(
            &base,
            Some(&key),
            &json!({"cmd": "cat", "stdin": true, "tag": "echo"}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text());
    let pid = started.json()["data"]["pid"].as_u64().expect("a pid");

    let listed = app.get(&base, Some(&key)).await.json();
    assert_eq!(listed["data"]["processes"][0]["pid"], pid);
    assert_eq!(listed["data"]["processes"][0]["tag"], "echo");

    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/{pid}/stdin"))
        .header("x-api-key", &key)
        .body(Body::from("hello\n"))
        .expect("well-formed");
    let written = app.call(request).await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.text());
    assert_eq!(written.json()["data"]["written"], 6);
    let closed = app
        .post(&format!("{base}/{pid}/close-stdin"), Some(&key), &json!({}))
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.text());
    // Output buffered while nobody listened is handed to a late subscriber;
    // the process has ended, so reattaching now is a 404.
    let reattach = app.get(&format!("{base}/{pid}/stream"), Some(&key)).await;
    assert_eq!(
        reattach.status,
        StatusCode::NOT_FOUND,
        "{}",
        reattach.text()
    );
}

#[tokio::test]
async fn reattach_sees_new_output_and_a_signal_ends_the_process() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let base = format!("/api/v1/sandboxes/{id}/processes");
    let started = app
        .post(&base, Some(&key), &json!({"cmd": "cat", "stdin": true}))
        .await;
    let pid = started.json()["data"]["pid"].as_u64().expect("a pid");
    let core = app.core.clone();
    let user = app.alice.user.clone();
    let sandbox = id.clone();
    let mut output = core
        .process_output(&user, &sandbox, &pid.to_string())
        .await
        .expect("subscribes");
    assert_eq!(
        output.next_event().await,
        Some(codebox_core::ProcessEvent::Start {
            pid: pid as u32,
            dropped_bytes: 0
        })
    );
    core.process_stdin(&user, &sandbox, &pid.to_string(), b"abc".to_vec())
        .await
        .expect("writes");
    assert_eq!(
        output.next_event().await,
        Some(codebox_core::ProcessEvent::Stdout { data: "abc".into() })
    );
    let bad = app
        .post(
            &format!("{base}/{pid}/signal"),
            Some(&key),
            &json!({"signal": "SIGNOPE"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let sent = app
        .post(
            &format!("{base}/{pid}/signal"),
            Some(&key),
            &json!({"signal": "SIGTERM"}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text());
    assert_eq!(
        output.next_event().await,
        Some(codebox_core::ProcessEvent::End {
            exit_code: None,
            signal: Some(15),
            timed_out: false
        })
    );
    assert_eq!(output.next_event().await, None);
    let listed = app.get(&base, Some(&key)).await.json();
    assert_eq!(listed["data"]["processes"], json!([]));
}

#[tokio::test]
async fn a_foreground_process_streams_until_its_end() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let base = format!("/api/v1/sandboxes/{id}/processes");
    let request = Request::builder()
        .method(Method::POST)
        .uri(&base)
        .header("x-api-key", &key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"cmd": "sleep 100", "background": false}).to_string(),
        ))
        .expect("well-formed");
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a first event")
        .expect("readable")
        .into_data()
        .expect("data");
    let start = ndjson(std::str::from_utf8(&first).expect("UTF-8"));
    assert_eq!(start[0]["type"], "start");
    let pid = start[0]["pid"].as_u64().expect("a pid");
    // The process outlives nothing yet: it is listed, then killed by a signal,
    // which ends the stream with its `end` event.
    let listed = app.get(&base, Some(&key)).await.json();
    assert_eq!(listed["data"]["processes"][0]["pid"], pid);
    let sent = app
        .post(
            &format!("{base}/{pid}/signal"),
            Some(&key),
            &json!({"signal": "SIGKILL"}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text());
    let rest = body.collect().await.expect("the stream ends").to_bytes();
    let events = ndjson(std::str::from_utf8(&rest).expect("UTF-8"));
    let end = events.last().expect("an end event");
    assert_eq!(end["type"], "end");
    assert_eq!(end["signal"], 9);
}

#[tokio::test]
async fn metrics_report_usage_and_limits() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let reply = app
        .get(&format!("/api/v1/sandboxes/{id}/metrics"), Some(&key))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let data = &reply.json()["data"];
    assert_eq!(data["pids"], 1);
    assert!(
        data["memory_limit_bytes"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    assert!(data["disk_limit_bytes"].as_u64().unwrap_or(0) > 0, "{data}");
    assert!(data["cpu_limit"].as_f64().unwrap_or(0.0) > 0.0, "{data}");
}
