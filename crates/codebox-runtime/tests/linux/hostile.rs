//! Hostile programs inside a sandbox, each asserting the safe outcome.

use std::time::Duration;

use codebox_runtime::Runtime;

use crate::support::{harness, python, shell};

#[tokio::test]
async fn host_files_are_not_reachable() {
    let h = harness().await;
    let id = h.sandbox().await;
    let repo = env!("CARGO_MANIFEST_DIR");
    let data = h.root.path().display().to_string();
    for path in [
        "/etc/shadow",
        "/root",
        "/work",
        "/var",
        "/home/ubuntu",
        repo,
        &data,
    ] {
        let (code, stdout, _) = h.sh(&id, &format!("ls -d '{path}' && cat '{path}'")).await;
        assert_ne!(code, Some(0), "{path} is reachable");
        assert!(stdout.is_empty(), "{path} leaked: {stdout}");
    }
    // The sandbox /etc is the generated one, not the host's.
    let (_, passwd, _) = h.sh(&id, "cat /etc/passwd").await;
    assert_eq!(passwd.lines().count(), 3, "{passwd}");
    h.finish().await;
}

#[tokio::test]
async fn host_processes_are_invisible() {
    let h = harness().await;
    let id = h.sandbox().await;
    let (code, stdout, _) = h.sh(&id, "ls /proc | grep -c '^[0-9]*$'").await;
    assert_eq!(code, Some(0));
    let count: usize = stdout.trim().parse().expect("a number");
    // The agent, the shell, ls and grep at most.
    assert!(count <= 5, "{count} processes visible");
    let (_, cmdlines, _) = h.sh(&id, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    let me = std::env::current_exe().expect("exe");
    let name = me.file_name().expect("name").to_string_lossy().into_owned();
    assert!(
        !cmdlines.contains(&name),
        "host test process visible: {cmdlines}"
    );
    h.finish().await;
}

#[tokio::test]
async fn privileged_operations_fail() {
    let h = harness().await;
    let id = h.sandbox().await;
    for (what, script) in [
        ("mount", "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m"),
        ("unshare -U", "unshare -U true"),
        ("unshare -r", "unshare -r true"),
        ("chroot", "chroot / true"),
    ] {
        let (code, _, _) = h.sh(&id, script).await;
        assert_ne!(code, Some(0), "{what} succeeded");
    }
    let probe = r#"
import ctypes, errno, socket, os
libc = ctypes.CDLL(None, use_errno=True)
def check(name, result):
    e = ctypes.get_errno()
    print(name, result, errno.errorcode.get(e, e))
check("ptrace_attach_1", libc.ptrace(16, 1, 0, 0))
check("finit_module", libc.syscall(313, 0, b"", 0))
check("bpf", libc.syscall(321, 0, 0, 0))
check("keyctl", libc.syscall(250, 0, 0, 0, 0, 0))
check("clone_newuser", libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))
check("clone3", libc.syscall(435, 0, 0))
check("io_uring_setup", libc.syscall(425, 1, 0))
check("setuid0", libc.setuid(0))
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("raw_socket ok")
except PermissionError:
    print("raw_socket -1 EPERM")
"#;
    let output = h.run(&id, python(probe)).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let expected = [
        "ptrace_attach_1 -1 EPERM",
        "finit_module -1 EPERM",
        "bpf -1 EPERM",
        "keyctl -1 EPERM",
        "clone_newuser -1 EPERM",
        "clone3 -1 ENOSYS",
        "io_uring_setup -1 EPERM",
        "setuid0 -1 EPERM",
        "raw_socket -1 EPERM",
    ];
    for line in expected {
        assert!(
            text.contains(line),
            "expected {line:?} in:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    h.finish().await;
}

#[tokio::test]
async fn user_code_runs_unprivileged() {
    let h = harness().await;
    let id = h.sandbox().await;
    let (_, out, _) = h
        .sh(&id, "id -u; id -g; id -G; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["1000", "1000", "1000"], "{out}");
    for line in &lines[3..] {
        let value = line.split_whitespace().nth(1).expect("value");
        match line.split(':').next() {
            Some("NoNewPrivs") => assert_eq!(value, "1"),
            Some("Seccomp") => assert_eq!(value, "2"),
            _ => assert_eq!(value, "0000000000000000", "{line}"),
        }
    }
    // The agent (PID 1) keeps only what it needs: CHOWN DAC_OVERRIDE FOWNER KILL
    // SETGID SETUID SETPCAP (0x1eb), never SYS_ADMIN; it is filtered too.
    let (_, agent, _) = h
        .sh(
            &id,
            "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/1/status",
        )
        .await;
    let agent: Vec<&str> = agent
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(agent, ["00000000000001eb", "00000000000001eb", "1", "2"]);
    h.finish().await;
}

#[tokio::test]
async fn there_is_no_network() {
    let h = harness().await;
    let id = h.sandbox().await;
    let probe = r#"
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("127.0.0.1", 5432)); print("postgres reachable")
except OSError as e:
    print("postgres", type(e).__name__)
print(open("/proc/net/dev").read())
print("routes", len(open("/proc/net/route").read().splitlines()) - 1)
"#;
    let output = h.run(&id, python(probe)).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("postgres ConnectionRefusedError"), "{text}");
    let interfaces: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(':') && !l.contains('|'))
        .map(|l| l.split(':').next().unwrap_or_default().trim())
        .collect();
    assert_eq!(interfaces, ["lo"], "{text}");
    assert!(text.contains("routes 0"), "{text}");
    h.finish().await;
}

