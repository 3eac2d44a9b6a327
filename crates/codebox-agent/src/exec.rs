//! One running exec as the agent sees it: the supervisor's pid, the pipes to read and
//! write, the deadline, and what is known so far about how it ended.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use codebox_protocol::{
    AgentMessage, ErrorCode, ExecSpec, ExitReport, RequestId, StdinMode, Stream,
};
use codebox_sys::agent::{self as sys, ChildStatus, Fork};

use crate::background::Background;
use crate::channel::Channel;
use crate::plan::{self, Mode};
use crate::status::{SetupStep, StatusRecord, RECORD_LEN};
use crate::supervisor::{self, SupervisorFds};

/// Bytes read from an output pipe per `read`.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// Stdin bytes the agent holds for one exec before it refuses more.
pub const MAX_PENDING_STDIN: usize = 16 << 20;

/// One output stream: the pipe and what was forwarded of it.
#[derive(Debug)]
pub struct OutputPipe {
    pub file: File,
    stream: Stream,
    forwarded: u64,
    truncated: bool,
}

/// The stdin pipe and the bytes not yet written into it.
#[derive(Debug)]
pub struct StdinPipe {
    pub file: File,
    pending: Vec<u8>,
    close_requested: bool,
}

#[derive(Debug)]
pub struct Exec {
    pub id: RequestId,
    pub supervisor_pid: i32,
    pub supervisor_reaped: bool,
    pub status_pipe: Option<File>,
    status_buffer: Vec<u8>,
    pub stdout: Option<OutputPipe>,
    pub stderr: Option<OutputPipe>,
    pub stdin: Option<StdinPipe>,
    pub started: bool,
    /// The main process's pid, once started.
    pub pid: Option<u32>,
    /// Set for a background process: its output goes to subscribers.
    pub background: Option<Background>,
    /// A terminal's master, for resizing.
    pub terminal: Option<File>,
    spawn_failure: Option<(SetupStep, i32)>,
    main_status: Option<ChildStatus>,
    output_limit: u64,
    started_at: Instant,
    deadline: Instant,
    timed_out: bool,
    killed: bool,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::pipe().map_err(|e| e.into_io())
}

fn nonblocking(fd: OwnedFd) -> io::Result<File> {
    sys::set_nonblocking(fd.as_fd(), true).map_err(|e| e.into_io())?;
    Ok(File::from(fd))
}

/// Forks the supervisor of a validated spec. Every pipe is created close-on-exec, and
/// the agent closes the child's ends as soon as the supervisor holds them.
pub fn spawn(spec: &ExecSpec, mode: &Mode) -> io::Result<Exec> {
    let plan = plan::build(spec, mode);
    let (stdout_reader, stdout_writer) = pipe()?;
    let (stderr_reader, stderr_writer) = pipe()?;
    let (stdin_reader, stdin_writer) = match spec.stdin {
        StdinMode::Pipe => {
            let (reader, writer) = pipe()?;
            (reader, Some(writer))
        }
        StdinMode::Null => (File::open("/dev/null")?.into(), None),
    };
    let ends = AgentEnds {
        stdout: nonblocking(stdout_reader)?,
        stderr: Some(nonblocking(stderr_reader)?),
        stdin: stdin_writer.map(nonblocking).transpose()?,
    };
    let child = ChildEnds {
        stdin: stdin_reader,
        stdout: stdout_writer,
        stderr: stderr_writer,
    };
    launch(spec, &plan, child, ends)
}

/// Forks the supervisor of a terminal's shell: its stdio is the slave of a new
/// pseudo-terminal (its controlling terminal); the agent keeps the master, reading
/// the terminal's output as `stdout` and writing its input. `cols` x `rows` is the
/// initial size. Returns the exec and a handle on the master for resizing.
pub fn spawn_terminal(
    spec: &ExecSpec,
    mode: &Mode,
    cols: u16,
    rows: u16,
) -> io::Result<(Exec, File)> {
    let mut plan = plan::build(spec, mode);
    plan.controlling_terminal = true;
    let (master, slave) = sys::open_pty().map_err(|e| e.into_io())?;
    sys::set_window_size(master.as_fd(), cols, rows).map_err(|e| e.into_io())?;
    if let Some((uid, gid)) = plan.identity {
        // The user's own terminal, as a login would leave it.
        std::os::unix::fs::fchown(&slave, Some(uid), Some(gid))?;
    }
    let resize = File::from(master.try_clone()?);
    let ends = AgentEnds {
        stdout: nonblocking(master.try_clone()?)?,
        stderr: None,
        stdin: Some(nonblocking(master)?),
    };
    let child = ChildEnds {
        stdin: slave.try_clone()?,
        stdout: slave.try_clone()?,
        stderr: slave,
    };
    Ok((launch(spec, &plan, child, ends)?, resize))
}

/// The agent's (non-blocking) ends of an exec's stdio.
struct AgentEnds {
    stdout: File,
    stderr: Option<File>,
    stdin: Option<File>,
}

