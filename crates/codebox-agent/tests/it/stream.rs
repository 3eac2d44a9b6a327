//! Streaming and backpressure: output arrives while the program runs, and a consumer
//! that does not read makes the program wait instead of the agent buffer.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::ExecEvent;

use crate::{shell, TestAgent};

#[tokio::test]
async fn output_arrives_before_the_program_ends() {
    let agent = TestAgent::start().await;
    // The program only ends once the test has seen its first line and created `go`.
    let mut stream = agent
        .connection
        .exec(
            &shell("echo first; while [ ! -e go ]; do sleep 0.01; done; echo second"),
            &BTreeMap::new(),
        )
        .await
        .expect("starts");
    assert!(matches!(
        stream.next().await,
        Some(ExecEvent::Started { .. })
    ));
    assert_eq!(
        stream.next().await,
        Some(ExecEvent::Stdout(b"first\n".to_vec()))
    );
    std::fs::write(agent.home().join("go"), b"").expect("go");
    let output = stream.collect().await.expect("finishes");
    assert_eq!(output.stdout, b"second\n");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_slow_consumer_bounds_the_agent_memory_and_loses_nothing() {
    let agent = TestAgent::start().await;
    let agent_pid = agent.child.id().expect("running");
    let total = 64 << 20;
    let mut request = shell(&format!("head -c {total} /dev/zero"));
    request.output_limit = total;
    let mut stream = agent
        .connection
        .exec(&request, &BTreeMap::new())
        .await
        .expect("starts");
    // Not reading for a while: the program must block, not the agent buffer 64 MiB.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut received = 0;
    while let Some(event) = stream.next().await {
        match event {
            ExecEvent::Stdout(bytes) => received += bytes.len(),
            ExecEvent::Finished(exit) => {
                assert_eq!(exit.exit_code, Some(0));
                assert!(!exit.stdout_truncated);
            }
            _ => {}
        }
    }
    assert_eq!(received, total);
    let peak = peak_rss_kib(agent_pid);
    assert!(
        peak < 24 * 1024,
        "agent peak RSS {peak} KiB: output was buffered"
    );
}
