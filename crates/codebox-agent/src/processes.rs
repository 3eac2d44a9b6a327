//! Background processes: execs that outlive their request, named by pid, whose
//! output goes to subscribers (see `codebox_protocol`'s `process` module); and
//! terminals, execs of a login shell on a pseudo-terminal.

use std::os::fd::AsFd;

use codebox_protocol::{
    validate_signal, validate_stdin_len, validate_terminal_size, AgentMessage, Command, ErrorCode,
    ProcessSpec, PtySpec, RequestId,
};
use codebox_sys::agent as sys;

use crate::background::Background;
use crate::event_loop::{Agent, MAX_EXECS};
use crate::exec::{self, Exec};

/// `ProcessStdin` writes whose bytes are still arriving (each up to 1 MiB).
const MAX_STDIN_WRITES: usize = 16;

/// Stdin bytes of one `ProcessStdin` on their way in.
#[derive(Debug)]
pub struct StdinWrite {
    pid: u32,
    len: usize,
    data: Vec<u8>,
}

/// The signal number of an allowlisted name.
fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "SIGTERM" => libc::SIGTERM,
        "SIGKILL" => libc::SIGKILL,
        "SIGINT" => libc::SIGINT,
        "SIGHUP" => libc::SIGHUP,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGUSR1" => libc::SIGUSR1,
        "SIGUSR2" => libc::SIGUSR2,
        "SIGSTOP" => libc::SIGSTOP,
        "SIGCONT" => libc::SIGCONT,
        _ => return None,
    })
}

fn command_line(command: &Command) -> Vec<String> {
    match command {
        Command::Argv(argv) => argv.clone(),
        Command::Shell(script) => vec!["bash".into(), "-c".into(), script.clone()],
    }
}

