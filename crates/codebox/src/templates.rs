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
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use codebox_config::CodeboxConfig;
use codebox_template::{
    Cancellable, SandboxEnvironment, TemplateCatalog, TemplateStatus, TracingProgress,
    WriteProgress,
};

use crate::admin::say;
use crate::cli::TemplateCommand;

/// The base `PATH` of sandboxes (the agent's default), after the templates'
/// own directories.
pub const SANDBOX_BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `codebox template ...`.
pub async fn run(command: TemplateCommand, config: &CodeboxConfig) -> anyhow::Result<()> {
    let catalog = catalog(config);
    match command {
        TemplateCommand::List { .. } => list(&catalog).await,
        TemplateCommand::Build { name, force, .. } => {
            let names = match name {
                Some(name) => vec![known(&catalog, &name)?],
                None => enabled(config, &catalog)?,
            };
            build(catalog, names, force).await
        }
    }
}

/// The templates under `templates.root_dir` (default: the data directory).
pub fn catalog(config: &CodeboxConfig) -> TemplateCatalog {
    TemplateCatalog::new(config.templates_root())
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

async fn list(catalog: &TemplateCatalog) -> anyhow::Result<()> {
    let catalog = catalog.clone();
    let statuses = tokio::task::spawn_blocking(move || catalog.list())
        .await
        .context("the template listing panicked")?;
    say(&render_list(&statuses))
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
    let cancel = Arc::new(AtomicBool::new(false));
    let task = tokio::task::spawn_blocking({
        let cancel = Arc::clone(&cancel);
        move || build_all(&catalog, &names, force, &cancel)
    });
    tokio::pin!(task);
    let joined = tokio::select! {
        joined = &mut task => joined,
        _ = tokio::signal::ctrl_c() => {
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
    for name in names {
        let mut progress =
            Cancellable::new(WriteProgress::new(std::io::stderr()), Arc::clone(cancel));
        let built = if force {
            catalog.build(name, &mut progress)
        } else {
            catalog.ensure_built(name, &mut progress)
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
