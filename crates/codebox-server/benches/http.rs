//! Request overhead of the API layer: latency percentiles and throughput of
//! the whole router in-process (every middleware, SQLite in memory, the fake
//! runtime), and of the real server over one keep-alive TCP connection.
//!
//! `cargo bench -p codebox-server --bench http` (add `--profile dev` for a
//! quick, less optimised run). Numbers only; nothing here asserts on time.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use codebox_core::{Core, CoreSettings, Secrets};
use codebox_runtime::fake::FakeRuntime;
use codebox_server::{router, serve_with_limits, AppState, ConnectionLimits, ServerSettings};
use codebox_store::{LocalRateLimiter, SqliteStore};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

const ITERATIONS: usize = 5_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (app, key, sandbox) = setup().await;
    let get = |path: String, key: Option<String>| {
        move || {
            let mut builder = Request::builder().method(Method::GET).uri(path.as_str());
            if let Some(key) = &key {
                builder = builder.header("x-api-key", key.as_str());
            }
            builder.body(Body::empty()).expect("valid request")
        }
    };
    report(
        "in-process GET /health",
        measure(&app, get("/health".into(), None)).await,
    );
    report(
        "in-process GET /api/v1/runtimes (API key)",
        measure(&app, get("/api/v1/runtimes".into(), Some(key.clone()))).await,
    );
    report(
        "in-process GET /api/v1/sandboxes/{id} (API key)",
        measure(
            &app,
            get(format!("/api/v1/sandboxes/{sandbox}"), Some(key.clone())),
        )
        .await,
    );
    report(
        "in-process GET /api/v1/nothing (404, unauthenticated)",
        measure(&app, get("/api/v1/nothing".into(), None)).await,
    );
    let address = start_server(app).await;
    report(
        "socket keep-alive GET /health",
        measure_socket(address).await,
    );
}

async fn setup() -> (Router, String, String) {
    let store = Arc::new(SqliteStore::open_in_memory().await.expect("SQLite opens"));
    let settings = CoreSettings::with_defaults(Secrets {
        api_key_secret: b"bench".to_vec(),
        jwt_secret: None,
    });
    let core = Arc::new(Core::new(store, Arc::new(FakeRuntime::new()), settings));
    let user = core.create_user("bench", false).await.expect("user");
    let (key, _) = core.create_api_key(&user, None).await.expect("key");
    let runtime = core.runtimes()[0].name.clone();
    let request = codebox_core::CreateSandboxRequest {
        runtime,
        ..Default::default()
    };
    let sandbox = core.create_sandbox(&user, request).await.expect("sandbox");
    let mut server = ServerSettings::default();
    // Measure the layers, not the limiter's verdicts.
    server.rate_limits.enabled = false;
    let state = AppState::new(core, server, Arc::new(LocalRateLimiter::new(1024)));
    (router(state), key, sandbox.id.to_string())
}

async fn measure(app: &Router, request: impl Fn() -> Request<Body>) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        let response = app.clone().oneshot(request()).await.expect("infallible");
        let status = response.status();
        response.into_body().collect().await.expect("readable");
        latencies.push(started.elapsed());
        assert!(status != StatusCode::INTERNAL_SERVER_ERROR);
    }
    latencies
}

async fn start_server(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(serve_with_limits(
        listener,
        app,
        ConnectionLimits::default(),
        std::future::pending(),
    ));
    address
}

async fn measure_socket(address: SocketAddr) -> Vec<Duration> {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let request = b"GET /health HTTP/1.1\r\nhost: bench\r\n\r\n";
    let mut buffer = vec![0u8; 4096];
    let mut latencies = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        stream.write_all(request).await.expect("writes");
        read_one_response(&mut stream, &mut buffer).await;
        latencies.push(started.elapsed());
    }
    latencies
}

/// Reads one response with a Content-Length body.
async fn read_one_response(stream: &mut TcpStream, buffer: &mut [u8]) {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).await.expect("reads");
        assert!(read > 0, "the server closed the connection");
        filled += read;
        let text = String::from_utf8_lossy(&buffer[..filled]);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            if filled >= end + 4 + length {
                return;
            }
        }
    }
}

fn report(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    let total: Duration = latencies.iter().sum();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "{name}: {} requests, {:.0} req/s sequential, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies.len() as f64 / total.as_secs_f64(),
        percentile(50),
        percentile(99),
        latencies[latencies.len() - 1],
    );
}
