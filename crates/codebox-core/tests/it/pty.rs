//! Terminals through the core, over the fake runtime's line shell (see
//! `codebox_runtime::fake`): size, resize, exit, ownership.

use codebox_core::{CoreError, Pty, PtyEvent, PtyExit, PtyRequest};

use crate::support::{create, Fixture};

/// Reads terminal output until it holds `wanted`; everything read.
async fn read_until(pty: &mut Pty, wanted: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        match pty.output.next().await {
            Some(PtyEvent::Data(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("expected output with {wanted:?}, got {other:?}: {seen:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn a_terminal_sees_its_size_a_resize_and_ends_with_the_shell() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let record = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let request = PtyRequest {
        cols: Some(100),
        rows: Some(30),
        ..PtyRequest::default()
    };
    let mut pty = fixture
        .core
        .open_pty(&alice, record.id.as_str(), request)
        .await
        .expect("opens");
    assert!(pty.pid > 0);
    pty.input.write(b"stty size\n").await.expect("types");
    assert!(read_until(&mut pty, "30 100").await.contains("30 100"));
    pty.input.resize(132, 50).await.expect("resizes");
    pty.input.write(b"stty size\n").await.expect("types");
    read_until(&mut pty, "50 132").await;
    assert!(matches!(
        pty.input.resize(0, 50).await,
        Err(CoreError::Validation { .. })
    ));
    pty.input.write(b"exit 3\n").await.expect("types");
    let exit = loop {
        match pty.output.next().await {
            Some(PtyEvent::Data(_)) => continue,
            Some(PtyEvent::Exit(exit)) => break exit,
            None => panic!("the terminal ended without an exit"),
        }
    };
    assert_eq!(
        exit,
        PtyExit {
            exit_code: Some(3),
            signal: None,
            timed_out: false
        }
    );
    assert_eq!(pty.output.next().await, None);
}

#[tokio::test]
async fn another_users_sandbox_has_no_terminal() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let mallory = fixture.user("mallory").await;
    let record = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let opened = fixture
        .core
        .open_pty(&mallory, record.id.as_str(), PtyRequest::default())
        .await;
    assert!(matches!(opened, Err(CoreError::NotFound)), "{opened:?}");
    let unknown = fixture
        .core
        .open_pty(&alice, "sbx_doesnotexist", PtyRequest::default())
        .await;
    assert!(matches!(unknown, Err(CoreError::NotFound)), "{unknown:?}");
}
