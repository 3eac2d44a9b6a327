//! The language templates from the binary's side: `codebox template build|list`
//! and the background build `serve` starts.
//!
//! Building, locking and staging belong to `codebox-template`; mounting belongs to
//! the runtime. This module only picks the catalog from the configuration,
//! reports progress (stderr for the CLI, `tracing` for `serve`), turns Ctrl-C and
//! shutdown into a cancellation, and hands the runtime plain data (mounts and
//! environment variables) whenever the set of built templates changes. A missing
//! or failed template never stops `serve`: sandboxes then run on the host's
//! plain interpreters.

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal as _, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use codebox_config::{CodeboxConfig, ContextLanguage};
use codebox_runtime::{Language, LinuxRuntime, LinuxRuntimeConfig};
use codebox_template::{
    BuildStep, Cancellable, Progress, SandboxEnvironment, TemplateCatalog, TemplateStatus,
    TracingProgress, WriteProgress, PYTHON_MOUNT_POINT,
};

use crate::admin::say;
use crate::cli::{OutputFormat, TemplateCommand};

/// The base `PATH` of sandboxes (the agent's default), after the templates'
/// own directories.
pub const SANDBOX_BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `codebox template ...`.
pub async fn run(
    command: TemplateCommand,
    config: &CodeboxConfig,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let catalog = catalog(config);
    match command {
        TemplateCommand::List { .. } => list(&catalog, output).await,
        TemplateCommand::Build { name, force, .. } => {
            let names = match name {
                Some(name) => vec![known(&catalog, &name)?],
                None => enabled(config, &catalog)?,
            };
            build(catalog, names, force).await
        }
    }
}

/// The templates under `templates.root_dir` (default: the data directory),
/// made absolute: the runtime mounts them from a fixed path.
pub fn catalog(config: &CodeboxConfig) -> TemplateCatalog {
    let root = config.templates_root();
    TemplateCatalog::new(std::path::absolute(&root).unwrap_or(root))
}

/// Gives the runtime the enabled templates already built (their manifest is
/// read, nothing is run) and lets the jail reach them.
pub fn configure_runtime(
    config: &CodeboxConfig,
    runtime: &mut LinuxRuntimeConfig,
) -> anyhow::Result<()> {
    let catalog = catalog(config);
    let enabled = enabled(config, &catalog)?;
    if enabled.is_empty() {
        return Ok(());
    }
    if let Err(error) = allow_traversal(config, &catalog) {
        // Not fatal to serving (a root that cannot even be created holds no
        // template to mount), but a template the jail cannot traverse to would
        // fail sandbox creation: say so loudly.
        tracing::error!(
            error = format!("{error:#}"),
            "cannot make the language templates reachable for sandboxes"
        );
    }
    let templates = sandbox_templates(&catalog, &enabled);
    tracing::info!(
        mounted = templates.mounts.len(),
        enabled = enabled.len(),
        "language templates"
    );
    runtime.template_mounts = templates.mounts;
    runtime.template_env = templates.env;
    Ok(())
}

/// Maps the warm pool's prestarted contexts (`runtime.pool_prestart_contexts`)
/// and the python3 template's preload (`templates.python3.preload`) onto the
/// runtime. The config's checks guarantee a preload has python3 enabled and a
/// prestarted python context to run in.
pub fn configure_prestart(config: &CodeboxConfig, runtime: &mut LinuxRuntimeConfig) {
    runtime.pool_prestart_contexts = config
        .runtime
        .pool_prestart_contexts
        .iter()
        .map(|&language| runtime_language(language))
        .collect();
    runtime.python_preload = config
        .templates
        .python3
        .preload
        .as_deref()
        .map(template_only_preload);
    if runtime.python_preload.is_some() && runtime.pool_size == 0 {
        tracing::warn!("templates.python3.preload has no effect: runtime.pool_size is 0");
    }
}

