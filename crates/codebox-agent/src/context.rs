//! Contexts: a named, long-lived runner per context, a queue of executions, and the
//! state machine around them (ready, running, interrupt, timeout, crash, restart).
//!
//! Executions of one context run one at a time in arrival order; contexts are
//! independent. Interrupt and timeout send SIGINT to the runner's process group (state
//! survives); if the execution has not ended [`GRACE`] later, the runner's tree is
//! killed and a fresh runner started (`restarted: true`). A runner that dies is
//! restarted the same way (`crashed`), unless it died before it was ever ready: then
//! the context is broken until a restart request.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::time::{Duration, Instant};

use codebox_protocol::{
    check_bundle, truncate_text, AgentMessage, ContextSpec, ErrorCode, ErrorReport,
    ExecutionOutcome, ExecutionReport, RequestId, Stream, MAX_ERROR_NAME, MAX_ERROR_VALUE,
    MAX_RESULTS, MAX_RESULTS_BYTES, MAX_TRACEBACK, RESULTS_DROPPED_NOTICE,
};

use crate::channel::Channel;
use crate::plan::Mode;
use crate::runner::{self, Line, Runner, RunnerEvent};

/// Between SIGINT and killing the runner.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long a runner may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Executions waiting per context.
pub const MAX_QUEUE: usize = 64;
/// Reads per source per loop turn.
const READS_PER_TURN: usize = 4;
/// Stderr kept from a runner that fails to start, for the error message.
const STDERR_TAIL: usize = 2048;

/// A validated execution, waiting or running.
#[derive(Debug)]
pub struct Execution {
    pub id: RequestId,
    pub code: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub output_limit: u64,
}

/// Why an execution is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Interrupted,
}

/// How the running execution ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The runner said `done`.
    Done,
    /// The runner died by itself; a fresh one starts.
    Crashed,
    /// The runner was killed (grace expired, or a restart request); a fresh one starts.
    Restarted,
    /// The runner was killed because the context is destroyed.
    Destroyed,
}

#[derive(Debug)]
struct Running {
    execution: Execution,
    count: u64,
    started_at: Instant,
    deadline: Instant,
    /// The runner said `start`: SIGINT now lands inside the cell.
    acknowledged: bool,
    stop: Option<Stop>,
    /// When SIGINT was sent; the runner is killed [`GRACE`] later.
    interrupted_at: Option<Instant>,
    error_sent: bool,
    forwarded: [u64; 2],
    truncated: [bool; 2],
    /// Results sent and their bytes, against [`MAX_RESULTS`] / [`MAX_RESULTS_BYTES`].
    results: usize,
    result_bytes: usize,
    results_dropped: bool,
}

/// One context.
#[derive(Debug)]
pub struct Context {
    pub spec: ContextSpec,
    pub runner: Option<Runner>,
    queue: VecDeque<Execution>,
    running: Option<Running>,
    count: u64,
    /// Requests answered with `ContextReady` once the runner is ready.
    ready_waiters: Vec<RequestId>,
    /// Destroy requests, answered with `Ack` once the runner is gone.
    destroy_waiters: Vec<RequestId>,
    /// The runner was killed on purpose and a new one is to be started.
    restart_after_kill: bool,
    /// The execution running when the runner was killed on purpose ends as restarted.
    pub destroying: bool,
    broken: Option<String>,
    stderr_tail: Vec<u8>,
    /// A runner of this context was ready once. A context whose first runner fails is
    /// removed, so that its id can be used again.
    ever_ready: bool,
}

fn stream_index(stream: Stream) -> usize {
    usize::from(stream == Stream::Stderr)
}

