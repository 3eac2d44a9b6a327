//! Stateful code execution through the real agent and real runners (python, node,
//! bash) in test mode: state, results, errors, interrupts, timeouts, crashes, caps.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::agent::{
    AgentError, CodeEvent, CodeOutput, CodeRequest, ContextRequest, ExecutionOutcome, Language,
};

use crate::{text, TestAgent};

impl TestAgent {
    pub async fn context(&self, name: &str, language: Language) {
        self.context_with(name, language, BTreeMap::new()).await;
    }

    pub async fn context_with(
        &self,
        name: &str,
        language: Language,
        env: BTreeMap<String, String>,
    ) {
        let request = ContextRequest {
            context: name.to_owned(),
            language,
            cwd: None,
            env,
        };
        let info = self
            .connection
            .create_context(&request, &BTreeMap::new())
            .await
            .expect("the context starts");
        assert!(info.pid > 0);
    }

    pub async fn code(&self, context: &str, code: &str) -> CodeOutput {
        self.code_request(code_request(context, code)).await
    }

    pub async fn code_request(&self, request: CodeRequest) -> CodeOutput {
        self.connection
            .execute(&request)
            .await
            .expect("accepted")
            .collect()
            .await
            .expect("finishes")
    }
}

pub fn code_request(context: &str, code: &str) -> CodeRequest {
    CodeRequest {
        context: context.to_owned(),
        code: code.to_owned(),
        timeout: Duration::from_secs(60),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    }
}

fn ok_text(output: &CodeOutput) -> &str {
    assert_eq!(output.outcome(), Some(ExecutionOutcome::Ok), "{output:?}");
    output.text().unwrap_or("")
}

fn have(binary: &str) -> bool {
    let found = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("skipped: {binary} is not installed");
    }
    found
}

/// Waits for the first stdout chunk of a running execution (it is then inside the cell).
async fn first_stdout(stream: &mut codebox_runtime::agent::CodeStream) {
    loop {
        match stream.next().await.expect("an event") {
            CodeEvent::Stdout(_) => return,
            CodeEvent::Done(summary) => panic!("ended early: {summary:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn python_state_persists_and_the_last_expression_is_the_result() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let first = agent.code("py", "x = 1").await;
    assert_eq!(ok_text(&first), "");
    assert!(first.results.is_empty());
    let second = agent.code("py", "x + 1").await;
    assert_eq!(ok_text(&second), "2");
    let summary = second.summary.expect("done");
    assert_eq!((summary.execution_count, summary.restarted), (2, false));
    let printed = agent
        .code(
            "py",
            "import sys\nprint('out1')\nprint('err1', file=sys.stderr)\nprint('out2')\n'v'",
        )
        .await;
    assert_eq!(ok_text(&printed), "'v'");
    assert_eq!(text(&printed.stdout), "out1\nout2\n");
    assert_eq!(text(&printed.stderr), "err1\n");
}

#[tokio::test]
async fn python_errors_carry_name_value_and_traceback() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let output = agent.code("py", "def f():\n    return 1/0\nf()").await;
    assert_eq!(output.outcome(), Some(ExecutionOutcome::Error));
    let error = output.error.expect("an error");
    assert_eq!(error.name, "ZeroDivisionError");
    assert_eq!(error.value, "division by zero");
    assert!(
        error.traceback.contains("line 2, in f"),
        "{}",
        error.traceback
    );
    assert!(
        !error.traceback.contains("codebox"),
        "runner frames are hidden"
    );
    let syntax = agent.code("py", "def (:").await;
    assert_eq!(syntax.error.expect("an error").name, "SyntaxError");
    // The context is fine afterwards.
    assert_eq!(ok_text(&agent.code("py", "40 + 2").await), "42");
}

#[tokio::test]
async fn python_rich_results_and_display() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let code = "class Table:\n    def _repr_html_(self):\n        return '<table><tr><td>1</td></tr></table>'\n    def _repr_png_(self):\n        return b'\\x89PNG'\n    def __repr__(self):\n        return 'Table()'\ndisplay('side')\nTable()";
    let output = agent.code("py", code).await;
    assert_eq!(ok_text(&output), "Table()");
    assert_eq!(output.results.len(), 2);
    assert!(!output.results[0].is_main_result);
    assert_eq!(output.results[0].text(), Some("'side'"));
    let main = &output.results[1];
    assert!(main.data["text/html"].contains("<table>"));
    assert_eq!(main.data["image/png"], "iVBORw==");
}

#[tokio::test]
async fn python_env_is_per_execution_and_top_level_await_works() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let mut request = code_request("py", "import os\nos.environ.get('ONLY_NOW')");
    request.env.insert("ONLY_NOW".into(), "yes".into());
    assert_eq!(ok_text(&agent.code_request(request).await), "'yes'");
    let after = agent.code("py", "os.environ.get('ONLY_NOW')").await;
    assert_eq!(after.results.len(), 0, "None is not displayed: {after:?}");
    let awaited = agent
        .code("py", "import asyncio\nawait asyncio.sleep(0)\n'awaited'")
        .await;
    assert_eq!(ok_text(&awaited), "'awaited'");
}

