//! The agent against raw frames (no host client): hostile or broken input from the
//! host side, and the handshake rules.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};

use codebox_protocol::{
    decode_frame, encode_control, read_frame, AgentMessage, ErrorCode, Frame, HostMessage,
    PROTOCOL_VERSION,
};

use crate::AGENT;

struct RawAgent {
    socket: UnixStream,
    child: Child,
}

impl RawAgent {
    fn start() -> RawAgent {
        let (host, agent) = UnixStream::pair().expect("socketpair");
        codebox_sys::agent::set_cloexec(agent.as_fd(), false).expect("clear cloexec");
        let child = std::process::Command::new(AGENT)
            .env_clear()
            .env("CODEBOX_AGENT_FD", agent.as_raw_fd().to_string())
            .env("CODEBOX_AGENT_TEST_MODE", "1")
            .current_dir(std::env::temp_dir())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        drop(agent);
        let mut raw = RawAgent {
            socket: host,
            child,
        };
        assert!(matches!(raw.receive(), Some(AgentMessage::Hello { .. })));
        raw
    }

    fn welcome(mut self) -> Self {
        self.send(&HostMessage::Welcome {
            protocol_version: PROTOCOL_VERSION,
        });
        self
    }

    fn send(&mut self, message: &HostMessage) {
        let mut frame = Vec::new();
        encode_control(message, &mut frame).expect("encodes");
        self.socket.write_all(&frame).expect("write");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).expect("write");
    }

    fn receive(&mut self) -> Option<AgentMessage> {
        let body = read_frame(&mut self.socket).expect("read")?;
        match decode_frame(&body).expect("agent frames decode") {
            Frame::Control(message) => Some(message),
            Frame::Data { .. } => panic!("no exec is running"),
        }
    }

    fn exit_code(mut self) -> Option<i32> {
        self.child.wait().expect("agent exits").code()
    }
}

fn control(json: &str) -> Vec<u8> {
    let len = u32::try_from(json.len() + 1).expect("small");
    [&len.to_be_bytes()[..], &[1], json.as_bytes()].concat()
}

#[test]
fn unknown_and_malformed_messages_get_an_error_and_the_agent_goes_on() {
    let mut agent = RawAgent::start().welcome();
    let cases = [
        (
            r#"{"type":"teleport","id":4}"#,
            Some(4),
            ErrorCode::UnknownMessage,
        ),
        (
            r#"{"type":"kill","id":"four"}"#,
            None,
            ErrorCode::BadMessage,
        ),
        ("not json", None, ErrorCode::BadMessage),
    ];
    for (json, expected_id, expected_code) in cases {
        agent.send_raw(&control(json));
        match agent.receive() {
            Some(AgentMessage::Error { id, code, .. }) => {
                assert_eq!((id, code), (expected_id, expected_code), "{json}");
            }
            other => panic!("expected an error for {json}, got {other:?}"),
        }
    }
    // An unknown frame kind is answered too; the framing itself is still intact.
    agent.send_raw(&[0, 0, 0, 2, 7, 7]);
    assert!(matches!(agent.receive(), Some(AgentMessage::Error { .. })));
    agent.send(&HostMessage::Ping { id: 9 });
    assert_eq!(agent.receive(), Some(AgentMessage::Pong { id: 9 }));
}

#[test]
fn invalid_exec_is_refused_with_its_id() {
    let mut agent = RawAgent::start().welcome();
    agent.send_raw(&control(
        r#"{"type":"exec","id":3,"command":{"argv":[]},"timeout_ms":10,"output_limit":1}"#,
    ));
    match agent.receive() {
        Some(AgentMessage::Error { id, code, .. }) => {
            assert_eq!((id, code), (Some(3), ErrorCode::InvalidRequest));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn requests_before_welcome_are_refused() {
    let mut agent = RawAgent::start();
    agent.send(&HostMessage::Ping { id: 1 });
    assert!(matches!(
        agent.receive(),
        Some(AgentMessage::Error {
            code: ErrorCode::UnexpectedMessage,
            ..
        })
    ));
}

#[test]
fn oversized_frame_ends_the_agent() {
    let mut agent = RawAgent::start().welcome();
    agent.send_raw(&[0x7f, 0xff, 0xff, 0xff]);
    assert_eq!(agent.receive(), None, "the agent closes the channel");
    assert_eq!(agent.exit_code(), Some(1));
}

#[test]
fn other_protocol_version_or_refusal_ends_the_agent() {
    let mut agent = RawAgent::start();
    agent.send(&HostMessage::Welcome {
        protocol_version: PROTOCOL_VERSION + 1,
    });
    assert_eq!(agent.exit_code(), Some(1));
    let mut agent = RawAgent::start();
    agent.send(&HostMessage::Refuse {
        reason: "too old".into(),
    });
    assert_eq!(agent.exit_code(), Some(1));
}
