//! Stateful code execution on behalf of one user: executions in contexts (one
//! long-lived interpreter each), streamed or collected, and context management.
//!
//! Ordering: executions of one context run one at a time in arrival order (the
//! sandbox's agent queues them, up to 64); different contexts run in parallel. A
//! default context per language (`default-<language>`) is created on first use.
//! Every execution is recorded in the store when it ends, also when the client
//! went away (status `cancelled`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use codebox_runtime::{
    CodeEvent, CodeRequest, CodeStream, ContextInfo, ContextRequest, ExecutionOutcome,
    ExecutionSummary, Language, MAX_CODE_BYTES,
};
use codebox_store::{ExecutionRecord, SandboxRecord, Store, User};
use codebox_types::{ExecutionId, SandboxId, SandboxStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::code_views::{
    outcome_name, ContextView, EndView, ExecuteView, ExecutionEvent, LogsView, Utf8Chunks,
};
use crate::error::CoreError;
use crate::requests::{validate_cwd, validate_map, validate_seconds};
use crate::sandboxes::error_chain;
use crate::Core;

/// Contexts the server creates itself are named `default-<language>`; contexts
/// created through the API get `ctx-<random>` ids, so the two never collide.
pub const DEFAULT_CONTEXT_PREFIX: &str = "default-";

/// `POST /api/v1/sandboxes/{id}/execute`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub code: String,
    /// `python`, `javascript`, `typescript` or `bash`; the context's language when
    /// `context_id` is set, else the sandbox runtime's language (python otherwise).
    pub language: Option<String>,
    /// A context from `POST /contexts`; the language's default context when absent.
    pub context_id: Option<String>,
    /// Seconds; the configured default when absent.
    pub timeout: Option<u64>,
    /// Environment of this execution only.
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// `POST /api/v1/sandboxes/{id}/contexts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContextRequest {
    /// As for [`ExecuteRequest::language`].
    pub language: Option<String>,
    /// Absolute working directory; the user's home when absent.
    pub cwd: Option<String>,
    /// Environment of the context's interpreter for its whole life.
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// A language name or alias.
pub fn parse_language(name: &str) -> Option<Language> {
    match name.to_ascii_lowercase().as_str() {
        "python" | "python3" | "py" => Some(Language::Python),
        "javascript" | "js" | "node" | "nodejs" => Some(Language::Javascript),
        "typescript" | "ts" => Some(Language::Typescript),
        "bash" | "sh" | "shell" => Some(Language::Bash),
        _ => None,
    }
}

/// The default context's id for `language`.
pub fn default_context_id(language: Language) -> String {
    format!("{DEFAULT_CONTEXT_PREFIX}{}", language.as_str())
}

/// Serialises the creation of one sandbox's default context of one language.
type Gates = Mutex<HashMap<(SandboxId, Language), Arc<tokio::sync::Mutex<()>>>>;

/// Per-(sandbox, language) gates around default-context creation, so two first
/// executions do not both create it.
#[derive(Debug, Default)]
pub(crate) struct ContextGates(Gates);

impl ContextGates {
    fn gate(&self, key: &(SandboxId, Language)) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(gates.entry(key.clone()).or_default())
    }

    /// Forgets the gate once nobody else holds it (keeps the map small).
    fn release(&self, key: &(SandboxId, Language), gate: Arc<tokio::sync::Mutex<()>>) {
        let mut gates = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else waits.
        if Arc::strong_count(&gate) == 2 {
            gates.remove(key);
        }
    }
}

/// [`Execution::next_event_within`] waited its whole idle time for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle;

/// A running execution. Read it with [`Execution::next_event`] (streaming) or
/// [`Execution::collect`]. Dropping it before its end interrupts the code and
/// records the execution as `cancelled`.
#[derive(Debug)]
pub struct Execution {
    pub id: ExecutionId,
    pub context_id: String,
    pub language: Language,
    stream: CodeStream,
    started: Instant,
    stdout: Utf8Chunks,
    stderr: Utf8Chunks,
    truncated: bool,
    /// Written when the execution ends; `None` once written.
    pending: Option<PendingRecord>,
    ended: bool,
    /// The output kept for the record (`retention.store_code`), else `None`.
    kept: Option<KeptOutput>,
}

