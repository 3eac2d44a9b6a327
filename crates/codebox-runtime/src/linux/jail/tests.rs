//! Unit tests of the jail plan and its executor, through a recording
//! [`Syscall`] fake: no root needed.

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use codebox_sys::process::ExecArgs;
use codebox_sys::seccomp::SockFilter;
use codebox_sys::Errno;

use super::*;
use crate::linux::syscall::{Syscall, ERROR_FD};

/// Records every call as text; fails the call whose text starts with `fail_on`.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<String>>,
    fail_on: Option<(&'static str, i32)>,
}

impl Recorder {
    fn failing(prefix: &'static str, errno: i32) -> Self {
        Self {
            calls: RefCell::default(),
            fail_on: Some((prefix, errno)),
        }
    }

    fn record(&self, call: String) -> Result<(), Errno> {
        let fail = matches!(self.fail_on, Some((prefix, _)) if call.starts_with(prefix));
        self.calls.borrow_mut().push(call);
        match self.fail_on {
            Some((_, errno)) if fail => Err(Errno(errno)),
            _ => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

fn s(value: &CStr) -> String {
    value.to_string_lossy().into_owned()
}

impl Syscall for Recorder {
    fn await_parent(&self, fd: RawFd) -> Result<(), Errno> {
        self.record(format!("await_parent {fd}"))
    }
    fn become_namespace_root(&self) -> Result<(), Errno> {
        self.record("become_namespace_root".into())
    }
    fn unshare(&self, flags: libc::c_int) -> Result<(), Errno> {
        self.record(format!("unshare {flags:#x}"))
    }
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        self.record(format!(
            "mount {} {} {} {flags:#x} {}",
            source.map(s).unwrap_or_default(),
            s(target),
            fstype.map(s).unwrap_or_default(),
            data.map(s).unwrap_or_default()
        ))
    }
    fn mount_setattr(&self, path: &CStr, recursive: bool, attrs: u64) -> Result<(), Errno> {
        self.record(format!("setattr {} {recursive} {attrs:#x}", s(path)))
    }
    fn umount_detach(&self, target: &CStr) -> Result<(), Errno> {
        self.record(format!("umount {}", s(target)))
    }
    fn mkdir(&self, path: &CStr, mode: u32) -> Result<(), Errno> {
        self.record(format!("mkdir {} {mode:o}", s(path)))
    }
    fn touch(&self, path: &CStr) -> Result<(), Errno> {
        self.record(format!("touch {}", s(path)))
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        self.record(format!("symlink {} {}", s(target), s(link)))
    }
    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        self.record(format!("chdir {}", s(path)))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        self.record(format!("pivot_root {} {}", s(new_root), s(put_old)))
    }
    fn sethostname(&self, name: &[u8]) -> Result<(), Errno> {
        self.record(format!("sethostname {}", String::from_utf8_lossy(name)))
    }
    fn loopback_up(&self) -> Result<(), Errno> {
        self.record("loopback_up".into())
    }
    fn null_stdio(&self) -> Result<(), Errno> {
        self.record("null_stdio".into())
    }
    fn arrange_fds(&self, agent: RawFd, error: RawFd) -> Result<(), Errno> {
        self.record(format!("arrange_fds {agent} {error}"))
    }
    fn set_rlimit(&self, resource: libc::__rlimit_resource_t, value: u64) -> Result<(), Errno> {
        self.record(format!("rlimit {resource} {value}"))
    }
    fn clear_ambient(&self) -> Result<(), Errno> {
        self.record("clear_ambient".into())
    }
    fn drop_bounding_set(&self, keep: u64, last_cap: u32) -> Result<(), Errno> {
        self.record(format!("drop_bounding {keep:#x} {last_cap}"))
    }
    fn no_new_privs(&self) -> Result<(), Errno> {
        self.record("no_new_privs".into())
    }
    fn seccomp(&self, program: &[SockFilter]) -> Result<(), Errno> {
        self.record(format!("seccomp {}", program.len()))
    }
    fn exec(&self, _args: &ExecArgs) -> Errno {
        match self.record("exec".into()) {
            Ok(()) => Errno(0),
            Err(errno) => errno,
        }
    }
}

struct Fixture {
    template: Vec<TemplateEntry>,
    template_mounts: Vec<(PathBuf, String)>,
    limits: SandboxLimits,
    seccomp: Vec<SockFilter>,
}

fn fixture() -> Fixture {
    Fixture {
        template_mounts: vec![
            (
                "/data/templates/python3".into(),
                "/opt/codebox/python3".into(),
            ),
            ("/data/templates/node".into(), "/opt/codebox/node".into()),
        ],
        template: vec![
            TemplateEntry::Bind {
                name: "usr".into(),
                source: "/usr".into(),
            },
            TemplateEntry::Symlink {
                name: "bin".into(),
                target: "usr/bin".into(),
            },
        ],
        limits: SandboxLimits::default(),
        seccomp: crate::linux::seccomp_policy::program(),
    }
}

fn plan(fixture: &Fixture) -> JailPlan {
    JailPlan::build(&JailInput {
        new_root: Path::new("/data/runtime/rootfs"),
        template: &fixture.template,
        template_mounts: &fixture.template_mounts,
        etc_dir: Path::new("/data/runtime/etc"),
        agent_path: Path::new("/opt/codebox/codebox-agent"),
        limits: &fixture.limits,
        shm_bytes: 64 << 20,
        last_cap: 40,
        seccomp: &fixture.seccomp,
    })
}

const FDS: ChildFds = ChildFds {
    sync: 10,
    agent: 11,
    error: 12,
};

fn position(names: &[&str], name: &str) -> usize {
    names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("step {name} missing"))
}

