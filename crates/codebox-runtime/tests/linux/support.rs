//! Test harness: a runtime with its own root directory, cgroup parent and host
//! uid range, so tests running in parallel processes never meet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codebox_runtime::{
    Command, ExecOutput, ExecRequest, LinuxRuntime, LinuxRuntimeConfig, Runtime, SandboxLimits,
    SandboxSpec,
};
use codebox_types::{Resources, SandboxId};

pub const SANDBOXES_PER_RUNTIME: u32 = 8;

pub fn agent_path() -> PathBuf {
    let path = std::env::var_os("CODEBOX_AGENT_PATH").expect(
        "CODEBOX_AGENT_PATH is unset: build the static agent with \
         `CODEBOX_AGENT_PATH=$(scripts/build-agent)` (scripts/test does this)",
    );
    PathBuf::from(path)
}

pub struct Harness {
    pub runtime: LinuxRuntime,
    pub root: tempfile::TempDir,
    pub cgroup_parent: String,
    pub uid_base: u32,
}

/// A random number from the OS (ids are 128 random bits).
fn random() -> u64 {
    let id = SandboxId::generate();
    id.as_str().bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    })
}

pub fn config(pool_size: usize) -> (LinuxRuntimeConfig, tempfile::TempDir) {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .expect("procfs")
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "the sandbox tests need root"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = LinuxRuntimeConfig::new(root.path().join("runtime"), agent_path());
    config.pool_size = pool_size;
    config.cgroup_parent = format!("codebox-test-{}", random() % 1_000_000_000);
    config.max_sandboxes = SANDBOXES_PER_RUNTIME;
    // Disjoint ranges per test process: 6000 windows of 8 * 65536 ids.
    config.uid_base = 100_000_000 + (random() % 6000) as u32 * SANDBOXES_PER_RUNTIME * 65_536;
    (config, root)
}

pub async fn harness_with(config: LinuxRuntimeConfig, root: tempfile::TempDir) -> Harness {
    let cgroup_parent = config.cgroup_parent.clone();
    let uid_base = config.uid_base;
    let runtime = LinuxRuntime::new(config).expect("runtime starts");
    runtime.recover().await.expect("recover");
    Harness {
        runtime,
        root,
        cgroup_parent,
        uid_base,
    }
}

pub async fn harness() -> Harness {
    let (config, root) = config(0);
    harness_with(config, root).await
}

pub fn spec() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::generate(),
        runtime: "python3".into(),
        resources: Resources::default(),
        limits: SandboxLimits::default(),
        env: BTreeMap::new(),
        network: false,
    }
}

pub fn shell(script: &str) -> ExecRequest {
    ExecRequest {
        command: Command::Shell(script.into()),
        env: BTreeMap::new(),
        cwd: None,
        stdin: None,
        timeout: Duration::from_secs(20),
        output_limit: 1 << 20,
    }
}

/// `python3 -c code`, otherwise as [`shell`].
pub fn python(code: &str) -> ExecRequest {
    ExecRequest {
        command: Command::Argv(vec!["python3".into(), "-c".into(), code.into()]),
        ..shell("")
    }
}

impl Harness {
    pub async fn sandbox(&self) -> SandboxId {
        self.sandbox_with(spec()).await
    }

    pub async fn sandbox_with(&self, spec: SandboxSpec) -> SandboxId {
        let id = spec.id.clone();
        self.runtime.create(spec).await.expect("create");
        id
    }

    pub async fn run(&self, id: &SandboxId, request: ExecRequest) -> ExecOutput {
        let stream = self.runtime.exec(id, request).await.expect("exec starts");
        stream.collect().await.expect("exec finishes")
    }

    /// Runs a shell script; returns (exit code, stdout, stderr).
    pub async fn sh(&self, id: &SandboxId, script: &str) -> (Option<i32>, String, String) {
        let output = self.run(id, shell(script)).await;
        (
            output.exit.expect("collect returns an exit").exit_code,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Host processes whose uid lies in this runtime's range.
    pub fn processes_in_range(&self) -> Vec<u32> {
        let end = u64::from(self.uid_base) + u64::from(SANDBOXES_PER_RUNTIME) * 65_536;
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("procfs").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let uid = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<u64>().ok());
            if uid.is_some_and(|uid| (u64::from(self.uid_base)..end).contains(&uid)) {
                found.push(pid);
            }
        }
        found
    }

    /// Sandbox cgroups left under this runtime's parent, in every hierarchy.
    pub fn cgroups_left(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for parent in self.cgroup_parents() {
            for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    left.push(entry.path());
                }
            }
        }
        left
    }

    fn cgroup_parents(&self) -> Vec<PathBuf> {
        let mut parents = Vec::new();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .expect("cgroupfs")
            .flatten()
        {
            let candidate = hierarchy.path().join(&self.cgroup_parent);
            if candidate.is_dir() {
                parents.push(candidate);
            }
        }
        let unified = Path::new("/sys/fs/cgroup").join(&self.cgroup_parent);
        if unified.is_dir() && !parents.contains(&unified) {
            parents.push(unified);
        }
        parents
    }

    /// Shuts down and removes this runtime's cgroup parents.
    pub async fn finish(self) {
        self.runtime.shutdown().await;
        for parent in self.cgroup_parents() {
            // The kernel frees a removed child cgroup asynchronously: the parent
            // can be busy for a moment.
            for _ in 0..200 {
                if std::fs::remove_dir(&parent).is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Mount count of the host's (this process's) mount namespace.
pub fn host_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .count()
}
