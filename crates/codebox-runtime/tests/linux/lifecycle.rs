//! Lifecycle: create/exec/destroy cycles leave nothing, recover, exits, pool.

use std::time::Duration;

use codebox_runtime::{Runtime, RuntimeError};
use codebox_types::{SandboxId, TerminationReason};

use crate::support::{config, harness, harness_with, host_mounts, spec};

#[tokio::test]
async fn two_hundred_cycles_leave_nothing_behind() {
    let h = harness().await;
    let mounts_before = host_mounts();
    for cycle in 0..200 {
        let id = h.sandbox().await;
        let (code, out, _) = h.sh(&id, "echo $((6 * 7))").await;
        assert_eq!((code, out.as_str()), (Some(0), "42\n"), "cycle {cycle}");
        h.runtime.destroy(&id).await.expect("destroy");
    }
    assert!(h.processes_in_range().is_empty(), "processes left");
    assert!(
        h.cgroups_left().is_empty(),
        "cgroups left: {:?}",
        h.cgroups_left()
    );
    assert_eq!(host_mounts(), mounts_before, "host mounts changed");
    let rootfs = h.root.path().join("runtime/rootfs");
    assert_eq!(std::fs::read_dir(&rootfs).expect("rootfs").count(), 0);
    let mut entries: Vec<String> = std::fs::read_dir(h.root.path().join("runtime"))
        .expect("root dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["etc", "rootfs"]);
    assert!(h.runtime.list().await.expect("list").is_empty());
    h.finish().await;
}

#[tokio::test]
async fn destroy_kills_everything_in_the_sandbox() {
    let h = harness().await;
    let id = h.sandbox().await;
    let running = h
        .runtime
        .exec(
            &id,
            crate::support::shell(
                "(setsid sleep 1000 &); (nohup sleep 1000 >/dev/null 2>&1 &); sleep 1000",
            ),
        )
        .await
        .expect("exec starts");
    // Wait (bounded) until the three sleeps run. Count the sleeps themselves, not
    // every process: the subshells that start them come and go.
    let sleeps = || {
        h.processes_in_range()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
                    == b"sleep\x001000\x00"
            })
            .count()
    };
    for _ in 0..400 {
        if sleeps() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(sleeps(), 3, "the three sleeps run");
    h.runtime.destroy(&id).await.expect("destroy");
    // The stream ends without an exit status: the sandbox is gone.
    assert!(running.collect().await.is_err());
    assert!(h.processes_in_range().is_empty());
    assert!(h.cgroups_left().is_empty());
    assert!(matches!(
        h.runtime.destroy(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        h.runtime.exec(&id, crate::support::shell("true")).await,
        Err(RuntimeError::NotFound { .. })
    ));
    h.finish().await;
}

#[tokio::test]
async fn creates_are_validated() {
    let h = harness().await;
    let id = h.sandbox().await;
    let mut duplicate = spec();
    duplicate.id = id.clone();
    assert!(matches!(
        h.runtime.create(duplicate).await,
        Err(RuntimeError::AlreadyExists { .. })
    ));
    let mut unknown = spec();
    unknown.runtime = "cobol".into();
    assert!(matches!(
        h.runtime.create(unknown).await,
        Err(RuntimeError::UnknownRuntime { .. })
    ));
    let mut network = spec();
    network.network = true;
    assert!(matches!(
        h.runtime.create(network).await,
        Err(RuntimeError::InvalidRequest { .. })
    ));
    assert_eq!(h.runtime.isolation(), "namespaces");
    let names: Vec<String> = h.runtime.runtimes().into_iter().map(|r| r.name).collect();
    assert!(names.contains(&"bash".to_owned()), "{names:?}");
    h.finish().await;
}

#[tokio::test]
async fn a_dead_agent_is_reported_and_cleaned_up() {
    let h = harness().await;
    let mut exits = h.runtime.subscribe_exits();
    let id = h.sandbox().await;
    let pid = h.runtime.init_pid(&id).expect("pid");
    codebox_sys::process::kill(pid, libc::SIGKILL).expect("kill the agent");
    let exited = tokio::time::timeout(Duration::from_secs(30), exits.recv())
        .await
        .expect("an exit event")
        .expect("channel open");
    assert_eq!(exited.id, id);
    assert_eq!(exited.reason, TerminationReason::AgentLost);
    assert!(h.runtime.list().await.expect("list").is_empty());
    assert!(h.processes_in_range().is_empty());
    assert!(h.cgroups_left().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn recover_destroys_leftovers_of_a_crashed_run() {
    let (config, root) = config(0);
    let parent = config.cgroup_parent.clone();
    // A "crashed run": a cgroup under the parent holding a live process.
    let mut orphan = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let mut dirs = Vec::new();
    for controller in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&parent)
            .join("s5");
        std::fs::create_dir_all(&dir).expect("mkdir cgroup");
        std::fs::write(dir.join("cgroup.procs"), orphan.id().to_string()).expect("attach");
        dirs.push(dir);
    }
    // And a mount left on the runtime's shared rootfs mount point.
    let rootfs = config.root_dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "leftover"])
        .arg(&rootfs)
        .status()
        .expect("mount");
    assert!(mounted.success());
    std::fs::write(rootfs.join("stray"), "x").expect("stray file");
    let h = harness_with(config, root).await;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(rootfs.to_str().expect("utf-8")),
        "the leftover mount survived recover"
    );
    assert_eq!(std::fs::read_dir(&rootfs).expect("rootfs").count(), 0);
    // harness_with already ran recover; a second one finds nothing more.
    assert!(h
        .runtime
        .recover()
        .await
        .expect("recover")
        .destroyed
        .is_empty());
    let status = orphan.wait().expect("reaped");
    assert!(!status.success(), "the leftover process was not killed");
    for dir in dirs {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    h.finish().await;
}