struct PendingRecord {
    store: Arc<dyn Store>,
    record: ExecutionRecord,
}

impl std::fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecord")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl PendingRecord {
    fn finish(
        mut self,
        status: &str,
        count: Option<u64>,
        started: Instant,
        kept: Option<(&KeptOutput, bool)>,
    ) -> Self {
        if let Some((kept, truncated)) = kept {
            self.record.output = kept.to_json(truncated);
        }
        self.record.status = status.to_owned();
        self.record.execution_count = count.and_then(|c| i64::try_from(c).ok());
        self.record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self
    }

    async fn write(self) {
        if let Err(error) = self.store.insert_execution(&self.record).await {
            tracing::error!(sandbox_id = %self.record.sandbox_id, error = %error_chain(&error),
                "recording an execution failed");
        }
    }
}

/// Bytes of output kept with an execution record when `retention.store_code`
/// is on (stdout, stderr, the main result's text and the error together).
pub const MAX_KEPT_OUTPUT_BYTES: usize = 64 << 10;

/// The output kept with an execution's record (`retention.store_code`), capped
/// at [`MAX_KEPT_OUTPUT_BYTES`]; stored as JSON text.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeptOutput {
    stdout: String,
    stderr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<KeptError>,
    truncated: bool,
    #[serde(skip)]
    used: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeptError {
    name: String,
    value: String,
}

impl KeptOutput {
    /// As much of `text` as the budget leaves (cut on a character boundary).
    fn take(&mut self, text: &str) -> String {
        let room = MAX_KEPT_OUTPUT_BYTES.saturating_sub(self.used);
        if text.len() <= room {
            self.used += text.len();
            return text.to_owned();
        }
        self.truncated = true;
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.used += end;
        text[..end].to_owned()
    }

    pub(crate) fn stdout(&mut self, text: &str) {
        let kept = self.take(text);
        self.stdout.push_str(&kept);
    }

    pub(crate) fn stderr(&mut self, text: &str) {
        let kept = self.take(text);
        self.stderr.push_str(&kept);
    }

    fn main_text(&mut self, text: &str) {
        let kept = self.take(text);
        self.text = Some(kept);
    }

    fn error(&mut self, name: &str, value: &str) {
        let name = self.take(name);
        let value = self.take(value);
        self.error = Some(KeptError { name, value });
    }

    /// The JSON text stored in the record's `output`.
    pub(crate) fn to_json(&self, truncated_upstream: bool) -> Option<String> {
        let mut kept = self.clone();
        kept.truncated |= truncated_upstream;
        serde_json::to_string(&kept).ok()
    }
}

fn status_of(outcome: ExecutionOutcome) -> &'static str {
    match outcome {
        ExecutionOutcome::Ok => "succeeded",
        ExecutionOutcome::Error | ExecutionOutcome::Unknown => "failed",
        ExecutionOutcome::Timeout => "timed_out",
        ExecutionOutcome::Interrupted => "cancelled",
        ExecutionOutcome::Crashed => "crashed",
    }
}

impl Execution {
    /// The next event, in the API's shape; `None` after `end`. Output reaches the
    /// caller as the code produces it.
    pub async fn next_event(&mut self) -> Option<ExecutionEvent> {
        loop {
            if let Ok(event) = self.next_event_within(None).await {
                return event;
            }
        }
    }

