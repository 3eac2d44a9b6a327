//! Port 49999: `/execute` NDJSON, contexts, and its tokens.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{str_of, TestApp};

const PORT: u16 = 49999;

struct Sandbox {
    id: String,
    traffic: String,
    envd: String,
}

async fn sandbox(app: &TestApp) -> Sandbox {
    let created = app.create(&app.alice).await;
    Sandbox {
        id: str_of(&created, "sandboxID").to_owned(),
        traffic: str_of(&created, "trafficAccessToken").to_owned(),
        envd: str_of(&created, "envdAccessToken").to_owned(),
    }
}

async fn execute(app: &TestApp, sandbox: &Sandbox, body: Value) -> crate::support::Reply {
    app.sandbox(
        &sandbox.id,
        PORT,
        Method::POST,
        "/execute",
        &[("e2b-traffic-access-token", &sandbox.traffic)],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn execute_streams_the_lines_the_sdks_parse_and_keeps_state() {
    let app = TestApp::start().await;
    let sandbox = sandbox(&app).await;
    let first = execute(
        &app,
        &sandbox,
        json!({"code": "x = 41", "context_id": null, "language": null, "env_vars": null}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let lines = first.lines();
    assert_eq!(lines.last(), Some(&json!({"type": "end_of_execution"})));
    let second = execute(&app, &sandbox, json!({"code": "x + 1"}))
        .await
        .lines();
    let result = second
        .iter()
        .find(|line| line["type"] == "result")
        .expect("a result line");
    assert_eq!(result["text"], "42");
    assert_eq!(result["is_main_result"], true);
    assert!(result["extra"].is_object());
    let count = second
        .iter()
        .find(|line| line["type"] == "number_of_executions")
        .expect("a count line");
    assert_eq!(count["execution_count"], 2);

    let printed = execute(&app, &sandbox, json!({"code": "print('hi')\n'quoted'"}))
        .await
        .lines();
    let stdout = printed
        .iter()
        .find(|line| line["type"] == "stdout")
        .expect("stdout");
    assert_eq!(stdout["text"], "hi\n");
    assert!(stdout["timestamp"].is_i64());
    let result = printed
        .iter()
        .find(|line| line["type"] == "result")
        .expect("result");
    assert_eq!(result["text"], "quoted", "one pair of quotes stripped");

    let failed = execute(&app, &sandbox, json!({"code": "1 / 0"}))
        .await
        .lines();
    let error = failed
        .iter()
        .find(|line| line["type"] == "error")
        .expect("an error line");
    assert_eq!(error["name"], "ZeroDivisionError");
    assert!(error["traceback"].is_string() && error["value"].is_string());
}

#[tokio::test]
async fn execute_rules_language_and_context() {
    let app = TestApp::start().await;
    let sandbox = sandbox(&app).await;
    let both = execute(
        &app,
        &sandbox,
        json!({"code": "1", "language": "python", "context_id": "ctx"}),
    )
    .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert!(both.headers[axum::http::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let unknown = execute(
        &app,
        &sandbox,
        json!({"code": "1", "context_id": "ctx-0000000000000000"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.text().contains("not found"));
    let bad_language = execute(&app, &sandbox, json!({"code": "1", "language": "cobol"})).await;
    assert_eq!(bad_language.status, StatusCode::BAD_REQUEST);
    let unknown_field = execute(&app, &sandbox, json!({"code": "1", "bogus": true})).await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    // A language selects its own default context.
    execute(
        &app,
        &sandbox,
        json!({"code": "z = 7", "language": "javascript"}),
    )
    .await;
    let in_python = execute(&app, &sandbox, json!({"code": "z"})).await.lines();
    assert!(
        in_python.iter().any(|line| line["type"] == "error"),
        "python has no z"
    );
}

#[tokio::test]
async fn contexts_create_list_restart_remove() {
    let app = TestApp::start().await;
    let sandbox = sandbox(&app).await;
    let token = [("e2b-traffic-access-token", sandbox.traffic.as_str())];
    let created = app
        .sandbox(
            &sandbox.id,
            PORT,
            Method::POST,
            "/contexts",
            &token,
            Some(json!({"language": "python", "cwd": "/home/user"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let context = created.json();
    for key in ["id", "language", "cwd"] {
        assert!(context[key].is_string(), "{key} in {context}");
    }
    let id = str_of(&context, "id").to_owned();
    execute(&app, &sandbox, json!({"code": "y = 5", "context_id": id})).await;
    let value = execute(&app, &sandbox, json!({"code": "y", "context_id": id}))
        .await
        .lines();
    assert!(value.iter().any(|line| line["text"] == "5"));
    let listed = app
        .sandbox(&sandbox.id, PORT, Method::GET, "/contexts", &token, None)
        .await
        .json();
    assert!(listed
        .as_array()
        .expect("array")
        .iter()
        .any(|c| c["id"] == id.as_str()));
    let restarted = app
        .sandbox(
            &sandbox.id,
            PORT,
            Method::POST,
            &format!("/contexts/{id}/restart"),
            &token,
            None,
        )
        .await;
    assert_eq!(restarted.status, StatusCode::OK);
    let removed = app
        .sandbox(
            &sandbox.id,
            PORT,
            Method::DELETE,
            &format!("/contexts/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    let again = app
        .sandbox(
            &sandbox.id,
            PORT,
            Method::DELETE,
            &format!("/contexts/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let health = app
        .sandbox(&sandbox.id, PORT, Method::GET, "/health", &token, None)
        .await;
    assert_eq!(health.json(), json!("OK"));
}

#[tokio::test]
async fn the_interpreter_needs_this_sandboxs_token() {
    let app = TestApp::start().await;
    let mine = sandbox(&app).await;
    let other = sandbox(&app).await;
    let body = json!({"code": "1"});
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("no token", vec![]),
        (
            "another sandbox's traffic token",
            vec![("e2b-traffic-access-token", other.traffic.as_str())],
        ),
        (
            "the envd token as traffic token",
            vec![("e2b-traffic-access-token", mine.envd.as_str())],
        ),
        (
            "a forged token",
            vec![(
                "e2b-traffic-access-token",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
        ),
        (
            "a repeated header",
            vec![
                ("e2b-traffic-access-token", mine.traffic.as_str()),
                ("e2b-traffic-access-token", mine.traffic.as_str()),
            ],
        ),
    ];
    for (what, headers) in &cases {
        for path in ["/execute", "/contexts"] {
            let reply = app
                .sandbox(
                    &mine.id,
                    PORT,
                    Method::POST,
                    path,
                    headers,
                    Some(body.clone()),
                )
                .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what} on {path}");
        }
    }
    // Older SDKs send the envd token as X-Access-Token: accepted.
    let old = app
        .sandbox(
            &mine.id,
            PORT,
            Method::POST,
            "/execute",
            &[("x-access-token", &mine.envd)],
            Some(body.clone()),
        )
        .await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.text());
    // A killed sandbox is unreachable even with its token.
    app.control(
        Method::DELETE,
        &format!("/sandboxes/{}", mine.id),
        Some(&app.alice.key),
        None,
    )
    .await;
    let gone = execute(&app, &mine, body).await;
    assert_eq!(gone.status, StatusCode::BAD_GATEWAY);
    assert_eq!(gone.json()["sandboxId"], mine.id.as_str());
}
