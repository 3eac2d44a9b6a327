//! The agent as PID 1 of a new PID namespace, in sandbox mode (needs root, which this
//! machine and CI have): user processes run as uid/gid 1000 with no capability and
//! `no_new_privs`; test mode is refused there.

use std::time::Duration;

use crate::{exit_code, shell, text, TestAgent, AGENT};

const UNSHARE: [&str; 4] = ["unshare", "--pid", "--fork", "--mount-proc"];

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map_or("", str::trim)
}

#[tokio::test]
async fn sandbox_mode_drops_every_privilege() {
    let agent = TestAgent::start_with(&UNSHARE, |_| {}).await;
    assert_eq!(agent.connection.info().pid, 1);
    let mut request = shell("id -u; id -g; id -G; cat /proc/self/status");
    request.cwd = Some("/tmp".into());
    let output = agent.run(request).await;
    let stdout = text(&output.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("1000"));
    assert_eq!(lines.next(), Some("1000"));
    assert_eq!(lines.next(), Some("1000"), "supplementary groups cleared");
    for capability_set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&stdout, capability_set), "0000000000000000");
    }
    assert_eq!(status_field(&stdout, "NoNewPrivs:"), "1");
}

#[tokio::test]
async fn as_pid1_it_reaps_and_kills_trees() {
    let agent = TestAgent::start_with(&UNSHARE, |_| {}).await;
    let mut request = shell("setsid bash -c 'sleep 1000 &' ; sleep 1000");
    request.cwd = Some("/tmp".into());
    request.timeout = Duration::from_secs(1);
    let exit = agent.run(request).await.exit.expect("finished");
    assert!(exit.timed_out);
    // Only the agent is left in its namespace (pid 1); `ps` would count itself.
    let mut count = shell("ls /proc | grep -c '^[0-9]'");
    count.cwd = Some("/tmp".into());
    let output = agent.run(count).await;
    assert_eq!(exit_code(&output), Some(0));
    // /proc lists the agent, its supervisor, bash and grep of this very exec: 4
    // (ls may or may not still be listed).
    let processes: u32 = text(&output.stdout).trim().parse().expect("a count");
    assert!(
        processes <= 5,
        "leftover processes in the namespace: {processes}"
    );
}

#[tokio::test]
async fn test_mode_is_refused_as_pid1() {
    let (_host, agent_end) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&agent_end);
    codebox_sys::agent::set_cloexec(std::os::fd::AsFd::as_fd(&agent_end), false)
        .expect("clear cloexec");
    let status = tokio::process::Command::new(UNSHARE[0])
        .args(&UNSHARE[1..])
        .arg(AGENT)
        .env("CODEBOX_AGENT_FD", fd.to_string())
        .env("CODEBOX_AGENT_TEST_MODE", "1")
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .expect("runs");
    assert_eq!(status.code(), Some(2));
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// If a supervisor dies (say the OOM killer picks it), its tree re-parents to the
/// agent, which kills and reaps it: no orphan and no zombie is left behind.
#[tokio::test]
async fn orphans_of_a_dead_supervisor_are_killed_and_reaped() {
    let agent = TestAgent::start_with(&UNSHARE, |_| {}).await;
    let unshare_pid = agent.child.id().expect("running");
    let agent_pid = children(unshare_pid)[0];
    let mut request = shell("sleep 1000 & sleep 1000; wait");
    request.cwd = Some("/tmp".into());
    let stream = agent
        .connection
        .exec(&request, &std::collections::BTreeMap::new())
        .await
        .expect("starts");
    let supervisor = children(agent_pid)[0];
    let main = children(supervisor)[0];
    let mut background = Vec::new();
    while background.len() < 2 {
        background = children(main);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    codebox_sys::agent::send_signal(supervisor as i32, libc::SIGKILL).expect("kill");
    let output = stream.collect().await.expect("the exec still ends");
    assert!(output.exit.is_some());
    for pid in [main, background[0], background[1]] {
        assert!(crate::wait_gone(pid).await, "orphan {pid} survived");
    }
    // The agent reaped them: nothing but the agent in its namespace is left.
    for _ in 0..3000 {
        if children(agent_pid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "zombies or orphans left under the agent: {:?}",
        children(agent_pid)
    );
}

/// A context's runner gets the same jail as an exec: uid 1000, no capability,
/// `no_new_privs`, a scrubbed environment, and only its channel beyond stdio.
#[tokio::test]
async fn context_runners_run_unprivileged() {
    use codebox_runtime::agent::{CodeRequest, ContextRequest, ExecutionOutcome, Language};

    let agent = TestAgent::start_with(&UNSHARE, |_| {}).await;
    let request = ContextRequest {
        context: "py".into(),
        language: Language::Python,
        cwd: Some("/tmp".into()),
        env: std::collections::BTreeMap::new(),
    };
    let no_env = std::collections::BTreeMap::new();
    agent
        .connection
        .create_context(&request, &no_env)
        .await
        .expect("the runner starts");
    let code = |code: &str, timeout: Duration| CodeRequest {
        context: "py".into(),
        code: code.into(),
        timeout,
        env: std::collections::BTreeMap::new(),
        output_limit: 1 << 20,
    };
    let probe = "import os\nstatus = open('/proc/self/status').read()\nprint(os.getuid(), os.getgid(), os.getgroups())\nprint(status)\nprint(sorted(os.environ))\nprint(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))";
    let output = agent
        .connection
        .execute(&code(probe, Duration::from_secs(30)))
        .await
        .expect("accepted")
        .collect()
        .await
        .expect("done");
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("1000 1000 []\n"), "{stdout}");
    for capability_set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&stdout, capability_set), "0000000000000000");
    }
    assert_eq!(status_field(&stdout, "NoNewPrivs:"), "1");
    assert!(
        !stdout.contains("CODEBOX_AGENT"),
        "no agent variable leaks: {stdout}"
    );
    // 0-2, the channel (3), and the descriptor listdir itself opened.
    assert!(stdout.trim_end().ends_with("[0, 1, 2, 3, 4]"), "{stdout}");
    let timed_out = agent
        .connection
        .execute(&code("while True: pass", Duration::from_millis(300)))
        .await
        .expect("accepted")
        .collect()
        .await
        .expect("done");
    assert_eq!(timed_out.outcome(), Some(ExecutionOutcome::Timeout));
    assert!(
        !timed_out.summary.expect("done").restarted,
        "SIGINT reached the runner"
    );
}