    /// Like [`Execution::next_event`], but gives up with [`Idle`] when the code
    /// produced nothing for `idle` (for keep-alives on silent streams). Only the
    /// wait for the sandbox's next event is abandoned, never a half-done step, so
    /// calling it again continues exactly where it left off.
    pub async fn next_event_within(
        &mut self,
        idle: Option<std::time::Duration>,
    ) -> Result<Option<ExecutionEvent>, Idle> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let next = match idle {
                Some(idle) => tokio::time::timeout(idle, self.stream.next())
                    .await
                    .map_err(|_| Idle)?,
                None => self.stream.next().await,
            };
            let Some(event) = next else {
                return Ok(Some(self.lost().await));
            };
            let event = match event {
                CodeEvent::Stdout(bytes) => ExecutionEvent::Stdout {
                    text: self.stdout.push(&bytes),
                },
                CodeEvent::Stderr(bytes) => ExecutionEvent::Stderr {
                    text: self.stderr.push(&bytes),
                },
                CodeEvent::Result(result) => {
                    self.truncated |= result.truncated;
                    ExecutionEvent::Result(result.into())
                }
                CodeEvent::Error(error) => ExecutionEvent::Error(error.into()),
                CodeEvent::Done(summary) => return Ok(Some(self.done(&summary).await)),
            };
            if let Some(kept) = self.kept.as_mut() {
                match &event {
                    ExecutionEvent::Stdout { text } => kept.stdout(text),
                    ExecutionEvent::Stderr { text } => kept.stderr(text),
                    ExecutionEvent::Result(result) if result.is_main_result => {
                        if let Some(text) = result.data.get("text/plain") {
                            kept.main_text(text);
                        }
                    }
                    ExecutionEvent::Error(error) => kept.error(&error.name, &error.value),
                    _ => {}
                }
            }
            match &event {
                ExecutionEvent::Stdout { text } | ExecutionEvent::Stderr { text }
                    if text.is_empty() => {}
                _ => return Ok(Some(event)),
            }
        }
    }

    async fn done(&mut self, summary: &ExecutionSummary) -> ExecutionEvent {
        self.ended = true;
        self.truncated |= summary.stdout_truncated || summary.stderr_truncated;
        if let Some(pending) = self.pending.take() {
            let status = status_of(summary.outcome);
            let count = Some(summary.execution_count);
            let kept = self.kept.as_ref().map(|kept| (kept, self.truncated));
            pending
                .finish(status, count, self.started, kept)
                .write()
                .await;
        }
        ExecutionEvent::End(EndView {
            execution_id: self.id.to_string(),
            context_id: self.context_id.clone(),
            execution_count: summary.execution_count,
            duration_ms: u64::try_from(summary.duration.as_millis()).unwrap_or(u64::MAX),
            outcome: outcome_name(summary.outcome),
            restarted: summary.restarted,
            truncated: self.truncated,
            reason: None,
        })
    }

    /// The stream ended without its summary: the sandbox's agent went away.
    async fn lost(&mut self) -> ExecutionEvent {
        tracing::warn!(execution_id = %self.id, "execution stream ended without a summary");
        self.end_early("sandbox_lost", "crashed").await
    }

    /// Ends the execution before the code did (`server_shutdown`, `sandbox_lost`):
    /// the code is interrupted when `self` is dropped; the record says so now.
    pub async fn end_early(
        &mut self,
        reason: &'static str,
        outcome: &'static str,
    ) -> ExecutionEvent {
        self.ended = true;
        if let Some(pending) = self.pending.take() {
            let kept = self.kept.as_ref().map(|kept| (kept, self.truncated));
            pending
                .finish("cancelled", None, self.started, kept)
                .write()
                .await;
        }
        ExecutionEvent::End(EndView {
            execution_id: self.id.to_string(),
            context_id: self.context_id.clone(),
            execution_count: 0,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            outcome,
            restarted: false,
            truncated: self.truncated,
            reason: Some(reason),
        })
    }

    /// Runs the execution to its end and gathers everything.
    pub async fn collect(mut self) -> Result<ExecuteView, CoreError> {
        let mut view = ExecuteView {
            execution_id: self.id.to_string(),
            context_id: self.context_id.clone(),
            language: self.language.as_str(),
            execution_count: 0,
            text: None,
            results: Vec::new(),
            logs: LogsView::default(),
            error: None,
            duration_ms: 0,
            truncated: false,
            outcome: "ok",
            restarted: false,
        };
        while let Some(event) = self.next_event().await {
            match event {
                ExecutionEvent::Stdout { text } => view.logs.stdout.push(text),
                ExecutionEvent::Stderr { text } => view.logs.stderr.push(text),
                ExecutionEvent::Result(result) => view.results.push(result),
                ExecutionEvent::Error(error) => view.error = Some(error),
                ExecutionEvent::End(end) if end.reason.is_some() => {
                    return Err(CoreError::Unavailable {
                        retry_after: crate::error::DEFAULT_RETRY_AFTER,
                        source: "the sandbox's agent went away during the execution".into(),
                    });
                }
                ExecutionEvent::End(end) => {
                    view.execution_count = end.execution_count;
                    view.duration_ms = end.duration_ms;
                    view.truncated = end.truncated;
                    view.outcome = end.outcome;
                    view.restarted = end.restarted;
                }
            }
        }
        view.text = view
            .results
            .iter()
            .find(|result| result.is_main_result)
            .and_then(|result| result.data.get("text/plain").cloned());
        Ok(view)
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        // The client went away (or the server stops): the CodeStream drops with
        // us, which interrupts the code; the history row must still be written.
        let Some(pending) = self.pending.take() else {
            return;
        };
        let kept = self.kept.as_ref().map(|kept| (kept, self.truncated));
        let pending = pending.finish("cancelled", None, self.started, kept);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(pending.write())),
            Err(_) => {
                tracing::warn!(execution_id = %self.id, "no runtime to record a cancelled execution")
            }
        }
        tracing::info!(execution_id = %self.id, context = %self.context_id, "execution cancelled");
    }
}

