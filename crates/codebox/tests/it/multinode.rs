//! Scale-out end to end on this machine: Postgres (a fresh database per run)
//! and Redis, three `codebox node` processes and two `codebox serve --role
//! api` processes, each with its own data directory, runtime root and cgroup
//! parent. Needs root, `CODEBOX_AGENT_PATH`, Postgres and Redis (skipped with a
//! note when Postgres is unreachable, unless CODEBOX_REQUIRE_SERVICES=1).
//!
//! Checks: placement spreads over the nodes; commands and files reach the
//! right node through either API; the per-user quota holds across replicas;
//! sandboxes cannot reach a node's API; the node API refuses a missing or
//! wrong secret (401); a node killed with SIGKILL has its sandboxes turn
//! `410 SANDBOX_GONE` / `node_lost` (lost after 6 s of silence) and new creates succeed elsewhere; the
//! node restarted reconciles and takes work again.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{free_port, CgroupCleanup};
use crate::code::{agent_path, parse};

const NODE_SECRET: &str = "multinode-test-secret-0123456789abcdef";
const ADMIN_KEY: &str = "cbx_multinode-admin-key-0123456789";
const QUOTA: usize = 8;
/// Generous bound for anything asynchronous (a lost node is detected after
/// 6 s); the loops below exit as soon as the condition holds.
const PATIENCE: Duration = Duration::from_secs(90);

