//! The host client against a scripted fake agent on a socketpair: the happy path,
//! and the hostile or broken agent (the real agent is tested end to end by
//! `codebox-agent`'s integration tests).

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_protocol::{
    decode_frame, encode_control, encode_data, AgentMessage, ErrorCode, ExitReport, Frame,
    HostMessage, Stream, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{AgentConnection, AgentError};
use crate::{Command, ExecEvent, ExecRequest};

const HANDSHAKE: Duration = Duration::from_secs(10);

/// The agent side of the socket, driven by the test.
pub(super) struct FakeAgent {
    pub(super) socket: UnixStream,
}

impl FakeAgent {
    pub(super) async fn send(&mut self, message: &AgentMessage) {
        let mut frame = Vec::new();
        encode_control(message, &mut frame).expect("encodes");
        self.socket.write_all(&frame).await.expect("write");
    }

    pub(super) async fn send_data(&mut self, id: u64, stream: Stream, data: &[u8]) {
        let mut frame = Vec::new();
        encode_data(id, stream, data, &mut frame);
        self.socket.write_all(&frame).await.expect("write");
    }

    pub(super) async fn receive(&mut self) -> Frame<HostMessage> {
        let mut header = [0; 4];
        self.socket.read_exact(&mut header).await.expect("header");
        let mut body = vec![0; u32::from_be_bytes(header) as usize];
        self.socket.read_exact(&mut body).await.expect("body");
        decode_frame(&body).expect("valid host frame")
    }

    pub(super) async fn receive_control(&mut self) -> HostMessage {
        match self.receive().await {
            Frame::Control(message) => message,
            Frame::Data { .. } => panic!("expected a control frame"),
        }
    }

    async fn hello(&mut self, protocol_version: u32) {
        self.send(&AgentMessage::Hello {
            protocol_version,
            agent_version: "test\u{1b}[0m".into(),
            pid: 1,
        })
        .await;
    }
}

pub(super) async fn connected() -> (AgentConnection, FakeAgent) {
    let (host, agent) = UnixStream::pair().expect("socketpair");
    let mut agent = FakeAgent { socket: agent };
    agent.hello(PROTOCOL_VERSION).await;
    let connection = AgentConnection::handshake(host, HANDSHAKE)
        .await
        .expect("handshake");
    assert_eq!(
        agent.receive_control().await,
        HostMessage::Welcome {
            protocol_version: PROTOCOL_VERSION
        }
    );
    (connection, agent)
}

fn request(script: &str, output_limit: usize) -> ExecRequest {
    ExecRequest {
        command: Command::Shell(script.into()),
        env: BTreeMap::from([("A".into(), "request".into())]),
        cwd: None,
        stdin: Some(b"input".to_vec()),
        timeout: Duration::from_secs(5),
        output_limit,
    }
}

pub(super) fn exited(id: u64, exit_code: i32) -> AgentMessage {
    AgentMessage::Exited(ExitReport {
        id,
        exit_code: Some(exit_code),
        signal: None,
        timed_out: false,
        killed: false,
        stdout_truncated: false,
        stderr_truncated: false,
        duration_us: 1500,
    })
}

#[tokio::test]
async fn exec_sends_the_request_and_streams_the_answer() {
    let (connection, mut agent) = connected().await;
    assert_eq!(connection.info().agent_version, "test[0m");
    let sandbox_env = BTreeMap::from([("A".into(), "sandbox".into()), ("B".into(), "b".into())]);
    let fake = tokio::spawn(async move {
        let HostMessage::Exec(spec) = agent.receive_control().await else {
            panic!("expected Exec")
        };
        assert_eq!(spec.env["A"], "request");
        assert_eq!(spec.env["B"], "b");
        assert_eq!(spec.timeout_ms, 5000);
        let Frame::Data { data, stream, .. } = agent.receive().await else {
            panic!("expected stdin data")
        };
        assert_eq!((stream, data.as_slice()), (Stream::Stdin, &b"input"[..]));
        assert_eq!(
            agent.receive_control().await,
            HostMessage::CloseStdin { id: spec.id }
        );
        agent
            .send(&AgentMessage::Started {
                id: spec.id,
                pid: 7,
            })
            .await;
        agent.send_data(spec.id, Stream::Stdout, b"out").await;
        agent.send_data(spec.id, Stream::Stderr, b"err").await;
        agent.send(&exited(spec.id, 3)).await;
        agent
    });
    let stream = connection
        .exec(&request("x", 100), &sandbox_env)
        .await
        .expect("exec starts");
    let output = stream.collect().await.expect("finished");
    assert_eq!(output.pid, Some(7));
    assert_eq!(output.stdout, b"out");
    assert_eq!(output.stderr, b"err");
    let exit = output.exit.expect("exit");
    assert_eq!(exit.exit_code, Some(3));
    assert_eq!(exit.duration, Duration::from_micros(1500));
    fake.await.expect("fake agent");
}

#[tokio::test]
async fn host_caps_output_an_agent_does_not() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::Exec(spec) = agent.receive_control().await else {
            panic!("expected Exec")
        };
        agent.receive().await;
        agent.receive().await;
        agent
            .send(&AgentMessage::Started {
                id: spec.id,
                pid: 7,
            })
            .await;
        agent
            .send_data(spec.id, Stream::Stdout, &[b'x'; 1000])
            .await;
        agent.send(&exited(spec.id, 0)).await;
        agent
    });
    let output = connection
        .exec(&request("x", 10), &BTreeMap::new())
        .await
        .expect("starts")
        .collect()
        .await
        .expect("finished");
    assert_eq!(output.stdout.len(), 10);
    assert!(output.exit.expect("exit").stdout_truncated);
    fake.await.expect("fake agent");
}