/// A validated execute request.
struct ValidatedExecute {
    code: String,
    language: Option<Language>,
    context_id: Option<String>,
    timeout: std::time::Duration,
    env: BTreeMap<String, String>,
}

impl Core {
    /// Starts `request` in a context of the user's running sandbox. Returns once
    /// the sandbox accepted it (queued behind earlier executions of the context).
    pub async fn execute_code(
        &self,
        user: &User,
        id: &str,
        request: ExecuteRequest,
    ) -> Result<Execution, CoreError> {
        let validated = self.validate_execute(request)?;
        let record = self.running_sandbox(user, id).await?;
        let (context_id, language) = self.resolve_context(&record, &validated).await?;
        let code_size = validated.code.len() as u64;
        let store_code = self.settings.retention.store_code;
        let kept_code = store_code.then(|| validated.code.clone());
        let request = CodeRequest {
            context: context_id.clone(),
            code: validated.code,
            timeout: validated.timeout,
            env: validated.env,
            output_limit: usize::try_from(self.settings.limits.max_output_bytes)
                .unwrap_or(usize::MAX),
        };
        let stream = self
            .runtime
            .execute_code(&record.id, request)
            .await
            .map_err(CoreError::from)?;
        let execution_id = ExecutionId::generate();
        tracing::debug!(sandbox_id = %record.id, execution_id = %execution_id,
            context = %context_id, language = language.as_str(), code_size, "execution started");
        let pending = PendingRecord {
            store: Arc::clone(&self.store),
            record: ExecutionRecord {
                id: execution_id.clone(),
                sandbox_id: record.id.clone(),
                context_id: Some(context_id.clone()),
                language: language.as_str().to_owned(),
                status: "running".to_owned(),
                exit_code: None,
                execution_count: None,
                duration_ms: 0,
                code_size,
                created_at: OffsetDateTime::now_utc(),
                code: kept_code,
                output: None,
            },
        };
        Ok(Execution {
            id: execution_id,
            context_id,
            language,
            stream,
            started: Instant::now(),
            stdout: Utf8Chunks::default(),
            stderr: Utf8Chunks::default(),
            truncated: false,
            pending: Some(pending),
            ended: false,
            kept: store_code.then(KeptOutput::default),
        })
    }

