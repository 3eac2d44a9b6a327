//! Real template builds: network to PyPI and npm, root for a private mount
//! namespace. Slow; nextest runs them in the `template` group, one at a time.
//! Each builds into a fresh temporary data directory, then mounts the result
//! read-only at a different path than it was built at, hides the data directory,
//! and uses it as an unprivileged user, the way a sandbox does.

mod node;
mod python3;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use codebox_template::{BuildStep, BuiltTemplate, Progress, SandboxEnvironment, TemplateCatalog};

/// Counts progress events so the tests can check pip/npm output was streamed.
#[derive(Debug, Default)]
pub struct RecordingProgress {
    pub steps: Vec<BuildStep>,
    pub started: Vec<Instant>,
    pub lines: Vec<(BuildStep, String)>,
}

impl Progress for RecordingProgress {
    fn step(&mut self, _template: &str, step: BuildStep) {
        self.steps.push(step);
        self.started.push(Instant::now());
    }
    fn output(&mut self, _template: &str, step: BuildStep, line: &str) {
        self.lines.push((step, line.to_owned()));
    }
    fn note(&mut self, _template: &str, _message: &str) {}
}

/// Builds `name` into a fresh catalog and reports how long it took.
pub fn build(
    data_dir: &Path,
    name: &str,
) -> (TemplateCatalog, BuiltTemplate, RecordingProgress, Duration) {
    let catalog = TemplateCatalog::new(data_dir);
    let mut progress = RecordingProgress::default();
    let started = Instant::now();
    let built = catalog
        .ensure_built(name, &mut progress)
        .unwrap_or_else(|error| panic!("building {name}: {error:?}"));
    let took = started.elapsed();
    eprintln!(
        "template {name}: built in {:.1} s, {} bytes",
        took.as_secs_f64(),
        built.manifest.size_bytes
    );
    let ends = progress
        .started
        .iter()
        .skip(1)
        .copied()
        .chain([started + took]);
    for ((step, begun), end) in progress.steps.iter().zip(&progress.started).zip(ends) {
        eprintln!("  step {step}: {:.2} s", (end - *begun).as_secs_f64());
    }
    (catalog, built, progress, took)
}

/// Runs `script` (sh) in a private mount namespace where `/opt` is a fresh tmpfs
/// holding the template read-only at its mount point (and at `extra_mount`, if
/// given), the data directory is hidden under an empty tmpfs, and the commands
/// run as `nobody` with the template's environment.
pub fn run_mounted(
    built: &BuiltTemplate,
    data_dir: &Path,
    extra_mount: Option<&str>,
    script: &str,
) -> Output {
    let mut environment = SandboxEnvironment::default();
    environment.mounts.push(built.mount());
    environment.path_prefix = built.environment().path_prefix.clone();
    environment.variables = built.environment().variables.clone();
    let mut targets = vec![built.mount_point.display().to_string()];
    targets.extend(extra_mount.map(str::to_owned));
    let mut setup = String::from("set -e; umask 022; mount -t tmpfs -o mode=755 tmpfs /opt; ");
    for target in &targets {
        setup.push_str(&format!(
            "mkdir -p {target}; mount --bind \"$SOURCE\" {target}; mount -o remount,bind,ro,nosuid,nodev {target}; "
        ));
    }
    setup.push_str("mount -t tmpfs -o mode=700 tmpfs \"$DATA\"; ");
    setup
        .push_str("exec setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh -c \"$SCRIPT\"");
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &setup,
        ])
        .env_clear()
        .env("SOURCE", &built.host_path)
        .env("DATA", data_dir)
        .env("SCRIPT", script)
        .env("HOME", "/tmp")
        .env("PATH", environment.path("/usr/local/bin:/usr/bin:/bin"));
    for (key, value) in &environment.variables {
        command.env(key, value);
    }
    let started = Instant::now();
    let output = command.output().expect("unshare runs");
    eprintln!("mounted check: {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("stdout:\n{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}
