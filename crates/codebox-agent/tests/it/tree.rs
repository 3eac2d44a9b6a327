//! The whole process tree dies: on timeout, on cancel, and when the main process exits,
//! including children that ignore SIGTERM, double-fork and call `setsid`.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::ExecEvent;

use crate::{alive, path_in, read_pid, shell, wait_gone, TestAgent};

/// A main process that leaves behind a `setsid`, double-forked, SIGTERM-ignoring
/// grandchild, writes its pid to `pid_file`, prints `ready`, then waits forever.
fn escaping_tree(pid_file: &str) -> String {
    format!(
        "setsid bash -c 'trap \"\" TERM; (trap \"\" TERM; sleep 1000 & echo $! > {pid_file}; wait) &' ; \
         while [ ! -s {pid_file} ]; do sleep 0.01; done; echo ready; sleep 1000"
    )
}

#[tokio::test]
async fn timeout_kills_a_tree_that_escaped_the_session() {
    let agent = TestAgent::start().await;
    let pid_file = path_in(agent.home(), "grandchild.pid");
    let mut request = shell(&escaping_tree("grandchild.pid"));
    request.timeout = Duration::from_secs(2);
    let output = agent.run(request).await;
    let exit = output.exit.expect("finished");
    assert!(exit.timed_out);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(output.stdout, b"ready\n");
    let grandchild = read_pid(&pid_file);
    // Exited is sent only after the tree is dead: no wait needed.
    assert!(
        !alive(grandchild),
        "grandchild {grandchild} survived the timeout"
    );
}

#[tokio::test]
async fn dropping_the_stream_kills_the_tree() {
    let agent = TestAgent::start().await;
    let pid_file = path_in(agent.home(), "grandchild.pid");
    let request = shell(&escaping_tree("grandchild.pid"));
    let mut stream = agent
        .connection
        .exec(&request, &BTreeMap::new())
        .await
        .expect("starts");
    let Some(ExecEvent::Started { pid: main_pid }) = stream.next().await else {
        panic!("Started first")
    };
    assert_eq!(
        stream.next().await,
        Some(ExecEvent::Stdout(b"ready\n".to_vec()))
    );
    let grandchild = read_pid(&pid_file);
    assert!(alive(grandchild) && alive(main_pid));
    drop(stream);
    assert!(
        wait_gone(grandchild).await,
        "grandchild survived the cancel"
    );
    assert!(
        wait_gone(main_pid).await,
        "main process survived the cancel"
    );
    // The agent still serves after a cancel.
    agent.connection.ping().await.expect("pong");
}

#[tokio::test]
async fn leftovers_die_when_the_main_process_exits() {
    let agent = TestAgent::start().await;
    let output = agent
        .shell("(trap '' TERM; exec setsid sleep 1000) & echo $! > bg.pid; echo bye")
        .await;
    assert_eq!(output.stdout, b"bye\n");
    let background = read_pid(&path_in(agent.home(), "bg.pid"));
    assert!(
        !alive(background),
        "background process {background} outlived its exec"
    );
}

#[tokio::test]
async fn closing_the_channel_kills_running_execs() {
    let mut agent = TestAgent::start().await;
    let request = shell("sleep 1000 & echo $! > bg.pid; wait");
    let mut stream = agent
        .connection
        .exec(&request, &BTreeMap::new())
        .await
        .expect("starts");
    assert!(matches!(
        stream.next().await,
        Some(ExecEvent::Started { .. })
    ));
    let pid_file = path_in(agent.home(), "bg.pid");
    while !pid_file.exists() || std::fs::read_to_string(&pid_file).is_ok_and(|s| s.is_empty()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let background = read_pid(&pid_file);
    agent.connection.shutdown().await;
    let status = agent.child.wait().await.expect("agent exits");
    assert_eq!(status.code(), Some(0));
    // The agent waits for its supervisors, which kill their trees first.
    assert!(!alive(background), "{background} outlived the agent");
}