    fn validate_execute(&self, request: ExecuteRequest) -> Result<ValidatedExecute, CoreError> {
        let limits = &self.settings.limits;
        let max_code = limits.max_code_size.min(MAX_CODE_BYTES as u64);
        if request.code.len() as u64 > max_code {
            return Err(CoreError::PayloadTooLarge { limit: max_code });
        }
        if request.code.contains('\0') {
            return Err(CoreError::validation("code", "must not contain NUL"));
        }
        let language = request
            .language
            .as_deref()
            .map(|name| {
                parse_language(name).ok_or_else(|| {
                    CoreError::validation(
                        "language",
                        "must be one of python, javascript, typescript, bash",
                    )
                })
            })
            .transpose()?;
        let timeout = validate_seconds(
            "timeout",
            request.timeout,
            limits.default_exec_timeout,
            limits.max_exec_timeout,
        )?;
        let env = validate_map("env_vars", request.env_vars, self.env_bounds())?;
        Ok(ValidatedExecute {
            code: request.code,
            language,
            context_id: request.context_id,
            timeout,
            env,
        })
    }

    /// A live, fully created sandbox of `user`.
    pub(crate) async fn running_sandbox(
        &self,
        user: &User,
        id: &str,
    ) -> Result<SandboxRecord, CoreError> {
        let record = self.get_sandbox(user, id).await?;
        if record.status != SandboxStatus::Running {
            return Err(CoreError::Conflict {
                message: "the sandbox is still being created".to_owned(),
            });
        }
        Ok(record)
    }

    /// The context to run in: the named one (its language must agree), or the
    /// language's default context, created on first use.
    async fn resolve_context(
        &self,
        record: &SandboxRecord,
        request: &ValidatedExecute,
    ) -> Result<(String, Language), CoreError> {
        if let Some(context_id) = &request.context_id {
            let info = self.find_context(&record.id, context_id).await?;
            if request.language.is_some_and(|l| l != info.language) {
                return Err(CoreError::validation(
                    "language",
                    format!("context {context_id:?} runs {}", info.language.as_str()),
                ));
            }
            return Ok((info.context, info.language));
        }
        let language = match request.language {
            Some(language) => language,
            None => self.sandbox_language(record),
        };
        let context_id = self.default_context(&record.id, language).await?;
        Ok((context_id, language))
    }

    /// The language of the sandbox's runtime, python when it has none of ours.
    fn sandbox_language(&self, record: &SandboxRecord) -> Language {
        self.runtime
            .runtimes()
            .iter()
            .find(|runtime| runtime.answers_to(&record.runtime))
            .and_then(|runtime| parse_language(&runtime.language))
            .unwrap_or(Language::Python)
    }

    async fn default_context(
        &self,
        id: &SandboxId,
        language: Language,
    ) -> Result<String, CoreError> {
        let context_id = default_context_id(language);
        let key = (id.clone(), language);
        let gate = self.context_gates.gate(&key);
        let created = {
            let _held = gate.lock().await;
            self.ensure_context(id, &context_id, language).await
        };
        self.context_gates.release(&key, gate);
        created.map(|()| context_id)
    }

    async fn ensure_context(
        &self,
        id: &SandboxId,
        context_id: &str,
        language: Language,
    ) -> Result<(), CoreError> {
        let contexts = self.runtime.list_contexts(id).await?;
        if contexts.iter().any(|context| context.context == context_id) {
            return Ok(());
        }
        let request = ContextRequest {
            context: context_id.to_owned(),
            language,
            cwd: None,
            env: BTreeMap::new(),
        };
        self.runtime.create_context(id, request).await?;
        tracing::info!(sandbox_id = %id, context = context_id, "default context created");
        Ok(())
    }

    async fn find_context(
        &self,
        id: &SandboxId,
        context_id: &str,
    ) -> Result<ContextInfo, CoreError> {
        self.runtime
            .list_contexts(id)
            .await?
            .into_iter()
            .find(|context| context.context == context_id)
            .ok_or(CoreError::ContextNotFound)
    }

