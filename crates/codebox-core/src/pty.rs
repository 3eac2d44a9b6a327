//! Terminals in a user's sandbox (issue 5): a login shell (or a given command)
//! as `user` on a pseudo-terminal, bytes both ways, resizes.
//!
//! # API (for the HTTP WebSocket route and for envd's `process.Start` with `pty`)
//! ```text
//! let pty = core.open_pty(&user, sandbox_id, PtyRequest { cols, rows, cmd, args, env,
//!                                                          cwd, user, timeout }).await?;
//! // -> Pty { pid, input: PtyInput, output: PtyOutput }; returns once the program runs.
//! pty.input.write(&bytes).await?        // keystrokes, any bytes (cheap to clone)
//! pty.input.resize(cols, rows).await?   // 1..=1000 each; the program gets SIGWINCH
//! pty.output.next().await               // Some(PtyEvent::Data(bytes)) ..., then
//!                                        // Some(PtyEvent::Exit(PtyExit)) once, then None.
//!                                        // None without an Exit: the sandbox went away.
//! drop(pty.output)                      // ends the program's whole process tree
//! ```
//! Ownership is checked like every sandbox operation (another user's sandbox is
//! `NotFound`); an ended sandbox is `Gone`. The program is `bash -l` unless `cmd`
//! is given: `cmd` alone runs as `bash -c cmd`, `cmd` with `args` as an argv. Its
//! env is the sandbox's env under `env` (`TERM=xterm-256color` unless set), its
//! working directory `cwd` or `/home/user`. Output is not capped (it is a live
//! stream with backpressure: a consumer that stops reading stalls the terminal,
//! never memory). Input is sent in chunks of at most 64 KiB.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::{
    Command, ExecEvent, ExecStream, PtyInput as RuntimePtyInput, PtyRequest as RuntimePtyRequest,
    MAX_TERMINAL_SIZE,
};
use codebox_store::User;
use serde::Deserialize;

use crate::error::CoreError;
use crate::requests::{validate_cwd, validate_map};
use crate::Core;

/// Size of a terminal opened without one.
pub const DEFAULT_PTY_COLS: u16 = 80;
pub const DEFAULT_PTY_ROWS: u16 = 24;
/// Most argv words of a terminal's command.
const MAX_ARGS: usize = 1024;

/// A terminal to open. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtyRequest {
    /// Columns, 1..=1000; 80 when absent.
    pub cols: Option<u16>,
    /// Rows, 1..=1000; 24 when absent.
    pub rows: Option<u16>,
    /// The program: `bash -c cmd`, or the argv `cmd args...` when `args` is given;
    /// a login shell (`bash -l`) when absent.
    pub cmd: Option<String>,
    pub args: Option<Vec<String>>,
    /// Over the sandbox's env.
    pub env: Option<BTreeMap<String, String>>,
    /// Absolute working directory; `/home/user` when absent.
    pub cwd: Option<String>,
    /// Only `user` (the sandbox's unprivileged user) is supported.
    pub user: Option<String>,
    /// Seconds; the program's tree is killed after it. The sandbox's lifetime when
    /// absent.
    pub timeout: Option<u64>,
}

/// An open terminal.
#[derive(Debug)]
pub struct Pty {
    /// The program's pid inside the sandbox.
    pub pid: u32,
    pub input: PtyInput,
    pub output: PtyOutput,
}

/// The writing side of a terminal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PtyInput {
    inner: RuntimePtyInput,
}

impl PtyInput {
    /// Sends keystrokes (any bytes) to the terminal.
    pub async fn write(&self, bytes: &[u8]) -> Result<(), CoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.inner.write(bytes).await.map_err(CoreError::from)
    }

    /// Resizes the terminal (1..=1000 columns and rows).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), CoreError> {
        validate_size(cols, rows)?;
        self.inner.resize(cols, rows).await.map_err(CoreError::from)
    }
}

/// How a terminal's program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyExit {
    /// Exit status when it exited.
    pub exit_code: Option<i32>,
    /// Signal number when a signal killed it.
    pub signal: Option<i32>,
    /// Killed at its `timeout`.
    pub timed_out: bool,
}

/// One event of a terminal's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyEvent {
    /// Terminal bytes (not necessarily whole UTF-8 characters).
    Data(Vec<u8>),
    /// The program ended; the last event.
    Exit(PtyExit),
}

/// A terminal's output. Dropping it ends the program and its whole tree.
#[derive(Debug)]
pub struct PtyOutput {
    stream: ExecStream,
    ended: bool,
}

