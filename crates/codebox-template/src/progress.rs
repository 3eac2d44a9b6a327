//! Where a build reports what it is doing: step changes and every line of pip's
//! and npm's output, so `codebox template build` and `serve` can show progress.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::BuildStep;

/// Receives build progress. Implementations must not block for long: they are
/// called from the thread that supervises the build.
pub trait Progress {
    /// `template` entered `step`.
    fn step(&mut self, template: &str, step: BuildStep);
    /// One line of output (pip, npm, the interpreter) during `step`, without its
    /// line terminator, at most [`MAX_LINE_BYTES`](crate::MAX_LINE_BYTES) long.
    fn output(&mut self, template: &str, step: BuildStep, line: &str);
    /// A human-readable note (waiting for another build, leftovers removed...).
    fn note(&mut self, template: &str, message: &str);
    /// Polled while a build runs (every 200 ms at most): `true` stops it, kills
    /// pip/npm and removes the partial build. The CLI returns `true` after Ctrl-C
    /// (pip runs in its own process group, so the terminal's SIGINT does not
    /// reach it), `serve` on shutdown.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Discards all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn step(&mut self, _template: &str, _step: BuildStep) {}
    fn output(&mut self, _template: &str, _step: BuildStep, _line: &str) {}
    fn note(&mut self, _template: &str, _message: &str) {}
}

/// Logs steps and notes at `info`, output lines at `debug`, with structured fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingProgress;

impl Progress for TracingProgress {
    fn step(&mut self, template: &str, step: BuildStep) {
        tracing::info!(template, step = step.as_str(), "template build step");
    }
    fn output(&mut self, template: &str, step: BuildStep, line: &str) {
        tracing::debug!(
            template,
            step = step.as_str(),
            line,
            "template build output"
        );
    }
    fn note(&mut self, template: &str, message: &str) {
        tracing::info!(template, message, "template build");
    }
}

/// Writes `[python3] pip install: <line>` lines to a writer (the CLI passes
/// stderr). Write errors are ignored: progress must never fail a build.
#[derive(Debug)]
pub struct WriteProgress<W: Write> {
    writer: W,
}

impl<W: Write> WriteProgress<W> {
    /// Progress written to `writer`.
    pub fn new(writer: W) -> Self {
        Self { writer }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl<W: Write> Progress for WriteProgress<W> {
    fn step(&mut self, template: &str, step: BuildStep) {
        let _ = writeln!(self.writer, "[{template}] == {step}");
    }
    fn output(&mut self, template: &str, step: BuildStep, line: &str) {
        let _ = writeln!(self.writer, "[{template}] {step}: {line}");
    }
    fn note(&mut self, template: &str, message: &str) {
        let _ = writeln!(self.writer, "[{template}] {message}");
    }
}

/// Wraps a [`Progress`] and cancels the build when `flag` becomes true (set it
/// from a Ctrl-C handler or on shutdown).
#[derive(Debug)]
pub struct Cancellable<P> {
    inner: P,
    flag: Arc<AtomicBool>,
}

impl<P: Progress> Cancellable<P> {
    /// `inner`, cancelled by `flag`.
    pub fn new(inner: P, flag: Arc<AtomicBool>) -> Self {
        Self { inner, flag }
    }

    /// The wrapped progress back.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

impl<P: Progress> Progress for Cancellable<P> {
    fn step(&mut self, template: &str, step: BuildStep) {
        self.inner.step(template, step);
    }
    fn output(&mut self, template: &str, step: BuildStep, line: &str) {
        self.inner.output(template, step, line);
    }
    fn note(&mut self, template: &str, message: &str) {
        self.inner.note(template, message);
    }
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || self.inner.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellable_follows_its_flag() {
        let flag = Arc::new(AtomicBool::new(false));
        let progress = Cancellable::new(NoProgress, flag.clone());
        assert!(!progress.cancelled());
        flag.store(true, Ordering::Relaxed);
        assert!(progress.cancelled());
    }

    #[test]
    fn write_progress_prefixes_lines_with_template_and_step() {
        let mut progress = WriteProgress::new(Vec::new());
        progress.step("python3", BuildStep::PipInstall);
        progress.output("python3", BuildStep::PipInstall, "Collecting numpy");
        progress.note("python3", "waiting");
        let text = String::from_utf8(progress.into_inner()).expect("only UTF-8 written");
        assert_eq!(
            text,
            "[python3] == pip install\n[python3] pip install: Collecting numpy\n[python3] waiting\n"
        );
    }
}
