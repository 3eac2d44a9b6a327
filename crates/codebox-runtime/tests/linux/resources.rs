//! Resource limits: pids, memory (OOM reported), disk, cpu quota, stats.

use std::time::Duration;

use codebox_runtime::{ExecRequest, Runtime, SandboxLimits};
use codebox_types::Resources;

use crate::support::{harness, python, shell, spec};

#[tokio::test]
async fn a_fork_bomb_is_contained_by_pids() {
    let h = harness().await;
    let mut bomb_spec = spec();
    bomb_spec.limits.pids = 64;
    let id = h.sandbox_with(bomb_spec).await;
    let request = ExecRequest {
        timeout: Duration::from_secs(3),
        ..shell("bomb() { bomb | bomb & }; bomb; sleep 10")
    };
    let stream = h.runtime.exec(&id, request).await.expect("exec");
    let collecting = tokio::spawn(stream.collect());
    // While the bomb runs: contained, and the host answers.
    for _ in 0..40 {
        let stats = h.runtime.stats(&id).await.expect("stats");
        assert!(stats.pids <= 64, "{} pids", stats.pids);
        assert_eq!(stats.pids_limit, 64);
        let host = std::process::Command::new("true")
            .status()
            .expect("host forks");
        assert!(host.success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bounded: the agent's timeout, else the runtime's backstop, ends it.
    let output = tokio::time::timeout(Duration::from_secs(60), collecting)
        .await
        .expect("the execution ended")
        .expect("task")
        .expect("an exit");
    assert!(output.exit.expect("exit").timed_out);
    // The host is responsive and the sandbox still works.
    let (code, out, _) = h.sh(&id, "echo alive").await;
    assert_eq!((code, out.as_str()), (Some(0), "alive\n"));
    h.finish().await;
}

#[tokio::test]
async fn a_memory_bomb_is_oom_killed_and_reported() {
    let h = harness().await;
    let mut small = spec();
    small.resources = Resources {
        cpu: 1.0,
        memory: 128,
    };
    let id = h.sandbox_with(small).await;
    let request = python("x = [b'x' * (1 << 20) for _ in range(1024)]");
    let output = h.run(&id, request).await;
    let exit = output.exit.expect("exit");
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.signal, Some(9));
    assert!(h.runtime.oom_kills(&id).expect("counter") >= 1);
    // The bomb died, not the sandbox.
    let (code, _, _) = h.sh(&id, "true").await;
    assert_eq!(code, Some(0));
    let stats = h.runtime.stats(&id).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, 128 << 20);
    h.finish().await;
}

#[tokio::test]
async fn a_disk_fill_stops_at_the_quota() {
    let h = harness().await;
    let mut small = spec();
    small.limits = SandboxLimits {
        workspace_bytes: 16 << 20,
        tmp_bytes: 8 << 20,
        workspace_inodes: 1000,
        ..SandboxLimits::default()
    };
    let id = h.sandbox_with(small).await;
    let (code, _, _) = h
        .sh(&id, "dd if=/dev/zero of=/home/user/fill bs=1M count=64")
        .await;
    assert_ne!(code, Some(0), "the fill succeeded");
    let (_, size, _) = h.sh(&id, "stat -c %s /home/user/fill").await;
    let size: u64 = size.trim().parse().expect("size");
    assert!(size <= 16 << 20, "{size} bytes written");
    let stats = h.runtime.stats(&id).await.expect("stats");
    assert!(stats.disk_bytes >= 8 << 20, "{stats:?}");
    assert_eq!(stats.disk_limit_bytes, 16 << 20);
    let (code, _, _) = h
        .sh(&id, "dd if=/dev/zero of=/tmp/fill bs=1M count=64")
        .await;
    assert_ne!(code, Some(0));
    let (_, size, _) = h.sh(&id, "stat -c %s /tmp/fill").await;
    assert!(size.trim().parse::<u64>().expect("size") <= 8 << 20);
    let (code, _, _) = h
        .sh(
            &id,
            "cd /home/user && rm -f fill && for i in $(seq 1 2000); do touch f$i || exit 1; done",
        )
        .await;
    assert_ne!(code, Some(0), "the inode limit did not hold");
    h.finish().await;
}

#[tokio::test]
async fn a_cpu_quota_of_a_fifth_gives_about_a_fifth_of_a_core() {
    let h = harness().await;
    let mut slow = spec();
    slow.resources = Resources {
        cpu: 0.2,
        memory: 256,
    };
    let id = h.sandbox_with(slow).await;
    let probe = "import time\nwall = time.monotonic(); cpu = time.process_time()\n\
                 while time.monotonic() - wall < 2: pass\n\
                 print((time.process_time() - cpu) / (time.monotonic() - wall))";
    let output = h.run(&id, python(probe)).await;
    let ratio: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a ratio");
    // The quota is an upper bound; a busy shared machine may give less.
    assert!(ratio < 0.3, "cpu share {ratio}");
    assert!(ratio > 0.02, "cpu share {ratio}: the loop did not run");
    let stats = h.runtime.stats(&id).await.expect("stats");
    assert_eq!(stats.cpu_limit_millicores, 200);
    assert!(stats.cpu_usage_usec > 0);
    h.finish().await;
}
