//! Terminals of [`crate::fake::FakeRuntime`] (feature `fake`): a tiny line-based
//! "shell" on a task. It echoes what is typed (a newline as `\r\n`, like a tty),
//! prints the prompt `$ ` and understands, one per line: `stty size` (prints
//! `ROWS COLS`), `echo WORDS...`, `exit [N]` (ends with status N, default 0); any
//! other line prints `bash: WORD: command not found`. A `command` given in the
//! request runs instead of the shell prompt when it is `exit N` or `echo WORDS`
//! (the terminal then ends). Past the request's timeout it ends killed by signal 9
//! with `timed_out` (tokio time). Dropping the output stream ends it.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{
    Command, ExecEvent, ExecExit, ExecStream, ExecStreamSender, PtyControl, PtyInput, PtyRequest,
    PtySession, RuntimeError, MAX_TERMINAL_SIZE,
};

/// Keystroke batches and resizes queued towards the fake shell.
const INPUT_CAPACITY: usize = 64;
/// Output events buffered towards the consumer.
const OUTPUT_CAPACITY: usize = 64;

#[derive(Debug)]
enum Key {
    Bytes(Vec<u8>),
    Resize(u16, u16),
}

#[derive(Debug)]
struct FakeControl {
    keys: mpsc::Sender<Key>,
}

fn check_size(cols: u16, rows: u16) -> Result<(), RuntimeError> {
    let fits = |n: u16| (1..=MAX_TERMINAL_SIZE).contains(&n);
    if fits(cols) && fits(rows) {
        Ok(())
    } else {
        Err(RuntimeError::InvalidRequest {
            detail: format!("a terminal is 1 to {MAX_TERMINAL_SIZE} columns and rows"),
        })
    }
}

#[async_trait]
impl PtyControl for FakeControl {
    async fn write(&self, bytes: &[u8]) -> Result<(), RuntimeError> {
        // Like the agent: input after the end is dropped.
        let _ = self.keys.send(Key::Bytes(bytes.to_vec())).await;
        Ok(())
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        check_size(cols, rows)?;
        let _ = self.keys.send(Key::Resize(cols, rows)).await;
        Ok(())
    }
}

/// Opens a fake terminal with `pid`.
pub(crate) fn open(pid: u32, request: PtyRequest) -> Result<PtySession, RuntimeError> {
    check_size(request.cols, request.rows)?;
    let (keys_tx, keys_rx) = mpsc::channel(INPUT_CAPACITY);
    let (sender, output) = ExecStream::channel(OUTPUT_CAPACITY);
    let shell = FakeShell {
        cols: request.cols,
        rows: request.rows,
        line: Vec::new(),
    };
    tokio::spawn(shell.run(pid, request, keys_rx, sender));
    Ok(PtySession {
        pid,
        output,
        input: PtyInput::new(std::sync::Arc::new(FakeControl { keys: keys_tx })),
    })
}

struct FakeShell {
    cols: u16,
    rows: u16,
    line: Vec<u8>,
}

enum Step {
    Continue,
    Exit(i32),
}

fn exit(exit_code: Option<i32>, signal: Option<i32>, timed_out: bool) -> ExecEvent {
    ExecEvent::Finished(ExecExit {
        exit_code,
        signal,
        timed_out,
        oom_killed: false,
        stdout_truncated: false,
        stderr_truncated: false,
        duration: Duration::ZERO,
    })
}

impl FakeShell {
    async fn run(
        mut self,
        pid: u32,
        request: PtyRequest,
        mut keys: mpsc::Receiver<Key>,
        sender: ExecStreamSender,
    ) {
        let ExecStreamSender {
            events,
            mut cancelled,
        } = sender;
        if events.send(ExecEvent::Started { pid }).await.is_err() {
            return;
        }
        if let Some(command) = &request.command {
            let line = match command {
                Command::Shell(script) => script.clone(),
                Command::Argv(argv) => argv.join(" "),
            };
            let (out, step) = self.command(&line);
            let _ = events.send(ExecEvent::Stdout(out)).await;
            let code = match step {
                Step::Exit(code) => code,
                Step::Continue => 0,
            };
            let _ = events.send(exit(Some(code), None, false)).await;
            return;
        }
        if events
            .send(ExecEvent::Stdout(b"$ ".to_vec()))
            .await
            .is_err()
        {
            return;
        }
        let deadline = request.timeout.unwrap_or(Duration::from_secs(86_400));
        let timer = tokio::time::sleep(deadline);
        tokio::pin!(timer);
        loop {
            let key = tokio::select! {
                key = keys.recv() => key,
                _ = &mut cancelled => return,
                () = &mut timer => {
                    let _ = events.send(exit(None, Some(9), true)).await;
                    return;
                }
            };
            match key {
                None => return,
                Some(Key::Resize(cols, rows)) => {
                    self.cols = cols;
                    self.rows = rows;
                }
                Some(Key::Bytes(bytes)) => {
                    let (out, step) = self.typed(&bytes);
                    if !out.is_empty() && events.send(ExecEvent::Stdout(out)).await.is_err() {
                        return;
                    }
                    if let Step::Exit(code) = step {
                        let _ = events.send(exit(Some(code), None, false)).await;
                        return;
                    }
                }
            }
        }
    }

    /// Echoes `bytes` and runs every line they complete.
    fn typed(&mut self, bytes: &[u8]) -> (Vec<u8>, Step) {
        let mut out = Vec::new();
        for &byte in bytes {
            if byte == b'\n' || byte == b'\r' {
                out.extend_from_slice(b"\r\n");
                let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                let (result, step) = self.command(&line);
                out.extend_from_slice(&result);
                if let Step::Exit(_) = step {
                    return (out, step);
                }
                out.extend_from_slice(b"$ ");
            } else {
                out.push(byte);
                self.line.push(byte);
            }
        }
        (out, Step::Continue)
    }

    fn command(&self, line: &str) -> (Vec<u8>, Step) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => (Vec::new(), Step::Continue),
            ["stty", "size"] => (
                format!("{} {}\r\n", self.rows, self.cols).into_bytes(),
                Step::Continue,
            ),
            ["echo", rest @ ..] => (
                format!("{}\r\n", rest.join(" ")).into_bytes(),
                Step::Continue,
            ),
            ["exit"] => (Vec::new(), Step::Exit(0)),
            ["exit", code] => (Vec::new(), Step::Exit(code.parse().unwrap_or(2))),
            [word, ..] => (
                format!("bash: {word}: command not found\r\n").into_bytes(),
                Step::Continue,
            ),
        }
    }
}
