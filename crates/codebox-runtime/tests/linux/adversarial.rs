//! The attacker's view of the in-sandbox paths: user code (uid 1000 inside a real
//! sandbox, real agent) going after the agent, its channel, the runner channel, other
//! contexts and sandboxes, and the file API. Each test asserts the safe outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::{
    CodeOutput, CodeRequest, ContextRequest, Language, Runtime, RuntimeError, WriteOptions,
};
use codebox_types::SandboxId;

use crate::support::{harness, python, Harness};

/// What an `oom_score_adj` of user processes must be: the OOM killer's first pick.
const USER_OOM_SCORE_ADJ: &str = "1000";

fn context(name: &str) -> ContextRequest {
    ContextRequest {
        context: name.into(),
        language: Language::Python,
        cwd: None,
        env: BTreeMap::new(),
    }
}

async fn code(h: &Harness, id: &SandboxId, context: &str, code: &str) -> CodeOutput {
    let request = CodeRequest {
        context: context.into(),
        code: code.into(),
        timeout: Duration::from_secs(60),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    let stream = h
        .runtime
        .execute_code(id, request)
        .await
        .expect("execution accepted");
    stream.collect().await.expect("execution finishes")
}

/// The whole content of `path` through the file API, or its refusal.
async fn download(h: &Harness, id: &SandboxId, path: &str) -> Result<Vec<u8>, RuntimeError> {
    let mut download = h.runtime.read_file(id, path, 0, None).await?;
    let mut content = Vec::new();
    while let Some(chunk) = download.next().await {
        content.extend_from_slice(&chunk?);
    }
    Ok(content)
}

async fn upload(h: &Harness, id: &SandboxId, path: &str, data: &[u8]) -> Result<u64, RuntimeError> {
    let options = WriteOptions {
        overwrite: true,
        ..WriteOptions::default()
    };
    let body = Box::new(std::io::Cursor::new(data.to_vec()));
    h.runtime.write_file(id, path, options, body).await
}

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}")).unwrap_or_default()
}

/// Sandbox processes (host pids) whose command line contains `needle`.
fn processes_running(h: &Harness, needle: &str) -> Vec<u32> {
    h.processes_in_range()
        .into_iter()
        .filter(|pid| {
            proc_file(*pid, "cmdline")
                .replace('\0', " ")
                .contains(needle)
        })
        .collect()
}

