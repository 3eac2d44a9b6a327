//! The sandbox's seccomp policy, as reviewed data: default allow, and every
//! syscall below denied, each with the reason. Compiled once per runtime into a
//! BPF program by `codebox_sys::seccomp::compile`, which also kills foreign
//! architectures (i386 `int 0x80`) and x32 syscall numbers.
//!
//! It is installed in the agent before `execve` and so covers every process of
//! the sandbox. It leaves the agent what it needs (setuid/setgid/setgroups,
//! prctl, kill, wait, pipes, poll/epoll) and denies what the security
//! requirements list. Changing this table is a security review.

use codebox_sys::seccomp::{compile, Action, ArgMatch, Rule, SockFilter};

/// Namespace flags of `clone(2)`: a sandbox never makes new namespaces (above
/// all `CLONE_NEWUSER`, the entry to most kernel attack surface).
/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET. (CLONE_NEWTIME is 0x80, inside clone()'s
/// exit-signal byte, so only reachable through clone3 and unshare, both denied.)
pub const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;

/// `TIOCSTI` pushes bytes into a terminal's input; `TIOCLINUX` can do the same
/// on a virtual console.
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;

const EPERM: u16 = libc::EPERM as u16;
const ENOSYS: u16 = libc::ENOSYS as u16;

/// One reviewed entry: the syscall, when it is denied, what it gets and why.
#[derive(Debug, Clone, Copy)]
pub struct PolicyEntry {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub args: ArgMatch,
    pub action: Action,
    pub why: &'static str,
}

macro_rules! deny {
    ($($name:ident => $why:literal),* $(,)?) => {
        &[$(PolicyEntry {
            name: stringify!($name),
            nr: paste_nr!($name),
            args: ArgMatch::Any,
            action: Action::Errno(EPERM),
            why: $why,
        }),*]
    };
}

macro_rules! paste_nr {
    (mount) => {
        libc::SYS_mount
    };
    (umount2) => {
        libc::SYS_umount2
    };
    (pivot_root) => {
        libc::SYS_pivot_root
    };
    (chroot) => {
        libc::SYS_chroot
    };
    (move_mount) => {
        libc::SYS_move_mount
    };
    (open_tree) => {
        libc::SYS_open_tree
    };
    (fsopen) => {
        libc::SYS_fsopen
    };
    (fsconfig) => {
        libc::SYS_fsconfig
    };
    (fsmount) => {
        libc::SYS_fsmount
    };
    (fspick) => {
        libc::SYS_fspick
    };
    (mount_setattr) => {
        libc::SYS_mount_setattr
    };
    (unshare) => {
        libc::SYS_unshare
    };
    (setns) => {
        libc::SYS_setns
    };
    (bpf) => {
        libc::SYS_bpf
    };
    (perf_event_open) => {
        libc::SYS_perf_event_open
    };
    (userfaultfd) => {
        libc::SYS_userfaultfd
    };
    (io_uring_setup) => {
        libc::SYS_io_uring_setup
    };
    (io_uring_enter) => {
        libc::SYS_io_uring_enter
    };
    (io_uring_register) => {
        libc::SYS_io_uring_register
    };
    (keyctl) => {
        libc::SYS_keyctl
    };
    (add_key) => {
        libc::SYS_add_key
    };
    (request_key) => {
        libc::SYS_request_key
    };
    (init_module) => {
        libc::SYS_init_module
    };
    (finit_module) => {
        libc::SYS_finit_module
    };
    (delete_module) => {
        libc::SYS_delete_module
    };
    (kexec_load) => {
        libc::SYS_kexec_load
    };
    (kexec_file_load) => {
        libc::SYS_kexec_file_load
    };
    (open_by_handle_at) => {
        libc::SYS_open_by_handle_at
    };
    (name_to_handle_at) => {
        libc::SYS_name_to_handle_at
    };
    (swapon) => {
        libc::SYS_swapon
    };
    (swapoff) => {
        libc::SYS_swapoff
    };
    (reboot) => {
        libc::SYS_reboot
    };
    (settimeofday) => {
        libc::SYS_settimeofday
    };
    (clock_settime) => {
        libc::SYS_clock_settime
    };
    (clock_adjtime) => {
        libc::SYS_clock_adjtime
    };
    (adjtimex) => {
        libc::SYS_adjtimex
    };
    (acct) => {
        libc::SYS_acct
    };
    (syslog) => {
        libc::SYS_syslog
    };
    (iopl) => {
        libc::SYS_iopl
    };
    (ioperm) => {
        libc::SYS_ioperm
    };
    (quotactl) => {
        libc::SYS_quotactl
    };
    (quotactl_fd) => {
        libc::SYS_quotactl_fd
    };
    (fanotify_init) => {
        libc::SYS_fanotify_init
    };
    (ptrace) => {
        libc::SYS_ptrace
    };
    (process_vm_readv) => {
        libc::SYS_process_vm_readv
    };
    (process_vm_writev) => {
        libc::SYS_process_vm_writev
    };
    (kcmp) => {
        libc::SYS_kcmp
    };
    (lookup_dcookie) => {
        libc::SYS_lookup_dcookie
    };
    (vhangup) => {
        libc::SYS_vhangup
    };
    (uselib) => {
        libc::SYS_uselib
    };
    (sethostname) => {
        libc::SYS_sethostname
    };
    (setdomainname) => {
        libc::SYS_setdomainname
    };
}

/// Denied outright with EPERM.
const DENIED: &[PolicyEntry] = deny! {
    mount => "mount family: no filesystem changes inside the sandbox",
    umount2 => "mount family: would expose what the sandbox root covers",
    pivot_root => "mount family",
    chroot => "escapes through a second root",
    move_mount => "new mount API",
    open_tree => "new mount API",
    fsopen => "new mount API",
    fsconfig => "new mount API",
    fsmount => "new mount API",
    fspick => "new mount API",
    mount_setattr => "new mount API (could make mounts writable)",
    unshare => "no new namespaces (CLONE_NEWUSER attack surface)",
    setns => "no joining other namespaces",
    bpf => "eBPF: large kernel attack surface",
    perf_event_open => "side channels and kernel attack surface",
    userfaultfd => "widely used to win kernel races",
    io_uring_setup => "io_uring: repeated source of kernel bugs, bypasses seccomp per op",
    io_uring_enter => "io_uring",
    io_uring_register => "io_uring",
    keyctl => "the kernel keyring is not namespaced",
    add_key => "the kernel keyring is not namespaced",
    request_key => "the kernel keyring is not namespaced",
    init_module => "kernel modules",
    finit_module => "kernel modules",
    delete_module => "kernel modules",
    kexec_load => "replaces the kernel",
    kexec_file_load => "replaces the kernel",
    open_by_handle_at => "opens files by handle, bypassing the mount root (shocker)",
    name_to_handle_at => "pairs with open_by_handle_at",
    swapon => "host swap",
    swapoff => "host swap",
    reboot => "host power",
    settimeofday => "the clock is not namespaced",
    clock_settime => "the clock is not namespaced",
    clock_adjtime => "the clock is not namespaced",
    adjtimex => "the clock is not namespaced",
    acct => "host process accounting",
    syslog => "kernel log leaks addresses",
    iopl => "raw I/O ports",
    ioperm => "raw I/O ports",
    quotactl => "filesystem quotas",
    quotactl_fd => "filesystem quotas",
    fanotify_init => "filesystem-wide monitoring",
    ptrace => "no debugging or injection into other processes",
    process_vm_readv => "cross-process memory access",
    process_vm_writev => "cross-process memory access",
    kcmp => "kernel pointer comparison, an info leak",
    lookup_dcookie => "kernel profiling interface",
    vhangup => "terminal hangup of other sessions",
    uselib => "obsolete loader interface",
    sethostname => "the hostname is set by the runtime",
    setdomainname => "the domain name is set by the runtime",
};

/// Entries that need more than the syscall number.
fn special() -> [PolicyEntry; 4] {
    [
        PolicyEntry {
            name: "clone",
            nr: libc::SYS_clone,
            args: ArgMatch::AnyBitSet {
                index: 0,
                mask: CLONE_NAMESPACE_FLAGS,
            },
            action: Action::Errno(EPERM),
            why: "fork and threads are fine; new namespaces are not",
        },
        PolicyEntry {
            name: "clone3",
            nr: libc::SYS_clone3,
            args: ArgMatch::Any,
            // Its flags live in memory the filter cannot read: ENOSYS makes libc
            // fall back to clone, whose flags are filtered above.
            action: Action::Errno(ENOSYS),
            why: "flags unreadable by seccomp; libc falls back to clone",
        },
        PolicyEntry {
            name: "ioctl(TIOCSTI)",
            nr: libc::SYS_ioctl,
            args: ArgMatch::LowEquals {
                index: 1,
                value: TIOCSTI,
            },
            action: Action::Errno(EPERM),
            why: "fakes terminal input into another session",
        },
        PolicyEntry {
            name: "ioctl(TIOCLINUX)",
            nr: libc::SYS_ioctl,
            args: ArgMatch::LowEquals {
                index: 1,
                value: TIOCLINUX,
            },
            action: Action::Errno(EPERM),
            why: "console selection can fake input",
        },
    ]
}

/// Every entry of the policy.
pub fn entries() -> Vec<PolicyEntry> {
    let mut all: Vec<PolicyEntry> = DENIED.to_vec();
    all.extend(special());
    all
}

/// The compiled BPF program.
pub fn program() -> Vec<SockFilter> {
    let rules: Vec<Rule> = entries()
        .iter()
        .map(|entry| Rule {
            nr: entry.nr as u32,
            args: entry.args,
            action: entry.action,
        })
        .collect();
    compile(&rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codebox_sys::seccomp::{
        evaluate, SeccompData, NATIVE_AUDIT_ARCH, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
    };

    fn run(nr: libc::c_long, args: [u64; 6]) -> u32 {
        let data = SeccompData {
            nr: nr as u32,
            arch: NATIVE_AUDIT_ARCH,
            args,
        };
        evaluate(&program(), &data)
    }

    const EPERM_RET: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn the_required_list_is_denied() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_io_uring_setup,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_kexec_load,
            libc::SYS_open_by_handle_at,
            libc::SYS_swapon,
            libc::SYS_reboot,
            libc::SYS_clock_settime,
            libc::SYS_settimeofday,
            libc::SYS_acct,
            libc::SYS_syslog,
            libc::SYS_iopl,
            libc::SYS_ioperm,
            libc::SYS_quotactl,
            libc::SYS_fanotify_init,
            libc::SYS_ptrace,
        ] {
            assert_eq!(run(nr, [0; 6]), EPERM_RET, "syscall {nr} not denied");
        }
    }

    #[test]
    fn clone3_is_enosys_and_clone_is_filtered_by_flags() {
        assert_eq!(
            run(libc::SYS_clone3, [0; 6]),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(
            run(libc::SYS_clone, [fork_flags, 0, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = fork_flags | flag as u64;
            assert_eq!(run(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]), EPERM_RET);
        }
    }

    #[test]
    fn what_the_agent_and_programs_need_is_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_setuid,
            libc::SYS_setgid,
            libc::SYS_setgroups,
            libc::SYS_prctl,
            libc::SYS_kill,
            libc::SYS_wait4,
            libc::SYS_pipe2,
            libc::SYS_epoll_wait,
            libc::SYS_poll,
            libc::SYS_socket,
            libc::SYS_close_range,
        ] {
            assert_eq!(run(nr, [0; 6]), SECCOMP_RET_ALLOW, "syscall {nr} denied");
        }
    }

    #[test]
    fn tiocsti_is_denied_other_ioctls_are_not() {
        assert_eq!(
            run(libc::SYS_ioctl, [0, TIOCSTI as u64, 0, 0, 0, 0]),
            EPERM_RET
        );
        let tcgets = libc::TCGETS;
        assert_eq!(
            run(libc::SYS_ioctl, [0, tcgets, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn every_entry_says_why() {
        for entry in entries() {
            assert!(!entry.why.is_empty(), "{}", entry.name);
        }
    }
}
