//! Contexts started in warm-pool sandboxes at fill time, so that a claim followed
//! by an execution in the default context costs no interpreter start.
//!
//! A prestarted context is exactly the one the API layer would create on first
//! use (`default-<language>`, the user's home as cwd, no context env, the
//! templates' env), plus the python template's optional preload (or, without
//! one, an empty warm-up cell).
//!
//! Env: the context starts before the sandbox has an owner, so the sandbox env
//! given at claim is not in its runner's process env. Instead, the entries the
//! runner did not start with go with every execution of that context, under the
//! execution's own env (the agent sets an execution's env in the runner for the
//! time of the cell and restores it after; child processes inherit it). So code
//! sees the sandbox env as in a context created after the claim, also after a
//! restart; the one difference: a cell that changes one of those variables in
//! `os.environ` sees it reset to the sandbox value in the next cell.
//!
//! Preload: run by the runner before it reports ready (so the first user cell
//! is still execution 1), wrapped so that an exception ends the runner; the
//! refusal carries the traceback, which is logged, and the context is started
//! again without the preload. A runner restarted later runs the preload again.
//!
//! This module only builds requests and env; it must not touch the jail,
//! cgroups or the pool's bookkeeping.

use std::collections::BTreeMap;

use tracing::{debug, warn};

use crate::agent::AgentConnection;
use crate::{ContextRequest, Language};

/// Prefix of the contexts the API layer creates on first use. Must agree with
/// `codebox_core::code::DEFAULT_CONTEXT_PREFIX` (the core depends on this
/// crate, not the reverse, so the name is repeated; both crates' unit tests pin
/// `default-bash`).
const DEFAULT_CONTEXT_PREFIX: &str = "default-";

/// The python runner's preload knob (run before the runner reports ready).
const PRELOAD_VAR: &str = "CODEBOX_PYTHON_PRELOAD";

/// Preload of a python context when none is configured: one empty cell, so the
/// first cell after the claim does not pay IPython's first-cell setup (measured
/// here: claim -> first `1+1` 21 ms without it, 4 ms with it). No user-visible
/// state; IPython's own `In` numbering starts one later (the API's
/// `execution_count` is the agent's and still starts at 1).
const WARM_UP: &str = "pass";

/// Exit status of the preload wrapper when the preload raised.
const PRELOAD_FAILED_STATUS: u8 = 86;

/// The default context's id for `language`, as the API layer names it.
pub fn default_context_id(language: Language) -> String {
    format!("{DEFAULT_CONTEXT_PREFIX}{}", language.as_str())
}

/// Starts one default context per language in a fresh pool sandbox; returns the
/// ids of those that run. A failure only logs: the sandbox is still usable and
/// the API layer creates a missing default context on first use. A failing
/// python preload is logged with its traceback and the context is started
/// without it.
pub(super) async fn start(
    agent: &AgentConnection,
    languages: &[Language],
    python_preload: Option<&str>,
    template_env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut started = Vec::new();
    for &language in languages {
        let preload = python_preload.filter(|_| language == Language::Python);
        if started.contains(&default_context_id(language)) {
            continue;
        }
        if start_one(agent, language, preload, template_env).await {
            started.push(default_context_id(language));
        }
    }
    started
}

/// `template_env` (the language templates' `PATH`...) is the runner's sandbox
/// env: the python context must start from the template's interpreter.
async fn start_one(
    agent: &AgentConnection,
    language: Language,
    preload: Option<&str>,
    template_env: &BTreeMap<String, String>,
) -> bool {
    let mut request = ContextRequest {
        context: default_context_id(language),
        language,
        cwd: None,
        env: BTreeMap::new(),
    };
    if let Some(code) = preload {
        request
            .env
            .insert(PRELOAD_VAR.into(), preload_wrapper(code));
        match agent.create_context(&request, template_env).await {
            Ok(info) => {
                debug!(context = %info.context, pid = info.pid, "prestarted context with preload");
                return true;
            }
            Err(error) => {
                warn!(%error, detail = ?error, "pool preload failed; starting the context without it");
            }
        }
    }
    if language == Language::Python {
        request.env.insert(PRELOAD_VAR.into(), WARM_UP.into());
    }
    match agent.create_context(&request, template_env).await {
        Ok(info) => {
            debug!(context = %info.context, pid = info.pid, "prestarted context");
            true
        }
        Err(error) => {
            warn!(%error, language = language.as_str(), "pool context prestart failed");
            false
        }
    }
}

