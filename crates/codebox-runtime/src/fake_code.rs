//! [`CodeFakeRuntime`]: the in-memory [`crate::fake::FakeRuntime`] plus stateful
//! code execution that behaves in time like the agent's (output streamed while a
//! cell runs, per-context queues, interrupt, timeout, cancel on drop), for the
//! core's and the server's tests. Feature `fake` only; the server never uses it.
//! Lifecycle and commands are the wrapped `FakeRuntime`'s (its own simpler,
//! immediate context support is not used through this wrapper).
//!
//! Each context has one worker task that runs its executions one at a time in
//! arrival order (like the agent). Statements, one per line (or `;`-separated):
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
//! A timeout or an interrupt ends the execution `timeout` / `interrupted` with a
//! `KeyboardInterrupt` error and the state kept, as the real runners do.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use codebox_types::{RuntimeInfo, SandboxId};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::fake::FakeRuntime;
use crate::{
    CodeEvent, CodeRequest, CodeStream, ContextInfo, ContextRequest, ExecRequest, ExecStream,
    ExecutionError, ExecutionOutcome, ExecutionResult, ExecutionSummary, Language, RecoverReport,
    Runtime, RuntimeError, SandboxExited, SandboxSpec, SandboxStats,
};

/// Every context of every fake sandbox.
#[derive(Debug, Default)]
struct FakeContexts {
    sandboxes: HashMap<SandboxId, BTreeMap<String, FakeContext>>,
    next_pid: u32,
}

#[derive(Debug)]
struct FakeContext {
    info: ContextInfo,
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
}

#[derive(Debug, Default)]
struct Shared {
    vars: Mutex<Vars>,
    interrupt: Notify,
    busy: AtomicBool,
}

#[derive(Debug, Default)]
struct Vars {
    values: BTreeMap<String, Value>,
    count: u64,
    cwd: String,
}

#[derive(Debug)]
struct Job {
    request: CodeRequest,
    events: mpsc::Sender<CodeEvent>,
    cancelled: oneshot::Receiver<()>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(i64),
    Str(String),
}

impl Value {
    fn repr(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Str(s) => format!("'{s}'"),
        }
    }

    fn show(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Str(s) => s.clone(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn unknown_context(context: &str) -> RuntimeError {
    RuntimeError::InvalidRequest {
        detail: format!("no context {context:?}"),
    }
}

impl FakeContexts {
    fn create(
        &mut self,
        id: &SandboxId,
        request: ContextRequest,
    ) -> Result<ContextInfo, RuntimeError> {
        let contexts = self.sandboxes.entry(id.clone()).or_default();
        if contexts.contains_key(&request.context) {
            return Err(RuntimeError::InvalidRequest {
                detail: format!("context {:?} already exists", request.context),
            });
        }
        self.next_pid += 1;
        let info = ContextInfo {
            context: request.context.clone(),
            language: request.language,
            cwd: request.cwd.clone(),
            pid: self.next_pid + 100,
        };
        let shared = Arc::new(Shared::default());
        lock(&shared.vars).cwd = request.cwd.unwrap_or_else(|| "/home/user".into());
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(worker(Arc::clone(&shared), request.language, queue));
        let context = FakeContext {
            info: info.clone(),
            shared,
            jobs,
        };
        contexts.insert(request.context, context);
        Ok(info)
    }

    fn list(&self, id: &SandboxId) -> Vec<ContextInfo> {
        self.sandboxes
            .get(id)
            .map(|contexts| contexts.values().map(|c| c.info.clone()).collect())
            .unwrap_or_default()
    }

    fn get(&self, id: &SandboxId, context: &str) -> Result<&FakeContext, RuntimeError> {
        self.sandboxes
            .get(id)
            .and_then(|contexts| contexts.get(context))
            .ok_or_else(|| unknown_context(context))
    }

    fn execute(&self, id: &SandboxId, request: CodeRequest) -> Result<CodeStream, RuntimeError> {
        let context = self.get(id, &request.context)?;
        let (sender, stream) = CodeStream::channel(16);
        let job = Job {
            request,
            events: sender.events,
            cancelled: sender.cancelled,
        };
        context
            .jobs
            .send(job)
            .map_err(|_| unknown_context(&context.info.context))?;
        Ok(stream)
    }

    fn interrupt(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        let context = self.get(id, context)?;
        if context.shared.busy.load(Ordering::SeqCst) {
            context.shared.interrupt.notify_one();
        }
        Ok(())
    }

    fn restart(&mut self, id: &SandboxId, context: &str) -> Result<ContextInfo, RuntimeError> {
        self.next_pid += 1;
        let pid = self.next_pid + 100;
        let found = self
            .sandboxes
            .get_mut(id)
            .and_then(|contexts| contexts.get_mut(context))
            .ok_or_else(|| unknown_context(context))?;
        found.info.pid = pid;
        let mut vars = lock(&found.shared.vars);
        vars.values.clear();
        vars.count = 0;
        Ok(found.info.clone())
    }

    fn destroy(&mut self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        let removed = self
            .sandboxes
            .get_mut(id)
            .and_then(|contexts| contexts.remove(context))
            .ok_or_else(|| unknown_context(context))?;
        // Its worker ends once the queue is empty; a running execution is stopped.
        removed.shared.interrupt.notify_one();
        Ok(())
    }

    /// Forgets a sandbox's contexts (it was destroyed).
    fn remove_sandbox(&mut self, id: &SandboxId) {
        if let Some(contexts) = self.sandboxes.remove(id) {
            for context in contexts.values() {
                context.shared.interrupt.notify_one();
            }
        }
    }
}

/// [`FakeRuntime`] with streaming, queued, interruptible code execution.
/// Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct CodeFakeRuntime {
    inner: FakeRuntime,
    contexts: Arc<Mutex<FakeContexts>>,
    requests: Arc<Mutex<Vec<(SandboxId, CodeRequest)>>>,
}

impl CodeFakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// The wrapped fake (failure injection, exec history).
    pub fn fake(&self) -> &FakeRuntime {
        &self.inner
    }

    /// Every code request so far, in order.
    pub fn code_requests(&self) -> Vec<(SandboxId, CodeRequest)> {
        lock(&self.requests).clone()
    }

    /// The contexts, if `id` is a live sandbox.
    fn live(&self, id: &SandboxId) -> Result<MutexGuard<'_, FakeContexts>, RuntimeError> {
        if self.inner.spec(id).is_none() {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        Ok(lock(&self.contexts))
    }
}

