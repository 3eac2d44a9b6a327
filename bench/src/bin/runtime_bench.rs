//! `runtime-bench`: measures the Linux runtime against issue 2's speed targets
//! (cold create, create from the warm pool, exec round trip of `true`, destroy)
//! and issue 4's in-jail code execution (create -> first `1+1` result, cold and
//! from the pool with its prestarted context; warm `1+1` round trip), and prints
//! p50/p99 per operation. Needs root and the static agent
//! (`CODEBOX_AGENT_PATH`, or `--agent PATH`). See bench/README.md.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codebox_bench::code::{one_plus_one, python_context, runner_in_use, Runner};
use codebox_bench::{header, row, summarize};
use codebox_runtime::{
    Command, ExecRequest, LinuxRuntime, LinuxRuntimeConfig, Runtime, SandboxLimits, SandboxSpec,
};
use codebox_types::{Resources, SandboxId};

/// Where `serve` mounts the python3 template, and the sandbox's base `PATH`.
const PYTHON_TEMPLATE_MOUNT: &str = "/opt/codebox/python3";
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Options {
    iterations: usize,
    code_iterations: usize,
    code_only: bool,
    agent: PathBuf,
    /// A built python3 template (virtualenv) to mount at `/opt/codebox/python3`.
    python_template: Option<PathBuf>,
    /// The pool's python preload (off by default).
    python_preload: Option<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut iterations = 100;
    let mut code_iterations = 30;
    let mut code_only = false;
    let mut python_template = None;
    let mut python_preload = None;
    let mut agent = std::env::var_os("CODEBOX_AGENT_PATH").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" | "-n" => {
                iterations = args.next().context("--iterations N")?.parse()?;
            }
            "--code-iterations" => {
                code_iterations = args.next().context("--code-iterations N")?.parse()?;
            }
            "--code-only" => code_only = true,
            "--python-preload" => {
                python_preload = Some(args.next().context("--python-preload CODE")?);
            }
            "--python-template" => {
                python_template = Some(args.next().context("--python-template DIR")?.into());
            }
            "--agent" => agent = Some(args.next().context("--agent PATH")?.into()),
            "--help" | "-h" => {
                println!(
                    "runtime-bench [--iterations N] [--code-iterations N] [--code-only] \
                     [--python-template DIR] [--python-preload CODE] [--agent PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let agent = agent.context("set CODEBOX_AGENT_PATH or pass --agent (scripts/build-agent)")?;
    if iterations == 0 || code_iterations == 0 {
        bail!("--iterations and --code-iterations must be at least 1");
    }
    Ok(Options {
        iterations,
        code_iterations,
        code_only,
        agent,
        python_template,
        python_preload,
    })
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

fn runtime(
    root: &tempfile::TempDir,
    options: &Options,
    pool: usize,
) -> anyhow::Result<LinuxRuntime> {
    let mut config =
        LinuxRuntimeConfig::new(root.path().join("runtime"), options.agent.to_path_buf());
    config.python_preload = options.python_preload.clone();
    if let Some(template) = &options.python_template {
        // As `serve` mounts a built python3 template.
        config.template_mounts = vec![(template.clone(), PYTHON_TEMPLATE_MOUNT.into())];
        config.template_env = BTreeMap::from([
            (
                "PATH".to_owned(),
                format!("{PYTHON_TEMPLATE_MOUNT}/bin:{SANDBOX_PATH}"),
            ),
            ("MPLBACKEND".to_owned(), "Agg".to_owned()),
        ]);
    }
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
    code_cold_plain: Vec<Duration>,
    code_cold_context_plain: Vec<Duration>,
    code_cold_ipython: Vec<Duration>,
    code_pool: Vec<Duration>,
    code_warm_plain: Vec<Duration>,
    code_warm_ipython: Vec<Duration>,
}

fn python_spec() -> SandboxSpec {
    SandboxSpec {
        runtime: "python3".into(),
        ..spec()
    }
}

/// Cold creates, then the default python context and `1+1`; then warm `1+1`
/// round trips in that context.
async fn code_cold(options: &Options, runner: Runner, samples: &mut Samples) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let runtime = runtime(&root, options, 0)?;
    runtime.recover().await?;
    for _ in 0..options.code_iterations {
        let spec = python_spec();
        let id = spec.id.clone();
        let start = Instant::now();
        runtime.create(spec).await?;
        runtime.create_context(&id, python_context(runner)).await?;
        let context_ready = start.elapsed();
        one_plus_one(&runtime, &id).await?;
        let first = start.elapsed();
        let used = runner_in_use(&runtime, &id).await?;
        if used != runner {
            println!(
                "note: the default python context runs {} here; {} rows skipped",
                used.label(),
                runner.label()
            );
            runtime.destroy(&id).await?;
            break;
        }
        let mut warm = Vec::with_capacity(20);
        for _ in 0..20 {
            let start = Instant::now();
            one_plus_one(&runtime, &id).await?;
            warm.push(start.elapsed());
        }
        let (cold, warm_samples) = match runner {
            Runner::Plain => (&mut samples.code_cold_plain, &mut samples.code_warm_plain),
            Runner::Ipython => (
                &mut samples.code_cold_ipython,
                &mut samples.code_warm_ipython,
            ),
        };
        cold.push(first);
        warm_samples.extend(warm);
        if runner == Runner::Plain {
            samples.code_cold_context_plain.push(context_ready);
        }
        runtime.destroy(&id).await?;
    }
    runtime.shutdown().await;
    remove_cgroup_parent();
    Ok(())
}

/// Creates served by the warm pool, whose sandboxes have the default python
/// context already started; the sample ends at the first `1+1` result.
async fn code_pooled(options: &Options, samples: &mut Samples) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let runtime = runtime(&root, options, 2)?;
    runtime.recover().await?;
    for _ in 0..options.code_iterations {
        wait_for_pool(&runtime).await?;
        let spec = python_spec();
        let id = spec.id.clone();
        let start = Instant::now();
        runtime.create(spec).await?;
        one_plus_one(&runtime, &id).await?;
        samples.code_pool.push(start.elapsed());
        if samples.code_pool.len() == 1 {
            let used = runner_in_use(&runtime, &id).await?;
            println!("note: the pool's prestarted context runs {}", used.label());
        }
        runtime.destroy(&id).await?;
    }
    runtime.shutdown().await;
    remove_cgroup_parent();
    Ok(())
}

