//! The Connect surface end to end against the fake runtime: envelopes, end-
//! stream frames, proto3-JSON shapes, errors, processes, terminals, files,
//! watchers, `/files` uploads and downloads with tokens and signatures.

use std::io::Write as _;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};

use crate::support::{b64, envelope, fake, Env, TOKEN};

const START: &str = "/process.Process/Start";

fn end_frame(frames: &[(u8, Value)]) -> &Value {
    let (flags, value) = frames.last().expect("at least the end-stream frame");
    assert_eq!(*flags, 2, "the last frame is the end-stream one");
    value
}

#[tokio::test]
async fn start_streams_start_data_and_end_then_end_stream() {
    let env = fake().await;
    let mut stream = env
        .open_stream(
            START,
            json!({"process": {"cmd": "cat", "envs": {"A": "1"}}, "tag": "echo", "stdin": true}),
        )
        .await;
    let (flags, first) = stream.next_event().await;
    assert_eq!(flags, 0);
    let pid = first["event"]["start"]["pid"]
        .as_u64()
        .expect("start first");

    // The process is listed with the config it was started with.
    let list = env.unary("/process.Process/List", json!({}), &[]).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.json());
    let processes = list.json()["processes"].clone();
    let listed = processes
        .as_array()
        .expect("an array")
        .iter()
        .find(|process| process["pid"].as_u64() == Some(pid))
        .expect("listed")
        .clone();
    assert_eq!(listed["tag"], "echo");
    assert_eq!(listed["config"]["cmd"], "cat");
    assert_eq!(listed["config"]["envs"]["A"], "1");

    // Input by tag, then EOF: the fake `cat` echoes and exits 0.
    let input = env
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"tag": "echo"}, "input": {"stdin": "aGkK"}}),
            &[],
        )
        .await;
    assert_eq!(input.status, StatusCode::OK, "{}", input.json());
    // The fake `cat` also echoes the byte that releases envd's start gate (a
    // real program never sees it: the gate's `read` consumes it).
    let mut stdout = Vec::new();
    while !stdout.ends_with(b"hi\n") {
        let (_, data) = stream.next_event().await;
        stdout.extend(b64(&data["event"]["data"]["stdout"]));
    }
    assert_eq!(stdout, b"\nhi\n");
    let close = env
        .unary(
            "/process.Process/CloseStdin",
            json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(close.status, StatusCode::OK, "{}", close.json());
    let (_, end) = stream.next_event().await;
    assert_eq!(
        end["event"]["end"],
        json!({"exitCode": 0, "exited": true, "status": "exit status 0"})
    );
    let (flags, last) = stream.next().await.expect("the end-stream frame");
    assert_eq!((flags, last), (2, json!({})));
    assert!(stream.next().await.is_none(), "nothing after end-stream");
}

#[tokio::test]
async fn a_killed_process_ends_with_signal_killed_and_connect_reattaches() {
    let env = fake().await;
    let mut stream = env
        .open_stream(
            START,
            json!({"process": {"cmd": "sleep", "args": ["100"]}, "tag": "sleeper"}),
        )
        .await;
    let (_, first) = stream.next_event().await;
    let pid = first["event"]["start"]["pid"]
        .as_u64()
        .expect("start first");
    drop(stream);

    // Reattach by tag: the first event is `start` with the same pid.
    let mut again = env
        .open_stream(
            "/process.Process/Connect",
            json!({"process": {"tag": "sleeper"}}),
        )
        .await;
    let (_, first) = again.next_event().await;
    assert_eq!(first["event"]["start"]["pid"].as_u64(), Some(pid));

    let kill = env
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    assert_eq!(kill.status, StatusCode::OK, "{}", kill.json());
    let (_, end) = again.next_event().await;
    assert_eq!(end["event"]["end"]["status"], "signal: killed");
    assert_eq!(end["event"]["end"]["exited"], false);

    // Gone now: NOT_FOUND, which the SDK's kill() reads as False.
    let again = env
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.json()["code"], "not_found");
    let connect = env
        .stream(
            "/process.Process/Connect",
            json!({"process": {"pid": 424242}}),
            &[],
        )
        .await;
    assert_eq!(connect.status, StatusCode::OK);
    assert_eq!(end_frame(&connect.frames())["error"]["code"], "not_found");
}