impl Context {
    /// Creates the context and starts its runner; `Err` if it cannot even fork.
    pub fn create(spec: ContextSpec, mode: &Mode) -> io::Result<Self> {
        let runner = runner::spawn(spec.language, &spec.env, spec.cwd.as_deref(), mode)?;
        let ready_waiters = vec![spec.id];
        Ok(Self {
            spec,
            runner: Some(runner),
            queue: VecDeque::new(),
            running: None,
            count: 0,
            ready_waiters,
            destroy_waiters: Vec::new(),
            restart_after_kill: false,
            destroying: false,
            broken: None,
            stderr_tail: Vec::new(),
            ever_ready: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.context
    }

    /// Queues an execution and sends `ExecutionAccepted`; `Err` (a reason) if the queue
    /// is full or the context is broken or going away.
    pub fn enqueue(&mut self, execution: Execution, channel: &mut Channel) -> Result<(), String> {
        if let Some(reason) = &self.broken {
            return Err(format!("the context is broken ({reason}); restart it"));
        }
        if self.destroying {
            return Err("the context is being destroyed".into());
        }
        if self.queue.len() >= MAX_QUEUE {
            return Err(format!("at most {MAX_QUEUE} executions wait per context"));
        }
        channel.send(&AgentMessage::ExecutionAccepted { id: execution.id });
        self.queue.push_back(execution);
        self.start_next();
        Ok(())
    }

    /// Starts the next queued execution if the runner waits for one.
    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(runner) = self.runner.as_mut().filter(|r| r.ready && !r.kill_sent) else {
            return;
        };
        let Some(execution) = self.queue.pop_front() else {
            return;
        };
        self.count += 1;
        runner.send_cell(execution.id, &execution.env, &execution.code);
        let now = Instant::now();
        self.running = Some(Running {
            deadline: now + execution.timeout,
            execution,
            count: self.count,
            started_at: now,
            acknowledged: false,
            stop: None,
            interrupted_at: None,
            error_sent: false,
            forwarded: [0; 2],
            truncated: [false; 2],
            results: 0,
            result_bytes: 0,
            results_dropped: false,
        });
    }

    /// Cancels execution `id` (host `Kill`): dequeued, or interrupted if running.
    /// `true` if this context had it.
    pub fn cancel(&mut self, id: RequestId, channel: &mut Channel) -> bool {
        if let Some(position) = self.queue.iter().position(|e| e.id == id) {
            self.queue.remove(position);
            channel.send(&never_ran(id));
            return true;
        }
        if self.running.as_ref().is_some_and(|r| r.execution.id == id) {
            self.interrupt(Stop::Interrupted);
            return true;
        }
        false
    }

    /// Interrupts the running execution, if any (host `Interrupt`).
    pub fn interrupt_running(&mut self) {
        self.interrupt(Stop::Interrupted);
    }

    fn interrupt(&mut self, stop: Stop) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.stop.is_some() {
            return;
        }
        running.stop = Some(stop);
        if running.acknowledged {
            running.interrupted_at = Some(Instant::now());
            if let Some(runner) = &self.runner {
                runner.interrupt();
            }
        }
    }

    /// Kills the runner and starts a new one; `id` gets `ContextReady`.
    pub fn restart(&mut self, id: RequestId, mode: &Mode, channel: &mut Channel) {
        self.ready_waiters.push(id);
        self.broken = None;
        match self.runner.as_mut() {
            Some(runner) => {
                if let Some(running) = self.running.as_mut() {
                    running.stop.get_or_insert(Stop::Interrupted);
                }
                self.restart_after_kill = true;
                runner.kill();
            }
            None => self.respawn(mode, channel),
        }
    }

    /// Kills the runner; `id` gets `Ack` once it is gone. Queued executions end now.
    pub fn destroy(&mut self, id: RequestId, channel: &mut Channel) {
        self.destroy_waiters.push(id);
        self.destroying = true;
        for execution in self.queue.drain(..) {
            channel.send(&never_ran(execution.id));
        }
        for waiter in self.ready_waiters.drain(..) {
            channel.send(&context_error(waiter, "the context was destroyed"));
        }
        if let Some(running) = self.running.as_mut() {
            running.stop.get_or_insert(Stop::Interrupted);
        }
        if let Some(runner) = self.runner.as_mut() {
            runner.kill();
        }
    }

    /// Done once destroyed and its runner is gone; sends the acks.
    pub fn try_remove(&mut self, channel: &mut Channel) -> bool {
        if !self.destroying || self.runner.is_some() {
            return false;
        }
        for id in self.destroy_waiters.drain(..) {
            channel.send(&AgentMessage::Ack { id });
        }
        true
    }

