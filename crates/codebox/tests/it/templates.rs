//! The language templates end to end: `codebox template build|list` builds the
//! python3 template, `serve` mounts it read-only into sandboxes, and code run
//! through `POST /commands` and `POST /execute` imports numpy, pandas and
//! matplotlib from it. Needs root, `CODEBOX_AGENT_PATH` and (the first time) the
//! network: the template is built once per target directory under
//! `<target>/tmp/test-templates` and reused by later runs.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::cli::{stderr, Server};

/// Shared by every run of this test binary (the build lock serialises builders;
/// a current template is not rebuilt).
fn shared_templates() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-templates")
}

fn codebox(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codebox"));
    command.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    command.envs(env.iter().copied());
    command.output().expect("the codebox binary runs")
}

fn agent_path() -> String {
    std::env::var("CODEBOX_AGENT_PATH").expect(
        "CODEBOX_AGENT_PATH is unset: build the static agent with \
         `CODEBOX_AGENT_PATH=$(scripts/build-agent)` (scripts/test does this)",
    )
}

/// One JSON request with the admin key; (status, parsed body).
fn call(port: u16, key: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "JSON answers have a length: {head}"
    );
    let parsed = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, parsed)
}

/// `POST /commands`: (exit code, stdout, stderr).
fn run(port: u16, key: &str, sandbox: &str, cmd: &str) -> (i64, String, String) {
    let path = format!("/api/v1/sandboxes/{sandbox}/commands");
    let (status, body) = call(
        port,
        key,
        "POST",
        &path,
        &json!({"cmd": cmd, "timeout": 60}),
    );
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    (
        data["exit_code"].as_i64().expect("an exit code"),
        data["stdout"].as_str().unwrap_or_default().to_owned(),
        data["stderr"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn the_cli_builds_python3_and_sandboxes_import_numpy_pandas_matplotlib_from_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let templates = shared_templates();
    let templates = templates.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let env = [("CODEBOX_TEMPLATES_DIR", templates)];
    let built = codebox(&["template", "build", "python3", "--data-dir", data], &env);
    assert!(built.status.success(), "{}", stderr(&built));
    let listed = codebox(&["template", "list", "--data-dir", data], &env);
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listing.contains("python3  ready"), "{listing}");
    assert!(listing.contains("numpy"), "versions are listed: {listing}");

    let agent = agent_path();
    let server = Server::start(
        dir.path(),
        &[
            ("CODEBOX_AGENT_PATH", agent.as_str()),
            ("CODEBOX_TEMPLATES_DIR", templates),
            ("CODEBOX_TEMPLATES_ENABLED", "python3"),
            // Already built: the start-up build only finds it current.
            ("CODEBOX_TEMPLATES_BUILD_ON_START", "true"),
        ],
    );
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).expect("admin.key");
    let key = key.trim();
    let port = server.port;
    let (status, created) = call(
        port,
        key,
        "POST",
        "/api/v1/sandboxes",
        &json!({"runtime": "python3"}),
    );
    assert_eq!(status, 201, "{created}");
    let sandbox = created["data"]["id"].as_str().expect("an id").to_owned();

    let (code, out, err) = run(
        port,
        key,
        &sandbox,
        "command -v python3; python3 -c 'import numpy, pandas, matplotlib, IPython; \
         print(numpy.__version__, pandas.__version__)'; echo $MPLBACKEND $CODEBOX_PYTHON",
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"/opt/codebox/python3/bin/python3"),
        "{out}"
    );
    assert_eq!(
        lines.get(2),
        Some(&"Agg /opt/codebox/python3/bin/python"),
        "{out}"
    );

    // Read-only: a sandbox cannot change what every other sandbox runs.
    let (code, _, err) = run(port, key, &sandbox, "touch /opt/codebox/python3/bin/evil");
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");

    let path = format!("/api/v1/sandboxes/{sandbox}/execute");
    let code = "import numpy, pandas, matplotlib.pyplot as plt\n\
                plt.plot([1, 2, 3])\n\
                int(pandas.DataFrame({'a': numpy.arange(4)})['a'].sum())";
    let (status, executed) = call(port, key, "POST", &path, &json!({"code": code}));
    assert_eq!(status, 200, "{executed}");
    let data = &executed["data"];
    assert_eq!(data["error"], Value::Null, "{data}");
    assert_eq!(data["text"], "6", "{data}");
    let png = data["results"]
        .as_array()
        .is_some_and(|results| results.iter().any(|r| r.get("image/png").is_some()));
    assert!(png, "the open figure becomes a PNG result: {data}");
    server.stop();
}

/// Ctrl-C during a build stops pip/python, removes the partial build and exits
/// non-zero naming the cancellation. Needs the host's python3 venv module only.
#[test]
fn ctrl_c_cancels_a_template_build_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_codebox"))
        .args(["template", "build", "python3", "--data-dir"])
        .arg(&data)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("codebox starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("UTF-8 progress");
        let started = line.contains("== create venv");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|line| line.contains("create venv")),
        "{seen:?}"
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("exits");
    assert!(!status.success(), "{rest:?}");
    let message = rest.join("\n");
    assert!(message.contains("cancelled"), "{message}");
    let left: Vec<String> = std::fs::read_dir(data.join("templates"))
        .expect("the templates directory exists")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