/// Failure injection and history of the wrapped fake (`fail_next_create`,
/// `execs`, ...) are reachable directly.
impl std::ops::Deref for CodeFakeRuntime {
    type Target = FakeRuntime;

    fn deref(&self) -> &FakeRuntime {
        &self.inner
    }
}

#[async_trait]
impl Runtime for CodeFakeRuntime {
    fn isolation(&self) -> &'static str {
        self.inner.isolation()
    }

    fn runtimes(&self) -> Vec<RuntimeInfo> {
        self.inner.runtimes()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<(), RuntimeError> {
        self.inner.create(spec).await
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        self.inner.exec(id, request).await
    }

    async fn stats(&self, id: &SandboxId) -> Result<SandboxStats, RuntimeError> {
        self.inner.stats(id).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        lock(&self.contexts).remove_sandbox(id);
        self.inner.destroy(id).await
    }

    async fn list(&self) -> Result<Vec<SandboxId>, RuntimeError> {
        self.inner.list().await
    }

    async fn recover(&self) -> Result<RecoverReport, RuntimeError> {
        self.inner.recover().await
    }

    async fn check_ready(&self) -> Result<(), RuntimeError> {
        self.inner.check_ready().await
    }

    fn subscribe_exits(&self) -> broadcast::Receiver<SandboxExited> {
        self.inner.subscribe_exits()
    }

    async fn shutdown(&self) {
        *lock(&self.contexts) = FakeContexts::default();
        self.inner.shutdown().await;
    }

    async fn create_context(
        &self,
        id: &SandboxId,
        request: ContextRequest,
    ) -> Result<ContextInfo, RuntimeError> {
        self.live(id)?.create(id, request)
    }

    async fn list_contexts(&self, id: &SandboxId) -> Result<Vec<ContextInfo>, RuntimeError> {
        Ok(self.live(id)?.list(id))
    }

    async fn execute_code(
        &self,
        id: &SandboxId,
        request: CodeRequest,
    ) -> Result<CodeStream, RuntimeError> {
        let contexts = self.live(id)?;
        lock(&self.requests).push((id.clone(), request.clone()));
        contexts.execute(id, request)
    }

    async fn interrupt_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.live(id)?.interrupt(id, context)
    }

    async fn restart_context(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<ContextInfo, RuntimeError> {
        self.live(id)?.restart(id, context)
    }

    async fn destroy_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.live(id)?.destroy(id, context)
    }
}

