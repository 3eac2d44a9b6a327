//! The `python3` template: a virtualenv made from the host's `/usr/bin/python3`
//! (which every sandbox sees, since sandboxes get the host's `/usr`) holding the
//! pinned closure of ipython, numpy, pandas and matplotlib from PyPI.
//!
//! The venv is relocatable as long as it is entered through `<mount>/bin/python`:
//! that is a symlink to the host interpreter, and Python finds `pyvenv.cfg` next
//! to the path it was started as, so `sys.prefix` becomes the mount point. The
//! console scripts' shebangs are rewritten to the mount point so `ipython` and
//! `pip` also work on the sandbox's `PATH`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::CommandRunner;
use crate::environment::TemplateEnvironment;
use crate::error::{BuildError, BuildFailure, BuildStep};
use crate::manifest::RecipeInputs;
use crate::recipe::{parse_verify_output, BuildContext, BuildOutput, Recipe};
use crate::tree::{relocate_text, remove_tree};

/// The pinned requirements (complete closure), checked in at
/// `templates/python3/requirements.txt` and compiled into the binary so an
/// installed `codebox` needs no source tree.
pub const PYTHON_REQUIREMENTS: &str = include_str!("../../../templates/python3/requirements.txt");
/// Mount point of the python3 template inside sandboxes.
pub const PYTHON_MOUNT_POINT: &str = "/opt/codebox/python3";
/// Bumped when the build steps below change in a way that changes the result.
const RECIPE_REVISION: u32 = 1;
/// File name of the requirements copy kept inside the venv (a record of it).
const REQUIREMENTS_FILE: &str = "requirements.txt";

/// Prints the interpreter version.
const VERSION_SCRIPT: &str = "import platform; print(platform.python_version())";
/// Imports the four packages, renders a PNG with Agg, and reports versions.
const VERIFY_SCRIPT: &str = r#"
import io, json, platform, importlib.metadata as metadata
import IPython, matplotlib, numpy, pandas
import matplotlib.pyplot as plt
figure = plt.figure()
plt.plot([1, 2, 3])
buffer = io.BytesIO()
figure.savefig(buffer, format="png")
assert buffer.getvalue().startswith(b"\x89PNG"), "matplotlib did not render a PNG"
assert "<table" in pandas.DataFrame({"a": [1]}).to_html()
print(json.dumps({
    "versions": {
        "python": platform.python_version(),
        "ipython": IPython.__version__,
        "matplotlib": matplotlib.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    },
    "packages": {d.metadata["Name"].lower(): d.version for d in metadata.distributions()},
}))
"#;

/// Builds the python3 template from `interpreter` (normally `/usr/bin/python3`).
#[derive(Debug, Clone)]
pub(crate) struct PythonRecipe {
    interpreter: PathBuf,
}

impl PythonRecipe {
    pub(crate) fn new(interpreter: PathBuf) -> Self {
        Self { interpreter }
    }

    fn create_venv(&self, context: &mut BuildContext<'_, '_>) -> Result<(), BuildError> {
        context.step(BuildStep::CreateVenv);
        let mut command = Command::new(&self.interpreter);
        command.arg("-m").arg("venv").arg(&context.dir);
        context.runner.run(BuildStep::CreateVenv, &mut command)?;
        Ok(())
    }

    fn pip_install(&self, context: &mut BuildContext<'_, '_>) -> Result<(), BuildError> {
        context.step(BuildStep::PipInstall);
        let requirements = context.dir.join(REQUIREMENTS_FILE);
        fs::write(&requirements, PYTHON_REQUIREMENTS)
            .map_err(|error| context.io_error(BuildStep::PipInstall, &requirements, error))?;
        let mut command = venv_python(&context.dir);
        command
            .args([
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
            ])
            .args(["--progress-bar", "off", "--no-warn-script-location"])
            // The file is the complete closure: nothing unpinned can sneak in, and
            // no source distribution (arbitrary build code, a compiler) ever runs.
            .args(["--no-deps", "--only-binary=:all:", "--require-virtualenv"])
            .arg("-r")
            .arg(&requirements)
            .env("PIP_CACHE_DIR", context.cache_dir.join("pip"))
            .env("PIP_NO_INPUT", "1")
            .env("PYTHONNOUSERSITE", "1");
        context.runner.run(BuildStep::PipInstall, &mut command)?;
        let mut check = venv_python(&context.dir);
        check.args(["-m", "pip", "check", "--disable-pip-version-check"]);
        context.runner.run(BuildStep::PipInstall, &mut check)?;
        Ok(())
    }

