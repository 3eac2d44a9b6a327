//! Background processes: they outlive their request, take stdin, are signalled, are
//! listed, stream to several subscribers, buffer output nobody reads, and die with
//! the agent.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_protocol::ErrorCode;
use codebox_runtime::agent::{AgentError, ProcessRequest, Subscription};
use codebox_runtime::{Command, ExecEvent, ExecExit};

use crate::{text, wait_gone, TestAgent};

fn process(script: &str, stdin: bool, tag: &str) -> ProcessRequest {
    ProcessRequest {
        command: Command::Shell(script.to_owned()),
        env: BTreeMap::new(),
        cwd: None,
        stdin,
        tag: Some(tag.to_owned()),
        timeout: None,
    }
}

/// Reads stdout until it holds `wanted`; what was read.
async fn read_until(subscription: &mut Subscription, wanted: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        match subscription.stream.next().await {
            Some(ExecEvent::Stdout(bytes)) => seen.push_str(&text(&bytes)),
            Some(ExecEvent::Stderr(_)) => {}
            other => panic!("expected output with {wanted:?}, got {other:?} after {seen:?}"),
        }
    }
    seen
}

async fn finished(subscription: &mut Subscription) -> ExecExit {
    loop {
        match subscription.stream.next().await {
            Some(ExecEvent::Finished(exit)) => return exit,
            Some(_) => {}
            None => panic!("the subscription ended without Finished"),
        }
    }
}

#[tokio::test]
async fn a_background_process_takes_stdin_streams_and_dies_by_signal() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    let script = "while read line; do echo \"got $line\"; done";
    let pid = conn
        .start_process(&process(script, true, "echo"), &BTreeMap::new())
        .await
        .expect("starts");
    let listed = conn.list_processes().await.expect("lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pid, pid);
    assert_eq!(listed[0].tag.as_deref(), Some("echo"));
    assert!(listed[0].stdin_open);
    assert_eq!(listed[0].command, vec!["bash", "-c", script]);
    let mut first = conn.subscribe_process(pid).await.expect("subscribes");
    assert_eq!(first.dropped_bytes, 0);
    conn.write_process_stdin(pid, b"hello\n")
        .await
        .expect("stdin");
    assert_eq!(read_until(&mut first, "got hello\n").await, "got hello\n");
    let mut second = conn.subscribe_process(pid).await.expect("a second one");
    conn.write_process_stdin(pid, b"again\n")
        .await
        .expect("stdin");
    read_until(&mut first, "got again").await;
    read_until(&mut second, "got again").await;
    conn.signal_process(pid, "SIGTERM").await.expect("signals");
    for subscription in [&mut first, &mut second] {
        let exit = finished(subscription).await;
        assert_eq!(exit.signal, Some(libc::SIGTERM));
    }
    assert!(wait_gone(pid).await);
    assert!(conn.list_processes().await.expect("lists").is_empty());
    let gone = conn.signal_process(pid, "SIGKILL").await.expect_err("gone");
    assert_eq!(gone.code(), Some(ErrorCode::UnknownProcess));
}

#[tokio::test]
async fn closing_stdin_ends_a_reader_and_subscribers_see_the_exit() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    let pid = conn
        .start_process(&process("cat; echo eof", true, "cat"), &BTreeMap::new())
        .await
        .expect("starts");
    let mut subscription = conn.subscribe_process(pid).await.expect("subscribes");
    conn.write_process_stdin(pid, b"data\n")
        .await
        .expect("stdin");
    conn.close_process_stdin(pid).await.expect("closes");
    read_until(&mut subscription, "data\neof\n").await;
    assert_eq!(finished(&mut subscription).await.exit_code, Some(0));
}

