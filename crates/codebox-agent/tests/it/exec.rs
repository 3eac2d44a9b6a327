//! Running commands: exit status, output, stdin, env, cwd, errors, concurrency.

use std::collections::BTreeMap;

use codebox_protocol::ErrorCode;
use codebox_runtime::agent::AgentError;
use codebox_runtime::{Command, ExecEvent};

use crate::{exit_code, shell, text, TestAgent};

#[tokio::test]
async fn true_exits_zero_after_started() {
    let agent = TestAgent::start().await;
    let mut request = shell("");
    request.command = Command::Argv(vec!["true".into()]);
    let mut stream = agent
        .connection
        .exec(&request, &BTreeMap::new())
        .await
        .expect("starts");
    let Some(ExecEvent::Started { pid }) = stream.next().await else {
        panic!("Started comes first")
    };
    assert!(pid > 0);
    let Some(ExecEvent::Finished(exit)) = stream.next().await else {
        panic!("then Finished")
    };
    assert_eq!(
        (exit.exit_code, exit.signal, exit.timed_out),
        (Some(0), None, false)
    );
    assert_eq!(stream.next().await, None);
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let agent = TestAgent::start().await;
    assert_eq!(exit_code(&agent.shell("exit 7").await), Some(7));
    let killed = agent.shell("kill -SEGV $$").await;
    let exit = killed.exit.expect("finished");
    assert_eq!((exit.exit_code, exit.signal), (None, Some(libc::SIGSEGV)));
}

#[tokio::test]
async fn stdout_and_stderr_are_separate_and_ordered() {
    let agent = TestAgent::start().await;
    let output = agent
        .shell("for i in 1 2 3; do echo out$i; echo err$i >&2; done")
        .await;
    assert_eq!(text(&output.stdout), "out1\nout2\nout3\n");
    assert_eq!(text(&output.stderr), "err1\nerr2\nerr3\n");
}

#[tokio::test]
async fn stdin_bytes_are_delivered_then_closed() {
    let agent = TestAgent::start().await;
    let mut request = shell("cat; echo done");
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    request.stdin = Some(input.clone());
    let output = agent.run(request).await;
    assert_eq!(&output.stdout[..input.len()], &input[..]);
    assert_eq!(&output.stdout[input.len()..], b"done\n");
    // No stdin: /dev/null, so a reader sees end of file at once.
    assert_eq!(agent.shell("cat; echo eof").await.stdout, b"eof\n");
}

#[tokio::test]
async fn environment_is_the_allowlist_plus_sandbox_plus_request() {
    let agent = TestAgent::start().await;
    let mut request = shell("env | sort");
    request.env = BTreeMap::from([("SHARED".into(), "request".into())]);
    let sandbox_env = BTreeMap::from([
        ("SHARED".into(), "sandbox".into()),
        ("ONLY_SANDBOX".into(), "yes".into()),
    ]);
    let output = agent
        .connection
        .exec(&request, &sandbox_env)
        .await
        .expect("starts")
        .collect()
        .await
        .expect("finishes");
    let env = text(&output.stdout);
    assert!(env.contains("SHARED=request\n"), "{env}");
    assert!(env.contains("ONLY_SANDBOX=yes\n"));
    assert!(env.contains("LANG=C.UTF-8\n"));
    assert!(env.contains(&format!("HOME={}\n", agent.home().display())));
    assert!(
        !env.contains("CODEBOX_AGENT"),
        "the agent's own variables leak: {env}"
    );
}

#[tokio::test]
async fn working_directory_defaults_to_home_and_can_be_set() {
    let agent = TestAgent::start().await;
    let home = std::fs::canonicalize(agent.home()).expect("home");
    assert_eq!(
        text(&agent.shell("pwd -P").await.stdout).trim(),
        home.to_string_lossy()
    );
    let mut elsewhere = shell("pwd");
    elsewhere.cwd = Some("/usr".into());
    assert_eq!(agent.run(elsewhere).await.stdout, b"/usr\n");
}

#[tokio::test]
async fn missing_program_or_directory_is_refused() {
    let agent = TestAgent::start().await;
    let mut missing = shell("");
    missing.command = Command::Argv(vec!["no-such-program-here".into()]);
    let mut bad_cwd = shell("true");
    bad_cwd.cwd = Some("/no/such/directory".into());
    for request in [missing, bad_cwd] {
        let error = agent
            .connection
            .exec(&request, &BTreeMap::new())
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error,
                AgentError::Refused {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{error:?}"
        );
    }
    // The agent goes on serving.
    assert_eq!(exit_code(&agent.shell("true").await), Some(0));
}

#[tokio::test]
async fn output_flood_is_capped_and_the_writer_is_not_blocked() {
    let agent = TestAgent::start().await;
    let mut request = shell("head -c 20000000 /dev/zero; echo tail >&2; exit 4");
    request.output_limit = 1000;
    let output = agent.run(request).await;
    let exit = output.exit.expect("finished");
    assert_eq!(output.stdout.len(), 1000);
    assert!(exit.stdout_truncated);
    assert!(!exit.stderr_truncated);
    assert_eq!(output.stderr, b"tail\n");
    // The program ran to its end: it was never blocked on a full pipe.
    assert_eq!(exit.exit_code, Some(4));
}

#[tokio::test]
async fn concurrent_execs_keep_their_own_output() {
    let agent = TestAgent::start().await;
    let runs = (0..12).map(|i| {
        let agent = &agent;
        async move {
            let output = agent
                .shell(&format!("sleep 0.$((RANDOM % 3)); echo {i}"))
                .await;
            (i, text(&output.stdout))
        }
    });
    for (i, stdout) in futures_util::future::join_all(runs).await {
        assert_eq!(stdout, format!("{i}\n"));
    }
}

#[tokio::test]
async fn ping_and_shutdown() {
    let mut agent = TestAgent::start().await;
    agent.connection.ping().await.expect("pong");
    agent.connection.shutdown().await;
    agent.connection.closed().await;
    let status = agent.child.wait().await.expect("agent exits");
    assert_eq!(status.code(), Some(0));
}
