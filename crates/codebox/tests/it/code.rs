//! Stateful code execution end to end: `codebox serve` with the Linux runtime and
//! the real agent, driven over HTTP. Needs root and `CODEBOX_AGENT_PATH` (a static
//! agent, from `scripts/build-agent`; `scripts/test` sets it).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;

use serde_json::{json, Value};

use crate::cli::Server;

pub(crate) fn agent_path() -> String {
    std::env::var("CODEBOX_AGENT_PATH").expect(
        "CODEBOX_AGENT_PATH is unset: build the static agent with \
         `CODEBOX_AGENT_PATH=$(scripts/build-agent)` (scripts/test does this)",
    )
}

/// A running server, its admin key and one python sandbox.
pub(crate) struct Fixture {
    server: Option<Server>,
    pub(crate) key: String,
    pub(crate) sandbox: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn start(runtime: &str) -> Fixture {
        Self::start_with(runtime, &[])
    }

    /// A fixture whose server reads `config` (YAML lines) as its config file.
    pub(crate) fn start_with(runtime: &str, config: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = agent_path();
        let config_path = dir.path().join("codebox.yaml");
        let config_path = config_path.to_str().expect("a UTF-8 temp path").to_owned();
        let mut env = vec![("CODEBOX_AGENT_PATH", agent.as_str())];
        if !config.is_empty() {
            std::fs::write(&config_path, config.join("\n")).expect("config written");
            env.push(("CODEBOX_CONFIG", config_path.as_str()));
        }
        let server = Server::start(dir.path(), &env);
        let key = read_key(dir.path());
        let mut fixture = Fixture {
            server: Some(server),
            key,
            sandbox: String::new(),
            _dir: dir,
        };
        let created = fixture.call("POST", "/api/v1/sandboxes", &json!({"runtime": runtime}));
        assert_eq!(created.0, 201, "{}", created.1);
        fixture.sandbox = parse(&created.1)["data"]["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        fixture
    }

    /// The server's peak resident memory so far (`VmHWM`), in bytes.
    pub(crate) fn server_peak_rss(&self) -> u64 {
        let pid = self.server.as_ref().expect("running").pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .expect("VmHWM in /proc/<pid>/status")
    }

    pub(crate) fn port(&self) -> u16 {
        self.server.as_ref().expect("running").port
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: &Value) -> (u16, String) {
        let mut stream = self.send(method, path, body, "application/json");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reads");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head");
        let status = head.split_whitespace().nth(1).expect("status");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status.parse().expect("numeric"), body)
    }

    fn send(&self, method: &str, path: &str, body: &Value, accept: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port())).expect("connects");
        let body = body.to_string();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\n\
             Accept: {accept}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.key,
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("writes");
        stream
    }

    /// `POST /execute` answered as JSON; the `data`.
    fn execute(&self, body: Value) -> Value {
        let path = format!("/api/v1/sandboxes/{}/execute", self.sandbox);
        let (status, text) = self.call("POST", &path, &body);
        assert_eq!(status, 200, "{text}");
        parse(&text)["data"].clone()
    }

    /// `POST /execute` streamed as NDJSON, read event by event.
    fn stream(&self, body: Value) -> Events {
        let path = format!("/api/v1/sandboxes/{}/execute", self.sandbox);
        let stream = self.send("POST", &path, &body, "application/x-ndjson");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("reads the head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("application/x-ndjson"), "{head}");
        Events {
            reader,
            pending: String::new(),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

fn read_key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.key"))
        .expect("admin.key written")
        .trim()
        .to_owned()
}

pub(crate) fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// NDJSON events of a chunked response, one at a time.
struct Events {
    reader: BufReader<TcpStream>,
    pending: String,
}

impl Events {
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some((line, rest)) = self.pending.split_once('\n') {
                let event = parse(line);
                self.pending = rest.to_owned();
                return Some(event);
            }
            let mut size = String::new();
            self.reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            chunk.truncate(size);
            self.pending
                .push_str(&String::from_utf8(chunk).expect("UTF-8"));
        }
    }

    fn rest(mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

#[test]
fn python_state_errors_contexts_and_timeouts() {
    let fixture = Fixture::start("python3");
    let first = fixture.execute(json!({"code": "x = 1"}));
    assert_eq!(first["error"], Value::Null, "{first}");
    let second = fixture.execute(json!({"code": "x + 1"}));
    assert_eq!(second["text"], "2", "{second}");
    assert_eq!(second["execution_count"], 2);

    let failed = fixture.execute(json!({"code": "1/0"}));
    assert_eq!(failed["error"]["name"], "ZeroDivisionError", "{failed}");
    assert!(
        failed["error"]["traceback"]
            .as_str()
            .unwrap_or_default()
            .contains("ZeroDivisionError"),
        "{failed}"
    );
    assert_eq!(failed["outcome"], "error");

    // A timed-out endless loop is interrupted and the state survives.
    let slow = fixture.execute(json!({"code": "while True: pass", "timeout": 1}));
    assert_eq!(slow["outcome"], "timeout", "{slow}");
    let still = fixture.execute(json!({"code": "x"}));
    assert_eq!(still["text"], "1", "{still}");

    // A second context does not share the first's state.
    let path = format!("/api/v1/sandboxes/{}/contexts", fixture.sandbox);
    let (status, created) = fixture.call("POST", &path, &json!({"language": "python"}));
    assert_eq!(status, 201, "{created}");
    let context = parse(&created)["data"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let other = fixture.execute(json!({"code": "x", "context_id": context}));
    assert_eq!(other["error"]["name"], "NameError", "{other}");

    let records = fixture.call(
        "GET",
        &format!("/api/v1/sandboxes/{}/executions", fixture.sandbox),
        &json!({}),
    );
    let records = parse(&records.1);
    let statuses: Vec<&str> = records["data"]["executions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"timed_out") && statuses.contains(&"failed"),
        "{statuses:?}"
    );
}

#[test]
fn streaming_shows_output_before_the_code_ends() {
    let fixture = Fixture::start("python3");
    fixture.execute(json!({"code": "x = 41"}));
    let code = "import time\nprint('early', flush=True)\ntime.sleep(300)";
    let mut events = fixture.stream(json!({"code": code, "timeout": 300}));
    let first = events.next().expect("an event");
    assert_eq!(first, json!({"type": "stdout", "text": "early\n"}));
    // The cell still sleeps: the print arrived while it ran. Interrupt it.
    let path = format!(
        "/api/v1/sandboxes/{}/contexts/default-python/interrupt",
        fixture.sandbox
    );
    let (status, text) = fixture.call("POST", &path, &json!({}));
    assert_eq!(status, 200, "{text}");
    let rest = events.rest();
    let end = rest.last().expect("an end event");
    assert_eq!(end["type"], "end", "{rest:?}");
    assert_eq!(end["outcome"], "interrupted", "{rest:?}");
    let after = fixture.execute(json!({"code": "x + 1"}));
    assert_eq!(after["text"], "42", "{after}");
}

#[test]
fn bash_keeps_its_directory_and_javascript_awaits_at_top_level() {
    let fixture = Fixture::start("python3");
    fixture.execute(json!({"code": "cd /tmp", "language": "bash"}));
    let pwd = fixture.execute(json!({"code": "pwd", "language": "bash"}));
    assert_eq!(
        pwd["logs"]["stdout"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<String>()),
        Some("/tmp\n".to_owned()),
        "{pwd}"
    );
    let js = fixture.execute(json!({
        "code": "const v = await Promise.resolve(20); v + 1",
        "language": "javascript"
    }));
    assert_eq!(js["text"], "21", "{js}");
}

#[test]
fn a_disconnected_stream_interrupts_the_code_and_keeps_state() {
    let fixture = Fixture::start("python3");
    let code = "x = 5\nimport time\nprint('going', flush=True)\ntime.sleep(300)";
    let mut events = fixture.stream(json!({"code": code, "timeout": 300}));
    assert_eq!(
        events.next().expect("an event"),
        json!({"type": "stdout", "text": "going\n"})
    );
    drop(events);
    // Were the sleep still running, this would wait behind it for 300 s.
    let after = fixture.execute(json!({"code": "x * 2"}));
    assert_eq!(after["text"], "10", "{after}");
    let path = format!("/api/v1/sandboxes/{}/executions", fixture.sandbox);
    let records = parse(&fixture.call("GET", &path, &json!({})).1);
    let statuses: Vec<&str> = records["data"]["executions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert!(statuses.contains(&"cancelled"), "{statuses:?}");
}

#[test]
fn a_restarted_context_loses_its_state() {
    let fixture = Fixture::start("python3");
    fixture.execute(json!({"code": "y = 3"}));
    let path = format!(
        "/api/v1/sandboxes/{}/contexts/default-python/restart",
        fixture.sandbox
    );
    let (status, text) = fixture.call("POST", &path, &json!({}));
    assert_eq!(status, 200, "{text}");
    let after = fixture.execute(json!({"code": "y"}));
    assert_eq!(after["error"]["name"], "NameError", "{after}");
    assert_eq!(after["execution_count"], 1, "{after}");
}
