//! The client commands (`run`, `sandbox`, `exec`, `files`, `shell`) as a user
//! runs them against a real `codebox serve`.
//!
//! - `--help` of every client command and the error output (unknown sandbox,
//!   bad key, no server, https) are snapshot files under `tests/it/snapshots/`;
//!   `UPDATE_SNAPSHOTS=1` rewrites them (review the diff). Needs root only.
//! - End to end with real sandboxes (root and `CODEBOX_AGENT_PATH`, plus the
//!   network once for the python3 template, shared with `templates`): `run`
//!   of a script that prints and plots, `exec` exit codes, a files round trip
//!   checked by sha256, `--output json`, and `shell` under a pseudo-terminal.

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cli::{free_port, stderr, Server};
use crate::code::agent_path;

/// Spawns the binary with only `env` (and a PATH), in `cwd` if given.
fn codebox_in(cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codebox"));
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().expect("the codebox binary runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin).expect("stdin written");
    drop(input);
    child.wait_with_output().expect("the codebox binary exits")
}

fn codebox(args: &[&str], env: &[(&str, &str)]) -> Output {
    codebox_in(None, args, env, b"")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

/// Compares `actual` with `tests/it/snapshots/<name>.txt`; `UPDATE_SNAPSHOTS=1`
/// writes it instead.
fn snapshot(name: &str, actual: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots");
    let path = dir.join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(&dir).expect("snapshot dir");
        std::fs::write(&path, actual).expect("snapshot written");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it; review the diff)"
    );
}

