//! A context's runner process: how each language's interpreter is started, the
//! descriptors the agent keeps to it, and the runner's line protocol.
//!
//! The runner runs under a supervisor exactly like an exec (uid 1000, no capability,
//! `no_new_privs`, allowlisted env, a session of its own) and has one extra descriptor,
//! fd 3: a socket to the agent. Requests go down it as NUL-terminated fields
//! (`x`, seq, env pair count, name, value, ..., code); events come up as JSON lines
//! ([`RunnerEvent`]). The runner is the sandbox user's own process: everything it sends
//! is bounded and checked before use. The bash runner also reads one fixed command line
//! per cell from its stdin (see `runners/bash.sh`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use codebox_protocol::{Language, MAX_RESULT_BYTES};
use codebox_sys::agent::{self as sys, Fork};
use serde::Deserialize;

use crate::plan::{self, Mode};
use crate::status::{StatusRecord, RECORD_LEN};
use crate::supervisor::{self, SupervisorFds};

const PYTHON_RUNNER: &str = include_str!("../runners/python.py");
const NODE_RUNNER: &str = include_str!("../runners/node.js");
const BASH_RUNNER: &str = include_str!("../runners/bash.sh");
/// What the bash runner reads from stdin for each cell (see `runners/bash.sh`).
const BASH_CELL_LINE: &[u8] = b"__codebox_read && eval \"$__codebox_code\" </dev/null 3>&-\n";
/// Longest event line accepted from a runner: a full result plus its JSON around it.
pub const MAX_EVENT_LINE: usize = MAX_RESULT_BYTES + (1 << 20);
/// Bytes read per `read` from a runner's channel.
const READ_CHUNK: usize = 64 * 1024;

/// One event line of a runner.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RunnerEvent {
    Ready,
    Start {
        seq: u64,
    },
    Result {
        #[serde(default)]
        main: bool,
        data: BTreeMap<String, String>,
        #[serde(default)]
        truncated: bool,
    },
    Error {
        name: String,
        value: String,
        traceback: String,
    },
    Done {
        seq: u64,
    },
}

/// What a line turned into.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Event(RunnerEvent),
    /// Not a known event (ignored, logged).
    Garbage,
    /// A line over [`MAX_EVENT_LINE`] was dropped (`bytes` long).
    Oversized {
        bytes: usize,
    },
}

/// A live runner process, as the agent holds it.
#[derive(Debug)]
pub struct Runner {
    pub supervisor_pid: i32,
    pub supervisor_reaped: bool,
    pub status: Option<File>,
    status_buffer: Vec<u8>,
    /// The runner's pid once the supervisor reported it started.
    pub pid: Option<i32>,
    pub spawn_failed: bool,
    pub channel: Option<File>,
    incoming: Vec<u8>,
    /// Bytes of an oversized line dropped so far (until its newline).
    dropping: Option<usize>,
    outgoing: Vec<u8>,
    pub stdin: Option<File>,
    stdin_pending: Vec<u8>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub ready: bool,
    /// The runner said `ready` (it may still wait for its pid to be known).
    pub ready_seen: bool,
    pub kill_sent: bool,
    pub started_at: Instant,
    language: Language,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::pipe().map_err(|e| e.into_io())
}

fn nonblocking(fd: OwnedFd) -> io::Result<File> {
    sys::set_nonblocking(fd.as_fd(), true).map_err(|e| e.into_io())?;
    Ok(File::from(fd))
}

/// The interpreter a language's runner needs.
pub fn program(language: Language) -> &'static str {
    match language {
        Language::Python => "python3",
        Language::Javascript | Language::Typescript => "node",
        Language::Bash => "bash",
    }
}

/// The interpreter command line of a language.
fn command(language: Language) -> Vec<String> {
    let owned = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect();
    match language {
        Language::Python => owned(&["python3", "-c", PYTHON_RUNNER]),
        Language::Javascript | Language::Typescript => {
            owned(&["node", "--expose-internals", "-e", NODE_RUNNER])
        }
        Language::Bash => owned(&["bash", "--norc", "--noprofile", "--noediting", "-i"]),
    }
}

