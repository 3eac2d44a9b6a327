//! codebox's language templates: the `python3` virtualenv (ipython, numpy, pandas,
//! matplotlib from PyPI, pinned in `templates/python3/requirements.txt`) and the
//! `node` template (the TypeScript compiler from npm, pinned in
//! `templates/node/package-lock.json`), built on the host under
//! `<data_dir>/templates` and bind-mounted read-only into sandboxes at
//! `/opt/codebox/<name>`.
//!
//! This crate owns the build: one lock per template (`flock` through
//! `File::lock`), a staging directory renamed into place, a manifest that makes
//! a changed requirement list or interpreter rebuild the template, a scrubbed
//! environment and a deadline for pip and npm, progress lines. It describes the
//! mounts and environment variables a sandbox needs ([`SandboxEnvironment`]) but
//! must not mount anything or touch sandboxes: that is the runtime's job, and
//! wiring `codebox template build|list` and `serve` is the binary's.

mod catalog;
mod command;
mod environment;
mod error;
mod manifest;
mod node;
mod progress;
mod python;
mod recipe;
mod tree;

pub use catalog::{
    BuildOptions, BuiltTemplate, TemplateCatalog, TemplateState, TemplateStatus,
    DEFAULT_BUILD_TIMEOUT,
};
pub use command::MAX_LINE_BYTES;
pub use environment::{SandboxEnvironment, TemplateEnvironment, TemplateMount};
pub use error::{BuildError, BuildFailure, BuildStep};
pub use manifest::{Manifest, RecipeInputs, MANIFEST_FILE};
pub use node::{NODE_MOUNT_POINT, NODE_PACKAGE_JSON, NODE_PACKAGE_LOCK};
pub use progress::{Cancellable, NoProgress, Progress, TracingProgress, WriteProgress};
pub use python::{PYTHON_MOUNT_POINT, PYTHON_REQUIREMENTS};