#[tokio::test]
async fn the_warm_pool_serves_creates_and_refills() {
    let (config, root) = config(2);
    let h = harness_with(config, root).await;
    wait_for_pool(&h.runtime, 2).await;
    let mut custom = spec();
    custom.resources.memory = 256;
    custom.resources.cpu = 0.5;
    custom.env.insert("GREETING".into(), "hello".into());
    let id = custom.id.clone();
    h.runtime.create(custom).await.expect("claim");
    let stats = h.runtime.stats(&id).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, 256 << 20);
    assert_eq!(stats.cpu_limit_millicores, 500);
    let (code, out, _) = h.sh(&id, "echo $GREETING").await;
    assert_eq!((code, out.as_str()), (Some(0), "hello\n"));
    // Pool sandboxes are not listed; the claimed one is.
    assert_eq!(h.runtime.list().await.expect("list"), vec![id.clone()]);
    wait_for_pool(&h.runtime, 2).await;
    h.runtime.destroy(&id).await.expect("destroy");
    h.runtime.shutdown().await;
    assert!(h.processes_in_range().is_empty());
    assert!(h.cgroups_left().is_empty());
    h.finish().await;
}

async fn wait_for_pool(runtime: &codebox_runtime::LinuxRuntime, size: usize) {
    // Waiting, not timing: the bound only stops a broken pool from hanging CI.
    for _ in 0..600 {
        if runtime.pool_ready() >= size {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pool never reached {size}");
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let h = harness().await;
    let id = SandboxId::generate();
    assert!(matches!(
        h.runtime.stats(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    h.runtime.check_ready().await.expect("ready");
    h.finish().await;
}

#[tokio::test]
async fn stateful_contexts_run_inside_the_jail() {
    use codebox_runtime::{CodeRequest, ContextRequest, Language};
    let h = harness().await;
    let id = h.sandbox().await;
    for (language, set, get, expected) in [
        (Language::Python, "x = 20", "x + 22", "42"),
        (Language::Javascript, "var x = 20", "x + 22", "42"),
    ] {
        let context = format!("c-{}", language.as_str());
        let request = ContextRequest {
            context: context.clone(),
            language,
            cwd: None,
            env: Default::default(),
        };
        h.runtime
            .create_context(&id, request)
            .await
            .unwrap_or_else(|error| panic!("{language:?} context: {error:?}"));
        for (code, want) in [(set, None), (get, Some(expected))] {
            let request = CodeRequest {
                context: context.clone(),
                code: code.into(),
                timeout: Duration::from_secs(30),
                env: Default::default(),
                output_limit: 1 << 20,
            };
            let stream = h.runtime.execute_code(&id, request).await.expect("execute");
            let output = stream.collect().await.expect("collect");
            assert_eq!(output.text(), want, "{language:?} {code}: {output:?}");
        }
    }
    h.finish().await;
}
