//! What stateful code execution returns, shaped for JSON: the collected answer of
//! `POST /execute` ([`ExecuteView`]), the streamed events ([`ExecutionEvent`]) and
//! contexts ([`ContextView`]).

use std::collections::BTreeMap;

use codebox_runtime::{ContextInfo, ExecutionError, ExecutionOutcome, ExecutionResult};
use serde::Serialize;

/// One rich result: its MIME bundle (`text/plain`, `text/html`, `image/png` as
/// base64, ...) flattened next to `is_main_result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultView {
    #[serde(flatten)]
    pub data: BTreeMap<String, String>,
    pub is_main_result: bool,
    /// The bundle was over the cap and replaced by a shortened `text/plain`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl From<ExecutionResult> for ResultView {
    fn from(result: ExecutionResult) -> Self {
        Self {
            data: result.data,
            is_main_result: result.is_main_result,
            truncated: result.truncated,
        }
    }
}

/// The error the code raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorView {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

impl From<ExecutionError> for ErrorView {
    fn from(error: ExecutionError) -> Self {
        Self {
            name: error.name,
            value: error.value,
            traceback: error.traceback,
        }
    }
}

/// Output chunks in the order they arrived, per stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogsView {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// How an execution ended, as the API spells it.
pub fn outcome_name(outcome: ExecutionOutcome) -> &'static str {
    match outcome {
        ExecutionOutcome::Ok => "ok",
        ExecutionOutcome::Error => "error",
        ExecutionOutcome::Timeout => "timeout",
        ExecutionOutcome::Interrupted => "interrupted",
        ExecutionOutcome::Crashed => "crashed",
        ExecutionOutcome::Unknown => "unknown",
    }
}

/// The collected result of one execution (`POST /execute` without streaming).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecuteView {
    pub execution_id: String,
    pub context_id: String,
    pub language: &'static str,
    /// Executions of the context since its interpreter (re)started, this one included.
    pub execution_count: u64,
    /// The plain text of the main result (the last expression's value), if any.
    pub text: Option<String>,
    pub results: Vec<ResultView>,
    pub logs: LogsView,
    pub error: Option<ErrorView>,
    pub duration_ms: u64,
    /// Output beyond the per-stream cap was dropped, or a result was shortened.
    pub truncated: bool,
    /// `ok`, `error`, `timeout`, `interrupted` or `crashed`.
    pub outcome: &'static str,
    /// The interpreter was restarted (crash, or an ignored interrupt): state is gone.
    pub restarted: bool,
}

/// The final event of a streamed execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndView {
    pub execution_id: String,
    pub context_id: String,
    pub execution_count: u64,
    pub duration_ms: u64,
    pub outcome: &'static str,
    pub restarted: bool,
    pub truncated: bool,
    /// Why the stream ended early (`server_shutdown`, `sandbox_lost`); absent normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// One event of a streamed execution (`application/x-ndjson`, `text/event-stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecutionEvent {
    Stdout { text: String },
    Stderr { text: String },
    Result(ResultView),
    Error(ErrorView),
    End(EndView),
}

impl ExecutionEvent {
    /// The event's name (the SSE `event:` field).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Stdout { .. } => "stdout",
            Self::Stderr { .. } => "stderr",
            Self::Result(_) => "result",
            Self::Error(_) => "error",
            Self::End(_) => "end",
        }
    }
}

/// A context as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextView {
    pub id: String,
    pub language: &'static str,
    pub cwd: Option<String>,
    /// Created by the server on first use of a language (`default-<language>`).
    pub is_default: bool,
}

impl From<ContextInfo> for ContextView {
    fn from(info: ContextInfo) -> Self {
        Self {
            is_default: info
                .context
                .starts_with(crate::code::DEFAULT_CONTEXT_PREFIX),
            id: info.context,
            language: info.language.as_str(),
            cwd: info.cwd,
        }
    }
}

/// Decodes a byte stream cut at arbitrary points as UTF-8: an incomplete
/// character at the end of a chunk waits for the next one; invalid bytes become
/// U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    /// The text of `bytes` (with what was pending), minus a trailing partial character.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let tail = self.pending.split_off(self.pending.len() - keep);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = tail;
        text
    }

    /// Whatever is still pending (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Bytes at the end of `bytes` that start a UTF-8 character not yet complete.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // A continuation byte: look further back for the lead.
        }
        let width = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if width > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let text = "héllo ✓ 🎉";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut chunks = Utf8Chunks::default();
            let mut out = chunks.push(&bytes[..cut]);
            out.push_str(&chunks.push(&bytes[cut..]));
            out.push_str(&chunks.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
        let mut chunks = Utf8Chunks::default();
        assert_eq!(chunks.push(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn events_are_tagged_and_results_flattened() {
        let result = ResultView {
            data: BTreeMap::from([("text/plain".to_owned(), "2".to_owned())]),
            is_main_result: true,
            truncated: false,
        };
        let json = serde_json::to_value(ExecutionEvent::Result(result)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"type": "result", "text/plain": "2", "is_main_result": true})
        );
        let json =
            serde_json::to_value(ExecutionEvent::Stdout { text: "hi".into() }).expect("serializes");
        assert_eq!(json, serde_json::json!({"type": "stdout", "text": "hi"}));
    }
}
