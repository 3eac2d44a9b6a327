//! The language templates end to end: `codebox template build|list` builds the
//! python3 and node templates, `serve` mounts them read-only into sandboxes,
//! code run through `POST /commands` and `POST /execute` imports numpy, pandas
//! and matplotlib from the first, and TypeScript compiles with the second's
//! compiler (the host has none). Needs root, `CODEBOX_AGENT_PATH` and (the first time) the
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

/// The version `templates/python3/requirements.txt` pins for `package`.
fn pinned(package: &str) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/python3/requirements.txt");
    let text = std::fs::read_to_string(&path).expect("the pinned requirements");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{package}=="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{package} is not pinned"))
        .trim()
        .to_owned()
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
fn the_cli_builds_the_templates_and_sandboxes_use_numpy_pandas_matplotlib_and_typescript() {
    let dir = tempfile::tempdir().expect("temp dir");
    let templates = shared_templates();
    let templates = templates.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let env = [("CODEBOX_TEMPLATES_DIR", templates)];
    // No name: every template in `templates.enabled` (python3, node).
    let built = codebox(&["template", "build", "--data-dir", data], &env);
    assert!(built.status.success(), "{}", stderr(&built));
    let listed = codebox(&["template", "list", "--data-dir", data], &env);
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listing.contains("python3  ready"), "{listing}");
    assert!(listing.contains("node     ready"), "{listing}");
    assert!(listing.contains("numpy"), "versions are listed: {listing}");

    let agent = agent_path();
    let server = Server::start(
        dir.path(),
        &[
            ("CODEBOX_AGENT_PATH", agent.as_str()),
            ("CODEBOX_TEMPLATES_DIR", templates),
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
        // `set -e`: a failed import fails the command (the host has no numpy).
        "set -e; command -v python3; python3 -c 'import numpy, pandas, matplotlib, IPython; \
         print(\"imported\", numpy.__version__)'; echo $MPLBACKEND $CODEBOX_PYTHON",
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"/opt/codebox/python3/bin/python3"),
        "{out}"
    );
    let imported = format!("imported {}", pinned("numpy"));
    assert_eq!(lines.get(1), Some(&imported.as_str()), "{out}");
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
    let typescript = json!({
        "code": "const answer: number = [20, 22].reduce((a: number, b: number) => a + b, 0);\nanswer",
        "language": "typescript",
    });
    let (status, compiled) = call(port, key, "POST", &path, &typescript);
    assert_eq!(status, 200, "{compiled}");
    assert_eq!(compiled["data"]["text"], "42", "{compiled}");
    let (code, out, err) = run(port, key, &sandbox, "echo $CODEBOX_TS_PATH; command -v tsc");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "/opt/codebox/node/node_modules/typescript\n/opt/codebox/node/node_modules/.bin/tsc\n"
    );
    let png = data["results"]
        .as_array()
        .is_some_and(|results| results.iter().any(|r| r.get("image/png").is_some()));
    assert!(png, "the open figure becomes a PNG result: {data}");
    server.stop();
}

/// A template build that fails (its root is a regular file) never blocks
/// serving: sandboxes run the host's plain `python3`, and the failure is logged.
#[test]
fn a_failing_template_build_never_blocks_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_directory = dir.path().join("templates-root");
    std::fs::write(&not_a_directory, "").expect("writes");
    let agent = agent_path();
    let server = Server::start(
        dir.path(),
        &[
            ("CODEBOX_AGENT_PATH", agent.as_str()),
            (
                "CODEBOX_TEMPLATES_DIR",
                not_a_directory.to_str().expect("utf-8"),
            ),
            ("CODEBOX_TEMPLATES_BUILD_ON_START", "true"),
        ],
    );
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).expect("admin.key");
    let key = key.trim();
    let (status, created) = call(
        server.port,
        key,
        "POST",
        "/api/v1/sandboxes",
        &json!({"runtime": "python3"}),
    );
    assert_eq!(status, 201, "{created}");
    let sandbox = created["data"]["id"].as_str().expect("an id");
    let (code, out, err) = run(
        server.port,
        key,
        sandbox,
        "command -v python3; test -e /opt/codebox || echo no-templates",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "/usr/bin/python3\nno-templates\n"),
        "{err}"
    );
    let logs = stderr(&server.stop());
    // Failed, or (on a very slow machine) still running and cancelled at stop.
    assert!(
        logs.contains("template build failed") || logs.contains("template build cancelled"),
        "{logs}"
    );
}

