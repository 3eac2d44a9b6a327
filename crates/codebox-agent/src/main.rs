//! `codebox-agent`: the process that runs inside every sandbox as its PID 1 and runs
//! commands for the host over a private channel (the protocol of `codebox-protocol`).
//!
//! It owns process creation inside the sandbox: each exec gets a root supervisor that
//! is the subreaper of the exec's whole tree and a user process that runs as uid/gid
//! 1000 with no capability, `no_new_privs`, a scrubbed environment and a session of its
//! own. It must not touch anything outside its sandbox and trusts nothing but the host
//! channel (its neighbours, the user's processes, are hostile). It is single-threaded,
//! uses no async runtime, and is linked statically (`scripts/build-agent`).
//!
//! # Contexts (stateful code execution)
//! A context is a long-lived language runner, started like an exec's program (same
//! jail, under a supervisor) with one more descriptor: fd 3, a socket to the agent.
//! The runners are scripts embedded in this binary (`runners/python.py`, `node.js`,
//! `bash.sh`), passed on the interpreter's command line (bash reads its set-up from
//! stdin). Requests go to a runner as NUL-terminated fields, events come back as JSON
//! lines (`runner.rs`); the user's stdout/stderr stay plain pipes. `context.rs` holds
//! the queue and the state machine: interrupt and timeout are SIGINT to the runner's
//! process group (through its supervisor, SIGUSR2), a kill and a fresh runner after a
//! 2 s grace, and a fresh runner after a crash.
//!
//! # Files, background processes, terminals, watches (protocol version 3)
//! * Every file operation is done by a worker forked per operation (`file_op.rs`,
//!   `file_worker.rs`) that drops to uid/gid 1000 with no capability, `no_new_privs`
//!   and not dumpable, then resolves paths with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)` in the file root (`paths.rs`): `/` in a sandbox, whose
//!   mount namespace is the real confinement; the workspace in test mode. Reads refuse
//!   FIFOs, sockets and devices (opened `O_NONBLOCK`, then `fstat`); writes go to a
//!   temporary file renamed over the target, removed on any failure or cancel. The
//!   agent relays only frames that answer the worker's own operation.
//! * A background process is an exec that outlives its request (`processes.rs`,
//!   `background.rs`): output to subscribers or into a 1 MiB drop-oldest buffer.
//! * A terminal is an exec of `bash -l` whose stdio is a new pseudo-terminal's slave
//!   (its controlling terminal); the agent keeps the master.
//! * A watch is a long-lived file worker reading inotify (`watch.rs`).
//!
//! # Start-up contract
//! * `CODEBOX_AGENT_FD`: number of the inherited channel descriptor (a connected stream
//!   socket; the runtime passes 3). The agent marks it close-on-exec at once, and every
//!   supervisor closes it, so no user process can ever hold it.
//! * `CODEBOX_AGENT_TEST_MODE=1`: test mode, for tests on the host without a jail: user
//!   processes run as the agent's own user in its working directory. Guard: test mode
//!   is refused when the agent is PID 1, which it always is inside a sandbox (the
//!   runtime starts it as the init of a new PID namespace), so a stray variable can
//!   never turn privilege dropping off in production; the agent exits instead.
//!
//! Exit status: 0 when the host closed the channel, 1 on a channel failure or a refused
//! handshake, 2 on a bad start-up environment.

use std::os::fd::AsFd;

use codebox_sys::agent as sys;

mod background;
mod channel;
mod context;
mod event_loop;
mod exec;
mod file_op;
mod file_worker;
mod paths;
mod plan;
mod processes;
mod runner;
mod status;
mod supervisor;
mod watch;

use channel::Channel;
use event_loop::{Agent, Stop};
use plan::Mode;

const FD_VARIABLE: &str = "CODEBOX_AGENT_FD";
const TEST_MODE_VARIABLE: &str = "CODEBOX_AGENT_TEST_MODE";

/// Diagnostics go to the agent's stderr (the runtime's log), never to the channel.
pub(crate) fn log(message: &str) {
    eprintln!("codebox-agent: {message}");
}

/// The calling process's children, from `/proc/self/task/<pid>/children` (the callers
/// are single-threaded, so the main thread's list is the whole list). Falls back to
/// scanning `/proc/*/stat` on kernels without `CONFIG_PROC_CHILDREN`.
pub(crate) fn children_of_self() -> Vec<i32> {
    let me = std::process::id();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{me}/children")) {
        return text
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

/// The most a process can volunteer for the OOM killer (raising needs no privilege).
const USER_OOM_SCORE_ADJ: &[u8] = b"1000";

/// Marks the calling process (a user process or file worker about to drop root) as the
/// OOM killer's first choice, so a memory-hungry sandbox loses its user code and never
/// its agent (which the host shields with a negative score that children inherit).
pub(crate) fn prefer_for_oom_kill() -> Result<(), codebox_sys::Errno> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/oom_score_adj")
        .map_err(|e| codebox_sys::Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    file.write_all(USER_OOM_SCORE_ADJ)
        .map_err(|e| codebox_sys::Errno(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let code = match start() {
        Ok(agent) => serve(agent),
        Err(message) => {
            log(&message);
            2
        }
    };
    std::process::exit(code);
}

fn serve(mut agent: Agent) -> i32 {
    match agent.run() {
        Stop::HostClosed => 0,
        Stop::Refused(reason) => {
            log(&format!("the host refused the handshake: {reason}"));
            1
        }
        Stop::Failed(error) => {
            log(&format!("channel failed: {error}"));
            1
        }
    }
}

fn start() -> Result<Agent, String> {
    let mode = mode()?;
    // Supervisors put the exec's pipes on 0-3: none of them may start there.
    sys::ensure_standard_descriptors().map_err(|e| format!("standard descriptors: {e}"))?;
    let raw = std::env::var(FD_VARIABLE)
        .ok()
        .and_then(|value| value.parse::<i32>().ok())
        .ok_or_else(|| format!("{FD_VARIABLE} must name the channel descriptor"))?;
    let socket = sys::take_inherited_fd(raw).map_err(|e| format!("{FD_VARIABLE}={raw}: {e}"))?;
    sys::set_cloexec(socket.as_fd(), true).map_err(|e| format!("channel cloexec: {e}"))?;
    sys::set_nonblocking(socket.as_fd(), true).map_err(|e| format!("channel mode: {e}"))?;
    // SIGCHLD is read from a signalfd; SIGUSR1 is the supervisors' "kill your tree" and
    // must stay blocked in them from the first instruction (they inherit this mask).
    // SIGUSR2 is a context supervisor's "interrupt your runner", blocked likewise.
    let blocked = [libc::SIGCHLD, libc::SIGUSR1, libc::SIGUSR2];
    sys::block_signals(&blocked).map_err(|e| format!("signals: {e}"))?;
    let signals = sys::signalfd(&[libc::SIGCHLD]).map_err(|e| format!("signalfd: {e}"))?;
    Ok(Agent::new(mode, Channel::new(socket), signals))
}

fn mode() -> Result<Mode, String> {
    let test = std::env::var_os(TEST_MODE_VARIABLE).is_some_and(|value| value == "1");
    if !test {
        return Ok(Mode::Sandbox);
    }
    if std::process::id() == 1 {
        return Err(format!(
            "{TEST_MODE_VARIABLE} is refused for PID 1 (a sandbox)"
        ));
    }
    let home = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
    Ok(Mode::Test { home })
}
