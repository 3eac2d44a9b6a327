//! Watches: changes made by code in the sandbox arrive as events, recursively or
//! not, and a watch ends when its directory goes away.

use codebox_protocol::ErrorCode;
use codebox_runtime::agent::{Watch, WatchEvent, WatchKind};

use crate::{exit_code, TestAgent};

/// Collects events until one matches `kind` and `path`; all collected.
async fn until(watch: &mut Watch, kind: WatchKind, path: &str) -> Vec<WatchEvent> {
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &WatchEvent| e.kind == kind && e.path == path)
    {
        match watch.next().await {
            Some(Ok(events)) => seen.extend(events),
            other => panic!("expected {kind:?} {path}, got {other:?} after {seen:?}"),
        }
    }
    seen
}

fn has(events: &[WatchEvent], kind: WatchKind, path: &str) -> bool {
    events.iter().any(|e| e.kind == kind && e.path == path)
}

#[tokio::test]
async fn changes_made_by_code_arrive_as_events() {
    let agent = TestAgent::start().await;
    let mut watch = agent.connection.watch("/", true).await.expect("watches");
    assert_eq!(exit_code(&agent.shell("mkdir sub").await), Some(0));
    let created = until(&mut watch, WatchKind::Create, "/sub").await;
    assert!(created.iter().any(|e| e.path == "/sub" && e.is_dir));
    let script = "echo hi > sub/f.txt; chmod 600 sub/f.txt; mv sub/f.txt sub/g.txt; rm sub/g.txt";
    assert_eq!(exit_code(&agent.shell(script).await), Some(0));
    let events = until(&mut watch, WatchKind::Remove, "/sub/g.txt").await;
    for (kind, path) in [
        (WatchKind::Create, "/sub/f.txt"),
        (WatchKind::Write, "/sub/f.txt"),
        (WatchKind::Chmod, "/sub/f.txt"),
        (WatchKind::Rename, "/sub/f.txt"),
        (WatchKind::Rename, "/sub/g.txt"),
    ] {
        assert!(has(&events, kind, path), "{kind:?} {path} in {events:?}");
    }
}

#[tokio::test]
async fn a_plain_watch_sees_only_its_directory_and_ends_with_it() {
    let agent = TestAgent::start().await;
    agent.shell("mkdir -p d/inner").await;
    let mut watch = agent.connection.watch("d", false).await.expect("watches");
    agent
        .shell("echo x > d/inner/hidden; echo y > d/seen")
        .await;
    let events = until(&mut watch, WatchKind::Write, "/d/seen").await;
    assert!(!events.iter().any(|e| e.path.starts_with("/d/inner/")));
    agent.shell("rm -r d").await;
    loop {
        match watch.next().await {
            Some(Ok(_)) => {}
            None => break,
            Some(Err(error)) => panic!("the watch failed: {error}"),
        }
    }
    let error = agent
        .connection
        .watch("missing", false)
        .await
        .expect_err("no directory");
    assert_eq!(error.code(), Some(ErrorCode::NotFound));
    agent.shell("touch file").await;
    let error = agent
        .connection
        .watch("file", false)
        .await
        .expect_err("a file");
    assert_eq!(error.code(), Some(ErrorCode::NotADirectory));
}

#[tokio::test]
async fn a_dropped_watch_stops_its_worker() {
    let agent = TestAgent::start().await;
    let watch = agent.connection.watch("/", true).await.expect("watches");
    drop(watch);
    agent.connection.ping().await.expect("responsive");
    // The slot is free again: many watches in a row do not pile up.
    for _ in 0..80 {
        drop(agent.connection.watch("/", false).await.expect("watches"));
    }
}
