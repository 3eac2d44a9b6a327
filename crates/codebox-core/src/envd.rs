//! What the E2B envd surface (`codebox-envd`) needs beyond the native API:
//! process output as raw bytes (E2B carries base64 bytes, not text), from a
//! process's very start, and processes started from an envd argv.
//!
//! Ownership and liveness are checked exactly as for the native routes.

use codebox_runtime::{Command, ProcessRequest, RuntimeError, Subscription};
use codebox_store::User;

use crate::error::CoreError;
use crate::Core;

impl Core {
    /// A process refusal as the client's error; a lost sandbox as `Gone`.
    async fn envd_failed(&self, id: &codebox_types::SandboxId, error: RuntimeError) -> CoreError {
        match error {
            RuntimeError::UnknownProcess { .. } => CoreError::ProcessNotFound,
            other => self.exec_failed(id, other).await,
        }
    }

    /// Subscribes to a process's output as raw byte chunks, from now on (plus
    /// what the agent buffered while nobody listened, e.g. since its start).
    pub async fn process_subscription(
        &self,
        user: &User,
        id: &str,
        pid: u32,
    ) -> Result<Subscription, CoreError> {
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self.runtime.subscribe_process(&sandbox, pid).await {
            Ok(subscription) => Ok(subscription),
            Err(error) => Err(self.envd_failed(&sandbox, error).await),
        }
    }

    /// Starts a background process and subscribes to its output from its very
    /// first byte to its exit. The agent forgets a process that ended before
    /// anyone subscribed, so the program first waits on a one-byte stdin gate
    /// (`bash -c 'read -n 1; exec "$@"'`, the same pid), released once the
    /// subscription is in place: by a newline when `request.stdin` keeps stdin
    /// open, else by closing stdin.
    pub async fn start_subscribed_process(
        &self,
        user: &User,
        id: &str,
        request: ProcessRequest,
    ) -> Result<(u32, Subscription), CoreError> {
        validate_command(&request.command)?;
        let keep_stdin = request.stdin;
        let argv = match request.command {
            Command::Argv(argv) => argv,
            Command::Shell(script) => vec!["bash".into(), "-c".into(), script],
        };
        let gated: Vec<String> = ["bash", "-c", GATE_SCRIPT, "envd-gate"]
            .into_iter()
            .map(str::to_owned)
            .chain(argv)
            .collect();
        let request = ProcessRequest {
            command: Command::Argv(gated),
            stdin: true,
            ..request
        };
        let pid = self.start_raw_process(user, id, request).await?;
        let pid_text = pid.to_string();
        let released = async {
            let subscription = self.process_subscription(user, id, pid).await?;
            // One operation releases the gate: after it the program may end at
            // any moment (and be forgotten), so nothing may follow.
            if keep_stdin {
                self.process_stdin(user, id, &pid_text, b"\n".to_vec())
                    .await?;
            } else {
                // EOF ends the gate's `read` too; the program then reads EOF.
                self.close_process_stdin(user, id, &pid_text).await?;
            }
            Ok::<_, CoreError>(subscription)
        };
        match released.await {
            Ok(subscription) => Ok((pid, subscription)),
            Err(error) => {
                // Never leave a gated process waiting for ever.
                let kill = crate::SignalRequest {
                    signal: "SIGKILL".to_owned(),
                };
                let _ = self.signal_process(user, id, &pid_text, kill).await;
                Err(error)
            }
        }
    }

    /// Starts a background process from an already built runtime request (the
    /// envd surface builds argv and env itself); returns its pid.
    pub async fn start_raw_process(
        &self,
        user: &User,
        id: &str,
        request: ProcessRequest,
    ) -> Result<u32, CoreError> {
        validate_command(&request.command)?;
        if let Some(tag) = &request.tag {
            if tag.len() > crate::processes::MAX_TAG_BYTES || tag.chars().any(char::is_control) {
                return Err(CoreError::validation(
                    "tag",
                    "at most 256 bytes without control characters",
                ));
            }
        }
        let cwd = crate::requests::validate_cwd(request.cwd)?;
        let env = crate::requests::validate_map("envs", Some(request.env), self.env_bounds())?;
        let request = ProcessRequest {
            env,
            cwd,
            ..request
        };
        let sandbox = self.running_sandbox(user, id).await?.id;
        match self.runtime.start_process(&sandbox, request).await {
            Ok(pid) => {
                tracing::info!(sandbox_id = %sandbox, pid, "envd process started");
                Ok(pid)
            }
            Err(error) => Err(self.envd_failed(&sandbox, error).await),
        }
    }
}

/// The gate a process started by [`Core::start_subscribed_process`] waits on:
/// one byte of stdin, then it becomes the real program (same pid).
const GATE_SCRIPT: &str = "IFS= read -r -n 1 _; exec \"$@\"";

/// Most argv words.
const MAX_ARGV: usize = 1025;

/// A non-empty command without NUL, at most [`MAX_ARGV`] words.
fn validate_command(command: &Command) -> Result<(), CoreError> {
    let valid = match command {
        Command::Shell(script) => !script.is_empty() && !script.contains('\0'),
        Command::Argv(argv) => {
            argv.first().is_some_and(|program| !program.is_empty())
                && argv.len() <= MAX_ARGV
                && argv.iter().all(|word| !word.contains('\0'))
        }
    };
    if valid {
        Ok(())
    } else {
        Err(CoreError::validation(
            "cmd",
            format!("must be a non-empty command of at most {MAX_ARGV} words without NUL"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_checked() {
        assert!(validate_command(&Command::Argv(vec!["ls".into()])).is_ok());
        assert!(validate_command(&Command::Argv(vec![])).is_err());
        assert!(validate_command(&Command::Argv(vec!["".into()])).is_err());
        assert!(validate_command(&Command::Argv(vec!["a\0b".into()])).is_err());
        assert!(validate_command(&Command::Shell(String::new())).is_err());
        assert!(validate_command(&Command::Argv(vec!["x".into(); MAX_ARGV + 1])).is_err());
    }
}