#[tokio::test]
async fn python_timeout_interrupts_and_state_survives() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "x = 41").await;
    let mut request = code_request("py", "while True: pass");
    request.timeout = Duration::from_millis(300);
    let output = agent.code_request(request).await;
    let summary = output.summary.expect("done");
    assert_eq!(summary.outcome, ExecutionOutcome::Timeout);
    assert!(!summary.restarted, "SIGINT was enough");
    assert_eq!(output.error.expect("an error").name, "KeyboardInterrupt");
    assert_eq!(ok_text(&agent.code("py", "x + 1").await), "42");
}

#[tokio::test]
async fn python_interrupt_on_request_keeps_state() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "x = 'kept'").await;
    let mut stream = agent
        .connection
        .execute(&code_request(
            "py",
            "import time\nprint('in', flush=True)\nwhile True: time.sleep(0.01)",
        ))
        .await
        .expect("accepted");
    first_stdout(&mut stream).await;
    agent.connection.interrupt("py").await.expect("interrupt");
    let output = stream.collect().await.expect("ends");
    assert_eq!(output.outcome(), Some(ExecutionOutcome::Interrupted));
    assert_eq!(ok_text(&agent.code("py", "x").await), "'kept'");
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_execution() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "y = 5").await;
    let mut stream = agent
        .connection
        .execute(&code_request(
            "py",
            "print('go', flush=True)\nwhile True: pass",
        ))
        .await
        .expect("accepted");
    first_stdout(&mut stream).await;
    drop(stream);
    // The next execution waits in the queue until the cancelled one ended.
    assert_eq!(ok_text(&agent.code("py", "y * 2").await), "10");
}

#[tokio::test]
async fn an_interrupt_ignored_for_the_grace_period_restarts_the_runner() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "z = 1").await;
    let mut request = code_request(
        "py",
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass",
    );
    request.timeout = Duration::from_millis(200);
    let summary = agent.code_request(request).await.summary.expect("done");
    assert_eq!(summary.outcome, ExecutionOutcome::Timeout);
    assert!(summary.restarted);
    let after = agent.code("py", "z").await;
    assert_eq!(after.error.expect("state is gone").name, "NameError");
    assert_eq!(after.summary.expect("done").execution_count, 1);
}

#[tokio::test]
async fn a_crashed_interpreter_is_reported_and_the_context_restarts() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "w = 1").await;
    let crashed = agent.code("py", "import os\nos._exit(3)").await;
    let summary = crashed.summary.expect("done");
    assert_eq!(summary.outcome, ExecutionOutcome::Crashed);
    assert!(summary.restarted);
    let segfault = agent.code("py", "import ctypes\nctypes.string_at(0)").await;
    assert_eq!(segfault.outcome(), Some(ExecutionOutcome::Crashed));
    assert_eq!(ok_text(&agent.code("py", "1 + 1").await), "2");
    let gone = agent.code("py", "w").await;
    assert_eq!(gone.error.expect("state lost").name, "NameError");
}

