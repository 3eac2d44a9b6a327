//! Messages of stateful code execution (protocol version 2): contexts, each a long-lived
//! language runner inside the sandbox, and executions queued on them.
//!
//! An execution is `Execute` followed by exactly `code_len` bytes of code in `stdin` data
//! frames of the same id (code can be as large as [`MAX_CODE_BYTES`], more than one
//! frame). The agent answers `ExecutionAccepted` (or `Error`), then sends `stdout` /
//! `stderr` data, results (a JSON MIME bundle in `result` data frames closed by one
//! `ExecutionResult`), at most one `ExecutionError`, and exactly one `ExecutionDone`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::{MAX_OUTPUT_LIMIT, MAX_TIMEOUT_MS};
use crate::RequestId;

/// Largest code of one execution.
pub const MAX_CODE_BYTES: usize = 2 << 20;
/// Largest MIME bundle of one result (all values together); a bigger one is replaced by
/// a truncated `text/plain` and flagged.
pub const MAX_RESULT_BYTES: usize = 8 << 20;
/// Results of one execution, and their bytes (bundle JSON) together: the per-stream
/// output caps do not cover results, so without these a cell (or a runner's forged
/// result lines) could push unbounded data to the host. Past either, the agent sends
/// one `text/plain` notice (flagged truncated) and drops the rest.
pub const MAX_RESULTS: usize = 256;
pub const MAX_RESULTS_BYTES: usize = 32 << 20;
/// The notice that replaces the results over [`MAX_RESULTS`] / [`MAX_RESULTS_BYTES`].
pub const RESULTS_DROPPED_NOTICE: &str = "[further results dropped: over the per-execution cap]";
/// Most MIME types in one bundle, and the longest MIME type name.
pub const MAX_MIME_TYPES: usize = 32;
pub const MAX_MIME_NAME: usize = 128;
/// Bounds of an execution error's fields (longer text is cut).
pub const MAX_ERROR_NAME: usize = 256;
pub const MAX_ERROR_VALUE: usize = 64 << 10;
pub const MAX_TRACEBACK: usize = 256 << 10;
/// Longest context id; ids are `[A-Za-z0-9_.-]`.
pub const MAX_CONTEXT_ID: usize = 64;
/// Bound on the env and cwd bytes of a context or an execution.
pub const MAX_ENV_BYTES: usize = 256 << 10;

/// The language of a context, which decides its runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Python,
    Javascript,
    /// Transpiled by the `typescript` npm package, then run like JavaScript.
    Typescript,
    Bash,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Javascript => "javascript",
            Self::Typescript => "typescript",
            Self::Bash => "bash",
        }
    }
}

/// Creates a context and starts its runner; answered by `ContextReady` once the
/// interpreter waits for code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSpec {
    pub id: RequestId,
    pub context: String,
    pub language: Language,
    /// Absolute path; the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Over the agent's allowlisted base environment, for the runner's whole life.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Queues code on a context. `code_len` bytes of UTF-8 code follow in data frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteSpec {
    pub id: RequestId,
    pub context: String,
    pub code_len: u64,
    /// Wall clock from the moment the execution starts running (not while queued).
    pub timeout_ms: u64,
    /// Set for this execution only, then restored.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bytes forwarded per stream (stdout, stderr).
    pub output_limit: u64,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionOutcome {
    Ok,
    /// The code raised (or, in bash, the last command exited non-zero).
    Error,
    /// The timeout fired and the runner was interrupted.
    Timeout,
    /// Interrupted on request, cancelled, or its context was restarted or destroyed.
    Interrupted,
    /// The interpreter died; the context was restarted and its state is lost.
    Crashed,
    /// A code from a newer peer.
    #[serde(other)]
    Unknown,
}

/// The end of an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionReport {
    pub id: RequestId,
    /// Executions started in this context since its runner (re)started, this one
    /// included; 0 if it never started.
    pub execution_count: u64,
    pub outcome: ExecutionOutcome,
    /// From start to end (0 if it never started), in microseconds.
    pub duration_us: u64,
    /// The runner was killed and started afresh: the context's state is gone.
    pub restarted: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// An error raised by the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub id: RequestId,
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// Why a context or execution request is refused before it reaches the runner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCode {
    #[error("context ids are 1 to {max} characters of [A-Za-z0-9_.-]")]
    BadContextId { max: usize },
    #[error("environment variable name {name:?} is empty or contains '=' or NUL")]
    BadEnvName { name: String },
    #[error("{field} contains a NUL byte")]
    NulByte { field: &'static str },
    #[error("the working directory must be an absolute path")]
    RelativeCwd,
    #[error("env and cwd take {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the code is {len} bytes, over the limit of {max}")]
    CodeTooLarge { len: u64, max: usize },
    #[error("timeout_ms must be between 1 and {max}")]
    BadTimeout { max: u64 },
    #[error("output_limit is over the maximum of {max}")]
    OutputLimitTooLarge { max: u64 },
}

/// Checks a context id: short, and harmless in logs and paths.
pub fn validate_context_id(context: &str) -> Result<(), InvalidCode> {
    let ok = !context.is_empty()
        && context.len() <= MAX_CONTEXT_ID
        && context
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidCode::BadContextId {
            max: MAX_CONTEXT_ID,
        })
    }
}

fn validate_env(env: &BTreeMap<String, String>, cwd: Option<&str>) -> Result<(), InvalidCode> {
    let mut total = 0;
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(InvalidCode::BadEnvName { name: name.clone() });
        }
        if value.contains('\0') {
            return Err(InvalidCode::NulByte {
                field: "an environment value",
            });
        }
        total += name.len() + value.len() + 2;
    }
    if let Some(cwd) = cwd {
        if cwd.contains('\0') {
            return Err(InvalidCode::NulByte { field: "cwd" });
        }
        if !cwd.starts_with('/') {
            return Err(InvalidCode::RelativeCwd);
        }
        total += cwd.len();
    }
    if total > MAX_ENV_BYTES {
        return Err(InvalidCode::TooLarge {
            len: total,
            max: MAX_ENV_BYTES,
        });
    }
    Ok(())
}

