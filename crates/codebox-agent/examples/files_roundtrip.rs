//! Throughput of file uploads and downloads through the host client and the agent in
//! test mode (no jail), the agent's peak memory meanwhile, and the latency of a stat
//! (one worker process per operation).
//!
//! ```text
//! cargo build --release -p codebox-agent
//! cargo run --release -p codebox-agent --example files_roundtrip -- [MiB] [stats]
//! ```
//! `CODEBOX_AGENT_PATH` names another agent binary.

#![allow(clippy::print_stdout)]

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codebox_runtime::agent::{AgentConnection, WriteOptions};
use tokio::io::{AsyncRead, ReadBuf};

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

/// `len` bytes of a repeating pattern, generated as read (no buffer of the whole).
struct Pattern {
    left: u64,
    position: u64,
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let start = self.position;
        let chunk: Vec<u8> = (start..start + n as u64).map(|i| (i % 251) as u8).collect();
        buf.put_slice(&chunk);
        self.position += n as u64;
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(Ok(100), |a| a.parse())?;
    let stats: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let root = tempfile::tempdir()?;
    let (host, agent) = std::os::unix::net::UnixStream::pair()?;
    codebox_sys::agent::set_cloexec(agent.as_fd(), false)?;
    let child = tokio::process::Command::new(agent_path()?)
        .env_clear()
        .env("CODEBOX_AGENT_FD", agent.as_raw_fd().to_string())
        .env("CODEBOX_AGENT_TEST_MODE", "1")
        .current_dir(root.path())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the agent")?;
    drop(agent);
    host.set_nonblocking(true)?;
    let host = tokio::net::UnixStream::from_std(host)?;
    let connection = AgentConnection::handshake(host, Duration::from_secs(10)).await?;
    let agent_pid = child.id().context("the agent runs")?;
    let len = mib << 20;
    let options = WriteOptions {
        limit: len,
        ..WriteOptions::default()
    };
    let started = Instant::now();
    let body = Pattern {
        left: len,
        position: 0,
    };
    let written = connection.write_file("big.bin", &options, body).await?;
    let upload = started.elapsed();
    let started = Instant::now();
    let mut read = connection.read_file("big.bin", 0, None).await?;
    let mut position = 0u64;
    while let Some(chunk) = read.next().await {
        for byte in chunk? {
            if byte != (position % 251) as u8 {
                bail!("byte {position} differs");
            }
            position += 1;
        }
    }
    let download = started.elapsed();
    if written != len || position != len {
        bail!("round trip of {len} bytes moved {written} and {position}");
    }
    let rate = |elapsed: Duration| (mib as f64) / elapsed.as_secs_f64();
    println!(
        "upload   {mib} MiB in {upload:?} ({:.0} MiB/s)",
        rate(upload)
    );
    println!(
        "download {mib} MiB in {download:?} ({:.0} MiB/s, content checked)",
        rate(download)
    );
    println!(
        "agent peak RSS {} KiB",
        peak_rss_kib(agent_pid).unwrap_or(0)
    );
    let mut samples = Vec::with_capacity(stats);
    for _ in 0..stats {
        let started = Instant::now();
        connection.stat("big.bin").await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    if let (Some(p50), Some(max)) = (samples.get(samples.len() / 2), samples.last()) {
        println!("stat n={stats} p50={p50:?} max={max:?}");
    }
    Ok(())
}
