//! The jail: a fixed, ordered list of small named steps that turn a freshly
//! cloned child (new user, mount, PID, network, IPC and UTS namespaces) into the
//! sandbox's PID 1 running the agent. Firecracker's jailer and nsjail work the
//! same way: the sequence is data, built on the host where allocation is free,
//! and executed in the child by [`run`] through the [`Syscall`] seam without
//! allocating. A failing step is reported to the host as its index and errno and
//! becomes a [`JailError`] naming the step.
//!
//! The root is a small tmpfs (private to the sandbox's mount namespace, so it
//! vanishes with it and leaves nothing on the host to clean up) holding read-only
//! bind mounts of the template, the generated `/etc`, the agent binary, size
//! limited tmpfs for `/home/user`, `/tmp` and `/dev/shm`, a minimal `/dev` and a
//! fresh, masked `/proc`.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use codebox_sys::mount::{
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MS_BIND, MS_NODEV,
    MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC,
};
use codebox_sys::process::ExecArgs;
use codebox_sys::seccomp::SockFilter;
use codebox_sys::{security, Errno};

use super::syscall::Syscall;
use crate::SandboxLimits;

/// Where the agent binary is bind-mounted inside the sandbox.
pub const AGENT_PATH_INSIDE: &str = "/.codebox/agent";
/// The in-sandbox user's uid and gid.
pub const USER_ID: u32 = 1000;
const HOSTNAME: &[u8] = b"sandbox";
const SANDBOX_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `/proc` files hidden behind `/dev/null` (kernel memory, keys, timing and
/// debugging interfaces).
const MASKED_PROC_FILES: &[&str] = &[
    "kcore",
    "keys",
    "kallsyms",
    "kmsg",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "sysrq-trigger",
    "config.gz",
    "vmallocinfo",
    "pagetypeinfo",
];
/// `/proc` directories hidden behind an empty read-only tmpfs.
const MASKED_PROC_DIRS: &[&str] = &["acpi", "scsi", "asound", "firmware"];
/// `/proc` directories kept but read-only.
const READ_ONLY_PROC: &[&str] = &["sys", "bus", "fs", "irq"];
/// Device nodes bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Capabilities the agent keeps (bounding set): it switches to uid 1000 for
/// user code (SETUID/SETGID), signals user processes (KILL) and manages files in
/// the workspace (CHOWN/FOWNER/DAC_OVERRIDE), and empties the bounding set of
/// user processes before exec (SETPCAP). Every other one is gone, above all
/// SYS_ADMIN; user processes get none at all.
pub const AGENT_CAPABILITIES: u64 = (1 << security::CAP_CHOWN)
    | (1 << security::CAP_DAC_OVERRIDE)
    | (1 << security::CAP_FOWNER)
    | (1 << security::CAP_KILL)
    | (1 << security::CAP_SETGID)
    | (1 << security::CAP_SETUID)
    | (1 << security::CAP_SETPCAP);

/// One entry of the read-only template root (e.g. `/usr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateEntry {
    /// Bind-mount host directory `source` read-only at `/<name>`.
    Bind { name: String, source: PathBuf },
    /// Make `/<name>` a symlink to `target` (merged-usr `/bin -> usr/bin`).
    Symlink { name: String, target: PathBuf },
}

/// What a plan is built from.
#[derive(Debug, Clone)]
pub struct JailInput<'a> {
    /// An empty host directory; the child mounts its root tmpfs there, inside
    /// its own mount namespace (so every sandbox can share the same directory).
    pub new_root: &'a Path,
    pub template: &'a [TemplateEntry],
    /// Language templates: host directory -> absolute mount point, each
    /// bind-mounted read-only, `nosuid`, `nodev` (checked by
    /// [`validate_templates`](super::config::validate_templates): plain, outside
    /// the system directories, not nested).
    pub template_mounts: &'a [(PathBuf, String)],
    /// The generated `/etc` on the host.
    pub etc_dir: &'a Path,
    /// The agent binary on the host.
    pub agent_path: &'a Path,
    pub limits: &'a SandboxLimits,
    /// Size of `/dev/shm` (charged to the sandbox's memory cgroup).
    pub shm_bytes: u64,
    pub last_cap: u32,
    pub seccomp: &'a [SockFilter],
}