    /// The nearest deadline: timeout, grace, or start.
    pub fn next_deadline(&self) -> Option<Instant> {
        let runner = self.runner.as_ref().filter(|r| !r.kill_sent)?;
        if !runner.ready {
            return Some(runner.started_at + START_TIMEOUT);
        }
        let running = self.running.as_ref()?;
        match (running.stop, running.interrupted_at) {
            (None, _) => Some(running.deadline),
            (Some(_), Some(at)) => Some(at + GRACE),
            (Some(_), None) => None,
        }
    }

    /// Acts on passed deadlines.
    pub fn enforce_deadlines(&mut self, now: Instant) {
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        let ready = self.runner.as_ref().is_some_and(|r| r.ready);
        if !ready {
            self.broken = Some("the runner did not become ready in time".into());
        } else if self.running.as_ref().is_some_and(|r| r.stop.is_none()) {
            return self.interrupt(Stop::Timeout);
        } else {
            log_kill(&self.spec.context);
            self.restart_after_kill = true;
        }
        if let Some(runner) = self.runner.as_mut() {
            runner.kill();
        }
    }

    /// Reads the runner's output pipe; forwards to the running execution within its
    /// limit, drops it otherwise.
    pub fn read_output(&mut self, stream: Stream, channel: &mut Channel, max_reads: usize) {
        let Some(runner) = self.runner.as_mut() else {
            return;
        };
        let slot = match stream {
            Stream::Stderr => &mut runner.stderr,
            _ => &mut runner.stdout,
        };
        let Some(pipe) = slot.as_mut() else {
            return;
        };
        let mut buffer = [0u8; 64 * 1024];
        for _ in 0..max_reads {
            let read = match pipe.read(&mut buffer) {
                Ok(0) => {
                    *slot = None;
                    return;
                }
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    *slot = None;
                    return;
                }
            };
            let bytes = &buffer[..read];
            match self.running.as_mut() {
                Some(running) => running.forward(stream, bytes, channel),
                None if !runner.ready && stream == Stream::Stderr => {
                    keep_tail(&mut self.stderr_tail, bytes);
                }
                None => {}
            }
        }
    }

    /// Reads the runner's events and acts on them.
    pub fn read_events(&mut self, channel: &mut Channel) {
        let Some(runner) = self.runner.as_mut() else {
            return;
        };
        let (lines, closed) = runner.read_events(READS_PER_TURN);
        if closed {
            // The code closed its runner's channel (or the runner is exiting): the
            // runner can no longer report, so it is replaced like a crashed one.
            runner.kill();
        }
        for line in lines {
            match line {
                Line::Event(event) => self.on_event(event, channel),
                Line::Oversized { bytes } => self.on_result(
                    BTreeMap::from([(
                        "text/plain".to_owned(),
                        format!("[a result of {bytes} bytes was dropped: over the cap]"),
                    )]),
                    false,
                    true,
                    channel,
                ),
                Line::Garbage => crate::log("ignoring a malformed runner event"),
            }
        }
    }

    fn on_event(&mut self, event: RunnerEvent, channel: &mut Channel) {
        match event {
            RunnerEvent::Ready => self.on_ready(channel),
            RunnerEvent::Start { seq } => self.on_start(seq),
            RunnerEvent::Result {
                main,
                data,
                truncated,
            } => self.on_result(data, main, truncated, channel),
            RunnerEvent::Error {
                name,
                value,
                traceback,
            } => self.on_error(name, value, traceback, channel),
            RunnerEvent::Done { seq } => {
                if self.running.as_ref().is_some_and(|r| r.execution.id == seq) {
                    self.finish(End::Done, channel);
                    self.start_next();
                }
            }
        }
    }

    fn on_ready(&mut self, channel: &mut Channel) {
        let Some(runner) = self.runner.as_mut() else {
            return;
        };
        if runner.ready {
            return;
        }
        // The supervisor's Started record (the pid) may come after the runner's ready:
        // the ready then completes when the record is read.
        runner.read_status();
        runner.ready_seen = true;
        if runner.pid.is_none() && runner.status.is_some() {
            return;
        }
        runner.ready = true;
        self.ever_ready = true;
        let pid = runner
            .pid
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0);
        for id in self.ready_waiters.drain(..) {
            channel.send(&AgentMessage::ContextReady {
                id,
                context: self.spec.context.clone(),
                pid,
            });
        }
        self.start_next();
    }

    /// Reads the supervisor's status pipe; completes a ready that waited for the pid.
    pub fn read_status(&mut self, channel: &mut Channel) {
        let Some(runner) = self.runner.as_mut() else {
            return;
        };
        runner.read_status();
        if runner.ready_seen && !runner.ready {
            self.on_ready(channel);
        }
    }

    fn on_start(&mut self, seq: u64) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.execution.id != seq || running.acknowledged {
            return;
        }
        running.acknowledged = true;
        // An interrupt or timeout that came before the cell started lands now.
        if running.stop.is_some() {
            running.interrupted_at = Some(Instant::now());
            if let Some(runner) = &self.runner {
                runner.interrupt();
            }
        }
    }

    fn on_result(
        &mut self,
        data: BTreeMap<String, String>,
        main: bool,
        truncated: bool,
        channel: &mut Channel,
    ) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let (bundle, replaced) = match check_bundle(data) {
            Ok(bundle) => (bundle, false),
            Err(replacement) => (replacement, true),
        };
        let json = serde_json::to_vec(&bundle).expect("a map of strings serializes");
        if !running.admit_result(json.len()) {
            if !std::mem::replace(&mut running.results_dropped, true) {
                let notice =
                    BTreeMap::from([("text/plain".to_owned(), RESULTS_DROPPED_NOTICE.to_owned())]);
                let json = serde_json::to_vec(&notice).expect("a map of strings serializes");
                send_result(running.execution.id, &json, false, true, channel);
            }
            return;
        }
        send_result(
            running.execution.id,
            &json,
            main,
            truncated || replaced,
            channel,
        );
    }

    fn on_error(
        &mut self,
        mut name: String,
        mut value: String,
        mut traceback: String,
        channel: &mut Channel,
    ) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.error_sent {
            return;
        }
        running.error_sent = true;
        truncate_text(&mut name, MAX_ERROR_NAME);
        truncate_text(&mut value, MAX_ERROR_VALUE);
        truncate_text(&mut traceback, MAX_TRACEBACK);
        channel.send(&AgentMessage::ExecutionError(ErrorReport {
            id: running.execution.id,
            name,
            value,
            traceback,
        }));
    }

    /// Ends the running execution: drains what the runner already wrote to its output
    /// pipes (it flushed them before `done`), then sends `ExecutionDone`.
    fn finish(&mut self, end: End, channel: &mut Channel) {
        self.read_output(Stream::Stdout, channel, 16);
        self.read_output(Stream::Stderr, channel, 16);
        let Some(running) = self.running.take() else {
            return;
        };
        let restarted = matches!(end, End::Restarted | End::Crashed);
        let outcome = match (running.stop, end) {
            (Some(Stop::Timeout), _) => ExecutionOutcome::Timeout,
            (Some(Stop::Interrupted), _) => ExecutionOutcome::Interrupted,
            (None, End::Crashed) => ExecutionOutcome::Crashed,
            _ if running.error_sent => ExecutionOutcome::Error,
            _ => ExecutionOutcome::Ok,
        };
        channel.send(&AgentMessage::ExecutionDone(ExecutionReport {
            id: running.execution.id,
            execution_count: running.count,
            outcome,
            duration_us: micros(running.started_at.elapsed()),
            restarted,
            stdout_truncated: running.truncated[0],
            stderr_truncated: running.truncated[1],
        }));
    }

    /// Called every turn: when the runner is gone, ends the running execution and
    /// starts a fresh runner (or reports the failure).
    pub fn after_runner_exit(&mut self, mode: &Mode, channel: &mut Channel) {
        let gone = self.runner.as_ref().is_some_and(Runner::is_gone);
        if !gone {
            return;
        }
        let was_ready = self.runner.as_ref().is_some_and(|r| r.ready);
        let could_not_execute = self.runner.as_ref().is_some_and(|r| r.spawn_failed);
        let end = if self.destroying {
            End::Destroyed
        } else if self.restart_after_kill {
            End::Restarted
        } else {
            End::Crashed
        };
        self.finish(end, channel);
        self.runner = None;
        self.count = 0;
        if self.destroying {
            return;
        }
        if !was_ready && !self.restart_after_kill {
            let reason = self.startup_failure(could_not_execute);
            self.fail(&reason, channel);
            if !self.ever_ready {
                self.destroying = true;
            }
            return;
        }
        self.respawn(mode, channel);
    }

    /// Why a runner died before it was ready, for the error the host gets.
    fn startup_failure(&self, could_not_execute: bool) -> String {
        if let Some(reason) = &self.broken {
            return reason.clone();
        }
        if could_not_execute {
            let program = runner::program(self.spec.language);
            return format!("{program} is not installed or cannot be executed in this sandbox");
        }
        let tail = String::from_utf8_lossy(&self.stderr_tail);
        format!(
            "the {} runner exited before it was ready: {tail}",
            self.spec.language.as_str()
        )
    }

    fn respawn(&mut self, mode: &Mode, channel: &mut Channel) {
        self.restart_after_kill = false;
        self.stderr_tail.clear();
        let spec = &self.spec;
        match runner::spawn(spec.language, &spec.env, spec.cwd.as_deref(), mode) {
            Ok(runner) => self.runner = Some(runner),
            Err(error) => self.fail(
                &format!("the runner could not be started: {error}"),
                channel,
            ),
        }
    }

    /// Marks the context broken: waiters get an error, queued executions end.
    fn fail(&mut self, reason: &str, channel: &mut Channel) {
        let mut reason = reason.to_owned();
        truncate_text(&mut reason, STDERR_TAIL);
        for id in self.ready_waiters.drain(..) {
            channel.send(&AgentMessage::Error {
                id: Some(id),
                code: ErrorCode::SpawnFailed,
                message: reason.clone(),
            });
        }
        for execution in self.queue.drain(..) {
            channel.send(&crashed_before_start(execution.id));
        }
        self.broken = Some(reason);
    }

    /// Kills the runner at agent shutdown.
    pub fn kill(&mut self) {
        if let Some(runner) = self.runner.as_mut() {
            runner.kill();
        }
    }
}

