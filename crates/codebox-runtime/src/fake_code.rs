//! The contexts of [`crate::fake::FakeRuntime`]: stateful code execution that
//! behaves in time like the agent's (output streamed while a cell runs,
//! per-context queues, interrupt, timeout, cancel on drop). The language it
//! interprets is described in [`crate::fake`]. Feature `fake` only.
//!
//! Each context has one worker task that runs its executions one at a time in
//! arrival order (like the agent). A timeout or an interrupt ends the execution
//! `timeout` / `interrupted` with a `KeyboardInterrupt` error and the state kept,
//! as the real runners do.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use codebox_types::SandboxId;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::{
    CodeEvent, CodeRequest, CodeStream, ContextInfo, ContextRequest, ExecutionError,
    ExecutionOutcome, ExecutionResult, ExecutionSummary, Language, RuntimeError,
};

/// Every context of every fake sandbox.
#[derive(Debug, Default)]
pub(crate) struct FakeContexts {
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
    pub(crate) fn create(
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

    pub(crate) fn list(&self, id: &SandboxId) -> Vec<ContextInfo> {
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

    pub(crate) fn execute(
        &self,
        id: &SandboxId,
        request: CodeRequest,
    ) -> Result<CodeStream, RuntimeError> {
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

    pub(crate) fn interrupt(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        let context = self.get(id, context)?;
        if context.shared.busy.load(Ordering::SeqCst) {
            context.shared.interrupt.notify_one();
        }
        Ok(())
    }

    pub(crate) fn restart(
        &mut self,
        id: &SandboxId,
        context: &str,
    ) -> Result<ContextInfo, RuntimeError> {
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

    pub(crate) fn destroy(&mut self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
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
    pub(crate) fn remove_sandbox(&mut self, id: &SandboxId) {
        if let Some(contexts) = self.sandboxes.remove(id) {
            for context in contexts.values() {
                context.shared.interrupt.notify_one();
            }
        }
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
