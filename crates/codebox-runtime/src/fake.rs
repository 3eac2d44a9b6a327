//! [`FakeRuntime`]: a deterministic in-memory [`Runtime`] for other crates' unit
//! tests (feature `fake`). It runs nothing: it interprets a tiny command
//! language. The server never uses it.
//!
//! Commands understood (as `Command::Shell(script)` or the words of an argv):
//! - `true`, `false`: exit 0 / 1;
//! - `echo WORDS...`: WORDS and a newline on stdout;
//! - `echo-stderr WORDS...`: the same on stderr;
//! - `exit N`: exit code N;
//! - `sleep SECONDS`: waits (tokio time, so paused-clock tests are instant);
//!   past the request's timeout it ends with `timed_out` and signal 9;
//! - `cat`: copies stdin to stdout;
//! - `yes`: floods stdout until `output_limit` is reached (truncated);
//! - `oom`: ends killed by signal 9 with `oom_killed`;
//! - `env NAME`: the value of NAME from the sandbox env merged with the exec env;
//! - anything else: exit 127 with `command not found` on stderr.
//!
//! Contexts (stateful code execution) behave in time like the agent's: output
//! streams while a cell runs, each context runs its executions one at a time in
//! arrival order, interrupt, timeout and dropping the stream stop the running
//! one (see `fake_code`). Statements, one per line (or `;`-separated):
//! - python / javascript / typescript: `NAME = EXPR` (also `let|const|var NAME =
//!   EXPR`); `print(EXPR)` / `console.log(EXPR)` to stdout; `print(EXPR,
//!   file=sys.stderr)` / `console.error(EXPR)` to stderr; `sleep(SECONDS)` (also
//!   `time.sleep`, tokio time); `while True: pass` (runs until timeout or
//!   interrupt); `os._exit(N)` (the "interpreter" crashes: state and count reset);
//!   `import ...` is ignored; any other line is an expression, and the value of the
//!   last line is the main result (`text/plain` as Python's repr). EXPR: integers,
//!   quoted strings, names, `+ - * /` (integer; `/ 0` raises `ZeroDivisionError`),
//!   an unknown name raises `NameError`. `html(EXPR)` yields a `text/html` result.
//! - bash: `cd DIR`, `pwd`, `echo WORDS` (`$NAME` expanded), `NAME=VALUE`,
//!   `sleep SECONDS`, `true`, `false` / `exit N` (error `ExitCode`).
//!
//! Terminals (`open_pty`) run a tiny line shell: see `fake_pty`.
//!
//! Failure injection: [`FakeRuntime::fail_next_create`],
//! [`FakeRuntime::fail_next_exec`], and [`FakeRuntime::end_sandbox`] (a sandbox
//! ending on its own, reported through `subscribe_exits`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use codebox_types::{RuntimeInfo, SandboxId, TerminationReason};
use tokio::sync::broadcast;

use crate::fake_code::FakeContexts;
use crate::fake_files::{read_body, FakeTree};
use crate::fake_processes::FakeProcesses;
use crate::{
    CodeRequest, CodeStream, Command, ContextInfo, ContextRequest, ExecEvent, ExecExit,
    ExecRequest, ExecStream, FileDownload, FileEntry, Listing, RecoverReport, Runtime,
    RuntimeError, SandboxExited, SandboxSpec, SandboxStats, UploadBody, WriteOptions,
};

/// The in-memory fake. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
    exits: broadcast::Sender<SandboxExited>,
    runtimes: Vec<RuntimeInfo>,
}