impl ContextSpec {
    pub fn validate(&self) -> Result<(), InvalidCode> {
        validate_context_id(&self.context)?;
        validate_env(&self.env, self.cwd.as_deref())
    }
}

impl ExecuteSpec {
    /// Checks the request; the code itself is checked (UTF-8, no NUL) once received.
    pub fn validate(&self) -> Result<(), InvalidCode> {
        validate_context_id(&self.context)?;
        validate_env(&self.env, None)?;
        if self.code_len > MAX_CODE_BYTES as u64 {
            return Err(InvalidCode::CodeTooLarge {
                len: self.code_len,
                max: MAX_CODE_BYTES,
            });
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(InvalidCode::BadTimeout {
                max: MAX_TIMEOUT_MS,
            });
        }
        if self.output_limit > MAX_OUTPUT_LIMIT {
            return Err(InvalidCode::OutputLimitTooLarge {
                max: MAX_OUTPUT_LIMIT,
            });
        }
        Ok(())
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary; `true` if it was cut.
pub fn truncate_text(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Checks a MIME bundle against the bounds. `Err` carries a replacement bundle (a
/// truncated `text/plain`) for one that is too big or malformed.
pub fn check_bundle(
    bundle: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, BTreeMap<String, String>> {
    let size: usize = bundle.iter().map(|(k, v)| k.len() + v.len()).sum();
    let names_ok = bundle.len() <= MAX_MIME_TYPES
        && bundle.keys().all(|k| {
            k.len() <= MAX_MIME_NAME && k.contains('/') && !k.chars().any(char::is_control)
        });
    if size <= MAX_RESULT_BYTES && names_ok {
        return Ok(bundle);
    }
    let mut text = bundle.get("text/plain").cloned().unwrap_or_default();
    truncate_text(&mut text, MAX_ERROR_VALUE);
    text.push_str(&format!(
        "\n[result of {size} bytes replaced: over the {MAX_RESULT_BYTES}-byte cap or malformed]"
    ));
    Err(BTreeMap::from([("text/plain".to_owned(), text)]))
}

/// Parses the JSON MIME bundle of the `result` stream (a map of strings).
pub fn parse_bundle(json: &[u8]) -> Result<BTreeMap<String, String>, serde_json::Error> {
    serde_json::from_slice(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute() -> ExecuteSpec {
        ExecuteSpec {
            id: 1,
            context: "default-python".into(),
            code_len: 3,
            timeout_ms: 1000,
            env: BTreeMap::new(),
            output_limit: 1 << 20,
        }
    }

    #[test]
    fn execute_validation() {
        assert_eq!(execute().validate(), Ok(()));
        let mut bad = execute();
        bad.context = "../x".into();
        assert!(matches!(
            bad.validate(),
            Err(InvalidCode::BadContextId { .. })
        ));
        let mut bad = execute();
        bad.code_len = MAX_CODE_BYTES as u64 + 1;
        assert!(matches!(
            bad.validate(),
            Err(InvalidCode::CodeTooLarge { .. })
        ));
        let mut bad = execute();
        bad.timeout_ms = 0;
        assert!(matches!(
            bad.validate(),
            Err(InvalidCode::BadTimeout { .. })
        ));
        let mut bad = execute();
        bad.env.insert("A=B".into(), "x".into());
        assert!(matches!(
            bad.validate(),
            Err(InvalidCode::BadEnvName { .. })
        ));
    }

    #[test]
    fn context_validation() {
        let mut spec = ContextSpec {
            id: 1,
            context: "c1".into(),
            language: Language::Bash,
            cwd: Some("/tmp".into()),
            env: BTreeMap::new(),
        };
        assert_eq!(spec.validate(), Ok(()));
        spec.cwd = Some("tmp".into());
        assert_eq!(spec.validate(), Err(InvalidCode::RelativeCwd));
        spec.cwd = None;
        spec.context = "x".repeat(MAX_CONTEXT_ID + 1);
        assert!(spec.validate().is_err());
    }

    #[test]
    fn bundles_over_the_cap_are_replaced() {
        let small = BTreeMap::from([("text/plain".to_owned(), "2".to_owned())]);
        assert_eq!(check_bundle(small.clone()), Ok(small));
        let big = BTreeMap::from([
            ("text/plain".to_owned(), "<Figure>".to_owned()),
            ("image/png".to_owned(), "A".repeat(MAX_RESULT_BYTES)),
        ]);
        let replaced = check_bundle(big).expect_err("over the cap");
        assert_eq!(replaced.len(), 1);
        assert!(replaced["text/plain"].starts_with("<Figure>"));
        let bad_name = BTreeMap::from([("notamime".to_owned(), "x".to_owned())]);
        assert!(check_bundle(bad_name).is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut text = "aé".repeat(10);
        assert!(truncate_text(&mut text, 4));
        assert_eq!(text, "aéa");
        assert!(!truncate_text(&mut text, 100));
    }

    #[test]
    fn outcomes_have_stable_names() {
        let json = serde_json::to_string(&ExecutionOutcome::Timeout).expect("serializes");
        assert_eq!(json, "\"timeout\"");
        let future: ExecutionOutcome = serde_json::from_str("\"evaporated\"").expect("parses");
        assert_eq!(future, ExecutionOutcome::Unknown);
    }
}