/// The child's ends, handed to the supervisor.
struct ChildEnds {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Forks the supervisor. The agent's ends are non-blocking before the fork: once a
/// supervisor runs, nothing may fail without the exec being tracked.
fn launch(
    spec: &ExecSpec,
    plan: &plan::ChildPlan,
    child: ChildEnds,
    ends: AgentEnds,
) -> io::Result<Exec> {
    let (status_reader, status_writer) = pipe()?;
    let status_reader = nonblocking(status_reader)?;
    let started_at = Instant::now();
    let agent_pid = std::process::id();
    let supervisor_pid = match sys::fork_single_threaded()? {
        Fork::Child => {
            let fds = SupervisorFds {
                stdin: child.stdin,
                stdout: child.stdout,
                stderr: child.stderr,
                status: status_writer,
                channel: None,
            };
            supervisor::run(plan, fds, agent_pid)
        }
        Fork::Parent { pid } => pid,
    };
    let stdin = ends.stdin.map(|file| StdinPipe {
        file,
        pending: Vec::new(),
        close_requested: false,
    });
    let output = |file, stream| OutputPipe {
        file,
        stream,
        forwarded: 0,
        truncated: false,
    };
    Ok(Exec {
        id: spec.id,
        supervisor_pid,
        supervisor_reaped: false,
        status_pipe: Some(status_reader),
        status_buffer: Vec::with_capacity(RECORD_LEN * 2),
        stdout: Some(output(ends.stdout, Stream::Stdout)),
        stderr: ends.stderr.map(|file| output(file, Stream::Stderr)),
        stdin,
        started: false,
        pid: None,
        background: None,
        terminal: None,
        output_limit: spec.output_limit,
        spawn_failure: None,
        main_status: None,
        started_at,
        deadline: started_at + Duration::from_millis(spec.timeout_ms),
        timed_out: false,
        killed: false,
        stdout_truncated: false,
        stderr_truncated: false,
    })
}

/// Outcome of reading a pipe until it would block.
enum Drained {
    Open,
    Closed,
}

impl OutputPipe {
    /// Reads what the pipe holds (at most `max_reads` chunks); forwards bytes up to the
    /// exec's limit and drops the rest, so the writer never blocks on a full pipe.
    fn drain(
        &mut self,
        id: RequestId,
        limit: u64,
        channel: &mut Channel,
        max_reads: usize,
        mut background: Option<&mut Background>,
    ) -> Drained {
        let mut buffer = [0u8; OUTPUT_CHUNK];
        for _ in 0..max_reads {
            let read = match self.file.read(&mut buffer) {
                Ok(0) => return Drained::Closed,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Drained::Open,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Drained::Closed,
            };
            let room = limit.saturating_sub(self.forwarded);
            let keep = usize::try_from(room).unwrap_or(usize::MAX).min(read);
            if keep > 0 {
                match background.as_deref_mut() {
                    Some(background) => background.deliver(self.stream, &buffer[..keep], channel),
                    None => channel.send_data(id, self.stream, &buffer[..keep]),
                }
                self.forwarded += keep as u64;
            }
            if keep < read {
                self.truncated = true;
            }
        }
        Drained::Open
    }
}

impl Exec {
    /// Reads status records the supervisor wrote; sends `Started` when it comes.
    pub fn read_status(&mut self, channel: &mut Channel) {
        let Some(pipe) = self.status_pipe.as_mut() else {
            return;
        };
        let mut buffer = [0u8; RECORD_LEN * 4];
        let closed = loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break true,
                Ok(n) => self.status_buffer.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        while self.status_buffer.len() >= RECORD_LEN {
            let record: [u8; RECORD_LEN] = self.status_buffer[..RECORD_LEN]
                .try_into()
                .expect("RECORD_LEN bytes");
            self.status_buffer.drain(..RECORD_LEN);
            self.apply(StatusRecord::decode(&record), channel);
        }
        if closed {
            self.status_pipe = None;
        }
    }

    fn apply(&mut self, record: Option<StatusRecord>, channel: &mut Channel) {
        match record {
            Some(StatusRecord::Started { pid }) => {
                self.started = true;
                let pid = u32::try_from(pid).unwrap_or(0);
                self.pid = Some(pid);
                channel.send(&AgentMessage::Started { id: self.id, pid });
            }
            Some(StatusRecord::Finished(status)) => self.main_status = Some(status),
            Some(StatusRecord::SpawnFailed { step, errno }) => {
                self.spawn_failure = Some((step, errno));
            }
            None => crate::log("ignoring an unknown supervisor status record"),
        }
    }

    /// Output pipes are read only once `Started` is sent, so it always comes first.
    pub fn output_readable(&self) -> bool {
        self.started || self.spawn_failure.is_some() || self.status_pipe.is_none()
    }

    pub fn drain_output(&mut self, stream: Stream, channel: &mut Channel, max_reads: usize) {
        let (slot, truncated) = match stream {
            Stream::Stderr => (&mut self.stderr, &mut self.stderr_truncated),
            _ => (&mut self.stdout, &mut self.stdout_truncated),
        };
        let Some(pipe) = slot.as_mut() else {
            return;
        };
        let background = self.background.as_mut();
        let drained = pipe.drain(self.id, self.output_limit, channel, max_reads, background);
        *truncated |= pipe.truncated;
        if matches!(drained, Drained::Closed) {
            *slot = None;
        }
    }

