//! Background and streamed processes in a user's sandbox (issue 5): start,
//! list, stdin, signals and reattaching to their output.
//!
//! The core checks ownership and validates the request; the sandbox's agent runs
//! and supervises the process (as `user`, with the sandbox's env under the
//! request's), keeps it running after the request that started it, and kills it
//! with the sandbox. Output is handed on as [`ProcessEvent`]s with UTF-8 decoded
//! across chunk boundaries.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::{
    Command, ExecEvent, ProcessInfo, ProcessRequest, RuntimeError, Subscription, ALLOWED_SIGNALS,
};
use codebox_store::User;
use codebox_types::SandboxId;
use serde::{Deserialize, Serialize};

use crate::code_views::Utf8Chunks;
use crate::error::CoreError;
use crate::requests::{validate_cwd, validate_map};
use crate::Core;

/// Longest tag (the agent's bound).
pub const MAX_TAG_BYTES: usize = 256;
/// Most argv words.
const MAX_ARGS: usize = 1024;

/// `POST /api/v1/sandboxes/{id}/processes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartProcessRequest {
    /// A shell command (`bash -c`), or the program when `args` is given.
    pub cmd: String,
    /// Arguments: `cmd` then runs as an argv, without a shell.
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    /// Absolute working directory; `/home/user` when absent.
    pub cwd: Option<String>,
    /// Only `user` (the sandbox's unprivileged user) is supported.
    pub user: Option<String>,
    /// Keep stdin open for `POST .../stdin`; default false (`/dev/null`).
    pub stdin: Option<bool>,
    /// Seconds; the process (and its children) is killed after it. None: it
    /// lives as long as the sandbox.
    pub timeout: Option<u64>,
    /// A label shown in listings (at most 256 bytes, no control character).
    pub tag: Option<String>,
    /// Answer with the pid at once (default); `false` streams the output.
    pub background: Option<bool>,
}

/// `POST .../processes/{pid}/signal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub signal: String,
}

/// A process as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessView {
    pub pid: u32,
    /// The argv (`["bash", "-c", cmd]` for a shell command).
    pub cmd: Vec<String>,
    pub tag: Option<String>,
    pub stdin_open: bool,
}

impl From<ProcessInfo> for ProcessView {
    fn from(info: ProcessInfo) -> Self {
        Self {
            pid: info.pid,
            cmd: info.command,
            tag: info.tag,
            stdin_open: info.stdin_open,
        }
    }
}

/// One event of a process's output stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessEvent {
    /// First event: the pid, and output lost while nobody listened (reattach).
    Start {
        pid: u32,
        dropped_bytes: u64,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// Last event: the exit code, or the signal that killed it.
    End {
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
}

impl ProcessEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ProcessEvent::Start { .. } => "start",
            ProcessEvent::Stdout { .. } => "stdout",
            ProcessEvent::Stderr { .. } => "stderr",
            ProcessEvent::End { .. } => "end",
        }
    }
}

/// A process's output, event by event. Dropping it only unsubscribes.
#[derive(Debug)]
pub struct ProcessOutput {
    pub pid: u32,
    subscription: Subscription,
    started: bool,
    stdout: Utf8Chunks,
    stderr: Utf8Chunks,
    ended: bool,
}

impl ProcessOutput {
    fn new(pid: u32, subscription: Subscription) -> Self {
        Self {
            pid,
            subscription,
            started: false,
            stdout: Utf8Chunks::default(),
            stderr: Utf8Chunks::default(),
            ended: false,
        }
    }