/// Starts a runner for `language` with the context's env and cwd (both validated).
pub fn spawn(
    language: Language,
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    mode: &Mode,
) -> io::Result<Runner> {
    let max_result = MAX_RESULT_BYTES.to_string();
    let extra = [
        ("CODEBOX_RUNNER_FD", "3"),
        ("CODEBOX_RUNNER_LANGUAGE", language.as_str()),
        ("CODEBOX_MAX_RESULT", max_result.as_str()),
        ("MPLBACKEND", "Agg"),
        ("PS1", ""),
    ];
    let plan = plan::for_runner(command(language), env, &extra, cwd, mode);
    let (stdout_reader, stdout_writer) = pipe()?;
    let (stderr_reader, stderr_writer) = pipe()?;
    let (status_reader, status_writer) = pipe()?;
    let (stdin_reader, stdin_writer) = match language {
        Language::Bash => {
            let (reader, writer) = pipe()?;
            (reader, Some(writer))
        }
        _ => (File::open("/dev/null")?.into(), None),
    };
    // std creates both ends close-on-exec; the supervisor moves the runner's end to 3.
    let (agent_end, runner_end) = UnixStream::pair()?;
    let channel = nonblocking(agent_end.into())?;
    let stdout = nonblocking(stdout_reader)?;
    let stderr = nonblocking(stderr_reader)?;
    let status = nonblocking(status_reader)?;
    let stdin = stdin_writer.map(nonblocking).transpose()?;
    let agent_pid = std::process::id();
    let supervisor_pid = match sys::fork_single_threaded()? {
        Fork::Child => {
            let fds = SupervisorFds {
                stdin: stdin_reader,
                stdout: stdout_writer,
                stderr: stderr_writer,
                status: status_writer,
                channel: Some(runner_end.into()),
            };
            supervisor::run(&plan, fds, agent_pid)
        }
        Fork::Parent { pid } => pid,
    };
    let stdin_pending = match language {
        Language::Bash => BASH_RUNNER.as_bytes().to_vec(),
        _ => Vec::new(),
    };
    let mut runner = Runner {
        supervisor_pid,
        supervisor_reaped: false,
        status: Some(status),
        status_buffer: Vec::new(),
        pid: None,
        spawn_failed: false,
        channel: Some(channel),
        incoming: Vec::new(),
        dropping: None,
        outgoing: Vec::new(),
        stdin,
        stdin_pending,
        stdout: Some(stdout),
        stderr: Some(stderr),
        ready: false,
        ready_seen: false,
        kill_sent: false,
        started_at: Instant::now(),
        language,
    };
    runner.write_pending();
    Ok(runner)
}

impl Runner {
    /// Queues one cell: the request on the channel, and for bash its command line.
    pub fn send_cell(&mut self, seq: u64, env: &BTreeMap<String, String>, code: &str) {
        let mut push = |field: &[u8]| {
            self.outgoing.extend_from_slice(field);
            self.outgoing.push(0);
        };
        push(b"x");
        push(seq.to_string().as_bytes());
        push(env.len().to_string().as_bytes());
        for (name, value) in env {
            push(name.as_bytes());
            push(value.as_bytes());
        }
        push(code.as_bytes());
        if self.language == Language::Bash {
            self.stdin_pending.extend_from_slice(BASH_CELL_LINE);
        }
        self.write_pending();
    }

    pub fn wants_channel_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn wants_stdin_write(&self) -> bool {
        !self.stdin_pending.is_empty()
    }

    /// Writes what the channel and stdin take now. A broken pipe means the runner is
    /// dying: its end is reported through the supervisor.
    pub fn write_pending(&mut self) {
        if let Some(channel) = self.channel.as_mut() {
            write_some(channel, &mut self.outgoing);
        }
        if let Some(stdin) = self.stdin.as_mut() {
            write_some(stdin, &mut self.stdin_pending);
        }
    }