async fn worker(shared: Arc<Shared>, language: Language, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = queue.recv().await {
        if job.events.is_closed() {
            continue; // Cancelled while queued.
        }
        shared.busy.store(true, Ordering::SeqCst);
        run_job(&shared, language, job).await;
        shared.busy.store(false, Ordering::SeqCst);
    }
}

/// What one statement does.
enum Step {
    Nothing,
    Stdout(String),
    Stderr(String),
    Value(Value),
    Html(String),
    Sleep(Duration),
    Forever,
    Raise(ExecutionError),
    Crash,
}

/// The output collected so far and the limits of one execution.
struct Run {
    events: mpsc::Sender<CodeEvent>,
    room: [usize; 2],
    truncated: [bool; 2],
}

impl Run {
    async fn output(&mut self, index: usize, text: String) {
        let mut bytes = text.into_bytes();
        if bytes.len() > self.room[index] {
            bytes.truncate(self.room[index]);
            self.truncated[index] = true;
        }
        self.room[index] -= bytes.len();
        if bytes.is_empty() {
            return;
        }
        let event = if index == 0 {
            CodeEvent::Stdout(bytes)
        } else {
            CodeEvent::Stderr(bytes)
        };
        let _ = self.events.send(event).await;
    }
}

async fn run_job(shared: &Shared, language: Language, job: Job) {
    let Job {
        request,
        events,
        mut cancelled,
    } = job;
    let started = tokio::time::Instant::now();
    let deadline = started + request.timeout;
    let count = {
        let mut vars = lock(&shared.vars);
        vars.count += 1;
        vars.count
    };
    let mut run = Run {
        events: events.clone(),
        room: [request.output_limit; 2],
        truncated: [false; 2],
    };
    let lines = statements(&request.code);
    let mut outcome = ExecutionOutcome::Ok;
    let mut restarted = false;
    let mut last_value = None;
    for (number, line) in lines.iter().enumerate() {
        let step = {
            let mut vars = lock(&shared.vars);
            interpret(&mut vars, language, line, number + 1)
        };
        last_value = None;
        let wait = match step {
            Step::Nothing => None,
            Step::Stdout(text) => {
                run.output(0, text).await;
                None
            }
            Step::Stderr(text) => {
                run.output(1, text).await;
                None
            }
            Step::Value(value) => {
                last_value = Some(value);
                None
            }
            Step::Html(html) => {
                let data = BTreeMap::from([
                    ("text/html".to_owned(), html),
                    ("text/plain".to_owned(), "<HTML>".to_owned()),
                ]);
                let result = ExecutionResult {
                    data,
                    is_main_result: false,
                    truncated: false,
                };
                let _ = events.send(CodeEvent::Result(result)).await;
                None
            }
            Step::Sleep(duration) => Some(tokio::time::Instant::now() + duration),
            Step::Forever => Some(deadline + Duration::from_secs(1)),
            Step::Raise(error) => {
                outcome = ExecutionOutcome::Error;
                let _ = events.send(CodeEvent::Error(error)).await;
                break;
            }
            Step::Crash => {
                outcome = ExecutionOutcome::Crashed;
                restarted = true;
                let mut vars = lock(&shared.vars);
                vars.values.clear();
                vars.count = 0;
                break;
            }
        };
        if let Some(until) = wait {
            let stopped = tokio::select! {
                _ = tokio::time::sleep_until(until.min(deadline)) => {
                    (until > deadline).then_some(ExecutionOutcome::Timeout)
                }
                _ = shared.interrupt.notified() => Some(ExecutionOutcome::Interrupted),
                _ = &mut cancelled => Some(ExecutionOutcome::Interrupted),
            };
            if let Some(stopped) = stopped {
                outcome = stopped;
                let error = keyboard_interrupt(language);
                let _ = events.send(CodeEvent::Error(error)).await;
                break;
            }
        }
    }
    if let (ExecutionOutcome::Ok, Some(value)) = (outcome, last_value) {
        let result = ExecutionResult {
            data: BTreeMap::from([("text/plain".to_owned(), value.repr())]),
            is_main_result: true,
            truncated: false,
        };
        let _ = events.send(CodeEvent::Result(result)).await;
    }
    let summary = ExecutionSummary {
        execution_count: if restarted { 0 } else { count },
        outcome,
        duration: started.elapsed(),
        restarted,
        stdout_truncated: run.truncated[0],
        stderr_truncated: run.truncated[1],
    };
    let _ = events.send(CodeEvent::Done(summary)).await;
}

