//! `process.Process`: Start, Connect, List, SendInput, StreamInput, SendSignal,
//! CloseStdin, Update, on top of the core's processes and terminals.
//!
//! A process started here outlives its `Start` stream (a client that goes
//! away, or whose deadline passes, only stops listening; `Connect` reattaches),
//! and dies with the sandbox or by `SendSignal`. A terminal (`pty`) is driven
//! by a task that fans its output out to every `Start`/`Connect` stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use codebox_core::{PtyEvent, PtyOutput};
use codebox_runtime::{Command, ExecEvent, ExecStream, ProcessRequest, MAX_TERMINAL_SIZE};
use futures_util::StreamExt;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use crate::connect::{self, Code, RpcError, StreamSender};
use crate::proto::{
    self, encode_bytes, end_event, Data, Event, EventResponse, Input, ListResponse, ProcessConfig,
    ProcessInfo, Selector,
};
use crate::state::{EnvdState, SandboxState, Terminal, TerminalChunk};
use crate::users::{self, SandboxUser};
use crate::{errors, read_body, Target};

/// Terminal chunks buffered per listener before a slow one loses output.
const TERMINAL_FANOUT: usize = 1024;

/// What a `Start`/`Connect` stream reads.
enum Source {
    Process(ExecStream),
    Terminal(broadcast::Receiver<TerminalChunk>),
}

/// Shared stream settings of a call.
struct StreamSettings {
    keepalive: Duration,
    deadline: Option<Instant>,
}

fn stream_settings(headers: &HeaderMap) -> Result<StreamSettings, RpcError> {
    let deadline = connect::timeout(headers)?.map(|timeout| Instant::now() + timeout);
    Ok(StreamSettings {
        keepalive: connect::keepalive_interval(headers),
        deadline,
    })
}

/// The working directory of a request: relative ones start at home.
fn working_dir(user: SandboxUser, cwd: Option<&str>) -> Result<Option<String>, RpcError> {
    match cwd {
        None | Some("") => Ok(Some(user.home().to_owned())),
        Some(path) => users::resolve(user, path).map(Some),
    }
}

pub async fn start(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match prepare_start(&state, &target, &headers, body).await {
        Ok((pid, source, settings)) => spawn_stream(pid, source, settings),
        Err(error) => connect::stream_error(error),
    }
}

async fn prepare_start(
    state: &Arc<EnvdState>,
    target: &Target,
    headers: &HeaderMap,
    body: Body,
) -> Result<(u32, Source, StreamSettings), RpcError> {
    let user = users::from_headers(headers)?;
    let settings = stream_settings(headers)?;
    let bytes = read_body(body).await?;
    let request: proto::StartRequest = connect::stream_request(headers, &bytes)?;
    let config = request
        .process
        .ok_or_else(|| RpcError::invalid("process: required"))?;
    if config.cmd.is_empty() {
        return Err(RpcError::invalid("process.cmd: required"));
    }
    let cwd = working_dir(user, config.cwd.as_deref())?;
    let argv: Vec<String> = std::iter::once(config.cmd.clone())
        .chain(config.args.iter().cloned())
        .collect();
    let core = &state.core;
    let sandbox = state.sandbox(&target.sandbox_id);
    if let Some(pty) = request.pty {
        let size = pty.size.unwrap_or_default();
        let (cols, rows) = terminal_size(size.cols.0, size.rows.0)?;
        if sandbox.terminal_count() >= crate::state::MAX_TERMINALS {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "at most {} terminals per sandbox",
                    crate::state::MAX_TERMINALS
                ),
            ));
        }
        let (cmd, args) = match terminal_command(argv) {
            Some((cmd, args)) => (Some(cmd), Some(args)),
            None => (None, None),
        };
        let session = core
            .open_pty(
                &target.owner,
                &target.sandbox_id,
                codebox_core::PtyRequest {
                    cols: Some(cols),
                    rows: Some(rows),
                    cmd,
                    args,
                    env: Some(config.envs.clone()),
                    cwd,
                    user: None,
                    timeout: None,
                },
            )
            .await
            .map_err(errors::rpc)?;
        let pid = session.pid;
        let (output, listener) = broadcast::channel(TERMINAL_FANOUT);
        let kill = Arc::new(Notify::new());
        let terminal = Terminal {
            input: session.input.clone(),
            output: output.clone(),
            kill: Arc::clone(&kill),
            config,
            tag: request.tag,
        };
        if sandbox.add_terminal(pid, terminal).is_err() {
            // Dropping the session ends the terminal's program.
            return Err(RpcError::new(
                Code::ResourceExhausted,
                "too many terminals in this sandbox",
            ));
        }
        tokio::spawn(drive_terminal(
            Arc::clone(&sandbox),
            pid,
            session.output,
            output,
            kill,
        ));
        return Ok((pid, Source::Terminal(listener), settings));
    }
    let (pid, subscription) = core
        .start_subscribed_process(
            &target.owner,
            &target.sandbox_id,
            ProcessRequest {
                command: Command::Argv(argv),
                env: config.envs.clone(),
                cwd,
                // proto: `optional bool stdin`; envd keeps stdin open unless told not to.
                stdin: request.stdin.unwrap_or(true),
                tag: request.tag.clone(),
                timeout: None,
            },
        )
        .await
        .map_err(errors::rpc)?;
    sandbox.remember(pid, config);
    Ok((pid, Source::Process(subscription.stream), settings))
}

