//! One file operation as the agent sees it: the worker's pid, the non-blocking socket
//! to it, the upload bytes waiting to go to it, and whether its answer was forwarded.
//!
//! The worker runs as the sandbox's user, whose code could in principle tamper with
//! it, so the agent checks every frame it relays: only answers of this operation
//! (its id, a file answer type, `file` data) go on to the host; anything else kills
//! the worker and ends the operation with an error.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use codebox_protocol::{
    decode_frame, encode_control, encode_data, validate_depth, validate_path, AgentMessage,
    ErrorCode, Frame, FrameDecoder, HostMessage, InvalidPath, RequestId, Stream, MAX_DATA_CHUNK,
    UPLOAD_WINDOW,
};
use codebox_sys::agent::{self as sys, Fork};

use crate::channel::Channel;
use crate::event_loop::{Agent, MAX_FILE_OPS};
use crate::file_worker;
use crate::paths::FileRoot;
use crate::plan::Mode;

/// Bytes read from a worker's socket per `read`.
const READ_CHUNK: usize = 64 * 1024;
/// Upload bytes the agent holds for one operation: the host's window plus one chunk
/// of slack. More is a host that ignores the window.
const MAX_PENDING_UPLOAD: u64 = UPLOAD_WINDOW + MAX_DATA_CHUNK as u64;

/// Checks what the agent relies on before it forks a worker.
pub fn validate(message: &HostMessage) -> Result<(), InvalidPath> {
    match message {
        HostMessage::StatPath { path, .. }
        | HostMessage::MakeDir { path, .. }
        | HostMessage::RemovePath { path, .. } => validate_path(path),
        HostMessage::ListDir { path, depth, .. } => {
            validate_path(path)?;
            validate_depth(*depth)
        }
        HostMessage::MovePath { from, to, .. } => {
            validate_path(from)?;
            validate_path(to)
        }
        HostMessage::ReadFile(spec) => validate_path(&spec.path),
        HostMessage::WatchPath { path, .. } => validate_path(path),
        HostMessage::WriteFile(spec) => spec.validate(),
        _ => Ok(()),
    }
}

/// Upload frames on their way to the worker, each with its payload size.
#[derive(Debug, Default)]
struct Upload {
    frames: VecDeque<(Vec<u8>, u64)>,
    /// Bytes of the front frame already written.
    written: usize,
    pending: u64,
    ended: bool,
}

#[derive(Debug)]
pub struct FileOp {
    pub id: RequestId,
    pub pid: i32,
    pub reaped: bool,
    socket: Option<File>,
    decoder: FrameDecoder,
    upload: Option<Upload>,
    /// The final answer (done, stat, or error) went to the host.
    answered: bool,
    /// The host cancelled: nothing more is sent for this id.
    cancelled: bool,
}