/// One step of the jail setup.
#[derive(Debug)]
pub enum Step {
    AwaitParent,
    BecomeNamespaceRoot,
    UnshareCgroup,
    PrivatizeMounts,
    MountRoot {
        target: CString,
        data: CString,
    },
    MakeDir {
        path: CString,
        mode: u32,
    },
    MakeFile {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    BindReadOnly {
        source: CString,
        target: CString,
    },
    BindDevice {
        source: CString,
        target: CString,
    },
    MountTmpfs {
        target: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    MountProc {
        target: CString,
    },
    MountDevpts {
        target: CString,
    },
    MaskFile {
        target: CString,
    },
    MaskDir {
        target: CString,
    },
    ReadOnlyInPlace {
        target: CString,
    },
    SealReadOnly {
        target: CString,
    },
    SetHostname,
    LoopbackUp,
    PivotRoot {
        new_root: CString,
    },
    NullStdio,
    ArrangeFds,
    SetRlimit {
        resource: libc::__rlimit_resource_t,
        value: u64,
    },
    ClearAmbient,
    DropBoundingSet {
        keep: u64,
        last_cap: u32,
    },
    NoNewPrivs,
    Seccomp {
        program: Vec<SockFilter>,
    },
    Exec {
        args: ExecArgs,
    },
}

impl Step {
    /// The step's stable name, used in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::AwaitParent => "await_parent",
            Step::BecomeNamespaceRoot => "become_namespace_root",
            Step::UnshareCgroup => "unshare_cgroup",
            Step::PrivatizeMounts => "privatize_mounts",
            Step::MountRoot { .. } => "mount_root",
            Step::MakeDir { .. } => "make_dir",
            Step::MakeFile { .. } => "make_file",
            Step::Symlink { .. } => "symlink",
            Step::BindReadOnly { .. } => "bind_read_only",
            Step::BindDevice { .. } => "bind_device",
            Step::MountTmpfs { .. } => "mount_tmpfs",
            Step::MountProc { .. } => "mount_proc",
            Step::MountDevpts { .. } => "mount_devpts",
            Step::MaskFile { .. } => "mask_file",
            Step::MaskDir { .. } => "mask_dir",
            Step::ReadOnlyInPlace { .. } => "read_only_in_place",
            Step::SealReadOnly { .. } => "seal_read_only",
            Step::SetHostname => "set_hostname",
            Step::LoopbackUp => "loopback_up",
            Step::PivotRoot { .. } => "pivot_root",
            Step::NullStdio => "null_stdio",
            Step::ArrangeFds => "arrange_fds",
            Step::SetRlimit { .. } => "set_rlimit",
            Step::ClearAmbient => "clear_ambient",
            Step::DropBoundingSet { .. } => "drop_bounding_set",
            Step::NoNewPrivs => "no_new_privs",
            Step::Seccomp { .. } => "seccomp",
            Step::Exec { .. } => "exec_agent",
        }
    }

    /// The path the step works on, if any (for errors).
    fn path(&self) -> Option<&CStr> {
        match self {
            Step::MountRoot { target, .. }
            | Step::BindReadOnly { target, .. }
            | Step::BindDevice { target, .. }
            | Step::MountTmpfs { target, .. }
            | Step::MountProc { target }
            | Step::MountDevpts { target }
            | Step::MaskFile { target }
            | Step::MaskDir { target }
            | Step::ReadOnlyInPlace { target }
            | Step::SealReadOnly { target } => Some(target),
            Step::MakeDir { path, .. } | Step::MakeFile { path } => Some(path),
            Step::Symlink { link, .. } => Some(link),
            Step::PivotRoot { new_root } => Some(new_root),
            _ => None,
        }
    }
}

/// The sequence for one sandbox.
#[derive(Debug)]
pub struct JailPlan {
    pub steps: Vec<Step>,
}

impl JailPlan {
    /// The failing step's name and error, for a failure the child reported as
    /// `(index, errno)`.
    pub fn error_for(&self, index: u32, errno: i32) -> (&'static str, JailError) {
        match self.steps.get(index as usize) {
            Some(step) => {
                let path = step
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let source = std::io::Error::from_raw_os_error(errno);
                (step.name(), JailError::of(step, path, source))
            }
            None => ("jail", JailError::UnknownStep { index }),
        }
    }