    /// Queues stdin bytes from the host. Bytes for a stdin that is already closed (the
    /// program closed it, or the host did) are dropped: nobody can read them. `false`
    /// only when the pending buffer would overflow.
    pub fn push_stdin(&mut self, data: &[u8]) -> bool {
        let Some(stdin) = self.stdin.as_mut().filter(|stdin| !stdin.close_requested) else {
            return true;
        };
        if stdin.pending.len() + data.len() > MAX_PENDING_STDIN {
            return false;
        }
        stdin.pending.extend_from_slice(data);
        self.write_stdin();
        true
    }

    /// Closes stdin once the pending bytes are written (a no-op if already closed).
    pub fn close_stdin(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.close_requested = true;
            self.write_stdin();
        }
    }

    pub fn stdin_wants_write(&self) -> bool {
        self.stdin.as_ref().is_some_and(|s| !s.pending.is_empty())
    }

    /// Writes pending stdin; closes the pipe when asked and everything is written, or
    /// when the reader is gone.
    pub fn write_stdin(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        while !stdin.pending.is_empty() {
            match stdin.file.write(&stdin.pending) {
                Ok(n) => {
                    stdin.pending.drain(..n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE: the program closed its stdin; nothing more can be delivered.
                Err(_) => {
                    self.stdin = None;
                    return;
                }
            }
        }
        if stdin.close_requested && stdin.pending.is_empty() {
            self.stdin = None;
        }
    }

    /// The deadline still to enforce: none once the tree is being killed or is gone
    /// (a passed deadline would otherwise make the event loop spin).
    pub fn pending_deadline(&self) -> Option<Instant> {
        let ending = self.timed_out || self.killed || self.supervisor_reaped;
        (!ending).then_some(self.deadline)
    }

    /// Asks the supervisor to kill the whole tree (timeout or cancel). Never signals a
    /// reaped supervisor: its pid may belong to someone else by now.
    pub fn kill(&mut self, timed_out: bool) {
        if self.timed_out || self.killed || self.supervisor_reaped {
            return;
        }
        if timed_out {
            self.timed_out = true;
        } else {
            self.killed = true;
        }
        let _ = sys::send_signal(self.supervisor_pid, libc::SIGUSR1);
    }

    /// Done once the supervisor is reaped, its status read, and both outputs closed.
    /// If the supervisor died without its final record (it should not), the outputs are
    /// read once more and then dropped, so a leaked writer cannot hold the exec open.
    pub fn try_finish(&mut self, channel: &mut Channel) -> bool {
        if !self.supervisor_reaped || self.status_pipe.is_some() {
            return false;
        }
        if self.main_status.is_none() && self.spawn_failure.is_none() {
            self.drain_output(Stream::Stdout, channel, 4);
            self.drain_output(Stream::Stderr, channel, 4);
            self.stdout = None;
            self.stderr = None;
        }
        if self.stdout.is_some() || self.stderr.is_some() {
            return false;
        }
        match (self.final_message(), &self.background) {
            (AgentMessage::Exited(report), Some(background)) => background.finish(&report, channel),
            (message, _) => channel.send(&message),
        }
        true
    }

    /// Whether the main process may still be signalled: started, and its end not
    /// reported by the supervisor (which reaps it; after that its pid may be reused).
    pub fn signallable(&self) -> bool {
        self.started && self.main_status.is_none() && !self.supervisor_reaped
    }

    pub fn stdin_open(&self) -> bool {
        self.stdin
            .as_ref()
            .is_some_and(|stdin| !stdin.close_requested)
    }

    fn final_message(&self) -> AgentMessage {
        if let Some((step, errno)) = self.spawn_failure {
            return spawn_error(self.id, step, errno);
        }
        let (exit_code, signal) = match self.main_status {
            Some(ChildStatus::Exited(code)) => (Some(code), None),
            Some(ChildStatus::Signaled(signal)) => (None, Some(signal)),
            None => (None, Some(libc::SIGKILL)),
        };
        AgentMessage::Exited(ExitReport {
            id: self.id,
            exit_code,
            signal,
            timed_out: self.timed_out,
            killed: self.killed,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            duration_us: u64::try_from(self.started_at.elapsed().as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// The error for a program that could not start: a missing program or directory is
/// the request's fault; anything else (no process slot left) is a spawn failure.
fn spawn_error(id: RequestId, step: SetupStep, errno: i32) -> AgentMessage {
    let cause = io::Error::from_raw_os_error(errno);
    let code = match (step, errno) {
        (SetupStep::Execute | SetupStep::WorkingDirectory, _) => ErrorCode::InvalidRequest,
        _ => ErrorCode::SpawnFailed,
    };
    AgentMessage::Error {
        id: Some(id),
        code,
        message: format!("{} failed: {cause}", step.describe()),
    }
}