fn postgres_base() -> String {
    std::env::var("CODEBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn redis_url() -> String {
    std::env::var("CODEBOX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn psql(url: &str, sql: &str) -> Option<String> {
    let output = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A database of its own, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Option<Database> {
        let admin_url = postgres_base();
        let name = format!(
            "codebox_mn_{}_{}",
            std::process::id(),
            free_port() // unique enough alongside the pid
        );
        if psql(&admin_url, &format!("CREATE DATABASE {name}")).is_none() {
            assert!(
                std::env::var("CODEBOX_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "Postgres is required but CREATE DATABASE failed at {admin_url}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping the multi-node test, Postgres unreachable"
            );
            return None;
        }
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => format!("{admin_url}/{name}"),
        };
        Some(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// One `codebox` child process.
struct Process {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// stderr goes here (a pipe nobody reads could fill and block the child).
    log: std::path::PathBuf,
    _cgroups: Option<CgroupCleanup>,
}

impl Process {
    fn spawn(
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: std::path::PathBuf,
        cgroups: Option<String>,
    ) -> Process {
        let mut process = Process {
            child: None,
            args,
            env,
            log,
            _cgroups: cgroups.map(CgroupCleanup),
        };
        process.start();
        process
    }

    fn start(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_codebox"));
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("log file"),
            );
        for (name, value) in &self.env {
            command.env(name, value);
        }
        self.child = Some(command.spawn().expect("codebox starts"));
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        if child.try_wait().ok()?.is_some() {
            return Some(self.logs());
        }
        None
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; the exit status.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool, process: &mut Process) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if ready() {
            return;
        }
        if let Some(stderr) = process.exited() {
            panic!("{what}: the process exited:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen in {PATIENCE:?}");
}

/// One HTTP/1.1 request; (status, body).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
    out
}

fn api(port: u16, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    let (status, body) = request(
        port,
        method,
        path,
        &[
            ("X-API-Key", ADMIN_KEY),
            ("Content-Type", "application/json"),
        ],
        text.as_bytes(),
    )
    .expect("the API answers");
    let value = if body.is_empty() {
        Value::Null
    } else {
        parse(&String::from_utf8_lossy(&body))
    };
    (status, value)
}

struct Cluster {
    dir: tempfile::TempDir,
    db: Database,
    env: Vec<(String, String)>,
    nodes: BTreeMap<String, (Process, u16)>,
    apis: Vec<(Process, u16)>,
}

impl Cluster {
    fn common_env(db: &Database) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis_url().as_str()),
            ("API_KEY_SECRET", "multinode-api-key-secret-0123456789"),
            ("JWT_SECRET", "multinode-jwt-secret-0123456789abcdef"),
            ("CODEBOX_BOOTSTRAP_API_KEY", ADMIN_KEY),
            ("CODEBOX_NODE_SECRET", NODE_SECRET),
            ("CODEBOX_NODE_HEARTBEAT_INTERVAL", "300ms"),
            ("CODEBOX_NODE_LOST_AFTER", "6s"),
            ("CODEBOX_RATE_LIMITS_ENABLED", "false"),
            ("MAX_SANDBOXES_PER_USER", &QUOTA.to_string()),
            ("CODEBOX_AGENT_PATH", agent_path().as_str()),
            ("CODEBOX_POOL_SIZE", "0"),
            ("CODEBOX_TEMPLATES_BUILD_ON_START", "false"),
            ("CODEBOX_LOG_LEVEL", "warn"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }

    fn start_node(&mut self, name: &str, port: u16) {
        let data = self.dir.path().join(format!("{name}-data"));
        let cgroup = format!("codebox-mn-{name}-{port}");
        let mut env = self.env.clone();
        env.extend(
            [
                ("CODEBOX_NODE_ID", name.to_owned()),
                ("CODEBOX_NODE_LISTEN", format!("127.0.0.1:{port}")),
                ("CODEBOX_NODE_CAPACITY_SLOTS", "4".to_owned()),
                ("CODEBOX_CGROUP_PARENT", cgroup.clone()),
                (
                    "CODEBOX_RUNTIME_ROOT",
                    path(&self.dir.path().join(format!("{name}-runtime"))),
                ),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        let args = vec!["node".to_owned(), "--data-dir".to_owned(), path(&data)];
        let log = self.dir.path().join(format!("{name}.log"));
        let mut process = Process::spawn(args, env, log, Some(cgroup));
        wait_for(
            &format!("node {name} listening"),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            &mut process,
        );
        self.nodes.insert(name.to_owned(), (process, port));
    }

    fn start_api(&mut self, name: &str) {
        let port = free_port();
        let data = self.dir.path().join(name);
        let args = vec![
            "serve".to_owned(),
            "--role".to_owned(),
            "api".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--data-dir".to_owned(),
            path(&data),
        ];
        let log = self.dir.path().join(format!("{name}.log"));
        let mut process = Process::spawn(args, self.env.clone(), log, None);
        wait_for(
            &format!("API {name} ready"),
            || request(port, "GET", "/ready", &[], b"").is_some_and(|(status, _)| status == 200),
            &mut process,
        );
        self.apis.push((process, port));
    }

    fn api_port(&self, index: usize) -> u16 {
        self.apis[index % self.apis.len()].1
    }

    /// `codebox node list` as (id -> (state, used slots)).
    fn node_list(&self) -> BTreeMap<String, (String, u32)> {
        let output = Command::new(env!("CARGO_BIN_EXE_codebox"))
            .args(["node", "list"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("node list runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let used = fields.get(3)?.split('/').next()?.parse().ok()?;
                Some((fields[0].to_owned(), (fields[1].to_owned(), used)))
            })
            .collect()
    }

    fn create(&self, via: usize) -> (u16, Value) {
        api(
            self.api_port(via),
            "POST",
            "/api/v1/sandboxes",
            &json!({"runtime": "bash", "resources": {"cpu": 0.5, "memory": 256}, "timeout": 600}),
        )
    }

    fn placements(&self) -> BTreeMap<String, String> {
        let rows = psql(
            &self.db.url,
            "SELECT id || '=' || node FROM sandboxes WHERE status IN ('creating','running') AND node IS NOT NULL",
        )
        .expect("psql");
        rows.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(id, node)| (id.to_owned(), node.to_owned()))
            .collect()
    }
}

fn path(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

fn run(port: u16, id: &str, cmd: &str) -> (u16, Value) {
    api(
        port,
        "POST",
        &format!("/api/v1/sandboxes/{id}/commands"),
        &json!({ "cmd": cmd }),
    )
}

#[test]
fn two_apis_three_nodes_placement_routing_loss_and_recovery() {
    let Some(db) = Database::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // Sandboxes reach the runtime root under an unprivileged uid.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let env = Cluster::common_env(&db);
    let mut cluster = Cluster {
        dir,
        db,
        env,
        nodes: BTreeMap::new(),
        apis: Vec::new(),
    };
    let node_ports: BTreeMap<&str, u16> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|name| (name, free_port()))
        .collect();
    for (name, port) in &node_ports {
        cluster.start_node(name, *port);
    }
    cluster.start_api("api1");
    cluster.start_api("api2");

    // Hostile: the node API wants the secret.
    let n1_port = node_ports["n1"];
    let list = br#"{"method":"list"}"#;
    let json_type = ("Content-Type", "application/json");
    for auth in [None, Some("Bearer not-the-secret"), Some(NODE_SECRET)] {
        let mut headers = vec![json_type];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        let (status, _) = request(n1_port, "POST", "/v1/call", &headers, list).expect("answers");
        assert_eq!(status, 401, "{auth:?}");
    }
    let bearer = format!("Bearer {NODE_SECRET}");
    let (status, _) = request(
        n1_port,
        "POST",
        "/v1/call",
        &[json_type, ("Authorization", &bearer)],
        list,
    )
    .expect("answers");
    assert_eq!(status, 200);

    // Create up to the quota through both APIs; the next one is refused by either.
    let mut ids = Vec::new();
    for i in 0..QUOTA {
        let (status, body) = cluster.create(i);
        assert_eq!(status, 201, "{body}");
        ids.push(body["data"]["id"].as_str().expect("id").to_owned());
    }
    for via in 0..2 {
        let (status, body) = cluster.create(via);
        assert_eq!(status, 429, "quota across replicas: {body}");
        assert_eq!(body["error"]["code"], "RESOURCE_LIMIT_ERROR", "{body}");
    }

    // Placement spreads: 8 sandboxes on 3 nodes of 4 slots, least loaded first.
    let placements = cluster.placements();
    assert_eq!(placements.len(), QUOTA);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for node in placements.values() {
        *per_node.entry(node.clone()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    let (most, least) = (
        per_node.values().max().copied().unwrap_or(0),
        per_node.values().min().copied().unwrap_or(0),
    );
    assert!(most - least <= 1, "{per_node:?}");
    let listed = cluster.node_list();
    for (node, count) in &per_node {
        assert_eq!(listed[node].1 as usize, *count, "{listed:?}");
    }

    // Every sandbox answers through either API, from its own node.
    for (i, id) in ids.iter().enumerate() {
        for via in [i, i + 1] {
            let (status, body) = run(cluster.api_port(via), id, "echo $((6*7)) $HOSTNAME");
            assert_eq!(status, 200, "{body}");
            assert!(
                body["data"]["stdout"]
                    .as_str()
                    .is_some_and(|out| out.starts_with("42")),
                "{body}"
            );
        }
    }
    // Files: written through one API, read through the other.
    let file_path = format!("/api/v1/sandboxes/{}/files?path=notes/hello.txt", ids[0]);
    let (status, body) = request(
        cluster.api_port(0),
        "PUT",
        &file_path,
        &[("X-API-Key", ADMIN_KEY)],
        b"hello from api1",
    )
    .expect("upload");
    assert!(
        status == 200 || status == 201,
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = request(
        cluster.api_port(1),
        "GET",
        &file_path,
        &[("X-API-Key", ADMIN_KEY)],
        b"",
    )
    .expect("download");
    assert_eq!(status, 200);
    assert_eq!(body, b"hello from api1");

    // Hostile: a sandbox cannot reach any node API (its network namespace has
    // only lo), not even on 127.0.0.1.
    for port in node_ports.values() {
        let (status, body) = run(
            cluster.api_port(0),
            &ids[0],
            &format!(
                "(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo REACHED || echo BLOCKED"
            ),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["stdout"].as_str(), Some("BLOCKED\n"), "{body}");
    }

    // n1 dies without a word.
    let on_n1: Vec<String> = placements
        .iter()
        .filter(|(_, node)| *node == "n1")
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!on_n1.is_empty());
    cluster.nodes.get_mut("n1").expect("n1").0.kill_hard();
    for id in &on_n1 {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let (status, body) = api(
                cluster.api_port(1),
                "GET",
                &format!("/api/v1/sandboxes/{id}"),
                &json!({}),
            );
            if status == 410 {
                assert_eq!(body["error"]["reason"], "node_lost", "{body}");
                break;
            }
            assert_eq!(status, 200, "{body}");
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never ended: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let (status, body) = run(cluster.api_port(0), id, "true");
        assert_eq!(status, 410, "{body}");
        assert_eq!(body["error"]["reason"], "node_lost", "{body}");
    }
    assert_eq!(cluster.node_list()["n1"].0, "lost");
    // New sandboxes go to the surviving nodes.
    let mut replacements = Vec::new();
    for i in 0..on_n1.len() {
        let (status, body) = cluster.create(i);
        assert_eq!(status, 201, "{body}");
        let id = body["data"]["id"].as_str().expect("id").to_owned();
        let (status, body) = run(cluster.api_port(i + 1), &id, "echo ok");
        assert_eq!(status, 200, "{body}");
        replacements.push(id);
    }
    let placements = cluster.placements();
    assert!(replacements.iter().all(|id| placements[id] != "n1"));

    // n1 comes back on the same data directory: it reconciles (its leftovers
    // are destroyed) and takes new work.
    {
        let (process, _) = cluster.nodes.get_mut("n1").expect("n1");
        process.start();
        wait_for(
            "n1 back",
            || TcpStream::connect(("127.0.0.1", n1_port)).is_ok(),
            process,
        );
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while cluster.node_list()["n1"].0 != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "n1 never active again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Free quota, then create until one lands on n1 (least loaded: the next).
    for id in ids.iter().filter(|id| !on_n1.contains(id)).take(2) {
        let (status, body) = api(
            cluster.api_port(0),
            "DELETE",
            &format!("/api/v1/sandboxes/{id}"),
            &json!({}),
        );
        assert!(status == 200 || status == 204, "{status}: {body}");
    }
    let (status, body) = cluster.create(1);
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        cluster.placements()[&id],
        "n1",
        "the emptiest node takes it"
    );
    // A 503 is the documented retryable answer while an API replica's view of
    // the restarted node catches up (clients retry it honouring Retry-After);
    // it must not persist.
    let mut attempt = 0;
    let (status, body) = loop {
        let (status, body) = run(cluster.api_port(0), &id, "echo back");
        attempt += 1;
        if status != 503 || attempt >= 20 {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status, 200, "after {attempt} attempts: {body}");
    assert_eq!(body["data"]["stdout"], "back\n");

    // Clean shutdown of everything (nodes destroy their sandboxes).
    for (mut process, _) in std::mem::take(&mut cluster.apis) {
        let status = process.terminate().expect("api status");
        assert!(status.success(), "{}", process.logs());
    }
    for (_, (mut process, _)) in std::mem::take(&mut cluster.nodes) {
        let status = process.terminate().expect("node status");
        assert!(status.success(), "{}", process.logs());
    }
}