#[test]
fn help_of_every_client_command_matches_its_snapshot() {
    let commands: &[&[&str]] = &[
        &["run"],
        &["sandbox"],
        &["sandbox", "create"],
        &["sandbox", "list"],
        &["sandbox", "info"],
        &["sandbox", "kill"],
        &["exec"],
        &["files"],
        &["files", "put"],
        &["files", "get"],
        &["files", "ls"],
        &["shell"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = codebox(&args, &[]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        snapshot(&format!("help-{}", command.join("-")), &stdout(&output));
    }
}

/// Replaces what changes from run to run (request ids, ports).
fn normalize(text: &str, port: u16) -> String {
    let mut text = text.replace(&port.to_string(), "<port>");
    // The runtimes on offer depend on the host's interpreters.
    if let (Some(start), Some(end)) = (text.find("available: "), text.find(" (request id")) {
        if start < end {
            text.replace_range(start + "available: ".len()..end, "<runtimes>");
        }
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("request id ") {
        let (head, tail) = rest.split_at(start + "request id ".len());
        out.push_str(head);
        let end = tail.find(')').unwrap_or(tail.len());
        out.push_str("<request-id>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// One case of the error snapshot: the command, its exit code and stderr.
fn case(title: &str, output: &Output, port: u16) -> String {
    assert!(
        stdout(output).is_empty(),
        "{title}: errors never go to stdout: {}",
        stdout(output)
    );
    let message = stderr(output);
    assert_eq!(message.lines().count(), 1, "{title}: one line: {message}");
    format!(
        "## {title}\nexit {}\n{}\n",
        code(output),
        normalize(&message, port)
    )
}

#[test]
fn errors_are_one_readable_line_with_a_documented_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let key = read_key(dir.path());
    let url = format!("http://127.0.0.1:{}", server.port);
    let env = [
        ("CODEBOX_API_URL", url.as_str()),
        ("CODEBOX_API_KEY", key.as_str()),
    ];
    let unknown = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut text = String::new();

    let output = codebox(&["sandbox", "info", unknown], &env);
    assert_eq!(code(&output), 3);
    assert!(
        stderr(&output).starts_with("error: NOT_FOUND: "),
        "{}",
        stderr(&output)
    );
    text.push_str(&case("unknown sandbox", &output, server.port));

    let output = codebox(&["exec", unknown, "--", "true"], &env);
    assert_eq!(code(&output), 3);
    text.push_str(&case("exec in an unknown sandbox", &output, server.port));

    let output = codebox(&["files", "get", unknown, "/etc/passwd", "-"], &env);
    assert_eq!(code(&output), 3);
    text.push_str(&case(
        "download from an unknown sandbox",
        &output,
        server.port,
    ));

    let bad_key = [
        ("CODEBOX_API_URL", url.as_str()),
        ("CODEBOX_API_KEY", "cbx_wrong"),
    ];
    let output = codebox(&["sandbox", "list"], &bad_key);
    assert_eq!(code(&output), 4);
    text.push_str(&case("bad key", &output, server.port));

    let output = codebox(&["sandbox", "create", "--runtime", "cobol"], &env);
    assert_eq!(code(&output), 3);
    text.push_str(&case("unknown runtime", &output, server.port));

    let missing = dir.path().join("missing.py");
    let output = codebox(&["run", missing.to_str().expect("utf-8")], &env);
    assert_eq!(code(&output), 6);
    text.push_str(
        &case("missing file", &output, server.port)
            .replace(dir.path().to_str().expect("utf-8"), "<dir>"),
    );

    let https = [
        ("CODEBOX_API_URL", "https://codebox.example"),
        ("CODEBOX_API_KEY", "cbx_x"),
    ];
    let output = codebox(&["sandbox", "list"], &https);
    assert_eq!(code(&output), 2);
    text.push_str(&case("https", &output, server.port));

    // JSON errors: one object on stderr with the API's code and request id.
    let output = codebox(&["--output", "json", "sandbox", "info", unknown], &env);
    assert_eq!(code(&output), 3);
    let error: Value = serde_json::from_str(&stderr(&output)).expect("a JSON error");
    assert_eq!(error["error"]["code"], "NOT_FOUND");
    assert_eq!(error["error"]["status"], 404);
    assert!(error["error"]["request_id"].is_string(), "{error}");

    // The defaults: the local server of the configuration and its admin.key.
    let port = server.port.to_string();
    let data = dir.path().join("data");
    let defaults = [
        ("CODEBOX_PORT", port.as_str()),
        ("CODEBOX_DATA_DIR", data.to_str().expect("utf-8")),
    ];
    let output = codebox(&["--output", "json", "sandbox", "list"], &defaults);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let listed: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(listed["sandboxes"], Value::Array(Vec::new()));
    drop(server.stop());

    // The server is gone: nothing listens on its port any more.
    let down = free_port();
    let down_url = format!("http://127.0.0.1:{down}");
    let env = [
        ("CODEBOX_API_URL", down_url.as_str()),
        ("CODEBOX_API_KEY", "cbx_x"),
    ];
    let output = codebox(&["sandbox", "list"], &env);
    assert_eq!(code(&output), 5);
    text.push_str(&case("server down", &output, down));

    let no_key = [
        ("CODEBOX_API_URL", down_url.as_str()),
        ("CODEBOX_DATA_DIR", "/nonexistent"),
    ];
    let output = codebox(&["sandbox", "list"], &no_key);
    assert_eq!(code(&output), 4);
    text.push_str(&case("no key", &output, down));
    snapshot("errors", &text);
}

fn read_key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.key"))
        .expect("admin.key")
        .trim()
        .to_owned()
}

/// A server with the real agent and the python3 template, and the client's
/// environment for it.
struct Live {
    server: Option<Server>,
    url: String,
    key: String,
    dir: tempfile::TempDir,
}

impl Live {
    fn start() -> Live {
        let dir = tempfile::tempdir().expect("temp dir");
        let templates = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-templates");
        let templates = templates.to_str().expect("utf-8").to_owned();
        let data = dir.path().join("data");
        let built = codebox(
            &[
                "template",
                "build",
                "python3",
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
            &[("CODEBOX_TEMPLATES_DIR", templates.as_str())],
        );
        assert!(built.status.success(), "{}", stderr(&built));
        let agent = agent_path();
        let server = Server::start(
            dir.path(),
            &[
                ("CODEBOX_AGENT_PATH", agent.as_str()),
                ("CODEBOX_TEMPLATES_DIR", templates.as_str()),
                ("CODEBOX_TEMPLATES_ENABLED", "python3"),
            ],
        );
        let key = read_key(dir.path());
        let url = format!("http://127.0.0.1:{}", server.port);
        Live {
            server: Some(server),
            url,
            key,
            dir,
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("CODEBOX_API_URL", self.url.as_str()),
            ("CODEBOX_API_KEY", self.key.as_str()),
        ]
    }

    fn run(&self, args: &[&str]) -> Output {
        codebox(args, &self.env())
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
        serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|_| panic!("{args:?}: not JSON: {}", stdout(&output)))
    }

    fn create(&self) -> String {
        let created = self.json(&["sandbox", "create"]);
        created["id"].as_str().expect("an id").to_owned()
    }

    fn running(&self) -> Vec<String> {
        let listed = self.json(&["sandbox", "list", "--status", "running"]);
        listed["sandboxes"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|view| view["id"].as_str().expect("an id").to_owned())
            .collect()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            if !std::thread::panicking() {
                server.stop();
            }
        }
    }
}

/// A PNG: the signature, then chunks whose CRCs match, IHDR first with a
/// non-empty size, IEND last.
fn assert_valid_png(bytes: &[u8]) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "no PNG signature");
    let mut at = 8;
    let mut kinds = Vec::new();
    while at + 12 <= bytes.len() {
        let length = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = &bytes[at + 4..at + 8];
        let end = at + 8 + length;
        assert!(end + 4 <= bytes.len(), "a chunk runs past the end");
        let stored = u32::from_be_bytes(bytes[end..end + 4].try_into().expect("4 bytes"));
        assert_eq!(crc32(&bytes[at + 4..end]), stored, "bad CRC in {kind:?}");
        if kind == b"IHDR" {
            let width = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
            let height = u32::from_be_bytes(bytes[at + 12..at + 16].try_into().expect("4 bytes"));
            assert!(width > 0 && height > 0);
        }
        kinds.push(String::from_utf8_lossy(kind).into_owned());
        at = end + 4;
    }
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"), "{kinds:?}");
    assert!(kinds.iter().any(|kind| kind == "IDAT"), "{kinds:?}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const PLOT_SCRIPT: &str = "\
import sys
import matplotlib.pyplot as plt
print('hello from the sandbox')
print('a warning', file=sys.stderr)
plt.plot([1, 4, 9, 16])
plt.title('squares')
plt.show()
print('after the plot')
";

#[test]
fn run_streams_output_saves_the_plot_and_kills_the_sandbox() {
    let live = Live::start();
    let work = live.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::write(work.join("plot.py"), PLOT_SCRIPT).expect("script written");
    let output = codebox_in(Some(&work), &["run", "plot.py"], &live.env(), b"");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "hello from the sandbox\nafter the plot\n",
        "{}",
        stderr(&output)
    );
    let messages = stderr(&output);
    assert!(messages.contains("a warning\n"), "{messages}");
    assert!(messages.contains("wrote ./out-1.png"), "{messages}");
    assert_valid_png(&std::fs::read(work.join("out-1.png")).expect("out-1.png written"));
    assert!(live.running().is_empty(), "the sandbox was killed");

    // A failing script from stdin: the traceback on stderr, exit 1; --keep
    // leaves the sandbox running and says so.
    let output = codebox_in(
        Some(&work),
        &["run", "--keep", "-"],
        &live.env(),
        b"print('before')\n1 / 0\n",
    );
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(stdout(&output), "before\n");
    let messages = stderr(&output);
    assert!(messages.contains("ZeroDivisionError"), "{messages}");
    let running = live.running();
    assert_eq!(running.len(), 1, "kept: {running:?}");
    assert!(
        messages.contains(&running[0]),
        "the id is printed: {messages}"
    );

    // JSON: one document with the outcome, output and written files.
    let out_dir = live.dir.path().join("images");
    let report = live.json(&[
        "run",
        "--out-dir",
        out_dir.to_str().expect("utf-8"),
        work.join("plot.py").to_str().expect("utf-8"),
    ]);
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["stdout"], "hello from the sandbox\nafter the plot\n");
    assert_eq!(report["kept"], false);
    let file = report["files"][0].as_str().expect("a written file");
    assert_valid_png(&std::fs::read(file).expect("the reported file exists"));
    assert!(
        report["results"][0].get("image/png").is_none(),
        "no base64 in the report"
    );
}

#[test]
fn exec_streams_and_exits_with_the_command_status() {
    // Every command sleeps first: a foreground process that exits before the
    // server subscribes to its output is answered `NOT_FOUND` ("no such
    // running process") today, a server-side race reported separately.
    let live = Live::start();
    let id = live.create();
    let output = live.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "sleep 1; echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(code(&output), 7, "{}", stderr(&output));
    assert_eq!(stdout(&output), "out\n");
    assert_eq!(stderr(&output), "err\n");

    // One word runs through bash: pipes work.
    let output = live.run(&["exec", &id, "sleep 1; echo one two | wc -w"]);
    assert_eq!(
        (code(&output), stdout(&output).trim()),
        (0, "2"),
        "{}",
        stderr(&output)
    );

    let killed = live.run(&["exec", &id, "--", "sh", "-c", "sleep 1; kill -9 $$"]);
    assert_eq!(code(&killed), 128 + 9, "{}", stderr(&killed));

    let report = live.json(&[
        "exec",
        &id,
        "--env",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        "sleep 1; echo $GREETING",
    ]);
    assert_eq!(report["exit_code"], 0, "{report}");
    assert_eq!(report["stdout"], "hi\n");

    let info = live.json(&["sandbox", "info", &id]);
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["status"], "running");
    let killed = live.run(&["sandbox", "kill", &id]);
    assert_eq!(code(&killed), 0, "{}", stderr(&killed));
    assert_eq!(stdout(&killed), format!("killed {id}\n"));
    let gone = live.run(&["sandbox", "info", &id]);
    assert_eq!(code(&gone), 3);
    assert!(
        stderr(&gone).starts_with("error: SANDBOX_GONE: ") && stderr(&gone).contains("killed"),
        "{}",
        stderr(&gone)
    );
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("opens");
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).expect("reads");
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    format!("{:x}", hasher.finalize())
}