/// `serve` builds a missing template in the background (node: small, one npm
/// download) while it already serves; once built, new sandboxes get it, the
/// warm one made before included (the pool is refilled). Waits, bounded, for
/// the build; never asserts a duration.
#[test]
fn serve_builds_a_missing_template_in_the_background_and_new_sandboxes_get_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = agent_path();
    let server = Server::start(
        dir.path(),
        &[
            ("CODEBOX_AGENT_PATH", agent.as_str()),
            ("CODEBOX_TEMPLATES_ENABLED", "node"),
            ("CODEBOX_TEMPLATES_BUILD_ON_START", "true"),
            ("CODEBOX_POOL_SIZE", "1"),
        ],
    );
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).expect("admin.key");
    let key = key.trim();
    let manifest = dir
        .path()
        .join("data/templates/node/.codebox-manifest.json");
    let built = (0..3000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        manifest.exists()
    });
    assert!(built, "the node template was never built");
    // The runtime gets the new set right after the rename: retry a few creates.
    let found = (0..50).any(|_| {
        let body = json!({"runtime": "python3"});
        let (status, created) = call(server.port, key, "POST", "/api/v1/sandboxes", &body);
        assert_eq!(status, 201, "{created}");
        let sandbox = created["data"]["id"].as_str().expect("an id").to_owned();
        let (_, out, _) = run(server.port, key, &sandbox, "command -v tsc || true");
        let path = format!("/api/v1/sandboxes/{sandbox}");
        call(server.port, key, "DELETE", &path, &json!({}));
        std::thread::sleep(std::time::Duration::from_millis(200));
        out == "/opt/codebox/node/node_modules/.bin/tsc\n"
    });
    assert!(found, "no sandbox got the template built in the background");
    let logs = stderr(&server.stop());
    assert!(logs.contains("language templates updated"), "{logs}");
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

/// `templates.python3.preload` (here through `CODEBOX_PYTHON3_PRELOAD`) runs in
/// the warm sandbox's prestarted python context on the template's interpreter:
/// the first execute of a sandbox claimed from the pool finds numpy imported
/// and the preload's `np` bound, as execution 1. A context created afterwards
/// (not prestarted) has none of it, so the check tells the two apart. Creates
/// until one is served from the pool (the pool fills in the background; a
/// cold create has no preload); never asserts a duration.
#[test]
fn a_preloaded_pool_sandbox_has_numpy_imported_on_its_first_execute() {
    let dir = tempfile::tempdir().expect("temp dir");
    let templates = shared_templates();
    let templates = templates.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let env = [("CODEBOX_TEMPLATES_DIR", templates)];
    let built = codebox(&["template", "build", "python3", "--data-dir", data], &env);
    assert!(built.status.success(), "{}", stderr(&built));

    let agent = agent_path();
    let server = Server::start(
        dir.path(),
        &[
            ("CODEBOX_AGENT_PATH", agent.as_str()),
            ("CODEBOX_TEMPLATES_DIR", templates),
            ("CODEBOX_TEMPLATES_ENABLED", "python3"),
            ("CODEBOX_POOL_SIZE", "1"),
            ("CODEBOX_POOL_PRESTART_CONTEXTS", "python"),
            ("CODEBOX_PYTHON3_PRELOAD", "import numpy as np"),
        ],
    );
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).expect("admin.key");
    let key = key.trim();
    let port = server.port;
    let probe = json!({"code": "import sys\n('numpy' in sys.modules, 'np' in globals())"});
    let mut preloaded = None;
    for _ in 0..60 {
        let body = json!({"runtime": "python3"});
        let (status, created) = call(port, key, "POST", "/api/v1/sandboxes", &body);
        assert_eq!(status, 201, "{created}");
        let sandbox = created["data"]["id"].as_str().expect("an id").to_owned();
        let path = format!("/api/v1/sandboxes/{sandbox}/execute");
        let (status, executed) = call(port, key, "POST", &path, &probe);
        assert_eq!(status, 200, "{executed}");
        let data = executed["data"].clone();
        assert_eq!(data["error"], Value::Null, "{data}");
        assert_eq!(data["execution_count"], 1, "{data}");
        if data["text"] == "(True, True)" {
            preloaded = Some(sandbox);
            break;
        }
        // A cold create: a fresh interpreter without the preload.
        assert_eq!(data["text"], "(False, False)", "{data}");
        let path = format!("/api/v1/sandboxes/{sandbox}");
        call(port, key, "DELETE", &path, &json!({}));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let sandbox = preloaded.expect("no create was served by a preloaded warm sandbox");

    // The preloaded module is the template's numpy, usable right away.
    let path = format!("/api/v1/sandboxes/{sandbox}/execute");
    let (status, executed) = call(
        port,
        key,
        "POST",
        &path,
        &json!({"code": "(np.__version__, int(np.arange(5).sum()), sys.prefix)"}),
    );
    assert_eq!(status, 200, "{executed}");
    let expected = format!("('{}', 10, '/opt/codebox/python3')", pinned("numpy"));
    assert_eq!(executed["data"]["text"], expected.as_str(), "{executed}");

    // A context created now was not prestarted: no preload in it.
    let contexts = format!("/api/v1/sandboxes/{sandbox}/contexts");
    let (status, created) = call(port, key, "POST", &contexts, &json!({"language": "python"}));
    assert_eq!(status, 201, "{created}");
    let context = created["data"]["id"].as_str().expect("a context id");
    let mut other = probe.clone();
    other["context_id"] = json!(context);
    let (status, executed) = call(port, key, "POST", &path, &other);
    assert_eq!(status, 200, "{executed}");
    assert_eq!(executed["data"]["text"], "(False, False)", "{executed}");
    server.stop();
}
