//! The recipe seam: how one template is inspected and built. The catalog does
//! the locking, staging, manifest and atomic install around it; recipes only
//! run their tools inside the build directory they are given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::command::CommandRunner;
use crate::environment::TemplateEnvironment;
use crate::error::{BuildError, BuildFailure, BuildStep};
use crate::manifest::RecipeInputs;

/// Where a recipe builds and what it may use.
pub(crate) struct BuildContext<'r, 'p> {
    /// The temporary build directory (empty, exists). Renamed into place later,
    /// so nothing may depend on this path at run time.
    pub dir: PathBuf,
    /// `<data_dir>/cache`: download caches live in sub-directories.
    pub cache_dir: PathBuf,
    /// Runs the recipe's programs against the build's deadline.
    pub runner: &'r mut CommandRunner<'p>,
}

impl fmt::Debug for BuildContext<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("dir", &self.dir)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl BuildContext<'_, '_> {
    /// Announces `step` to the progress sink.
    pub fn step(&mut self, step: BuildStep) {
        let template = self.runner.template().to_owned();
        self.runner.progress().step(&template, step);
    }

    /// An I/O error on `path` during `step`, as a build error.
    pub fn io_error(&self, step: BuildStep, path: &Path, source: std::io::Error) -> BuildError {
        BuildError::new(self.runner.template(), step, BuildFailure::io(path, source))
    }
}

/// What a successful recipe build reports for the manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BuildOutput {
    /// Headline versions (`python`, `numpy`, `typescript`...).
    pub versions: BTreeMap<String, String>,
    /// Every installed package.
    pub packages: BTreeMap<String, String>,
}

/// One template kind.
pub(crate) trait Recipe: Send + Sync + fmt::Debug {
    /// Its name (`python3`, `node`): also the directory name under the root.
    fn name(&self) -> &'static str;
    /// Where the runtime mounts it in the sandbox.
    fn mount_point(&self) -> &'static str;
    /// The inputs the build depends on (runs the interpreter for its version).
    fn inputs(&self, runner: &mut CommandRunner<'_>) -> Result<RecipeInputs, BuildError>;
    /// Builds into `context.dir` and verifies the result.
    fn build(&self, context: &mut BuildContext<'_, '_>) -> Result<BuildOutput, BuildError>;
    /// What the sandbox needs to use the template at its mount point.
    fn environment(&self) -> TemplateEnvironment;
}

/// Parses the JSON object a verify script printed as the last line of stdout.
pub(crate) fn parse_verify_output(
    template: &str,
    program: &str,
    stdout: &str,
) -> Result<BuildOutput, BuildError> {
    #[derive(serde::Deserialize)]
    struct Report {
        versions: BTreeMap<String, String>,
        #[serde(default)]
        packages: BTreeMap<String, String>,
    }
    let unexpected = |detail: String| {
        let failure = BuildFailure::UnexpectedOutput {
            program: program.to_owned(),
            detail,
        };
        BuildError::new(template, BuildStep::Verify, failure)
    };
    let line = stdout.lines().last().unwrap_or_default();
    let report: Report = serde_json::from_str(line)
        .map_err(|error| unexpected(format!("no version report ({error})")))?;
    Ok(BuildOutput {
        versions: report.versions,
        packages: report.packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_output_is_the_last_stdout_line() {
        let stdout =
            "noise\n{\"versions\":{\"numpy\":\"2.4.6\"},\"packages\":{\"numpy\":\"2.4.6\"}}\n";
        let output = parse_verify_output("python3", "python", stdout).expect("parsed");
        assert_eq!(output.versions["numpy"], "2.4.6");
        assert_eq!(output.packages.len(), 1);

        let error = parse_verify_output("python3", "python", "garbage\n").expect_err("not JSON");
        assert_eq!(error.step, BuildStep::Verify);
        assert!(matches!(error.cause, BuildFailure::UnexpectedOutput { .. }));
    }
}
