//! The file, watch and process clients against the scripted fake agent of `tests`:
//! flow control of uploads, a hostile agent overrunning what it announced, and the
//! routing of subscriptions.

use std::io::Cursor;
use std::time::Duration;

use codebox_protocol::{
    AgentMessage, ErrorCode, FileEntry as WireEntry, FileKind, Frame, HostMessage, Stream,
    MAX_LIST_ENTRIES, UPLOAD_WINDOW,
};

use super::tests::{connected, FakeAgent};
use super::{AgentError, WriteOptions};

/// Receives upload data frames until `bytes` arrived; the count received.
async fn receive_upload(agent: &mut FakeAgent, bytes: u64) -> u64 {
    let mut received = 0;
    while received < bytes {
        match agent.receive().await {
            Frame::Data {
                stream: Stream::File,
                data,
                ..
            } => received += data.len() as u64,
            other => panic!("expected upload data, got {other:?}"),
        }
    }
    received
}

#[tokio::test]
async fn uploads_wait_for_credit_beyond_the_window() {
    let (connection, mut agent) = connected().await;
    let total = 3 * UPLOAD_WINDOW + 1234;
    let fake = tokio::spawn(async move {
        let HostMessage::WriteFile(spec) = agent.receive_control().await else {
            panic!("expected WriteFile")
        };
        assert_eq!((spec.path.as_str(), spec.limit), ("out.bin", 1 << 30));
        let mut received = receive_upload(&mut agent, UPLOAD_WINDOW).await;
        assert_eq!(received, UPLOAD_WINDOW, "exactly one window in flight");
        // Nothing more comes without credit.
        let more = tokio::time::timeout(Duration::from_millis(200), agent.receive()).await;
        assert!(more.is_err(), "the host overran its window");
        while received < total {
            let id = spec.id;
            agent
                .send(&AgentMessage::Credit {
                    id,
                    bytes: UPLOAD_WINDOW,
                })
                .await;
            received += receive_upload(&mut agent, (total - received).min(UPLOAD_WINDOW)).await;
        }
        assert_eq!(
            agent.receive_control().await,
            HostMessage::CloseStdin { id: spec.id }
        );
        let done = AgentMessage::FileDone {
            id: spec.id,
            bytes: received,
            truncated: false,
        };
        agent.send(&done).await;
        agent
    });
    let options = WriteOptions {
        limit: 1 << 30,
        ..WriteOptions::default()
    };
    let body = Cursor::new(vec![7u8; usize::try_from(total).expect("fits")]);
    let written = connection
        .write_file("out.bin", &options, body)
        .await
        .expect("written");
    assert_eq!(written, total);
    fake.await.expect("fake agent");
}

#[tokio::test]
async fn an_upload_refused_midway_returns_the_agents_error() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::WriteFile(spec) = agent.receive_control().await else {
            panic!("expected WriteFile")
        };
        receive_upload(&mut agent, 1).await;
        let error = AgentMessage::Error {
            id: Some(spec.id),
            code: ErrorCode::NoSpace,
            message: "disk full".into(),
        };
        agent.send(&error).await;
        agent
    });
    let body = Cursor::new(vec![1u8; 4 << 20]);
    let error = connection
        .write_file("x", &WriteOptions::default(), body)
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::NoSpace));
    let _agent = fake.await.expect("fake agent");
}

#[tokio::test]
async fn a_read_longer_than_announced_closes_the_connection() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::ReadFile(spec) = agent.receive_control().await else {
            panic!("expected ReadFile")
        };
        let id = spec.id;
        let started = AgentMessage::FileReadStarted {
            id,
            size: 10,
            length: 10,
        };
        agent.send(&started).await;
        agent.send_data(id, Stream::File, &[0; 20]).await;
        agent
    });
    let read = connection.read_file("f", 0, None).await.expect("opens");
    let error = read.collect().await.expect_err("overrun");
    assert!(matches!(error, AgentError::Closed), "{error:?}");
    connection.closed().await;
    let _agent = fake.await.expect("fake agent");
}