#[derive(Debug, Default)]
struct FakeState {
    sandboxes: HashMap<SandboxId, SandboxSpec>,
    execs: Vec<(SandboxId, ExecRequest)>,
    fail_create: Option<RuntimeError>,
    fail_exec: Option<RuntimeError>,
    next_pid: u32,
    leftovers: Vec<String>,
    shut_down: bool,
    contexts: FakeContexts,
    code_requests: Vec<(SandboxId, CodeRequest)>,
    files: HashMap<SandboxId, FakeTree>,
    processes: FakeProcesses,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

fn runtime(name: &str, language: &str, version: &str, aliases: &[&str]) -> RuntimeInfo {
    RuntimeInfo {
        name: name.into(),
        language: language.into(),
        version: version.into(),
        aliases: aliases.iter().map(|a| (*a).into()).collect(),
    }
}

impl FakeRuntime {
    /// A fake offering `python3` (3.11.2), `node` (20.0.0) and `bash` (5.2.15).
    pub fn new() -> Self {
        Self::with_runtimes(vec![
            runtime("python3", "python", "3.11.2", &["python", "python3.11"]),
            runtime("node", "javascript", "20.0.0", &["nodejs", "node20"]),
            runtime("bash", "bash", "5.2.15", &["sh"]),
        ])
    }

    pub fn with_runtimes(runtimes: Vec<RuntimeInfo>) -> Self {
        Self {
            state: Arc::default(),
            exits: broadcast::channel(64).0,
            runtimes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The next `create` fails with `error`.
    pub fn fail_next_create(&self, error: RuntimeError) {
        self.lock().fail_create = Some(error);
    }

    /// The next `exec` fails with `error`.
    pub fn fail_next_exec(&self, error: RuntimeError) {
        self.lock().fail_exec = Some(error);
    }

    /// Makes `recover` report (and "destroy") these leftovers.
    pub fn add_leftovers(&self, names: &[&str]) {
        self.lock()
            .leftovers
            .extend(names.iter().map(|n| (*n).to_owned()));
    }

    /// Ends a sandbox as if it died on its own (its contexts with it); `false`
    /// if unknown.
    pub fn end_sandbox(&self, id: &SandboxId, reason: TerminationReason) -> bool {
        let removed = {
            let mut state = self.lock();
            state.contexts.remove_sandbox(id);
            state.processes.end_sandbox(id);
            state.sandboxes.remove(id).is_some()
        };
        if removed {
            let _ = self.exits.send(SandboxExited {
                id: id.clone(),
                reason,
            });
        }
        removed
    }

    /// The spec a live sandbox was created with.
    pub fn spec(&self, id: &SandboxId) -> Option<SandboxSpec> {
        self.lock().sandboxes.get(id).cloned()
    }

    /// Every exec request so far, in order.
    pub fn execs(&self) -> Vec<(SandboxId, ExecRequest)> {
        self.lock().execs.clone()
    }

    /// Every code request so far, in order.
    pub fn code_requests(&self) -> Vec<(SandboxId, CodeRequest)> {
        self.lock().code_requests.clone()
    }

    /// Whether `shutdown` was called.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shut_down
    }
}

fn words(command: &Command) -> Vec<String> {
    match command {
        Command::Shell(script) => script.split_whitespace().map(str::to_owned).collect(),
        Command::Argv(argv) => argv.clone(),
    }
}

/// What a fake command produces.
#[derive(Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    oom_killed: bool,
    sleep: Duration,
}

fn interpret(words: &[String], request: &ExecRequest, env: &BTreeMap<String, String>) -> Outcome {
    let rest = words.get(1..).unwrap_or_default().join(" ");
    let exited = |code| Outcome {
        exit_code: Some(code),
        ..Outcome::default()
    };
    match words.first().map(String::as_str) {
        Some("true") => exited(0),
        Some("false") => exited(1),
        Some("echo") => Outcome {
            stdout: format!("{rest}\n").into_bytes(),
            ..exited(0)
        },
        Some("echo-stderr") => Outcome {
            stderr: format!("{rest}\n").into_bytes(),
            ..exited(0)
        },
        Some("exit") => exited(rest.trim().parse().unwrap_or(2)),
        Some("cat") => Outcome {
            stdout: request.stdin.clone().unwrap_or_default(),
            ..exited(0)
        },
        Some("yes") => Outcome {
            stdout: b"y\n".repeat(request.output_limit / 2 + 1),
            ..exited(0)
        },
        Some("oom") => Outcome {
            signal: Some(9),
            oom_killed: true,
            ..Outcome::default()
        },
        Some("env") => Outcome {
            stdout: format!("{}\n", env.get(rest.trim()).cloned().unwrap_or_default()).into_bytes(),
            ..exited(0)
        },
        Some("sleep") => sleep_outcome(rest.trim().parse().unwrap_or(0.0), request.timeout),
        other => Outcome {
            stderr: format!("{}: command not found\n", other.unwrap_or("")).into_bytes(),
            ..exited(127)
        },
    }
}

fn sleep_outcome(seconds: f64, timeout: Duration) -> Outcome {
    let wanted = Duration::from_secs_f64(seconds.max(0.0));
    if wanted > timeout {
        Outcome {
            signal: Some(9),
            timed_out: true,
            sleep: timeout,
            ..Outcome::default()
        }
    } else {
        Outcome {
            exit_code: Some(0),
            sleep: wanted,
            ..Outcome::default()
        }
    }
}

/// Keeps at most `limit` bytes; reports whether some were dropped.
fn cap(mut bytes: Vec<u8>, limit: usize) -> (Vec<u8>, bool) {
    let truncated = bytes.len() > limit;
    bytes.truncate(limit);
    (bytes, truncated)
}

async fn play(outcome: Outcome, request: ExecRequest, pid: u32, stream: crate::ExecStreamSender) {
    let events = stream.events;
    let _ = events.send(ExecEvent::Started { pid }).await;
    tokio::time::sleep(outcome.sleep).await;
    let (stdout, stdout_truncated) = cap(outcome.stdout, request.output_limit);
    let (stderr, stderr_truncated) = cap(outcome.stderr, request.output_limit);
    if !stdout.is_empty() {
        let _ = events.send(ExecEvent::Stdout(stdout)).await;
    }
    if !stderr.is_empty() {
        let _ = events.send(ExecEvent::Stderr(stderr)).await;
    }
    let exit = ExecExit {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        timed_out: outcome.timed_out,
        oom_killed: outcome.oom_killed,
        stdout_truncated,
        stderr_truncated,
        duration: outcome.sleep,
    };
    let _ = events.send(ExecEvent::Finished(exit)).await;
}

impl FakeRuntime {
    /// Runs `action` on the contexts if `id` is a live sandbox.
    fn with_contexts<T>(
        &self,
        id: &SandboxId,
        action: impl FnOnce(&mut FakeState) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut state = self.lock();
        if !state.sandboxes.contains_key(id) {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        action(&mut state)
    }
}

impl FakeRuntime {
    /// Runs `action` on the file tree of a live sandbox.
    fn with_tree<T>(
        &self,
        id: &SandboxId,
        action: impl FnOnce(&mut FakeTree) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut state = self.lock();
        let tree = state
            .files
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        action(tree)
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn isolation(&self) -> &'static str {
        "fake"
    }