/// File operations in sandbox mode are done by a worker of uid/gid 1000 with no
/// capability: the user's own permissions apply, whatever the path.
#[tokio::test]
async fn file_operations_run_as_the_sandbox_user() {
    use std::io::Cursor;
    use std::os::unix::fs::MetadataExt;

    use codebox_protocol::ErrorCode;
    use codebox_runtime::agent::WriteOptions;

    let agent = TestAgent::start_with(&UNSHARE, |_| {}).await;
    let conn = &agent.connection;
    let dir = tempfile::Builder::new()
        .prefix("codebox-files-")
        .tempdir_in("/tmp")
        .expect("a directory");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("world-writable");
    let target = dir.path().join("sub/owned.txt");
    let target = target.to_string_lossy();
    let options = WriteOptions::default();
    let written = conn
        .write_file(&target, &options, Cursor::new(b"by the user".to_vec()))
        .await
        .expect("writes");
    assert_eq!(written, 11);
    let metadata = std::fs::metadata(&*target).expect("on disk");
    assert_eq!((metadata.uid(), metadata.gid()), (1000, 1000));
    let parent = std::fs::metadata(dir.path().join("sub")).expect("parent");
    assert_eq!(parent.uid(), 1000, "parents are created by the user too");
    // Root-only files stay closed, by path or by `..` from home.
    for path in ["/etc/shadow", "../../etc/shadow"] {
        let error = conn.read_file(path, 0, None).await.expect_err("root only");
        assert_eq!(error.code(), Some(ErrorCode::PermissionDenied), "{path}");
    }
    let error = conn
        .write_file("/root/x", &options, Cursor::new(b"x".to_vec()))
        .await
        .expect_err("root's home");
    assert_eq!(error.code(), Some(ErrorCode::PermissionDenied));
    let error = conn
        .remove("/etc/hostname", false)
        .await
        .expect_err("root's");
    assert_eq!(error.code(), Some(ErrorCode::PermissionDenied));
    // Devices are refused even when the user could open them.
    let error = conn
        .read_file("/dev/zero", 0, None)
        .await
        .expect_err("device");
    assert_eq!(error.code(), Some(ErrorCode::NotRegularFile));
    let entry = conn.stat(&target).await.expect("stat");
    assert_eq!(entry.size, 11);
}

/// A terminal's shell and a background process run as the sandbox user too.
#[tokio::test]
async fn terminals_and_background_processes_run_as_the_sandbox_user() {
    use codebox_runtime::agent::ProcessRequest;
    use codebox_runtime::ExecEvent;

    let agent = TestAgent::start_with(&UNSHARE, |_| {}).await;
    let mut request = crate::pty::request(80, 24);
    request.cwd = Some("/tmp".into());
    let mut terminal = agent
        .connection
        .open_pty(&request, &std::collections::BTreeMap::new())
        .await
        .expect("opens");
    terminal
        .input
        .write(b"echo \"uid=$(id -u) caps=$(grep CapEff /proc/self/status | cut -f2)\"; echo 'e''nd'\n")
        .await
        .expect("types");
    let seen = crate::pty::read_until(&mut terminal, "end").await;
    assert!(seen.contains("uid=1000 caps=0000000000000000"), "{seen:?}");
    let process = ProcessRequest {
        command: codebox_runtime::Command::Shell("id -u; sleep 1000".into()),
        env: std::collections::BTreeMap::new(),
        cwd: Some("/tmp".into()),
        stdin: false,
        tag: None,
        timeout: None,
    };
    let pid = agent
        .connection
        .start_process(&process, &std::collections::BTreeMap::new())
        .await
        .expect("starts");
    let mut subscription = agent
        .connection
        .subscribe_process(pid)
        .await
        .expect("subscribes");
    let Some(ExecEvent::Stdout(bytes)) = subscription.stream.next().await else {
        panic!("expected the uid")
    };
    assert_eq!(text(&bytes), "1000\n");
}