    /// Reads the channel; returns the complete lines. `closed` is set at end of file.
    pub fn read_events(&mut self, max_reads: usize) -> (Vec<Line>, bool) {
        let mut lines = Vec::new();
        let Some(mut channel) = self.channel.take() else {
            return (lines, true);
        };
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut closed = false;
        for _ in 0..max_reads {
            match channel.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.take_bytes(&buffer[..n], &mut lines),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if !closed {
            self.channel = Some(channel);
        }
        (lines, closed)
    }

    fn take_bytes(&mut self, mut bytes: &[u8], lines: &mut Vec<Line>) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&bytes[..end], &bytes[end + 1..]);
            bytes = rest;
            if let Some(dropped) = self.dropping.take() {
                lines.push(Line::Oversized {
                    bytes: dropped + head.len(),
                });
                continue;
            }
            self.incoming.extend_from_slice(head);
            lines.push(parse_line(&self.incoming));
            self.incoming.clear();
        }
        match self.dropping.as_mut() {
            Some(dropped) => *dropped += bytes.len(),
            None if self.incoming.len() + bytes.len() > MAX_EVENT_LINE => {
                self.dropping = Some(self.incoming.len() + bytes.len());
                self.incoming = Vec::new();
            }
            None => self.incoming.extend_from_slice(bytes),
        }
    }

    /// Reads the supervisor's status records: the runner's pid, a failed start.
    pub fn read_status(&mut self) {
        let Some(pipe) = self.status.as_mut() else {
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
            match StatusRecord::decode(&record) {
                Some(StatusRecord::Started { pid }) => self.pid = Some(pid),
                Some(StatusRecord::SpawnFailed { .. }) => self.spawn_failed = true,
                Some(StatusRecord::Finished(_)) | None => {}
            }
        }
        if closed {
            self.status = None;
        }
    }

    /// Gone: the supervisor is reaped and its status pipe is closed.
    pub fn is_gone(&self) -> bool {
        self.supervisor_reaped && self.status.is_none()
    }

    /// Asks the supervisor to send SIGINT to the runner's process group.
    pub fn interrupt(&self) {
        if !self.supervisor_reaped && !self.kill_sent {
            let _ = sys::send_signal(self.supervisor_pid, libc::SIGUSR2);
        }
    }

    /// Asks the supervisor to kill the runner's whole tree. Never signals a reaped
    /// supervisor: its pid may belong to someone else by now.
    pub fn kill(&mut self) {
        if !self.supervisor_reaped && !self.kill_sent {
            self.kill_sent = true;
            let _ = sys::send_signal(self.supervisor_pid, libc::SIGUSR1);
        }
    }
}

fn write_some(file: &mut File, pending: &mut Vec<u8>) {
    let mut written = 0;
    while written < pending.len() {
        match file.write(&pending[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: later; anything else: the runner is going away.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                pending.clear();
                return;
            }
        }
    }
    pending.drain(..written);
}

fn parse_line(line: &[u8]) -> Line {
    match serde_json::from_slice::<RunnerEvent>(line) {
        Ok(event) => Line::Event(event),
        Err(_) => Line::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner_for_lines() -> Runner {
        Runner {
            supervisor_pid: 0,
            supervisor_reaped: true,
            status: None,
            status_buffer: Vec::new(),
            pid: None,
            spawn_failed: false,
            channel: None,
            incoming: Vec::new(),
            dropping: None,
            outgoing: Vec::new(),
            stdin: None,
            stdin_pending: Vec::new(),
            stdout: None,
            stderr: None,
            ready: false,
            ready_seen: false,
            kill_sent: false,
            started_at: Instant::now(),
            language: Language::Python,
        }
    }

    #[test]
    fn lines_are_split_and_parsed_across_reads() {
        let mut runner = runner_for_lines();
        let mut lines = Vec::new();
        runner.take_bytes(br#"{"t":"ready"}"#, &mut lines);
        assert!(lines.is_empty());
        runner.take_bytes(
            b"\n{\"t\":\"start\",\"seq\":4}\nnot json\n{\"t\":\"do",
            &mut lines,
        );
        assert_eq!(
            lines,
            vec![
                Line::Event(RunnerEvent::Ready),
                Line::Event(RunnerEvent::Start { seq: 4 }),
                Line::Garbage
            ]
        );
        lines.clear();
        runner.take_bytes(b"ne\",\"seq\":4}\n", &mut lines);
        assert_eq!(lines, vec![Line::Event(RunnerEvent::Done { seq: 4 })]);
    }

    #[test]
    fn an_oversized_line_is_dropped_without_being_buffered() {
        let mut runner = runner_for_lines();
        let mut lines = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            runner.take_bytes(&chunk, &mut lines);
        }
        assert!(runner.incoming.len() <= MAX_EVENT_LINE);
        runner.take_bytes(b"tail\n{\"t\":\"ready\"}\n", &mut lines);
        assert_eq!(
            lines,
            vec![
                Line::Oversized {
                    bytes: (10 << 20) + 4
                },
                Line::Event(RunnerEvent::Ready)
            ]
        );
    }

    #[test]
    fn cells_are_nul_framed() {
        let mut runner = runner_for_lines();
        runner.language = Language::Bash;
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        runner.send_cell(7, &env, "echo hi");
        assert_eq!(runner.outgoing, b"x\x007\x001\x00A\x001\x00echo hi\x00");
        assert_eq!(runner.stdin_pending, BASH_CELL_LINE);
    }
}
