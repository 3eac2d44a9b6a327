//! The control plane: shapes the SDKs require, auth, tenancy, pagination.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{str_of, TestApp};

#[tokio::test]
async fn create_answers_201_with_everything_the_python_sdk_requires() {
    let app = TestApp::start().await;
    let created = app.create(&app.alice).await;
    for key in [
        "templateID",
        "sandboxID",
        "clientID",
        "envdVersion",
        "envdAccessToken",
        "trafficAccessToken",
        "domain",
    ] {
        assert!(created[key].is_string(), "{key} in {created}");
    }
    assert_eq!(created["templateID"], "code-interpreter-v1");
    let id = str_of(&created, "sandboxID");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(created["envdVersion"], codebox_envd::ENVD_VERSION);
    // Without a configured domain the SDKs get a name that never resolves,
    // never null (which would send traffic to E2B's cloud).
    assert!(str_of(&created, "domain").ends_with(".invalid"));
    assert_ne!(created["envdAccessToken"], created["trafficAccessToken"]);

    // The v1 route of older SDKs, with their body.
    let old = app
        .control(
            Method::POST,
            "/sandboxes",
            Some(&app.alice.key),
            Some(
                json!({"templateID": "base", "allow_internet_access": true, "autoPause": false,
                "envVars": {}, "metadata": {}, "secure": true, "timeout": 300}),
            ),
        )
        .await;
    assert_eq!(old.status, StatusCode::CREATED, "{}", old.text());
    assert_eq!(old.json()["templateID"], "base");
}

