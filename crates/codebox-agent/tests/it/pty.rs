//! Terminals: a login shell on a pseudo-terminal, bytes both ways, resize, and the
//! end of the shell when the terminal is closed.

use std::collections::BTreeMap;

use codebox_runtime::agent::{PtyRequest, Terminal};
use codebox_runtime::ExecEvent;

use crate::{text, wait_gone, TestAgent};

pub fn request(cols: u16, rows: u16) -> PtyRequest {
    PtyRequest {
        cols,
        rows,
        env: BTreeMap::from([("PS1".to_owned(), "$ ".to_owned())]),
        cwd: None,
        timeout: None,
        command: None,
    }
}

/// Reads terminal output until it holds `wanted`; everything read.
pub async fn read_until(terminal: &mut Terminal, wanted: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        match terminal.output.next().await {
            Some(ExecEvent::Stdout(bytes)) => seen.push_str(&text(&bytes)),
            other => panic!("expected terminal output with {wanted:?}, got {other:?}: {seen:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn stty_sees_the_size_and_its_changes() {
    let agent = TestAgent::start().await;
    let mut terminal = agent
        .connection
        .open_pty(&request(80, 24), &BTreeMap::new())
        .await
        .expect("opens");
    assert!(terminal.pid > 0);
    // The marker is split by quotes so the echoed command line never matches it.
    terminal
        .input
        .write(b"stty size; tty; echo 'mark''er'\n")
        .await
        .expect("types");
    let seen = read_until(&mut terminal, "marker").await;
    assert!(seen.contains("24 80"), "{seen:?}");
    assert!(seen.contains("/dev/pts/"), "a real terminal: {seen:?}");
    terminal.input.resize(132, 50).await.expect("resizes");
    terminal
        .input
        .write(b"stty size; echo 'do''ne'\n")
        .await
        .expect("types");
    let seen = read_until(&mut terminal, "done").await;
    assert!(seen.contains("50 132"), "{seen:?}");
    terminal.input.write(b"exit 3\n").await.expect("types");
    loop {
        match terminal.output.next().await {
            Some(ExecEvent::Stdout(_)) => {}
            Some(ExecEvent::Finished(exit)) => {
                assert_eq!(exit.exit_code, Some(3));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn closing_the_terminal_ends_the_shell() {
    let agent = TestAgent::start().await;
    let mut terminal = agent
        .connection
        .open_pty(&request(80, 24), &BTreeMap::new())
        .await
        .expect("opens");
    terminal
        .input
        .write(b"sleep 1000 & echo 'star''ted'\n")
        .await
        .expect("types");
    read_until(&mut terminal, "started").await;
    let shell = terminal.pid;
    drop(terminal);
    assert!(wait_gone(shell).await, "the shell outlived its terminal");
    agent.connection.ping().await.expect("responsive");
}

#[tokio::test]
async fn bad_sizes_are_refused() {
    let agent = TestAgent::start().await;
    let error = agent
        .connection
        .open_pty(&request(0, 24), &BTreeMap::new())
        .await
        .expect_err("no columns");
    assert_eq!(
        error.code(),
        Some(codebox_protocol::ErrorCode::InvalidRequest)
    );
}