/// What a terminal runs: the SDKs' `pty.create` asks for an interactive login
/// bash (`/bin/bash -i -l`), which is the runtime's default terminal program
/// (`None`); anything else runs as given.
fn terminal_command(argv: Vec<String>) -> Option<(String, Vec<String>)> {
    let shell = matches!(argv.first().map(String::as_str), Some("/bin/bash" | "bash"));
    let flags_only = argv
        .iter()
        .skip(1)
        .all(|arg| matches!(arg.as_str(), "-i" | "-l" | "--login"));
    if shell && flags_only {
        return None;
    }
    let mut words = argv.into_iter();
    let cmd = words.next()?;
    Some((cmd, words.collect()))
}

fn terminal_size(cols: u32, rows: u32) -> Result<(u16, u16), RpcError> {
    let max = u32::from(MAX_TERMINAL_SIZE);
    if !(1..=max).contains(&cols) || !(1..=max).contains(&rows) {
        return Err(RpcError::invalid(format!(
            "pty.size: cols and rows must be 1 to {max}"
        )));
    }
    // Both checked to fit above.
    Ok((cols as u16, rows as u16))
}

/// Reads a terminal's output into its fan-out until the program ends or a
/// kill is asked for (dropping the output stream ends the program's tree).
async fn drive_terminal(
    sandbox: Arc<SandboxState>,
    pid: u32,
    mut output: PtyOutput,
    fanout: broadcast::Sender<TerminalChunk>,
    kill: Arc<Notify>,
) {
    let end = loop {
        tokio::select! {
            event = output.next() => match event {
                Some(PtyEvent::Data(bytes)) => {
                    let _ = fanout.send(TerminalChunk::Data(bytes));
                }
                Some(PtyEvent::Exit(exit)) => {
                    break end_event(exit.exit_code, exit.signal, exit.timed_out);
                }
                None => break end_event(None, None, false),
            },
            () = kill.notified() => {
                drop(output);
                break end_event(None, Some(9), false);
            }
        }
    };
    sandbox.remove_terminal(pid);
    let _ = fanout.send(TerminalChunk::End(end));
    tracing::debug!(pid, "terminal ended");
}