    /// Builds the sequence. Pure: no syscalls.
    pub fn build(input: &JailInput<'_>) -> JailPlan {
        let mut plan = Builder {
            root: input.new_root.to_path_buf(),
            steps: Vec::with_capacity(96),
        };
        plan.push(Step::AwaitParent);
        plan.push(Step::BecomeNamespaceRoot);
        plan.push(Step::UnshareCgroup);
        plan.push(Step::PrivatizeMounts);
        plan.root_and_template(input);
        plan.writable_mounts(input);
        plan.dev(input);
        plan.proc();
        plan.push(Step::SetHostname);
        plan.push(Step::LoopbackUp);
        plan.push(Step::PivotRoot {
            new_root: cstring(input.new_root),
        });
        plan.push(Step::SealReadOnly {
            target: c"/".to_owned(),
        });
        plan.push(Step::NullStdio);
        plan.push(Step::ArrangeFds);
        plan.privileges(input);
        plan.push(Step::Exec {
            args: agent_exec_args(),
        });
        JailPlan { steps: plan.steps }
    }
}

struct Builder {
    root: PathBuf,
    steps: Vec<Step>,
}

impl Builder {
    fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// `relative` under the new root, as a host path before `pivot_root`.
    fn at(&self, relative: &str) -> CString {
        cstring(&self.root.join(relative))
    }

    fn dir(&mut self, relative: &str, mode: u32) {
        let path = self.at(relative);
        self.push(Step::MakeDir { path, mode });
    }

    fn root_and_template(&mut self, input: &JailInput<'_>) {
        self.push(Step::MountRoot {
            target: self.at(""),
            data: c"size=1m,nr_inodes=1024,mode=0755".to_owned(),
        });
        for dir in ["etc", "home", "home/user", "tmp", "proc", "dev", ".codebox"] {
            self.dir(dir, 0o755);
        }
        for entry in input.template {
            match entry {
                TemplateEntry::Bind { name, source } => {
                    self.dir(name, 0o755);
                    let target = self.at(name);
                    self.push(Step::BindReadOnly {
                        source: cstring(source),
                        target,
                    });
                }
                TemplateEntry::Symlink { name, target } => {
                    let link = self.at(name);
                    self.push(Step::Symlink {
                        target: cstring(target),
                        link,
                    });
                }
            }
        }
        self.language_templates(input.template_mounts);
        let etc = self.at("etc");
        self.push(Step::BindReadOnly {
            source: cstring(input.etc_dir),
            target: etc,
        });
        let agent = self.at(AGENT_PATH_INSIDE.trim_start_matches('/'));
        self.push(Step::MakeFile {
            path: agent.clone(),
        });
        self.push(Step::BindReadOnly {
            source: cstring(input.agent_path),
            target: agent,
        });
    }

    /// Creates each mount point's directories in the root tmpfs (each once:
    /// `/opt`, `/opt/codebox`, ...) and bind-mounts the template read-only there.
    fn language_templates(&mut self, mounts: &[(PathBuf, String)]) {
        let mut made: Vec<PathBuf> = Vec::new();
        for (source, point) in mounts {
            let relative = point.trim_start_matches('/');
            let mut partial = PathBuf::new();
            for component in Path::new(relative).components() {
                partial.push(component);
                if !made.contains(&partial) {
                    self.dir(&partial.to_string_lossy(), 0o755);
                    made.push(partial.clone());
                }
            }
            let target = self.at(relative);
            self.push(Step::BindReadOnly {
                source: cstring(source),
                target,
            });
        }
    }

    fn writable_mounts(&mut self, input: &JailInput<'_>) {
        let limits = input.limits;
        let home = format!(
            "size={},nr_inodes={},mode=0755,uid={USER_ID},gid={USER_ID}",
            limits.workspace_bytes, limits.workspace_inodes
        );
        let tmp = format!(
            "size={},nr_inodes={},mode=1777",
            limits.tmp_bytes, limits.workspace_inodes
        );
        for (target, data) in [("home/user", home), ("tmp", tmp)] {
            let target = self.at(target);
            self.push(Step::MountTmpfs {
                target,
                flags: MS_NOSUID | MS_NODEV,
                data: CString::new(data).expect("numbers contain no NUL"),
            });
        }
    }

