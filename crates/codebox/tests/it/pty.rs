//! The terminal WebSocket end to end: a real server, a real sandbox, a real
//! login shell on a pseudo-terminal (needs root and `CODEBOX_AGENT_PATH`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::code::{parse, Fixture};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Guards against a hung test only; no assertion is about time.
const GUARD: Duration = Duration::from_secs(60);

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

async fn open(fixture: &Fixture, query: &str) -> Socket {
    let url = format!(
        "ws://127.0.0.1:{}/api/v1/sandboxes/{}/pty?{query}",
        fixture.port(),
        fixture.sandbox
    );
    let mut request = url.into_client_request().expect("a valid request");
    request
        .headers_mut()
        .insert("x-api-key", fixture.key.parse().expect("a header value"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrades");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

async fn read_until(socket: &mut Socket, wanted: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        let message = tokio::time::timeout(GUARD, socket.next())
            .await
            .expect("terminal output in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected output with {wanted:?}, got {other:?}: {seen:?}"),
        }
    }
    seen
}

async fn type_line(socket: &mut Socket, line: &str) {
    socket
        .send(Message::binary(format!("{line}\n").into_bytes()))
        .await
        .expect("types");
}

#[test]
fn stty_sees_the_size_and_a_resize_and_exit_closes_with_the_status() {
    let fixture = Fixture::start("python3");
    block_on(async {
        let mut socket = open(&fixture, "cols=100&rows=30&env.PS1=%24%20").await;
        // Quotes split the marker so the echoed command line never matches it.
        type_line(&mut socket, "stty size; tty; echo 'mark''er'").await;
        let seen = read_until(&mut socket, "marker").await;
        assert!(seen.contains("30 100"), "{seen:?}");
        assert!(seen.contains("/dev/pts/"), "a real terminal: {seen:?}");
        socket
            .send(Message::text(r#"{"type":"resize","cols":132,"rows":50}"#))
            .await
            .expect("resizes");
        type_line(&mut socket, "stty size; echo \"$TERM\"; echo 'do''ne'").await;
        let seen = read_until(&mut socket, "done").await;
        assert!(seen.contains("50 132"), "{seen:?}");
        assert!(seen.contains("xterm-256color"), "{seen:?}");
        type_line(&mut socket, "exit 3").await;
        let (code, reason) = loop {
            match tokio::time::timeout(GUARD, socket.next())
                .await
                .expect("a close in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(code, 1000);
        let status: Value = serde_json::from_str(&reason).expect("a JSON reason");
        assert_eq!(
            status,
            json!({"exit_code": 3, "signal": null, "timed_out": false})
        );
    });
}

#[test]
fn closing_the_socket_ends_the_shell_and_its_children() {
    let fixture = Fixture::start("python3");
    block_on(async {
        let mut socket = open(&fixture, "").await;
        type_line(
            &mut socket,
            "sleep 1000 & echo $! > /home/user/child; echo 'sta''rted'",
        )
        .await;
        read_until(&mut socket, "started").await;
        socket.close(None).await.expect("closes");
        drop(socket);
    });
    // The child is gone once the shell's tree was killed: poll (bounded) until
    // `kill -0` fails, the command API being the observer.
    let path = format!("/api/v1/sandboxes/{}/commands", fixture.sandbox);
    let mut alive = true;
    for _ in 0..300 {
        let (status, text) = fixture.call(
            "POST",
            &path,
            &json!({"cmd": "kill -0 $(cat /home/user/child) 2>/dev/null && echo alive || echo gone"}),
        );
        assert_eq!(status, 200, "{text}");
        if parse(&text)["data"]["stdout"] == "gone\n" {
            alive = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive, "the terminal's child outlived the closed socket");
}
