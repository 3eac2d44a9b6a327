//! Stateful code execution over HTTP: JSON, NDJSON and SSE shapes, streaming
//! while the code runs, interrupt, disconnect, shutdown, contexts and limits.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::{build, TestApp};

fn execute_path(id: &str) -> String {
    format!("/api/v1/sandboxes/{id}/execute")
}

fn streaming(app: &TestApp, id: &str, accept: &str, body: &Value) -> Request<Body> {
    let mut request = build(
        Method::POST,
        &execute_path(id),
        Some(&app.alice.key),
        Some(body.to_string()),
    );
    request
        .headers_mut()
        .insert(header::ACCEPT, accept.parse().expect("valid header"));
    request
}

/// The response of a streamed execution, read frame by frame.
struct Stream {
    body: Body,
}

impl Stream {
    async fn open(app: &TestApp, request: Request<Body>, content_type: &str) -> Self {
        let response = app
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
        assert!(response.headers().contains_key("x-execution-id"));
        Stream {
            body: response.into_body(),
        }
    }

    /// The next chunk of bytes; `None` at the end of the body.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            let frame = self
                .body
                .frame()
                .await?
                .expect("in-memory bodies are readable");
            if let Ok(data) = frame.into_data() {
                return Some(data.to_vec());
            }
        }
    }

    /// Everything left, as text.
    async fn rest(mut self) -> String {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await {
            all.extend(chunk);
        }
        String::from_utf8(all).expect("UTF-8")
    }
}

fn ndjson_events(text: &str) -> Vec<Value> {
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| {
            assert!(!line.trim().is_empty(), "no blank lines: {text:?}");
            serde_json::from_str(line).expect("each line is JSON")
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("typed"))
        .collect()
}

#[tokio::test]
async fn json_answer_has_the_documented_shape_and_state_persists() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let key = Some(app.alice.key.as_str());
    let first = app
        .post(&execute_path(&id), key, &json!({"code": "x = 1"}))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let reply = app
        .post(
            &execute_path(&id),
            key,
            &json!({"code": "print('hi')\nx + 1", "timeout": 10}),
        )
        .await;
    let json = reply.json();
    assert_eq!(json["success"], true);
    let data = &json["data"];
    assert_eq!(data["text"], "2");
    assert_eq!(data["execution_count"], 2);
    assert_eq!(
        data["results"],
        json!([{"text/plain": "2", "is_main_result": true}])
    );
    assert_eq!(data["logs"], json!({"stdout": ["hi\n"], "stderr": []}));
    assert_eq!(data["error"], Value::Null);
    assert_eq!(data["truncated"], false);
    assert_eq!(data["outcome"], "ok");
    assert_eq!(data["context_id"], "default-python");
    assert!(data["duration_ms"].is_u64());
    assert!(data["execution_id"].is_string());
    let error = app
        .post(&execute_path(&id), key, &json!({"code": "1/0"}))
        .await
        .json();
    assert_eq!(error["data"]["error"]["name"], "ZeroDivisionError");
    assert!(error["data"]["error"]["traceback"]
        .as_str()
        .expect("text")
        .contains("Traceback"));
    let listing = app
        .get(&format!("/api/v1/sandboxes/{id}/executions"), key)
        .await
        .json();
    let executions = listing["data"]["executions"].as_array().expect("a list");
    assert_eq!(executions.len(), 3);
    assert!(executions
        .iter()
        .all(|e| e["context_id"] == "default-python"));
    assert!(executions
        .iter()
        .any(|e| e["status"] == "failed" && e["execution_count"] == 3));
}

#[tokio::test]
async fn ndjson_streams_events_in_order_and_ends_with_end() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let body = json!({"code": "print('a')\nsleep(0.01)\nprint('b', file=sys.stderr)\nhtml('<b>x</b>')\n1 + 1"});
    let request = streaming(&app, &id, "application/x-ndjson", &body);
    let text = Stream::open(&app, request, "application/x-ndjson")
        .await
        .rest()
        .await;
    let events = ndjson_events(&text);
    assert_eq!(
        types(&events),
        ["stdout", "stderr", "result", "result", "end"]
    );
    assert_eq!(events[0]["text"], "a\n");
    assert_eq!(events[1]["text"], "b\n");
    assert_eq!(events[2]["text/html"], "<b>x</b>");
    assert_eq!(events[2]["is_main_result"], false);
    assert_eq!(events[3]["text/plain"], "2");
    assert_eq!(events[3]["is_main_result"], true);
    let end = &events[4];
    assert_eq!(end["outcome"], "ok");
    assert_eq!(end["execution_count"], 1);
    assert!(end["duration_ms"].is_u64());
    assert!(end.get("reason").is_none());
}

