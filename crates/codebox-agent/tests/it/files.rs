//! File operations in test mode: the file root is the agent's workspace (its working
//! directory), so these tests check that nothing resolves outside it. Inside a
//! sandbox the root is `/` and the confinement is the sandbox's mount namespace (see
//! `pid1.rs` for the uid-1000 guarantees).

use std::io::Cursor;

use codebox_protocol::ErrorCode;
use codebox_runtime::agent::{AgentError, FileKind, WriteOptions};

use crate::TestAgent;

/// Deterministic, incompressible-looking content.
pub fn content(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn code_of(error: &AgentError) -> Option<ErrorCode> {
    error.code()
}

async fn write(agent: &TestAgent, path: &str, data: &[u8]) -> u64 {
    agent
        .connection
        .write_file(path, &WriteOptions::default(), Cursor::new(data.to_vec()))
        .await
        .expect("write succeeds")
}

async fn read(agent: &TestAgent, path: &str) -> Result<Vec<u8>, AgentError> {
    agent
        .connection
        .read_file(path, 0, None)
        .await?
        .collect()
        .await
}

#[tokio::test]
async fn write_read_stat_and_range_round_trip() {
    let agent = TestAgent::start().await;
    let data = content(3 << 20);
    assert_eq!(
        write(&agent, "dir/sub/a.bin", &data).await,
        data.len() as u64
    );
    assert_eq!(
        std::fs::read(agent.home().join("dir/sub/a.bin")).expect("on disk"),
        data
    );
    assert_eq!(read(&agent, "dir/sub/a.bin").await.expect("reads"), data);
    let range = agent
        .connection
        .read_file("/dir/sub/a.bin", 100_000, Some(70_000))
        .await
        .expect("opens");
    assert_eq!((range.size, range.length), (data.len() as u64, 70_000));
    assert_eq!(
        range.collect().await.expect("reads"),
        &data[100_000..170_000]
    );
    let past_end = agent
        .connection
        .read_file("dir/sub/a.bin", 10 << 20, Some(5))
        .await
        .expect("opens");
    assert_eq!(past_end.length, 0);
    let entry = agent.connection.stat("dir/sub/a.bin").await.expect("stat");
    assert_eq!(
        (entry.kind, entry.size, entry.mode, entry.name.as_str()),
        (FileKind::File, data.len() as u64, 0o644, "a.bin")
    );
    assert_eq!(entry.path, "/dir/sub/a.bin");
    assert!(entry.modified_at > std::time::UNIX_EPOCH);
}

#[tokio::test]
async fn listing_descends_to_its_depth() {
    let agent = TestAgent::start().await;
    write(&agent, "a/b/c/deep.txt", b"x").await;
    write(&agent, "top.txt", b"hello").await;
    let one = agent.connection.list(".", 1).await.expect("lists");
    let names: Vec<_> = one.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, vec!["/a", "/top.txt"]);
    assert!(!one.truncated);
    let three = agent.connection.list("/", 3).await.expect("lists");
    let paths: Vec<_> = three.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["/a", "/top.txt", "/a/b", "/a/b/c"]);
    assert_eq!(three.entries[0].kind, FileKind::Dir);
    let not_dir = agent
        .connection
        .list("top.txt", 1)
        .await
        .expect_err("a file");
    assert_eq!(code_of(&not_dir), Some(ErrorCode::NotADirectory));
}