#[tokio::test]
async fn terminals_echo_resize_and_die_by_signal() {
    let env = fake().await;
    let mut stream = env
        .open_stream(
            START,
            json!({"process": {"cmd": "/bin/bash", "args": ["-i", "-l"]}, "pty": {"size": {"cols": 80, "rows": 24}}}),
        )
        .await;
    let (_, first) = stream.next_event().await;
    let pid = first["event"]["start"]["pid"]
        .as_u64()
        .expect("start first");
    let resize = env
        .unary(
            "/process.Process/Update",
            json!({"process": {"pid": pid}, "pty": {"size": {"cols": 100, "rows": 30}}}),
            &[],
        )
        .await;
    assert_eq!(resize.status, StatusCode::OK, "{}", resize.json());
    // "stty size\n" typed into the terminal.
    let typed = env
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"pty": "c3R0eSBzaXplCg=="}}),
            &[],
        )
        .await;
    assert_eq!(typed.status, StatusCode::OK, "{}", typed.json());
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("30 100") {
        let (_, event) = stream.next_event().await;
        seen.extend(b64(&event["event"]["data"]["pty"]));
    }
    let too_big = env
        .unary(
            "/process.Process/Update",
            json!({"process": {"pid": pid}, "pty": {"size": {"cols": 100000, "rows": 30}}}),
            &[],
        )
        .await;
    assert_eq!(too_big.json()["code"], "invalid_argument");
    let kill = env
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": 9}),
            &[],
        )
        .await;
    assert_eq!(kill.status, StatusCode::OK, "{}", kill.json());
    loop {
        let (_, event) = stream.next_event().await;
        if let Some(end) = event["event"].get("end") {
            assert_eq!(end["status"], "signal: killed");
            break;
        }
    }
    assert_eq!(stream.next().await.map(|frame| frame.0), Some(2));
}