    fn dev(&mut self, input: &JailInput<'_>) {
        let target = self.at("dev");
        self.push(Step::MountTmpfs {
            target,
            flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
            data: c"size=64k,nr_inodes=64,mode=0755".to_owned(),
        });
        for device in DEVICES {
            let path = self.at(&format!("dev/{device}"));
            self.push(Step::MakeFile { path: path.clone() });
            self.push(Step::BindDevice {
                source: cstring(&Path::new("/dev").join(device)),
                target: path,
            });
        }
        self.dir("dev/pts", 0o755);
        let pts = self.at("dev/pts");
        self.push(Step::MountDevpts { target: pts });
        self.dir("dev/shm", 0o1777);
        let shm = self.at("dev/shm");
        self.push(Step::MountTmpfs {
            target: shm,
            flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
            data: CString::new(format!("size={},mode=1777", input.shm_bytes))
                .expect("numbers contain no NUL"),
        });
        for (link, target) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = self.at(&format!("dev/{link}"));
            self.push(Step::Symlink {
                target: CString::new(target).expect("literal"),
                link,
            });
        }
        let dev = self.at("dev");
        self.push(Step::SealReadOnly { target: dev });
    }

    fn proc(&mut self) {
        let target = self.at("proc");
        self.push(Step::MountProc { target });
        for file in MASKED_PROC_FILES {
            let target = self.at(&format!("proc/{file}"));
            self.push(Step::MaskFile { target });
        }
        for dir in MASKED_PROC_DIRS {
            let target = self.at(&format!("proc/{dir}"));
            self.push(Step::MaskDir { target });
        }
        for dir in READ_ONLY_PROC {
            let target = self.at(&format!("proc/{dir}"));
            self.push(Step::ReadOnlyInPlace { target });
        }
    }

    fn privileges(&mut self, input: &JailInput<'_>) {
        for (resource, value) in [
            (security::RLIMIT_NOFILE, input.limits.open_files),
            (security::RLIMIT_FSIZE, input.limits.workspace_bytes),
            (security::RLIMIT_CORE, 0),
        ] {
            self.push(Step::SetRlimit { resource, value });
        }
        self.push(Step::ClearAmbient);
        self.push(Step::DropBoundingSet {
            keep: AGENT_CAPABILITIES,
            last_cap: input.last_cap,
        });
        self.push(Step::NoNewPrivs);
        self.push(Step::Seccomp {
            program: input.seccomp.to_vec(),
        });
    }
}

fn cstring(path: &Path) -> CString {
    // Paths come from config and the runtime's own layout, never from a request;
    // one with a NUL byte cannot name a file anyway.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|_| c"/nonexistent".to_owned())
}

fn agent_exec_args() -> ExecArgs {
    ExecArgs::new(
        CString::new(AGENT_PATH_INSIDE).expect("literal"),
        vec![c"codebox-agent".to_owned()],
        vec![
            CString::new(format!("CODEBOX_AGENT_FD={}", super::syscall::AGENT_FD))
                .expect("literal"),
            CString::new(SANDBOX_PATH).expect("literal"),
        ],
    )
}

/// The fds the child holds when it starts running the plan.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    pub sync: RawFd,
    pub agent: RawFd,
    pub error: RawFd,
}

/// A failed step: its index, the errno, and the fd to report it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFailure {
    pub index: u32,
    pub errno: Errno,
    pub error_fd: RawFd,
}

impl StepFailure {
    /// The 8-byte report the host decodes: index and errno, little endian.
    pub fn encode(&self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&self.index.to_le_bytes());
        bytes[4..].copy_from_slice(&self.errno.0.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: [u8; 8]) -> (u32, i32) {
        let index = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let errno = i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        (index, errno)
    }
}

/// Runs the plan; returns only on failure (success ends in `execve`).
/// Allocation-free as long as `sys` is.
pub fn run(plan: &JailPlan, sys: &impl Syscall, fds: ChildFds) -> StepFailure {
    let mut error_fd = fds.error;
    for (index, step) in plan.steps.iter().enumerate() {
        let result = match step {
            Step::ArrangeFds => sys
                .arrange_fds(fds.agent, error_fd)
                .map(|()| error_fd = super::syscall::ERROR_FD),
            Step::Exec { args } => Err(sys.exec(args)),
            other => run_step(other, sys, fds),
        };
        if let Err(errno) = result {
            return StepFailure {
                index: index as u32,
                errno,
                error_fd,
            };
        }
    }
    StepFailure {
        index: plan.steps.len() as u32,
        errno: Errno(libc::ENOEXEC),
        error_fd,
    }
}

