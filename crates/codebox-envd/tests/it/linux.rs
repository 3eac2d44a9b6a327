//! envd against real sandboxes (the Linux runtime and the static agent): the
//! SDK's `commands.run`, files up and down, listings, and hostile paths that
//! must stay inside the sandbox. Needs root and `CODEBOX_AGENT_PATH`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};

use crate::support::{b64, linux, TOKEN};

fn data(frames: &[(u8, Value)], stream: &str) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|(_, frame)| frame["event"]["data"].get(stream))
        .flat_map(b64)
        .collect()
}

#[tokio::test]
async fn sandbox_commands_files_and_hostile_paths() {
    let env = linux().await;

    // What `commands.run("echo hi; echo err >&2; exit 3")` sends.
    let run = env
        .stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi $FROM_SANDBOX $MINE; pwd; echo err >&2; exit 3"], "envs": {"MINE": "mine"}}, "stdin": false}),
            &[("keepalive-ping-interval", "50"), ("connect-timeout-ms", "60000")],
        )
        .await;
    assert_eq!(run.status, StatusCode::OK);
    assert_eq!(run.content_type(), "application/connect+json");
    let frames = run.frames();
    assert!(
        frames[0].1["event"]["start"]["pid"].as_u64().is_some(),
        "{frames:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&data(&frames, "stdout")),
        "hi yes mine\n/home/user\n"
    );
    assert_eq!(data(&frames, "stderr"), b"err\n");
    let end = &frames[frames.len() - 2].1["event"]["end"];
    assert_eq!(end["exitCode"], 3);
    assert_eq!(end["status"], "exit status 3");
    assert_eq!(frames[frames.len() - 1], (2, json!({})));

    // Upload through multipart, read back, stat and list.
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/data/in.txt\"\r\n\r\nline one\nline two\n\r\n--{boundary}--\r\n"
    );
    let uploaded = env
        .call(
            Request::post("/files?path=/home/user/data/in.txt")
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .header("x-access-token", TOKEN)
                .body(Body::from(body))
                .expect("valid"),
        )
        .await;
    assert_eq!(
        uploaded.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&uploaded.body)
    );
    assert_eq!(
        uploaded.json(),
        json!([{"name": "in.txt", "type": "file", "path": "/home/user/data/in.txt"}])
    );
    let read = env
        .call(
            Request::get("/files?path=data/in.txt")
                .header("x-access-token", TOKEN)
                .body(Body::empty())
                .expect("valid"),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, b"line one\nline two\n");
    let stat = env
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": "data/in.txt"}),
            &[],
        )
        .await;
    let entry = &stat.json()["entry"];
    assert_eq!(entry["size"], "18");
    assert_eq!(entry["type"], "FILE_TYPE_FILE");
    assert_eq!(entry["permissions"].as_str().map(str::len), Some(10));
    let listed = env
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": "/home/user", "depth": 2}),
            &[],
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.json());
    let paths: Vec<String> = listed.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| entry["path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        paths.iter().any(|path| path == "/home/user/data/in.txt"),
        "{paths:?}"
    );

    // Hostile: a host file outside the sandbox is out of reach, by `..` or
    // by absolute path, for reads, writes and listings.
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("host-secret.txt");
    std::fs::write(&secret, "host only").expect("writes the host file");
    let host_path = secret.to_string_lossy().into_owned();
    let climbing = format!("../../../..{host_path}");
    let paths = [host_path.as_str(), climbing.as_str()];
    // Reads first: the writes below create the sandbox's own file at that path.
    for path in paths {
        let read = env
            .call(
                Request::get(format!("/files?path={path}"))
                    .header("x-access-token", TOKEN)
                    .body(Body::empty())
                    .expect("valid"),
            )
            .await;
        assert_ne!(read.status, StatusCode::OK, "{path} must not be readable");
        assert!(!String::from_utf8_lossy(&read.body).contains("host only"));
    }
    for path in paths {
        let written = env
            .call(
                Request::post(format!("/files?path={path}"))
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header("x-access-token", TOKEN)
                    .body(Body::from("overwritten"))
                    .expect("valid"),
            )
            .await;
        // The sandbox may write its own file there; the host's is untouched.
        let _ = written.status;
        assert_eq!(
            std::fs::read_to_string(&secret).expect("still there"),
            "host only",
            "a write to {path} reached the host"
        );
        let read = env
            .call(
                Request::get(format!("/files?path={path}"))
                    .header("x-access-token", TOKEN)
                    .body(Body::empty())
                    .expect("valid"),
            )
            .await;
        assert!(!String::from_utf8_lossy(&read.body).contains("host only"));
    }
    let escape = env
        .call(
            Request::post("/files?path=../../../../tmp/codebox-envd-escape")
                .header("x-access-token", TOKEN)
                .body(Body::from("x"))
                .expect("valid"),
        )
        .await;
    let _ = escape.status;
    assert!(
        !std::path::Path::new("/tmp/codebox-envd-escape").exists(),
        "an upload escaped to the host's /tmp"
    );
    // Another sandbox owner's router cannot see this sandbox.
    let other = env.core.create_user("mallory", false).await.expect("user");
    let mallory = crate::support::with_target(&env.core, &other, &env.sandbox, TOKEN);
    let reply = tower::ServiceExt::oneshot(
        mallory,
        Request::post("/filesystem.Filesystem/Stat")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"path":"/home/user"}"#))
            .expect("valid"),
    )
    .await
    .expect("infallible");
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);

    let _ = env.core.delete_sandbox(&env.user, &env.sandbox).await;
}

#[tokio::test]
async fn a_terminal_runs_typed_commands_in_a_sandbox() {
    let env = linux().await;
    // What `sandbox.pty.create(size)` sends.
    let mut stream = env
        .open_stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": {"TERM": "xterm-256color"}}, "pty": {"size": {"cols": 120, "rows": 40}}}),
        )
        .await;
    let (_, first) = stream.next_event().await;
    let pid = first["event"]["start"]["pid"]
        .as_u64()
        .expect("start first");
    let listed = env.unary("/process.Process/List", json!({}), &[]).await;
    assert!(listed.json()["processes"]
        .as_array()
        .expect("an array")
        .iter()
        .any(|process| process["pid"].as_u64() == Some(pid)));
    // "stty size; echo envd-$((6*7)); exit 5\n"
    let typed = env
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"pty": "c3R0eSBzaXplOyBlY2hvIGVudmQtJCgoNio3KSk7IGV4aXQgNQo="}}),
            &[],
        )
        .await;
    assert_eq!(typed.status, StatusCode::OK, "{}", typed.json());
    let mut output = Vec::new();
    let end = loop {
        let (_, event) = stream.next_event().await;
        if let Some(data) = event["event"]["data"].get("pty") {
            output.extend(b64(data));
        } else if let Some(end) = event["event"].get("end") {
            break end.clone();
        }
    };
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("40 120"), "{text}");
    assert!(text.contains("envd-42"), "{text}");
    assert_eq!(end["exitCode"], 5, "{end}");
    assert_eq!(stream.next().await.map(|frame| frame.0), Some(2));
    let _ = env.core.delete_sandbox(&env.user, &env.sandbox).await;
}
