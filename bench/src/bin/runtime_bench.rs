//! `runtime-bench`: measures the Linux runtime against issue 2's speed targets
//! (cold create, create from the warm pool, exec round trip of `true`, destroy)
//! and prints p50/p99 per operation. Needs root and the static agent
//! (`CODEBOX_AGENT_PATH`, or `--agent PATH`). See bench/README.md.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codebox_bench::{header, row, summarize};
use codebox_runtime::{
    Command, ExecRequest, LinuxRuntime, LinuxRuntimeConfig, Runtime, SandboxLimits, SandboxSpec,
};
use codebox_types::{Resources, SandboxId};

struct Options {
    iterations: usize,
    agent: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let mut iterations = 100;
    let mut agent = std::env::var_os("CODEBOX_AGENT_PATH").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" | "-n" => {
                iterations = args.next().context("--iterations N")?.parse()?;
            }
            "--agent" => agent = Some(args.next().context("--agent PATH")?.into()),
            "--help" | "-h" => {
                println!("runtime-bench [--iterations N] [--agent PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let agent = agent.context("set CODEBOX_AGENT_PATH or pass --agent (scripts/build-agent)")?;
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    Ok(Options { iterations, agent })
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::generate(),
        runtime: "bash".into(),
        resources: Resources::default(),
        limits: SandboxLimits::default(),
        env: BTreeMap::new(),
        network: false,
    }
}

fn true_request() -> ExecRequest {
    ExecRequest {
        command: Command::Argv(vec!["true".into()]),
        env: BTreeMap::new(),
        cwd: None,
        stdin: None,
        timeout: Duration::from_secs(10),
        output_limit: 1 << 20,
    }
}

fn runtime(root: &tempfile::TempDir, agent: &Path, pool: usize) -> anyhow::Result<LinuxRuntime> {
    let mut config = LinuxRuntimeConfig::new(root.path().join("runtime"), agent.to_path_buf());
    config.pool_size = pool;
    config.cgroup_parent = format!("codebox-bench-{}", std::process::id());
    config.uid_base = 3_000_000_000;
    config.max_sandboxes = 8;
    Ok(LinuxRuntime::new(config)?)
}

async fn exec_true(runtime: &LinuxRuntime, id: &SandboxId) -> anyhow::Result<()> {
    let output = runtime.exec(id, true_request()).await?.collect().await?;
    match output.exit.and_then(|exit| exit.exit_code) {
        Some(0) => Ok(()),
        other => bail!("true exited with {other:?}"),
    }
}

#[derive(Default)]
struct Samples {
    cold_create: Vec<Duration>,
    cold_first_exec: Vec<Duration>,
    pool_create: Vec<Duration>,
    exec_true: Vec<Duration>,
    destroy: Vec<Duration>,
}

/// Cold creates (no pool), a few `true` round trips in each, destroy.
async fn cold(options: &Options, samples: &mut Samples) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let runtime = runtime(&root, &options.agent, 0)?;
    runtime.recover().await?;
    for _ in 0..options.iterations {
        let spec = spec();
        let id = spec.id.clone();
        let start = Instant::now();
        runtime.create(spec).await?;
        samples.cold_create.push(start.elapsed());
        exec_true(&runtime, &id).await?;
        samples.cold_first_exec.push(start.elapsed());
        for _ in 0..5 {
            let start = Instant::now();
            exec_true(&runtime, &id).await?;
            samples.exec_true.push(start.elapsed());
        }
        let start = Instant::now();
        runtime.destroy(&id).await?;
        samples.destroy.push(start.elapsed());
    }
    runtime.shutdown().await;
    remove_cgroup_parent();
    Ok(())
}

/// Creates served by the warm pool; waits for the refill between claims so
/// each one is a real claim.
async fn pooled(options: &Options, samples: &mut Samples) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let runtime = runtime(&root, &options.agent, 2)?;
    runtime.recover().await?;
    for _ in 0..options.iterations {
        wait_for_pool(&runtime).await?;
        let spec = spec();
        let id = spec.id.clone();
        let start = Instant::now();
        runtime.create(spec).await?;
        samples.pool_create.push(start.elapsed());
        exec_true(&runtime, &id).await?;
        runtime.destroy(&id).await?;
    }
    runtime.shutdown().await;
    remove_cgroup_parent();
    Ok(())
}

async fn wait_for_pool(runtime: &LinuxRuntime) -> anyhow::Result<()> {
    for _ in 0..2000 {
        if runtime.pool_ready() >= 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the warm pool did not refill within 10 s")
}

/// Removes the (empty) cgroup parent this process created.
fn remove_cgroup_parent() {
    let name = format!("codebox-bench-{}", std::process::id());
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup").join(&name)];
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        parents.extend(hierarchies.flatten().map(|h| h.path().join(&name)));
    }
    for parent in parents.into_iter().filter(|p| p.is_dir()) {
        // A just-removed child cgroup is freed asynchronously: retry briefly.
        for _ in 0..200 {
            if std::fs::remove_dir(&parent).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let mut samples = Samples::default();
    cold(&options, &mut samples).await?;
    pooled(&options, &mut samples).await?;
    println!("runtime-bench: {} iterations", options.iterations);
    println!("{}", header());
    let rows = [
        (
            "cold create (ready for a command)",
            &samples.cold_create,
            "<= 15 ms",
        ),
        ("cold create + first `true`", &samples.cold_first_exec, "-"),
        ("create from the warm pool", &samples.pool_create, "<= 2 ms"),
        ("exec round trip of `true`", &samples.exec_true, "<= 2 ms"),
        ("destroy", &samples.destroy, "<= 10 ms"),
    ];
    for (name, values, target) in rows {
        if let Some(summary) = summarize(values) {
            println!("{}", row(name, &summary, target));
        }
    }
    Ok(())
}