fn last_position(names: &[&str], name: &str) -> usize {
    names.len()
        - 1
        - names
            .iter()
            .rev()
            .position(|n| *n == name)
            .expect("present")
}

#[test]
fn steps_come_in_the_safe_order() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let names: Vec<&str> = plan.steps.iter().map(Step::name).collect();
    assert_eq!(
        names[0], "await_parent",
        "nothing happens before the id maps"
    );
    assert!(position(&names, "unshare_cgroup") < position(&names, "mount_root"));
    let pivot = position(&names, "pivot_root");
    for mount_step in [
        "bind_read_only",
        "mount_tmpfs",
        "mount_proc",
        "mask_file",
        "mount_devpts",
    ] {
        assert!(
            last_position(&names, mount_step) < pivot,
            "{mount_step} after pivot"
        );
    }
    assert!(position(&names, "arrange_fds") < position(&names, "set_rlimit"));
    assert!(position(&names, "drop_bounding_set") < position(&names, "seccomp"));
    assert!(position(&names, "no_new_privs") < position(&names, "seccomp"));
    assert_eq!(*names.last().expect("steps"), "exec_agent");
}

#[test]
fn only_the_template_etc_agent_and_devices_are_bound() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let allowed_sources = [
        "/usr",
        "/data/runtime/etc",
        "/opt/codebox/codebox-agent",
        "/data/templates/python3",
        "/data/templates/node",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ];
    for step in &plan.steps {
        if let Step::BindReadOnly { source, .. } | Step::BindDevice { source, .. } = step {
            let source = s(source);
            assert!(allowed_sources.contains(&source.as_str()), "{source} bound");
        }
    }
}

#[test]
fn writable_mounts_are_nosuid_nodev_and_limited() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let mut seen = 0;
    for step in &plan.steps {
        if let Step::MountTmpfs {
            target,
            flags,
            data,
        } = step
        {
            seen += 1;
            assert_eq!(
                flags & (MS_NOSUID | MS_NODEV),
                MS_NOSUID | MS_NODEV,
                "{target:?}"
            );
            assert!(s(data).contains("size="), "{target:?} has no size limit");
        }
    }
    assert_eq!(seen, 4, "home, tmp, dev, dev/shm");
    let home = plan
        .steps
        .iter()
        .find_map(|step| match step {
            Step::MountTmpfs { target, data, .. } if s(target).ends_with("home/user") => {
                Some(s(data))
            }
            _ => None,
        })
        .expect("home mount");
    assert_eq!(
        home,
        "size=1073741824,nr_inodes=100000,mode=0755,uid=1000,gid=1000"
    );
}