const READ_ONLY: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

fn run_step(step: &Step, sys: &impl Syscall, fds: ChildFds) -> Result<(), Errno> {
    match step {
        Step::AwaitParent => sys.await_parent(fds.sync),
        Step::BecomeNamespaceRoot => sys.become_namespace_root(),
        Step::UnshareCgroup => sys.unshare(libc::CLONE_NEWCGROUP),
        Step::PrivatizeMounts => sys.mount(None, c"/", None, MS_REC | MS_PRIVATE, None),
        Step::MountRoot { target, data } => {
            let flags = MS_NOSUID | MS_NODEV;
            sys.mount(Some(c"tmpfs"), target, Some(c"tmpfs"), flags, Some(data))
        }
        Step::MakeDir { path, mode } => sys.mkdir(path, *mode),
        Step::MakeFile { path } => sys.touch(path),
        Step::Symlink { target, link } => sys.symlink(target, link),
        Step::BindReadOnly { source, target } => {
            sys.mount(Some(source), target, None, MS_BIND | MS_REC, None)?;
            sys.mount_setattr(target, true, READ_ONLY)
        }
        Step::BindDevice { source, target } => {
            sys.mount(Some(source), target, None, MS_BIND, None)?;
            sys.mount_setattr(target, false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)
        }
        Step::MountTmpfs {
            target,
            flags,
            data,
        } => sys.mount(Some(c"tmpfs"), target, Some(c"tmpfs"), *flags, Some(data)),
        Step::MountProc { target } => {
            let flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
            sys.mount(Some(c"proc"), target, Some(c"proc"), flags, None)
        }
        Step::MountDevpts { target } => {
            let data = c"newinstance,ptmxmode=0666,mode=0620,gid=5";
            let flags = MS_NOSUID | MS_NOEXEC;
            sys.mount(Some(c"devpts"), target, Some(c"devpts"), flags, Some(data))
        }
        Step::MaskFile { target } => skip_missing(
            sys.mount(Some(c"/dev/null"), target, None, MS_BIND, None)
                .and_then(|()| sys.mount_setattr(target, false, READ_ONLY)),
        ),
        Step::MaskDir { target } => skip_missing(sys.mount(
            Some(c"tmpfs"),
            target,
            Some(c"tmpfs"),
            MS_NOSUID | MS_NODEV | MS_NOEXEC | libc::MS_RDONLY,
            Some(c"size=0,mode=0555"),
        )),
        Step::ReadOnlyInPlace { target } => skip_missing(
            sys.mount(Some(target), target, None, MS_BIND | MS_REC, None)
                .and_then(|()| sys.mount_setattr(target, true, READ_ONLY | MOUNT_ATTR_NOEXEC)),
        ),
        Step::SealReadOnly { target } => sys.mount_setattr(target, false, READ_ONLY),
        Step::SetHostname => sys.sethostname(HOSTNAME),
        Step::LoopbackUp => sys.loopback_up(),
        Step::PivotRoot { new_root } => pivot(sys, new_root),
        Step::NullStdio => sys.null_stdio(),
        Step::SetRlimit { resource, value } => sys.set_rlimit(*resource, *value),
        Step::ClearAmbient => sys.clear_ambient(),
        Step::DropBoundingSet { keep, last_cap } => sys.drop_bounding_set(*keep, *last_cap),
        Step::NoNewPrivs => sys.no_new_privs(),
        Step::Seccomp { program } => sys.seccomp(program),
        // Handled by `run`; never panic in the child.
        Step::ArrangeFds | Step::Exec { .. } => Err(Errno(libc::EINVAL)),
    }
}

/// `pivot_root(".", ".")` stacks the old root under the new one; detaching it
/// leaves only the new root (no put_old directory needed).
fn pivot(sys: &impl Syscall, new_root: &CStr) -> Result<(), Errno> {
    sys.chdir(new_root)?;
    sys.pivot_root(c".", c".")?;
    sys.umount_detach(c".")?;
    sys.chdir(c"/")
}

/// A masked path this kernel does not have needs no mask.
fn skip_missing(result: Result<(), Errno>) -> Result<(), Errno> {
    match result {
        Err(Errno(libc::ENOENT)) => Ok(()),
        other => other,
    }
}

mod error;
pub use error::JailError;

#[cfg(test)]
mod tests;