/// Cold creates (no pool), a few `true` round trips in each, destroy.
async fn cold(options: &Options, samples: &mut Samples) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let runtime = runtime(&root, options, 0)?;
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
    let runtime = runtime(&root, options, 2)?;
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
    // A refill starts an interpreter (IPython: about half a second).
    for _ in 0..6000 {
        if runtime.pool_ready() >= 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the warm pool did not refill within 30 s")
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
    if !options.code_only {
        cold(&options, &mut samples).await?;
        pooled(&options, &mut samples).await?;
    }
    code_cold(&options, Runner::Plain, &mut samples).await?;
    code_cold(&options, Runner::Ipython, &mut samples).await?;
    code_pooled(&options, &mut samples).await?;
    println!(
        "runtime-bench: {} iterations, {} code iterations",
        options.iterations, options.code_iterations
    );
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
        (
            "create -> 1+1, pool (prestarted)",
            &samples.code_pool,
            "<= 10 ms",
        ),
        (
            "create -> 1+1, cold, plain",
            &samples.code_cold_plain,
            "<= 60 ms",
        ),
        (
            "  of which create -> context ready",
            &samples.code_cold_context_plain,
            "-",
        ),
        (
            "create -> 1+1, cold, ipython",
            &samples.code_cold_ipython,
            "-",
        ),
        (
            "warm 1+1 round trip, plain",
            &samples.code_warm_plain,
            "<= 1 ms",
        ),
        (
            "warm 1+1 round trip, ipython",
            &samples.code_warm_ipython,
            "-",
        ),
    ];
    for (name, values, target) in rows {
        if let Some(summary) = summarize(values) {
            println!("{}", row(name, &summary, target));
        }
    }
    Ok(())
}