#[tokio::test]
async fn output_floods_are_capped_and_flagged() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let mut request = code_request("py", "import sys\nsys.stdout.write('x' * 5_000_000)\n'end'");
    request.output_limit = 1000;
    let output = agent.code_request(request).await;
    assert_eq!(ok_text(&output), "'end'");
    assert_eq!(output.stdout.len(), 1000);
    let summary = output.summary.expect("done");
    assert!(summary.stdout_truncated && !summary.stderr_truncated);
    let huge = agent
        .code(
            "py",
            "class Big:\n    def _repr_html_(self):\n        return 'h' * (9 << 20)\nBig()",
        )
        .await;
    let result = &huge.results[0];
    assert!(result.truncated);
    assert!(!result.data.contains_key("text/html"));
}

#[tokio::test]
async fn contexts_do_not_share_state_and_run_in_parallel() {
    let agent = TestAgent::start().await;
    agent.context("a", Language::Python).await;
    agent.context("b", Language::Python).await;
    agent.code("a", "v = 'a'").await;
    let other = agent.code("b", "v").await;
    assert_eq!(other.error.expect("not defined in b").name, "NameError");
    // A long execution in `a` does not hold up `b`.
    let mut slow = agent
        .connection
        .execute(&code_request(
            "a",
            "print('busy', flush=True)\nwhile True: pass",
        ))
        .await
        .expect("accepted");
    first_stdout(&mut slow).await;
    assert_eq!(ok_text(&agent.code("b", "'free'").await), "'free'");
    agent.connection.interrupt("a").await.expect("interrupt");
    assert_eq!(
        slow.collect().await.expect("ends").outcome(),
        Some(ExecutionOutcome::Interrupted)
    );
}

#[tokio::test]
async fn executions_of_one_context_run_in_order() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "log = []").await;
    let mut streams = Vec::new();
    for i in 0..5 {
        let code = format!("import time\ntime.sleep(0.02)\nlog.append({i})");
        streams.push(
            agent
                .connection
                .execute(&code_request("py", &code))
                .await
                .expect("accepted"),
        );
    }
    for stream in streams {
        assert_eq!(
            stream.collect().await.expect("ends").outcome(),
            Some(ExecutionOutcome::Ok)
        );
    }
    assert_eq!(ok_text(&agent.code("py", "log").await), "[0, 1, 2, 3, 4]");
}

#[tokio::test]
async fn code_larger_than_a_frame_is_carried() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let code = format!("s = '{}'\nlen(s)", "a".repeat(1_500_000));
    assert_eq!(ok_text(&agent.code("py", &code).await), "1500000");
}

#[tokio::test]
async fn context_requests_are_checked() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let duplicate = ContextRequest {
        context: "py".into(),
        language: Language::Bash,
        cwd: None,
        env: BTreeMap::new(),
    };
    let error = agent
        .connection
        .create_context(&duplicate, &BTreeMap::new())
        .await
        .expect_err("exists");
    assert!(matches!(
        error,
        AgentError::Refused {
            code: codebox_protocol::ErrorCode::ContextExists,
            ..
        }
    ));
    let unknown = agent.connection.execute(&code_request("nope", "1")).await;
    assert!(matches!(
        unknown,
        Err(AgentError::Refused {
            code: codebox_protocol::ErrorCode::UnknownContext,
            ..
        })
    ));
    let bad = agent.connection.execute(&code_request("../x", "1")).await;
    assert!(matches!(bad, Err(AgentError::InvalidCode { .. })));
    assert_eq!(agent.connection.list_contexts().len(), 1);
    agent
        .connection
        .destroy_context("py")
        .await
        .expect("destroyed");
    assert!(agent.connection.list_contexts().is_empty());
    let gone = agent.connection.execute(&code_request("py", "1")).await;
    assert!(matches!(gone, Err(AgentError::Refused { .. })));
}

#[tokio::test]
async fn restart_clears_state() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    agent.code("py", "q = 1").await;
    let before = agent.connection.list_contexts()[0].pid;
    let info = agent
        .connection
        .restart_context("py")
        .await
        .expect("restarted");
    assert_ne!(info.pid, before);
    assert_eq!(
        agent.code("py", "q").await.error.expect("gone").name,
        "NameError"
    );
}

