//! The `node` template: the TypeScript compiler, installed with the host's npm
//! (`npm ci` from the checked-in lock file, integrity hashes verified, install
//! scripts disabled) into `node_modules/typescript`. Node itself is the host's,
//! which every sandbox sees through `/usr`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::command::CommandRunner;
use crate::environment::TemplateEnvironment;
use crate::error::{BuildError, BuildFailure, BuildStep};
use crate::manifest::RecipeInputs;
use crate::recipe::{parse_verify_output, BuildContext, BuildOutput, Recipe};

/// `templates/node/package.json`: pins `typescript` exactly.
pub const NODE_PACKAGE_JSON: &str = include_str!("../../../templates/node/package.json");
/// `templates/node/package-lock.json`: the lock file `npm ci` installs from.
pub const NODE_PACKAGE_LOCK: &str = include_str!("../../../templates/node/package-lock.json");
/// Mount point of the node template inside sandboxes.
pub const NODE_MOUNT_POINT: &str = "/opt/codebox/node";
const RECIPE_REVISION: u32 = 1;

/// Loads the compiler by absolute path (argv[1]), transpiles a typed snippet and
/// reports the version.
const VERIFY_SCRIPT: &str = r#"
const ts = require(process.argv[1]);
const out = ts.transpileModule("const x: number = 1; export {};", {
  compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020 },
});
if (!out.outputText.includes("const x = 1;")) {
  console.error("unexpected transpiler output: " + out.outputText);
  process.exit(1);
}
console.log(JSON.stringify({ versions: { typescript: ts.version, node: process.versions.node },
  packages: { typescript: ts.version } }));
"#;

/// Builds the node template with the host's `node` and `npm`.
#[derive(Debug, Clone)]
pub(crate) struct NodeRecipe {
    node: PathBuf,
    npm: PathBuf,
}

impl NodeRecipe {
    pub(crate) fn new(node: PathBuf, npm: PathBuf) -> Self {
        Self { node, npm }
    }

    fn npm_install(&self, context: &mut BuildContext<'_, '_>) -> Result<(), BuildError> {
        context.step(BuildStep::NpmInstall);
        for (name, content) in [
            ("package.json", NODE_PACKAGE_JSON),
            ("package-lock.json", NODE_PACKAGE_LOCK),
        ] {
            let path = context.dir.join(name);
            fs::write(&path, content)
                .map_err(|error| context.io_error(BuildStep::NpmInstall, &path, error))?;
        }
        let mut command = Command::new(&self.npm);
        command
            .current_dir(&context.dir)
            .args(["ci", "--yes", "--no-audit", "--no-fund", "--ignore-scripts"])
            .args(["--no-update-notifier", "--loglevel=http", "--omit=dev"])
            .arg("--cache")
            .arg(context.cache_dir.join("npm"));
        context.runner.run(BuildStep::NpmInstall, &mut command)?;
        Ok(())
    }

    fn verify(&self, context: &mut BuildContext<'_, '_>) -> Result<BuildOutput, BuildError> {
        context.step(BuildStep::Verify);
        let typescript = context.dir.join("node_modules").join("typescript");
        let mut command = Command::new(&self.node);
        command.arg("-e").arg(VERIFY_SCRIPT).arg(&typescript);
        let output = context.runner.run(BuildStep::Verify, &mut command)?;
        let template = context.runner.template().to_owned();
        parse_verify_output(&template, "node", &output.stdout)
    }
}

impl Recipe for NodeRecipe {
    fn name(&self) -> &'static str {
        "node"
    }

    fn mount_point(&self) -> &'static str {
        NODE_MOUNT_POINT
    }

    fn inputs(&self, runner: &mut CommandRunner<'_>) -> Result<RecipeInputs, BuildError> {
        let mut command = Command::new(&self.node);
        command.arg("--version");
        let output = runner.run(BuildStep::Inspect, &mut command)?;
        let version = output.stdout.trim().trim_start_matches('v').to_owned();
        if !version.starts_with(|c: char| c.is_ascii_digit()) {
            let failure = BuildFailure::UnexpectedOutput {
                program: self.node.display().to_string(),
                detail: format!("not a node version: {version:?}"),
            };
            return Err(BuildError::new(self.name(), BuildStep::Inspect, failure));
        }
        let files = BTreeMap::from([
            ("package.json".to_owned(), NODE_PACKAGE_JSON.to_owned()),
            ("package-lock.json".to_owned(), NODE_PACKAGE_LOCK.to_owned()),
        ]);
        Ok(RecipeInputs {
            interpreter_path: self.node.display().to_string(),
            interpreter_version: version,
            files,
            recipe_revision: RECIPE_REVISION,
        })
    }

    fn build(&self, context: &mut BuildContext<'_, '_>) -> Result<BuildOutput, BuildError> {
        self.npm_install(context)?;
        self.verify(context)
    }

    fn environment(&self) -> TemplateEnvironment {
        let modules = format!("{NODE_MOUNT_POINT}/node_modules");
        TemplateEnvironment {
            // `tsc`: a relative symlink to `../typescript/bin/tsc` run by `env node`.
            path_prefix: vec![format!("{modules}/.bin")],
            variables: vec![
                (
                    "CODEBOX_TS_PATH".to_owned(),
                    format!("{modules}/typescript"),
                ),
                ("NODE_PATH".to_owned(), modules),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_json_and_lock_pin_the_same_exact_typescript() {
        let package: serde_json::Value =
            serde_json::from_str(NODE_PACKAGE_JSON).expect("valid JSON");
        let lock: serde_json::Value = serde_json::from_str(NODE_PACKAGE_LOCK).expect("valid JSON");
        let pinned = package["dependencies"]["typescript"]
            .as_str()
            .expect("typescript pinned");
        assert!(pinned.starts_with("5.") && pinned.chars().all(|c| c.is_ascii_digit() || c == '.'));
        let locked = &lock["packages"]["node_modules/typescript"];
        assert_eq!(locked["version"].as_str(), Some(pinned));
        assert!(locked["integrity"]
            .as_str()
            .is_some_and(|hash| hash.starts_with("sha512-")));
    }

    #[test]
    fn environment_exposes_the_compiler_path() {
        let environment =
            NodeRecipe::new("/usr/bin/node".into(), "/usr/bin/npm".into()).environment();
        assert_eq!(
            environment.path_prefix,
            ["/opt/codebox/node/node_modules/.bin"]
        );
        assert!(environment.variables.contains(&(
            "CODEBOX_TS_PATH".to_owned(),
            "/opt/codebox/node/node_modules/typescript".to_owned()
        )));
    }
}