#[tokio::test]
async fn hostile_requests_are_refused_with_connect_errors() {
    let env = fake().await;
    // root and unknown users.
    let root = env
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": "/"}),
            &[("authorization", "Basic cm9vdDo=")],
        )
        .await;
    assert_eq!(root.status, StatusCode::FORBIDDEN);
    assert_eq!(root.json()["code"], "permission_denied");
    let nobody = env
        .stream(
            START,
            json!({"process": {"cmd": "id"}}),
            &[("authorization", "Basic bm9ib2R5Og==")],
        )
        .await;
    assert_eq!(
        end_frame(&nobody.frames())["error"]["code"],
        "unauthenticated"
    );

    // Bad base64 input.
    let bad = env
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"pid": 1}, "input": {"stdin": "***"}}),
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["code"], "invalid_argument");

    // An envelope announcing more than the limit: refused before it is read.
    let mut huge = vec![0u8];
    huge.extend_from_slice(&(64u32 << 20).to_be_bytes());
    huge.extend_from_slice(b"{}");
    let oversized = env
        .call(
            Request::post(START)
                .header(header::CONTENT_TYPE, "application/connect+json")
                .body(Body::from(huge))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(oversized.status, StatusCode::OK);
    assert_eq!(
        end_frame(&oversized.frames())["error"]["code"],
        "resource_exhausted"
    );
    // A unary body over the limit.
    let big = format!(r#"{{"path":"{}"}}"#, "a".repeat(5 << 20));
    let big = env
        .call(
            Request::post("/filesystem.Filesystem/Stat")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(big))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(big.json()["code"], "resource_exhausted");

    // Not JSON, wrong codec, unknown method, bad deadline.
    let garbage = env
        .call(
            Request::post(START)
                .header(header::CONTENT_TYPE, "application/connect+json")
                .body(Body::from(envelope(0, b"{oops")))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(
        end_frame(&garbage.frames())["error"]["code"],
        "invalid_argument"
    );
    let proto = env
        .call(
            Request::post("/filesystem.Filesystem/Stat")
                .header(header::CONTENT_TYPE, "application/proto")
                .body(Body::from("x"))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(proto.json()["code"], "unimplemented");
    let unknown = env.unary("/process.Process/Fork", json!({}), &[]).await;
    assert_eq!(unknown.json()["code"], "unimplemented");
    let deadline = env
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": "/"}),
            &[("connect-timeout-ms", "soon")],
        )
        .await;
    assert_eq!(deadline.json()["code"], "invalid_argument");

    // A request that did not come through the gateway.
    let bare = codebox_envd::router(env.core.clone());
    let reply = tower::ServiceExt::oneshot(
        bare,
        Request::post("/filesystem.Filesystem/Stat")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .expect("a valid request"),
    )
    .await
    .expect("infallible");
    assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn filesystem_calls_have_envd_shapes() {
    let env = fake().await;
    let made = env
        .unary(
            "/filesystem.Filesystem/MakeDir",
            json!({"path": "dir/sub"}),
            &[],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.json());
    let entry = &made.json()["entry"];
    assert_eq!(entry["path"], "/home/user/dir/sub");
    assert_eq!(entry["type"], "FILE_TYPE_DIRECTORY");
    assert!(entry["permissions"]
        .as_str()
        .expect("a string")
        .starts_with('d'));
    let again = env
        .unary(
            "/filesystem.Filesystem/MakeDir",
            json!({"path": "/home/user/dir/sub"}),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["code"], "already_exists");

    let upload = upload_raw(
        &env,
        "dir/sub/a.txt",
        b"hello",
        &[("x-access-token", TOKEN)],
    )
    .await;
    assert_eq!(upload.0, StatusCode::OK, "{}", upload.1);

    let stat = env
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": "dir/sub/a.txt"}),
            &[],
        )
        .await;
    let entry = &stat.json()["entry"];
    assert_eq!(entry["name"], "a.txt");
    assert_eq!(entry["type"], "FILE_TYPE_FILE");
    assert_eq!(entry["size"], "5", "int64 is a string");
    assert!(entry["modifiedTime"]
        .as_str()
        .expect("a timestamp")
        .ends_with('Z'));

    let listed = env
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": "dir", "depth": 2}),
            &[],
        )
        .await;
    let names: Vec<String> = listed.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        names.contains(&"/home/user/dir/sub/a.txt".to_owned()),
        "{names:?}"
    );
    let shallow = env
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": "dir", "depth": 1}),
            &[],
        )
        .await;
    assert_eq!(shallow.json()["entries"].as_array().map(Vec::len), Some(1));
    let not_dir = env
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": "dir/sub/a.txt"}),
            &[],
        )
        .await;
    assert_eq!(not_dir.json()["code"], "invalid_argument");

    let moved = env
        .unary(
            "/filesystem.Filesystem/Move",
            json!({"source": "dir/sub/a.txt", "destination": "b.txt"}),
            &[],
        )
        .await;
    assert_eq!(moved.json()["entry"]["path"], "/home/user/b.txt");
    let removed = env
        .unary("/filesystem.Filesystem/Remove", json!({"path": "dir"}), &[])
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    let gone = env
        .unary("/filesystem.Filesystem/Stat", json!({"path": "dir"}), &[])
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["code"], "not_found");
}

#[tokio::test]
async fn watchers_poll_and_stream_events() {
    let env = fake().await;
    let created = env
        .unary(
            "/filesystem.Filesystem/CreateWatcher",
            json!({"path": "/home/user"}),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.json());
    let id = created.json()["watcherId"]
        .as_str()
        .expect("an id")
        .to_owned();
    let mut stream = env
        .open_stream(
            "/filesystem.Filesystem/WatchDir",
            json!({"path": "/home/user"}),
        )
        .await;
    let (_, start) = stream.next().await.expect("start");
    assert_eq!(start, json!({"start": {}}));

    upload_raw(&env, "w.txt", b"x", &[("x-access-token", TOKEN)]).await;
    let (_, event) = stream.next().await.expect("an event");
    assert_eq!(event["filesystem"]["name"], "w.txt");
    assert!(event["filesystem"]["type"]
        .as_str()
        .expect("an enum name")
        .starts_with("EVENT_TYPE_"));

    let mut events = Vec::new();
    while events.is_empty() {
        let polled = env
            .unary(
                "/filesystem.Filesystem/GetWatcherEvents",
                json!({"watcherId": id}),
                &[],
            )
            .await;
        assert_eq!(polled.status, StatusCode::OK, "{}", polled.json());
        events = polled.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tokio::task::yield_now().await;
    }
    assert_eq!(events[0]["name"], "w.txt");
    let removed = env
        .unary(
            "/filesystem.Filesystem/RemoveWatcher",
            json!({"watcher_id": id}),
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    let unknown = env
        .unary(
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": id}),
            &[],
        )
        .await;
    assert_eq!(unknown.json()["code"], "not_found");
}

async fn upload_raw(
    env: &Env,
    path: &str,
    bytes: &[u8],
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = Request::post(format!("/files?path={path}"))
        .header(header::CONTENT_TYPE, "application/octet-stream");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let reply = env
        .call(
            request
                .body(Body::from(bytes.to_vec()))
                .expect("a valid request"),
        )
        .await;
    let json = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, json)
}

