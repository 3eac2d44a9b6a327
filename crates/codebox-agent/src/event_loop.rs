//! The agent's single-threaded event loop: one `poll` over the host channel, the
//! SIGCHLD signalfd, every exec's pipes (background processes and terminals are
//! execs too), contexts' runners and file workers' sockets, with deadlines as the
//! poll timeout.
//!
//! Single-threaded on purpose: forking is then always sound, and there is exactly one
//! reaper (`waitpid(-1)` here, dispatching statuses by pid), so no per-child wait can
//! race it. Orphans re-parented to the agent (as PID 1) are reaped and forgotten.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use codebox_protocol::{
    decode_frame, AgentMessage, ContextSpec, DecodeError, ErrorCode, ExecSpec, ExecuteSpec, Frame,
    HostMessage, RequestId, Stream, PROTOCOL_VERSION,
};
use codebox_sys::agent::{self as sys, ChildStatus};
use codebox_sys::Errno;

use crate::channel::Channel;
use crate::context::{Context, Execution};
use crate::exec::{self, Exec};
use crate::file_op::FileOp;
use crate::paths::FileRoot;
use crate::plan::Mode;
use crate::processes::StdinWrite;

/// While more than this is queued for the host, user output is not read (the pipes
/// fill and the programs block): the agent's memory stays bounded when the host reads
/// slowly, and timers, kills and reaping keep working meanwhile.
const OUTPUT_HIGH_WATER: usize = 1 << 20;
/// Execs running at once; the sandbox's pids limit is the real bound.
pub(crate) const MAX_EXECS: usize = 256;
/// Output reads per pipe per loop turn, for fairness between execs.
const READS_PER_TURN: usize = 4;
/// Contexts at once (each is a live interpreter).
const MAX_CONTEXTS: usize = 32;
/// Executions whose code is still arriving.
const MAX_RECEIVING: usize = 64;
/// File operations at once (each is a worker process).
pub(crate) const MAX_FILE_OPS: usize = 64;

/// The part of a context a pollfd entry watches.
#[derive(Debug, Clone, Copy)]
enum Part {
    Status,
    Channel,
    Output(Stream),
    Stdin,
}

/// An execution whose code is still arriving in data frames.
#[derive(Debug)]
struct Receiving {
    spec: ExecuteSpec,
    code: Vec<u8>,
}

/// What a pollfd entry belongs to.
#[derive(Debug, Clone, Copy)]
enum Source {
    Channel,
    Signals,
    Status(RequestId),
    Output(RequestId, Stream),
    Stdin(RequestId),
    /// A context, by index into `Agent::contexts` (stable within a turn).
    Context(usize, Part),
    /// A file operation's worker socket.
    File(RequestId),
}

#[derive(Debug)]
pub struct Agent {
    pub(crate) mode: Mode,
    pub(crate) channel: Channel,
    signals: OwnedFd,
    pub(crate) execs: HashMap<RequestId, Exec>,
    pub(crate) stdin_writes: HashMap<RequestId, StdinWrite>,
    contexts: Vec<Context>,
    receiving: HashMap<RequestId, Receiving>,
    pub(crate) files: HashMap<RequestId, FileOp>,
    pub(crate) file_root: FileRoot,
    welcomed: bool,
}

/// Why the loop ended.
#[derive(Debug)]
pub enum Stop {
    /// The host closed the channel: a normal end.
    HostClosed,
    Refused(String),
    Failed(std::io::Error),
}

impl Agent {
    pub fn new(mode: Mode, channel: Channel, signals: OwnedFd) -> Self {
        Self {
            file_root: FileRoot::of(&mode),
            files: HashMap::new(),
            stdin_writes: HashMap::new(),
            mode,
            channel,
            signals,
            execs: HashMap::new(),
            contexts: Vec::new(),
            receiving: HashMap::new(),
            welcomed: false,
        }
    }