/// Python that runs `code` in the cell namespace and, if it raises, prints the
/// traceback and ends the runner before it is ready: the agent then refuses the
/// context with the stderr tail, which is how a failing preload becomes visible
/// (the runner itself swallows preload errors).
fn preload_wrapper(code: &str) -> String {
    format!(
        "try:\n    exec(compile({}, '<preload>', 'exec'), globals())\n\
         except BaseException:\n    import os, traceback\n    traceback.print_exc()\n    \
         os._exit({PRELOAD_FAILED_STATUS})\n",
        python_string(code)
    )
}

/// A Python string literal holding exactly `text`.
fn python_string(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('"');
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '"' => literal.push_str("\\\""),
            c if c.is_control() => literal.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => literal.push(c),
        }
    }
    literal.push('"');
    literal
}

/// The env of an execution in a prestarted context: the part of the sandbox
/// env its runner did not start with (`started_env`), under the execution's
/// own. A context created after the claim has all of it in its process env
/// already. Entries the runner has are not re-sent, so code that changes, say,
/// `PATH` in `os.environ` keeps its change across cells.
pub(super) fn execution_env(
    sandbox_env: &BTreeMap<String, String>,
    started_env: &BTreeMap<String, String>,
    request_env: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = sandbox_env
        .iter()
        .filter(|(name, value)| started_env.get(*name) != Some(*value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    env.extend(request_env);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_match_the_api_layer() {
        assert_eq!(default_context_id(Language::Python), "default-python");
        assert_eq!(default_context_id(Language::Bash), "default-bash");
    }

    #[test]
    fn python_literals_escape_quotes_backslashes_and_controls() {
        assert_eq!(python_string("a"), "\"a\"");
        assert_eq!(
            python_string("x = \"\\n\"\nimport os\t"),
            "\"x = \\\"\\\\n\\\"\\u000aimport os\\u0009\""
        );
        assert_eq!(python_string("é\u{85}"), "\"é\\u0085\"");
    }

    #[test]
    fn the_wrapper_embeds_the_code_as_one_literal() {
        let wrapper = preload_wrapper("import numpy\nx = '''\n'''");
        assert!(wrapper.starts_with("try:\n    exec(compile(\"import numpy\\u000ax = "));
        assert!(!wrapper.contains("\nx ="), "{wrapper}");
        assert!(wrapper.contains("os._exit(86)"));
    }

    #[test]
    fn execution_env_puts_the_request_over_the_sandbox() {
        let sandbox = BTreeMap::from([
            ("A".to_owned(), "sandbox".to_owned()),
            ("B".to_owned(), "sandbox".to_owned()),
        ]);
        let request = BTreeMap::from([("B".to_owned(), "request".to_owned())]);
        let env = execution_env(&sandbox, &BTreeMap::new(), request);
        assert_eq!(env["A"], "sandbox");
        assert_eq!(env["B"], "request");
        let empty = BTreeMap::new();
        assert!(execution_env(&empty, &empty, BTreeMap::new()).is_empty());
    }

    #[test]
    fn execution_env_skips_what_the_runner_started_with() {
        let started = BTreeMap::from([
            ("PATH".to_owned(), "/opt/codebox/python3/bin".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ]);
        let mut sandbox = started.clone();
        sandbox.insert("LANG".to_owned(), "de_DE.UTF-8".to_owned());
        sandbox.insert("TOKEN".to_owned(), "t".to_owned());
        let env = execution_env(&sandbox, &started, BTreeMap::new());
        assert_eq!(
            env,
            BTreeMap::from([
                ("LANG".to_owned(), "de_DE.UTF-8".to_owned()),
                ("TOKEN".to_owned(), "t".to_owned()),
            ])
        );
        assert!(execution_env(&started, &started, BTreeMap::new()).is_empty());
    }
}