#[tokio::test]
async fn bad_creates_are_clear_client_errors() {
    let app = TestApp::start().await;
    let key = Some(app.alice.key.as_str());
    let unknown = app
        .control(
            Method::POST,
            "/v2/sandboxes",
            key,
            Some(json!({"templateID": "nope"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], 404);
    assert!(unknown.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("code-interpreter-v1")));
    for body in [
        json!({"templateID": "base", "autoPause": true}),
        json!({"templateID": "base", "bogus": 1}),
        json!({"templateID": "base", "timeout": 999_999_999}),
        json!({"templateID": "base", "envVars": {"1BAD": "x"}}),
    ] {
        let reply = app
            .control(Method::POST, "/v2/sandboxes", key, Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["code"], 400);
    }
    let malformed = app
        .call(
            axum::http::Request::post("/v2/sandboxes")
                .header("x-api-key", &app.alice.key)
                .body(axum::body::Body::from("{"))
                .expect("request"),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_route_needs_an_api_key_and_sees_only_its_tenant() {
    let app = TestApp::start().await;
    let id = str_of(&app.create(&app.alice).await, "sandboxID").to_owned();
    let routes = [
        (Method::GET, format!("/sandboxes/{id}")),
        (Method::DELETE, format!("/sandboxes/{id}")),
        (Method::POST, format!("/sandboxes/{id}/timeout")),
        (Method::POST, format!("/sandboxes/{id}/connect")),
        (Method::POST, format!("/v2/sandboxes/{id}/connect")),
        (Method::POST, format!("/sandboxes/{id}/resume")),
        (Method::POST, format!("/sandboxes/{id}/pause")),
        (Method::GET, format!("/sandboxes/{id}/metrics")),
    ];
    for (method, path) in &routes {
        for key in [None, Some("cbx_not-a-key")] {
            let reply = app
                .control(method.clone(), path, key, Some(json!({"timeout": 60})))
                .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(reply.json()["code"], 401);
        }
        // Bob cannot tell Alice's sandbox from an unknown one.
        let reply = app
            .control(
                method.clone(),
                path,
                Some(&app.bob.key),
                Some(json!({"timeout": 60})),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.text()
        );
    }
    for path in ["/v2/sandboxes", "/sandboxes"] {
        let listed = app
            .control(Method::GET, path, Some(&app.bob.key), None)
            .await;
        assert_eq!(listed.status, StatusCode::OK);
        assert_eq!(listed.json(), json!([]));
    }
    // Alice's sandbox survived all of it.
    let detail = app
        .control(
            Method::GET,
            &format!("/sandboxes/{id}"),
            Some(&app.alice.key),
            None,
        )
        .await;
    assert_eq!(detail.status, StatusCode::OK);
}

#[tokio::test]
async fn lifecycle_detail_timeout_connect_pause_metrics_kill() {
    let app = TestApp::start().await;
    let key = Some(app.alice.key.as_str());
    let created = app
        .control(
            Method::POST,
            "/v2/sandboxes",
            key,
            Some(json!({"templateID": "base", "timeout": 120, "metadata": {"k": "v"}})),
        )
        .await
        .json();
    let id = str_of(&created, "sandboxID").to_owned();
    let detail = app
        .control(Method::GET, &format!("/sandboxes/{id}"), key, None)
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    let detail = detail.json();
    for field in [
        "templateID",
        "sandboxID",
        "clientID",
        "startedAt",
        "endAt",
        "envdVersion",
        "state",
        "envdAccessToken",
    ] {
        assert!(detail[field].is_string(), "{field} in {detail}");
    }
    for field in ["cpuCount", "memoryMB", "diskSizeMB"] {
        assert!(detail[field].is_u64(), "{field} in {detail}");
    }
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["metadata"], json!({"k": "v"}));
    assert_eq!(detail["envdAccessToken"], created["envdAccessToken"]);

    let timeout = app
        .control(
            Method::POST,
            &format!("/sandboxes/{id}/timeout"),
            key,
            Some(json!({"timeout": 600})),
        )
        .await;
    assert_eq!(timeout.status, StatusCode::NO_CONTENT, "{}", timeout.text());
    let later = app
        .control(Method::GET, &format!("/sandboxes/{id}"), key, None)
        .await
        .json();
    assert!(str_of(&later, "endAt") > str_of(&detail, "endAt"));

    // Connecting with a shorter timeout never shortens the life.
    let connected = app
        .control(
            Method::POST,
            &format!("/v2/sandboxes/{id}/connect"),
            key,
            Some(json!({"timeout": 10})),
        )
        .await;
    assert_eq!(connected.status, StatusCode::OK);
    assert_eq!(connected.json()["sandboxID"], id.as_str());
    let after = app
        .control(Method::GET, &format!("/sandboxes/{id}"), key, None)
        .await
        .json();
    assert_eq!(after["endAt"], later["endAt"]);

    let paused = app
        .control(Method::POST, &format!("/sandboxes/{id}/pause"), key, None)
        .await;
    assert_eq!(paused.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(paused.json()["code"], 501);

    let metrics = app
        .control(Method::GET, &format!("/sandboxes/{id}/metrics"), key, None)
        .await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text());
    let metric = &metrics.json()[0];
    for field in [
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    ] {
        assert!(!metric[field].is_null(), "{field} in {metric}");
    }

    let killed = app
        .control(Method::DELETE, &format!("/sandboxes/{id}"), key, None)
        .await;
    assert_eq!(killed.status, StatusCode::NO_CONTENT);
    let again = app
        .control(Method::DELETE, &format!("/sandboxes/{id}"), key, None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let gone = app
        .control(
            Method::POST,
            &format!("/sandboxes/{id}/connect"),
            key,
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn listings_paginate_with_x_next_token_and_filter() {
    let app = TestApp::start().await;
    let key = Some(app.alice.key.as_str());
    let mut ids = Vec::new();
    for tag in ["a", "b", "c"] {
        let created = app
            .control(
                Method::POST,
                "/v2/sandboxes",
                key,
                Some(json!({"templateID": "base", "metadata": {"tag": tag, "team": "x"}})),
            )
            .await
            .json();
        ids.push(str_of(&created, "sandboxID").to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v2/sandboxes?limit=2&state=running,paused".to_owned();
    loop {
        let page = app.control(Method::GET, &path, key, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        for item in page.json().as_array().expect("an array") {
            assert!(
                item.get("envdAccessToken").is_none(),
                "listings carry no token"
            );
            seen.push(str_of(item, "sandboxID").to_owned());
        }
        match page.headers.get("x-next-token") {
            Some(token) => {
                path = format!(
                    "/v2/sandboxes?limit=2&nextToken={}",
                    token.to_str().expect("ascii")
                )
            }
            None => break,
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let filtered = app
        .control(
            Method::GET,
            "/v2/sandboxes?metadata=tag%3Db%26team%3Dx",
            key,
            None,
        )
        .await
        .json();
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));
    assert_eq!(filtered[0]["metadata"]["tag"], "b");
    let paused = app
        .control(Method::GET, "/v2/sandboxes?state=paused", key, None)
        .await
        .json();
    assert_eq!(paused, json!([]));
    let bad = app
        .control(Method::GET, "/v2/sandboxes?state=exploded", key, None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
