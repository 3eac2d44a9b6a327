//! The CLI and `serve`'s bootstrap, as an operator would run them.

use std::path::Path;
use std::process::{Command, Output};

fn codebox(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codebox"));
    command.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the codebox binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_is_printed() {
    let output = codebox(&["--version"], &[]);
    assert!(output.status.success());
    assert!(
        stdout(&output).starts_with("codebox "),
        "{}",
        stdout(&output)
    );
}

#[test]
fn config_print_redacts_secrets() {
    let output = codebox(
        &["config", "print", "--port", "4321"],
        &[
            ("API_KEY_SECRET", "api-secret-xyz"),
            ("JWT_SECRET", "jwt-secret-xyz"),
            (
                "CODEBOX_BOOTSTRAP_API_KEY",
                "cbx_bootstrap-secret-xyz-0123456789",
            ),
            (
                "DATABASE_URL",
                "postgres://app:db-secret-xyz@db:5432/codebox",
            ),
            ("REDIS_URL", "redis://:redis-secret-xyz@cache:6379"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(
        !printed.contains("secret-xyz"),
        "a secret leaked:\n{printed}"
    );
    assert!(printed.contains("jwt_secret: '[redacted]'"), "{printed}");
    assert!(
        printed.contains("postgres://app:[redacted]@db:5432/codebox"),
        "{printed}"
    );
    assert!(
        printed.contains("port: 4321"),
        "the CLI layer applies:\n{printed}"
    );
}

#[test]
fn an_unknown_config_key_fails_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("codebox.yaml");
    std::fs::write(&path, "server:\n  port: 3000\n  prot: 1\n").expect("writes");
    let output = codebox(
        &["config", "print", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("server.prot"), "{message}");
    assert_eq!(
        message.trim().lines().count(),
        1,
        "one readable line: {message}"
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn users_and_keys_work_without_a_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_dir = data.to_str().expect("utf-8");
    let created = codebox(&["users", "create", "alice", "--data-dir", data_dir], &[]);
    assert!(created.status.success(), "{}", stderr(&created));
    let users = stdout(&codebox(&["users", "list", "--data-dir", data_dir], &[]));
    assert!(users.contains("alice"), "{users}");
    let duplicate = codebox(&["users", "create", "alice", "--data-dir", data_dir], &[]);
    assert!(!duplicate.status.success());
    assert!(
        stderr(&duplicate).contains("already exists"),
        "{}",
        stderr(&duplicate)
    );

    let key = codebox(
        &[
            "keys",
            "create",
            "--user",
            "alice",
            "--name",
            "ci",
            "--data-dir",
            data_dir,
        ],
        &[],
    );
    assert!(key.status.success(), "{}", stderr(&key));
    let printed = stdout(&key);
    let plaintext = printed.lines().next().expect("the key line");
    assert!(plaintext.starts_with("cbx_"), "{printed}");
    let key_id = printed
        .split("key id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the key id")
        .to_owned();

    let listed = codebox(
        &["keys", "list", "--user", "alice", "--data-dir", data_dir],
        &[],
    );
    let listing = stdout(&listed);
    assert!(
        listing.contains(&key_id) && listing.contains("active"),
        "{listing}"
    );
    assert!(
        !listing.contains(plaintext),
        "the key itself is never listed"
    );

    let revoked = codebox(&["keys", "revoke", &key_id, "--data-dir", data_dir], &[]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let listing = stdout(&codebox(&["keys", "list", "--data-dir", data_dir], &[]));
    assert!(listing.contains("revoked"), "{listing}");
    let again = codebox(&["keys", "revoke", &key_id, "--data-dir", data_dir], &[]);
    assert!(!again.status.success());

    let unknown_user = codebox(
        &["keys", "create", "--user", "nobody", "--data-dir", data_dir],
        &[],
    );
    assert!(!unknown_user.status.success());
    assert!(stderr(&unknown_user).contains("nobody"));
    assert_private(&data.join("secrets"));
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn http(port: u16, method: &str, path: &str, key: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = key
        .map(|key| format!("X-API-Key: {key}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("has an address").port()
}

/// A `codebox serve` child on a free port with its own data directory, runtime
/// root and cgroup parent. (Starting the Linux runtime needs root, as in CI;
/// no sandbox is created, so no agent is needed.)
pub struct Server {
    child: std::process::Child,
    pub port: u16,
    _cgroups: CgroupCleanup,
}

impl Server {
    /// The server process's pid (to read its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        // Start-up recovery destroys whatever is under the cgroup parent: never
        // touch another instance's (or another test's) sandboxes.
        let cgroups = CgroupCleanup(format!("codebox-clitest-{port}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_codebox"));
        command
            .args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("CODEBOX_AGENT_PATH", "/bin/true")
            .env("CODEBOX_POOL_SIZE", "0")
            // No pip/npm downloads behind every test server; `templates` opts in.
            .env("CODEBOX_TEMPLATES_BUILD_ON_START", "false")
            .env("CODEBOX_CGROUP_PARENT", &cgroups.0)
            .env("CODEBOX_RUNTIME_ROOT", dir.join("runtime"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("codebox serve starts");
        let mut server = Server {
            child,
            port,
            _cgroups: cgroups,
        };
        if !server.wait_until_up() {
            let _ = server.child.kill();
            let output = server.child.wait_with_output().expect("collects output");
            panic!("the server did not come up:\n{}", stderr(&output));
        }
        server
    }

    /// Whether `/health` answered before the child exited or time ran out.
    fn wait_until_up(&mut self) -> bool {
        for _ in 0..300 {
            if http(self.port, "GET", "/health", None).is_some() {
                return true;
            }
            if self.child.try_wait().expect("waitable").is_some() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    fn get(&self, path: &str, key: &str) -> u16 {
        http(self.port, "GET", path, Some(key)).expect("answers").0
    }

    /// SIGTERM, then the exit status and output.
    pub fn stop(self) -> Output {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(terminated.success());
        let output = self.child.wait_with_output().expect("the server exits");
        assert!(
            output.status.success(),
            "exit {:?}: {}",
            output.status,
            stderr(&output)
        );
        output
    }
}

/// An empty data directory: the admin key is printed once and written 0600,
/// it authenticates, SIGTERM shuts down cleanly, and after a restart (no new
/// key printed) the same key still works: the generated secrets persisted.
#[test]
fn serve_bootstraps_an_admin_key_that_survives_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let key_file = dir.path().join("data/admin.key");
    let key = std::fs::read_to_string(&key_file).expect("admin.key written");
    let key = key.trim().to_owned();
    assert_private(&key_file);
    assert_private(&dir.path().join("data/secrets"));
    assert_eq!(server.get("/api/v1/sandboxes", &key), 200);
    assert_eq!(server.get("/api/v1/sandboxes", "cbx_wrong"), 401);
    let output = server.stop();
    let printed = stdout(&output);
    assert_eq!(
        printed.matches(&key).count(),
        1,
        "printed exactly once:\n{printed}"
    );
    let logs = stderr(&output);
    assert!(!logs.contains(&key), "the key never reaches the logs");
    assert!(
        logs.contains("\"service\":\"codebox\""),
        "JSON logs name the service"
    );
    assert!(logs.contains("core shut down"), "{logs}");

    let restarted = Server::start(dir.path(), &[]);
    assert_eq!(restarted.get("/api/v1/sandboxes", &key), 200);
    let output = restarted.stop();
    assert!(
        stdout(&output).is_empty(),
        "no second bootstrap: {}",
        stdout(&output)
    );
}

/// `CODEBOX_BOOTSTRAP_API_KEY` becomes the admin key; it is neither printed
/// nor written to disk (the operator already has it).
#[test]
fn serve_uses_the_configured_bootstrap_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "cbx_chosen-by-the-operator-0123456789";
    let server = Server::start(dir.path(), &[("CODEBOX_BOOTSTRAP_API_KEY", key)]);
    assert_eq!(server.get("/api/v1/sandboxes", key), 200);
    assert!(!dir.path().join("data/admin.key").exists());
    let output = server.stop();
    assert!(!stdout(&output).contains(key));
    assert!(!stderr(&output).contains(key));
}

/// Removes the (empty) cgroup parent directories the server's runtime created,
/// on every controller, when the test ends (also on failure).
pub struct CgroupCleanup(pub String);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for controller in controllers.flatten() {
            let _ = std::fs::remove_dir(controller.path().join(&self.0));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.0));
    }
}
