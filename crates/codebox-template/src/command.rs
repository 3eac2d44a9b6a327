//! Runs one build program (pip, npm, the interpreter) with a scrubbed environment,
//! no stdin, its own process group and a deadline, passing every output line to
//! the progress sink as it arrives.
//!
//! The program never sees the server's environment (database URLs, keys): only an
//! allowlist (PATH, HOME, locale, proxies, CA bundles, and `PIP_*`/`npm_config_*`
//! so operators can point at a mirror) plus what the recipe sets. At the deadline
//! the whole process group is killed *before* the leader is reaped, so the group
//! id cannot have been reused.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{BuildError, BuildFailure, BuildStep};
use crate::progress::Progress;

/// Output lines longer than this are cut (pip prints no such lines; a hostile or
/// broken program must not make us buffer without bound).
pub const MAX_LINE_BYTES: usize = 4096;
/// How many of the last output lines an [`BuildFailure::Exited`] keeps.
const TAIL_LINES: usize = 40;
/// Stdout kept for the recipe to parse (version JSON and the like).
const MAX_CAPTURED_STDOUT: usize = 1 << 20;
/// How often a running program is checked for cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(200);
/// Lines in flight between the reader threads and the supervisor.
const LINE_QUEUE: usize = 256;

/// Environment variables passed through from the caller's environment.
const ALLOWED_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];
/// Prefixes of variables passed through (mirror and certificate settings).
const ALLOWED_PREFIXES: &[&str] = &["PIP_", "npm_config_", "NPM_CONFIG_"];

/// What a finished program left for the recipe.
#[derive(Debug, Default)]
pub(crate) struct CommandOutput {
    /// Its standard output, at most [`MAX_CAPTURED_STDOUT`] bytes of whole lines.
    pub stdout: String,
}

/// Runs programs for one build of one template against one deadline.
pub(crate) struct CommandRunner<'a> {
    template: &'a str,
    deadline: Instant,
    timeout: Duration,
    progress: &'a mut dyn Progress,
}

impl std::fmt::Debug for CommandRunner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRunner")
            .field("template", &self.template)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
enum StopReason {
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl<'a> CommandRunner<'a> {
    pub(crate) fn new(
        template: &'a str,
        deadline: Instant,
        timeout: Duration,
        progress: &'a mut dyn Progress,
    ) -> Self {
        Self {
            template,
            deadline,
            timeout,
            progress,
        }
    }

    pub(crate) fn template(&self) -> &str {
        self.template
    }

    pub(crate) fn progress(&mut self) -> &mut dyn Progress {
        self.progress
    }

    /// Runs `command` to completion during `step`; a non-zero exit is an error.
    pub(crate) fn run(
        &mut self,
        step: BuildStep,
        command: &mut Command,
    ) -> Result<CommandOutput, BuildError> {
        let program = command.get_program().to_string_lossy().into_owned();
        scrub_environment(command);
        let mut child = self.spawn(step, &program, command)?;
        let (receiver, readers) = start_readers(&mut child);
        let result = self.supervise(step, &program, &mut child, &receiver);
        for reader in readers {
            // A reader ends at EOF or when the channel is gone; neither panics.
            let _ = reader.join();
        }
        let (status, output, tail) = result?;
        if status.success() {
            return Ok(output);
        }
        let failure = BuildFailure::Exited {
            program,
            status,
            output_tail: tail,
        };
        Err(BuildError::new(self.template, step, failure))
    }

    fn spawn(
        &self,
        step: BuildStep,
        program: &str,
        command: &mut Command,
    ) -> Result<Child, BuildError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command.spawn().map_err(|source| {
            let failure = BuildFailure::Spawn {
                program: program.to_owned(),
                source,
            };
            BuildError::new(self.template, step, failure)
        })
    }

