//! Micro benchmark of stateful code execution through the host client, the agent in
//! test mode (no jail) and the real runners: cold start (create a context, then the
//! first `1+1` result) and the warm `1+1` round trip, per language.
//!
//! ```text
//! CODEBOX_AGENT_PATH="$(scripts/build-agent)" \
//!     cargo run --release -p codebox-agent --example code_roundtrip -- [iterations]
//! ```
//! `CODEBOX_BENCH_IPYTHON_BIN` names a `bin` directory whose `python3` has IPython
//! (e.g. the test virtualenv `/tmp/codebox-test-ipython/bin`) to measure that path too.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codebox_runtime::agent::{
    AgentConnection, CodeRequest, ContextRequest, ExecutionOutcome, Language,
};

fn agent_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CODEBOX_AGENT_PATH") {
        return Ok(PathBuf::from(path));
    }
    let examples = std::env::current_exe()?;
    let profile_dir = examples
        .parent()
        .and_then(|dir| dir.parent())
        .context("no target directory")?;
    Ok(profile_dir.join("codebox-agent"))
}

async fn connect() -> anyhow::Result<(AgentConnection, tokio::process::Child)> {
    let (host, agent) = std::os::unix::net::UnixStream::pair()?;
    codebox_sys::agent::set_cloexec(agent.as_fd(), false)?;
    let child = tokio::process::Command::new(agent_path()?)
        .env_clear()
        .env("CODEBOX_AGENT_FD", agent.as_raw_fd().to_string())
        .env("CODEBOX_AGENT_TEST_MODE", "1")
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the agent")?;
    drop(agent);
    host.set_nonblocking(true)?;
    let host = tokio::net::UnixStream::from_std(host)?;
    let connection = AgentConnection::handshake(host, Duration::from_secs(10)).await?;
    Ok((connection, child))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

fn request(context: &str, code: &str) -> CodeRequest {
    CodeRequest {
        context: context.to_owned(),
        code: code.to_owned(),
        timeout: Duration::from_secs(30),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    }
}

async fn run(connection: &AgentConnection, context: &str, code: &str) -> anyhow::Result<()> {
    let output = connection
        .execute(&request(context, code))
        .await?
        .collect()
        .await?;
    if output.outcome() != Some(ExecutionOutcome::Ok) {
        bail!("{code:?} in {context} did not succeed: {output:?}");
    }
    Ok(())
}

/// Creates `iterations / 20` contexts one after another, each timed from the create
/// request to the first result; then times `iterations` warm round trips in the last.
async fn measure(
    connection: &AgentConnection,
    label: &str,
    language: Language,
    env: &BTreeMap<String, String>,
    code: &str,
    iterations: usize,
) -> anyhow::Result<()> {
    let mut cold = Vec::new();
    let mut name = String::new();
    for round in 0..(iterations / 20).max(3) {
        if !name.is_empty() {
            connection.destroy_context(&name).await?;
        }
        name = format!("bench-{}-{round}", language.as_str());
        let create = ContextRequest {
            context: name.clone(),
            language,
            cwd: None,
            env: env.clone(),
        };
        let started = Instant::now();
        connection.create_context(&create, &BTreeMap::new()).await?;
        run(connection, &name, code).await?;
        cold.push(started.elapsed());
    }
    report(&format!("{label}: create + first result"), cold);
    for _ in 0..50 {
        run(connection, &name, code).await?;
    }
    let mut warm = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        run(connection, &name, code).await?;
        warm.push(started.elapsed());
    }
    report(&format!("{label}: warm round trip"), warm);
    connection.destroy_context(&name).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("iterations")?,
        None => 2000,
    };
    let (connection, _child) = connect().await?;
    let plain = BTreeMap::new();
    measure(
        &connection,
        "python (plain)",
        Language::Python,
        &plain,
        "1+1",
        iterations,
    )
    .await?;
    if let Some(bin) = std::env::var_os("CODEBOX_BENCH_IPYTHON_BIN") {
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            PathBuf::from(bin).display()
        );
        let env = BTreeMap::from([("PATH".to_owned(), path)]);
        measure(
            &connection,
            "python (IPython)",
            Language::Python,
            &env,
            "1+1",
            iterations,
        )
        .await?;
    }
    measure(
        &connection,
        "javascript",
        Language::Javascript,
        &plain,
        "1+1",
        iterations,
    )
    .await?;
    measure(
        &connection,
        "bash",
        Language::Bash,
        &plain,
        "echo $((1+1))",
        iterations / 4,
    )
    .await?;
    Ok(())
}