/// Polls (a safety net for the kernel's asynchronous reaping, not a timing claim)
/// until no process matches `needle`; returns the survivors.
async fn survivors(h: &Harness, needle: &str) -> Vec<u32> {
    for _ in 0..200 {
        if processes_running(h, needle).is_empty() {
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    processes_running(h, needle)
}

/// The first number of a `/proc/<pid>/status` line.
fn status_field(pid: u32, field: &str) -> Option<u32> {
    proc_file(pid, "status")
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Resident memory of a host process in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_file(pid, "status")
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmRSS of a live process")
}

fn agent_pid(h: &Harness, id: &SandboxId) -> u32 {
    let pid = h.runtime.init_pid(id).expect("live sandbox");
    u32::try_from(pid).expect("a positive pid")
}

#[tokio::test]
async fn user_processes_volunteer_for_the_oom_killer() {
    let h = harness().await;
    let id = h.sandbox().await;
    let agent = agent_pid(&h, &id);
    let agent_score = proc_file(agent, "oom_score_adj").trim().to_owned();

    let (code_, stdout, stderr) = h.sh(&id, "cat /proc/self/oom_score_adj").await;
    assert_eq!(code_, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), USER_OOM_SCORE_ADJ, "an exec");
    // Going back down is capped by the score inherited from the agent (the kernel's
    // `oom_score_adj_min`): never below the agent's.
    let (_, lowered, _) = h
        .sh(
            &id,
            "echo -1000 > /proc/self/oom_score_adj; cat /proc/self/oom_score_adj",
        )
        .await;
    let floor: i32 = agent_score.parse().expect("a number");
    let lowered: i32 = lowered.trim().parse().expect("a number");
    assert!(lowered >= floor, "lowered to {lowered}, agent at {floor}");
    // The agent keeps what the host gave it.
    let (_, inside, _) = h.sh(&id, "cat /proc/1/oom_score_adj").await;
    assert_eq!(inside.trim(), agent_score);
    assert_ne!(agent_score, USER_OOM_SCORE_ADJ);

    h.runtime
        .create_context(&id, context("c"))
        .await
        .expect("context");
    let output = code(
        &h,
        &id,
        "c",
        "open('/proc/self/oom_score_adj').read().strip()",
    )
    .await;
    assert_eq!(
        output.text(),
        Some("'1000'"),
        "a context's runner: {output:?}"
    );

    // A file worker: a download left unread keeps its worker alive.
    upload(&h, &id, "big", &vec![7u8; 32 << 20])
        .await
        .expect("upload");
    let pending = h
        .runtime
        .read_file(&id, "big", 0, None)
        .await
        .expect("read");
    // Workers are the agent's children that run as the user; supervisors stay root.
    let agent_uid = status_field(agent, "Uid:");
    let workers: Vec<u32> = h
        .processes_in_range()
        .into_iter()
        .filter(|pid| status_field(*pid, "PPid:") == Some(agent))
        .filter(|pid| status_field(*pid, "Uid:") != agent_uid)
        .collect();
    assert!(!workers.is_empty(), "no file worker found");
    for worker in workers {
        assert_eq!(
            proc_file(worker, "oom_score_adj").trim(),
            USER_OOM_SCORE_ADJ
        );
    }
    drop(pending);
    h.finish().await;
}

#[tokio::test]
async fn the_agent_is_out_of_reach_of_user_code() {
    let h = harness().await;
    let id = h.sandbox().await;
    let agent = agent_pid(&h, &id);
    // $PPID is the exec's supervisor, a root copy of the agent.
    let script = r#"
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name:REACHED"; else echo "$name:denied"; fi; }
try kill_9_agent kill -9 1
try kill_stop_agent kill -STOP 1
try kill_9_supervisor kill -9 $PPID
try list_agent_fds ls /proc/1/fd
try open_channel_read sh -c 'exec 5</proc/1/fd/3'
try open_channel_write sh -c 'exec 5>/proc/1/fd/3'
try agent_root ls /proc/1/root/
try agent_cwd ls /proc/1/cwd/
try agent_environ cat /proc/1/environ
try agent_mem sh -c 'exec 5</proc/1/mem'
try supervisor_fds ls /proc/$PPID/fd
try supervisor_root ls /proc/$PPID/root/
try supervisor_mem sh -c "exec 5</proc/$PPID/mem"
"#;
    let (_, stdout, stderr) = h.sh(&id, script).await;
    assert!(
        stdout.lines().count() >= 13 && !stdout.contains("REACHED"),
        "{stdout}\n{stderr}"
    );

    let probe = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def check(name, result):
    e = ctypes.get_errno()
    print(name, "REACHED" if result >= 0 else errno.errorcode.get(e, e))
parent = os.getppid()
check("ptrace_attach_agent", libc.ptrace(16, 1, 0, 0))
check("ptrace_seize_agent", libc.ptrace(0x4206, 1, 0, 0))
check("ptrace_attach_supervisor", libc.ptrace(16, parent, 0, 0))
buf = ctypes.create_string_buffer(16)
iov = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 16)
check("process_vm_readv_agent", libc.syscall(310, 1, iov, 1, iov, 1, 0))
pidfd = libc.syscall(434, 1, 0)
check("pidfd_open_agent", 0 if pidfd >= 0 else -1)
if pidfd >= 0:
    check("pidfd_getfd_channel", libc.syscall(438, pidfd, 3, 0))
    check("pidfd_signal_agent", libc.syscall(424, pidfd, 9, None, 0))
"#;
    let output = h.run(&id, python(probe)).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    for line in text.lines().filter(|l| !l.starts_with("pidfd_open_agent")) {
        assert!(!line.contains("REACHED"), "{line}\n{text}");
    }
    assert!(text.contains("ptrace_attach_agent"), "{text}");

    // Signalling everything the user may signal (kill(-1) spares the caller) kills
    // only the user's own processes: the exec's supervisor still reports its end.
    let (code_, stdout, _) = h.sh(&id, "sleep 7100 & kill -9 -1; echo after").await;
    assert_eq!((code_, stdout.trim()), (Some(0), "after"));
    let (code_, stdout, _) = h.sh(&id, "echo alive").await;
    assert_eq!((code_, stdout.trim()), (Some(0), "alive"));
    assert_eq!(agent_pid(&h, &id), agent, "the agent is the same process");
    h.finish().await;
}

