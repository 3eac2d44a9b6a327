//! The real server over TCP: end to end, slowloris, idle connections, the
//! connection cap, graceful shutdown. Raw HTTP/1.1 keeps the dependencies lean.

use std::net::SocketAddr;
use std::time::Duration;

use codebox_server::{serve_with_limits, ConnectionLimits};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::TestApp;

/// Guards against a hung test only; no assertion is about time.
const GUARD: Duration = Duration::from_secs(30);

struct Running {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(app: &TestApp, limits: ConnectionLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app.router.clone();
        let task = tokio::spawn(serve_with_limits(listener, router, limits, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(GUARD, &mut self.task)
            .await
            .expect("shutdown finishes")
            .expect("the server task did not panic");
        assert!(result.is_ok(), "{result:?}");
    }
}

struct HttpReply {
    status: u16,
    head: String,
    body: String,
}

impl HttpReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> HttpReply {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("x-api-key: {key}\r\n"));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        request.push_str("content-type: application/json\r\n");
    }
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("writes");
    read_reply(&mut stream).await
}

async fn read_reply(stream: &mut TcpStream) -> HttpReply {
    let mut raw = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut raw))
        .await
        .expect("the server answers")
        .expect("reads");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Waits until the server closes `stream` (EOF or reset), reading and
/// discarding whatever it sends.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    let waited = tokio::time::timeout(GUARD, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    waited.is_ok()
}

#[tokio::test]
async fn end_to_end_over_a_socket() {
    let app = TestApp::start().await;
    let server = Running::start(&app, ConnectionLimits::default()).await;
    let health = http(server.address, "GET", "/health", None, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["data"]["status"], "ok");
    assert!(health.header("x-request-id").is_some());

    let created = http(
        server.address,
        "POST",
        "/api/v1/sandboxes",
        Some(&app.alice.key),
        Some(&json!({"runtime": app.runtime_name()})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["data"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    let ran = http(
        server.address,
        "POST",
        &format!("/api/v1/sandboxes/{id}/commands"),
        Some(&app.alice.key),
        Some(&json!({"cmd": "echo hi"})),
    )
    .await;
    assert_eq!(ran.status, 200, "{}", ran.body);

    let unauthorized = http(server.address, "GET", "/api/v1/sandboxes", None, None).await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(unauthorized.json()["error"]["code"], "UNAUTHORIZED");

    let deleted = http(
        server.address,
        "DELETE",
        &format!("/api/v1/sandboxes/{id}"),
        Some(&app.alice.key),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn slowloris_connections_are_closed_by_the_header_timeout() {
    let app = TestApp::start().await;
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let server = Running::start(&app, limits).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connects");
    // Half a request head, then silence.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: test\r\nx-slow: 1")
        .await
        .expect("writes");
    assert!(
        closed_by_server(&mut stream).await,
        "the connection stayed open"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = TestApp::start().await;
    let limits = ConnectionLimits {
        idle_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let server = Running::start(&app, limits).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connects");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("writes");
    // The response arrives, then the idle connection is closed by the server.
    assert!(
        closed_by_server(&mut stream).await,
        "the idle connection stayed open"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_envelope() {
    let app = TestApp::start().await;
    let limits = ConnectionLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let server = Running::start(&app, limits).await;
    // Holds the only slot. Sending a byte makes sure it was accepted first.
    let mut holder = TcpStream::connect(server.address).await.expect("connects");
    holder.write_all(b"G").await.expect("writes");
    let mut reply = None;
    for _ in 0..50 {
        let attempt = http(server.address, "GET", "/health", None, None).await;
        if attempt.status == 503 {
            reply = Some(attempt);
            break;
        }
        tokio::task::yield_now().await;
    }
    let reply = reply.expect("a connection over the cap is refused");
    assert_eq!(reply.json()["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(reply.header("retry-after").is_some());
    drop(holder);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let app = TestApp::start().await;
    let server = Running::start(&app, ConnectionLimits::default()).await;
    let address = server.address;
    assert_eq!(
        http(address, "GET", "/health", None, None).await.status,
        200
    );
    server.shutdown().await;
    assert!(
        TcpStream::connect(address).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let app = TestApp::start().await;
    let server = Running::start(&app, ConnectionLimits::default()).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connects");
    let big = "a".repeat(64 * 1024);
    let request =
        format!("GET /health HTTP/1.1\r\nhost: test\r\nx-big: {big}\r\nconnection: close\r\n\r\n");
    // The server may close before reading it all; that is fine too.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let server = Running::start(&app, ConnectionLimits::default()).await;
    let address = server.address;
    let key = app.alice.key.clone();
    let in_flight = tokio::spawn(async move {
        http(
            address,
            "POST",
            &format!("/api/v1/sandboxes/{id}/commands"),
            Some(&key),
            Some(&json!({"cmd": "sleep 1", "timeout": 20})),
        )
        .await
    });
    // Shut down only once the command is running in the sandbox.
    tokio::time::timeout(GUARD, async {
        while app.runtime.execs().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the command started");
    server.shutdown().await;
    let reply = in_flight.await.expect("the client task finished");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["data"]["timed_out"], false);
}

#[tokio::test]
async fn a_stalled_body_is_a_client_error() {
    let mut options = crate::support::Options::default();
    options.server.body_stall_timeout = Duration::from_secs(1);
    let app = TestApp::with(options).await;
    let server = Running::start(&app, ConnectionLimits::default()).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connects");
    let head = format!(
        "POST /api/v1/sandboxes HTTP/1.1\r\nhost: test\r\nconnection: close\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"runtime\":",
        app.alice.key
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    // The rest of the body never comes.
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "INVALID_JSON");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_over_sockets_respect_the_quota() {
    let app = TestApp::start().await;
    let server = Running::start(&app, ConnectionLimits::default()).await;
    let body = json!({"runtime": app.runtime_name()});
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (address, key, body) = (server.address, app.alice.key.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            http(
                address,
                "POST",
                "/api/v1/sandboxes",
                Some(&key),
                Some(&body),
            )
            .await
        }));
    }
    let mut created = 0;
    for client in clients {
        let reply = client.await.expect("client finished");
        match reply.status {
            201 => created += 1,
            429 => assert_eq!(reply.json()["error"]["code"], "RESOURCE_LIMIT_ERROR"),
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(created, app.core.settings().limits.max_sandboxes_per_user);
    server.shutdown().await;
}