#[test]
fn executing_the_plan_makes_the_expected_calls() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let recorder = Recorder::failing("exec", libc::ENOENT);
    let failure = run(&plan, &recorder, FDS);
    let calls = recorder.calls();
    assert_eq!(calls[0], "await_parent 10");
    assert_eq!(calls[1], "become_namespace_root");
    assert_eq!(calls[2], format!("unshare {:#x}", libc::CLONE_NEWCGROUP));
    assert_eq!(calls[3], format!("mount  /  {:#x} ", MS_REC | MS_PRIVATE));
    assert!(calls.contains(&"setattr /data/runtime/rootfs/usr true 0x7".to_owned()));
    assert!(calls.contains(&"symlink usr/bin /data/runtime/rootfs/bin".to_owned()));
    assert!(calls.contains(&"pivot_root . .".to_owned()));
    assert!(calls.contains(&"arrange_fds 11 12".to_owned()));
    assert!(calls.contains(&format!("drop_bounding {AGENT_CAPABILITIES:#x} 40")));
    // The exec failed: reported on the fd the plan moved the error pipe to.
    assert_eq!(failure.index as usize, plan.steps.len() - 1);
    assert_eq!(failure.errno, Errno(libc::ENOENT));
    assert_eq!(failure.error_fd, ERROR_FD);
}

#[test]
fn language_templates_are_bound_read_only_nosuid_nodev_at_their_mount_points() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let recorder = Recorder::failing("exec", libc::ENOENT);
    run(&plan, &recorder, FDS);
    let calls = recorder.calls();
    let index = |call: &str| {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("{call} missing from {calls:#?}"))
    };
    // Each directory of the mount points is made once, parents first.
    let root = "/data/runtime/rootfs";
    let opt = index(&format!("mkdir {root}/opt 755"));
    let codebox = index(&format!("mkdir {root}/opt/codebox 755"));
    let python = index(&format!("mkdir {root}/opt/codebox/python3 755"));
    assert!(opt < codebox && codebox < python);
    let made = |dir: &str| {
        calls
            .iter()
            .filter(|c| **c == format!("mkdir {root}/{dir} 755"))
            .count()
    };
    assert_eq!((made("opt"), made("opt/codebox")), (1, 1));
    for name in ["python3", "node"] {
        let bind = index(&format!(
            "mount /data/templates/{name} {root}/opt/codebox/{name}  {:#x} ",
            MS_BIND | MS_REC
        ));
        // Read-only, nosuid, nodev, recursively, right after the bind.
        let sealed = index(&format!("setattr {root}/opt/codebox/{name} true 0x7"));
        assert_eq!(sealed, bind + 1);
        assert!(bind < index("pivot_root . ."));
    }
}

#[test]
fn a_failing_step_is_named_in_the_error() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let recorder = Recorder::failing("pivot_root", libc::EINVAL);
    let failure = run(&plan, &recorder, FDS);
    assert_eq!(failure.error_fd, 12, "error pipe not yet moved");
    let (index, errno) = StepFailure::decode(failure.encode());
    let (step, error) = plan.error_for(index, errno);
    assert_eq!(step, "pivot_root");
    assert!(
        matches!(&error, JailError::PivotRoot { path, source } if path == "/data/runtime/rootfs" && source.raw_os_error() == Some(libc::EINVAL)),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "pivot_root into /data/runtime/rootfs failed"
    );
    // Nothing after the failing step ran.
    assert!(!recorder.calls().iter().any(|c| c.starts_with("seccomp")));
    assert!(matches!(
        plan.error_for(9999, 1),
        ("jail", JailError::UnknownStep { index: 9999 })
    ));
}

#[test]
fn masks_of_missing_proc_entries_are_skipped() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let recorder = Recorder::failing(
        "mount /dev/null /data/runtime/rootfs/proc/sched_debug",
        libc::ENOENT,
    );
    let failure = run(&plan, &recorder, FDS);
    // Everything ran up to the exec, which "returned" (errno 0 from the fake).
    assert_eq!(failure.index as usize, plan.steps.len() - 1);
    assert_eq!(failure.errno, Errno(0));
}

#[test]
fn every_step_kind_has_its_own_error() {
    let fixture = fixture();
    let plan = plan(&fixture);
    let mut messages = std::collections::BTreeMap::new();
    for step in &plan.steps {
        let error = JailError::of(step, "/p".into(), std::io::Error::from_raw_os_error(1));
        let message = error.to_string();
        if let Some(previous) = messages.insert(message.clone(), step.name()) {
            assert_eq!(previous, step.name(), "two step kinds share {message:?}");
        }
        assert!(std::error::Error::source(&error).is_some());
    }
    assert!(messages.len() >= 20, "{messages:?}");
}