#[tokio::test]
async fn a_read_longer_than_its_file_or_a_listing_over_the_cap_is_refused() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::ListDir { id, .. } = agent.receive_control().await else {
            panic!("expected ListDir")
        };
        let entry = WireEntry {
            name: "a".into(),
            path: "/a".into(),
            kind: FileKind::File,
            size: 0,
            mode: 0o644,
            modified_ms: 0,
            symlink_target: None,
        };
        // Batches far over the cap, in frames small enough to be valid.
        for _ in 0..=MAX_LIST_ENTRIES / 1000 {
            let entries = vec![entry.clone(); 1000];
            agent.send(&AgentMessage::DirEntries { id, entries }).await;
        }
        agent
    });
    let error = connection.list("/", 1).await.expect_err("over the cap");
    assert!(matches!(error, AgentError::Closed), "{error:?}");
    connection.closed().await;
    let _agent = fake.await.expect("fake agent");
}

#[tokio::test]
async fn stat_maps_the_entry() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::StatPath { id, path } = agent.receive_control().await else {
            panic!("expected StatPath")
        };
        assert_eq!(path, "data.csv");
        let entry = WireEntry {
            name: "data.csv".into(),
            path: "/home/user/data.csv".into(),
            kind: FileKind::File,
            size: 42,
            mode: 0o100_644,
            modified_ms: 1_700_000_000_000,
            symlink_target: None,
        };
        agent.send(&AgentMessage::PathStat { id, entry }).await;
        agent
    });
    let entry = connection.stat("data.csv").await.expect("stat");
    assert_eq!((entry.size, entry.mode), (42, 0o644));
    let since = entry
        .modified_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    assert_eq!(since.as_millis(), 1_700_000_000_000);
    let _agent = fake.await.expect("fake agent");
}

#[tokio::test]
async fn a_watch_batch_over_the_cap_closes_the_connection() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::WatchPath { id, recursive, .. } = agent.receive_control().await else {
            panic!("expected WatchPath")
        };
        assert!(recursive);
        agent.send(&AgentMessage::Watching { id }).await;
        let event = codebox_protocol::WatchEvent {
            kind: codebox_protocol::WatchKind::Create,
            path: "/a".into(),
            is_dir: false,
        };
        let events = vec![event; codebox_protocol::WATCH_BATCH + 1];
        agent.send(&AgentMessage::FileEvents { id, events }).await;
        agent
    });
    let mut watch = connection.watch("/", true).await.expect("watching");
    assert!(matches!(watch.next().await, Some(Err(AgentError::Closed))));
    connection.closed().await;
    let _agent = fake.await.expect("fake agent");
}

#[tokio::test]
async fn a_subscription_gets_its_output_and_the_exit() {
    use crate::ExecEvent;

    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::StartProcess(spec) = agent.receive_control().await else {
            panic!("expected StartProcess")
        };
        assert_eq!(spec.tag.as_deref(), Some("srv"));
        agent
            .send(&AgentMessage::Started {
                id: spec.id,
                pid: 42,
            })
            .await;
        let HostMessage::SubscribeProcess { id, pid } = agent.receive_control().await else {
            panic!("expected SubscribeProcess")
        };
        assert_eq!(pid, 42);
        let subscribed = AgentMessage::Subscribed {
            id,
            dropped_bytes: 7,
        };
        agent.send(&subscribed).await;
        agent.send_data(id, Stream::Stdout, b"listening").await;
        agent.send(&super::tests::exited(id, 0)).await;
        agent
    });
    let request = super::ProcessRequest {
        command: crate::Command::Shell("serve".into()),
        env: std::collections::BTreeMap::new(),
        cwd: None,
        stdin: false,
        tag: Some("srv".into()),
        timeout: None,
    };
    let pid = connection
        .start_process(&request, &std::collections::BTreeMap::new())
        .await
        .expect("starts");
    assert_eq!(pid, 42);
    let mut subscription = connection.subscribe_process(42).await.expect("subscribes");
    assert_eq!(subscription.dropped_bytes, 7);
    assert_eq!(
        subscription.stream.next().await,
        Some(ExecEvent::Stdout(b"listening".to_vec()))
    );
    assert!(matches!(
        subscription.stream.next().await,
        Some(ExecEvent::Finished(_))
    ));
    let _agent = fake.await.expect("fake agent");
}