#[tokio::test]
async fn refused_exec_is_an_error_with_the_agent_code() {
    let (connection, mut agent) = connected().await;
    let fake = tokio::spawn(async move {
        let HostMessage::Exec(spec) = agent.receive_control().await else {
            panic!("expected Exec")
        };
        let message = "executing the program failed".into();
        let code = ErrorCode::InvalidRequest;
        agent
            .send(&AgentMessage::Error {
                id: Some(spec.id),
                code,
                message,
            })
            .await;
        agent
    });
    let mut no_stdin = request("x", 10);
    no_stdin.stdin = None;
    let error = connection
        .exec(&no_stdin, &BTreeMap::new())
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        AgentError::Refused {
            code: ErrorCode::InvalidRequest,
            ..
        }
    ));
    let _agent = fake.await.expect("fake agent");
    // The connection survives a refusal.
    assert!(!connection.is_closed());
}

#[tokio::test]
async fn dropping_the_stream_sends_kill() {
    let (connection, mut agent) = connected().await;
    let mut no_stdin = request("sleep 100", 10);
    no_stdin.stdin = None;
    let no_env = BTreeMap::new();
    let exec = connection.exec(&no_stdin, &no_env);
    let answer = async {
        let HostMessage::Exec(spec) = agent.receive_control().await else {
            panic!("expected Exec")
        };
        agent
            .send(&AgentMessage::Started {
                id: spec.id,
                pid: 9,
            })
            .await;
        spec.id
    };
    let (stream, id) = tokio::join!(exec, answer);
    let mut stream = stream.expect("starts");
    assert_eq!(stream.next().await, Some(ExecEvent::Started { pid: 9 }));
    drop(stream);
    assert_eq!(agent.receive_control().await, HostMessage::Kill { id });
}

#[tokio::test]
async fn ping_round_trips() {
    let (connection, mut agent) = connected().await;
    let answer = async {
        let HostMessage::Ping { id } = agent.receive_control().await else {
            panic!("expected Ping")
        };
        agent.send(&AgentMessage::Pong { id }).await;
    };
    let (rtt, ()) = tokio::join!(connection.ping(), answer);
    rtt.expect("pong");
}