#[tokio::test]
async fn only_the_intended_fds_are_open() {
    let h = harness().await;
    let id = h.sandbox().await;
    let probe = "import os\nfds = os.listdir('/proc/self/fd')\nlinks = []\n\
                 for f in fds:\n    try: links.append(os.readlink('/proc/self/fd/' + f))\n\
                 \x20   except FileNotFoundError: pass\nprint(len(fds), sorted(links))";
    let output = h.run(&id, python(probe)).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // stdin, stdout, stderr and the directory listdir itself opened.
    assert!(text.starts_with("4 ["), "{text}");
    assert!(
        !text.contains("socket:"),
        "a socket leaked into user code: {text}"
    );
    // The agent's own fds are not readable by user code.
    let (code, _, _) = h.sh(&id, "ls /proc/1/fd").await;
    assert_ne!(code, Some(0));
    h.finish().await;
}

#[tokio::test]
async fn the_filesystem_is_read_only_but_the_workspace() {
    let h = harness().await;
    let id = h.sandbox().await;
    for path in [
        "/usr/bin/evil",
        "/etc/evil",
        "/evil",
        "/.codebox/agent",
        "/dev/evil",
        "/proc/sys/kernel/hostname",
    ] {
        let (code, _, _) = h.sh(&id, &format!("echo x > {path}")).await;
        assert_ne!(code, Some(0), "{path} writable");
    }
    let (code, out, _) = h
        .sh(
            &id,
            "echo ok > /home/user/f && cat /home/user/f && echo ok > /tmp/f && cat /tmp/f",
        )
        .await;
    assert_eq!((code, out.as_str()), (Some(0), "ok\nok\n"));
    let (_, devices, _) = h.sh(&id, "ls /dev | tr '\\n' ' '").await;
    assert_eq!(
        devices.trim(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    let (code, _, _) = h.sh(&id, "ls /sys/kernel").await;
    assert_ne!(code, Some(0), "/sys is visible");
    let (_, kcore, _) = h
        .sh(
            &id,
            "head -c 16 /proc/keys /proc/kallsyms 2>/dev/null | wc -c",
        )
        .await;
    assert_eq!(kcore.trim(), "0", "masked /proc files readable");
    h.finish().await;
}

#[tokio::test]
async fn the_environment_is_scrubbed() {
    let h = harness().await;
    let id = h.sandbox().await;
    let (_, env, _) = h.sh(&id, "env").await;
    for secret in ["CARGO", "RUST", "CODEBOX_AGENT", "NEXTEST", "DATABASE_URL"] {
        assert!(!env.contains(secret), "{secret} leaked into:\n{env}");
    }
    assert!(env.contains("HOME=/home/user"), "{env}");
    h.finish().await;
}

#[tokio::test]
async fn two_sandboxes_do_not_see_each_other() {
    let h = harness().await;
    let a = h.sandbox().await;
    let b = h.sandbox().await;
    let (code, _, _) = h
        .sh(
            &a,
            "echo secret > /home/user/s; echo secret > /tmp/s; (setsid sleep 300 &) ; true",
        )
        .await;
    assert_eq!(code, Some(0));
    let (_, out, _) = h.sh(&b, "cat /home/user/s /tmp/s; ps -eo comm").await;
    assert!(!out.contains("secret"), "{out}");
    assert!(!out.contains("sleep"), "{out}");
    let uid_a = h.runtime.init_pid(&a).expect("a");
    let uid_b = h.runtime.init_pid(&b).expect("b");
    let host_uid = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .map(str::to_owned)
    };
    assert_ne!(
        host_uid(uid_a),
        host_uid(uid_b),
        "two sandboxes share host uids"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_timeout_kills_a_tree_that_ignores_sigterm_and_double_forks() {
    let h = harness().await;
    let id = h.sandbox().await;
    let script =
        "trap '' TERM; (setsid bash -c \"trap '' TERM; while true; do sleep 0.05; done\" &); \
                  (nohup bash -c \"trap '' TERM; sleep 1000\" &); while true; do sleep 0.05; done";
    let request = codebox_runtime::ExecRequest {
        timeout: Duration::from_secs(1),
        ..shell(script)
    };
    let output = h.run(&id, request).await;
    assert!(output.exit.expect("exit").timed_out);
    let ps = h
        .run(
            &id,
            codebox_runtime::ExecRequest {
                command: codebox_runtime::Command::Argv(vec![
                    "ps".into(),
                    "-eo".into(),
                    "comm".into(),
                ]),
                ..shell("")
            },
        )
        .await;
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(!ps.contains("sleep"), "survivors:\n{ps}");
    assert!(!ps.contains("bash"), "survivors:\n{ps}");
    h.finish().await;
}

#[tokio::test]
async fn an_output_flood_is_capped() {
    let h = harness().await;
    let id = h.sandbox().await;
    let request = codebox_runtime::ExecRequest {
        output_limit: 64 << 10,
        timeout: Duration::from_secs(5),
        ..shell("head -c 50000000 /dev/zero; echo done >&2")
    };
    let output = h.run(&id, request).await;
    let exit = output.exit.expect("exit");
    assert_eq!(output.stdout.len(), 64 << 10);
    assert!(exit.stdout_truncated);
    assert_eq!(output.stderr, b"done\n");
    assert_eq!(exit.exit_code, Some(0));
    // The runtime survived and still serves the sandbox.
    let stats = h.runtime.stats(&id).await.expect("stats");
    assert!(stats.pids >= 1);
    h.finish().await;
}