#[tokio::test]
async fn javascript_state_await_results_and_errors() {
    if !have("node") {
        return;
    }
    let agent = TestAgent::start().await;
    agent.context("js", Language::Javascript).await;
    assert_eq!(
        ok_text(&agent.code("js", "let x = 1; const y = 2").await),
        ""
    );
    assert_eq!(ok_text(&agent.code("js", "x + y").await), "3");
    let awaited = agent
        .code(
            "js",
            "const z = await new Promise(r => setTimeout(() => r(40), 10)); z + 2",
        )
        .await;
    assert_eq!(ok_text(&awaited), "42");
    assert_eq!(ok_text(&agent.code("js", "z").await), "40");
    let logged = agent
        .code("js", "console.log('hi'); console.error('oops'); display({'text/html': '<b>b</b>'}); ({a: [1, 2]})")
        .await;
    assert_eq!(ok_text(&logged), "{ a: [ 1, 2 ] }");
    assert_eq!(
        (text(&logged.stdout).as_str(), text(&logged.stderr).as_str()),
        ("hi\n", "oops\n")
    );
    assert_eq!(logged.results[0].data["text/html"], "<b>b</b>");
    let thrown = agent
        .code("js", "function f() { throw new TypeError('bad') }\nf()")
        .await;
    assert_eq!(thrown.outcome(), Some(ExecutionOutcome::Error));
    let error = thrown.error.expect("an error");
    assert_eq!(
        (error.name.as_str(), error.value.as_str()),
        ("TypeError", "bad")
    );
    assert!(error.traceback.contains("at f"), "{}", error.traceback);
}

#[tokio::test]
async fn javascript_interrupt_and_timeout_keep_state() {
    if !have("node") {
        return;
    }
    let agent = TestAgent::start().await;
    agent.context("js", Language::Javascript).await;
    agent.code("js", "var kept = 'yes'").await;
    let mut request = code_request("js", "while (true) {}");
    request.timeout = Duration::from_millis(300);
    let busy = agent.code_request(request).await;
    assert_eq!(busy.outcome(), Some(ExecutionOutcome::Timeout));
    assert!(!busy.summary.expect("done").restarted);
    let mut request = code_request("js", "await new Promise(r => setTimeout(r, 100000))");
    request.timeout = Duration::from_millis(300);
    assert_eq!(
        agent.code_request(request).await.outcome(),
        Some(ExecutionOutcome::Timeout)
    );
    assert_eq!(ok_text(&agent.code("js", "kept").await), "'yes'");
}

#[tokio::test]
async fn typescript_without_a_compiler_says_so() {
    if !have("node") {
        return;
    }
    let mut env = BTreeMap::new();
    env.insert(
        "CODEBOX_TS_PATH".to_owned(),
        "/nonexistent/typescript".to_owned(),
    );
    let agent = TestAgent::start().await;
    agent.context_with("ts", Language::Typescript, env).await;
    let output = agent.code("ts", "const a: number = 1; a").await;
    assert_eq!(
        output.error.expect("an error").name,
        "TypeScriptUnavailable"
    );
}

#[tokio::test]
async fn typescript_types_compile_away() {
    let Some(compiler) = crate::typescript_compiler() else {
        eprintln!("skipped: the typescript package could not be installed");
        return;
    };
    let mut env = BTreeMap::new();
    env.insert("CODEBOX_TS_PATH".to_owned(), compiler);
    let agent = TestAgent::start().await;
    agent.context_with("ts", Language::Typescript, env).await;
    let code = "interface P { x: number }\nconst p: P = { x: 2 };\nfunction twice(n: number): number { return n * 2 }\ntwice(p.x)";
    assert_eq!(ok_text(&agent.code("ts", code).await), "4");
    let awaited = agent
        .code("ts", "const v: number = await Promise.resolve(5); v + p.x")
        .await;
    assert_eq!(ok_text(&awaited), "7");
    let bad = agent.code("ts", "const = ;").await;
    assert_eq!(bad.outcome(), Some(ExecutionOutcome::Error));
}

