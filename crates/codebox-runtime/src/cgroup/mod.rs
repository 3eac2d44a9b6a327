//! cgroups: one per sandbox under a parent named by the runtime's config, for
//! memory (swap 0, OOM kills counted), cpu quota and pids, on either cgroup v1
//! (one hierarchy per controller) or v2 (one unified tree), detected at start
//! from `/proc/self/mountinfo`.
//!
//! Everything goes through [`CgroupFs`], so the v2 path (which this development
//! machine cannot run) is covered by unit tests against [`FakeCgroupFs`].

mod fs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use fs::{CgroupFs, FakeCgroupFs, HostCgroupFs};

/// CFS period used for the cpu quota: 100 ms, the kernel default.
const CPU_PERIOD_USEC: u64 = 100_000;

/// The v1 controllers a sandbox uses; `freezer` stops a fork bomb while killing.
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];
/// The v2 controllers a sandbox needs enabled in its parent.
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// A failed cgroup operation.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {detail}")]
    NoHierarchy { detail: String },
    #[error("cgroup {operation} failed on {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path} did not empty within {waited:?}")]
    NotEmpty { path: PathBuf, waited: Duration },
}

/// Which cgroup version the host runs, and where its hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One mount per v1 controller, in `V1_CONTROLLERS` order (controllers
    /// mounted together share a path).
    V1 { mounts: Vec<(String, PathBuf)> },
    /// The unified hierarchy.
    V2 { mount: PathBuf },
}

impl Layout {
    /// Picks v2 when its mount has every controller a sandbox needs, else v1
    /// when every v1 controller is mounted. `mountinfo` is the text of
    /// `/proc/self/mountinfo`.
    pub fn detect(mountinfo: &str, fs: &dyn CgroupFs) -> Result<Layout, CgroupError> {
        let mut v1 = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let (fstype, _source, options) = (right.next(), right.next(), right.next());
            match fstype {
                Some("cgroup2") if v2_usable(fs, Path::new(mount_point)) => {
                    return Ok(Layout::V2 {
                        mount: PathBuf::from(mount_point),
                    });
                }
                Some("cgroup") => {
                    for option in options.unwrap_or_default().split(',') {
                        v1.push((option.to_owned(), PathBuf::from(mount_point)));
                    }
                }
                _ => {}
            }
        }
        let mut mounts = Vec::new();
        for controller in V1_CONTROLLERS {
            let Some((_, path)) = v1.iter().find(|(name, _)| name == controller) else {
                return Err(CgroupError::NoHierarchy {
                    detail: format!("no cgroup2 with memory,cpu,pids and no v1 {controller}"),
                });
            };
            mounts.push((controller.to_owned(), path.clone()));
        }
        Ok(Layout::V1 { mounts })
    }

    pub fn version(&self) -> u8 {
        match self {
            Layout::V1 { .. } => 1,
            Layout::V2 { .. } => 2,
        }
    }
}

fn v2_usable(fs: &dyn CgroupFs, mount: &Path) -> bool {
    let Ok(controllers) = fs.read(&mount.join("cgroup.controllers")) else {
        return false;
    };
    let available: Vec<&str> = controllers.split_whitespace().collect();
    V2_CONTROLLERS.iter().all(|c| available.contains(c))
}

/// Limits written into a sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    /// 1000 = one core.
    pub cpu_millicores: u64,
    pub pids: u64,
}

/// Usage read from a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_usec: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
}

/// Creates and finds the cgroups of one runtime, all under `<hierarchy>/<parent>`.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    fs: Arc<dyn CgroupFs>,
    layout: Layout,
    parent: String,
}

