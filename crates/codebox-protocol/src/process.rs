//! Messages of background processes (protocol version 3).
//!
//! `StartProcess` starts a command like an exec (same jail, same supervisor) that
//! outlives its request: it is answered by `Started` (or `Error`), and from then on
//! the process is named by its pid. Its output goes to subscribers:
//! `SubscribeProcess` -> `Subscribed`, then `stdout`/`stderr` data and, when the
//! process ends, `Exited`, all with the subscription's id; `Kill` of a subscription
//! id only unsubscribes. Output produced while nobody listens is kept in a bounded
//! buffer (the oldest bytes dropped, counted in `Subscribed::dropped_bytes`) and
//! handed to the next subscriber. `ProcessStdin` (then `len` bytes of `stdin` data
//! of the same id), `CloseProcessStdin` and `SignalProcess` are answered by `Ack`.
//! Every process dies with the sandbox (the agent kills all trees when it ends).
//!
//! A terminal is `OpenPty`: a login shell (`bash -l`, or the spec's `command`) of
//! the sandbox's user on a pseudo-terminal, answered by `Started`; the terminal's output comes as `stdout`
//! data of the request's id, input goes as `stdin` data, `ResizePty` sets its size,
//! `Kill` ends the shell's tree, and `Exited` reports the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::{Command, ExecSpec, InvalidExec, StdinMode, MAX_TIMEOUT_MS};
use crate::RequestId;

/// Longest tag of a process.
pub const MAX_TAG: usize = 256;
/// Most stdin bytes of one `ProcessStdin`.
pub const MAX_STDIN_WRITE: u64 = 1 << 20;
/// Output kept per process while nobody subscribes.
pub const PROCESS_BUFFER: usize = 1 << 20;
/// The signals a process may be sent, by name.
pub const ALLOWED_SIGNALS: [&str; 9] = [
    "SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGSTOP", "SIGCONT",
];

/// A background process to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub id: RequestId,
    pub command: Command,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Keep a stdin pipe open (fed by `ProcessStdin`); `/dev/null` otherwise.
    #[serde(default)]
    pub stdin: bool,
    /// A label of the caller's choice, listed with the process.
    #[serde(default)]
    pub tag: Option<String>,
    /// Wall clock from start; the sandbox's lifetime when absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Why a [`ProcessSpec`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProcess {
    #[error("the command is invalid")]
    Exec(#[source] InvalidExec),
    #[error("the tag is over {max} bytes or holds control characters")]
    BadTag { max: usize },
    #[error("signal {name:?} is not one of {ALLOWED_SIGNALS:?}")]
    BadSignal { name: String },
    #[error("a terminal must have 1 to {max} columns and rows")]
    BadTerminalSize { max: u16 },
    #[error("a stdin write of {len} bytes is over the limit of {max}")]
    StdinTooLarge { len: u64, max: u64 },
}

impl ProcessSpec {
    /// The exec this process runs as (its output is not capped: it is streamed to
    /// subscribers or dropped from the bounded buffer).
    pub fn to_exec(&self) -> ExecSpec {
        ExecSpec {
            id: self.id,
            command: self.command.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdin: if self.stdin {
                StdinMode::Pipe
            } else {
                StdinMode::Null
            },
            timeout_ms: self.timeout_ms.unwrap_or(MAX_TIMEOUT_MS),
            output_limit: 0,
        }
    }

    pub fn validate(&self) -> Result<(), InvalidProcess> {
        self.to_exec().validate().map_err(InvalidProcess::Exec)?;
        if let Some(tag) = &self.tag {
            if tag.len() > MAX_TAG || tag.chars().any(char::is_control) {
                return Err(InvalidProcess::BadTag { max: MAX_TAG });
            }
        }
        Ok(())
    }
}

/// Checks a signal name against [`ALLOWED_SIGNALS`].
pub fn validate_signal(name: &str) -> Result<(), InvalidProcess> {
    if ALLOWED_SIGNALS.contains(&name) {
        Ok(())
    } else {
        Err(InvalidProcess::BadSignal {
            name: name.chars().take(32).collect(),
        })
    }
}

/// Checks the size of a stdin write.
pub fn validate_stdin_len(len: u64) -> Result<(), InvalidProcess> {
    if len > MAX_STDIN_WRITE {
        return Err(InvalidProcess::StdinTooLarge {
            len,
            max: MAX_STDIN_WRITE,
        });
    }
    Ok(())
}

/// A running background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The argv (`["bash", "-c", script]` for a shell command).
    pub command: Vec<String>,
    #[serde(default)]
    pub tag: Option<String>,
    pub stdin_open: bool,
    /// Subscribers attached now.
    pub subscribers: u32,
}

/// Largest terminal, in columns and in rows.
pub const MAX_TERMINAL_SIZE: u16 = 1000;

/// A terminal to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySpec {
    pub id: RequestId,
    pub cols: u16,
    pub rows: u16,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// The sandbox's lifetime when absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// What runs on the terminal; a login shell (`bash -l`) when absent.
    #[serde(default)]
    pub command: Option<Command>,
}

/// Checks a terminal size.
pub fn validate_terminal_size(cols: u16, rows: u16) -> Result<(), InvalidProcess> {
    let fits = |n: u16| (1..=MAX_TERMINAL_SIZE).contains(&n);
    if fits(cols) && fits(rows) {
        Ok(())
    } else {
        Err(InvalidProcess::BadTerminalSize {
            max: MAX_TERMINAL_SIZE,
        })
    }
}

impl PtySpec {
    /// The exec of the terminal's shell (output not capped: it is a live stream).
    pub fn to_exec(&self) -> ExecSpec {
        ExecSpec {
            id: self.id,
            command: self
                .command
                .clone()
                .unwrap_or_else(|| Command::Argv(vec!["bash".into(), "-l".into()])),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdin: StdinMode::Pipe,
            timeout_ms: self.timeout_ms.unwrap_or(MAX_TIMEOUT_MS),
            output_limit: 0,
        }
    }

    pub fn validate(&self) -> Result<(), InvalidProcess> {
        self.to_exec().validate().map_err(InvalidProcess::Exec)?;
        validate_terminal_size(self.cols, self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            id: 1,
            command: Command::Shell("sleep 1".into()),
            env: BTreeMap::new(),
            cwd: None,
            stdin: true,
            tag: Some("server".into()),
            timeout_ms: None,
        }
    }

    #[test]
    fn processes_validate_like_execs_plus_their_tag() {
        assert_eq!(spec().validate(), Ok(()));
        assert_eq!(spec().to_exec().timeout_ms, MAX_TIMEOUT_MS);
        let mut bad = spec();
        bad.tag = Some("a\nb".into());
        assert!(matches!(bad.validate(), Err(InvalidProcess::BadTag { .. })));
        bad.tag = None;
        bad.command = Command::Argv(vec![]);
        assert!(matches!(bad.validate(), Err(InvalidProcess::Exec(_))));
    }

    #[test]
    fn only_allowlisted_signals() {
        assert_eq!(validate_signal("SIGTERM"), Ok(()));
        assert!(validate_signal("SIGSEGV").is_err());
        assert!(validate_signal("9").is_err());
        assert!(validate_stdin_len(MAX_STDIN_WRITE + 1).is_err());
    }

    #[test]
    fn terminals_have_a_bounded_size() {
        assert_eq!(validate_terminal_size(80, 24), Ok(()));
        assert!(validate_terminal_size(0, 24).is_err());
        assert!(validate_terminal_size(80, MAX_TERMINAL_SIZE + 1).is_err());
    }
}