#[tokio::test]
async fn bash_state_persists_and_exit_codes_are_errors() {
    if !have("bash") {
        return;
    }
    let agent = TestAgent::start().await;
    agent.context("sh", Language::Bash).await;
    let first = agent.code("sh", "mkdir -p sub && cd sub && greeting=hello\ndeclare -a list=(a b)\nf() { echo \"f:$1\"; }").await;
    assert_eq!(first.outcome(), Some(ExecutionOutcome::Ok), "{first:?}");
    let second = agent
        .code(
            "sh",
            "basename \"$PWD\"; echo $greeting ${list[1]}; f x; echo err >&2",
        )
        .await;
    assert_eq!(second.outcome(), Some(ExecutionOutcome::Ok));
    assert_eq!(text(&second.stdout), "sub\nhello b\nf:x\n");
    assert_eq!(text(&second.stderr), "err\n");
    let failed = agent.code("sh", "false").await;
    assert_eq!(failed.outcome(), Some(ExecutionOutcome::Error));
    let error = failed.error.expect("an error");
    assert_eq!(
        (error.name.as_str(), error.value.as_str()),
        ("ExitCode", "1")
    );
    let mut request = code_request("sh", "echo \"$ONLY_NOW\"");
    request.env.insert("ONLY_NOW".into(), "set".into());
    assert_eq!(text(&agent.code_request(request).await.stdout), "set\n");
    assert_eq!(
        text(
            &agent
                .code("sh", "echo \"[${ONLY_NOW-unset}]\"")
                .await
                .stdout
        ),
        "[unset]\n"
    );
}

#[tokio::test]
async fn bash_interrupt_stops_loops_and_keeps_state() {
    if !have("bash") {
        return;
    }
    let agent = TestAgent::start().await;
    agent.context("sh", Language::Bash).await;
    agent.code("sh", "kept=yes").await;
    let mut request = code_request("sh", "while :; do :; done; echo not-reached");
    request.timeout = Duration::from_millis(300);
    let looped = agent.code_request(request).await;
    assert_eq!(looped.outcome(), Some(ExecutionOutcome::Timeout));
    assert!(!text(&looped.stdout).contains("not-reached"));
    let mut request = code_request("sh", "sleep 100; echo not-reached");
    request.timeout = Duration::from_millis(300);
    let slept = agent.code_request(request).await;
    assert_eq!(slept.outcome(), Some(ExecutionOutcome::Timeout));
    assert!(!slept.summary.expect("done").restarted);
    assert_eq!(text(&agent.code("sh", "echo $kept").await.stdout), "yes\n");
    let exited = agent.code("sh", "exit 4").await;
    assert_eq!(exited.outcome(), Some(ExecutionOutcome::Crashed));
    assert_eq!(text(&agent.code("sh", "echo back").await.stdout), "back\n");
}