impl Agent {
    pub(crate) fn start_process(&mut self, spec: ProcessSpec) {
        let id = Some(spec.id);
        if let Err(invalid) = spec.validate() {
            return self.error(id, ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.execs.contains_key(&spec.id) {
            return self.error(id, ErrorCode::DuplicateId, "the id is in use".into());
        }
        if self.execs.len() >= MAX_EXECS {
            let text = format!("at most {MAX_EXECS} execs and processes run at once");
            return self.error(id, ErrorCode::TooManyOperations, text);
        }
        let mut exec_spec = spec.to_exec();
        // Streamed to subscribers or dropped from the bounded buffer: no cap.
        exec_spec.output_limit = u64::MAX;
        match exec::spawn(&exec_spec, &self.mode) {
            Ok(mut exec) => {
                exec.background = Some(Background::new(spec.tag, command_line(&spec.command)));
                self.execs.insert(spec.id, exec);
            }
            Err(error) => self.error(id, ErrorCode::SpawnFailed, format!("spawn failed: {error}")),
        }
    }

    /// The key of the live background process of `pid`, or an `UnknownProcess`
    /// error sent for `id`.
    fn process_key(&mut self, id: RequestId, pid: u32) -> Option<RequestId> {
        let found = self.execs.iter().find(|(_, exec)| {
            exec.background.is_some() && exec.pid == Some(pid) && exec.signallable()
        });
        if let Some((key, _)) = found {
            return Some(*key);
        }
        self.error(
            Some(id),
            ErrorCode::UnknownProcess,
            format!("no process {pid}"),
        );
        None
    }

    fn process(&mut self, id: RequestId, pid: u32) -> Option<&mut Exec> {
        let key = self.process_key(id, pid)?;
        self.execs.get_mut(&key)
    }

    pub(crate) fn list_processes(&mut self, id: RequestId) {
        let mut processes: Vec<_> = self
            .execs
            .values()
            .filter(|exec| exec.signallable())
            .filter_map(|exec| Some(exec.background.as_ref()?.info(exec.pid?, exec.stdin_open())))
            .collect();
        processes.sort_by_key(|process| process.pid);
        self.channel
            .send(&AgentMessage::Processes { id, processes });
    }

    pub(crate) fn signal_process(&mut self, id: RequestId, pid: u32, signal: &str) {
        let number = validate_signal(signal)
            .ok()
            .and_then(|()| signal_number(signal));
        let Some(number) = number else {
            let text = format!(
                "signal {:?} is not allowed",
                signal.chars().take(32).collect::<String>()
            );
            return self.error(Some(id), ErrorCode::InvalidRequest, text);
        };
        if self.process(id, pid).is_none() {
            return;
        }
        // The main process leads its own group (setsid): the signal reaches the
        // group, as a terminal's would. It is not reaped yet (checked above).
        let group = i32::try_from(pid).map_or(0, |pid| -pid);
        match sys::send_signal(group, number) {
            Ok(()) => self.channel.send(&AgentMessage::Ack { id }),
            Err(errno) => {
                let text = format!("signalling {pid} failed: {errno}");
                self.error(Some(id), ErrorCode::UnknownProcess, text);
            }
        }
    }

    pub(crate) fn subscribe_process(&mut self, id: RequestId, pid: u32) {
        let Some(key) = self.process_key(id, pid) else {
            return;
        };
        let exec = self.execs.get_mut(&key).expect("just found");
        let background = exec.background.as_mut().expect("a background process");
        if !background.subscribe(id, &mut self.channel) {
            let text = format!("at most {} subscribers", crate::background::MAX_SUBSCRIBERS);
            self.error(Some(id), ErrorCode::TooManyOperations, text);
        }
    }

    /// Detaches a subscription; whether `id` was one.
    pub(crate) fn unsubscribe(&mut self, id: RequestId) -> bool {
        self.execs
            .values_mut()
            .filter_map(|exec| exec.background.as_mut())
            .any(|background| background.unsubscribe(id))
    }

    pub(crate) fn close_process_stdin(&mut self, id: RequestId, pid: u32) {
        if let Some(exec) = self.process(id, pid) {
            exec.close_stdin();
            self.channel.send(&AgentMessage::Ack { id });
        }
    }

    /// `ProcessStdin`: its bytes follow as stdin data of the same id.
    pub(crate) fn begin_process_stdin(&mut self, id: RequestId, pid: u32, len: u64) {
        if let Err(invalid) = validate_stdin_len(len) {
            return self.error(Some(id), ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.stdin_writes.contains_key(&id) {
            return self.error(Some(id), ErrorCode::DuplicateId, "the id is in use".into());
        }
        if self.stdin_writes.len() >= MAX_STDIN_WRITES {
            let text = format!("at most {MAX_STDIN_WRITES} stdin writes may be arriving");
            return self.error(Some(id), ErrorCode::TooManyOperations, text);
        }
        let len = usize::try_from(len).expect("at most MAX_STDIN_WRITE");
        let write = StdinWrite {
            pid,
            len,
            data: Vec::with_capacity(len),
        };
        self.stdin_writes.insert(id, write);
        self.receive_process_stdin(id, &[]);
    }

    /// Stdin bytes of a `ProcessStdin`; delivered once all arrived. `false` if `id`
    /// is no such write.
    pub(crate) fn receive_process_stdin(&mut self, id: RequestId, data: &[u8]) -> bool {
        let Some(write) = self.stdin_writes.get_mut(&id) else {
            return false;
        };
        if write.data.len() + data.len() > write.len {
            self.stdin_writes.remove(&id);
            let text = "more stdin than len announced".to_owned();
            self.error(Some(id), ErrorCode::InvalidRequest, text);
            return true;
        }
        write.data.extend_from_slice(data);
        if write.data.len() < write.len {
            return true;
        }
        let StdinWrite { pid, data, .. } = self.stdin_writes.remove(&id).expect("present");
        let Some(exec) = self.process(id, pid) else {
            return true;
        };
        if !exec.stdin_open() {
            let text = format!("the stdin of {pid} is closed");
            self.error(Some(id), ErrorCode::InvalidRequest, text);
        } else if exec.push_stdin(&data) {
            self.channel.send(&AgentMessage::Ack { id });
        } else {
            let text = format!(
                "more than {} bytes of stdin pending",
                exec::MAX_PENDING_STDIN
            );
            self.error(Some(id), ErrorCode::TooManyOperations, text);
        }
        true
    }

    /// A login shell on a new pseudo-terminal.
    pub(crate) fn open_pty(&mut self, spec: &PtySpec) {
        let id = Some(spec.id);
        if let Err(invalid) = spec.validate() {
            return self.error(id, ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.execs.contains_key(&spec.id) {
            return self.error(id, ErrorCode::DuplicateId, "the id is in use".into());
        }
        if self.execs.len() >= MAX_EXECS {
            let text = format!("at most {MAX_EXECS} execs and processes run at once");
            return self.error(id, ErrorCode::TooManyOperations, text);
        }
        let mut exec_spec = spec.to_exec();
        exec_spec.output_limit = u64::MAX;
        match exec::spawn_terminal(&exec_spec, &self.mode, spec.cols, spec.rows) {
            Ok((mut exec, master)) => {
                exec.terminal = Some(master);
                self.execs.insert(spec.id, exec);
            }
            Err(error) => self.error(id, ErrorCode::SpawnFailed, format!("spawn failed: {error}")),
        }
    }

    pub(crate) fn resize_pty(&mut self, id: RequestId, cols: u16, rows: u16) {
        if let Err(invalid) = validate_terminal_size(cols, rows) {
            return self.error(Some(id), ErrorCode::InvalidRequest, invalid.to_string());
        }
        let Some(terminal) = self.execs.get(&id).and_then(|exec| exec.terminal.as_ref()) else {
            return;
        };
        if let Err(errno) = sys::set_window_size(terminal.as_fd(), cols, rows) {
            crate::log(&format!("resizing terminal {id} failed: {errno}"));
        }
    }
}