#[tokio::test]
async fn output_nobody_reads_is_buffered_boundedly() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    let script =
        "head -c 3145728 /dev/zero | tr '\\0' a; echo; echo tail; touch written; sleep 1000";
    let pid = conn
        .start_process(&process(script, false, "noisy"), &BTreeMap::new())
        .await
        .expect("starts");
    let marker = agent.home().join("written");
    for _ in 0..3000 {
        if marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(marker.exists(), "the process wrote its output");
    // The agent read all but at most a pipe's worth (64 KiB) before `tr` could end:
    // past the 1 MiB buffer, the oldest output was dropped.
    let mut subscription = conn.subscribe_process(pid).await.expect("subscribes");
    let dropped = subscription.dropped_bytes;
    assert!(dropped >= (2 << 20) - (64 << 10), "dropped {dropped}");
    let seen = read_until(&mut subscription, "tail\n").await;
    assert!(
        seen.len() <= (1 << 20) + (64 << 10),
        "at most the buffer is replayed"
    );
    assert_eq!(
        dropped + seen.len() as u64,
        3_145_728 + 6,
        "nothing lost unflagged"
    );
    assert!(seen.ends_with("a\ntail\n"));
    conn.signal_process(pid, "SIGKILL").await.expect("signals");
    assert_eq!(
        finished(&mut subscription).await.signal,
        Some(libc::SIGKILL)
    );
}

#[tokio::test]
async fn a_dropped_subscription_leaves_the_process_running() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    let pid = conn
        .start_process(&process("sleep 1000", false, "sleeper"), &BTreeMap::new())
        .await
        .expect("starts");
    let subscription = conn.subscribe_process(pid).await.expect("subscribes");
    drop(subscription);
    conn.ping().await.expect("the unsubscribe went through");
    let listed = conn.list_processes().await.expect("lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].subscribers, 0);
    assert!(crate::alive(pid));
    // Every process dies with the agent (as with the sandbox).
    conn.shutdown().await;
    assert!(wait_gone(pid).await, "the process outlived the agent");
}

#[tokio::test]
async fn bad_process_requests_are_refused() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    let error = conn
        .signal_process(1, "SIGSEGV")
        .await
        .expect_err("not allowed");
    assert_eq!(error.code(), Some(ErrorCode::InvalidRequest));
    let error = conn
        .subscribe_process(999_999)
        .await
        .expect_err("no such process");
    assert_eq!(error.code(), Some(ErrorCode::UnknownProcess));
    let error = conn
        .write_process_stdin(999_999, b"x")
        .await
        .expect_err("no such process");
    assert_eq!(error.code(), Some(ErrorCode::UnknownProcess));
    let mut request = process("true", false, "t");
    request.tag = Some("bad\ttag".into());
    let error = conn
        .start_process(&request, &BTreeMap::new())
        .await
        .expect_err("bad tag");
    assert!(matches!(error, AgentError::Refused { .. }));
    let missing = ProcessRequest {
        command: Command::Argv(vec!["/no/such/program".into()]),
        ..process("", false, "m")
    };
    let error = conn
        .start_process(&missing, &BTreeMap::new())
        .await
        .expect_err("no program");
    assert_eq!(error.code(), Some(ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn background_processes_and_terminals_volunteer_for_the_oom_killer() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    let script = "cat; cat /proc/self/oom_score_adj";
    let pid = conn
        .start_process(&process(script, true, "oom"), &BTreeMap::new())
        .await
        .expect("starts");
    let mut subscription = conn.subscribe_process(pid).await.expect("subscribes");
    conn.close_process_stdin(pid).await.expect("closes");
    assert_eq!(read_until(&mut subscription, "\n").await, "1000\n");

    let mut terminal = conn
        .open_pty(&crate::pty::request(80, 24), &BTreeMap::new())
        .await
        .expect("opens");
    terminal
        .input
        .write(b"cat /proc/self/oom_score_adj; echo 'mark''er'\n")
        .await
        .expect("types");
    let seen = crate::pty::read_until(&mut terminal, "marker").await;
    // A line of its own, between the echoed command line and the marker.
    let lines: Vec<&str> = seen.split(['\r', '\n']).collect();
    assert!(lines.contains(&"1000"), "{seen:?}");
}