impl PtyOutput {
    /// The next event; `None` after `Exit`, or when the sandbox went away.
    pub async fn next(&mut self) -> Option<PtyEvent> {
        if self.ended {
            return None;
        }
        loop {
            match self.stream.next().await {
                Some(ExecEvent::Stdout(bytes) | ExecEvent::Stderr(bytes)) => {
                    if !bytes.is_empty() {
                        return Some(PtyEvent::Data(bytes));
                    }
                }
                Some(ExecEvent::Started { .. }) => {}
                Some(ExecEvent::Finished(exit)) => {
                    self.ended = true;
                    return Some(PtyEvent::Exit(PtyExit {
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                        timed_out: exit.timed_out,
                    }));
                }
                None => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }
}

fn validate_size(cols: u16, rows: u16) -> Result<(), CoreError> {
    let fits = |n: u16| (1..=MAX_TERMINAL_SIZE).contains(&n);
    if !fits(cols) {
        return Err(CoreError::validation(
            "cols",
            format!("must be between 1 and {MAX_TERMINAL_SIZE}"),
        ));
    }
    if !fits(rows) {
        return Err(CoreError::validation(
            "rows",
            format!("must be between 1 and {MAX_TERMINAL_SIZE}"),
        ));
    }
    Ok(())
}

fn validate_pty(
    request: PtyRequest,
    max_timeout: Duration,
) -> Result<(RuntimePtyRequest, Option<BTreeMap<String, String>>), CoreError> {
    let cols = request.cols.unwrap_or(DEFAULT_PTY_COLS);
    let rows = request.rows.unwrap_or(DEFAULT_PTY_ROWS);
    validate_size(cols, rows)?;
    if request.user.as_deref().is_some_and(|user| user != "user") {
        return Err(CoreError::validation("user", "only \"user\" is supported"));
    }
    let command = match (request.cmd, request.args) {
        (None, None) => None,
        (None, Some(_)) => return Err(CoreError::validation("args", "needs cmd")),
        (Some(cmd), _) if cmd.is_empty() || cmd.contains('\0') => {
            return Err(CoreError::validation(
                "cmd",
                "must be non-empty without NUL",
            ))
        }
        (Some(_), Some(args))
            if args.len() > MAX_ARGS || args.iter().any(|arg| arg.contains('\0')) =>
        {
            return Err(CoreError::validation(
                "args",
                format!("at most {MAX_ARGS} arguments without NUL"),
            ))
        }
        (Some(cmd), Some(args)) => Some(Command::Argv(std::iter::once(cmd).chain(args).collect())),
        (Some(cmd), None) => Some(Command::Shell(cmd)),
    };
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
    let runtime_request = RuntimePtyRequest {
        cols,
        rows,
        env: BTreeMap::new(),
        cwd: validate_cwd(request.cwd)?,
        timeout,
        command,
    };
    Ok((runtime_request, request.env))
}

impl Core {
    /// Opens a terminal in the user's running sandbox; see the module docs.
    pub async fn open_pty(
        &self,
        user: &User,
        id: &str,
        request: PtyRequest,
    ) -> Result<Pty, CoreError> {
        let (mut runtime_request, env) =
            validate_pty(request, self.settings.limits.max_sandbox_lifetime)?;
        let mut env = validate_map("env", env, self.env_bounds())?;
        env.entry("TERM".to_owned())
            .or_insert_with(|| "xterm-256color".to_owned());
        runtime_request.env = env;
        let sandbox = self.running_sandbox(user, id).await?.id;
        let (cols, rows) = (runtime_request.cols, runtime_request.rows);
        let session = match self.runtime.open_pty(&sandbox, runtime_request).await {
            Ok(session) => session,
            Err(error) => return Err(self.exec_failed(&sandbox, error).await),
        };
        tracing::info!(sandbox_id = %sandbox, pid = session.pid, cols, rows, "terminal opened");
        Ok(Pty {
            pid: session.pid,
            input: PtyInput {
                inner: session.input,
            },
            output: PtyOutput {
                stream: session.output,
                ended: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated() {
        let max = Duration::from_secs(60);
        let (plain, env) = validate_pty(PtyRequest::default(), max).expect("valid");
        assert_eq!((plain.cols, plain.rows), (80, 24));
        assert_eq!(plain.command, None);
        assert!(env.is_none());
        let argv = PtyRequest {
            cmd: Some("/bin/bash".into()),
            args: Some(vec!["-i".into()]),
            ..PtyRequest::default()
        };
        let (argv, _) = validate_pty(argv, max).expect("valid");
        assert_eq!(
            argv.command,
            Some(Command::Argv(vec!["/bin/bash".into(), "-i".into()]))
        );
        for bad in [
            PtyRequest {
                cols: Some(0),
                ..PtyRequest::default()
            },
            PtyRequest {
                rows: Some(1001),
                ..PtyRequest::default()
            },
            PtyRequest {
                user: Some("root".into()),
                ..PtyRequest::default()
            },
            PtyRequest {
                cmd: Some("a\0b".into()),
                ..PtyRequest::default()
            },
            PtyRequest {
                args: Some(vec![]),
                ..PtyRequest::default()
            },
            PtyRequest {
                cwd: Some("relative".into()),
                ..PtyRequest::default()
            },
            PtyRequest {
                timeout: Some(61),
                ..PtyRequest::default()
            },
        ] {
            assert!(validate_pty(bad.clone(), max).is_err(), "{bad:?}");
        }
    }
}
