//! File routes against the fake runtime's in-memory tree: upload and download
//! round trip, ranges, listings, errors and the upload cap.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

use crate::support::{Options, Reply, TestApp};

fn files(id: &str, path: &str) -> String {
    format!("/api/v1/sandboxes/{id}/files?path={path}")
}

async fn upload(app: &TestApp, key: &str, id: &str, path: &str, body: Vec<u8>) -> Reply {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(files(id, path))
        .header("x-api-key", key)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(body))
        .expect("well-formed");
    app.call(request).await
}

async fn ranged(app: &TestApp, key: &str, id: &str, path: &str, range: &str) -> Reply {
    let request = Request::builder()
        .uri(files(id, path))
        .header("x-api-key", key)
        .header(header::RANGE, range)
        .body(Body::empty())
        .expect("well-formed");
    app.call(request).await
}

fn content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn an_upload_downloads_byte_for_byte_with_ranges() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let data = content();
    let reply = upload(&app, &key, &id, "out/data.bin", data.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json()["data"]["size"], data.len());

    let reply = app.get(&files(&id, "out/data.bin"), Some(&key)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::CONTENT_LENGTH],
        data.len().to_string()
    );
    assert_eq!(reply.body.as_ref(), data.as_slice());

    let reply = ranged(&app, &key, &id, "out/data.bin", "bytes=100-199").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        reply.headers[header::CONTENT_RANGE],
        format!("bytes 100-199/{}", data.len())
    );
    assert_eq!(reply.body.as_ref(), &data[100..200]);

    let reply = ranged(&app, &key, &id, "out/data.bin", "bytes=-10").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body.as_ref(), &data[data.len() - 10..]);

    let reply = ranged(&app, &key, &id, "out/data.bin", "bytes=999999999-").await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        reply.headers[header::CONTENT_RANGE],
        format!("bytes */{}", data.len())
    );
    assert_eq!(reply.error_code(), "VALIDATION_ERROR");
}