fn keyboard_interrupt(language: Language) -> ExecutionError {
    if language == Language::Bash {
        return ExecutionError {
            name: "ExitCode".into(),
            value: "130".into(),
            traceback: String::new(),
        };
    }
    ExecutionError {
        name: "KeyboardInterrupt".into(),
        value: String::new(),
        traceback: "Traceback (most recent call last):\nKeyboardInterrupt".into(),
    }
}

fn statements(code: &str) -> Vec<String> {
    code.lines()
        .flat_map(|line| line.split(';'))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn raise(name: &str, value: String, line: usize) -> Step {
    let traceback = format!(
        "Traceback (most recent call last):\n  File \"<cell>\", line {line}, in <module>\n{name}: {value}"
    );
    Step::Raise(ExecutionError {
        name: name.to_owned(),
        value,
        traceback,
    })
}

fn interpret(vars: &mut Vars, language: Language, line: &str, number: usize) -> Step {
    if language == Language::Bash {
        return interpret_bash(vars, line);
    }
    let call = |prefix: &str| {
        line.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .map(str::to_owned)
    };
    if line.starts_with("import ") || line.starts_with("from ") {
        return Step::Nothing;
    }
    if line == "while True: pass" || line == "while (true) {}" {
        return Step::Forever;
    }
    if let Some(code) = call("os._exit(") {
        let _ = code;
        return Step::Crash;
    }
    if let Some(arg) = call("sleep(").or_else(|| call("time.sleep(")) {
        let seconds: f64 = arg.trim().parse().unwrap_or(0.0);
        return Step::Sleep(Duration::from_secs_f64(seconds.clamp(0.0, 1e6)));
    }
    if let Some(arg) = call("print(").or_else(|| call("console.log(")) {
        if let Some(expr) = arg.strip_suffix(", file=sys.stderr") {
            return evaluated(vars, expr, number, |v| Step::Stderr(v.show() + "\n"));
        }
        return evaluated(vars, &arg, number, |v| Step::Stdout(v.show() + "\n"));
    }
    if let Some(arg) = call("console.error(") {
        return evaluated(vars, &arg, number, |v| Step::Stderr(v.show() + "\n"));
    }
    if let Some(arg) = call("html(") {
        return evaluated(vars, &arg, number, |v| Step::Html(v.show()));
    }
    if let Some((name, expr)) = assignment(line) {
        return match eval(vars, expr) {
            Ok(value) => {
                vars.values.insert(name.to_owned(), value);
                Step::Nothing
            }
            Err((error, message)) => raise(error, message, number),
        };
    }
    evaluated(vars, line, number, Step::Value)
}

fn evaluated(vars: &Vars, expr: &str, number: usize, then: impl FnOnce(Value) -> Step) -> Step {
    match eval(vars, expr) {
        Ok(value) => then(value),
        Err((error, message)) => raise(error, message, number),
    }
}

fn assignment(line: &str) -> Option<(&str, &str)> {
    let line = ["let ", "const ", "var "]
        .iter()
        .find_map(|kw| line.strip_prefix(kw))
        .unwrap_or(line);
    let (name, expr) = line.split_once('=')?;
    let name = name.trim();
    let is_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    (is_name && !expr.starts_with('=')).then(|| (name, expr.trim()))
}

type EvalError = (&'static str, String);

fn eval(vars: &Vars, expr: &str) -> Result<Value, EvalError> {
    let expr = expr.trim();
    if let Some(quoted) = quoted(expr) {
        return Ok(Value::Str(quoted.to_owned()));
    }
    for ops in [['+', '-'], ['*', '/']] {
        if let Some(at) = expr
            .char_indices()
            .rev()
            .find(|(at, c)| *at > 0 && ops.contains(c))
            .map(|(at, _)| at)
        {
            let left = eval(vars, &expr[..at])?;
            let right = eval(vars, &expr[at + 1..])?;
            return apply(&left, &expr[at..=at], &right);
        }
    }
    if let Ok(n) = expr.parse::<i64>() {
        return Ok(Value::Int(n));
    }
    vars.values
        .get(expr)
        .cloned()
        .ok_or_else(|| ("NameError", format!("name '{expr}' is not defined")))
}

fn quoted(expr: &str) -> Option<&str> {
    ['\'', '"'].iter().find_map(|q| {
        let inner = expr.strip_prefix(*q)?.strip_suffix(*q)?;
        (!inner.contains(*q)).then_some(inner)
    })
}

fn apply(left: &Value, op: &str, right: &Value) -> Result<Value, EvalError> {
    let type_error = || ("TypeError", format!("unsupported operand for {op}"));
    match (left, right) {
        (Value::Str(a), Value::Str(b)) if op == "+" => Ok(Value::Str(format!("{a}{b}"))),
        (Value::Int(a), Value::Int(b)) => match op {
            "+" => a.checked_add(*b),
            "-" => a.checked_sub(*b),
            "*" => a.checked_mul(*b),
            _ if *b == 0 => {
                return Err(("ZeroDivisionError", "division by zero".to_owned()));
            }
            _ => a.checked_div(*b),
        }
        .map(Value::Int)
        .ok_or_else(|| ("OverflowError", "integer overflow".to_owned())),
        _ => Err(type_error()),
    }
}

fn interpret_bash(vars: &mut Vars, line: &str) -> Step {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let exit = |status: &str| {
        Step::Raise(ExecutionError {
            name: "ExitCode".into(),
            value: status.to_owned(),
            traceback: String::new(),
        })
    };
    match command {
        "true" => Step::Nothing,
        "false" => exit("1"),
        "exit" => exit(if rest.is_empty() { "0" } else { rest }),
        "pwd" => Step::Stdout(format!("{}\n", vars.cwd)),
        "cd" => {
            vars.cwd = if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("{}/{rest}", vars.cwd.trim_end_matches('/'))
            };
            Step::Nothing
        }
        "echo" => Step::Stdout(format!("{}\n", expand(vars, rest))),
        "sleep" => Step::Sleep(Duration::from_secs_f64(
            rest.parse::<f64>().unwrap_or(0.0).clamp(0.0, 1e6),
        )),
        _ => match line.split_once('=') {
            Some((name, value)) if !name.contains(' ') && !name.is_empty() => {
                vars.values
                    .insert(name.to_owned(), Value::Str(value.to_owned()));
                Step::Nothing
            }
            _ => Step::Stderr(format!("bash: {command}: command not found\n")),
        },
    }
}

fn expand(vars: &Vars, words: &str) -> String {
    words
        .split(' ')
        .map(|word| match word.strip_prefix('$') {
            Some(name) => vars.values.get(name).map(Value::show).unwrap_or_default(),
            None => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vars: &mut Vars, line: &str) -> Step {
        interpret(vars, Language::Python, line, 1)
    }

    #[test]
    fn expressions_and_state() {
        let mut vars = Vars::default();
        assert!(matches!(run(&mut vars, "x = 1"), Step::Nothing));
        assert!(matches!(
            run(&mut vars, "x + 1"),
            Step::Value(Value::Int(2))
        ));
        assert!(matches!(
            run(&mut vars, "2 * x - 5"),
            Step::Value(Value::Int(-3))
        ));
        match run(&mut vars, "1/0") {
            Step::Raise(error) => {
                assert_eq!(error.name, "ZeroDivisionError");
                assert!(error.traceback.contains("Traceback"));
            }
            _ => panic!("1/0 must raise"),
        }
        assert!(matches!(run(&mut vars, "y"), Step::Raise(e) if e.name == "NameError"));
        assert!(matches!(run(&mut vars, "print('hi')"), Step::Stdout(s) if s == "hi\n"));
    }

    #[test]
    fn bash_keeps_its_directory() {
        let mut vars = Vars {
            cwd: "/home/user".into(),
            ..Vars::default()
        };
        interpret_bash(&mut vars, "cd /tmp");
        assert!(matches!(interpret_bash(&mut vars, "pwd"), Step::Stdout(s) if s == "/tmp\n"));
        assert!(matches!(interpret_bash(&mut vars, "false"), Step::Raise(e) if e.value == "1"));
    }
}
