//! The terminal WebSocket over a real socket, against the fake runtime's line
//! shell: size and resize, exit status in the close frame, ownership before the
//! upgrade, and hostile clients (a huge message, a flood, bad control frames).

use std::net::SocketAddr;
use std::time::Duration;

use codebox_server::{serve_with_limits, ConnectionLimits};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::TestApp;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Guards against a hung test only; no assertion is about time.
const GUARD: Duration = Duration::from_secs(60);

async fn serve(app: &TestApp) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("has an address");
    let router = app.router.clone();
    tokio::spawn(serve_with_limits(
        listener,
        router,
        ConnectionLimits::default(),
        std::future::pending::<()>(),
    ));
    address
}

async fn connect(address: SocketAddr, path: &str, key: &str) -> Result<Socket, WsError> {
    let mut request = format!("ws://{address}{path}")
        .into_client_request()
        .expect("a valid request");
    request
        .headers_mut()
        .insert("x-api-key", key.parse().expect("a header value"));
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Reads binary frames until their text holds `wanted`.
async fn read_until(socket: &mut Socket, wanted: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        let message = tokio::time::timeout(GUARD, socket.next())
            .await
            .expect("output in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("expected output with {wanted:?}, got {other:?}: {seen:?}"),
        }
    }
    seen
}

/// Reads until the close frame: its code and reason.
async fn close_of(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(GUARD, socket.next())
            .await
            .expect("a close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("the socket failed instead of closing: {error}"),
        }
    }
}

#[tokio::test]
async fn a_terminal_has_its_size_resizes_and_closes_with_the_exit_status() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let address = serve(&app).await;
    let path = format!("/api/v1/sandboxes/{id}/pty?cols=100&rows=30");
    let mut socket = connect(address, &path, &app.alice.key)
        .await
        .expect("upgrades");
    socket
        .send(Message::binary(b"stty size\n".to_vec()))
        .await
        .expect("sends");
    read_until(&mut socket, "30 100").await;
    socket
        .send(Message::text(r#"{"type":"resize","cols":132,"rows":50}"#))
        .await
        .expect("sends");
    socket
        .send(Message::binary(b"stty size\n".to_vec()))
        .await
        .expect("sends");
    read_until(&mut socket, "50 132").await;
    socket
        .send(Message::binary(b"exit 7\n".to_vec()))
        .await
        .expect("sends");
    let (code, reason) = close_of(&mut socket).await;
    assert_eq!(code, 1000);
    let status: serde_json::Value = serde_json::from_str(&reason).expect("a JSON reason");
    assert_eq!(
        status,
        serde_json::json!({"exit_code": 7, "signal": null, "timed_out": false})
    );
}

#[tokio::test]
async fn other_tenants_unknown_sandboxes_and_bad_queries_never_upgrade() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let address = serve(&app).await;
    let status = |result: Result<Socket, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("not an HTTP refusal: {other}"),
        Ok(_) => panic!("upgraded"),
    };
    let foreign = connect(
        address,
        &format!("/api/v1/sandboxes/{id}/pty"),
        &app.bob.key,
    )
    .await;
    assert_eq!(status(foreign), 404);
    let unknown = connect(
        address,
        "/api/v1/sandboxes/aaaaaaaaaaaaaaaaaaaaaaaaaa/pty",
        &app.alice.key,
    )
    .await;
    assert_eq!(status(unknown), 404);
    let bad = connect(
        address,
        &format!("/api/v1/sandboxes/{id}/pty?cols=0"),
        &app.alice.key,
    )
    .await;
    assert_eq!(status(bad), 400);
    let token = connect(
        address,
        &format!("/api/v1/sandboxes/{id}/pty?token=abc"),
        &app.alice.key,
    )
    .await;
    assert_eq!(
        status(token),
        400,
        "credentials are never read from the query"
    );
    let anonymous = connect(address, &format!("/api/v1/sandboxes/{id}/pty"), "nope").await;
    assert_eq!(status(anonymous), 401);
    // A plain GET is refused without opening anything.
    let reply = app
        .get(&format!("/api/v1/sandboxes/{id}/pty"), Some(&app.alice.key))
        .await;
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.text());
}

#[tokio::test]
async fn a_huge_message_closes_the_socket_and_the_server_stays_up() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let address = serve(&app).await;
    let path = format!("/api/v1/sandboxes/{id}/pty");
    let mut socket = connect(address, &path, &app.alice.key)
        .await
        .expect("upgrades");
    // Over the 1 MiB bound: refused as it arrives, never buffered whole.
    let _ = socket.send(Message::binary(vec![b'a'; 4 << 20])).await;
    let ended = loop {
        match tokio::time::timeout(GUARD, socket.next())
            .await
            .expect("the server reacts in time")
        {
            Some(Ok(Message::Close(frame))) => {
                break frame.map(|frame| frame.code);
            }
            Some(Ok(_)) => continue,
            // The server may drop the connection right after its close frame.
            Some(Err(_)) | None => break None,
        }
    };
    if let Some(code) = ended {
        assert_eq!(code, CloseCode::Size);
    }
    // A bad control frame closes with a policy violation.
    let mut socket = connect(address, &path, &app.alice.key)
        .await
        .expect("upgrades");
    socket
        .send(Message::text(r#"{"type":"exec","cmd":"reboot"}"#))
        .await
        .expect("sends");
    assert_eq!(close_of(&mut socket).await.0, 1008);
    // A flood of small frames (read concurrently: the shell echoes it) is taken
    // at the terminal's pace; the terminal still answers after it.
    let socket = connect(address, &path, &app.alice.key)
        .await
        .expect("upgrades");
    let (mut sink, mut stream) = socket.split();
    let reader = tokio::spawn(async move {
        let mut tail = String::new();
        while !tail.contains("24 80") {
            match stream.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    tail.push_str(&String::from_utf8_lossy(&bytes));
                    let keep = tail.len().saturating_sub(64);
                    tail = tail.split_off(keep);
                }
                other => panic!("expected output, got {other:?}"),
            }
        }
    });
    for _ in 0..4000 {
        sink.send(Message::binary(vec![b'x'; 256]))
            .await
            .expect("sends");
    }
    sink.send(Message::binary(b"\nstty size\n".to_vec()))
        .await
        .expect("sends");
    tokio::time::timeout(GUARD, reader)
        .await
        .expect("the terminal answers in time")
        .expect("the reader did not panic");
    // The server still serves.
    let reply = app.get("/health", None).await;
    assert_eq!(reply.status.as_u16(), 200);
}
