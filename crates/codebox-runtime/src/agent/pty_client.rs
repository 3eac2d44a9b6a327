//! [`AgentConnection`]'s terminals: a login shell of the sandbox's user on a
//! pseudo-terminal, bytes both ways and resizes.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_protocol::{
    encode_data, validate_terminal_size, Command as WireCommand, HostMessage, InvalidProcess,
    PtySpec, RequestId, Stream, MAX_DATA_CHUNK, MAX_TIMEOUT_MS,
};

use super::connection::{encode, AgentConnection};
use super::error::AgentError;
use crate::{Command, ExecStream};

/// A terminal to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyRequest {
    /// 1 to 1000 each.
    pub cols: u16,
    pub rows: u16,
    /// Over the sandbox's env (`TERM` is `xterm-256color` unless set).
    pub env: BTreeMap<String, String>,
    /// Absolute path inside the sandbox; the user's home when `None`.
    pub cwd: Option<String>,
    /// The shell's tree is killed after this long; the sandbox's lifetime if `None`.
    pub timeout: Option<Duration>,
    /// What runs on the terminal; a login shell (`bash -l`) when `None`.
    pub command: Option<Command>,
}

/// An open terminal. `output` carries the terminal's bytes as `Stdout` chunks, then
/// `Finished` when the shell ends; dropping it ends the shell (and its tree).
#[derive(Debug)]
pub struct Terminal {
    /// The shell's pid inside the sandbox.
    pub pid: u32,
    pub output: ExecStream,
    pub input: TerminalInput,
}

/// The writing side of a terminal (cheap to clone).
#[derive(Debug, Clone)]
pub struct TerminalInput {
    connection: AgentConnection,
    id: RequestId,
}

fn invalid(source: InvalidProcess) -> AgentError {
    AgentError::Refused {
        code: codebox_protocol::ErrorCode::InvalidRequest,
        message: source.to_string(),
    }
}

impl TerminalInput {
    /// Sends keystrokes (any bytes) to the terminal.
    pub async fn write(&self, bytes: &[u8]) -> Result<(), AgentError> {
        let mut frames = Vec::with_capacity(bytes.len() + 32);
        for chunk in bytes.chunks(MAX_DATA_CHUNK) {
            encode_data(self.id, Stream::Stdin, chunk, &mut frames);
        }
        self.connection.write_bytes(&frames).await
    }

    /// Resizes the terminal (the shell's foreground job gets SIGWINCH).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), AgentError> {
        validate_terminal_size(cols, rows).map_err(invalid)?;
        let message = HostMessage::ResizePty {
            id: self.id,
            cols,
            rows,
        };
        self.connection.send(&message).await
    }
}

impl AgentConnection {
    /// Opens a terminal: returns once the shell runs.
    pub async fn open_pty(
        &self,
        request: &PtyRequest,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<Terminal, AgentError> {
        let id = self.next_request_id();
        let mut env = sandbox_env.clone();
        env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spec = PtySpec {
            id,
            cols: request.cols,
            rows: request.rows,
            env,
            cwd: request.cwd.clone(),
            timeout_ms: request.timeout.map(|timeout| {
                u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .clamp(1, MAX_TIMEOUT_MS)
            }),
            command: request.command.as_ref().map(|command| match command {
                Command::Shell(script) => WireCommand::Shell(script.clone()),
                Command::Argv(argv) => WireCommand::Argv(argv.clone()),
            }),
        };
        spec.validate().map_err(invalid)?;
        let mut frames = Vec::new();
        encode(&HostMessage::OpenPty(spec), &mut frames)?;
        let mut output = self.start_streaming(id, &frames, u64::MAX).await?;
        let pid = match output.next().await {
            Some(crate::ExecEvent::Started { pid }) => pid,
            _ => {
                return Err(AgentError::Protocol {
                    detail: "a terminal's first event is not Started".into(),
                })
            }
        };
        let input = TerminalInput {
            connection: self.clone(),
            id,
        };
        Ok(Terminal { pid, output, input })
    }
}
