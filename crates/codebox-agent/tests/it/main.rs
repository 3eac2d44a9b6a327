//! End-to-end tests of the real agent binary in test mode, spawned as a child process
//! with one end of a socketpair, driven through the host client
//! (`codebox_runtime::agent::AgentConnection`). The privileged tests run it as PID 1
//! of a new PID namespace (`unshare`), in sandbox mode.

mod code;
mod exec;
mod files;
mod pid1;
mod process;
mod pty;
mod stream;
mod tree;
mod watch;
mod wire;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use codebox_runtime::agent::AgentConnection;
use codebox_runtime::{Command, ExecOutput, ExecRequest};

pub const AGENT: &str = env!("CARGO_BIN_EXE_codebox-agent");

/// A running agent and the host end of its channel.
#[derive(Debug)]
pub struct TestAgent {
    pub connection: AgentConnection,
    pub child: tokio::process::Child,
    pub home: tempfile::TempDir,
}

impl TestAgent {
    /// The agent in test mode, its working directory a fresh temporary home.
    pub async fn start() -> TestAgent {
        Self::start_with(&[], |command| {
            command.env("CODEBOX_AGENT_TEST_MODE", "1");
        })
        .await
    }

    /// The agent run through `wrapper` (e.g. `unshare ...`), configured by `configure`.
    pub async fn start_with(
        wrapper: &[&str],
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> TestAgent {
        let home = tempfile::tempdir().expect("temporary home");
        let (host, agent) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // The agent end must survive exec: nextest runs each test in its own process,
        // so no other test's child can inherit it.
        codebox_sys::agent::set_cloexec(agent.as_fd(), false).expect("clear cloexec");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&agent);
        let (program, args) = match wrapper.split_first() {
            Some((first, rest)) => (*first, [rest, &[AGENT]].concat()),
            None => (AGENT, Vec::new()),
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("CODEBOX_AGENT_FD", fd.to_string())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(home.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        configure(&mut command);
        let child = command.spawn().expect("spawn the agent");
        drop(agent);
        host.set_nonblocking(true).expect("nonblocking");
        let host = tokio::net::UnixStream::from_std(host).expect("tokio socket");
        let connection = AgentConnection::handshake(host, Duration::from_secs(10))
            .await
            .expect("handshake");
        TestAgent {
            connection,
            child,
            home,
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub async fn run(&self, request: ExecRequest) -> ExecOutput {
        self.connection
            .exec(&request, &BTreeMap::new())
            .await
            .expect("exec starts")
            .collect()
            .await
            .expect("exec finishes")
    }

    pub async fn shell(&self, script: &str) -> ExecOutput {
        self.run(shell(script)).await
    }
}

pub fn shell(script: &str) -> ExecRequest {
    ExecRequest {
        command: Command::Shell(script.to_owned()),
        env: BTreeMap::new(),
        cwd: None,
        stdin: None,
        timeout: Duration::from_secs(30),
        output_limit: 1 << 20,
    }
}

pub fn exit_code(output: &ExecOutput) -> Option<i32> {
    output.exit.as_ref().expect("finished").exit_code
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the pid a test script wrote to `file`.
pub fn read_pid(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded, generously: the machine is shared) until `pid` is gone.
pub async fn wait_gone(pid: u32) -> bool {
    for _ in 0..3000 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The directory of the `typescript` npm package, installed once per machine into the
/// target directory's cache (`npm install`), or `None` when that is not possible.
pub fn typescript_compiler() -> Option<String> {
    let cache = std::env::temp_dir().join("codebox-test-typescript");
    let package = cache.join("node_modules/typescript");
    if package.join("package.json").exists() {
        return Some(package.to_string_lossy().into_owned());
    }
    std::fs::create_dir_all(&cache).ok()?;
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&cache)
        .arg("typescript@5")
        .stdin(Stdio::null())
        .status()
        .ok()?;
    (status.success() && package.join("package.json").exists())
        .then(|| package.to_string_lossy().into_owned())
}

/// The `bin` directory of a virtualenv with IPython, matplotlib and pandas (what the
/// python3 template provides), built once per machine under the temporary directory
/// with the `python3` of `PATH` and pip; `None` when that is not possible here.
pub fn ipython_environment() -> Option<PathBuf> {
    let venv = std::env::temp_dir().join("codebox-test-ipython");
    let python = venv.join("bin/python3");
    let ready = |python: &Path| {
        std::process::Command::new(python)
            .args(["-c", "import IPython, matplotlib, pandas"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if ready(&python) {
        return Some(venv.join("bin"));
    }
    // Built aside and renamed, so a half-built environment is never used.
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let run = |program: &Path, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let built = run(
        Path::new("python3"),
        &["-m", "venv", &building.to_string_lossy()],
    ) && run(
        &building.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "ipython",
            "matplotlib",
            "pandas",
        ],
    );
    if built {
        let _ = std::fs::rename(&building, &venv);
    }
    let _ = std::fs::remove_dir_all(&building);
    ready(&python).then(|| venv.join("bin"))
}