#[tokio::test]
async fn other_protocol_version_is_refused() {
    let (host, agent) = UnixStream::pair().expect("socketpair");
    let mut agent = FakeAgent { socket: agent };
    agent.hello(PROTOCOL_VERSION + 1).await;
    let error = AgentConnection::handshake(host, HANDSHAKE)
        .await
        .expect_err("refused");
    assert!(matches!(error, AgentError::VersionMismatch { .. }));
    assert!(matches!(
        agent.receive_control().await,
        HostMessage::Refuse { .. }
    ));
}

#[tokio::test]
async fn silent_agent_times_out_the_handshake() {
    let (host, _agent) = UnixStream::pair().expect("socketpair");
    let error = AgentConnection::handshake(host, Duration::from_millis(20))
        .await
        .expect_err("times out");
    assert!(matches!(error, AgentError::HandshakeTimeout { .. }));
}

#[tokio::test]
async fn first_message_must_be_hello() {
    let (host, agent) = UnixStream::pair().expect("socketpair");
    let mut agent = FakeAgent { socket: agent };
    agent.send(&AgentMessage::Pong { id: 1 }).await;
    let error = AgentConnection::handshake(host, HANDSHAKE)
        .await
        .expect_err("not hello");
    assert!(matches!(error, AgentError::Protocol { .. }));
}

/// An oversized length, a bad kind byte, or data for stdin: the connection closes and
/// pending operations fail instead of hanging or allocating.
#[tokio::test]
async fn hostile_frames_close_the_connection() {
    let hostile: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 0, 0, 3, 9, 1, 2],
        &[0, 0, 0, 11, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 42],
    ];
    for bytes in hostile {
        let (connection, mut agent) = connected().await;
        let mut pending = request("x", 10);
        pending.stdin = None;
        let no_env = BTreeMap::new();
        let exec = connection.exec(&pending, &no_env);
        let attack = async {
            let HostMessage::Exec(spec) = agent.receive_control().await else {
                panic!("expected Exec")
            };
            agent
                .send(&AgentMessage::Started {
                    id: spec.id,
                    pid: 1,
                })
                .await;
            agent.socket.write_all(bytes).await.expect("write");
        };
        let (stream, ()) = tokio::join!(exec, attack);
        let result = stream.expect("started").collect().await;
        assert!(
            result.is_err(),
            "a stream cut by a hostile frame has no exit"
        );
        connection.closed().await;
        assert!(matches!(connection.ping().await, Err(AgentError::Closed)));
    }
}

#[tokio::test]
async fn invalid_request_is_refused_before_sending() {
    let (connection, _agent) = connected().await;
    let mut bad = request("x", 10);
    bad.env.insert("A=B".into(), "x".into());
    let error = connection
        .exec(&bad, &BTreeMap::new())
        .await
        .expect_err("invalid");
    assert!(matches!(error, AgentError::InvalidRequest { .. }));
}

#[tokio::test]
async fn abandoning_exec_before_it_starts_kills_it() {
    let (connection, mut agent) = connected().await;
    let mut pending = request("sleep 100", 10);
    pending.stdin = None;
    let no_env = BTreeMap::new();
    let id = tokio::select! {
        _ = connection.exec(&pending, &no_env) => panic!("the fake agent never starts it"),
        message = agent.receive_control() => match message {
            HostMessage::Exec(spec) => spec.id,
            other => panic!("expected Exec, got {other:?}"),
        },
    };
    // The exec future is dropped here, before Started: the host must cancel it.
    assert_eq!(agent.receive_control().await, HostMessage::Kill { id });
}

mod code {
    //! Code execution against the scripted fake agent: reassembly of results, caps
    //! the host applies itself, and a hostile agent.