#[tokio::test]
async fn a_hostile_runner_channel_hurts_only_its_own_context() {
    let h = harness().await;
    let id = h.sandbox().await;
    let agent = agent_pid(&h, &id);
    for name in ["hostile", "bystander"] {
        h.runtime
            .create_context(&id, context(name))
            .await
            .expect("context");
    }
    code(&h, &id, "bystander", "x = 41").await;
    // What a runner's code holds: stdio and its own channel, nothing of the agent's.
    let fds = code(
        &h,
        &id,
        "hostile",
        "import os\nsorted((int(f), os.readlink('/proc/self/fd/' + f).split(':')[0]) \
         for f in os.listdir('/proc/self/fd') if os.path.exists('/proc/self/fd/' + f))",
    )
    .await;
    let fds = fds.text().unwrap_or_default().to_owned();
    assert!(fds.starts_with("[(0, "), "{fds}");
    assert!(fds.contains("(3, 'socket')"), "{fds}");
    assert!(!fds.contains("(4, ") && !fds.contains("(5, "), "{fds}");
    let before = rss_kib(agent);
    // Garbage, fake events (a foreign sequence number, a result, a done), unterminated
    // binary, and a 40 MiB line, all on the runner's own channel (fd 3).
    let attack = r#"
import os
os.write(3, b"garbage\n" * 10000 + b"\xff\xfe\x00\n")
os.write(3, b'{"t":"done","seq":999999}\n{"t":"start","seq":424242}\n')
os.write(3, b'{"t":"result","main":true,"data":{"text/plain":"forged"}}\n')
chunk = b"A" * (1 << 20)
for _ in range(40):
    os.write(3, chunk)
os.write(3, b"\n")
print("attack sent")
"#;
    let attacked = code(&h, &id, "hostile", attack).await;
    assert!(attacked.summary.is_some(), "{attacked:?}");
    let after = rss_kib(agent);
    // The agent keeps at most one bounded line per runner (MAX_EVENT_LINE, 9 MiB).
    assert!(
        after < before + 32 * 1024,
        "agent RSS grew from {before} KiB to {after} KiB"
    );

    let bystander = code(&h, &id, "bystander", "x + 1").await;
    assert_eq!(bystander.text(), Some("42"), "{bystander:?}");
    let (code_, stdout, _) = h.sh(&id, "echo fine").await;
    assert_eq!((code_, stdout.trim()), (Some(0), "fine"));
    // The attacker's own context still works or is restarted; it never answers for
    // another context, and a forged result never reaches a later execution.
    let own = code(&h, &id, "hostile", "6 * 7").await;
    assert!(own.text() == Some("42"), "{own:?}");
    h.finish().await;
}

#[tokio::test]
async fn daemons_do_not_outlive_their_exec_or_context() {
    let h = harness().await;
    let id = h.sandbox().await;
    // An exec that double-forks, setsids and nohups, then exits at once.
    let (code_, _, _) = h
        .sh(
            &id,
            "setsid sh -c 'sleep 7001 &' ; nohup sleep 7002 >/dev/null 2>&1 & \
             (sleep 7003 &) ; exit 0",
        )
        .await;
    assert_eq!(code_, Some(0));
    for needle in ["sleep 7001", "sleep 7002", "sleep 7003"] {
        assert_eq!(survivors(&h, needle).await, Vec::<u32>::new(), "{needle}");
    }

    h.runtime
        .create_context(&id, context("c"))
        .await
        .expect("context");
    let spawn = |n: u32| {
        format!(
            "import subprocess\nsubprocess.Popen(['sh', '-c', 'setsid sleep {n} & sleep {m} &'], \
             start_new_session=True)\n'spawned'",
            m = n + 1
        )
    };
    let output = code(&h, &id, "c", &spawn(7010)).await;
    assert_eq!(output.text(), Some("'spawned'"), "{output:?}");
    // The control: the daemon does outlive its cell (as in Jupyter), and is seen.
    // Look for the sleep itself (its exact command line), not the short-lived
    // `sh -c` that starts it and whose command line also names it.
    let daemon_seen = || {
        h.processes_in_range().into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
                == b"sleep\x007011\x00"
        })
    };
    for _ in 0..200 {
        if daemon_seen() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon_seen(), "not seen");
    h.runtime.restart_context(&id, "c").await.expect("restart");
    for needle in ["sleep 7010", "sleep 7011"] {
        assert_eq!(survivors(&h, needle).await, Vec::<u32>::new(), "{needle}");
    }
    let output = code(&h, &id, "c", &spawn(7020)).await;
    assert_eq!(output.text(), Some("'spawned'"), "{output:?}");
    h.runtime.destroy_context(&id, "c").await.expect("destroy");
    for needle in ["sleep 7020", "sleep 7021"] {
        assert_eq!(survivors(&h, needle).await, Vec::<u32>::new(), "{needle}");
    }
    h.finish().await;
}