    /// Forwards lines until both pipes close or the deadline passes, then reaps.
    fn supervise(
        &mut self,
        step: BuildStep,
        program: &str,
        child: &mut Child,
        receiver: &Receiver<(Stream, String)>,
    ) -> Result<(ExitStatus, CommandOutput, Vec<String>), BuildError> {
        let mut output = CommandOutput::default();
        let mut tail = Vec::new();
        loop {
            if let Some(reason) = self.stop_reason() {
                return Err(self.kill(step, program, child, reason));
            }
            match receiver.recv_timeout(self.next_wait()) {
                Ok((stream, line)) => {
                    self.progress.output(self.template, step, &line);
                    record_line(&mut output, &mut tail, stream, line);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = self.reap(step, program, child)?;
        Ok((status, output, tail))
    }

    /// Both pipes are closed; the program normally exits right away, but one that
    /// closed its output and kept running still meets the deadline.
    fn reap(
        &mut self,
        step: BuildStep,
        program: &str,
        child: &mut Child,
    ) -> Result<ExitStatus, BuildError> {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {
                    if let Some(reason) = self.stop_reason() {
                        return Err(self.kill(step, program, child, reason));
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    let failure = BuildFailure::io(program, source);
                    return Err(BuildError::new(self.template, step, failure));
                }
            }
        }
    }

    /// Kills the program's whole process group (pip or npm may have children),
    /// then reaps the leader.
    /// Why the program must stop now, if it must: the deadline passed or the
    /// caller cancelled the build.
    fn stop_reason(&self) -> Option<StopReason> {
        if self.progress.cancelled() {
            Some(StopReason::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(StopReason::TimedOut)
        } else {
            None
        }
    }

    /// How long to wait for output before checking the deadline and cancellation
    /// again.
    fn next_wait(&self) -> Duration {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        remaining.min(CANCEL_POLL)
    }

    fn kill(
        &mut self,
        step: BuildStep,
        program: &str,
        child: &mut Child,
        reason: StopReason,
    ) -> BuildError {
        let group = i32::try_from(child.id()).expect("Linux pids fit in i32");
        // The leader is not reaped yet, so its pid (= the group id) is still ours.
        if let Err(errno) = codebox_sys::process::kill(-group, libc::SIGKILL) {
            tracing::warn!(template = self.template, program, %errno, "killing the build's process group failed");
            let _ = child.kill();
        }
        let _ = child.wait();
        let program = program.to_owned();
        let failure = match reason {
            StopReason::TimedOut => BuildFailure::TimedOut {
                program,
                timeout: self.timeout,
            },
            StopReason::Cancelled => BuildFailure::Cancelled { program },
        };
        BuildError::new(self.template, step, failure)
    }
}

fn record_line(output: &mut CommandOutput, tail: &mut Vec<String>, stream: Stream, line: String) {
    if matches!(stream, Stream::Stdout) && output.stdout.len() + line.len() < MAX_CAPTURED_STDOUT {
        output.stdout.push_str(&line);
        output.stdout.push('\n');
    }
    if tail.len() == TAIL_LINES {
        tail.remove(0);
    }
    tail.push(line);
}

/// Keeps only the allowlisted part of the caller's environment; variables the
/// recipe set explicitly on `command` stay.
fn scrub_environment(command: &mut Command) {
    let explicit: Vec<(OsString, Option<OsString>)> = command
        .get_envs()
        .map(|(key, value)| (key.to_owned(), value.map(ToOwned::to_owned)))
        .collect();
    command.env_clear();
    for (key, value) in std::env::vars_os() {
        if is_allowed_variable(&key.to_string_lossy()) {
            command.env(key, value);
        }
    }
    for (key, value) in explicit {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
}

fn is_allowed_variable(name: &str) -> bool {
    ALLOWED_VARIABLES.contains(&name) || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn start_readers(child: &mut Child) -> (Receiver<(Stream, String)>, Vec<JoinHandle<()>>) {
    let (sender, receiver) = mpsc::sync_channel(LINE_QUEUE);
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(spawn_reader::<ChildStdout>(
            stdout,
            Stream::Stdout,
            sender.clone(),
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(spawn_reader::<ChildStderr>(stderr, Stream::Stderr, sender));
    }
    (receiver, readers)
}

fn spawn_reader<R: Read + Send + 'static>(
    pipe: R,
    stream: Stream,
    sender: SyncSender<(Stream, String)>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut lines = LineSplitter::default();
        let _ = read_lines(pipe, &mut lines, |line| sender.send((stream, line)).is_ok());
    })
}

/// Reads `pipe` to EOF, calling `emit` per line (`\n` or `\r` ends one, so
/// progress bars do not become one endless line); stops when `emit` says so.
fn read_lines<R: Read>(
    mut pipe: R,
    lines: &mut LineSplitter,
    mut emit: impl FnMut(String) -> bool,
) -> io::Result<()> {
    let mut buffer = [0u8; 8192];
    loop {
        let read = match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        for line in lines.push(&buffer[..read]) {
            if !emit(line) {
                return Ok(());
            }
        }
    }
    if let Some(line) = lines.finish() {
        emit(line);
    }
    Ok(())
}

/// Splits bytes into lines of at most [`MAX_LINE_BYTES`], dropping empty ones.
#[derive(Debug, Default)]
struct LineSplitter {
    current: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut complete = Vec::new();
        for &byte in bytes {
            if byte == b'\n' || byte == b'\r' {
                complete.extend(self.finish());
            } else if self.current.len() < MAX_LINE_BYTES {
                self.current.push(byte);
            }
        }
        complete
    }

    fn finish(&mut self) -> Option<String> {
        let line = String::from_utf8_lossy(&self.current).trim_end().to_owned();
        self.current.clear();
        (!line.is_empty()).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    #[derive(Default)]
    struct Lines(Vec<String>);

    impl Progress for Lines {
        fn step(&mut self, _: &str, _: BuildStep) {}
        fn output(&mut self, _: &str, _: BuildStep, line: &str) {
            self.0.push(line.to_owned());
        }
        fn note(&mut self, _: &str, _: &str) {}
    }

    fn runner<'a>(progress: &'a mut dyn Progress, timeout: Duration) -> CommandRunner<'a> {
        CommandRunner::new("test", Instant::now() + timeout, timeout, progress)
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        command
    }

    #[test]
    fn output_lines_reach_progress_and_stdout_is_captured() {
        let mut lines = Lines::default();
        let mut runner = runner(&mut lines, Duration::from_secs(60));
        let output = runner
            .run(
                BuildStep::Verify,
                &mut shell("echo one; echo two >&2; printf 'a\\rb'"),
            )
            .expect("the script succeeds");
        assert_eq!(output.stdout, "one\na\nb\n");
        let mut seen = lines.0.clone();
        seen.sort();
        assert_eq!(seen, ["a", "b", "one", "two"]);
    }

    #[test]
    fn failure_names_the_step_and_keeps_the_output_tail() {
        let mut progress = NoProgress;
        let mut runner = runner(&mut progress, Duration::from_secs(60));
        let error = runner
            .run(
                BuildStep::PipInstall,
                &mut shell("echo 'No matching distribution' >&2; exit 3"),
            )
            .expect_err("exit 3 is a failure");
        assert_eq!(error.step, BuildStep::PipInstall);
        assert!(error.to_string().contains("pip install"), "{error}");
        match error.cause {
            BuildFailure::Exited {
                status,
                output_tail,
                ..
            } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(output_tail, ["No matching distribution"]);
            }
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[test]
    fn deadline_kills_the_whole_process_group() {
        let marker = tempfile::tempdir().expect("temp dir");
        let pid_file = marker.path().join("grandchild");
        // The grandchild keeps no pipe open, so only the group kill can stop it.
        let script = format!(
            "sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {}; exec sleep 600",
            pid_file.display()
        );
        let mut progress = NoProgress;
        let mut runner = runner(&mut progress, Duration::from_millis(300));
        let error = runner
            .run(BuildStep::NpmInstall, &mut shell(&script))
            .expect_err("the deadline passes");
        assert!(
            matches!(error.cause, BuildFailure::TimedOut { .. }),
            "{error:?}"
        );
        let pid = std::fs::read_to_string(&pid_file).expect("pid written");
        // Gone, or a zombie waiting for init to reap it: either way not running.
        // SIGKILL is delivered asynchronously, so poll (bounded) rather than
        // read the state once.
        let running = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        for _ in 0..200 {
            if !running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(!running(), "grandchild {pid} survived the group kill");
    }

    /// Cancels once the program has printed its first line.
    struct CancelAfterFirstLine(bool);

    impl Progress for CancelAfterFirstLine {
        fn step(&mut self, _: &str, _: BuildStep) {}
        fn output(&mut self, _: &str, _: BuildStep, _: &str) {
            self.0 = true;
        }
        fn note(&mut self, _: &str, _: &str) {}
        fn cancelled(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn cancellation_kills_the_program_and_names_the_step() {
        let mut progress = CancelAfterFirstLine(false);
        let error = runner(&mut progress, Duration::from_secs(600))
            .run(
                BuildStep::PipInstall,
                &mut shell("echo started; exec sleep 600"),
            )
            .expect_err("cancelled");
        assert_eq!(error.step, BuildStep::PipInstall);
        assert!(
            matches!(error.cause, BuildFailure::Cancelled { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn environment_is_scrubbed_but_explicit_variables_stay() {
        // A unique name: nextest runs each test in its own process, and no other
        // test reads it.
        std::env::set_var("CODEBOX_TEMPLATE_TEST_SECRET", "postgres://leak");
        let mut command = shell(
            "echo \"secret=${CODEBOX_TEMPLATE_TEST_SECRET:-unset} pip=${PIP_NO_INPUT:-unset} path=${PATH:+set}\"",
        );
        command.env("PIP_NO_INPUT", "1");
        let mut progress = NoProgress;
        let output = runner(&mut progress, Duration::from_secs(60))
            .run(BuildStep::Verify, &mut command)
            .expect("the script succeeds");
        assert_eq!(output.stdout, "secret=unset pip=1 path=set\n");
        assert!(!is_allowed_variable("DATABASE_URL"));
        assert!(is_allowed_variable("PIP_INDEX_URL"));
        assert!(is_allowed_variable("npm_config_registry"));
    }

    #[test]
    fn long_lines_are_cut_and_empty_lines_dropped() {
        let mut splitter = LineSplitter::default();
        let mut bytes = vec![b'x'; MAX_LINE_BYTES * 3];
        bytes.extend_from_slice(b"\n\n\r\nend");
        let lines = splitter.push(&bytes);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(splitter.finish().as_deref(), Some("end"));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let mut progress = NoProgress;
        let error = runner(&mut progress, Duration::from_secs(60))
            .run(
                BuildStep::CreateVenv,
                &mut Command::new("/nonexistent/python3"),
            )
            .expect_err("no such program");
        assert_eq!(error.step, BuildStep::CreateVenv);
        assert!(matches!(error.cause, BuildFailure::Spawn { .. }));
    }
}
