//! Language templates: a host directory bind-mounted read-only (`nosuid`,
//! `nodev`) at its mount point with its env set, for execs and for the warm
//! pool's prestarted python context; `set_templates` reaches sandboxes started
//! afterwards (warm ones are replaced) and never those already running; a
//! missing template directory never fails a create.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use codebox_runtime::linux::prestart::default_context_id;
use codebox_runtime::{CodeRequest, Language, LinuxRuntime, Runtime};
use codebox_types::SandboxId;

use crate::support::{config, harness_with, spec, Harness};

const MOUNT_POINT: &str = "/opt/codebox/fake";

/// A fake template: a marker file, an executable `bin/fake-tool` printing
/// `label` and `bin/python3` (a symlink to the host's, like a venv's). World-traversable, like a built template: the jail reaches it
/// under the sandbox's unprivileged host uid.
fn fake_template(label: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join("bin")).expect("bin");
    std::fs::write(root.join("marker.txt"), format!("{label}\n")).expect("marker");
    std::os::unix::fs::symlink("/usr/bin/python3", root.join("bin/python3")).expect("symlink");
    let tool = root.join("bin/fake-tool");
    std::fs::write(&tool, format!("#!/bin/sh\necho tool-{label}\n")).expect("tool");
    for (path, mode) in [(root, 0o755), (&root.join("bin"), 0o755), (&tool, 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir
}

fn template_env(label: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "PATH".to_owned(),
            format!("{MOUNT_POINT}/bin:/usr/local/bin:/usr/bin:/bin"),
        ),
        ("FAKE_TEMPLATE".to_owned(), label.to_owned()),
        ("MPLBACKEND".to_owned(), "Agg".to_owned()),
    ])
}

async fn harness_with_template(template: &Path, pool: usize) -> Harness {
    let (mut config, root) = config(pool);
    config.template_mounts = vec![(template.to_owned(), MOUNT_POINT.to_owned())];
    config.template_env = template_env("one");
    harness_with(config, root).await
}

/// What a sandbox sees of the template: marker, tool output, env, mount flags.
async fn observe(h: &Harness, id: &SandboxId) -> (Option<i32>, String, String) {
    h.sh(
        id,
        &format!(
            "cat {MOUNT_POINT}/marker.txt; fake-tool; echo \"env=$FAKE_TEMPLATE $MPLBACKEND $OWN\"; \
             grep \" {MOUNT_POINT} \" /proc/self/mountinfo | cut -d' ' -f6"
        ),
    )
    .await
}

#[tokio::test]
async fn a_template_is_mounted_read_only_with_its_env_and_the_create_env_wins() {
    let template = fake_template("one");
    let h = harness_with_template(template.path(), 0).await;
    let mut spec = spec();
    spec.env = BTreeMap::from([
        ("OWN".to_owned(), "mine".to_owned()),
        ("MPLBACKEND".to_owned(), "svg".to_owned()),
    ]);
    let id = h.sandbox_with(spec).await;
    let (code, out, err) = observe(&h, &id).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["one", "tool-one", "env=one svg mine"], "{out}");
    let options: Vec<&str> = lines[3].split(',').collect();
    for flag in ["ro", "nosuid", "nodev"] {
        assert!(options.contains(&flag), "{flag} missing: {out}");
    }

    // Neither the sandbox user nor the agent's root can change it.
    let (code, _, err) = h
        .sh(&id, &format!("echo x > {MOUNT_POINT}/marker.txt"))
        .await;
    assert_ne!(code, Some(0));
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, _) = h
        .sh(&id, &format!("mkdir {MOUNT_POINT}/new || touch /opt/x"))
        .await;
    assert_ne!(
        code,
        Some(0),
        "the root around the mount point is sealed too"
    );
    assert_eq!(
        std::fs::read_to_string(template.path().join("marker.txt")).expect("marker"),
        "one\n"
    );
    h.runtime.destroy(&id).await.expect("destroy");
    h.finish().await;
}