    use codebox_protocol::{ErrorReport, ExecutionOutcome, ExecutionReport, Language};

    use super::*;
    use crate::agent::{CodeEvent, CodeRequest, ContextRequest};

    fn code_request(code: &str, output_limit: usize) -> CodeRequest {
        CodeRequest {
            context: "py".into(),
            code: code.into(),
            timeout: Duration::from_secs(5),
            env: BTreeMap::new(),
            output_limit,
        }
    }

    fn done(id: u64) -> AgentMessage {
        AgentMessage::ExecutionDone(ExecutionReport {
            id,
            execution_count: 3,
            outcome: ExecutionOutcome::Error,
            duration_us: 250,
            restarted: false,
            stdout_truncated: false,
            stderr_truncated: false,
        })
    }

    /// Receives Execute and its code; answers ExecutionAccepted. Returns the id.
    async fn accept(agent: &mut FakeAgent, expected_code: &[u8]) -> u64 {
        let HostMessage::Execute(spec) = agent.receive_control().await else {
            panic!("expected Execute")
        };
        assert_eq!(spec.code_len, expected_code.len() as u64);
        let Frame::Data { id, stream, data } = agent.receive().await else {
            panic!("expected the code")
        };
        assert_eq!(
            (id, stream, data.as_slice()),
            (spec.id, Stream::Stdin, expected_code)
        );
        agent
            .send(&AgentMessage::ExecutionAccepted { id: spec.id })
            .await;
        spec.id
    }

