//! The one error type of a template build: which template, which step, and why.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A named step of a build; every [`BuildError`] names the step that failed so an
/// operator knows whether the network (pip/npm), the host interpreter or the disk
/// is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStep {
    /// Finding the host interpreter and hashing the pinned inputs.
    Inspect,
    /// Taking the per-template build lock (another process may be building).
    Lock,
    /// Creating the temporary build directory and removing leftovers.
    Prepare,
    /// `python3 -m venv`.
    CreateVenv,
    /// `pip install -r requirements.txt`.
    PipInstall,
    /// `npm ci`.
    NpmInstall,
    /// Rewriting build paths in scripts to the sandbox mount point.
    Relocate,
    /// Importing the packages / running the compiler from the fresh build.
    Verify,
    /// Making the tree world-readable and measuring it.
    Permissions,
    /// Writing the manifest.
    Manifest,
    /// Renaming the build into place.
    Install,
}

impl BuildStep {
    /// The step's name as shown in progress lines and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStep::Inspect => "inspect",
            BuildStep::Lock => "lock",
            BuildStep::Prepare => "prepare",
            BuildStep::CreateVenv => "create venv",
            BuildStep::PipInstall => "pip install",
            BuildStep::NpmInstall => "npm install",
            BuildStep::Relocate => "relocate",
            BuildStep::Verify => "verify",
            BuildStep::Permissions => "permissions",
            BuildStep::Manifest => "manifest",
            BuildStep::Install => "install",
        }
    }
}

impl fmt::Display for BuildStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Building (or inspecting) a template failed. Nothing of the failed build is left
/// on disk; a previously built template of the same name is untouched.
#[derive(Debug, thiserror::Error)]
#[error("template {template}: step `{step}` failed")]
pub struct BuildError {
    /// The template's name (`python3`, `node`).
    pub template: String,
    /// The step that failed.
    pub step: BuildStep,
    /// What went wrong.
    #[source]
    pub cause: BuildFailure,
}

impl BuildError {
    pub(crate) fn new(template: &str, step: BuildStep, cause: BuildFailure) -> Self {
        Self {
            template: template.to_owned(),
            step,
            cause,
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildFailure {
    /// No recipe of that name in the catalog.
    #[error("no such template")]
    UnknownTemplate,
    /// A file system operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program could not be started (missing `python3`, `npm`...).
    #[error("could not start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program exited unsuccessfully. Its output was passed to the progress
    /// sink line by line; the last lines are kept here for the error report.
    #[error("{program} exited with {status}")]
    Exited {
        /// The program.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its combined output.
        output_tail: Vec<String>,
    },
    /// The build's time budget ran out; the program's process group was killed.
    #[error("{program} did not finish within the build timeout of {timeout:?}")]
    TimedOut {
        /// The program.
        program: String,
        /// The whole build's time budget.
        timeout: Duration,
    },
    /// The caller cancelled the build ([`Progress::cancelled`](crate::Progress::cancelled));
    /// the program's process group was killed.
    #[error("{program} was stopped: the build was cancelled")]
    Cancelled {
        /// The program.
        program: String,
    },
    /// A program's output was not what the recipe expects (e.g. no version line).
    #[error("unexpected output from {program}: {detail}")]
    UnexpectedOutput {
        /// The program.
        program: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The manifest could not be encoded.
    #[error("cannot encode the manifest")]
    Manifest {
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl BuildFailure {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        BuildFailure::Io {
            path: path.into(),
            source,
        }
    }
}