    fn relocate(&self, context: &mut BuildContext<'_, '_>) -> Result<(), BuildError> {
        context.step(BuildStep::Relocate);
        let bin = context.dir.join("bin");
        let config = context.dir.join("pyvenv.cfg");
        let from = context.dir.to_string_lossy().into_owned();
        relocate_text(&bin, &[&config], &from, PYTHON_MOUNT_POINT)
            .map_err(|error| context.io_error(BuildStep::Relocate, &bin, error))?;
        Ok(())
    }

    fn verify(&self, context: &mut BuildContext<'_, '_>) -> Result<BuildOutput, BuildError> {
        context.step(BuildStep::Verify);
        // matplotlib writes its font cache here; removed before the install.
        let scratch = context.dir.join(".verify-scratch");
        fs::create_dir(&scratch)
            .map_err(|error| context.io_error(BuildStep::Verify, &scratch, error))?;
        let mut command = venv_python(&context.dir);
        command
            .arg("-c")
            .arg(VERIFY_SCRIPT)
            .env("MPLBACKEND", "Agg")
            .env("MPLCONFIGDIR", &scratch)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONNOUSERSITE", "1");
        let result = context.runner.run(BuildStep::Verify, &mut command);
        remove_tree(&scratch)
            .map_err(|error| context.io_error(BuildStep::Verify, &scratch, error))?;
        let template = context.runner.template().to_owned();
        parse_verify_output(&template, "python", &result?.stdout)
    }
}

fn venv_python(venv: &Path) -> Command {
    Command::new(venv.join("bin").join("python"))
}

impl Recipe for PythonRecipe {
    fn name(&self) -> &'static str {
        "python3"
    }

    fn mount_point(&self) -> &'static str {
        PYTHON_MOUNT_POINT
    }

    fn inputs(&self, runner: &mut CommandRunner<'_>) -> Result<RecipeInputs, BuildError> {
        let mut command = Command::new(&self.interpreter);
        command.args(["-I", "-c", VERSION_SCRIPT]);
        let output = runner.run(BuildStep::Inspect, &mut command)?;
        let version = output.stdout.trim().to_owned();
        if version.is_empty() || !version.starts_with('3') {
            let failure = BuildFailure::UnexpectedOutput {
                program: self.interpreter.display().to_string(),
                detail: format!("not a Python 3 version: {version:?}"),
            };
            return Err(BuildError::new(self.name(), BuildStep::Inspect, failure));
        }
        Ok(RecipeInputs {
            interpreter_path: self.interpreter.display().to_string(),
            interpreter_version: version,
            files: BTreeMap::from([(REQUIREMENTS_FILE.to_owned(), PYTHON_REQUIREMENTS.to_owned())]),
            recipe_revision: RECIPE_REVISION,
        })
    }

    fn build(&self, context: &mut BuildContext<'_, '_>) -> Result<BuildOutput, BuildError> {
        self.create_venv(context)?;
        self.pip_install(context)?;
        self.relocate(context)?;
        self.verify(context)
    }

    fn environment(&self) -> TemplateEnvironment {
        let variables = [
            ("CODEBOX_PYTHON", format!("{PYTHON_MOUNT_POINT}/bin/python")),
            ("MPLBACKEND", "Agg".to_owned()),
            // The sandbox home may be fresh and the template is read-only.
            ("MPLCONFIGDIR", "/tmp/matplotlib".to_owned()),
        ];
        TemplateEnvironment {
            path_prefix: vec![format!("{PYTHON_MOUNT_POINT}/bin")],
            variables: variables
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_pin_every_line_to_an_exact_version() {
        let pins: Vec<&str> = PYTHON_REQUIREMENTS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        for name in ["ipython==", "numpy==", "pandas==", "matplotlib=="] {
            assert!(
                pins.iter().any(|pin| pin.starts_with(name)),
                "{name} is not pinned"
            );
        }
        for pin in pins {
            let (name, version) = pin
                .split_once("==")
                .unwrap_or_else(|| panic!("unpinned: {pin}"));
            assert!(!name.is_empty() && !version.is_empty(), "bad pin {pin}");
            assert!(!version.contains(['*', ',', '<', '>']), "not exact: {pin}");
        }
    }

    #[test]
    fn environment_points_at_the_mount_point() {
        let environment = PythonRecipe::new("/usr/bin/python3".into()).environment();
        assert_eq!(environment.path_prefix, ["/opt/codebox/python3/bin"]);
        let get = |key: &str| {
            environment
                .variables
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(
            get("CODEBOX_PYTHON"),
            Some("/opt/codebox/python3/bin/python")
        );
        assert_eq!(get("MPLBACKEND"), Some("Agg"));
        assert_eq!(get("MPLCONFIGDIR"), Some("/tmp/matplotlib"));
        assert_eq!(get("PATH"), None);
    }
}