    fn runtimes(&self) -> Vec<RuntimeInfo> {
        self.runtimes.clone()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        if let Some(error) = state.fail_create.take() {
            return Err(error);
        }
        if !self.runtimes.iter().any(|r| r.answers_to(&spec.runtime)) {
            return Err(RuntimeError::UnknownRuntime { name: spec.runtime });
        }
        if state.sandboxes.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists { id: spec.id });
        }
        let tree = FakeTree::new(spec.limits.workspace_bytes);
        state.files.insert(spec.id.clone(), tree);
        state.sandboxes.insert(spec.id.clone(), spec);
        Ok(())
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        let (env, pid) = {
            let mut state = self.lock();
            if let Some(error) = state.fail_exec.take() {
                return Err(error);
            }
            let spec = state
                .sandboxes
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
            let mut env = spec.env.clone();
            env.extend(request.env.clone());
            state.execs.push((id.clone(), request.clone()));
            state.next_pid += 1;
            (env, state.next_pid + 1)
        };
        let outcome = interpret(&words(&request.command), &request, &env);
        let (sender, stream) = ExecStream::channel(16);
        tokio::spawn(play(outcome, request, pid, sender));
        Ok(stream)
    }

    async fn stats(&self, id: &SandboxId) -> Result<SandboxStats, RuntimeError> {
        let state = self.lock();
        let spec = state
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        Ok(SandboxStats {
            cpu_limit_millicores: (spec.resources.cpu * 1000.0).round() as u64,
            memory_limit_bytes: spec.resources.memory << 20,
            pids: 1,
            pids_limit: u64::from(spec.limits.pids),
            disk_limit_bytes: spec.limits.workspace_bytes,
            ..SandboxStats::default()
        })
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.contexts.remove_sandbox(id);
        state.files.remove(id);
        state.processes.end_sandbox(id);
        state
            .sandboxes
            .remove(id)
            .map(drop)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })
    }

    async fn list(&self) -> Result<Vec<SandboxId>, RuntimeError> {
        Ok(self.lock().sandboxes.keys().cloned().collect())
    }

    async fn recover(&self) -> Result<RecoverReport, RuntimeError> {
        Ok(RecoverReport {
            destroyed: std::mem::take(&mut self.lock().leftovers),
        })
    }

    async fn check_ready(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn subscribe_exits(&self) -> broadcast::Receiver<SandboxExited> {
        self.exits.subscribe()
    }

    async fn create_context(
        &self,
        id: &SandboxId,
        request: ContextRequest,
    ) -> Result<ContextInfo, RuntimeError> {
        self.with_contexts(id, |state| state.contexts.create(id, request))
    }

    async fn list_contexts(&self, id: &SandboxId) -> Result<Vec<ContextInfo>, RuntimeError> {
        self.with_contexts(id, |state| Ok(state.contexts.list(id)))
    }

    async fn execute_code(
        &self,
        id: &SandboxId,
        request: CodeRequest,
    ) -> Result<CodeStream, RuntimeError> {
        self.with_contexts(id, |state| {
            state.code_requests.push((id.clone(), request.clone()));
            state.contexts.execute(id, request)
        })
    }

    async fn interrupt_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.with_contexts(id, |state| state.contexts.interrupt(id, context))
    }

    async fn restart_context(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<ContextInfo, RuntimeError> {
        self.with_contexts(id, |state| state.contexts.restart(id, context))
    }

    async fn destroy_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.with_contexts(id, |state| state.contexts.destroy(id, context))
    }

    async fn shutdown(&self) {
        let mut state = self.lock();
        state.contexts = FakeContexts::default();
        state.sandboxes.clear();
        state.files.clear();
        state.shut_down = true;
    }

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<FileEntry, RuntimeError> {
        self.with_tree(id, |tree| tree.stat(path))
    }

    async fn list_files(
        &self,
        id: &SandboxId,
        path: &str,
        depth: u32,
    ) -> Result<Listing, RuntimeError> {
        self.with_tree(id, |tree| tree.list(path, depth))
    }

    async fn make_dir(
        &self,
        id: &SandboxId,
        path: &str,
        parents: bool,
    ) -> Result<(), RuntimeError> {
        self.with_tree(id, |tree| tree.make_dir(path, parents))
    }

    async fn move_path(
        &self,
        id: &SandboxId,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), RuntimeError> {
        self.with_tree(id, |tree| tree.move_path(from, to, overwrite))
    }

    async fn remove_path(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<(), RuntimeError> {
        self.with_tree(id, |tree| tree.remove(path, recursive))
    }

    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileDownload, RuntimeError> {
        self.with_tree(id, |tree| tree.read(path, offset, length))
    }

    async fn write_file(
        &self,
        id: &SandboxId,
        path: &str,
        options: WriteOptions,
        body: UploadBody,
    ) -> Result<u64, RuntimeError> {
        let target = self.with_tree(id, |tree| tree.prepare_write(path, &options))?;
        let content = read_body(body, &target, options.limit).await?;
        self.with_tree(id, |tree| tree.commit_write(target, content))
    }

    async fn start_process(
        &self,
        id: &SandboxId,
        request: crate::ProcessRequest,
    ) -> Result<u32, RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        Ok(self.lock().processes.start(id, request))
    }

    async fn list_processes(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<crate::ProcessInfo>, RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        Ok(self.lock().processes.list(id))
    }

    async fn write_process_stdin(
        &self,
        id: &SandboxId,
        pid: u32,
        data: Vec<u8>,
    ) -> Result<(), RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        self.lock().processes.write_stdin(id, pid, data)
    }

    async fn close_process_stdin(&self, id: &SandboxId, pid: u32) -> Result<(), RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        self.lock().processes.close_stdin(id, pid)
    }

    async fn signal_process(
        &self,
        id: &SandboxId,
        pid: u32,
        signal: &str,
    ) -> Result<(), RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        self.lock().processes.signal(id, pid, signal)
    }

    async fn subscribe_process(
        &self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<crate::Subscription, RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        self.lock().processes.subscribe(id, pid)
    }

    async fn watch(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<crate::FileWatch, RuntimeError> {
        self.with_tree(id, |tree| tree.watch(path, recursive))
    }

    async fn open_pty(
        &self,
        id: &SandboxId,
        request: crate::PtyRequest,
    ) -> Result<crate::PtySession, RuntimeError> {
        self.with_tree(id, |_| Ok(()))?;
        let pid = {
            let mut state = self.lock();
            state.next_pid += 1;
            state.next_pid
        };
        crate::fake_pty::open(pid, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CodeEvent, SandboxLimits};
    use codebox_types::Resources;

    fn spec(id: &SandboxId) -> SandboxSpec {
        SandboxSpec {
            id: id.clone(),
            runtime: "python".into(),
            resources: Resources::default(),
            limits: SandboxLimits::default(),
            env: BTreeMap::from([("A".into(), "sandbox".into())]),
            network: false,
        }
    }

    fn request(script: &str) -> ExecRequest {
        ExecRequest {
            command: Command::Shell(script.into()),
            env: BTreeMap::new(),
            cwd: None,
            stdin: Some(b"input".to_vec()),
            timeout: Duration::from_secs(1),
            output_limit: 8,
        }
    }

    async fn run(fake: &FakeRuntime, id: &SandboxId, script: &str) -> crate::ExecOutput {
        let stream = fake.exec(id, request(script)).await.expect("exec");
        stream.collect().await.expect("collect")
    }

    #[tokio::test(start_paused = true)]
    async fn commands_behave_as_documented() {
        let fake = FakeRuntime::new();
        let id = SandboxId::generate();
        fake.create(spec(&id)).await.expect("create");
        let out = run(&fake, &id, "echo hi").await;
        assert_eq!(out.stdout, b"hi\n");
        let out = run(&fake, &id, "exit 3").await;
        assert_eq!(out.exit.expect("exit").exit_code, Some(3));
        let out = run(&fake, &id, "cat").await;
        assert_eq!(out.stdout, b"input");
        let out = run(&fake, &id, "yes").await;
        assert_eq!(out.stdout.len(), 8);
        assert!(out.exit.expect("exit").stdout_truncated);
        let out = run(&fake, &id, "sleep 5").await;
        assert!(out.exit.expect("exit").timed_out);
        let out = run(&fake, &id, "env A").await;
        assert_eq!(out.stdout, b"sandbox\n");
        let out = run(&fake, &id, "nope").await;
        assert_eq!(out.exit.expect("exit").exit_code, Some(127));
        assert_eq!(fake.execs().len(), 7);
    }

    fn code(code: &str) -> CodeRequest {
        CodeRequest {
            context: "main".into(),
            code: code.into(),
            timeout: Duration::from_secs(1),
            env: BTreeMap::new(),
            output_limit: 1024,
        }
    }

    async fn run_code(fake: &FakeRuntime, id: &SandboxId, text: &str) -> crate::CodeOutput {
        let stream = fake.execute_code(id, code(text)).await.expect("execute");
        stream.collect().await.expect("collect")
    }

    #[tokio::test(start_paused = true)]
    async fn contexts_keep_state_until_restarted() {
        let fake = FakeRuntime::new();
        let id = SandboxId::generate();
        fake.create(spec(&id)).await.expect("create");
        let request = ContextRequest {
            context: "main".into(),
            language: crate::Language::Python,
            cwd: None,
            env: BTreeMap::new(),
        };
        fake.create_context(&id, request.clone())
            .await
            .expect("context");
        assert!(fake.create_context(&id, request).await.is_err());
        run_code(&fake, &id, "x = 42").await;
        let out = run_code(&fake, &id, "print(x)\nx + 1").await;
        assert_eq!(out.stdout, b"42\n");
        assert_eq!(out.text(), Some("43"));
        assert_eq!(out.summary.expect("summary").execution_count, 2);
        let out = run_code(&fake, &id, "1/0").await;
        assert_eq!(out.outcome(), Some(crate::ExecutionOutcome::Error));
        assert_eq!(out.error.expect("error").name, "ZeroDivisionError");
        let out = run_code(&fake, &id, "sleep(5)").await;
        assert_eq!(out.outcome(), Some(crate::ExecutionOutcome::Timeout));
        assert_eq!(run_code(&fake, &id, "x").await.text(), Some("42"));
        fake.restart_context(&id, "main").await.expect("restart");
        let out = run_code(&fake, &id, "x").await;
        assert_eq!(out.error.expect("error").name, "NameError");
        assert_eq!(fake.list_contexts(&id).await.expect("list").len(), 1);
        assert_eq!(fake.code_requests().len(), 6);
        fake.destroy_context(&id, "main").await.expect("destroy");
        assert!(fake.execute_code(&id, code("1")).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn queued_execution_waits_and_interrupt_stops_the_running_one() {
        let fake = FakeRuntime::new();
        let id = SandboxId::generate();
        fake.create(spec(&id)).await.expect("create");
        let request = ContextRequest {
            context: "main".into(),
            language: crate::Language::Python,
            cwd: None,
            env: BTreeMap::new(),
        };
        fake.create_context(&id, request).await.expect("context");
        let mut running = fake
            .execute_code(&id, code("print('go')\nwhile True: pass"))
            .await
            .expect("execute");
        let queued = fake.execute_code(&id, code("7")).await.expect("queue");
        // Once "go" streamed the first execution is inside its endless loop.
        assert!(matches!(running.next().await, Some(CodeEvent::Stdout(_))));
        fake.interrupt_context(&id, "main")
            .await
            .expect("interrupt");
        let out = running.collect().await.expect("collect");
        assert_eq!(out.outcome(), Some(crate::ExecutionOutcome::Interrupted));
        assert_eq!(out.error.expect("error").name, "KeyboardInterrupt");
        let out = queued.collect().await.expect("collect");
        assert_eq!(out.text(), Some("7"));
    }

    #[tokio::test]
    async fn lifecycle_and_injected_failures() {
        let fake = FakeRuntime::new();
        let id = SandboxId::generate();
        fake.fail_next_create(RuntimeError::AtCapacity {
            detail: "full".into(),
        });
        assert!(fake.create(spec(&id)).await.is_err());
        fake.create(spec(&id)).await.expect("create");
        assert!(matches!(
            fake.create(spec(&id)).await,
            Err(RuntimeError::AlreadyExists { .. })
        ));
        let mut exits = fake.subscribe_exits();
        assert!(fake.end_sandbox(&id, TerminationReason::Oom));
        let exited = exits.recv().await.expect("exit event");
        assert_eq!(exited.reason, TerminationReason::Oom);
        assert!(matches!(
            fake.destroy(&id).await,
            Err(RuntimeError::NotFound { .. })
        ));
    }
}