fn runtime_language(language: ContextLanguage) -> Language {
    match language {
        ContextLanguage::Python => Language::Python,
        ContextLanguage::Javascript => Language::Javascript,
        ContextLanguage::Typescript => Language::Typescript,
        ContextLanguage::Bash => Language::Bash,
    }
}

/// `code` guarded to run only on the python3 template's interpreter. The
/// runtime's preload is one fixed string, but the template may be mounted
/// only later (built in the background): until then the warm sandboxes run
/// the host's plain python, which lacks the libraries, and the guard makes the
/// preload a no-op there (still warming IPython up) instead of a failure on
/// every pool refill. `sys.prefix` is the venv's root exactly when the runner
/// was started from `<mount>/bin/python3`. Runs in the cell namespace, so
/// `import numpy as np` leaves `np` defined; the guard itself defines nothing.
fn template_only_preload(code: &str) -> String {
    format!(
        "if __import__(\"sys\").prefix == {}:\n    \
         exec(compile({}, \"<templates.python3.preload>\", \"exec\"), globals())\n",
        python_literal(PYTHON_MOUNT_POINT),
        python_literal(code)
    )
}

/// A Python string literal holding exactly `text`: everything but printable
/// ASCII is escaped, so no newline, quote or exotic line break can end it.
fn python_literal(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('"');
    for c in text.chars() {
        match c {
            '\\' | '"' => {
                literal.push('\\');
                literal.push(c);
            }
            ' '..='~' => literal.push(c),
            c => literal.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    literal.push('"');
    literal
}

/// Hands each new set of built templates to the runtime: sandboxes started
/// afterwards (and the refilled warm pool) get them.
pub fn apply_to(runtime: LinuxRuntime) -> impl Fn(SandboxTemplates) + Send + 'static {
    move |templates| {
        if let Err(error) = runtime.set_templates(templates.mounts, templates.env) {
            tracing::error!(error = %error, "cannot give the runtime the new templates");
        }
    }
}

/// The jail bind-mounts templates under the sandbox's mapped, unprivileged
/// host uid, so it must be able to traverse (not list) the directories
/// leading to them that codebox owns: `<root>/templates`, `<root>` and, when
/// the root is inside it, the data directory (0700 otherwise).
fn allow_traversal(config: &CodeboxConfig, catalog: &TemplateCatalog) -> anyhow::Result<()> {
    let templates = catalog.root();
    fs::create_dir_all(templates)
        .with_context(|| format!("cannot create {}", templates.display()))?;
    let mut dirs = vec![templates.to_owned()];
    dirs.extend(templates.parent().map(Path::to_owned));
    let data_dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
    if templates.starts_with(&data_dir) {
        dirs.push(data_dir);
    }
    for dir in dirs {
        let mode = fs::metadata(&dir)
            .with_context(|| format!("cannot inspect {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o011))
                .with_context(|| format!("cannot make {} traversable", dir.display()))?;
        }
    }
    Ok(())
}

/// `templates.enabled`, each checked against the catalog.
pub fn enabled(config: &CodeboxConfig, catalog: &TemplateCatalog) -> anyhow::Result<Vec<String>> {
    config
        .templates
        .enabled
        .iter()
        .map(|name| known(catalog, name).context("invalid templates.enabled"))
        .collect()
}

fn known(catalog: &TemplateCatalog, name: &str) -> anyhow::Result<String> {
    let names = catalog.names();
    if names.contains(&name) {
        Ok(name.to_owned())
    } else {
        anyhow::bail!("unknown template {name:?} (known: {})", names.join(", "))
    }
}

async fn list(catalog: &TemplateCatalog, output: OutputFormat) -> anyhow::Result<()> {
    let catalog = catalog.clone();
    let statuses = tokio::task::spawn_blocking(move || catalog.list())
        .await
        .context("the template listing panicked")?;
    match output {
        OutputFormat::Text => say(&render_list(&statuses)),
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&list_json(&statuses))
                .context("cannot print the listing")?;
            say(&format!("{text}\n"))
        }
    }
}

