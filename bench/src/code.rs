//! Stateful code execution through the runtime (issue 4's "Speed"): creating a
//! python context and running `1+1` in it, as the API layer would.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use codebox_runtime::linux::prestart::default_context_id;
use codebox_runtime::{CodeRequest, ContextRequest, Language, Runtime};
use codebox_types::SandboxId;

/// Which python runner a context uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The ast-based executor (`CODEBOX_PYTHON_PLAIN=1`).
    Plain,
    /// IPython's InteractiveShell, in process (what a default context gets when
    /// IPython is importable).
    Ipython,
}

impl Runner {
    pub fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Ipython => "ipython",
        }
    }
}

/// The default python context, as the API layer creates it on first use (with
/// the plain knob for [`Runner::Plain`]).
pub fn python_context(runner: Runner) -> ContextRequest {
    let mut env = BTreeMap::new();
    if runner == Runner::Plain {
        env.insert("CODEBOX_PYTHON_PLAIN".to_owned(), "1".to_owned());
    }
    ContextRequest {
        context: default_context_id(Language::Python),
        language: Language::Python,
        cwd: None,
        env,
    }
}

/// Runs `1+1` in the sandbox's default python context; fails unless the
/// result is `2`.
pub async fn one_plus_one(runtime: &dyn Runtime, id: &SandboxId) -> anyhow::Result<()> {
    let request = CodeRequest {
        context: default_context_id(Language::Python),
        code: "1+1".to_owned(),
        timeout: Duration::from_secs(30),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    let output = runtime.execute_code(id, request).await?.collect().await?;
    match output.text() {
        Some("2") => Ok(()),
        other => bail!("1+1 gave {other:?}: {output:?}"),
    }
}

/// Which runner the sandbox's default python context really uses (IPython may
/// not be importable in the jail, and then a default context runs plain).
pub async fn runner_in_use(runtime: &dyn Runtime, id: &SandboxId) -> anyhow::Result<Runner> {
    let request = CodeRequest {
        context: default_context_id(Language::Python),
        code: "'IPython' in __import__('sys').modules".to_owned(),
        timeout: Duration::from_secs(30),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    let output = runtime.execute_code(id, request).await?.collect().await?;
    match output.text() {
        Some("True") => Ok(Runner::Ipython),
        Some("False") => Ok(Runner::Plain),
        other => bail!("runner probe gave {other:?}: {output:?}"),
    }
}