fn spawn_stream(pid: u32, source: Source, settings: StreamSettings) -> Response {
    let (sender, response) = connect::stream_response();
    tokio::spawn(pump(sender, pid, source, settings));
    response.into_response()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn send_event(sender: &StreamSender, event: Event) -> Result<(), connect::ClientGone> {
    sender.send(&EventResponse { event }).await
}

/// Streams `start`, then output, keepalives and `end`, then end-stream.
async fn pump(sender: StreamSender, pid: u32, mut source: Source, settings: StreamSettings) {
    if send_event(&sender, Event::Start { pid }).await.is_err() {
        return;
    }
    let mut keepalive =
        tokio::time::interval_at(Instant::now() + settings.keepalive, settings.keepalive);
    loop {
        let event = tokio::select! {
            () = sender.closed() => return,
            () = sleep_until(settings.deadline) => {
                sender
                    .finish(Some(RpcError::new(Code::DeadlineExceeded, "the deadline passed")))
                    .await;
                return;
            }
            _ = keepalive.tick() => Some(Event::Keepalive {}),
            next = next_output(&mut source) => next,
        };
        match event {
            Some(Event::End(end)) => {
                if send_event(&sender, Event::End(end)).await.is_ok() {
                    sender.finish(None).await;
                }
                return;
            }
            Some(event) => {
                if send_event(&sender, event).await.is_err() {
                    return;
                }
            }
            None => {
                sender
                    .finish(Some(RpcError::new(
                        Code::Unavailable,
                        "the sandbox went away before the process ended",
                    )))
                    .await;
                return;
            }
        }
    }
}

/// The next event of a source; `None` when it ended without an `end`.
async fn next_output(source: &mut Source) -> Option<Event> {
    match source {
        Source::Process(stream) => loop {
            return match stream.next().await? {
                ExecEvent::Started { .. } => continue,
                ExecEvent::Stdout(bytes) => Some(Event::Data(Data::Stdout(encode_bytes(&bytes)))),
                ExecEvent::Stderr(bytes) => Some(Event::Data(Data::Stderr(encode_bytes(&bytes)))),
                ExecEvent::Finished(exit) => Some(Event::End(end_event(
                    exit.exit_code,
                    exit.signal,
                    exit.timed_out,
                ))),
            };
        },
        Source::Terminal(receiver) => loop {
            return match receiver.recv().await {
                Ok(TerminalChunk::Data(bytes)) => {
                    Some(Event::Data(Data::Pty(encode_bytes(&bytes))))
                }
                Ok(TerminalChunk::End(end)) => Some(Event::End(end)),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "a slow terminal listener lost output");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => None,
            };
        },
    }
}

/// A selector as a pid of this sandbox.
async fn resolve_pid(
    state: &Arc<EnvdState>,
    target: &Target,
    selector: Selector,
) -> Result<u32, RpcError> {
    match selector {
        Selector::Pid(pid) => Ok(pid),
        Selector::Tag(tag) => {
            if let Some(pid) = state.sandbox(&target.sandbox_id).terminal_by_tag(&tag) {
                return Ok(pid);
            }
            let processes = state
                .core
                .list_processes(&target.owner, &target.sandbox_id)
                .await
                .map_err(errors::rpc)?;
            processes
                .into_iter()
                .find(|process| process.tag.as_deref() == Some(tag.as_str()))
                .map(|process| process.pid)
                .ok_or_else(|| {
                    RpcError::new(Code::NotFound, format!("no process with the tag {tag:?}"))
                })
        }
    }
}

pub async fn connect_process(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let prepared = async {
        users::from_headers(&headers)?;
        let settings = stream_settings(&headers)?;
        let bytes = read_body(body).await?;
        let request: proto::SelectRequest = connect::stream_request(&headers, &bytes)?;
        let pid = resolve_pid(&state, &target, proto::required_selector(&request.process)?).await?;
        if let Some(terminal) = state.sandbox(&target.sandbox_id).terminal(pid) {
            return Ok((pid, Source::Terminal(terminal.output.subscribe()), settings));
        }
        let subscription = state
            .core
            .process_subscription(&target.owner, &target.sandbox_id, pid)
            .await
            .map_err(errors::rpc)?;
        Ok::<_, RpcError>((pid, Source::Process(subscription.stream), settings))
    };
    match prepared.await {
        Ok((pid, source, settings)) => spawn_stream(pid, source, settings),
        Err(error) => connect::stream_error(error),
    }
}

/// Runs a unary call: user check, deadline, body, handler.
pub(crate) async fn unary<T, R, F, Fut>(headers: HeaderMap, body: Body, handler: F) -> Response
where
    T: serde::de::DeserializeOwned,
    R: serde::Serialize,
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, RpcError>>,
{
    let call = async {
        users::from_headers(&headers)?;
        let deadline = connect::timeout(&headers)?;
        let bytes = read_body(body).await?;
        let request: T = connect::unary_request(&headers, &bytes)?;
        match deadline {
            Some(deadline) => tokio::time::timeout(deadline, handler(request))
                .await
                .map_err(|_| RpcError::new(Code::DeadlineExceeded, "the deadline passed"))?,
            None => handler(request).await,
        }
    };
    match call.await {
        Ok(message) => connect::unary_response(&message),
        Err(error) => {
            tracing::debug!(code = error.code.as_str(), message = %error.message, "envd call refused");
            error.into_response()
        }
    }
}