async fn download(env: &Env, query: &str, extra: &[(&str, &str)]) -> (StatusCode, Vec<u8>) {
    let mut request = Request::get(format!("/files?{query}"));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let reply = env
        .call(request.body(Body::empty()).expect("a valid request"))
        .await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn files_upload_multipart_raw_and_gzip_and_download() {
    let env = fake().await;
    let auth = [("x-access-token", TOKEN)];
    let boundary = "XbOuNdArYx";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nalpha\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"nested/b.txt\"\r\n\r\nbeta\r\n\
         --{boundary}--\r\n"
    );
    let reply = env
        .call(
            Request::post("/files")
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .header("x-access-token", TOKEN)
                .body(Body::from(body))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.json(),
        json!([
            {"name": "a.txt", "type": "file", "path": "/home/user/a.txt"},
            {"name": "b.txt", "type": "file", "path": "/home/user/nested/b.txt"}
        ])
    );
    assert_eq!(
        download(&env, "path=/home/user/a.txt", &auth).await,
        (StatusCode::OK, b"alpha".to_vec())
    );
    assert_eq!(
        download(&env, "path=nested/b.txt", &auth).await,
        (StatusCode::OK, b"beta".to_vec())
    );

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"compressed text").expect("in memory");
    let gz = encoder.finish().expect("in memory");
    let reply = env
        .call(
            Request::post("/files?path=c.txt")
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_ENCODING, "gzip")
                .header("x-access-token", TOKEN)
                .body(Body::from(gz))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        download(&env, "path=c.txt", &auth).await,
        (StatusCode::OK, b"compressed text".to_vec())
    );
    // A broken gzip body is refused and leaves no file.
    let broken = env
        .call(
            Request::post("/files?path=d.txt")
                .header(header::CONTENT_ENCODING, "gzip")
                .header("x-access-token", TOKEN)
                .body(Body::from("not gzip"))
                .expect("a valid request"),
        )
        .await;
    assert_ne!(broken.status, StatusCode::OK);
    assert_eq!(
        download(&env, "path=d.txt", &auth).await.0,
        StatusCode::NOT_FOUND
    );
    let missing = download(&env, "path=nope.txt", &auth).await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    let error: Value = serde_json::from_slice(&missing.1).expect("JSON error");
    assert_eq!(error["code"], 404);
    let health = env
        .call(Request::get("/health").body(Body::empty()).expect("valid"))
        .await;
    assert_eq!(health.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn files_need_a_token_or_a_valid_signature() {
    let env = fake().await;
    upload_raw(&env, "s.txt", b"signed", &[("x-access-token", TOKEN)]).await;
    // No credentials, a wrong token, root.
    assert_eq!(
        download(&env, "path=s.txt", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        download(&env, "path=s.txt", &[("x-access-token", "guess")])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        download(
            &env,
            "path=s.txt&username=root",
            &[("x-access-token", TOKEN)]
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        upload_raw(&env, "t.txt", b"x", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );

    let far = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let read = enc(&codebox_envd::signature(
        "s.txt",
        codebox_envd::Operation::Read,
        "",
        TOKEN,
        Some(far),
    ));
    let ok = download(
        &env,
        &format!("path=s.txt&signature={read}&signature_expiration={far}"),
        &[],
    )
    .await;
    assert_eq!(ok, (StatusCode::OK, b"signed".to_vec()));
    // Tampered, for another path, or expired.
    let tampered = format!("path=s.txt&signature={read}x&signature_expiration={far}");
    assert_eq!(
        download(&env, &tampered, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let other = format!("path=t.txt&signature={read}&signature_expiration={far}");
    assert_eq!(
        download(&env, &other, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 10;
    let old = enc(&codebox_envd::signature(
        "s.txt",
        codebox_envd::Operation::Read,
        "",
        TOKEN,
        Some(past),
    ));
    let expired = format!("path=s.txt&signature={old}&signature_expiration={past}");
    assert_eq!(
        download(&env, &expired, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A read signature does not allow a write.
    let write_with_read = env
        .call(
            Request::post(format!(
                "/files?path=s.txt&signature={read}&signature_expiration={far}"
            ))
            .body(Body::from("overwrite"))
            .expect("valid"),
        )
        .await;
    assert_eq!(write_with_read.status, StatusCode::UNAUTHORIZED);
    let write = enc(&codebox_envd::signature(
        "u.txt",
        codebox_envd::Operation::Write,
        "",
        TOKEN,
        None,
    ));
    let written = env
        .call(
            Request::post(format!("/files?path=u.txt&signature={write}"))
                .body(Body::from("by signature"))
                .expect("valid"),
        )
        .await;
    assert_eq!(
        written.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&written.body)
    );
}

/// Percent-encodes the base64 characters a query string would mangle.
fn enc(signature: &str) -> String {
    signature.replace('+', "%2B").replace('/', "%2F")
}

#[tokio::test]
async fn stream_input_feeds_stdin_and_deadlines_end_streams() {
    let env = fake().await;
    let mut stream = env
        .open_stream(START, json!({"process": {"cmd": "cat"}, "stdin": true}))
        .await;
    let (_, first) = stream.next_event().await;
    let pid = first["event"]["start"]["pid"]
        .as_u64()
        .expect("start first");

    // Client stream: start, keepalive, two data messages, end-stream.
    let mut body = Vec::new();
    for message in [
        json!({"start": {"process": {"pid": pid}}}),
        json!({"keepalive": {}}),
        json!({"data": {"input": {"stdin": "b25lCg=="}}}),
        json!({"data": {"input": {"stdin": "dHdvCg=="}}}),
    ] {
        body.extend(envelope(0, message.to_string().as_bytes()));
    }
    body.extend(envelope(2, b"{}"));
    let reply = env
        .call(
            Request::post("/process.Process/StreamInput")
                .header(header::CONTENT_TYPE, "application/connect+json")
                .body(Body::from(body))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/connect+json");
    assert_eq!(reply.frames(), vec![(0, json!({})), (2, json!({}))]);
    let mut stdout = Vec::new();
    while !stdout.ends_with(b"one\ntwo\n") {
        let (_, data) = stream.next_event().await;
        stdout.extend(b64(&data["event"]["data"]["stdout"]));
    }

    // Data before start is refused in the end-stream frame.
    let early = env
        .call(
            Request::post("/process.Process/StreamInput")
                .header(header::CONTENT_TYPE, "application/connect+json")
                .body(Body::from(envelope(
                    0,
                    br#"{"data":{"input":{"stdin":"eAo="}}}"#,
                )))
                .expect("a valid request"),
        )
        .await;
    assert_eq!(
        end_frame(&early.frames())["error"]["code"],
        "invalid_argument"
    );

    // A process that never ends: the deadline ends the stream, not the process.
    let timed = env
        .stream(
            START,
            json!({"process": {"cmd": "sleep", "args": ["1000"]}, "tag": "long"}),
            &[("connect-timeout-ms", "200")],
        )
        .await;
    let frames = timed.frames();
    assert!(frames[0].1["event"]["start"]["pid"].as_u64().is_some());
    assert_eq!(end_frame(&frames)["error"]["code"], "deadline_exceeded");
    let list = env.unary("/process.Process/List", json!({}), &[]).await;
    assert!(list.json()["processes"]
        .as_array()
        .expect("an array")
        .iter()
        .any(|process| process["tag"] == "long"));
}
