//! The runtime's wrapper around an execution's event stream: it marks
//! `oom_killed` from the sandbox's cgroup, and it is the backstop for the
//! timeout the agent enforces (see [`guard`]).

use std::time::Duration;

use tracing::warn;

use crate::cgroup::SandboxCgroup;
use crate::{ExecEvent, ExecExit, ExecStream, ExecStreamSender};

/// Events buffered between the guard and the consumer.
const EXEC_EVENT_BUFFER: usize = 64;
/// How long past an execution's timeout the runtime waits for the agent's exit
/// before killing the sandbox's user processes itself.
const BACKSTOP_GRACE: Duration = Duration::from_secs(3);
/// How long after the backstop kill the stream waits before ending anyway.
const BACKSTOP_GIVE_UP: Duration = Duration::from_secs(10);

/// Forwards an execution's events, marking `oom_killed` when the cgroup
/// recorded an OOM kill during it. Dropping the returned stream drops the
/// agent's stream, which cancels the execution.
///
/// Backstop: the agent enforces the timeout; if no exit arrives within
/// [`BACKSTOP_GRACE`] after it, the runtime freezes the sandbox's cgroup and
/// kills every user process (uid 1000) in it, which ends any execution
/// (the agent then reports it). Should even that not produce an exit, the
/// stream ends with a synthetic timed-out exit.
pub fn guard(
    cgroup: SandboxCgroup,
    user_host_uid: u32,
    mut inner: ExecStream,
    before: u64,
    timeout: Duration,
) -> ExecStream {
    let (sender, outer) = ExecStream::channel(EXEC_EVENT_BUFFER);
    let ExecStreamSender {
        events,
        mut cancelled,
    } = sender;
    tokio::spawn(async move {
        let backstop = tokio::time::sleep(timeout + BACKSTOP_GRACE);
        tokio::pin!(backstop);
        let mut backstop_fired = false;
        loop {
            tokio::select! {
                () = &mut backstop => {
                    if backstop_fired {
                        let _ = events.send(ExecEvent::Finished(abandoned_exit(timeout))).await;
                        return;
                    }
                    backstop_fired = true;
                    kill_user_processes(&cgroup, user_host_uid).await;
                    backstop.as_mut().reset(tokio::time::Instant::now() + BACKSTOP_GIVE_UP);
                }
                event = inner.next() => match event {
                    Some(ExecEvent::Finished(mut exit)) => {
                        let after = cgroup.oom_kills().unwrap_or(before);
                        exit.oom_killed |= after > before;
                        let _ = events.send(ExecEvent::Finished(exit)).await;
                        return;
                    }
                    Some(other) => {
                        if events.send(other).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = &mut cancelled => return,
            }
        }
    });
    outer
}

/// The exit reported when the agent never reported one, even after the backstop.
fn abandoned_exit(timeout: Duration) -> ExecExit {
    ExecExit {
        exit_code: None,
        signal: Some(libc::SIGKILL),
        timed_out: true,
        oom_killed: false,
        stdout_truncated: false,
        stderr_truncated: false,
        duration: timeout + BACKSTOP_GRACE + BACKSTOP_GIVE_UP,
    }
}

/// Freezes the sandbox and SIGKILLs every process running as the sandbox's
/// `user` (host uid `base + 1000`); the agent and its helpers (root inside)
/// are spared.
async fn kill_user_processes(cgroup: &SandboxCgroup, user_host_uid: u32) {
    let cgroup = cgroup.clone();
    let killed = tokio::task::spawn_blocking(move || {
        cgroup.kill_selected(|pid| process_uid(pid) == Some(user_host_uid))
    })
    .await;
    match killed {
        Ok(Ok(count)) => warn!(
            count,
            "execution overran its timeout: user processes killed"
        ),
        Ok(Err(error)) => warn!(%error, "timeout backstop failed"),
        Err(error) => warn!(%error, "timeout backstop task failed"),
    }
}

/// The real uid of a host process, from `/proc/<pid>/status`.
fn process_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_uid_reads_procfs() {
        let me = std::process::id() as i32;
        let uid = std::fs::read_to_string("/proc/self/status")
            .expect("procfs")
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .and_then(|u| u.parse().ok());
        assert_eq!(process_uid(me), uid);
        assert_eq!(process_uid(-5), None);
    }

    #[test]
    fn the_abandoned_exit_is_a_timeout_kill() {
        let exit = abandoned_exit(Duration::from_secs(1));
        assert!(exit.timed_out);
        assert_eq!(exit.signal, Some(libc::SIGKILL));
        assert_eq!(exit.exit_code, None);
    }

    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use crate::cgroup::{CgroupLimits, CgroupManager, FakeCgroupFs, Layout};

    const FILES: &[&str] = &[
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.freeze",
        "cgroup.events",
        "memory.max",
        "memory.swap.max",
        "memory.oom.group",
        "memory.events",
        "cpu.max",
        "pids.max",
    ];

    fn fake_cgroup() -> (Arc<FakeCgroupFs>, SandboxCgroup, PathBuf) {
        let fs = Arc::new(FakeCgroupFs::new(FILES));
        let root = Path::new("/cg");
        fs.add_dir(root);
        fs.set(&root.join("cgroup.subtree_control"), "");
        let manager = CgroupManager::new(fs.clone(), Layout::V2 { mount: root.into() }, "p");
        manager.ensure_parent().expect("parent");
        let limits = CgroupLimits {
            memory_bytes: 1 << 28,
            cpu_millicores: 1000,
            pids: 16,
        };
        let cgroup = manager.create("s1", &limits).expect("create");
        let dir = root.join("p/s1");
        fs.set(&dir.join("cgroup.events"), "populated 1\nfrozen 1\n");
        fs.set(&dir.join("memory.events"), "oom_kill 0\n");
        (fs, cgroup, dir)
    }

    fn exit() -> ExecExit {
        ExecExit {
            exit_code: None,
            signal: Some(9),
            timed_out: false,
            oom_killed: false,
            stdout_truncated: false,
            stderr_truncated: false,
            duration: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn an_oom_during_the_execution_is_reported() {
        let (fs, cgroup, dir) = fake_cgroup();
        let (sender, inner) = ExecStream::channel(4);
        let mut outer = guard(cgroup, 1_001_000, inner, 0, Duration::from_secs(30));
        fs.set(&dir.join("memory.events"), "oom_kill 1\n");
        sender
            .events
            .send(ExecEvent::Finished(exit()))
            .await
            .expect("send");
        match outer.next().await {
            Some(ExecEvent::Finished(exit)) => assert!(exit.oom_killed),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_meets_the_backstop() {
        let (fs, cgroup, dir) = fake_cgroup();
        let (_sender, inner) = ExecStream::channel(4);
        let outer = guard(cgroup, 1_001_000, inner, 0, Duration::from_secs(1));
        let output = outer.collect().await.expect("an exit");
        let exit = output.exit.expect("exit");
        assert!(exit.timed_out);
        assert_eq!(exit.signal, Some(libc::SIGKILL));
        let freezes: Vec<String> = fs
            .writes()
            .into_iter()
            .filter(|(path, _)| *path == dir.join("cgroup.freeze"))
            .map(|(_, value)| value)
            .collect();
        assert_eq!(freezes, ["1", "0"], "the backstop froze, killed, thawed");
    }
}