#[tokio::test]
async fn sse_frames_name_their_events() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let request = streaming(
        &app,
        &id,
        "text/event-stream",
        &json!({"code": "print('a')\n1/0"}),
    );
    let text = Stream::open(&app, request, "text/event-stream")
        .await
        .rest()
        .await;
    let frames: Vec<&str> = text.split_terminator("\n\n").collect();
    let names: Vec<&str> = frames
        .iter()
        .map(|frame| {
            let (event, data) = frame.split_once('\n').expect("two lines");
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").expect("data line"))
                .expect("JSON");
            let name = event.strip_prefix("event: ").expect("event line");
            assert_eq!(data["type"], name);
            name
        })
        .collect();
    assert_eq!(names, ["stdout", "error", "end"]);
    assert!(text.contains("ZeroDivisionError"));
}

#[tokio::test]
async fn output_arrives_while_the_code_runs_and_interrupt_keeps_state() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let key = Some(app.alice.key.as_str());
    app.post(&execute_path(&id), key, &json!({"code": "x = 3"}))
        .await;
    let body = json!({"code": "print('first')\nwhile True: pass", "timeout": 300});
    let request = streaming(&app, &id, "application/x-ndjson", &body);
    let mut stream = Stream::open(&app, request, "application/x-ndjson").await;
    let first = stream.chunk().await.expect("a first event");
    let first: Value = serde_json::from_slice(&first).expect("one JSON line");
    assert_eq!(first, json!({"type": "stdout", "text": "first\n"}));
    // The cell is still running: interrupt it through the API.
    let path = format!("/api/v1/sandboxes/{id}/contexts/default-python/interrupt");
    let reply = app.post(&path, key, &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let events = ndjson_events(&stream.rest().await);
    assert_eq!(types(&events), ["error", "end"]);
    assert_eq!(events[0]["name"], "KeyboardInterrupt");
    assert_eq!(events[1]["outcome"], "interrupted");
    let after = app
        .post(&execute_path(&id), key, &json!({"code": "x"}))
        .await
        .json();
    assert_eq!(after["data"]["text"], "3");
}

#[tokio::test]
async fn a_client_that_disconnects_interrupts_the_code() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let key = Some(app.alice.key.as_str());
    let body = json!({"code": "x = 4\nprint('going')\nwhile True: pass", "timeout": 300});
    let request = streaming(&app, &id, "application/x-ndjson", &body);
    let mut stream = Stream::open(&app, request, "application/x-ndjson").await;
    assert!(stream.chunk().await.is_some());
    drop(stream);
    // Were the endless cell still running, this would wait behind it for 300 s.
    let after = app
        .post(&execute_path(&id), key, &json!({"code": "x"}))
        .await
        .json();
    assert_eq!(after["data"]["text"], "4");
    let path = format!("/api/v1/sandboxes/{id}/executions");
    let mut statuses = Vec::new();
    for _ in 0..1000 {
        let listing = app.get(&path, key).await.json();
        statuses = listing["data"]["executions"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| e["status"].as_str().expect("status").to_owned())
            .collect();
        if statuses.len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(statuses.contains(&"cancelled".to_owned()), "{statuses:?}");
}

#[tokio::test]
async fn graceful_shutdown_ends_open_streams_with_a_final_event() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let body = json!({"code": "print('a')\nsleep(1000)", "timeout": 300});
    let request = streaming(&app, &id, "application/x-ndjson", &body);
    let mut stream = Stream::open(&app, request, "application/x-ndjson").await;
    assert!(stream.chunk().await.is_some());
    app.state.close_streams();
    let events = ndjson_events(&stream.rest().await);
    assert_eq!(types(&events), ["end"]);
    assert_eq!(events[0]["reason"], "server_shutdown");
    assert_eq!(events[0]["outcome"], "interrupted");
}

