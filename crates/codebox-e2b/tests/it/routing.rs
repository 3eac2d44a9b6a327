//! Routing: headers, Host names under the domain, the native API untouched,
//! unknown sandboxes and ports, envd hand-over, failed-auth rate limits.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use codebox_config::{RateLimit, RateLimitsConfig};
use codebox_e2b::TokenKind;
use codebox_server::ServerSettings;
use serde_json::json;

use crate::support::{str_of, Options, TestApp};

#[tokio::test]
async fn the_native_api_is_untouched() {
    let app = TestApp::start().await;
    let health = app
        .call(
            Request::get("/health")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert!(
        health.json().get("code").is_none(),
        "the native /health: {}",
        health.text()
    );
    let listed = app
        .control(Method::GET, "/api/v1/sandboxes", Some(&app.alice.key), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["success"], true);
}

#[tokio::test]
async fn hosts_under_the_domain_reach_the_control_plane_and_sandboxes() {
    let app = TestApp::with(Options {
        domain: Some("e2b.test".to_owned()),
        ..Options::default()
    })
    .await;
    let created = app
        .call(
            Request::post("/sandboxes")
                .header("host", "api.e2b.test")
                .header("x-api-key", &app.alice.key)
                .body(Body::from(
                    json!({"templateID": "code-interpreter-v1"}).to_string(),
                ))
                .expect("request"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let created = created.json();
    assert_eq!(created["domain"], "e2b.test");
    let id = str_of(&created, "sandboxID");
    let executed = app
        .call(
            Request::post("/execute")
                .header("host", format!("49999-{id}.e2b.test"))
                .header("x-access-token", str_of(&created, "envdAccessToken"))
                .body(Body::from(json!({"code": "6 * 7"}).to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(executed.status, StatusCode::OK, "{}", executed.text());
    assert!(executed.lines().iter().any(|line| line["text"] == "42"));
    let unroutable = app
        .call(
            Request::get("/health")
                .header("host", "www.e2b.test")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(unroutable.status, StatusCode::NOT_FOUND);
    assert_eq!(unroutable.json()["code"], 404);
}

#[tokio::test]
async fn unknown_sandboxes_and_ports_answer_like_e2bs_proxy() {
    let app = TestApp::start().await;
    // A token minted for an id that does not exist: the token is valid, the
    // sandbox is not.
    let ghost = "a".repeat(26);
    let token = app.e2b.tokens().mint(TokenKind::Traffic, &ghost);
    let reply = app
        .sandbox(
            &ghost,
            49999,
            Method::POST,
            "/execute",
            &[("e2b-traffic-access-token", &token)],
            Some(json!({"code": "1"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["sandboxId"], ghost.as_str());
    let created = app.create(&app.alice).await;
    let id = str_of(&created, "sandboxID");
    let port = app.sandbox(id, 3000, Method::GET, "/", &[], None).await;
    assert_eq!(port.status, StatusCode::BAD_GATEWAY);
    let half = app
        .call(
            Request::get("/health")
                .header("e2b-sandbox-id", id)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(half.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn envd_requests_need_the_envd_token_except_health_and_files() {
    let app = TestApp::start().await;
    let created = app.create(&app.alice).await;
    let id = str_of(&created, "sandboxID");
    let envd = str_of(&created, "envdAccessToken");
    let traffic = str_of(&created, "trafficAccessToken");
    for headers in [
        vec![],
        vec![("x-access-token", traffic)],
        vec![("x-access-token", "nope")],
    ] {
        let reply = app
            .sandbox(
                id,
                49983,
                Method::POST,
                "/process.Process/List",
                &headers,
                Some(json!({})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    // A wrong token is refused even where none is needed.
    let wrong = app
        .sandbox(
            id,
            49983,
            Method::GET,
            "/health",
            &[("x-access-token", traffic)],
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // With the token (or on the open routes) the request reaches envd.
    // Without a token `/files` is envd's to judge (a signed URL, or its own 401).
    let files = app
        .sandbox(
            id,
            49983,
            Method::GET,
            "/files?path=/home/user/x",
            &[],
            None,
        )
        .await;
    assert!(
        !files.text().contains("X-Access-Token"),
        "the gateway let envd answer: {}",
        files.text()
    );
    for (method, path, headers) in [
        (
            Method::POST,
            "/process.Process/List",
            vec![("x-access-token", envd)],
        ),
        (Method::GET, "/health", vec![]),
        (
            Method::GET,
            "/files?path=/home/user/x",
            vec![("x-access-token", envd)],
        ),
    ] {
        let reply = app
            .sandbox(id, 49983, method.clone(), path, &headers, Some(json!({})))
            .await;
        assert_ne!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            reply.text()
        );
        assert_ne!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{method} {path}: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn failed_tokens_spend_the_ip_budget_then_429() {
    let server = ServerSettings {
        rate_limits: RateLimitsConfig {
            enabled: true,
            anonymous_per_ip: RateLimit {
                requests: 3,
                window: std::time::Duration::from_secs(600),
            },
            ..RateLimitsConfig::default()
        },
        ..ServerSettings::default()
    };
    let app = TestApp::with(Options {
        server,
        ..Options::default()
    })
    .await;
    let created = app.create(&app.alice).await;
    let id = str_of(&created, "sandboxID");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = app
            .sandbox(
                id,
                49999,
                Method::POST,
                "/execute",
                &[("e2b-traffic-access-token", "guess")],
                Some(json!({"code": "1"})),
            )
            .await;
        statuses.push(reply.status);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(&statuses[3..], &[StatusCode::TOO_MANY_REQUESTS; 2]);
    let control = app
        .control(Method::GET, "/v2/sandboxes", Some("cbx_wrong"), None)
        .await;
    assert_eq!(control.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(control.json()["code"], 429);
}