pub async fn list(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(headers, body, |_: proto::Empty| async move {
        let processes = state
            .core
            .list_processes(&target.owner, &target.sandbox_id)
            .await
            .map_err(errors::rpc)?;
        let sandbox = state.sandbox(&target.sandbox_id);
        let live: Vec<u32> = processes.iter().map(|process| process.pid).collect();
        sandbox.retain_records(&live);
        let mut infos: Vec<ProcessInfo> = processes
            .into_iter()
            .map(|process| {
                let config = match sandbox.record(process.pid) {
                    Some(record) => record.config,
                    None => ProcessConfig {
                        cmd: process.cmd.first().cloned().unwrap_or_default(),
                        args: process.cmd.iter().skip(1).cloned().collect(),
                        ..ProcessConfig::default()
                    },
                };
                ProcessInfo {
                    config,
                    pid: process.pid,
                    tag: process.tag,
                }
            })
            .collect();
        for (pid, terminal) in sandbox.terminals() {
            infos.push(ProcessInfo {
                config: terminal.config,
                pid,
                tag: terminal.tag,
            });
        }
        infos.sort_by_key(|info| info.pid);
        Ok(ListResponse { processes: infos })
    })
    .await
}

async fn write_input(
    state: &Arc<EnvdState>,
    target: &Target,
    pid: u32,
    input: Input,
) -> Result<(), RpcError> {
    if let Some(terminal) = state.sandbox(&target.sandbox_id).terminal(pid) {
        let bytes = match input {
            Input::Pty(bytes) | Input::Stdin(bytes) => bytes,
        };
        return terminal.input.write(&bytes).await.map_err(errors::rpc);
    }
    match input {
        Input::Stdin(bytes) => state
            .core
            .process_stdin(&target.owner, &target.sandbox_id, &pid.to_string(), bytes)
            .await
            .map_err(errors::rpc),
        Input::Pty(_) => Err(RpcError::invalid(format!(
            "process {pid} has no terminal: send stdin instead"
        ))),
    }
}

pub async fn send_input(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(
        headers,
        body,
        |request: proto::SendInputRequest| async move {
            let input = request
                .input
                .as_ref()
                .ok_or_else(|| RpcError::invalid("input: required"))?
                .input()?;
            let pid =
                resolve_pid(&state, &target, proto::required_selector(&request.process)?).await?;
            write_input(&state, &target, pid, input).await?;
            Ok(proto::Empty {})
        },
    )
    .await
}

/// Client-streaming `StreamInput`: a `start` naming the process, then `data`
/// messages (and keepalives), until the client ends its stream.
pub async fn stream_input(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = async {
        users::from_headers(&headers)?;
        connect::check_stream_content_type(&headers)?;
        let deadline = connect::timeout(&headers)?.map(|timeout| Instant::now() + timeout);
        let work = read_input_stream(&state, &target, body);
        tokio::select! {
            result = work => result,
            () = sleep_until(deadline) => Err(RpcError::new(Code::DeadlineExceeded, "the deadline passed")),
        }
    };
    let result = call.await;
    let (sender, response) = connect::stream_response();
    tokio::spawn(async move {
        match result {
            Ok(()) => {
                if sender.send(&proto::Empty {}).await.is_ok() {
                    sender.finish(None).await;
                }
            }
            Err(error) => sender.finish(Some(error)).await,
        }
    });
    response
}

async fn read_input_stream(
    state: &Arc<EnvdState>,
    target: &Target,
    body: Body,
) -> Result<(), RpcError> {
    let mut frames = body.into_data_stream();
    let mut reader = connect::EnvelopeReader::default();
    let mut pid: Option<u32> = None;
    loop {
        while let Some(envelope) = reader.next_envelope()? {
            if envelope.flags & connect::FLAG_END_STREAM != 0 {
                return Ok(());
            }
            let message: proto::StreamInputRequest = connect::parse_message(&envelope.payload)?;
            if let Some(start) = message.start {
                if pid.is_some() {
                    return Err(RpcError::invalid("start: sent twice"));
                }
                let selector = proto::required_selector(&start.process)?;
                pid = Some(resolve_pid(state, target, selector).await?);
            } else if let Some(data) = message.data {
                let target_pid = pid.ok_or_else(|| {
                    RpcError::invalid("data before start: the first message names the process")
                })?;
                let input = data
                    .input
                    .as_ref()
                    .ok_or_else(|| RpcError::invalid("data.input: required"))?
                    .input()?;
                write_input(state, target, target_pid, input).await?;
            }
            // keepalive: nothing to do.
        }
        match frames.next().await {
            Some(Ok(chunk)) => reader.push(&chunk),
            Some(Err(error)) => {
                return Err(RpcError::new(
                    Code::Canceled,
                    format!("the request stream failed: {error}"),
                ))
            }
            None if reader.is_empty() => return Ok(()),
            None => return Err(RpcError::invalid("the request stream ended mid-envelope")),
        }
    }
}