/// `{"templates": [...]}` for `--output json`.
fn list_json(statuses: &[TemplateStatus]) -> serde_json::Value {
    let templates: Vec<serde_json::Value> = statuses
        .iter()
        .map(|status| {
            serde_json::json!({
                "name": status.name,
                "state": status.state.as_str(),
                "mount_point": status.mount_point.display().to_string(),
                "host_path": status.host_path.display().to_string(),
                "size_bytes": status.size_bytes,
                "built_at": status.built_at,
                "versions": status.versions,
            })
        })
        .collect();
    serde_json::json!({ "templates": templates })
}

/// One line per template: name, state, mount point, size, build time, versions,
/// host directory.
fn render_list(statuses: &[TemplateStatus]) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:<22} {:>9} {:<25} {}\n",
        "NAME", "STATE", "MOUNT POINT", "SIZE", "BUILT AT", "VERSIONS / HOST PATH"
    );
    for status in statuses {
        let versions: Vec<String> = status
            .versions
            .iter()
            .map(|(package, version)| format!("{package} {version}"))
            .collect();
        let detail = if versions.is_empty() {
            status.host_path.display().to_string()
        } else {
            format!("{} ({})", versions.join(", "), status.host_path.display())
        };
        out.push_str(&format!(
            "{:<8} {:<8} {:<22} {:>9} {:<25} {detail}\n",
            status.name,
            status.state.as_str(),
            status.mount_point.display(),
            status.size_bytes.map_or_else(|| "-".to_owned(), megabytes),
            status.built_at.as_deref().unwrap_or("-"),
        ));
    }
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Builds `names` one after the other, progress on stderr; Ctrl-C cancels (pip
/// and npm run in their own process groups, so the build kills them itself).
async fn build(catalog: TemplateCatalog, names: Vec<String>, force: bool) -> anyhow::Result<()> {
    // Installed before the build starts, so no Ctrl-C can hit the default
    // handler (which would kill us and leave pip running).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot handle Ctrl-C")?;
    let cancel = Arc::new(AtomicBool::new(false));
    let task = tokio::task::spawn_blocking({
        let cancel = Arc::clone(&cancel);
        move || build_all(&catalog, &names, force, &cancel)
    });
    tokio::pin!(task);
    let joined = tokio::select! {
        joined = &mut task => joined,
        _ = interrupt.recv() => {
            let _ = writeln!(std::io::stderr(), "codebox: cancelling the build (Ctrl-C)");
            cancel.store(true, Ordering::Relaxed);
            task.await
        }
    };
    joined.context("the template build panicked")?
}

fn build_all(
    catalog: &TemplateCatalog,
    names: &[String],
    force: bool,
    cancel: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    // A redrawn bar on a terminal; plain lines (for logs and pipes) otherwise.
    let terminal = std::io::stderr().is_terminal();
    for name in names {
        let built = if terminal {
            let mut progress =
                Cancellable::new(BarProgress::new(std::io::stderr()), Arc::clone(cancel));
            let built = build_one(catalog, name, force, &mut progress);
            BarProgress::new(std::io::stderr()).clear();
            built
        } else {
            let mut progress =
                Cancellable::new(WriteProgress::new(std::io::stderr()), Arc::clone(cancel));
            build_one(catalog, name, force, &mut progress)
        };
        let built = built.with_context(|| format!("cannot build the {name} template"))?;
        say(&format!(
            "{name}: ready at {} (mounted at {})\n",
            built.host_path.display(),
            built.mount_point.display()
        ))?;
    }
    Ok(())
}

fn build_one(
    catalog: &TemplateCatalog,
    name: &str,
    force: bool,
    progress: &mut dyn Progress,
) -> Result<codebox_template::BuiltTemplate, codebox_template::BuildError> {
    if force {
        catalog.build(name, progress)
    } else {
        catalog.ensure_built(name, progress)
    }
}

/// The build steps in the order they run (a template skips the ones it does
/// not have: python3 has no npm install, node no venv).
const STEPS: [BuildStep; 11] = [
    BuildStep::Inspect,
    BuildStep::Lock,
    BuildStep::Prepare,
    BuildStep::CreateVenv,
    BuildStep::PipInstall,
    BuildStep::NpmInstall,
    BuildStep::Relocate,
    BuildStep::Verify,
    BuildStep::Permissions,
    BuildStep::Manifest,
    BuildStep::Install,
];

/// A one-line progress bar redrawn in place on a terminal:
/// `[python3] [########------------] 5/11 pip install: Collecting numpy...`.
/// Notes (waiting for a lock, ...) are printed on their own lines above it.
struct BarProgress<W: Write> {
    writer: W,
    width: usize,
}

impl<W: Write + std::os::fd::AsFd> BarProgress<W> {
    fn new(writer: W) -> Self {
        let width = codebox_sys::terminal::window_size(writer.as_fd())
            .map(|size| usize::from(size.cols))
            .unwrap_or(80)
            .max(20);
        Self { writer, width }
    }

    fn draw(&mut self, template: &str, step: BuildStep, detail: &str) {
        let line = bar_line(template, step, detail, self.width - 1);
        let _ = write!(self.writer, "\r\x1b[2K{line}");
        let _ = self.writer.flush();
    }

    /// Erases the bar.
    fn clear(&mut self) {
        let _ = write!(self.writer, "\r\x1b[2K");
        let _ = self.writer.flush();
    }
}

impl<W: Write + std::os::fd::AsFd> Progress for BarProgress<W> {
    fn step(&mut self, template: &str, step: BuildStep) {
        self.draw(template, step, "");
    }
    fn output(&mut self, template: &str, step: BuildStep, line: &str) {
        self.draw(template, step, line);
    }
    fn note(&mut self, template: &str, message: &str) {
        self.clear();
        let _ = writeln!(self.writer, "[{template}] {message}");
    }
}

/// One bar line, at most `width` characters, control characters removed
/// (pip's output could move the cursor).
fn bar_line(template: &str, step: BuildStep, detail: &str, width: usize) -> String {
    const CELLS: usize = 20;
    let position = STEPS.iter().position(|known| *known == step).unwrap_or(0) + 1;
    let filled = position * CELLS / STEPS.len();
    let mut line = format!(
        "[{template}] [{}{}] {position}/{} {step}",
        "#".repeat(filled),
        "-".repeat(CELLS - filled),
        STEPS.len()
    );
    let detail: String = detail.chars().filter(|c| !c.is_control()).collect();
    if !detail.trim().is_empty() {
        line.push_str(": ");
        line.push_str(detail.trim());
    }
    line.chars().take(width).collect()
}

/// Mounts and environment variables of the built templates, as plain data for
/// the runtime (which must not depend on `codebox-template`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxTemplates {
    /// Host directory -> mount point in the sandbox (read-only, nosuid, nodev).
    pub mounts: Vec<(PathBuf, String)>,
    /// `PATH` (template directories first) and the templates' variables.
    pub env: BTreeMap<String, String>,
}

