//! The agent's end of the host channel: a non-blocking stream socket, an incremental
//! frame decoder for what the host sends, and a queue of frames waiting to be written.
//!
//! The queue is what bounds the agent's memory when the host reads slowly: the event
//! loop stops reading user output once [`Channel::backlog`] passes a high-water mark,
//! while control messages (exit reports, errors) are always queued.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use codebox_protocol::{encode_control, encode_data, AgentMessage, FrameDecoder, FrameError};
use codebox_protocol::{RequestId, Stream};

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per readiness event, so a flooding host cannot starve the other sources.
const READS_PER_EVENT: usize = 16;

#[derive(Debug)]
pub struct Channel {
    socket: File,
    decoder: FrameDecoder,
    outgoing: Vec<u8>,
    written: usize,
    /// Reused for every read, so a readable socket costs no allocation.
    read_buffer: Vec<u8>,
}

impl Channel {
    /// Takes a socket already set non-blocking and close-on-exec.
    pub fn new(socket: OwnedFd) -> Self {
        Self {
            socket: File::from(socket),
            decoder: FrameDecoder::new(),
            outgoing: Vec::with_capacity(READ_CHUNK),
            written: 0,
            read_buffer: vec![0; READ_CHUNK],
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Queues a control message.
    pub fn send(&mut self, message: &AgentMessage) {
        if let Err(error) = encode_control(message, &mut self.outgoing) {
            // Only an oversized error text could do this; report that instead.
            crate::log(&format!("dropping an unencodable message: {error}"));
        }
    }

    /// Queues output bytes of one exec.
    pub fn send_data(&mut self, id: RequestId, stream: Stream, data: &[u8]) {
        encode_data(id, stream, data, &mut self.outgoing);
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.outgoing.len() - self.written
    }

    /// Writes as much of the queue as the socket takes now.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.outgoing.len() {
            match self.socket.write(&self.outgoing[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if self.written == self.outgoing.len() {
            self.outgoing.clear();
            self.written = 0;
        } else if self.written > self.outgoing.len() / 2 {
            self.outgoing.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// Reads what the socket has. `Ok(false)` once the host closed its end.
    pub fn receive(&mut self) -> io::Result<bool> {
        for _ in 0..READS_PER_EVENT {
            match self.socket.read(&mut self.read_buffer) {
                Ok(0) => return Ok(false),
                Ok(n) => self.decoder.push(&self.read_buffer[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// The next complete frame body received.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.decoder.next_body()
    }
}