#[tokio::test]
async fn set_templates_reaches_new_sandboxes_only_and_a_missing_one_is_left_out() {
    let first = fake_template("one");
    let second = fake_template("two");
    let h = harness_with_template(first.path(), 0).await;
    let before = h.sandbox().await;

    let mut env = template_env("two");
    env.insert("PATH".into(), format!("{MOUNT_POINT}/bin:/usr/bin:/bin"));
    h.runtime
        .set_templates(
            vec![(second.path().to_owned(), MOUNT_POINT.to_owned())],
            env,
        )
        .expect("valid templates");
    let after = h.sandbox().await;
    let (_, old, _) = observe(&h, &before).await;
    let (_, new, _) = observe(&h, &after).await;
    assert!(old.starts_with("one\ntool-one\nenv=one Agg \n"), "{old}");
    assert!(new.starts_with("two\ntool-two\nenv=two Agg \n"), "{new}");

    let invalid = vec![(second.path().to_owned(), "/usr/lib/evil".to_owned())];
    assert!(h.runtime.set_templates(invalid, BTreeMap::new()).is_err());

    let gone = vec![(second.path().join("missing"), MOUNT_POINT.to_owned())];
    h.runtime
        .set_templates(gone, template_env("gone"))
        .expect("valid templates");
    let without = h.sandbox().await;
    let (code, out, err) = h
        .sh(
            &without,
            "test -e /opt/codebox || echo absent; echo \"env=$FAKE_TEMPLATE\"",
        )
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out, "absent\nenv=\n",
        "mounts and env are left out together"
    );
    for id in [before, after, without] {
        h.runtime.destroy(&id).await.expect("destroy");
    }
    h.finish().await;
}

async fn wait_for_pool(runtime: &LinuxRuntime, size: usize) {
    // Waiting, not timing: the bound only stops a broken pool from hanging CI.
    for _ in 0..12_000 {
        if runtime.pool_ready() >= size {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool never reached {size}");
}

/// The prestarted python context starts with the template's env (its `PATH`
/// picks the template's interpreter), and warm sandboxes made before
/// `set_templates` are replaced, so a claim gets the new set.
#[tokio::test]
async fn warm_sandboxes_and_their_prestarted_context_follow_the_templates() {
    let first = fake_template("one");
    let second = fake_template("two");
    let h = harness_with_template(first.path(), 1).await;
    wait_for_pool(&h.runtime, 1).await;
    let warm = h.sandbox().await;
    let request = CodeRequest {
        context: default_context_id(Language::Python),
        // The runner itself was started from the template's python3.
        code: "import os, subprocess, sys\n\
               print(sys.executable, os.environ.get('FAKE_TEMPLATE'), \
               subprocess.run(['fake-tool'], capture_output=True, text=True).stdout.strip())"
            .into(),
        timeout: Duration::from_secs(30),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    let stream = h
        .runtime
        .execute_code(&warm, request)
        .await
        .expect("execute");
    let output = stream.collect().await.expect("finishes");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{MOUNT_POINT}/bin/python3 one tool-one\n"),
        "{output:?}"
    );

    wait_for_pool(&h.runtime, 1).await;
    // The same set again (a start-up build finding its template current) keeps
    // the warm sandbox; a new one replaces it (synchronously drained).
    let same = vec![(first.path().to_owned(), MOUNT_POINT.to_owned())];
    h.runtime
        .set_templates(same, template_env("one"))
        .expect("valid templates");
    assert_eq!(h.runtime.pool_ready(), 1);
    h.runtime
        .set_templates(
            vec![(second.path().to_owned(), MOUNT_POINT.to_owned())],
            template_env("two"),
        )
        .expect("valid templates");
    assert_eq!(h.runtime.pool_ready(), 0, "the old warm sandbox is gone");
    let claimed = h.sandbox().await;
    let (_, seen, _) = observe(&h, &claimed).await;
    assert!(seen.starts_with("two\ntool-two\n"), "{seen}");
    for id in [warm, claimed] {
        h.runtime.destroy(&id).await.expect("destroy");
    }
    h.finish().await;
}