/// The built templates among `enabled`, ready for the runtime.
pub fn sandbox_templates(catalog: &TemplateCatalog, enabled: &[String]) -> SandboxTemplates {
    let mut selected = SandboxEnvironment::default();
    for name in enabled {
        if let Some(built) = catalog.locate(name) {
            let mount = built.mount();
            let environment = built.environment();
            selected.mounts.push(mount);
            selected
                .path_prefix
                .extend(environment.path_prefix.iter().cloned());
            selected
                .variables
                .extend(environment.variables.iter().cloned());
        }
    }
    to_plain(&selected)
}

fn to_plain(environment: &SandboxEnvironment) -> SandboxTemplates {
    if environment.mounts.is_empty() {
        return SandboxTemplates::default();
    }
    let mut env: BTreeMap<String, String> = environment.variables.iter().cloned().collect();
    env.insert("PATH".to_owned(), environment.path(SANDBOX_BASE_PATH));
    SandboxTemplates {
        mounts: environment
            .mounts
            .iter()
            .map(|mount| {
                (
                    mount.host_path.clone(),
                    mount.sandbox_path.display().to_string(),
                )
            })
            .collect(),
        env,
    }
}

/// The background build `serve` starts: the enabled templates, one after the
/// other, never blocking the server.
#[derive(Debug)]
pub struct BackgroundBuilds {
    cancel: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundBuilds {
    /// Starts building the enabled templates that are missing or stale, unless
    /// `templates.build_on_start` is off. `on_change` gets the new mounts after
    /// each build that succeeds; failures are logged.
    pub fn start(
        config: &CodeboxConfig,
        on_change: impl Fn(SandboxTemplates) + Send + 'static,
    ) -> anyhow::Result<Option<BackgroundBuilds>> {
        let catalog = catalog(config);
        let enabled = enabled(config, &catalog)?;
        if !config.templates.build_on_start || enabled.is_empty() {
            return Ok(None);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let task = tokio::task::spawn_blocking({
            let cancel = Arc::clone(&cancel);
            move || build_in_background(&catalog, &enabled, &cancel, &on_change)
        });
        Ok(Some(BackgroundBuilds { cancel, task }))
    }

    /// Cancels a running build (its partial directory is removed) and waits
    /// until pip or npm are gone.
    pub async fn stop(self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Err(error) = self.task.await {
            tracing::error!(error = %error, "the background template build panicked");
        }
    }
}

fn build_in_background(
    catalog: &TemplateCatalog,
    enabled: &[String],
    cancel: &Arc<AtomicBool>,
    on_change: &dyn Fn(SandboxTemplates),
) {
    for name in enabled {
        let mut progress = Cancellable::new(TracingProgress, Arc::clone(cancel));
        match catalog.ensure_built(name, &mut progress) {
            Ok(built) => {
                tracing::info!(template = %name, path = %built.host_path.display(), "template ready");
                on_change(sandbox_templates(catalog, enabled));
            }
            Err(error) if cancel.load(Ordering::Relaxed) => {
                tracing::info!(template = %name, error = %error, "template build cancelled");
                return;
            }
            Err(error) => {
                // `{:#}` prints the whole cause chain on one line.
                let error = anyhow::Error::from(error);
                tracing::error!(
                    template = %name,
                    error = format!("{error:#}"),
                    "template build failed; sandboxes run without it"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_templates_are_refused_naming_the_known_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = CodeboxConfig {
            data_dir: dir.path().to_owned(),
            ..CodeboxConfig::default()
        };
        let catalog = catalog(&config);
        assert_eq!(
            enabled(&config, &catalog).expect("the defaults are known"),
            ["python3", "node"]
        );
        config.templates.enabled = vec!["python3".into(), "ruby".into()];
        let error = format!(
            "{:#}",
            enabled(&config, &catalog).expect_err("ruby is unknown")
        );
        assert!(
            error.contains("\"ruby\"") && error.contains("python3, node"),
            "{error}"
        );
    }

    #[test]
    fn prestart_contexts_and_the_preload_reach_the_runtime() {
        let mut config = CodeboxConfig::default();
        let mut runtime = LinuxRuntimeConfig::new("/r".into(), "/a".into());
        configure_prestart(&config, &mut runtime);
        assert_eq!(runtime.pool_prestart_contexts, [Language::Python]);
        assert_eq!(runtime.python_preload, None, "off by default");

        config.runtime.pool_prestart_contexts = vec![
            ContextLanguage::Bash,
            ContextLanguage::Python,
            ContextLanguage::Javascript,
            ContextLanguage::Typescript,
        ];
        config.templates.python3.preload = Some("import numpy as np\nx = \"é\\n\"".into());
        configure_prestart(&config, &mut runtime);
        assert_eq!(
            runtime.pool_prestart_contexts,
            [
                Language::Bash,
                Language::Python,
                Language::Javascript,
                Language::Typescript
            ]
        );
        let preload = runtime.python_preload.clone().expect("mapped");
        assert_eq!(
            preload,
            "if __import__(\"sys\").prefix == \"/opt/codebox/python3\":\n    \
             exec(compile(\"import numpy as np\\U0000000ax = \\\"\\U000000e9\\\\n\\\"\", \
             \"<templates.python3.preload>\", \"exec\"), globals())\n"
        );
        assert_eq!(runtime.validate(), Ok(()));

        config.runtime.pool_prestart_contexts.clear();
        config.templates.python3.preload = None;
        configure_prestart(&config, &mut runtime);
        assert!(runtime.pool_prestart_contexts.is_empty());
        assert_eq!(runtime.python_preload, None);
    }

    /// The guarded preload is valid Python that runs the code only on the
    /// template's interpreter: checked with the host's python3, whose prefix
    /// is not the template's, and with the prefix faked to be it.
    #[test]
    fn the_guarded_preload_runs_only_on_the_template_interpreter() {
        let guarded = template_only_preload("import json as j\nmarker = 'ran'");
        let script = format!(
            "import sys\n{guarded}print('host', 'j' in globals())\n\
             sys.prefix = '/opt/codebox/python3'\n{guarded}print('template', marker, j.__name__)\n"
        );
        let output = std::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("the host has python3");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "host False\ntemplate ran json\n"
        );
    }

    #[test]
    fn nothing_built_means_no_mounts_and_no_env() {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = TemplateCatalog::new(dir.path());
        let enabled = vec!["python3".to_owned(), "node".to_owned()];
        assert_eq!(
            sandbox_templates(&catalog, &enabled),
            SandboxTemplates::default()
        );
    }

    #[test]
    fn the_path_puts_template_directories_before_the_base() {
        let mut environment = SandboxEnvironment::default();
        environment.mounts.push(codebox_template::TemplateMount {
            host_path: "/data/templates/python3".into(),
            sandbox_path: "/opt/codebox/python3".into(),
        });
        environment
            .path_prefix
            .push("/opt/codebox/python3/bin".into());
        environment
            .variables
            .push(("MPLBACKEND".into(), "Agg".into()));
        let plain = to_plain(&environment);
        assert_eq!(
            plain.mounts,
            [(
                PathBuf::from("/data/templates/python3"),
                "/opt/codebox/python3".to_owned()
            )]
        );
        assert_eq!(
            plain.env["PATH"],
            format!("/opt/codebox/python3/bin:{SANDBOX_BASE_PATH}")
        );
        assert_eq!(plain.env["MPLBACKEND"], "Agg");
    }

    #[test]
    fn the_bar_fills_with_the_steps_and_fits_the_width() {
        let first = bar_line("python3", BuildStep::Inspect, "", 200);
        assert_eq!(first, "[python3] [#-------------------] 1/11 inspect");
        let last = bar_line("node", BuildStep::Install, "", 200);
        assert!(
            last.contains("[####################] 11/11 install"),
            "{last}"
        );
        let long = bar_line(
            "python3",
            BuildStep::PipInstall,
            &"x\x1b[2J".repeat(100),
            60,
        );
        assert_eq!(long.chars().count(), 60);
        assert!(!long.contains('\x1b'), "{long}");
    }

    #[test]
    fn the_json_list_has_every_template() {
        let dir = tempfile::tempdir().expect("temp dir");
        let statuses = TemplateCatalog::new(dir.path()).list();
        let json = list_json(&statuses);
        assert_eq!(json["templates"][0]["name"], "python3");
        assert_eq!(json["templates"][0]["state"], "missing");
        assert_eq!(json["templates"][1]["mount_point"], "/opt/codebox/node");
    }

    #[test]
    fn the_list_shows_missing_templates_with_their_mount_points() {
        let dir = tempfile::tempdir().expect("temp dir");
        let statuses = TemplateCatalog::new(dir.path()).list();
        let text = render_list(&statuses);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("python3  missing  /opt/codebox/python3"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("node     missing  /opt/codebox/node"),
            "{text}"
        );
    }
}
