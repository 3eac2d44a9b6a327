//! Micro benchmark of the exec round trip through the host client and the agent in
//! test mode (no jail): `exec(["true"])` to `Finished`, and a bare Ping.
//!
//! ```text
//! CODEBOX_AGENT_PATH="$(scripts/build-agent)" \
//!     cargo run --release -p codebox-agent --example roundtrip -- [iterations]
//! ```
//! Without `CODEBOX_AGENT_PATH` it uses the `codebox-agent` next to the examples
//! directory (build it first). The in-jail numbers are the runtime's `bench/`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codebox_runtime::agent::AgentConnection;
use codebox_runtime::{Command, ExecRequest};

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
        "{name:<28} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

async fn exec_samples(
    connection: &AgentConnection,
    argv: &[&str],
    iterations: usize,
) -> anyhow::Result<Vec<Duration>> {
    let request = ExecRequest {
        command: Command::Argv(argv.iter().map(|s| (*s).to_owned()).collect()),
        env: BTreeMap::new(),
        cwd: None,
        stdin: None,
        timeout: Duration::from_secs(10),
        output_limit: 1 << 20,
    };
    let env = BTreeMap::new();
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let output = connection.exec(&request, &env).await?.collect().await?;
        samples.push(started.elapsed());
        if output.exit.and_then(|exit| exit.exit_code) != Some(0) {
            bail!("{argv:?} did not exit 0");
        }
    }
    Ok(samples)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("iterations")?,
        None => 2000,
    };
    let (connection, _child) = connect().await?;
    // Warm up the page cache and the allocator.
    exec_samples(&connection, &["true"], 50).await?;
    let mut pings = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        pings.push(connection.ping().await?);
    }
    report("ping", pings);
    report(
        "exec true (PATH lookup)",
        exec_samples(&connection, &["true"], iterations).await?,
    );
    report(
        "exec /bin/true",
        exec_samples(&connection, &["/bin/true"], iterations).await?,
    );
    report(
        "exec bash -c true",
        exec_samples(&connection, &["/bin/bash", "-c", "true"], iterations / 4).await?,
    );
    Ok(())
}