    /// The next event; `None` after `End` (or if the sandbox went away).
    pub async fn next_event(&mut self) -> Option<ProcessEvent> {
        if !self.started {
            self.started = true;
            return Some(ProcessEvent::Start {
                pid: self.pid,
                dropped_bytes: self.subscription.dropped_bytes,
            });
        }
        if self.ended {
            return None;
        }
        loop {
            let event = match self.subscription.stream.next().await {
                Some(ExecEvent::Stdout(bytes)) => ProcessEvent::Stdout {
                    data: self.stdout.push(&bytes),
                },
                Some(ExecEvent::Stderr(bytes)) => ProcessEvent::Stderr {
                    data: self.stderr.push(&bytes),
                },
                Some(ExecEvent::Started { .. }) => continue,
                Some(ExecEvent::Finished(exit)) => {
                    self.ended = true;
                    return Some(ProcessEvent::End {
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                        timed_out: exit.timed_out,
                    });
                }
                None => {
                    self.ended = true;
                    return None;
                }
            };
            // A chunk that ended mid-character waits for the rest.
            if !matches!(&event, ProcessEvent::Stdout { data } | ProcessEvent::Stderr { data } if data.is_empty())
            {
                return Some(event);
            }
        }
    }
}

fn validate_start(
    request: StartProcessRequest,
    max_timeout: Duration,
) -> Result<ProcessRequest, CoreError> {
    if request.cmd.is_empty() || request.cmd.contains('\0') {
        return Err(CoreError::validation(
            "cmd",
            "must be non-empty without NUL",
        ));
    }
    if request.user.as_deref().is_some_and(|user| user != "user") {
        return Err(CoreError::validation("user", "only \"user\" is supported"));
    }
    let command = match request.args {
        Some(args) if args.len() > MAX_ARGS || args.iter().any(|arg| arg.contains('\0')) => {
            return Err(CoreError::validation(
                "args",
                format!("at most {MAX_ARGS} arguments without NUL"),
            ))
        }
        Some(args) => Command::Argv(std::iter::once(request.cmd).chain(args).collect()),
        None => Command::Shell(request.cmd),
    };
    if let Some(tag) = &request.tag {
        if tag.len() > MAX_TAG_BYTES || tag.chars().any(char::is_control) {
            return Err(CoreError::validation(
                "tag",
                format!("at most {MAX_TAG_BYTES} bytes without control characters"),
            ));
        }
    }
    let timeout = match request.timeout {
        Some(0) => {
            return Err(CoreError::validation(
                "timeout",
                "must be at least 1 second",
            ))
        }
        Some(seconds) if Duration::from_secs(seconds) > max_timeout => {
            return Err(CoreError::validation(
                "timeout",
                format!("must be at most {} seconds", max_timeout.as_secs()),
            ))
        }
        other => other.map(Duration::from_secs),
    };
    Ok(ProcessRequest {
        command,
        env: request.env.unwrap_or_default(),
        cwd: validate_cwd(request.cwd)?,
        stdin: request.stdin.unwrap_or(false),
        tag: request.tag,
        timeout,
    })
}

/// A `{pid}` path segment; anything else is no process of this sandbox.
pub fn parse_pid(pid: &str) -> Result<u32, CoreError> {
    pid.parse().map_err(|_| CoreError::ProcessNotFound)
}

impl Core {
    /// A process refusal as the client's error; a lost sandbox as `Gone`.
    async fn process_failed(&self, id: &SandboxId, error: RuntimeError) -> CoreError {
        match error {
            RuntimeError::UnknownProcess { .. } => CoreError::ProcessNotFound,
            other => self.exec_failed(id, other).await,
        }
    }