#[tokio::test]
async fn mkdir_move_and_remove() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    conn.make_dir("x/y", true).await.expect("mkdir -p");
    conn.make_dir("x/y", true)
        .await
        .expect("existing is fine with parents");
    let exists = conn.make_dir("x/y", false).await.expect_err("exists");
    assert_eq!(code_of(&exists), Some(ErrorCode::AlreadyExists));
    let missing_parent = conn.make_dir("q/r", false).await.expect_err("no parent");
    assert_eq!(code_of(&missing_parent), Some(ErrorCode::NotFound));
    write(&agent, "x/y/f.txt", b"data").await;
    conn.move_path("x/y/f.txt", "g.txt", false)
        .await
        .expect("moves");
    assert_eq!(read(&agent, "g.txt").await.expect("moved"), b"data");
    write(&agent, "h.txt", b"other").await;
    let clash = conn
        .move_path("g.txt", "h.txt", false)
        .await
        .expect_err("no overwrite");
    assert_eq!(code_of(&clash), Some(ErrorCode::AlreadyExists));
    conn.move_path("g.txt", "h.txt", true)
        .await
        .expect("overwrites");
    assert_eq!(read(&agent, "h.txt").await.expect("replaced"), b"data");
    write(&agent, "x/y/z.txt", b"1").await;
    let not_empty = conn.remove("x", false).await.expect_err("not empty");
    assert_eq!(code_of(&not_empty), Some(ErrorCode::DirectoryNotEmpty));
    conn.remove("x", true).await.expect("recursive remove");
    conn.remove("h.txt", false).await.expect("file remove");
    let gone = conn.stat("x").await.expect_err("removed");
    assert_eq!(code_of(&gone), Some(ErrorCode::NotFound));
    let root = conn.remove("/", true).await.expect_err("never the root");
    assert_eq!(code_of(&root), Some(ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn dot_dot_and_absolute_paths_stay_in_the_root() {
    let agent = TestAgent::start().await;
    // /etc/shadow exists on the host; from the agent it is <root>/etc/shadow.
    assert!(std::path::Path::new("/etc/shadow").exists());
    for path in [
        "../../etc/shadow",
        "/etc/shadow",
        "../../../../../../etc/passwd",
    ] {
        let error = read(&agent, path).await.expect_err("outside the root");
        assert_eq!(code_of(&error), Some(ErrorCode::NotFound), "{path}");
    }
    write(&agent, "../../escape.txt", b"in").await;
    assert!(agent.home().join("escape.txt").exists());
    let parent = agent.home().parent().expect("a parent");
    assert!(!parent.join("escape.txt").exists());
}

#[tokio::test]
async fn symlinks_resolve_inside_the_root() {
    let agent = TestAgent::start().await;
    let home = agent.home();
    std::os::unix::fs::symlink("/", home.join("rootlink")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", home.join("passwd")).expect("symlink");
    std::fs::write(home.join("mine.txt"), b"mine").expect("file");
    let conn = &agent.connection;
    let link = conn
        .stat("rootlink")
        .await
        .expect("stat of the link itself");
    assert_eq!(link.kind, FileKind::Symlink);
    assert_eq!(link.symlink_target.as_deref(), Some("/"));
    // Listing through it lists the root (the workspace), not the host's /.
    let listed = conn.list("rootlink", 1).await.expect("lists");
    let names: Vec<_> = listed.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["mine.txt", "passwd", "rootlink"]);
    assert_eq!(
        read(&agent, "rootlink/mine.txt").await.expect("inside"),
        b"mine"
    );
    let passwd = read(&agent, "passwd").await.expect_err("host file");
    assert_eq!(code_of(&passwd), Some(ErrorCode::NotFound));
    let through = read(&agent, "rootlink/etc/passwd")
        .await
        .expect_err("host file");
    assert_eq!(code_of(&through), Some(ErrorCode::NotFound));
    // Removing the link removes the link, never what it points at.
    conn.remove("rootlink", true)
        .await
        .expect("removes the link");
    assert!(home.join("mine.txt").exists());
}

#[tokio::test]
async fn fifos_and_devices_are_refused_without_hanging() {
    let agent = TestAgent::start().await;
    let home = agent.home();
    let made = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(home)
            .status()
            .is_ok_and(|status| status.success())
    };
    assert!(made(&["mkfifo", "fifo"]));
    let error = read(&agent, "fifo").await.expect_err("a FIFO");
    assert_eq!(code_of(&error), Some(ErrorCode::NotRegularFile));
    let error = agent
        .connection
        .write_file("fifo", &WriteOptions::default(), Cursor::new(b"x".to_vec()))
        .await
        .expect_err("a FIFO is never written");
    assert_eq!(code_of(&error), Some(ErrorCode::NotRegularFile));
    let error = agent
        .connection
        .write_file("/", &WriteOptions::default(), Cursor::new(b"x".to_vec()))
        .await
        .expect_err("the root");
    assert_eq!(code_of(&error), Some(ErrorCode::IsADirectory));
    let dir = read(&agent, "/").await.expect_err("a directory");
    assert_eq!(code_of(&dir), Some(ErrorCode::IsADirectory));
    let entry = agent.connection.stat("fifo").await.expect("stat works");
    assert_eq!(entry.kind, FileKind::Other);
    // Root may create a device node (this machine and CI run tests as root).
    // (1, 5) is /dev/zero's device number.
    if made(&["mknod", "zero", "c", "1", "5"]) {
        let error = read(&agent, "zero").await.expect_err("a device");
        assert_eq!(code_of(&error), Some(ErrorCode::NotRegularFile));
    }
    agent
        .connection
        .ping()
        .await
        .expect("the agent is responsive");
}

#[tokio::test]
async fn an_upload_over_its_cap_leaves_nothing_behind() {
    let agent = TestAgent::start().await;
    write(&agent, "keep.txt", b"old").await;
    let options = WriteOptions {
        limit: 100_000,
        ..WriteOptions::default()
    };
    for path in ["keep.txt", "new/big.bin"] {
        let body = Cursor::new(content(3 << 20));
        let error = agent
            .connection
            .write_file(path, &options, body)
            .await
            .expect_err("over the cap");
        assert_eq!(code_of(&error), Some(ErrorCode::TooLarge), "{path}");
    }
    assert_eq!(read(&agent, "keep.txt").await.expect("intact"), b"old");
    let missing = agent
        .connection
        .stat("new/big.bin")
        .await
        .expect_err("gone");
    assert_eq!(code_of(&missing), Some(ErrorCode::NotFound));
    let left: Vec<_> = std::fs::read_dir(agent.home().join("new"))
        .expect("the parent was created")
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
    let exact = WriteOptions {
        limit: 3,
        ..WriteOptions::default()
    };
    let written = agent
        .connection
        .write_file("exact.txt", &exact, Cursor::new(b"abc".to_vec()))
        .await
        .expect("exactly the cap is fine");
    assert_eq!(written, 3);
}

#[tokio::test]
async fn no_overwrite_and_modes() {
    let agent = TestAgent::start().await;
    write(&agent, "a.txt", b"1").await;
    let options = WriteOptions {
        overwrite: false,
        mode: Some(0o600),
        ..WriteOptions::default()
    };
    let body = || Cursor::new(b"2".to_vec());
    let error = agent
        .connection
        .write_file("a.txt", &options, body())
        .await
        .expect_err("exists");
    assert_eq!(code_of(&error), Some(ErrorCode::AlreadyExists));
    agent
        .connection
        .write_file("b.txt", &options, body())
        .await
        .expect("new file");
    assert_eq!(
        agent.connection.stat("b.txt").await.expect("stat").mode,
        0o600
    );
    let empty = agent
        .connection
        .write_file("empty", &WriteOptions::default(), Cursor::new(Vec::new()))
        .await
        .expect("an empty file");
    assert_eq!(empty, 0);
    assert_eq!(read(&agent, "empty").await.expect("reads"), b"");
}

#[tokio::test]
async fn a_dropped_read_is_cancelled_and_the_agent_goes_on() {
    let agent = TestAgent::start().await;
    let data = content(8 << 20);
    write(&agent, "big.bin", &data).await;
    let mut reading = agent
        .connection
        .read_file("big.bin", 0, None)
        .await
        .expect("opens");
    let first = reading.next().await.expect("a chunk").expect("data");
    assert_eq!(first[..], data[..first.len()]);
    drop(reading);
    agent.connection.ping().await.expect("responsive");
    assert_eq!(read(&agent, "big.bin").await.expect("reads again"), data);
}

#[tokio::test]
async fn invalid_paths_are_refused_before_sending() {
    let agent = TestAgent::start().await;
    let conn = &agent.connection;
    assert!(matches!(
        conn.stat("").await,
        Err(AgentError::InvalidPath { .. })
    ));
    assert!(matches!(
        conn.stat("a\0b").await,
        Err(AgentError::InvalidPath { .. })
    ));
    assert!(matches!(
        conn.list(".", 0).await,
        Err(AgentError::InvalidPath { .. })
    ));
}

/// On a full disk (a 1 MiB tmpfs as the workspace, in a mount namespace of its own),
/// a write fails with `NoSpace`, leaves no partial file, and the disk stays usable.
#[tokio::test]
async fn a_full_disk_fails_the_write_cleanly() {
    let mount = "mount -t tmpfs -o size=1m tmpfs . && cd \"$PWD\" && exec \"$0\"";
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        mount,
    ];
    let agent = TestAgent::start_with(&wrapper, |command| {
        command.env("CODEBOX_AGENT_TEST_MODE", "1");
    })
    .await;
    let conn = &agent.connection;
    let body = Cursor::new(content(3 << 20));
    let error = conn
        .write_file("big.bin", &WriteOptions::default(), body)
        .await
        .expect_err("the disk is full");
    assert_eq!(code_of(&error), Some(ErrorCode::NoSpace));
    let listing = conn.list("/", 1).await.expect("lists");
    assert!(
        listing.entries.is_empty(),
        "left behind: {:?}",
        listing.entries
    );
    write(&agent, "small.txt", b"still usable").await;
    assert_eq!(
        read(&agent, "small.txt").await.expect("reads"),
        b"still usable"
    );
}
