//! Background processes of [`crate::fake::FakeRuntime`] (feature `fake`), kept in
//! memory per sandbox. A process whose command is `cat` copies its stdin to its
//! stdout and exits 0 when stdin is closed; any other command runs until a
//! signal (`SIGSTOP`/`SIGCONT` aside) ends it. Output produced while nobody is
//! subscribed is buffered and handed to the next subscriber.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use codebox_types::SandboxId;
use tokio::sync::mpsc;

use crate::{
    Command, ExecEvent, ExecExit, ExecStream, ProcessInfo, ProcessRequest, RuntimeError,
    Subscription, ALLOWED_SIGNALS,
};

/// Fake pids start here (clear of the exec fakes' small pids).
const FIRST_PID: u32 = 1000;

#[derive(Debug, Default)]
pub(crate) struct FakeProcesses {
    sandboxes: HashMap<SandboxId, BTreeMap<u32, FakeProcess>>,
    last_pid: u32,
}

#[derive(Debug)]
struct FakeProcess {
    info: ProcessInfo,
    echoes_stdin: bool,
    buffered: Vec<u8>,
    subscribers: Vec<mpsc::Sender<ExecEvent>>,
}

impl FakeProcess {
    fn emit(&mut self, event: ExecEvent) {
        // A fake: a full or closed subscriber just misses the event.
        self.subscribers.retain(|subscriber| {
            subscriber.try_send(event.clone()).is_ok() || !subscriber.is_closed()
        });
        if self.subscribers.is_empty() {
            if let ExecEvent::Stdout(bytes) = event {
                self.buffered.extend_from_slice(&bytes);
            }
        }
    }

    fn finish(mut self, exit_code: Option<i32>, signal: Option<i32>) {
        let exit = ExecExit {
            exit_code,
            signal,
            timed_out: false,
            oom_killed: false,
            stdout_truncated: false,
            stderr_truncated: false,
            duration: Duration::ZERO,
        };
        self.emit(ExecEvent::Finished(exit));
    }
}

fn unknown(pid: u32) -> RuntimeError {
    RuntimeError::UnknownProcess { pid }
}

fn signal_number(name: &str) -> Option<i32> {
    let number = match name {
        "SIGHUP" => 1,
        "SIGINT" => 2,
        "SIGQUIT" => 3,
        "SIGKILL" => 9,
        "SIGUSR1" => 10,
        "SIGUSR2" => 12,
        "SIGTERM" => 15,
        "SIGCONT" => 18,
        "SIGSTOP" => 19,
        _ => return None,
    };
    Some(number)
}

impl FakeProcesses {
    pub(crate) fn start(&mut self, id: &SandboxId, request: ProcessRequest) -> u32 {
        self.last_pid = self.last_pid.max(FIRST_PID) + 1;
        let pid = self.last_pid;
        let command = match request.command {
            Command::Shell(script) => vec!["bash".into(), "-c".into(), script],
            Command::Argv(argv) => argv,
        };
        let echoes_stdin = command.last().is_some_and(|word| word == "cat");
        let process = FakeProcess {
            info: ProcessInfo {
                pid,
                command,
                tag: request.tag,
                stdin_open: request.stdin,
                subscribers: 0,
            },
            echoes_stdin,
            buffered: Vec::new(),
            subscribers: Vec::new(),
        };
        self.sandboxes
            .entry(id.clone())
            .or_default()
            .insert(pid, process);
        pid
    }

    pub(crate) fn list(&mut self, id: &SandboxId) -> Vec<ProcessInfo> {
        let Some(processes) = self.sandboxes.get_mut(id) else {
            return Vec::new();
        };
        processes
            .values_mut()
            .map(|process| {
                process
                    .subscribers
                    .retain(|subscriber| !subscriber.is_closed());
                let mut info = process.info.clone();
                info.subscribers = u32::try_from(process.subscribers.len()).unwrap_or(u32::MAX);
                info
            })
            .collect()
    }

    fn get(&mut self, id: &SandboxId, pid: u32) -> Result<&mut FakeProcess, RuntimeError> {
        self.sandboxes
            .get_mut(id)
            .and_then(|processes| processes.get_mut(&pid))
            .ok_or_else(|| unknown(pid))
    }