#[tokio::test]
async fn another_sandboxs_contexts_and_files_are_unreachable() {
    let h = harness().await;
    let a = h.sandbox().await;
    let b = h.sandbox().await;
    h.runtime
        .create_context(&a, context("secret-ctx"))
        .await
        .expect("context");
    code(&h, &a, "secret-ctx", "token = 'a-secret'").await;
    upload(&h, &a, "/home/user/a-only.txt", b"a-secret")
        .await
        .expect("upload");

    let listed = h.runtime.list_contexts(&b).await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");
    let request = CodeRequest {
        context: "secret-ctx".into(),
        code: "token".into(),
        timeout: Duration::from_secs(10),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    match h.runtime.execute_code(&b, request).await {
        Err(_) => {}
        Ok(stream) => {
            let output = stream.collect().await;
            assert!(
                output.as_ref().map_or(true, |o| o.text().is_none()),
                "{output:?}"
            );
        }
    }
    assert!(download(&h, &b, "/home/user/a-only.txt").await.is_err());
    let (_, stdout, _) = h
        .sh(
            &b,
            "grep -rs a-secret /home /tmp /proc/*/environ; ls /proc | grep -c '^[0-9]'",
        )
        .await;
    assert!(!stdout.contains("a-secret"), "{stdout}");
    h.finish().await;
}

#[tokio::test]
async fn the_file_api_never_serves_kernel_files_or_what_the_user_cannot_open() {
    let h = harness().await;
    let id = h.sandbox().await;
    let (code_, _, stderr) = h
        .sh(
            &id,
            "cd /home/user && printf s > secret && chmod 000 secret && ln secret hardlink && \
             ln -s /proc/self/environ env-link && ln -s /proc/self root-link && \
             ln -s /proc/1/fd/3 channel-link",
        )
        .await;
    assert_eq!(code_, Some(0), "{stderr}");
    for path in [
        "/proc/self/environ",
        "/proc/self/mem",
        "/proc/self/status",
        "/proc/thread-self/environ",
        "/proc/self/fd/3",
        "/proc/self/root/etc/passwd",
        "/proc/self/cwd/secret",
        "/proc/1/environ",
        "/proc/1/fd/3",
        "/proc/1/root/etc/passwd",
        "/proc/1/mem",
        "/dev/zero",
        "/dev/urandom",
        "secret",
        "hardlink",
        "env-link",
        "root-link/environ",
        "channel-link",
    ] {
        let result = download(&h, &id, path).await;
        assert!(result.is_err(), "{path} was served: {result:?}");
    }
    for path in ["/proc/self/oom_score_adj", "/proc/1/fd/3", "root-link/x"] {
        assert!(
            upload(&h, &id, path, b"-1000").await.is_err(),
            "{path} was written"
        );
    }
    // The agent survived all of it.
    let (code_, stdout, _) = h.sh(&id, "echo ok").await;
    assert_eq!((code_, stdout.trim()), (Some(0), "ok"));
    h.finish().await;
}

#[tokio::test]
async fn a_symlink_race_never_escapes_the_file_api() {
    let h = harness().await;
    let id = h.sandbox().await;
    // `d` flips between a real directory and a symlink to the file worker's own
    // `/proc/self` (renameat2 RENAME_EXCHANGE, atomic) as fast as it can.
    let racer = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs('/home/user/race/d', exist_ok=True)
os.chdir('/home/user/race')
open('d/environ', 'w').write('inside')
if not os.path.islink('l'):
    os.symlink('/proc/self', 'l')
open('started', 'w').write('1')
for _ in range(400000):
    libc.syscall(316, -100, b'd', -100, b'l', 2)
"#;
    let request = codebox_runtime::ExecRequest {
        timeout: Duration::from_secs(120),
        ..python(racer)
    };
    let stream = h.runtime.exec(&id, request).await.expect("racer starts");
    let racing = tokio::spawn(stream.collect());
    while download(&h, &id, "/home/user/race/started").await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut served = 0;
    for round in 0..300 {
        // A refusal is as safe as the inside file; only content from elsewhere is not.
        if let Ok(content) = download(&h, &id, "/home/user/race/d/environ").await {
            assert_eq!(content, b"inside", "round {round} escaped");
            served += 1;
        }
        let _ = upload(&h, &id, "/home/user/race/d/written", b"w").await;
        let _ = h.runtime.stat(&id, "/home/user/race/d/environ").await;
    }
    let output = racing.await.expect("racer task").expect("racer ends");
    assert!(
        output.exit.is_some(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Whatever landed, landed inside the workspace.
    let (_, stdout, _) = h
        .sh(&id, "find /home /tmp /dev/shm -name written 2>/dev/null")
        .await;
    for line in stdout.lines() {
        assert!(line.starts_with("/home/user/race/"), "{stdout}");
    }
    // Both outcomes of a race are fine; the count only says the race was real.
    eprintln!("symlink race: {served} of 300 reads served the inside file");
    h.finish().await;
}

#[tokio::test]
async fn a_runner_flooding_its_channel_does_not_starve_the_agent() {
    let h = harness().await;
    let id = h.sandbox().await;
    let agent = agent_pid(&h, &id);
    for name in ["flood", "bystander"] {
        h.runtime
            .create_context(&id, context(name))
            .await
            .expect("context");
    }
    let before = rss_kib(agent);
    // An endless line on the channel, and a stream of garbage lines, until cancelled.
    let flood = "import os\nopen('/tmp/flooding', 'w').close()\nwhile True:\n    \
                 os.write(3, b'A' * 65536)\n    os.write(3, b'\\nnot json\\n')";
    let request = CodeRequest {
        context: "flood".into(),
        code: flood.into(),
        timeout: Duration::from_secs(120),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    let flooding = h
        .runtime
        .execute_code(&id, request)
        .await
        .expect("accepted");
    let (code_, _, _) = h
        .sh(&id, "while [ ! -e /tmp/flooding ]; do sleep 0.05; done")
        .await;
    assert_eq!(code_, Some(0));
    for round in 0..5 {
        let output = code(&h, &id, "bystander", &format!("{round} + 1")).await;
        assert_eq!(output.text(), Some(format!("{}", round + 1).as_str()));
        let (code_, stdout, _) = h.sh(&id, "echo fine").await;
        assert_eq!((code_, stdout.trim()), (Some(0), "fine"));
    }
    let during = rss_kib(agent);
    assert!(
        during < before + 32 * 1024,
        "agent RSS grew from {before} KiB to {during} KiB"
    );
    // Dropping the stream cancels the flood; the context comes back.
    drop(flooding);
    let output = code(&h, &id, "flood", "'calm'").await;
    assert_eq!(output.text(), Some("'calm'"), "{output:?}");
    h.finish().await;
}

#[tokio::test]
async fn forged_results_are_capped_per_execution() {
    let h = harness().await;
    let id = h.sandbox().await;
    h.runtime
        .create_context(&id, context("c"))
        .await
        .expect("context");
    // 2000 result lines of 1 MiB each on the runner's channel: 2 GB to the host
    // without a per-execution cap.
    let forge = "import os, json\nline = (json.dumps({'t': 'result', 'data': \
                 {'text/plain': 'x' * (1 << 20)}}) + '\\n').encode()\n\
                 for _ in range(2000):\n    os.write(3, line)\n'sent'";
    let output = code(&h, &id, "c", forge).await;
    let bytes: usize = output
        .results
        .iter()
        .flat_map(|r| r.data.values())
        .map(String::len)
        .sum();
    assert!(
        bytes <= codebox_protocol::MAX_RESULTS_BYTES,
        "{bytes} result bytes"
    );
    assert!(output.results.len() <= codebox_protocol::MAX_RESULTS + 1);
    let last = output.results.last().expect("results");
    assert_eq!(last.text(), Some(codebox_protocol::RESULTS_DROPPED_NOTICE));
    assert!(last.truncated);
    // The next execution starts afresh.
    let output = code(&h, &id, "c", "6 * 7").await;
    assert_eq!(output.text(), Some("42"));
    assert_eq!(output.results.len(), 1);
    h.finish().await;
}