    /// Sends Hello and serves until the host goes away; then kills every exec's tree.
    pub fn run(&mut self) -> Stop {
        self.channel.send(&AgentMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        });
        let stop = loop {
            if let Err(stop) = self.turn() {
                break stop;
            }
        };
        self.shutdown();
        stop
    }

    fn turn(&mut self) -> Result<(), Stop> {
        let (mut fds, sources) = self.poll_set();
        sys::poll(&mut fds, self.poll_timeout()).map_err(|e| Stop::Failed(e.into_io()))?;
        for (fd, source) in fds.iter().zip(&sources) {
            if fd.revents != 0 {
                self.handle(*source)?;
            }
        }
        self.enforce_deadlines();
        self.finish_execs();
        self.finish_contexts();
        let channel = &mut self.channel;
        self.files.retain(|_, op| !op.try_finish(channel));
        self.channel.flush().map_err(Stop::Failed)
    }

    fn poll_set(&self) -> (Vec<libc::pollfd>, Vec<Source>) {
        let mut fds = Vec::with_capacity(2 + self.execs.len() * 4);
        let mut sources = Vec::with_capacity(fds.capacity());
        let mut add = |fd: i32, events: i16, source| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            sources.push(source);
        };
        let mut channel_events = libc::POLLIN;
        if self.channel.backlog() > 0 {
            channel_events |= libc::POLLOUT;
        }
        add(
            self.channel.fd().as_raw_fd(),
            channel_events,
            Source::Channel,
        );
        add(self.signals.as_raw_fd(), libc::POLLIN, Source::Signals);
        let read_output = self.channel.backlog() < OUTPUT_HIGH_WATER;
        for (id, exec) in &self.execs {
            if let Some(pipe) = &exec.status_pipe {
                add(pipe.as_raw_fd(), libc::POLLIN, Source::Status(*id));
            }
            if read_output && exec.output_readable() {
                if let Some(pipe) = &exec.stdout {
                    add(
                        pipe.file.as_raw_fd(),
                        libc::POLLIN,
                        Source::Output(*id, Stream::Stdout),
                    );
                }
                if let Some(pipe) = &exec.stderr {
                    add(
                        pipe.file.as_raw_fd(),
                        libc::POLLIN,
                        Source::Output(*id, Stream::Stderr),
                    );
                }
            }
            if let Some(stdin) = exec.stdin.as_ref().filter(|_| exec.stdin_wants_write()) {
                add(stdin.file.as_raw_fd(), libc::POLLOUT, Source::Stdin(*id));
            }
        }
        for (index, context) in self.contexts.iter().enumerate() {
            let Some(runner) = &context.runner else {
                continue;
            };
            let mut part = |fd: &Option<std::fs::File>, events: i16, part: Part| {
                if let (Some(file), true) = (fd, events != 0) {
                    add(file.as_raw_fd(), events, Source::Context(index, part));
                }
            };
            part(&runner.status, libc::POLLIN, Part::Status);
            let reading = if read_output { libc::POLLIN } else { 0 };
            let writing = if runner.wants_channel_write() {
                libc::POLLOUT
            } else {
                0
            };
            part(&runner.channel, reading | writing, Part::Channel);
            part(&runner.stdout, reading, Part::Output(Stream::Stdout));
            part(&runner.stderr, reading, Part::Output(Stream::Stderr));
            let stdin = if runner.wants_stdin_write() {
                libc::POLLOUT
            } else {
                0
            };
            part(&runner.stdin, stdin, Part::Stdin);
        }
        for (id, op) in &self.files {
            let mut events = if read_output { libc::POLLIN } else { 0 };
            if op.wants_write() {
                events |= libc::POLLOUT;
            }
            if let (Some(fd), true) = (op.fd(), events != 0) {
                add(fd.as_raw_fd(), events, Source::File(*id));
            }
        }
        (fds, sources)
    }

    /// Milliseconds until the nearest deadline (rounded up), or forever.
    fn poll_timeout(&self) -> i32 {
        let now = Instant::now();
        self.execs
            .values()
            .filter_map(Exec::pending_deadline)
            .chain(self.contexts.iter().filter_map(Context::next_deadline))
            .map(|deadline| deadline.saturating_duration_since(now))
            .min()
            .map_or(-1, |left| {
                let millis = left.as_micros().div_ceil(1000);
                i32::try_from(millis).unwrap_or(i32::MAX)
            })
    }

    fn handle(&mut self, source: Source) -> Result<(), Stop> {
        match source {
            Source::Channel => self.receive()?,
            Source::Signals => self.reap(),
            Source::Status(id) => {
                if let Some(exec) = self.execs.get_mut(&id) {
                    exec.read_status(&mut self.channel);
                }
            }
            Source::Output(id, stream) => {
                if let Some(exec) = self.execs.get_mut(&id) {
                    exec.drain_output(stream, &mut self.channel, READS_PER_TURN);
                }
            }
            Source::Stdin(id) => {
                if let Some(exec) = self.execs.get_mut(&id) {
                    exec.write_stdin();
                }
            }
            Source::Context(index, part) => self.handle_context(index, part),
            Source::File(id) => {
                let read = self.channel.backlog() < OUTPUT_HIGH_WATER;
                if let Some(op) = self.files.get_mut(&id) {
                    op.write_upload(&mut self.channel);
                    if read {
                        op.read_answers(&mut self.channel, READS_PER_TURN);
                    }
                }
            }
        }
        Ok(())
    }

    fn handle_context(&mut self, index: usize, part: Part) {
        let Some(context) = self.contexts.get_mut(index) else {
            return;
        };
        match part {
            Part::Status => context.read_status(&mut self.channel),
            Part::Channel => {
                if let Some(runner) = context.runner.as_mut() {
                    runner.write_pending();
                }
                context.read_events(&mut self.channel);
            }
            Part::Output(stream) => context.read_output(stream, &mut self.channel, READS_PER_TURN),
            Part::Stdin => {
                if let Some(runner) = context.runner.as_mut() {
                    runner.write_pending();
                }
            }
        }
    }

    /// The one reaper: every ended child of the agent, dispatched by pid.
    fn reap(&mut self) {
        sys::drain_signalfd(&self.signals);
        let mut orphans_possible = false;
        while let Ok(Some((pid, status))) = sys::wait_any(false) {
            if let Some(exec) = self.execs.values_mut().find(|e| e.supervisor_pid == pid) {
                exec.supervisor_reaped = true;
                orphans_possible |= status != ChildStatus::Exited(0);
            } else if let Some(runner) = self.runner_of_supervisor(pid) {
                runner.supervisor_reaped = true;
                orphans_possible |= status != ChildStatus::Exited(0);
            } else if let Some(op) = self.files.values_mut().find(|op| op.pid == pid) {
                // A worker forks nothing: it leaves no orphan behind.
                op.reaped = true;
            } else {
                // Not a supervisor: an orphan, so its relatives may be around too.
                orphans_possible = true;
            }
        }
        if orphans_possible {
            self.kill_orphans();
        }
    }

    /// A supervisor that died abnormally (killed, e.g. by the OOM killer) leaves its
    /// tree re-parented to the agent, as PID 1. Every child of the agent that is not a
    /// live supervisor is such an orphan: kill it (its own children re-parent to the
    /// agent and are killed on the next round, when it is reaped).
    fn kill_orphans(&self) {
        let runners = self.contexts.iter().filter_map(|c| c.runner.as_ref());
        let supervisors: Vec<i32> = self
            .execs
            .values()
            .filter(|exec| !exec.supervisor_reaped)
            .map(|exec| exec.supervisor_pid)
            .chain(
                runners
                    .filter(|runner| !runner.supervisor_reaped)
                    .map(|runner| runner.supervisor_pid),
            )
            .chain(self.files.values().filter(|op| !op.reaped).map(|op| op.pid))
            .collect();
        for pid in crate::children_of_self() {
            if !supervisors.contains(&pid) {
                let _ = sys::send_signal(pid, libc::SIGKILL);
            }
        }
    }

    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        for exec in self.execs.values_mut() {
            if exec
                .pending_deadline()
                .is_some_and(|deadline| now >= deadline)
            {
                exec.kill(true);
            }
        }
        for context in &mut self.contexts {
            context.enforce_deadlines(now);
        }
    }

    fn runner_of_supervisor(&mut self, pid: i32) -> Option<&mut crate::runner::Runner> {
        self.contexts
            .iter_mut()
            .filter_map(|context| context.runner.as_mut())
            .find(|runner| runner.supervisor_pid == pid)
    }

    /// Restarts runners that are gone and forgets destroyed contexts.
    fn finish_contexts(&mut self) {
        for context in &mut self.contexts {
            context.after_runner_exit(&self.mode, &mut self.channel);
        }
        let channel = &mut self.channel;
        self.contexts
            .retain_mut(|context| !context.try_remove(channel));
    }

    fn finish_execs(&mut self) {
        let channel = &mut self.channel;
        self.execs.retain(|_, exec| !exec.try_finish(channel));
    }

    fn receive(&mut self) -> Result<(), Stop> {
        let open = self.channel.receive().map_err(Stop::Failed)?;
        loop {
            match self.channel.next_body() {
                Ok(Some(body)) => self.dispatch(&body)?,
                Ok(None) => break,
                Err(error) => {
                    // The stream is out of sync: nothing after this can be trusted.
                    let message = format!("unreadable frame: {error}");
                    return Err(Stop::Failed(std::io::Error::other(message)));
                }
            }
        }
        if open {
            Ok(())
        } else {
            Err(Stop::HostClosed)
        }
    }

    fn dispatch(&mut self, body: &[u8]) -> Result<(), Stop> {
        match decode_frame::<HostMessage>(body) {
            Ok(Frame::Control(message)) => self.on_message(message),
            Ok(Frame::Data { id, stream, data }) => {
                self.on_data(id, stream, &data);
                Ok(())
            }
            Err(error) => {
                self.reply_undecodable(error);
                Ok(())
            }
        }
    }

    fn reply_undecodable(&mut self, error: DecodeError) {
        let (id, code) = match &error {
            DecodeError::Message {
                id,
                known_type: false,
                ..
            } => (*id, ErrorCode::UnknownMessage),
            DecodeError::Message { id, .. } => (*id, ErrorCode::BadMessage),
            _ => (None, ErrorCode::BadMessage),
        };
        self.error(id, code, error.to_string());
    }

    pub(crate) fn error(&mut self, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.channel
            .send(&AgentMessage::Error { id, code, message });
    }

    fn on_message(&mut self, message: HostMessage) -> Result<(), Stop> {
        if !self.welcomed {
            return self.on_handshake(message);
        }
        match message {
            HostMessage::Exec(spec) => self.start_exec(&spec),
            HostMessage::Kill { id } => self.kill(id),
            // Like Kill, it may cross the exec's end on the wire: unknown ids are fine.
            // For an upload it is the end of the file's bytes.
            HostMessage::CloseStdin { id } => {
                if let Some(exec) = self.execs.get_mut(&id) {
                    exec.close_stdin();
                } else if let Some(op) = self.files.get_mut(&id) {
                    op.end_upload();
                }
            }
            HostMessage::StatPath { .. }
            | HostMessage::ListDir { .. }
            | HostMessage::MakeDir { .. }
            | HostMessage::MovePath { .. }
            | HostMessage::RemovePath { .. }
            | HostMessage::ReadFile(_)
            | HostMessage::WriteFile(_)
            | HostMessage::WatchPath { .. } => self.start_file_op(&message),
            HostMessage::StartProcess(spec) => self.start_process(spec),
            HostMessage::ListProcesses { id } => self.list_processes(id),
            HostMessage::ProcessStdin { id, pid, len } => self.begin_process_stdin(id, pid, len),
            HostMessage::CloseProcessStdin { id, pid } => self.close_process_stdin(id, pid),
            HostMessage::SignalProcess { id, pid, signal } => self.signal_process(id, pid, &signal),
            HostMessage::SubscribeProcess { id, pid } => self.subscribe_process(id, pid),
            HostMessage::OpenPty(spec) => self.open_pty(&spec),
            HostMessage::ResizePty { id, cols, rows } => self.resize_pty(id, cols, rows),
            HostMessage::Ping { id } => self.channel.send(&AgentMessage::Pong { id }),
            HostMessage::CreateContext(spec) => self.create_context(spec),
            HostMessage::Execute(spec) => self.execute(spec),
            HostMessage::Interrupt { id, context } => {
                if let Some(context) = self.context_or_error(id, &context) {
                    context.interrupt_running();
                    self.channel.send(&AgentMessage::Ack { id });
                }
            }
            HostMessage::RestartContext { id, context } => {
                if let Some(index) = self.context_index(id, &context) {
                    self.contexts[index].restart(id, &self.mode, &mut self.channel);
                }
            }
            HostMessage::DestroyContext { id, context } => {
                if let Some(index) = self.context_index(id, &context) {
                    self.contexts[index].destroy(id, &mut self.channel);
                }
            }
            HostMessage::Welcome { .. } | HostMessage::Refuse { .. } => {
                let text = "the handshake is already done".to_owned();
                self.error(None, ErrorCode::UnexpectedMessage, text);
            }
        }
        Ok(())
    }

    fn on_handshake(&mut self, message: HostMessage) -> Result<(), Stop> {
        match message {
            HostMessage::Welcome { protocol_version } if protocol_version == PROTOCOL_VERSION => {
                self.welcomed = true;
                Ok(())
            }
            HostMessage::Welcome { protocol_version } => Err(Stop::Refused(format!(
                "the host chose protocol version {protocol_version}, this agent speaks {PROTOCOL_VERSION}"
            ))),
            HostMessage::Refuse { reason } => Err(Stop::Refused(reason)),
            _ => {
                let text = "expected Welcome first".to_owned();
                self.error(None, ErrorCode::UnexpectedMessage, text);
                Ok(())
            }
        }
    }

    fn on_data(&mut self, id: RequestId, stream: Stream, data: &[u8]) {
        if stream == Stream::File {
            return self.receive_upload(id, data);
        }
        if stream == Stream::Stdin && self.receive_process_stdin(id, data) {
            return;
        }
        if stream == Stream::Stdin && self.receiving.contains_key(&id) {
            return self.receive_code(id, data);
        }
        if stream != Stream::Stdin {
            self.error(
                Some(id),
                ErrorCode::BadMessage,
                "the host may only send stdin".into(),
            );
            return;
        }
        let Some(exec) = self.execs.get_mut(&id) else {
            // The exec may have ended while these bytes were on the wire.
            return;
        };
        if !exec.push_stdin(data) {
            let text = format!(
                "more than {} bytes of stdin pending",
                exec::MAX_PENDING_STDIN
            );
            self.error(Some(id), ErrorCode::TooManyOperations, text);
        }
    }

    fn start_exec(&mut self, spec: &ExecSpec) {
        let id = Some(spec.id);
        if let Err(invalid) = spec.validate() {
            return self.error(id, ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.execs.contains_key(&spec.id) {
            return self.error(id, ErrorCode::DuplicateId, "the id is in use".into());
        }
        if self.execs.len() >= MAX_EXECS {
            let text = format!("at most {MAX_EXECS} execs run at once");
            return self.error(id, ErrorCode::TooManyOperations, text);
        }
        match exec::spawn(spec, &self.mode) {
            Ok(exec) => {
                self.execs.insert(spec.id, exec);
            }
            Err(error) => self.error(id, ErrorCode::SpawnFailed, format!("spawn failed: {error}")),
        }
    }

    /// Kills every tree and waits for the supervisors, so no process outlives the agent.
    fn shutdown(&mut self) {
        for exec in self.execs.values_mut() {
            exec.kill(false);
        }
        for op in self.files.values_mut() {
            op.kill();
        }
        for context in &mut self.contexts {
            context.kill();
        }
        while self.execs.values().any(|exec| !exec.supervisor_reaped)
            || self
                .contexts
                .iter()
                .filter_map(|c| c.runner.as_ref())
                .any(|runner| !runner.supervisor_reaped)
            || self.files.values().any(|op| !op.reaped)
        {
            match sys::wait_any(true) {
                Ok(Some((pid, _))) => {
                    if let Some(exec) = self.execs.values_mut().find(|e| e.supervisor_pid == pid) {
                        exec.supervisor_reaped = true;
                    } else if let Some(runner) = self.runner_of_supervisor(pid) {
                        runner.supervisor_reaped = true;
                    } else if let Some(op) = self.files.values_mut().find(|op| op.pid == pid) {
                        op.reaped = true;
                    }
                }
                Ok(None) => {}
                Err(Errno(_)) => break,
            }
        }
    }
}

/// Contexts and executions of code.
impl Agent {
    fn kill(&mut self, id: RequestId) {
        // A subscription's Kill only detaches it; the process runs on.
        if self.unsubscribe(id) {
            return;
        }
        if let Some(exec) = self.execs.get_mut(&id) {
            return exec.kill(false);
        }
        if let Some(op) = self.files.get_mut(&id) {
            return op.cancel();
        }
        // The host gave up on an execution whose code was still arriving.
        if self.receiving.remove(&id).is_some() {
            return;
        }
        for context in &mut self.contexts {
            if context.cancel(id, &mut self.channel) {
                return;
            }
        }
    }

    /// The index of a live context, or an `UnknownContext` error sent for `id`.
    fn context_index(&mut self, id: RequestId, name: &str) -> Option<usize> {
        let found = self
            .contexts
            .iter()
            .position(|c| c.name() == name && !c.destroying);
        if found.is_none() {
            let text = format!("no context {name:?}");
            self.error(Some(id), ErrorCode::UnknownContext, text);
        }
        found
    }

    fn context_or_error(&mut self, id: RequestId, name: &str) -> Option<&mut Context> {
        let index = self.context_index(id, name)?;
        self.contexts.get_mut(index)
    }

    fn create_context(&mut self, spec: ContextSpec) {
        let id = Some(spec.id);
        if let Err(invalid) = spec.validate() {
            return self.error(id, ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.contexts.iter().any(|c| c.name() == spec.context) {
            let text = format!("context {:?} exists", spec.context);
            return self.error(id, ErrorCode::ContextExists, text);
        }
        if self.contexts.len() >= MAX_CONTEXTS {
            let text = format!("at most {MAX_CONTEXTS} contexts at once");
            return self.error(id, ErrorCode::TooManyOperations, text);
        }
        match Context::create(spec, &self.mode) {
            Ok(context) => self.contexts.push(context),
            Err(error) => self.error(id, ErrorCode::SpawnFailed, format!("spawn failed: {error}")),
        }
    }

    fn execute(&mut self, spec: ExecuteSpec) {
        let id = Some(spec.id);
        if let Err(invalid) = spec.validate() {
            return self.error(id, ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.context_index(spec.id, &spec.context).is_none() {
            return;
        }
        if self.receiving.contains_key(&spec.id) || self.execs.contains_key(&spec.id) {
            return self.error(id, ErrorCode::DuplicateId, "the id is in use".into());
        }
        if self.receiving.len() >= MAX_RECEIVING {
            let text = format!("at most {MAX_RECEIVING} executions may be receiving code");
            return self.error(id, ErrorCode::TooManyOperations, text);
        }
        let capacity = usize::try_from(spec.code_len).unwrap_or(0);
        let request = spec.id;
        let receiving = Receiving {
            spec,
            code: Vec::with_capacity(capacity),
        };
        self.receiving.insert(request, receiving);
        self.receive_code(request, &[]);
    }

    /// Appends code bytes; queues the execution once all of them are in.
    fn receive_code(&mut self, id: RequestId, data: &[u8]) {
        let Some(receiving) = self.receiving.get_mut(&id) else {
            return;
        };
        let expected = usize::try_from(receiving.spec.code_len).unwrap_or(usize::MAX);
        if receiving.code.len() + data.len() > expected {
            self.receiving.remove(&id);
            let text = "more code than code_len announced".to_owned();
            return self.error(Some(id), ErrorCode::InvalidRequest, text);
        }
        receiving.code.extend_from_slice(data);
        if receiving.code.len() < expected {
            return;
        }
        let Receiving { spec, code } = self.receiving.remove(&id).expect("present");
        let code = match String::from_utf8(code) {
            Ok(code) if !code.contains('\0') => code,
            _ => {
                let text = "the code must be UTF-8 without NUL bytes".to_owned();
                return self.error(Some(id), ErrorCode::InvalidRequest, text);
            }
        };
        let execution = Execution {
            id,
            code,
            env: spec.env,
            timeout: std::time::Duration::from_millis(spec.timeout_ms),
            output_limit: spec.output_limit,
        };
        let Some(index) = self.context_index(id, &spec.context) else {
            return;
        };
        if let Err(reason) = self.contexts[index].enqueue(execution, &mut self.channel) {
            self.error(Some(id), ErrorCode::TooManyOperations, reason);
        }
    }
}