    /// Starts a process; with `background: false` also subscribes to its
    /// output (from its very start: the agent buffers until the subscription).
    pub async fn start_process(
        &self,
        user: &User,
        id: &str,
        request: StartProcessRequest,
    ) -> Result<(ProcessView, Option<ProcessOutput>), CoreError> {
        let background = request.background.unwrap_or(true);
        let env = validate_map("env", request.env.clone(), self.env_bounds())?;
        let mut request = validate_start(request, self.settings.limits.max_sandbox_lifetime)?;
        request.env = env;
        let sandbox = self.running_sandbox(user, id).await?.id;
        let view = ProcessView {
            pid: 0,
            cmd: match &request.command {
                Command::Shell(script) => vec!["bash".into(), "-c".into(), script.clone()],
                Command::Argv(argv) => argv.clone(),
            },
            tag: request.tag.clone(),
            stdin_open: request.stdin,
        };
        let pid = match self.runtime.start_process(&sandbox, request).await {
            Ok(pid) => pid,
            Err(error) => return Err(self.process_failed(&sandbox, error).await),
        };
        tracing::info!(sandbox_id = %sandbox, pid, background, "process started");
        let view = ProcessView { pid, ..view };
        if background {
            return Ok((view, None));
        }
        match self.runtime.subscribe_process(&sandbox, pid).await {
            Ok(subscription) => Ok((view, Some(ProcessOutput::new(pid, subscription)))),
            Err(error) => Err(self.process_failed(&sandbox, error).await),
        }
    }

    pub async fn list_processes(
        &self,
        user: &User,
        id: &str,
    ) -> Result<Vec<ProcessView>, CoreError> {
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self.runtime.list_processes(&sandbox).await {
            Ok(processes) => Ok(processes.into_iter().map(Into::into).collect()),
            Err(error) => Err(self.process_failed(&sandbox, error).await),
        }
    }

    /// Reattaches to a process's output from now on.
    pub async fn process_output(
        &self,
        user: &User,
        id: &str,
        pid: &str,
    ) -> Result<ProcessOutput, CoreError> {
        let pid = parse_pid(pid)?;
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self.runtime.subscribe_process(&sandbox, pid).await {
            Ok(subscription) => Ok(ProcessOutput::new(pid, subscription)),
            Err(error) => Err(self.process_failed(&sandbox, error).await),
        }
    }

    pub async fn process_stdin(
        &self,
        user: &User,
        id: &str,
        pid: &str,
        data: Vec<u8>,
    ) -> Result<(), CoreError> {
        let pid = parse_pid(pid)?;
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self.runtime.write_process_stdin(&sandbox, pid, data).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.process_failed(&sandbox, error).await),
        }
    }

    pub async fn close_process_stdin(
        &self,
        user: &User,
        id: &str,
        pid: &str,
    ) -> Result<(), CoreError> {
        let pid = parse_pid(pid)?;
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self.runtime.close_process_stdin(&sandbox, pid).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.process_failed(&sandbox, error).await),
        }
    }

    pub async fn signal_process(
        &self,
        user: &User,
        id: &str,
        pid: &str,
        request: SignalRequest,
    ) -> Result<(), CoreError> {
        let pid = parse_pid(pid)?;
        if !ALLOWED_SIGNALS.contains(&request.signal.as_str()) {
            return Err(CoreError::validation(
                "signal",
                format!("must be one of {}", ALLOWED_SIGNALS.join(", ")),
            ));
        }
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self
            .runtime
            .signal_process(&sandbox, pid, &request.signal)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => Err(self.process_failed(&sandbox, error).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cmd: &str) -> StartProcessRequest {
        StartProcessRequest {
            cmd: cmd.into(),
            ..StartProcessRequest::default()
        }
    }

    #[test]
    fn commands_become_shell_or_argv() {
        let max = Duration::from_secs(60);
        let shell = validate_start(request("sleep 1"), max).expect("valid in this test");
        assert_eq!(shell.command, Command::Shell("sleep 1".into()));
        let argv = StartProcessRequest {
            args: Some(vec!["-c".into(), "1".into()]),
            ..request("python3")
        };
        let argv = validate_start(argv, max).expect("valid in this test");
        assert_eq!(
            argv.command,
            Command::Argv(vec!["python3".into(), "-c".into(), "1".into()])
        );
        assert!(validate_start(request(""), max).is_err());
        let root = StartProcessRequest {
            user: Some("root".into()),
            ..request("id")
        };
        assert!(validate_start(root, max).is_err());
        let long = StartProcessRequest {
            timeout: Some(61),
            ..request("id")
        };
        assert!(validate_start(long, max).is_err());
        assert!(parse_pid("12x").is_err());
    }
}