/// One result bundle (JSON) of execution `id`, then its end marker.
fn send_result(id: RequestId, json: &[u8], main: bool, truncated: bool, channel: &mut Channel) {
    channel.send_data(id, Stream::Result, json);
    channel.send(&AgentMessage::ExecutionResult {
        id,
        is_main_result: main,
        truncated,
    });
}

impl Running {
    /// Counts a result of `bytes` if it fits the execution's result caps.
    fn admit_result(&mut self, bytes: usize) -> bool {
        if self.results_dropped
            || self.results >= MAX_RESULTS
            || self.result_bytes.saturating_add(bytes) > MAX_RESULTS_BYTES
        {
            return false;
        }
        self.results += 1;
        self.result_bytes += bytes;
        true
    }

    fn forward(&mut self, stream: Stream, bytes: &[u8], channel: &mut Channel) {
        let index = stream_index(stream);
        let room = self
            .execution
            .output_limit
            .saturating_sub(self.forwarded[index]);
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        if keep > 0 {
            channel.send_data(self.execution.id, stream, &bytes[..keep]);
            self.forwarded[index] += keep as u64;
        }
        if keep < bytes.len() {
            self.truncated[index] = true;
        }
    }
}

fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn log_kill(context: &str) {
    crate::log(&format!(
        "context {context}: the execution ignored SIGINT for {GRACE:?}; restarting its runner"
    ));
}

/// The end of an execution that never started (cancelled while queued, or its context
/// was destroyed).
fn never_ran(id: RequestId) -> AgentMessage {
    AgentMessage::ExecutionDone(ExecutionReport {
        id,
        execution_count: 0,
        outcome: ExecutionOutcome::Interrupted,
        duration_us: 0,
        restarted: false,
        stdout_truncated: false,
        stderr_truncated: false,
    })
}

fn crashed_before_start(id: RequestId) -> AgentMessage {
    AgentMessage::ExecutionDone(ExecutionReport {
        id,
        execution_count: 0,
        outcome: ExecutionOutcome::Crashed,
        duration_us: 0,
        restarted: false,
        stdout_truncated: false,
        stderr_truncated: false,
    })
}

fn context_error(id: RequestId, message: &str) -> AgentMessage {
    AgentMessage::Error {
        id: Some(id),
        code: ErrorCode::UnknownContext,
        message: message.to_owned(),
    }
}