/// Forks the worker of a validated file request.
pub fn spawn(request: &HostMessage, root: &FileRoot, mode: &Mode) -> io::Result<FileOp> {
    let (agent_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
    agent_end.set_nonblocking(true)?;
    let agent_pid = std::process::id();
    let pid = match sys::fork_single_threaded()? {
        Fork::Child => {
            drop(agent_end);
            file_worker::run(request, OwnedFd::from(worker_end), agent_pid, root, mode)
        }
        Fork::Parent { pid } => pid,
    };
    let upload = matches!(request, HostMessage::WriteFile(_)).then(Upload::default);
    Ok(FileOp {
        id: file_worker::id_of(request),
        pid,
        reaped: false,
        socket: Some(File::from(OwnedFd::from(agent_end))),
        decoder: FrameDecoder::new(),
        upload,
        answered: false,
        cancelled: false,
    })
}

impl FileOp {
    pub fn wants_write(&self) -> bool {
        self.upload.as_ref().is_some_and(|u| !u.frames.is_empty())
    }

    /// Queues upload bytes from the host. `false` when the host overran its window.
    pub fn push_upload(&mut self, data: &[u8]) -> bool {
        let Some(upload) = self.upload.as_mut().filter(|u| !u.ended) else {
            return true;
        };
        if upload.pending + data.len() as u64 > MAX_PENDING_UPLOAD {
            return false;
        }
        let mut frame = Vec::with_capacity(data.len() + 16);
        encode_data(self.id, Stream::File, data, &mut frame);
        upload.frames.push_back((frame, data.len() as u64));
        upload.pending += data.len() as u64;
        true
    }

    /// The host sent the whole upload: the end marker follows the data.
    pub fn end_upload(&mut self) {
        let Some(upload) = self.upload.as_mut().filter(|u| !u.ended) else {
            return;
        };
        let mut frame = Vec::new();
        let end = HostMessage::CloseStdin { id: self.id };
        encode_control(&end, &mut frame).expect("a tiny message encodes");
        upload.frames.push_back((frame, 0));
        upload.ended = true;
    }

    /// Writes queued upload frames to the worker; credits the host for each frame
    /// fully handed over.
    pub fn write_upload(&mut self, channel: &mut Channel) {
        let (Some(upload), Some(socket)) = (self.upload.as_mut(), self.socket.as_mut()) else {
            return;
        };
        let mut credit = 0;
        while let Some((frame, payload)) = upload.frames.front() {
            match socket.write(&frame[upload.written..]) {
                Ok(n) => upload.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // The worker is gone (it failed and said why): drop the rest.
                Err(_) => {
                    upload.frames.clear();
                    break;
                }
            }
            if upload.written == frame.len() {
                credit += payload;
                upload.pending -= payload;
                upload.written = 0;
                upload.frames.pop_front();
            }
        }
        if credit > 0 && !self.answered && !self.cancelled {
            let id = self.id;
            channel.send(&AgentMessage::Credit { id, bytes: credit });
        }
    }

    /// Relays what the worker sent (at most `max_reads` chunks).
    pub fn read_answers(&mut self, channel: &mut Channel, max_reads: usize) {
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        let mut buffer = [0u8; READ_CHUNK];
        let mut closed = false;
        for _ in 0..max_reads {
            match socket.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.decoder.push(&buffer[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        while let Ok(Some(body)) = self.decoder.next_body() {
            if let Err(reason) = self.relay(&body, channel) {
                self.fail(channel, reason);
                return;
            }
        }
        if self.decoder.buffered() > 0 && closed {
            self.fail(channel, "the file worker sent a partial frame");
        }
        if closed {
            self.socket = None;
        }
    }

    fn relay(&mut self, body: &[u8], channel: &mut Channel) -> Result<(), &'static str> {
        let frame = decode_frame::<AgentMessage>(body).map_err(|_| "an undecodable frame")?;
        if self.answered || self.cancelled {
            return Ok(());
        }
        match frame {
            Frame::Data {
                id,
                stream: Stream::File,
                data,
            } if id == self.id => {
                channel.send_data(id, Stream::File, &data);
                Ok(())
            }
            Frame::Control(message) if self.is_answer(&message) => {
                self.answered = matches!(
                    message,
                    AgentMessage::PathStat { .. }
                        | AgentMessage::FileDone { .. }
                        | AgentMessage::Error { .. }
                );
                channel.send(&message);
                Ok(())
            }
            _ => Err("a frame that is not an answer of its operation"),
        }
    }

    fn is_answer(&self, message: &AgentMessage) -> bool {
        match message {
            AgentMessage::PathStat { id, .. }
            | AgentMessage::DirEntries { id, .. }
            | AgentMessage::FileReadStarted { id, .. }
            | AgentMessage::FileDone { id, .. }
            | AgentMessage::Watching { id }
            | AgentMessage::FileEvents { id, .. } => *id == self.id,
            AgentMessage::Error { id, .. } => *id == Some(self.id),
            _ => false,
        }
    }

    /// Kills the worker and answers with an error (unless already answered).
    fn fail(&mut self, channel: &mut Channel, reason: &str) {
        crate::log(&format!("file operation {}: {reason}", self.id));
        self.kill();
        self.socket = None;
        self.answer_error(channel, reason);
    }

    fn answer_error(&mut self, channel: &mut Channel, reason: &str) {
        if self.answered || self.cancelled {
            return;
        }
        self.answered = true;
        channel.send(&AgentMessage::Error {
            id: Some(self.id),
            code: ErrorCode::FileError,
            message: format!("the file operation failed: {reason}"),
        });
    }

    /// The host gave up. An upload's worker sees its link close before the end
    /// marker and removes its temporary file; any other worker is killed.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.socket = None;
        if self.upload.is_none() {
            self.kill();
        }
    }

    /// SIGKILLs the worker unless reaped (its pid could be reused after that).
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = sys::send_signal(self.pid, libc::SIGKILL);
        }
    }

    /// Done once the worker is reaped and its socket closed; a worker that ended
    /// without an answer (killed by the OOM killer, say) is answered for.
    pub fn try_finish(&mut self, channel: &mut Channel) -> bool {
        if !self.reaped {
            return false;
        }
        if self.socket.is_some() {
            // Whatever it wrote before it died is in the socket: read it all.
            self.read_answers(channel, usize::MAX);
            self.socket = None;
        }
        self.answer_error(channel, "the worker ended without an answer");
        true
    }

    /// The socket's descriptor for `poll`.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.socket.as_ref().map(AsFd::as_fd)
    }
}

/// File operations, each done by a worker process of the sandbox's user.
impl Agent {
    pub(crate) fn start_file_op(&mut self, message: &HostMessage) {
        let id = crate::file_worker::id_of(message);
        if let Err(invalid) = validate(message) {
            return self.error(Some(id), ErrorCode::InvalidRequest, invalid.to_string());
        }
        if self.files.contains_key(&id) || self.execs.contains_key(&id) {
            return self.error(Some(id), ErrorCode::DuplicateId, "the id is in use".into());
        }
        if self.files.len() >= MAX_FILE_OPS {
            let text = format!("at most {MAX_FILE_OPS} file operations at once");
            return self.error(Some(id), ErrorCode::TooManyOperations, text);
        }
        match spawn(message, &self.file_root, &self.mode) {
            Ok(op) => {
                self.files.insert(id, op);
            }
            Err(error) => self.error(
                Some(id),
                ErrorCode::SpawnFailed,
                format!("spawn failed: {error}"),
            ),
        }
    }

    /// Upload bytes: for a write in progress; dropped for one that already ended.
    pub(crate) fn receive_upload(&mut self, id: RequestId, data: &[u8]) {
        let Some(op) = self.files.get_mut(&id) else {
            return;
        };
        if op.push_upload(data) {
            op.write_upload(&mut self.channel);
            return;
        }
        op.cancel();
        let text = "the host sent more than its upload window".to_owned();
        self.error(Some(id), ErrorCode::TooManyOperations, text);
    }
}