pub async fn send_signal(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(
        headers,
        body,
        |request: proto::SendSignalRequest| async move {
            let signal = request.signal.runtime_name()?;
            let pid =
                resolve_pid(&state, &target, proto::required_selector(&request.process)?).await?;
            if let Some(terminal) = state.sandbox(&target.sandbox_id).terminal(pid) {
                // A terminal's program ends with its session: both signals kill it.
                terminal.kill.notify_one();
                return Ok(proto::Empty {});
            }
            state
                .core
                .signal_process(
                    &target.owner,
                    &target.sandbox_id,
                    &pid.to_string(),
                    codebox_core::SignalRequest {
                        signal: signal.to_owned(),
                    },
                )
                .await
                .map_err(errors::rpc)?;
            Ok(proto::Empty {})
        },
    )
    .await
}

pub async fn close_stdin(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(headers, body, |request: proto::SelectRequest| async move {
        let pid = resolve_pid(&state, &target, proto::required_selector(&request.process)?).await?;
        if state.sandbox(&target.sandbox_id).terminal(pid).is_some() {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("process {pid} is a terminal: it has no separate stdin to close"),
            ));
        }
        state
            .core
            .close_process_stdin(&target.owner, &target.sandbox_id, &pid.to_string())
            .await
            .map_err(errors::rpc)?;
        Ok(proto::Empty {})
    })
    .await
}

pub async fn update(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(headers, body, |request: proto::UpdateRequest| async move {
        let pid = resolve_pid(&state, &target, proto::required_selector(&request.process)?).await?;
        let Some(pty) = request.pty else {
            return Ok(proto::Empty {});
        };
        let size = pty.size.unwrap_or_default();
        let (cols, rows) = terminal_size(size.cols.0, size.rows.0)?;
        let terminal = state
            .sandbox(&target.sandbox_id)
            .terminal(pid)
            .ok_or_else(|| {
                RpcError::new(Code::NotFound, format!("no terminal with the pid {pid}"))
            })?;
        terminal
            .input
            .resize(cols, rows)
            .await
            .map_err(errors::rpc)?;
        Ok(proto::Empty {})
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sizes_are_bounded() {
        assert_eq!(terminal_size(80, 24), Ok((80, 24)));
        assert!(terminal_size(0, 24).is_err());
        assert!(terminal_size(80, u32::from(MAX_TERMINAL_SIZE) + 1).is_err());
    }

    #[test]
    fn the_sdk_terminal_is_the_default_login_shell() {
        let argv = |words: &[&str]| -> Vec<String> {
            words.iter().map(|word| (*word).to_owned()).collect()
        };
        assert_eq!(terminal_command(argv(&["/bin/bash", "-i", "-l"])), None);
        assert_eq!(terminal_command(argv(&["bash"])), None);
        assert_eq!(
            terminal_command(argv(&["/bin/bash", "-c", "top"])),
            Some(("/bin/bash".to_owned(), argv(&["-c", "top"])))
        );
        assert_eq!(
            terminal_command(argv(&["python3"])),
            Some(("python3".to_owned(), Vec::new()))
        );
    }

    #[test]
    fn working_dirs_default_to_home() {
        let user = SandboxUser::User;
        assert_eq!(working_dir(user, None), Ok(Some("/home/user".into())));
        assert_eq!(
            working_dir(user, Some("src")),
            Ok(Some("/home/user/src".into()))
        );
        assert_eq!(working_dir(user, Some("/tmp")), Ok(Some("/tmp".into())));
    }
}