#[test]
fn files_round_trip_keeps_every_byte() {
    let live = Live::start();
    let id = live.create();
    let local = live.dir.path().join("blob.bin");
    // 12 MiB of varied bytes (not all one value, so an offset bug shows).
    let mut data = Vec::with_capacity(12 << 20);
    let mut state = 0x2545_f491_u32;
    while data.len() < 12 << 20 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        data.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::write(&local, &data).expect("written");
    let put = live.run(&[
        "files",
        "put",
        &id,
        local.to_str().expect("utf-8"),
        "data/blob.bin",
    ]);
    assert_eq!(code(&put), 0, "{}", stderr(&put));
    assert!(
        stdout(&put).contains("to data/blob.bin (12.0 MiB)"),
        "{}",
        stdout(&put)
    );

    let back = live.dir.path().join("back.bin");
    let get = live.run(&[
        "files",
        "get",
        &id,
        "data/blob.bin",
        back.to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&get), 0, "{}", stderr(&get));
    assert_eq!(sha256_file(&back), sha256_file(&local));
    let partials: Vec<_> = std::fs::read_dir(live.dir.path())
        .expect("lists")
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .contains("codebox-partial")
        })
        .collect();
    assert!(partials.is_empty(), "no partial file left");

    // stdin in, stdout out.
    let put = codebox_in(
        None,
        &["files", "put", &id, "-", "notes.txt"],
        &live.env(),
        b"line\n",
    );
    assert_eq!(code(&put), 0, "{}", stderr(&put));
    let get = live.run(&["files", "get", &id, "notes.txt", "-"]);
    assert_eq!(stdout(&get), "line\n");

    let listing = live.json(&["files", "ls", &id, "data"]);
    let entries = listing["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|entry| entry["name"] == "blob.bin" && entry["size"] == data.len()),
        "{listing}"
    );
    let text = live.run(&["files", "ls", &id]);
    assert!(stdout(&text).contains("notes.txt"), "{}", stdout(&text));

    let missing = live.run(&["files", "get", &id, "nope.txt", "-"]);
    assert_eq!(code(&missing), 3);
    assert!(
        stderr(&missing).starts_with("error: NOT_FOUND: "),
        "{}",
        stderr(&missing)
    );
}