    fn remove(&mut self, id: &SandboxId, pid: u32) -> Option<FakeProcess> {
        self.sandboxes.get_mut(id)?.remove(&pid)
    }

    pub(crate) fn write_stdin(
        &mut self,
        id: &SandboxId,
        pid: u32,
        data: Vec<u8>,
    ) -> Result<(), RuntimeError> {
        let process = self.get(id, pid)?;
        if !process.info.stdin_open {
            return Err(RuntimeError::InvalidRequest {
                detail: format!("process {pid} has no open stdin"),
            });
        }
        if process.echoes_stdin {
            process.emit(ExecEvent::Stdout(data));
        }
        Ok(())
    }

    pub(crate) fn close_stdin(&mut self, id: &SandboxId, pid: u32) -> Result<(), RuntimeError> {
        let process = self.get(id, pid)?;
        process.info.stdin_open = false;
        if process.echoes_stdin {
            if let Some(process) = self.remove(id, pid) {
                process.finish(Some(0), None);
            }
        }
        Ok(())
    }

    pub(crate) fn signal(
        &mut self,
        id: &SandboxId,
        pid: u32,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let number = signal_number(name)
            .filter(|_| ALLOWED_SIGNALS.contains(&name))
            .ok_or_else(|| RuntimeError::InvalidRequest {
                detail: format!("signal {name:?} is not one of {ALLOWED_SIGNALS:?}"),
            })?;
        self.get(id, pid)?;
        if !matches!(name, "SIGSTOP" | "SIGCONT") {
            if let Some(process) = self.remove(id, pid) {
                process.finish(None, Some(number));
            }
        }
        Ok(())
    }

    pub(crate) fn subscribe(
        &mut self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<Subscription, RuntimeError> {
        let process = self.get(id, pid)?;
        let (sender, stream) = ExecStream::channel(64);
        if !process.buffered.is_empty() {
            let buffered = std::mem::take(&mut process.buffered);
            // A fresh channel of 64 has room for this one event.
            let _ = sender.events.try_send(ExecEvent::Stdout(buffered));
        }
        process.subscribers.push(sender.events);
        Ok(Subscription {
            dropped_bytes: 0,
            stream,
        })
    }

    /// The sandbox ended: its processes end too (killed).
    pub(crate) fn end_sandbox(&mut self, id: &SandboxId) {
        for (_, process) in self.sandboxes.remove(id).unwrap_or_default() {
            process.finish(None, Some(9));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, stdin: bool) -> ProcessRequest {
        ProcessRequest {
            command: Command::Argv(vec![command.into()]),
            env: BTreeMap::new(),
            cwd: None,
            stdin,
            tag: Some("t".into()),
            timeout: None,
        }
    }

    #[tokio::test]
    async fn cat_echoes_stdin_to_subscribers_and_ends_on_close() {
        let id = SandboxId::generate();
        let mut processes = FakeProcesses::default();
        let pid = processes.start(&id, request("cat", true));
        processes
            .write_stdin(&id, pid, b"early".to_vec())
            .expect("valid in this test");
        let mut subscription = processes.subscribe(&id, pid).expect("valid in this test");
        processes
            .write_stdin(&id, pid, b"late".to_vec())
            .expect("valid in this test");
        processes.close_stdin(&id, pid).expect("valid in this test");
        assert_eq!(
            subscription.stream.next().await,
            Some(ExecEvent::Stdout(b"early".to_vec()))
        );
        assert_eq!(
            subscription.stream.next().await,
            Some(ExecEvent::Stdout(b"late".to_vec()))
        );
        assert!(
            matches!(subscription.stream.next().await, Some(ExecEvent::Finished(exit)) if exit.exit_code == Some(0))
        );
        assert!(processes.list(&id).is_empty());
    }

    #[test]
    fn signals_end_sleepers_and_unknown_ones_are_refused() {
        let id = SandboxId::generate();
        let mut processes = FakeProcesses::default();
        let pid = processes.start(&id, request("sleep", false));
        assert!(processes.signal(&id, pid, "SIGBOGUS").is_err());
        processes
            .signal(&id, pid, "SIGTERM")
            .expect("valid in this test");
        assert!(matches!(
            processes.signal(&id, pid, "SIGTERM"),
            Err(RuntimeError::UnknownProcess { .. })
        ));
    }
}