    /// Creates a context in the user's running sandbox; returns once its
    /// interpreter is ready.
    pub async fn create_context(
        &self,
        user: &User,
        id: &str,
        request: CreateContextRequest,
    ) -> Result<ContextView, CoreError> {
        let language = match request.language.as_deref() {
            Some(name) => Some(parse_language(name).ok_or_else(|| {
                CoreError::validation(
                    "language",
                    "must be one of python, javascript, typescript, bash",
                )
            })?),
            None => None,
        };
        let cwd = validate_cwd(request.cwd)?;
        let env = validate_map("env_vars", request.env_vars, self.env_bounds())?;
        let record = self.running_sandbox(user, id).await?;
        let language = language.unwrap_or_else(|| self.sandbox_language(&record));
        let request = ContextRequest {
            context: new_context_id()?,
            language,
            cwd,
            env,
        };
        let info = self.runtime.create_context(&record.id, request).await?;
        tracing::info!(sandbox_id = %record.id, context = %info.context, language = language.as_str(), "context created");
        Ok(info.into())
    }

    /// The contexts of the user's running sandbox.
    pub async fn list_contexts(
        &self,
        user: &User,
        id: &str,
    ) -> Result<Vec<ContextView>, CoreError> {
        let record = self.running_sandbox(user, id).await?;
        let contexts = self.runtime.list_contexts(&record.id).await?;
        Ok(contexts.into_iter().map(ContextView::from).collect())
    }

    /// Kills a context's interpreter and forgets the context.
    pub async fn destroy_context(
        &self,
        user: &User,
        id: &str,
        context_id: &str,
    ) -> Result<(), CoreError> {
        let record = self.running_sandbox(user, id).await?;
        let info = self.find_context(&record.id, context_id).await?;
        self.runtime
            .destroy_context(&record.id, &info.context)
            .await?;
        tracing::info!(sandbox_id = %record.id, context = context_id, "context destroyed");
        Ok(())
    }

    /// A fresh interpreter for the context: its state is gone.
    pub async fn restart_context(
        &self,
        user: &User,
        id: &str,
        context_id: &str,
    ) -> Result<ContextView, CoreError> {
        let record = self.running_sandbox(user, id).await?;
        let info = self.find_context(&record.id, context_id).await?;
        let info = self
            .runtime
            .restart_context(&record.id, &info.context)
            .await?;
        tracing::info!(sandbox_id = %record.id, context = context_id, "context restarted");
        Ok(info.into())
    }

    /// Interrupts the context's running execution, if any (its state survives).
    pub async fn interrupt_context(
        &self,
        user: &User,
        id: &str,
        context_id: &str,
    ) -> Result<(), CoreError> {
        let record = self.running_sandbox(user, id).await?;
        let info = self.find_context(&record.id, context_id).await?;
        self.runtime
            .interrupt_context(&record.id, &info.context)
            .await?;
        Ok(())
    }
}

/// `ctx-` and 16 random hex digits.
fn new_context_id() -> Result<String, CoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|error| CoreError::internal(error.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("ctx-{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_aliases() {
        assert_eq!(parse_language("Python"), Some(Language::Python));
        assert_eq!(parse_language("ts"), Some(Language::Typescript));
        assert_eq!(parse_language("node"), Some(Language::Javascript));
        assert_eq!(parse_language("sh"), Some(Language::Bash));
        assert_eq!(parse_language("ruby"), None);
        assert_eq!(default_context_id(Language::Bash), "default-bash");
    }

    #[test]
    fn context_ids_are_valid_and_distinct() {
        let a = new_context_id().expect("random");
        let b = new_context_id().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn outcomes_map_to_statuses() {
        assert_eq!(status_of(ExecutionOutcome::Ok), "succeeded");
        assert_eq!(status_of(ExecutionOutcome::Timeout), "timed_out");
        assert_eq!(status_of(ExecutionOutcome::Interrupted), "cancelled");
    }
}