#[tokio::test]
async fn contexts_can_be_created_listed_restarted_and_deleted() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let key = Some(app.alice.key.as_str());
    let contexts = format!("/api/v1/sandboxes/{id}/contexts");
    let created = app
        .post(
            &contexts,
            key,
            &json!({"language": "python", "cwd": "/tmp"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let context = created.json()["data"].clone();
    assert_eq!(context["language"], "python");
    assert_eq!(context["cwd"], "/tmp");
    assert_eq!(context["is_default"], false);
    let cid = context["id"].as_str().expect("an id").to_owned();
    let run = |code: &str, cid: &str| json!({"code": code, "context_id": cid});
    app.post(&execute_path(&id), key, &run("y = 9", &cid)).await;
    // The default context does not see y.
    let default = app
        .post(&execute_path(&id), key, &json!({"code": "y"}))
        .await
        .json();
    assert_eq!(default["data"]["error"]["name"], "NameError");
    let listed = app.get(&contexts, key).await.json();
    let ids: Vec<&str> = listed["data"]["contexts"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        ids.contains(&cid.as_str()) && ids.contains(&"default-python"),
        "{ids:?}"
    );
    let restarted = app
        .post(&format!("{contexts}/{cid}/restart"), key, &json!({}))
        .await;
    assert_eq!(restarted.status, StatusCode::OK, "{}", restarted.text());
    let gone = app
        .post(&execute_path(&id), key, &run("y", &cid))
        .await
        .json();
    assert_eq!(gone["data"]["error"]["name"], "NameError");
    let deleted = app.delete(&format!("{contexts}/{cid}"), key).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json()["data"], json!({"id": cid, "deleted": true}));
    let again = app.delete(&format!("{contexts}/{cid}"), key).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "NOT_FOUND");
    let unknown = app.post(&execute_path(&id), key, &run("1", &cid)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = app
        .post(&contexts, key, &json!({"language": "cobol"}))
        .await;
    assert_eq!(bad.error_code(), "VALIDATION_ERROR");
}

#[tokio::test]
async fn oversized_code_is_413_and_bad_requests_are_400() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let key = Some(app.alice.key.as_str());
    let limit = app.core.settings().limits.max_code_size as usize;
    let big = app
        .post(
            &execute_path(&id),
            key,
            &json!({"code": "x".repeat(limit + 1)}),
        )
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.text());
    assert_eq!(big.error_code(), "PAYLOAD_TOO_LARGE");
    for body in [
        json!({"code": "1", "language": "cobol"}),
        json!({"code": "1", "timeout": 0}),
        json!({"code": "1", "unknown": true}),
        json!({"language": "python"}),
    ] {
        let reply = app.post(&execute_path(&id), key, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
    }
    // Nothing ran, nothing was recorded.
    let listing = app
        .get(&format!("/api/v1/sandboxes/{id}/executions"), key)
        .await
        .json();
    assert_eq!(listing["data"]["executions"], json!([]));
}

#[tokio::test]
async fn output_over_the_cap_is_dropped_and_flagged() {
    let mut options = crate::support::Options::default();
    options.core.limits.max_output_bytes = 8;
    let app = TestApp::with(options).await;
    let id = app.create_sandbox(&app.alice).await;
    let key = Some(app.alice.key.as_str());
    let code = "print('0123456789')\nprint('more')";
    let reply = app
        .post(&execute_path(&id), key, &json!({"code": code}))
        .await
        .json();
    assert_eq!(reply["data"]["logs"]["stdout"], json!(["01234567"]));
    assert_eq!(reply["data"]["truncated"], true);
    let request = streaming(&app, &id, "application/x-ndjson", &json!({"code": code}));
    let text = Stream::open(&app, request, "application/x-ndjson")
        .await
        .rest()
        .await;
    let events = ndjson_events(&text);
    assert_eq!(events.last().expect("an end")["truncated"], true);
}

#[tokio::test]
async fn silent_streams_get_keepalives_in_both_formats() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    // The fake's `sleep` runs on tokio time: paused, the 20 silent seconds (past
    // the 15 s keep-alive interval, within the 30 s default timeout) pass at once.
    tokio::time::pause();
    let body = json!({"code": "sleep(20)\n1 + 1"});
    let request = streaming(&app, &id, "application/x-ndjson", &body);
    let text = Stream::open(&app, request, "application/x-ndjson")
        .await
        .rest()
        .await;
    let events = ndjson_events(&text);
    let kinds = types(&events);
    assert_eq!(kinds.first(), Some(&"keepalive"), "{text}");
    assert_eq!(kinds.last(), Some(&"end"), "{text}");
    assert!(kinds.contains(&"result"), "{text}");
    assert_eq!(events[0], json!({"type": "keepalive"}));

    let request = streaming(&app, &id, "text/event-stream", &body);
    let text = Stream::open(&app, request, "text/event-stream")
        .await
        .rest()
        .await;
    assert!(text.starts_with(": keep-alive\n\n"), "{text}");
    assert!(text.contains("event: end\n"), "{text}");
}
