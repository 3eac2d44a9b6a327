//! What makes an exec a background process: its tag and command for listings, its
//! subscribers, and the bounded buffer of output nobody listened to.

use std::collections::VecDeque;

use codebox_protocol::{AgentMessage, ExitReport, ProcessInfo, RequestId, Stream, PROCESS_BUFFER};

use crate::channel::Channel;

/// Subscribers of one process at once.
pub const MAX_SUBSCRIBERS: usize = 16;

#[derive(Debug)]
pub struct Background {
    pub tag: Option<String>,
    pub command: Vec<String>,
    subscribers: Vec<RequestId>,
    buffer: VecDeque<(Stream, Vec<u8>)>,
    buffered: usize,
    dropped: u64,
}

impl Background {
    pub fn new(tag: Option<String>, command: Vec<String>) -> Self {
        Self {
            tag,
            command,
            subscribers: Vec::new(),
            buffer: VecDeque::new(),
            buffered: 0,
            dropped: 0,
        }
    }

    /// Output of the process: to every subscriber, or into the buffer (dropping the
    /// oldest bytes past [`PROCESS_BUFFER`]).
    pub fn deliver(&mut self, stream: Stream, data: &[u8], channel: &mut Channel) {
        if !self.subscribers.is_empty() {
            for id in &self.subscribers {
                channel.send_data(*id, stream, data);
            }
            return;
        }
        self.buffer.push_back((stream, data.to_vec()));
        self.buffered += data.len();
        while self.buffered > PROCESS_BUFFER {
            let Some((_, oldest)) = self.buffer.pop_front() else {
                break;
            };
            self.buffered -= oldest.len();
            self.dropped += oldest.len() as u64;
        }
    }

    /// Attaches `id`: `Subscribed`, then whatever was buffered. `false` when full.
    pub fn subscribe(&mut self, id: RequestId, channel: &mut Channel) -> bool {
        if self.subscribers.len() >= MAX_SUBSCRIBERS {
            return false;
        }
        channel.send(&AgentMessage::Subscribed {
            id,
            dropped_bytes: self.dropped,
        });
        for (stream, data) in self.buffer.drain(..) {
            channel.send_data(id, stream, &data);
        }
        self.buffered = 0;
        self.dropped = 0;
        self.subscribers.push(id);
        true
    }

    /// Detaches `id`; whether it was attached.
    pub fn unsubscribe(&mut self, id: RequestId) -> bool {
        let before = self.subscribers.len();
        self.subscribers.retain(|subscriber| *subscriber != id);
        self.subscribers.len() != before
    }

    /// The process ended: every subscriber gets the report under its own id.
    pub fn finish(&self, report: &ExitReport, channel: &mut Channel) {
        for id in &self.subscribers {
            let mut report = report.clone();
            report.id = *id;
            channel.send(&AgentMessage::Exited(report));
        }
    }

    pub fn info(&self, pid: u32, stdin_open: bool) -> ProcessInfo {
        ProcessInfo {
            pid,
            command: self.command.clone(),
            tag: self.tag.clone(),
            stdin_open,
            subscribers: u32::try_from(self.subscribers.len()).unwrap_or(u32::MAX),
        }
    }
}