/// Types `line` into the terminal once a second until the output shows
/// `needle` (bounded; never asserts a duration).
fn type_until(
    terminal: &mut std::fs::File,
    seen: &std::sync::mpsc::Receiver<String>,
    line: &str,
    needle: &str,
) -> bool {
    for _ in 0..60 {
        terminal.write_all(line.as_bytes()).expect("typed");
        let wait = std::time::Duration::from_secs(1);
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match seen.recv_timeout(left) {
                Ok(all) if all.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    false
}

/// `codebox shell` on a pseudo-terminal: the remote shell sees the local
/// size, then the new size after a SIGWINCH, and the client exits with the
/// shell's status.
#[test]
fn shell_runs_under_a_pty_and_follows_resizes() {
    let live = Live::start();
    let id = live.create();
    let (master, slave) = codebox_sys::agent::open_pty().expect("a pty");
    codebox_sys::agent::set_window_size(master.as_fd(), 100, 30).expect("size");
    let mut child = Command::new(env!("CARGO_BIN_EXE_codebox"))
        .args(["shell", &id])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(live.env())
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("codebox shell starts");
    let mut terminal = std::fs::File::from(master);
    let mut reader = terminal.try_clone().expect("dup");
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    let pump = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buffer = [0u8; 4096];
        // EIO once the last slave descriptor closes (the client exited).
        while let Ok(read) = reader.read(&mut buffer) {
            if read == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buffer[..read]));
            let _ = seen_tx.send(all.clone());
        }
        all
    });
    assert!(
        type_until(&mut terminal, &seen_rx, "stty size\n", "30 100"),
        "the initial size never showed"
    );
    codebox_sys::agent::set_window_size(terminal.as_fd(), 120, 40).expect("resize");
    // The test's pty is not the client's controlling terminal: send the
    // SIGWINCH the kernel would send.
    let signalled = Command::new("kill")
        .args(["-WINCH", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    assert!(
        type_until(&mut terminal, &seen_rx, "stty size\n", "40 120"),
        "the resize never arrived"
    );
    terminal.write_all(b"exit 3\n").expect("typed");
    let status = child.wait().expect("the client exits");
    drop(terminal);
    let all = pump.join().expect("the reader ends");
    assert_eq!(status.code(), Some(3), "{all}");
}
