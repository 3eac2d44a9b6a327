use std::os::unix::ffi::OsStrExt;

use codebox_template::{BuildStep, TemplateState, PYTHON_REQUIREMENTS};

use crate::{build, run_mounted};

/// What a sandbox does: `python3` from PATH (the venv's), the four libraries,
/// a chart, and prefix checks proving nothing resolved to the build location.
const CHECK: &str = r#"
set -e
test "$(command -v python3)" = /opt/codebox/python3/bin/python3
python3 - <<'PY'
import os, sys
import IPython, matplotlib, numpy, pandas
import matplotlib.pyplot as plt
assert sys.prefix == "/opt/codebox/python3", sys.prefix
for module in (IPython, matplotlib, numpy, pandas):
    assert module.__file__.startswith("/opt/codebox/python3/lib/"), module.__file__
plt.plot([1, 2]); plt.savefig("/tmp/chart.png")
assert open("/tmp/chart.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
print("mount-ok", numpy.__version__, pandas.__version__, matplotlib.__version__, IPython.__version__)
PY
"$CODEBOX_PYTHON" -c 'import sys; print("python-env-ok", sys.prefix)'
ipython --version | sed 's/^/ipython-ok /'
/opt/elsewhere/venv/bin/python -c '
import sys, numpy, pandas, matplotlib, IPython
assert sys.prefix == "/opt/elsewhere/venv", sys.prefix
assert numpy.__file__.startswith("/opt/elsewhere/venv/"), numpy.__file__
print("elsewhere-ok")'
"#;

fn pinned(name: &str) -> String {
    let prefix = format!("{name}==");
    let line = PYTHON_REQUIREMENTS
        .lines()
        .find(|line| line.starts_with(&prefix))
        .expect("pinned");
    line[prefix.len()..].trim().to_owned()
}

#[test]
fn python3_template_builds_and_imports_from_another_mount_path() {
    let data = tempfile::tempdir().expect("temp dir");
    let (catalog, built, progress, _took) = build(data.path(), "python3");

    for step in [
        BuildStep::CreateVenv,
        BuildStep::PipInstall,
        BuildStep::Verify,
        BuildStep::Install,
    ] {
        assert!(progress.steps.contains(&step), "step {step} not reported");
    }
    assert!(
        progress
            .lines
            .iter()
            .any(|(step, line)| *step == BuildStep::PipInstall && line.contains("numpy")),
        "pip's output was not streamed"
    );
    for package in ["numpy", "pandas", "matplotlib", "ipython"] {
        assert_eq!(
            built.manifest.versions[package],
            pinned(package),
            "{package}"
        );
    }
    // pip was pointed at the data directory's cache (whether it stores anything
    // depends on the index's cache headers).
    assert!(data.path().join("cache/pip").is_dir());
    let build_path = data
        .path()
        .join("templates/python3.build-")
        .display()
        .to_string();
    let leaks = files_mentioning(&built.host_path, build_path.as_bytes());
    assert!(
        leaks.is_empty(),
        "files still name the build directory: {leaks:?}"
    );

    let output = run_mounted(&built, data.path(), Some("/opt/elsewhere/venv"), CHECK);
    assert!(output.status.success(), "the mounted venv does not work");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!("mount-ok {} {}", pinned("numpy"), pinned("pandas"));
    assert!(stdout.contains(&expected), "{stdout}");
    for marker in [
        "python-env-ok /opt/codebox/python3",
        "ipython-ok",
        "elsewhere-ok",
    ] {
        assert!(stdout.contains(marker), "{marker} missing: {stdout}");
    }

    assert_eq!(catalog.list()[0].state, TemplateState::Ready);
    let again = catalog
        .ensure_built("python3", &mut codebox_template::NoProgress)
        .expect("current");
    assert_eq!(
        again.manifest, built.manifest,
        "a current template was rebuilt"
    );
}

/// Files (not bytecode, whose paths Python fixes up on import) under `root`
/// that contain `needle`.
fn files_mentioning(root: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let output = std::process::Command::new("grep")
        .args(["-rlF", "--exclude=*.pyc", "-e"])
        .arg(std::ffi::OsStr::from_bytes(needle))
        .arg(root)
        .output()
        .expect("grep runs");
    assert!(output.status.code() != Some(2), "grep failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