impl CgroupManager {
    pub fn new(fs: Arc<dyn CgroupFs>, layout: Layout, parent: &str) -> Self {
        Self {
            fs,
            layout,
            parent: parent.to_owned(),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Hierarchy roots this runtime uses, deduplicated.
    fn roots(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { mount } => vec![mount.clone()],
            Layout::V1 { mounts } => {
                let mut roots: Vec<PathBuf> = Vec::new();
                for (_, path) in mounts {
                    if !roots.contains(path) {
                        roots.push(path.clone());
                    }
                }
                roots
            }
        }
    }

    /// Creates the parent cgroup(s) and, on v2, enables the controllers for
    /// the sandboxes below it.
    pub fn ensure_parent(&self) -> Result<(), CgroupError> {
        for root in self.roots() {
            let parent = root.join(&self.parent);
            match self.fs.create_dir(&parent) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(io_error("mkdir", &parent, e));
                }
                _ => {}
            }
            if let Layout::V2 { .. } = self.layout {
                let enable = "+memory +cpu +pids";
                for dir in [&root, &parent] {
                    let path = dir.join("cgroup.subtree_control");
                    self.fs
                        .write(&path, enable)
                        .map_err(|e| io_error("enable controllers", &path, e))?;
                }
            }
        }
        Ok(())
    }

    /// Names of the cgroups currently under the parent (leftovers at start).
    pub fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for root in self.roots() {
            let parent = root.join(&self.parent);
            if !self.fs.exists(&parent) {
                continue;
            }
            for name in self
                .fs
                .list_dirs(&parent)
                .map_err(|e| io_error("list", &parent, e))?
            {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    /// A handle on cgroup `name`, which may or may not exist yet.
    pub fn handle(&self, name: &str) -> SandboxCgroup {
        let dirs = self
            .roots()
            .into_iter()
            .map(|root| root.join(&self.parent).join(name))
            .collect();
        SandboxCgroup {
            fs: Arc::clone(&self.fs),
            layout: self.layout.clone(),
            dirs,
        }
    }

    /// Creates cgroup `name` (it must not exist) with `limits` applied.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<SandboxCgroup, CgroupError> {
        let cgroup = self.handle(name);
        for dir in &cgroup.dirs {
            self.fs
                .create_dir(dir)
                .map_err(|e| io_error("mkdir", dir, e))?;
        }
        let applied = cgroup.apply(limits, None);
        if let Err(error) = applied {
            let _ = cgroup.remove();
            return Err(error);
        }
        Ok(cgroup)
    }
}

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup of one sandbox (one directory per hierarchy on v1).
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    fs: Arc<dyn CgroupFs>,
    layout: Layout,
    dirs: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// The directory holding `controller`'s files.
    fn dir(&self, controller: &str) -> &Path {
        match &self.layout {
            Layout::V2 { .. } => &self.dirs[0],
            Layout::V1 { mounts } => {
                let index = mounts
                    .iter()
                    .position(|(name, _)| name == controller)
                    .expect("every v1 controller was found at detection");
                let root = &mounts[index].1;
                self.dirs
                    .iter()
                    .find(|dir| dir.starts_with(root))
                    .expect("one directory per hierarchy root")
            }
        }
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir(controller).join(file);
        self.fs
            .write(&path, value)
            .map_err(|e| io_error("write", &path, e))
    }

    fn read(&self, controller: &str, file: &str) -> Result<String, CgroupError> {
        let path = self.dir(controller).join(file);
        self.fs.read(&path).map_err(|e| io_error("read", &path, e))
    }

    fn has(&self, controller: &str, file: &str) -> bool {
        self.fs.exists(&self.dir(controller).join(file))
    }

    /// Writes `limits`. `previous` is the memory limit in force, if any: on v1
    /// the memory+swap limit may never be below the memory limit, so the order of
    /// the two writes depends on whether the limit grows or shrinks.
    pub fn apply(&self, limits: &CgroupLimits, previous: Option<u64>) -> Result<(), CgroupError> {
        let memory = limits.memory_bytes.to_string();
        let quota = limits.cpu_millicores * CPU_PERIOD_USEC / 1000;
        match self.layout {
            Layout::V2 { .. } => {
                self.write("memory", "memory.max", &memory)?;
                if self.has("memory", "memory.swap.max") {
                    self.write("memory", "memory.swap.max", "0")?;
                }
                self.write("memory", "memory.oom.group", "1")?;
                self.write("cpu", "cpu.max", &format!("{quota} {CPU_PERIOD_USEC}"))?;
            }
            Layout::V1 { .. } => {
                // A fresh group is unlimited: any first limit shrinks it.
                let growing = previous.is_some_and(|old| limits.memory_bytes >= old);
                self.apply_v1_memory(&memory, growing)?;
                self.write("cpu", "cpu.cfs_period_us", &CPU_PERIOD_USEC.to_string())?;
                self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        self.write("pids", "pids.max", &limits.pids.to_string())
    }

    fn apply_v1_memory(&self, memory: &str, growing: bool) -> Result<(), CgroupError> {
        // Without swap accounting (no memsw file) swappiness 0 is the best v1
        // offers: the group's pages are not swapped while file pages remain.
        self.write("memory", "memory.swappiness", "0")?;
        if !self.has("memory", "memory.memsw.limit_in_bytes") {
            return self.write("memory", "memory.limit_in_bytes", memory);
        }
        let order: [&str; 2] = if growing {
            ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
        } else {
            ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        };
        for file in order {
            self.write("memory", file, memory)?;
        }
        Ok(())
    }

    /// Moves process `pid` into this cgroup (every hierarchy on v1).
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            self.fs
                .write(&path, &pid)
                .map_err(|e| io_error("attach", &path, e))?;
        }
        Ok(())
    }

    /// How many times the kernel OOM-killed a process of this cgroup.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let (file, key) = match self.layout {
            Layout::V2 { .. } => ("memory.events", "oom_kill"),
            Layout::V1 { .. } => ("memory.oom_control", "oom_kill"),
        };
        Ok(keyed_value(&self.read("memory", file)?, key).unwrap_or(0))
    }

    /// Current usage.
    pub fn usage(&self) -> Result<CgroupUsage, CgroupError> {
        let number = |text: String| text.trim().parse::<u64>().unwrap_or(0);
        let pids = number(self.read("pids", "pids.current")?);
        match self.layout {
            Layout::V2 { .. } => {
                let memory = number(self.read("memory", "memory.current")?);
                let peak = self.read("memory", "memory.peak").map(number);
                Ok(CgroupUsage {
                    cpu_usec: keyed_value(&self.read("cpu", "cpu.stat")?, "usage_usec")
                        .unwrap_or(0),
                    memory_bytes: memory,
                    memory_peak_bytes: peak.unwrap_or(memory),
                    pids,
                })
            }
            Layout::V1 { .. } => Ok(CgroupUsage {
                cpu_usec: number(self.read("cpuacct", "cpuacct.usage")?) / 1000,
                memory_bytes: number(self.read("memory", "memory.usage_in_bytes")?),
                memory_peak_bytes: number(self.read("memory", "memory.max_usage_in_bytes")?),
                pids,
            }),
        }
    }

    /// Pids in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let controller = match self.layout {
            Layout::V2 { .. } => "memory",
            Layout::V1 { .. } => "freezer",
        };
        let text = self.read(controller, "cgroup.procs")?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kills every process: `cgroup.kill` on v2; on v1 freeze (so nothing can
    /// fork meanwhile), SIGKILL every listed pid, thaw so the kills land.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match self.layout {
            Layout::V2 { .. } => self.write("memory", "cgroup.kill", "1"),
            Layout::V1 { .. } => self.kill_selected(|_| true).map(drop),
        }
    }

    /// Kills, atomically with respect to forks, every process of the cgroup for
    /// which `select(pid)` is true: freeze, kill the selected, thaw. The
    /// runtime's backstop when an execution outlives its timeout (user processes
    /// are selected by host uid; the agent and its supervisors survive).
    pub fn kill_selected(&self, select: impl Fn(i32) -> bool) -> Result<usize, CgroupError> {
        self.set_frozen(true)?;
        let mut killed = 0;
        let listed = self.procs();
        for pid in listed.iter().flatten().copied().filter(|pid| select(*pid)) {
            // Frozen: the pid cannot exit and be recycled before the signal.
            if codebox_sys::process::kill(pid, libc::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        self.set_frozen(false)?;
        listed.map(|_| killed)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        match self.layout {
            Layout::V2 { .. } => {
                self.write("memory", "cgroup.freeze", if frozen { "1" } else { "0" })?;
                if frozen {
                    self.wait_v2_frozen(Duration::from_secs(2));
                }
                Ok(())
            }
            Layout::V1 { .. } => {
                self.write(
                    "freezer",
                    "freezer.state",
                    if frozen { "FROZEN" } else { "THAWED" },
                )?;
                if frozen {
                    self.wait_frozen(Duration::from_secs(2));
                }
                Ok(())
            }
        }
    }

    fn wait_v2_frozen(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.read("memory", "cgroup.events") {
                Ok(events) if keyed_value(&events, "frozen") != Some(0) => return,
                Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    fn wait_frozen(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.read("freezer", "freezer.state") {
                Ok(state) if state.trim() != "FREEZING" => return,
                Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// Waits until no process is left (killed processes take a moment to go).
    pub fn wait_empty(&self, limit: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        loop {
            if self.procs()?.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs[0].clone(),
                    waited: limit,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Removes the cgroup directories (they must be empty of processes).
    /// Missing directories are fine (idempotent).
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            if !self.fs.exists(dir) {
                continue;
            }
            self.remove_dir_retrying(dir)?;
        }
        Ok(())
    }

    fn remove_dir_retrying(&self, dir: &Path) -> Result<(), CgroupError> {
        let mut attempts = 0;
        loop {
            match self.fs.remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // The kernel releases a cgroup a moment after its last task exits.
                Err(e) if attempts < 200 && e.raw_os_error() == Some(libc::EBUSY) => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(io_error("rmdir", dir, e)),
            }
        }
    }

    /// Kills everything, waits for it to go, removes the directories.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        if !self.dirs.iter().any(|dir| self.fs.exists(dir)) {
            return Ok(());
        }
        self.kill_all()?;
        self.wait_empty(Duration::from_secs(5))?;
        self.remove()
    }
}

/// The value of `key` in a `key value` per line file (memory.events, cpu.stat).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests;
