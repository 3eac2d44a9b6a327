//! The catalog: where templates live under the data directory, which are built,
//! and the locked, staged, atomic build around a recipe.
//!
//! Layout under `<data_dir>/templates`:
//! `<name>/` the built template (manifest inside), `<name>.lock` the build lock,
//! `<name>.build-<unique>/` a build in progress, `<name>.old-<unique>/` the
//! previous build after a rebuild (kept until the next build of that template,
//! so sandboxes that still have it mounted keep working). Download caches live
//! in `<data_dir>/cache/{pip,npm}`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::command::CommandRunner;
use crate::environment::{SandboxEnvironment, TemplateEnvironment, TemplateMount};
use crate::error::{BuildError, BuildFailure, BuildStep};
use crate::manifest::{Manifest, RecipeInputs};
use crate::node::NodeRecipe;
use crate::progress::{NoProgress, Progress};
use crate::python::PythonRecipe;
use crate::recipe::{BuildContext, BuildOutput, Recipe};
use crate::tree::{normalize_permissions, remove_tree};

/// Default time budget of one build (lock wait included): generous, since a
/// cold pip cache downloads about 100 MB.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often a waiting build retries the lock.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Host tools and limits of the builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Time budget of one build, lock wait included.
    pub timeout: Duration,
    /// The interpreter the python3 venv is made from. It must be one sandboxes
    /// see at the same path (they get the host's `/usr`).
    pub python: PathBuf,
    /// The host's node (sandboxes run the same one).
    pub node: PathBuf,
    /// The host's npm.
    pub npm: PathBuf,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_BUILD_TIMEOUT,
            python: "/usr/bin/python3".into(),
            node: "/usr/bin/node".into(),
            npm: "/usr/bin/npm".into(),
        }
    }
}

/// Whether a template is usable and current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateState {
    /// Never built (or its manifest is unreadable).
    Missing,
    /// Built from the current pinned inputs and interpreter.
    Ready,
    /// Built, but the requirements or the interpreter changed since (or the
    /// interpreter cannot be inspected): `ensure_built` rebuilds it.
    Stale,
}

impl TemplateState {
    /// `missing`, `ready` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateState::Missing => "missing",
            TemplateState::Ready => "ready",
            TemplateState::Stale => "stale",
        }
    }
}

