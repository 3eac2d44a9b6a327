//! Terminals at the runtime boundary: [`Runtime::open_pty`](crate::Runtime::open_pty)
//! returns a [`PtySession`] whatever the backend (the agent's terminal for the Linux
//! runtime, an in-memory one for the fake).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::agent::TerminalInput;
use crate::{ExecStream, RuntimeError};

/// The writing side of a terminal, as a backend implements it.
#[async_trait]
pub trait PtyControl: Send + Sync + fmt::Debug + 'static {
    /// Sends keystrokes (any bytes) to the terminal.
    async fn write(&self, bytes: &[u8]) -> Result<(), RuntimeError>;
    /// Sets the terminal's size (1..=1000 each); its foreground job gets SIGWINCH.
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError>;
}

/// The writing side of an open terminal. Cheap to clone; writing after the shell
/// ended fails or is ignored, never blocks for long.
#[derive(Debug, Clone)]
pub struct PtyInput {
    control: Arc<dyn PtyControl>,
}

impl PtyInput {
    pub fn new(control: Arc<dyn PtyControl>) -> Self {
        Self { control }
    }

    pub async fn write(&self, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.control.write(bytes).await
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        self.control.resize(cols, rows).await
    }
}

/// An open terminal. `output` carries the terminal's bytes as `Stdout` chunks, then
/// `Finished` when its program ends; dropping `output` ends the program's tree.
#[derive(Debug)]
pub struct PtySession {
    /// The program's pid inside the sandbox.
    pub pid: u32,
    pub output: ExecStream,
    pub input: PtyInput,
}

#[async_trait]
impl PtyControl for TerminalInput {
    async fn write(&self, bytes: &[u8]) -> Result<(), RuntimeError> {
        Ok(TerminalInput::write(self, bytes).await?)
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        Ok(TerminalInput::resize(self, cols, rows).await?)
    }
}