    #[tokio::test]
    async fn results_are_reassembled_and_output_capped() {
        let (connection, mut agent) = connected().await;
        let fake = tokio::spawn(async move {
            let id = accept(&mut agent, b"1/0").await;
            agent.send_data(id, Stream::Stdout, &[b'o'; 100]).await;
            let json = br#"{"text/plain":"2","text/html":"<b>2</b>"}"#;
            agent.send_data(id, Stream::Result, &json[..10]).await;
            agent.send_data(id, Stream::Result, &json[10..]).await;
            let result = AgentMessage::ExecutionResult {
                id,
                is_main_result: true,
                truncated: false,
            };
            agent.send(&result).await;
            agent
                .send_data(id, Stream::Result, br#"{"nomime":"x"}"#)
                .await;
            agent.send(&result).await;
            let error = ErrorReport {
                id,
                name: "ZeroDivisionError".into(),
                value: "division by zero".into(),
                traceback: "t".repeat(codebox_protocol::MAX_TRACEBACK + 10),
            };
            agent.send(&AgentMessage::ExecutionError(error)).await;
            agent.send(&done(id)).await;
            agent
        });
        let output = connection
            .execute(&code_request("1/0", 10))
            .await
            .expect("accepted")
            .collect()
            .await
            .expect("done");
        assert_eq!(output.stdout, vec![b'o'; 10]);
        assert_eq!(output.text(), Some("2"));
        assert_eq!(output.results[0].data["text/html"], "<b>2</b>");
        assert!(
            output.results[1].truncated,
            "a malformed bundle is replaced"
        );
        let error = output.error.clone().expect("error");
        assert_eq!(error.name, "ZeroDivisionError");
        assert_eq!(error.traceback.len(), codebox_protocol::MAX_TRACEBACK);
        let summary = output.summary.expect("summary");
        assert_eq!(
            (summary.execution_count, summary.outcome),
            (3, ExecutionOutcome::Error)
        );
        assert!(summary.stdout_truncated, "the host's own cap is reported");
        fake.await.expect("fake agent");
    }

    #[tokio::test]
    async fn results_past_the_per_execution_cap_are_dropped() {
        let (connection, mut agent) = connected().await;
        let sent = codebox_protocol::MAX_RESULTS + 50;
        let fake = tokio::spawn(async move {
            let id = accept(&mut agent, b"x").await;
            let result = AgentMessage::ExecutionResult {
                id,
                is_main_result: false,
                truncated: false,
            };
            for _ in 0..sent {
                agent
                    .send_data(id, Stream::Result, br#"{"text/plain":"r"}"#)
                    .await;
                agent.send(&result).await;
            }
            agent.send(&done(id)).await;
            agent
        });
        let output = connection
            .execute(&code_request("x", 10))
            .await
            .expect("accepted")
            .collect()
            .await
            .expect("done");
        // The agent's cap and its one notice; a hostile agent gets no further.
        assert_eq!(output.results.len(), codebox_protocol::MAX_RESULTS + 1);
        fake.await.expect("fake agent");
    }

    #[tokio::test]
    async fn an_oversized_result_closes_the_connection() {
        let (connection, mut agent) = connected().await;
        let fake = tokio::spawn(async move {
            let id = accept(&mut agent, b"x").await;
            let chunk = vec![b'a'; codebox_protocol::MAX_DATA_CHUNK];
            for _ in 0..(codebox_protocol::MAX_RESULT_BYTES / chunk.len() + 20) {
                agent.send_data(id, Stream::Result, &chunk).await;
            }
            agent
        });
        let stream = connection
            .execute(&code_request("x", 10))
            .await
            .expect("accepted");
        assert!(stream.collect().await.is_err());
        connection.closed().await;
        drop(fake);
    }

    #[tokio::test]
    async fn contexts_wait_for_ready_and_refusals_are_errors() {
        let (connection, mut agent) = connected().await;
        let fake = tokio::spawn(async move {
            let HostMessage::CreateContext(spec) = agent.receive_control().await else {
                panic!("expected CreateContext")
            };
            assert_eq!(
                (spec.language, spec.env["S"].as_str()),
                (Language::Python, "sandbox")
            );
            let ready = AgentMessage::ContextReady {
                id: spec.id,
                context: spec.context,
                pid: 77,
            };
            agent.send(&ready).await;
            let HostMessage::Execute(spec) = agent.receive_control().await else {
                panic!("expected Execute")
            };
            agent.receive().await; // the code
            let refusal = AgentMessage::Error {
                id: Some(spec.id),
                code: ErrorCode::UnknownContext,
                message: "no context".into(),
            };
            agent.send(&refusal).await;
            let HostMessage::DestroyContext { id, .. } = agent.receive_control().await else {
                panic!("expected DestroyContext")
            };
            agent.send(&AgentMessage::Ack { id }).await;
            agent
        });
        let request = ContextRequest {
            context: "py".into(),
            language: Language::Python,
            cwd: None,
            env: BTreeMap::new(),
        };
        let sandbox_env = BTreeMap::from([("S".to_owned(), "sandbox".to_owned())]);
        let info = connection
            .create_context(&request, &sandbox_env)
            .await
            .expect("ready");
        assert_eq!(info.pid, 77);
        assert_eq!(connection.list_contexts(), vec![info]);
        let error = connection
            .execute(&code_request("1", 10))
            .await
            .expect_err("refused");
        assert!(matches!(
            error,
            AgentError::Refused {
                code: ErrorCode::UnknownContext,
                ..
            }
        ));
        connection.destroy_context("py").await.expect("destroyed");
        assert!(connection.list_contexts().is_empty());
        fake.await.expect("fake agent");
    }

    #[tokio::test]
    async fn dropping_the_code_stream_sends_kill() {
        let (connection, mut agent) = connected().await;
        let request = code_request("while True: pass", 10);
        let (stream, id) = tokio::join!(connection.execute(&request), async {
            let id = accept(&mut agent, b"while True: pass").await;
            agent.send_data(id, Stream::Stdout, b"x").await;
            id
        });
        let mut stream = stream.expect("accepted");
        assert_eq!(stream.next().await, Some(CodeEvent::Stdout(b"x".to_vec())));
        drop(stream);
        assert_eq!(agent.receive_control().await, HostMessage::Kill { id });
    }
}