impl std::fmt::Display for TemplateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One template as `codebox template list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateStatus {
    /// `python3`, `node`.
    pub name: String,
    /// Missing, ready or stale.
    pub state: TemplateState,
    /// Its directory on the host (exists only when built).
    pub host_path: PathBuf,
    /// Where sandboxes see it.
    pub mount_point: PathBuf,
    /// Headline versions of the built template (empty when missing).
    pub versions: BTreeMap<String, String>,
    /// Size on disk in bytes, when built.
    pub size_bytes: Option<u64>,
    /// When it was built (RFC 3339), when built.
    pub built_at: Option<String>,
}

impl TemplateStatus {
    /// Whether a build exists (ready or stale): it can be mounted.
    pub fn is_built(&self) -> bool {
        self.state != TemplateState::Missing
    }
}

/// A built template, ready to be mounted.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltTemplate {
    /// `python3`, `node`.
    pub name: String,
    /// The directory to bind-mount (read-only).
    pub host_path: PathBuf,
    /// Where to mount it in the sandbox.
    pub mount_point: PathBuf,
    /// What it was built from and holds.
    pub manifest: Manifest,
    environment: TemplateEnvironment,
}

impl BuiltTemplate {
    /// The bind mount the runtime creates (read-only, `nosuid,nodev`).
    pub fn mount(&self) -> TemplateMount {
        TemplateMount {
            host_path: self.host_path.clone(),
            sandbox_path: self.mount_point.clone(),
        }
    }

    /// The `PATH` prefix and variables a sandbox needs to use it.
    pub fn environment(&self) -> &TemplateEnvironment {
        &self.environment
    }
}

/// The language templates under one data directory.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    root: PathBuf,
    cache_dir: PathBuf,
    timeout: Duration,
    recipes: Vec<Arc<dyn Recipe>>,
}

impl TemplateCatalog {
    /// The python3 and node templates under `<data_dir>/templates`, with the
    /// default host tools and timeout. Touches nothing on disk.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Self::with_options(data_dir, BuildOptions::default())
    }

    /// As [`new`](Self::new) with explicit tools and timeout.
    pub fn with_options(data_dir: impl AsRef<Path>, options: BuildOptions) -> Self {
        let recipes: Vec<Arc<dyn Recipe>> = vec![
            Arc::new(PythonRecipe::new(options.python)),
            Arc::new(NodeRecipe::new(options.node, options.npm)),
        ];
        Self::with_recipes(data_dir.as_ref(), recipes, options.timeout)
    }

    pub(crate) fn with_recipes(
        data_dir: &Path,
        recipes: Vec<Arc<dyn Recipe>>,
        timeout: Duration,
    ) -> Self {
        Self {
            root: data_dir.join("templates"),
            cache_dir: data_dir.join("cache"),
            timeout,
            recipes,
        }
    }

    /// `<data_dir>/templates`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The names of the templates this catalog knows.
    pub fn names(&self) -> Vec<&'static str> {
        self.recipes.iter().map(|recipe| recipe.name()).collect()
    }

    /// Every known template with its state. Runs each interpreter once (its
    /// version decides staleness).
    pub fn list(&self) -> Vec<TemplateStatus> {
        self.recipes
            .iter()
            .map(|recipe| self.status(recipe.as_ref()))
            .collect()
    }

    /// The built template `name`, if any (current or stale): cheap, reads only the
    /// manifest, for the runtime to mount.
    pub fn locate(&self, name: &str) -> Option<BuiltTemplate> {
        let recipe = self.recipe(name).ok()?;
        self.built(recipe.as_ref())
    }

    /// Mounts and environment for every built template.
    pub fn sandbox_environment(&self) -> SandboxEnvironment {
        let mut environment = SandboxEnvironment::default();
        for recipe in &self.recipes {
            if let Some(built) = self.built(recipe.as_ref()) {
                environment.add(built.mount(), built.environment);
            }
        }
        environment
    }

    /// Builds `name` now, replacing a current build too.
    pub fn build(
        &self,
        name: &str,
        progress: &mut dyn Progress,
    ) -> Result<BuiltTemplate, BuildError> {
        let recipe = self.recipe(name)?;
        self.build_with(recipe.as_ref(), progress, true)
    }

    /// Returns `name` when built from the current inputs; otherwise builds it
    /// (missing or stale). Concurrent callers, in this or other processes, build
    /// it once: the others wait for the lock and then find it current.
    pub fn ensure_built(
        &self,
        name: &str,
        progress: &mut dyn Progress,
    ) -> Result<BuiltTemplate, BuildError> {
        let recipe = self.recipe(name)?;
        self.build_with(recipe.as_ref(), progress, false)
    }

    fn recipe(&self, name: &str) -> Result<&Arc<dyn Recipe>, BuildError> {
        self.recipes
            .iter()
            .find(|recipe| recipe.name() == name)
            .ok_or_else(|| BuildError::new(name, BuildStep::Inspect, BuildFailure::UnknownTemplate))
    }

    fn template_dir(&self, recipe: &dyn Recipe) -> PathBuf {
        self.root.join(recipe.name())
    }

    fn built(&self, recipe: &dyn Recipe) -> Option<BuiltTemplate> {
        let host_path = self.template_dir(recipe);
        let manifest = Manifest::read(&host_path)?;
        (manifest.name == recipe.name()).then(|| BuiltTemplate {
            name: recipe.name().to_owned(),
            host_path,
            mount_point: recipe.mount_point().into(),
            manifest,
            environment: recipe.environment(),
        })
    }

    fn status(&self, recipe: &dyn Recipe) -> TemplateStatus {
        let built = self.built(recipe);
        let state = match &built {
            None => TemplateState::Missing,
            Some(built) => match self.inspect(recipe, &mut NoProgress) {
                Ok(inputs) if inputs.fingerprint(recipe.name()) == built.manifest.fingerprint => {
                    TemplateState::Ready
                }
                Ok(_) => TemplateState::Stale,
                Err(error) => {
                    tracing::warn!(template = recipe.name(), error = %error, "cannot inspect template inputs");
                    TemplateState::Stale
                }
            },
        };
        TemplateStatus {
            name: recipe.name().to_owned(),
            state,
            host_path: self.template_dir(recipe),
            mount_point: recipe.mount_point().into(),
            versions: built
                .as_ref()
                .map(|b| b.manifest.versions.clone())
                .unwrap_or_default(),
            size_bytes: built.as_ref().map(|b| b.manifest.size_bytes),
            built_at: built.map(|b| b.manifest.built_at),
        }
    }

    fn inspect(
        &self,
        recipe: &dyn Recipe,
        progress: &mut dyn Progress,
    ) -> Result<RecipeInputs, BuildError> {
        let deadline = Instant::now() + self.timeout;
        let mut runner = CommandRunner::new(recipe.name(), deadline, self.timeout, progress);
        recipe.inputs(&mut runner)
    }

    fn current(&self, recipe: &dyn Recipe, fingerprint: &str) -> Option<BuiltTemplate> {
        self.built(recipe)
            .filter(|built| built.manifest.fingerprint == fingerprint)
    }

    fn build_with(
        &self,
        recipe: &dyn Recipe,
        progress: &mut dyn Progress,
        force: bool,
    ) -> Result<BuiltTemplate, BuildError> {
        let started = Instant::now();
        let name = recipe.name();
        progress.step(name, BuildStep::Inspect);
        let inputs = self.inspect(recipe, progress)?;
        let plan = BuildPlan {
            fingerprint: inputs.fingerprint(name),
            inputs,
            started,
            deadline: started + self.timeout,
        };
        if !force {
            if let Some(built) = self.current(recipe, &plan.fingerprint) {
                return Ok(built);
            }
        }
        let _lock = self.lock(recipe, progress, plan.deadline)?;
        if !force {
            // Another process may have built it while we waited for the lock.
            if let Some(built) = self.current(recipe, &plan.fingerprint) {
                progress.note(name, "already built by another build");
                return Ok(built);
            }
        }
        self.build_locked(recipe, &plan, progress)
    }

    /// Stages, builds, verifies and installs; the caller holds the lock.
    fn build_locked(
        &self,
        recipe: &dyn Recipe,
        plan: &BuildPlan,
        progress: &mut dyn Progress,
    ) -> Result<BuiltTemplate, BuildError> {
        let name = recipe.name();
        let staged = self.stage(recipe, progress)?;
        let mut runner = CommandRunner::new(name, plan.deadline, self.timeout, progress);
        let mut context = BuildContext {
            dir: staged.path.clone(),
            cache_dir: self.cache_dir.clone(),
            runner: &mut runner,
        };
        let output = recipe.build(&mut context)?;
        let manifest = finish(name, &staged, plan, output, progress)?;
        self.install(recipe, staged, progress)?;
        tracing::info!(
            template = name,
            seconds = manifest.build_seconds,
            "template built"
        );
        self.built(recipe).ok_or_else(|| {
            let source = std::io::Error::other("manifest missing after install");
            let failure = BuildFailure::io(self.template_dir(recipe), source);
            BuildError::new(name, BuildStep::Install, failure)
        })
    }

    /// Takes `<name>.lock` exclusively, retrying until the deadline. The lock is
    /// released when the returned file is dropped (or the process dies).
    fn lock(
        &self,
        recipe: &dyn Recipe,
        progress: &mut dyn Progress,
        deadline: Instant,
    ) -> Result<File, BuildError> {
        let name = recipe.name();
        let io_error = |path: &Path, source| {
            BuildError::new(name, BuildStep::Lock, BuildFailure::io(path, source))
        };
        fs::create_dir_all(&self.root).map_err(|source| io_error(&self.root, source))?;
        let path = self.root.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| io_error(&path, source))?;
        let mut announced = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::Error(source)) => return Err(io_error(&path, source)),
                Err(TryLockError::WouldBlock) if progress.cancelled() => {
                    let failure = BuildFailure::Cancelled {
                        program: format!("waiting for {}", path.display()),
                    };
                    return Err(BuildError::new(name, BuildStep::Lock, failure));
                }
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    let failure = BuildFailure::TimedOut {
                        program: format!("waiting for {}", path.display()),
                        timeout: self.timeout,
                    };
                    return Err(BuildError::new(name, BuildStep::Lock, failure));
                }
                Err(TryLockError::WouldBlock) => {
                    if !announced {
                        progress.note(name, "waiting for another build of this template to finish");
                        announced = true;
                    }
                    thread::sleep(LOCK_RETRY);
                }
            }
        }
    }

    /// Removes leftovers of earlier builds (we hold the lock: nobody else is
    /// building this template) and creates a fresh build directory.
    fn stage(
        &self,
        recipe: &dyn Recipe,
        progress: &mut dyn Progress,
    ) -> Result<StagedBuild, BuildError> {
        let name = recipe.name();
        progress.step(name, BuildStep::Prepare);
        let io_error = |path: &Path, source| {
            BuildError::new(name, BuildStep::Prepare, BuildFailure::io(path, source))
        };
        for leftover in self
            .leftovers(name)
            .map_err(|source| io_error(&self.root, source))?
        {
            progress.note(name, &format!("removing leftover {}", leftover.display()));
            remove_tree(&leftover).map_err(|source| io_error(&leftover, source))?;
        }
        for cache in ["pip", "npm"] {
            let path = self.cache_dir.join(cache);
            fs::create_dir_all(&path).map_err(|source| io_error(&path, source))?;
        }
        let path = self.root.join(format!("{name}.build-{}", unique_suffix()));
        fs::create_dir(&path).map_err(|source| io_error(&path, source))?;
        Ok(StagedBuild {
            path,
            installed: false,
        })
    }

    fn leftovers(&self, name: &str) -> std::io::Result<Vec<PathBuf>> {
        let prefixes = [format!("{name}.build-"), format!("{name}.old-")];
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if prefixes
                .iter()
                .any(|prefix| file_name.starts_with(prefix.as_str()))
            {
                found.push(entry.path());
            }
        }
        Ok(found)
    }

    /// Renames the build into place. A previous build is first renamed aside (a
    /// directory cannot be replaced by `rename`); if the second rename fails it is
    /// put back, so there is always either the old or the new template.
    fn install(
        &self,
        recipe: &dyn Recipe,
        mut staged: StagedBuild,
        progress: &mut dyn Progress,
    ) -> Result<(), BuildError> {
        let name = recipe.name();
        progress.step(name, BuildStep::Install);
        let target = self.template_dir(recipe);
        let io_error = |path: &Path, source| {
            BuildError::new(name, BuildStep::Install, BuildFailure::io(path, source))
        };
        let aside = self.root.join(format!("{name}.old-{}", unique_suffix()));
        let had_previous = match fs::rename(&target, &aside) {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => return Err(io_error(&target, source)),
        };
        if let Err(source) = fs::rename(&staged.path, &target) {
            if had_previous {
                let _ = fs::rename(&aside, &target);
            }
            return Err(io_error(&target, source));
        }
        staged.installed = true;
        if had_previous {
            progress.note(
                name,
                "previous build kept until the next build (sandboxes may still use it)",
            );
        }
        Ok(())
    }
}

/// What one build works towards, decided before the lock is taken.
#[derive(Debug)]
struct BuildPlan {
    inputs: RecipeInputs,
    fingerprint: String,
    started: Instant,
    deadline: Instant,
}

/// Makes the staged tree readable by the sandbox user, measures it and writes
/// its manifest.
fn finish(
    name: &str,
    staged: &StagedBuild,
    plan: &BuildPlan,
    output: BuildOutput,
    progress: &mut dyn Progress,
) -> Result<Manifest, BuildError> {
    progress.step(name, BuildStep::Permissions);
    let size_bytes = normalize_permissions(&staged.path).map_err(|source| {
        BuildError::new(
            name,
            BuildStep::Permissions,
            BuildFailure::io(&staged.path, source),
        )
    })?;
    progress.step(name, BuildStep::Manifest);
    let manifest = Manifest {
        format: Manifest::format_version(),
        name: name.to_owned(),
        fingerprint: plan.fingerprint.clone(),
        interpreter_path: plan.inputs.interpreter_path.clone(),
        interpreter_version: plan.inputs.interpreter_version.clone(),
        versions: output.versions,
        packages: output.packages,
        size_bytes,
        built_at: now_rfc3339(),
        build_seconds: plan.started.elapsed().as_secs_f64(),
    };
    manifest
        .write(&staged.path)
        .map_err(|error| BuildError::new(name, BuildStep::Manifest, error.into()))?;
    Ok(manifest)
}

/// A build directory that removes itself unless installed: a failed or
/// panicking build leaves nothing behind.
#[derive(Debug)]
struct StagedBuild {
    path: PathBuf,
    installed: bool,
}

impl Drop for StagedBuild {
    fn drop(&mut self) {
        if !self.installed {
            if let Err(error) = remove_tree(&self.path) {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove failed template build");
            }
        }
    }
}

/// Unique per process and call; the pid separates processes (the lock already
/// serialises builds of one template, this only avoids any name clash).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