/// Decodes a base64 PNG and checks its signature and header; returns (width, height).
fn png_size(base64_png: &str) -> (u32, u32) {
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(base64_png)
        .expect("valid base64");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

fn figure_png(output: &CodeOutput) -> (u32, u32) {
    let figure = output
        .results
        .iter()
        .find(|result| result.data.contains_key("image/png"))
        .unwrap_or_else(|| panic!("a figure: {output:?}"));
    assert!(!figure.is_main_result);
    png_size(&figure.data["image/png"])
}

/// The python3 template's path: IPython in process, matplotlib figures as PNG, a
/// DataFrame as an HTML table; and the plain fallback with the same libraries.
#[tokio::test]
async fn python_with_ipython_matplotlib_and_pandas() {
    let Some(bin) = crate::ipython_environment() else {
        eprintln!("skipped: no virtualenv with ipython, matplotlib and pandas could be made");
        return;
    };
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let agent = TestAgent::start().await;
    let env = BTreeMap::from([("PATH".to_owned(), path.clone())]);
    agent.context_with("ip", Language::Python, env).await;
    let plain_env = BTreeMap::from([
        ("PATH".to_owned(), path),
        ("CODEBOX_PYTHON_PLAIN".to_owned(), "1".to_owned()),
    ]);
    agent
        .context_with("plain", Language::Python, plain_env)
        .await;
    let probe = agent
        .code("ip", "import sys\n'IPython' in sys.modules")
        .await;
    assert_eq!(ok_text(&probe), "True", "the IPython executor is in use");
    agent.code("ip", "x = 20").await;
    assert_eq!(ok_text(&agent.code("ip", "x * 2 + 2").await), "42");
    agent.code("ip", "%env CODEBOX_MAGIC=on").await;
    let magic = agent
        .code("ip", "import os\nos.environ['CODEBOX_MAGIC']")
        .await;
    assert_eq!(ok_text(&magic), "'on'");
    let shell = agent.code("ip", "!echo from-the-shell").await;
    assert!(text(&shell.stdout).contains("from-the-shell"), "{shell:?}");
    let error = agent.code("ip", "1/0").await.error.expect("an error");
    assert_eq!(error.name, "ZeroDivisionError");
    assert!(error.traceback.contains("1/0"), "{}", error.traceback);
    let html = agent
        .code(
            "ip",
            "from IPython.display import HTML, display\ndisplay(HTML('<i>h</i>'))",
        )
        .await;
    assert_eq!(html.results[0].data["text/html"], "<i>h</i>");
    for context in ["ip", "plain"] {
        let chart = agent
            .code(
                context,
                "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()",
            )
            .await;
        assert_eq!(chart.outcome(), Some(ExecutionOutcome::Ok), "{chart:?}");
        let (width, height) = figure_png(&chart);
        assert!(width > 100 && height > 100, "{width}x{height}");
        let again = agent.code(context, "1").await;
        assert!(
            again
                .results
                .iter()
                .all(|r| !r.data.contains_key("image/png")),
            "figures are closed"
        );
        let frame = agent
            .code(
                context,
                "import pandas as pd\npd.DataFrame({'col': [1, 2]})",
            )
            .await;
        let main = frame
            .results
            .iter()
            .find(|r| r.is_main_result)
            .expect("main result");
        assert!(main.data["text/html"].contains("<table"), "{main:?}");
        assert!(main.data["text/plain"].contains("col"));
    }
    let mut request = code_request("ip", "while True: pass");
    request.timeout = Duration::from_millis(300);
    assert_eq!(
        agent.code_request(request).await.outcome(),
        Some(ExecutionOutcome::Timeout)
    );
    assert_eq!(ok_text(&agent.code("ip", "x").await), "20");
}

#[tokio::test]
async fn a_missing_interpreter_fails_the_create_and_frees_the_id() {
    let agent = TestAgent::start().await;
    let request = ContextRequest {
        context: "py".into(),
        language: Language::Python,
        cwd: None,
        env: BTreeMap::from([("PATH".to_owned(), "/nonexistent".to_owned())]),
    };
    let error = agent
        .connection
        .create_context(&request, &BTreeMap::new())
        .await
        .expect_err("no python3 there");
    let AgentError::Refused { code, message } = error else {
        panic!("expected a refusal, got {error:?}")
    };
    assert_eq!(code, codebox_protocol::ErrorCode::SpawnFailed);
    assert!(message.contains("python3 is not installed"), "{message}");
    let crashing = ContextRequest {
        env: BTreeMap::from([("PYTHONPATH".to_owned(), "/nonexistent".to_owned())]),
        ..request
    };
    // The id is free again, and a working context can take it.
    let info = agent
        .connection
        .create_context(&crashing, &BTreeMap::new())
        .await
        .expect("python3 from the default PATH");
    assert!(info.pid > 0);
}

#[tokio::test]
async fn closing_the_runner_channel_from_user_code_restarts_the_runner() {
    let agent = TestAgent::start().await;
    agent.context("py", Language::Python).await;
    let closed = agent
        .code("py", "import os\nos.close(3)\nimport time\ntime.sleep(30)")
        .await;
    let summary = closed.summary.expect("done");
    assert_eq!(
        (summary.outcome, summary.restarted),
        (ExecutionOutcome::Crashed, true)
    );
    assert_eq!(ok_text(&agent.code("py", "'works'").await), "'works'");
}