#[tokio::test]
async fn list_stat_mkdir_move_and_delete() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let base = format!("/api/v1/sandboxes/{id}/files");
    let reply = app
        .post(
            &format!("{base}/mkdir"),
            Some(&key),
            &json!({"path": "a/b"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json()["data"]["type"], "dir");
    assert_eq!(reply.json()["data"]["path"], "/home/user/a/b");
    upload(&app, &key, &id, "a/b/f.txt", b"hello".to_vec()).await;

    let reply = app
        .get(&format!("{base}/stat?path=a/b/f.txt"), Some(&key))
        .await;
    let entry = &reply.json()["data"];
    assert_eq!(entry["size"], 5);
    assert_eq!(entry["type"], "file");
    assert!(entry["modified_at"].is_string());

    let reply = app
        .get(&format!("{base}/list?path=a&depth=2"), Some(&key))
        .await;
    let names: Vec<String> = reply.json()["data"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["/home/user/a/b", "/home/user/a/b/f.txt"]);

    let moved = json!({"from": "a/b/f.txt", "to": "g.txt"});
    let reply = app.post(&format!("{base}/move"), Some(&key), &moved).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = app.get(&files(&id, "g.txt"), Some(&key)).await;
    assert_eq!(reply.body.as_ref(), b"hello");

    let reply = app.delete(&files(&id, "a"), Some(&key)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    let reply = app
        .delete(&format!("{}&recursive=true", files(&id, "a")), Some(&key))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = app.get(&format!("{base}/stat?path=a"), Some(&key)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "NOT_FOUND");
}

#[tokio::test]
async fn bad_paths_and_queries_are_validation_errors() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    for path in [
        format!("/api/v1/sandboxes/{id}/files"),
        format!("/api/v1/sandboxes/{id}/files?path=a%00b"),
        format!("/api/v1/sandboxes/{id}/files?path=a&bogus=1"),
        format!("/api/v1/sandboxes/{id}/files/list?depth=17"),
    ] {
        let reply = app.get(&path, Some(&key)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.error_code(), "VALIDATION_ERROR");
    }
    // A directory is not downloadable.
    let reply = app.get(&files(&id, "/home"), Some(&key)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
}

#[tokio::test]
async fn uploads_over_the_cap_or_the_disk_are_refused_and_leave_nothing() {
    let mut options = Options::default();
    options.core.limits.max_upload_bytes = 1000;
    options.core.sandbox_limits.workspace_bytes = 1500;
    let app = TestApp::with(options).await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;

    let reply = upload(&app, &key, &id, "big", vec![7; 1001]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "PAYLOAD_TOO_LARGE");

    let reply = upload(&app, &key, &id, "one", vec![1; 1000]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let reply = upload(&app, &key, &id, "two", vec![2; 1000]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.error_code(), "RESOURCE_LIMIT_ERROR");
    for path in ["big", "two"] {
        let reply = app.get(&files(&id, path), Some(&key)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
    // The sandbox still takes a file that fits.
    let reply = upload(&app, &key, &id, "small", vec![3; 100]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
}

#[tokio::test]
async fn a_body_larger_than_the_whole_disk_is_a_disk_overflow() {
    let mut options = Options::default();
    options.core.limits.max_upload_bytes = 5000;
    options.core.sandbox_limits.workspace_bytes = 1000;
    let app = TestApp::with(options).await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    // Without Content-Length: refused by the runtime's cap while streaming.
    let reply = upload(&app, &key, &id, "big", vec![7; 1200]).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    assert_eq!(reply.error_code(), "RESOURCE_LIMIT_ERROR");
    // With it: refused before the body is read.
    let request = Request::builder()
        .method(Method::PUT)
        .uri(files(&id, "big"))
        .header("x-api-key", &key)
        .header(header::CONTENT_LENGTH, "6000")
        .body(Body::from(vec![7; 6000]))
        .expect("well-formed");
    let reply = app.call(request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    let reply = app.get(&files(&id, "big"), Some(&key)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_watch_streams_changes_as_server_sent_events() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let request = Request::builder()
        .uri(format!(
            "/api/v1/sandboxes/{id}/files/watch?path=/home/user"
        ))
        .header("x-api-key", &key)
        .body(Body::empty())
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
        "text/event-stream"
    );
    // The watch is set once the response exists: this write is reported.
    upload(&app, &key, &id, "seen.txt", b"x".to_vec()).await;
    let mut body = response.into_body();
    let frame = body
        .frame()
        .await
        .expect("an event")
        .expect("readable")
        .into_data()
        .expect("data");
    let text = String::from_utf8(frame.to_vec()).expect("UTF-8");
    assert!(text.starts_with("event: create\ndata: "), "{text}");
    assert!(text.contains(r#""path":"/home/user/seen.txt""#), "{text}");

    let missing = app
        .get(
            &format!("/api/v1/sandboxes/{id}/files/watch?path=nowhere"),
            Some(&key),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

const BOUNDARY: &str = "codebox-test-boundary";

/// A `multipart/form-data` body of `(filename, name, content)` parts.
fn multipart(parts: &[(Option<&str>, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (filename, name, content) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match filename {
            Some(filename) => {
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                )
            }
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post_multipart(app: &TestApp, key: &str, id: &str, body: Vec<u8>) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/sandboxes/{id}/files"))
        .header("x-api-key", key)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .expect("well-formed");
    app.call(request).await
}

#[tokio::test]
async fn a_multipart_upload_writes_every_part() {
    let app = TestApp::start().await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;
    let data = content();
    let body = multipart(&[
        (Some("a.txt"), "file", b"alpha"),
        (Some("deep/dir/b.bin"), "file", &data),
        (None, "by-name.txt", b"named"),
        (Some("/tmp/abs.txt"), "file", b"absolute"),
    ]);
    let reply = post_multipart(&app, &key, &id, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let files = reply.json()["data"]["files"].clone();
    assert_eq!(
        files,
        json!([
            {"path": "a.txt", "size": 5},
            {"path": "deep/dir/b.bin", "size": data.len()},
            {"path": "by-name.txt", "size": 5},
            {"path": "/tmp/abs.txt", "size": 8},
        ])
    );
    for (path, expected) in [
        ("a.txt", b"alpha".to_vec()),
        ("deep/dir/b.bin", data),
        ("by-name.txt", b"named".to_vec()),
        ("/tmp/abs.txt", b"absolute".to_vec()),
    ] {
        let reply = app.get(&files_url(&id, path), Some(&key)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.body.as_ref(), expected.as_slice(), "{path}");
    }
}

fn files_url(id: &str, path: &str) -> String {
    format!(
        "/api/v1/sandboxes/{id}/files?path={}",
        path.replace('/', "%2F")
    )
}

#[tokio::test]
async fn hostile_multipart_uploads_are_refused_or_contained() {
    let mut options = Options::default();
    options.core.limits.max_upload_bytes = 1000;
    let app = TestApp::with(options).await;
    let key = app.alice.key.clone();
    let id = app.create_sandbox(&app.alice).await;

    // `..` stops at the sandbox's own root.
    let body = multipart(&[(Some("../../../etc/passwd"), "file", b"owned")]);
    let reply = post_multipart(&app, &key, &id, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let reply = app.get(&files_url(&id, "/etc/passwd"), Some(&key)).await;
    assert_eq!(
        reply.body.as_ref(),
        b"owned",
        "inside the fake sandbox only"
    );

    // A NUL in a destination is a validation error; the first part stays.
    let body = multipart(&[
        (Some("kept.txt"), "file", b"kept"),
        (Some("bad\0name"), "file", b"x"),
    ]);
    let reply = post_multipart(&app, &key, &id, body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    // Beside the error: what was written before it.
    assert_eq!(reply.json()["data"]["files"][0]["path"], "kept.txt");

    // Over the cap: 413 and no partial file.
    let body = multipart(&[(Some("big.bin"), "file", &[7u8; 5000])]);
    let reply = post_multipart(&app, &key, &id, body).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    let reply = app.get(&files_url(&id, "big.bin"), Some(&key)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // A header that never ends is refused once it passes the bound.
    let mut huge =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"; x=\"").into_bytes();
    huge.extend(std::iter::repeat_n(b'a', 3 << 20));
    let reply = post_multipart(&app, &key, &id, huge).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    // No part without a destination, no other content type, no other tenant.
    let body = multipart(&[(None, "", b"x")]);
    let reply = post_multipart(&app, &key, &id, body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/sandboxes/{id}/files"))
        .header("x-api-key", &key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("well-formed");
    let reply = app.call(request).await;
    assert_eq!(
        reply.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        reply.text()
    );
    let body = multipart(&[(Some("x.txt"), "file", b"x")]);
    let reply = post_multipart(&app, &app.bob.key, &id, body).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
}
