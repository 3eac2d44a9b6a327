//! The reader task's handling of file-operation answers, checked like everything from
//! the agent: a read never delivers more than it announced, a listing never more than
//! `MAX_LIST_ENTRIES`, and an answer out of order is a protocol violation.

use codebox_protocol::{AgentMessage, RequestId, Stream, MAX_LIST_ENTRIES, WATCH_BATCH};
use tokio::sync::{mpsc, oneshot};

use super::error::AgentError;
use super::files::FileEvent;
use super::reader::{lock, SharedRoutes};

/// One file operation in flight.
#[derive(Debug)]
pub(crate) struct FileRoute {
    pub events: mpsc::Sender<FileEvent>,
    /// For a read, once started: bytes still to come.
    pub read_room: Option<u64>,
    /// Entries of a listing so far.
    pub entries: usize,
    /// Dropped with the route, which ends the operation's cancel watcher.
    pub _done: Option<oneshot::Sender<()>>,
}

fn protocol(detail: &str) -> AgentError {
    AgentError::Protocol {
        detail: detail.to_owned(),
    }
}

/// Whether `id` is a file operation.
pub(crate) fn owns(id: RequestId, routes: &SharedRoutes) -> bool {
    lock(routes).files.contains_key(&id)
}

/// A file answer: `PathStat`, `DirEntries`, `FileReadStarted`, `Credit`, `FileDone`,
/// `Watching`, `FileEvents`.
pub(crate) async fn on_message(
    message: AgentMessage,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let (id, event, last) = match message {
        AgentMessage::PathStat { id, entry } => (id, FileEvent::Stat(entry.into()), true),
        AgentMessage::DirEntries { id, entries } => {
            let entries = entries.into_iter().map(Into::into).collect();
            (id, FileEvent::Entries(entries), false)
        }
        AgentMessage::FileReadStarted { id, size, length } => {
            if length > size {
                return Err(protocol("a read longer than its file"));
            }
            (id, FileEvent::ReadStarted { size, length }, false)
        }
        AgentMessage::Credit { id, bytes } => (id, FileEvent::Credit(bytes), false),
        AgentMessage::Watching { id } => (id, FileEvent::Watching, false),
        AgentMessage::FileEvents { id, events } => {
            if events.len() > WATCH_BATCH {
                return Err(protocol("a batch of watch events over the cap"));
            }
            (id, FileEvent::Changes(events), false)
        }
        AgentMessage::FileDone {
            id,
            bytes,
            truncated,
        } => (id, FileEvent::Done { bytes, truncated }, true),
        _ => return Err(protocol("not a file answer")),
    };
    let sender = {
        let mut routes = lock(routes);
        let Some(route) = routes.files.get_mut(&id) else {
            // A cancelled operation may still answer.
            return Ok(());
        };
        check(route, &event)?;
        let sender = route.events.clone();
        if last {
            routes.files.remove(&id);
        }
        sender
    };
    let _ = sender.send(event).await;
    Ok(())
}

/// Bookkeeping of one answer; an error for one the operation cannot receive.
fn check(route: &mut FileRoute, event: &FileEvent) -> Result<(), AgentError> {
    match event {
        FileEvent::ReadStarted { length, .. } => {
            if route.read_room.is_some() {
                return Err(protocol("a second FileReadStarted"));
            }
            route.read_room = Some(*length);
        }
        FileEvent::Entries(entries) => {
            route.entries += entries.len();
            if route.entries > MAX_LIST_ENTRIES {
                return Err(protocol("a listing over the entry cap"));
            }
        }
        FileEvent::Done { .. } if route.read_room.is_some_and(|room| room > 0) => {
            return Err(protocol("a read ended before its announced length"));
        }
        _ => {}
    }
    Ok(())
}

/// An `Error` answering a file operation: its end.
pub(crate) async fn on_error(id: RequestId, error: AgentError, routes: &SharedRoutes) {
    let Some(route) = lock(routes).files.remove(&id) else {
        return;
    };
    let _ = route.events.send(FileEvent::Failed(error)).await;
}

/// Content of a file being read.
pub(crate) async fn on_data(
    id: RequestId,
    stream: Stream,
    data: Vec<u8>,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    if stream != Stream::File {
        return Err(protocol("file operation data on another stream"));
    }
    let sender = {
        let mut routes = lock(routes);
        let Some(route) = routes.files.get_mut(&id) else {
            return Ok(());
        };
        let room = route
            .read_room
            .as_mut()
            .ok_or_else(|| protocol("file data before FileReadStarted"))?;
        *room = room
            .checked_sub(data.len() as u64)
            .ok_or_else(|| protocol("more file data than announced"))?;
        route.events.clone()
    };
    // Backpressure point: a slow consumer stalls the reader, as for execs.
    let _ = sender.send(FileEvent::Data(data)).await;
    Ok(())
}
