//! `filesystem.Filesystem`: Stat, MakeDir, Move, ListDir, Remove, WatchDir and
//! the polling watchers (CreateWatcher, GetWatcherEvents, RemoveWatcher), on
//! top of the core's file operations. Every path is resolved by the sandbox's
//! agent, inside the sandbox, as `user`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use codebox_core::{CoreError, FileEntryView, MakeDirRequest, MoveRequest, MAX_LIST_DEPTH};
use codebox_runtime::{FileKind, FileWatch, WatchEvent, WatchKind};
use tokio::time::Instant;

use crate::connect::{self, Code, RpcError, StreamSender};
use crate::process::unary;
use crate::proto::{
    self, permissions, timestamp, CreateWatcherResponse, EntryInfo, EntryResponse, EventType,
    FileType, FilesystemEvent, ListDirResponse, WatchDirResponse, WatcherEventsResponse,
};
use crate::state::{push_event, EnvdState, Watcher};
use crate::users::{self, SandboxUser};
use crate::{errors, read_body, Target};

/// A core entry as envd's `EntryInfo`.
pub fn entry_info(entry: FileEntryView) -> EntryInfo {
    let kind = match entry.kind {
        FileKind::File => FileType::File,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Other => FileType::Unspecified,
    };
    let mode = entry.mode & 0o777;
    EntryInfo {
        name: entry.name,
        kind,
        path: entry.path,
        size: entry.size.to_string(),
        mode,
        permissions: permissions(kind, entry.kind == FileKind::Other, mode),
        // The agent does not report owners yet.
        owner: String::new(),
        group: String::new(),
        modified_time: timestamp(entry.modified_at.into()),
        symlink_target: entry.symlink_target,
    }
}

/// The user of a call and its resolved path.
fn user_path(headers: &HeaderMap, path: &str) -> Result<(SandboxUser, String), RpcError> {
    let user = users::from_headers(headers)?;
    Ok((user, users::resolve(user, path)?))
}

pub async fn stat(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = users::from_headers(&headers);
    unary(headers, body, |request: proto::PathRequest| async move {
        let path = users::resolve(user?, &request.path)?;
        let entry = state
            .core
            .stat_file(&target.owner, &target.sandbox_id, &path)
            .await
            .map_err(errors::rpc)?;
        Ok(EntryResponse {
            entry: entry_info(entry),
        })
    })
    .await
}

pub async fn make_dir(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = users::from_headers(&headers);
    unary(headers, body, |request: proto::PathRequest| async move {
        let path = users::resolve(user?, &request.path)?;
        let core = &state.core;
        match core
            .stat_file(&target.owner, &target.sandbox_id, &path)
            .await
        {
            Ok(entry) if entry.kind == FileKind::Dir => {
                return Err(RpcError::new(
                    Code::AlreadyExists,
                    format!("directory {} already exists", entry.path),
                ))
            }
            Ok(entry) => {
                return Err(RpcError::new(
                    Code::AlreadyExists,
                    format!("{} already exists and is not a directory", entry.path),
                ))
            }
            Err(CoreError::FileNotFound { .. }) => {}
            Err(error) => return Err(errors::rpc(error)),
        }
        let entry = core
            .make_dir(
                &target.owner,
                &target.sandbox_id,
                MakeDirRequest {
                    path,
                    parents: Some(true),
                },
            )
            .await
            .map_err(errors::rpc)?;
        Ok(EntryResponse {
            entry: entry_info(entry),
        })
    })
    .await
}

pub async fn move_path(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = users::from_headers(&headers);
    unary(headers, body, |request: proto::MoveRequest| async move {
        let user = user?;
        let from = users::resolve(user, &request.source)?;
        let to = users::resolve(user, &request.destination)?;
        // Like rename(2): an existing destination file is replaced.
        let entry = state
            .core
            .move_path(
                &target.owner,
                &target.sandbox_id,
                MoveRequest {
                    from,
                    to,
                    overwrite: Some(true),
                },
            )
            .await
            .map_err(errors::rpc)?;
        Ok(EntryResponse {
            entry: entry_info(entry),
        })
    })
    .await
}

pub async fn list_dir(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = users::from_headers(&headers);
    unary(headers, body, |request: proto::ListDirRequest| async move {
        let path = users::resolve(user?, &request.path)?;
        // envd reads depth 0 as 1.
        let depth = request.depth.map_or(1, |depth| depth.0.max(1));
        if depth > MAX_LIST_DEPTH {
            return Err(RpcError::invalid(format!(
                "depth: at most {MAX_LIST_DEPTH}"
            )));
        }
        let core = &state.core;
        let root = core
            .stat_file(&target.owner, &target.sandbox_id, &path)
            .await
            .map_err(errors::rpc)?;
        if root.kind != FileKind::Dir {
            return Err(RpcError::invalid(format!(
                "{} is not a directory",
                root.path
            )));
        }
        let listing = core
            .list_files(&target.owner, &target.sandbox_id, &path, Some(depth))
            .await
            .map_err(errors::rpc)?;
        Ok(ListDirResponse {
            entries: listing.entries.into_iter().map(entry_info).collect(),
        })
    })
    .await
}

pub async fn remove(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = users::from_headers(&headers);
    unary(headers, body, |request: proto::PathRequest| async move {
        let path = users::resolve(user?, &request.path)?;
        state
            .core
            .remove_path(&target.owner, &target.sandbox_id, &path, true)
            .await
            .map_err(errors::rpc)?;
        Ok(proto::Empty {})
    })
    .await
}

/// Checks that `path` is a directory and starts watching it; returns the
/// watch and the directory's normalised path (event names are relative to it).
async fn open_watch(
    state: &EnvdState,
    target: &Target,
    path: &str,
    recursive: bool,
) -> Result<(FileWatch, String), RpcError> {
    let core = &state.core;
    let root = core
        .stat_file(&target.owner, &target.sandbox_id, path)
        .await
        .map_err(errors::rpc)?;
    if root.kind != FileKind::Dir {
        return Err(RpcError::invalid(format!(
            "{} is not a directory",
            root.path
        )));
    }
    let watch = core
        .watch_files(&target.owner, &target.sandbox_id, &root.path, recursive)
        .await
        .map_err(errors::rpc)?;
    Ok((watch, root.path))
}

/// A watch event as envd's `FilesystemEvent` (without its entry). Overflow
/// markers and unknown kinds have no envd equivalent and are dropped.
fn filesystem_event(root: &str, event: &WatchEvent) -> Option<FilesystemEvent> {
    let kind = match event.kind {
        WatchKind::Create => EventType::Create,
        WatchKind::Write => EventType::Write,
        WatchKind::Remove => EventType::Remove,
        WatchKind::Rename => EventType::Rename,
        WatchKind::Chmod => EventType::Chmod,
        WatchKind::Overflow | WatchKind::Unknown => {
            tracing::debug!(kind = ?event.kind, "a watch event envd cannot express was dropped");
            return None;
        }
    };
    let name = event
        .path
        .strip_prefix(root)
        .map(|rest| rest.trim_start_matches('/'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(event.path.as_str())
        .to_owned();
    Some(FilesystemEvent {
        name,
        kind,
        entry: None,
    })
}

/// Adds the entry to an event when asked for and the path still exists.
async fn with_entry(
    state: &EnvdState,
    target: &Target,
    include_entry: bool,
    mut event: FilesystemEvent,
    path: &str,
) -> FilesystemEvent {
    if include_entry && !matches!(event.kind, EventType::Remove | EventType::Rename) {
        if let Ok(entry) = state
            .core
            .stat_file(&target.owner, &target.sandbox_id, path)
            .await
        {
            event.entry = Some(entry_info(entry));
        }
    }
    event
}

pub async fn watch_dir(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let prepared = async {
        let deadline = connect::timeout(&headers)?.map(|timeout| Instant::now() + timeout);
        let keepalive = connect::keepalive_interval(&headers);
        let bytes = read_body(body).await?;
        let request: proto::WatchDirRequest = connect::stream_request(&headers, &bytes)?;
        let (_, path) = user_path(&headers, &request.path)?;
        let (watch, root) = open_watch(&state, &target, &path, request.recursive).await?;
        Ok::<_, RpcError>((watch, root, request.include_entry, deadline, keepalive))
    };
    match prepared.await {
        Ok((watch, root, include_entry, deadline, keepalive)) => {
            let (sender, response) = connect::stream_response();
            tokio::spawn(pump_watch(
                state,
                target,
                sender,
                WatchStream {
                    watch,
                    root,
                    include_entry,
                    deadline,
                    keepalive,
                },
            ));
            response
        }
        Err(error) => connect::stream_error(error),
    }
}

struct WatchStream {
    watch: FileWatch,
    root: String,
    include_entry: bool,
    deadline: Option<Instant>,
    keepalive: std::time::Duration,
}

async fn send(sender: &StreamSender, message: WatchDirResponse) -> Result<(), connect::ClientGone> {
    sender.send(&message).await
}

async fn pump_watch(
    state: Arc<EnvdState>,
    target: Target,
    sender: StreamSender,
    mut stream: WatchStream,
) {
    if send(&sender, WatchDirResponse::Start {}).await.is_err() {
        return;
    }
    let mut keepalive =
        tokio::time::interval_at(Instant::now() + stream.keepalive, stream.keepalive);
    loop {
        tokio::select! {
            () = sender.closed() => return,
            () = async {
                match stream.deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => {
                sender
                    .finish(Some(RpcError::new(Code::DeadlineExceeded, "the deadline passed")))
                    .await;
                return;
            }
            _ = keepalive.tick() => {
                if send(&sender, WatchDirResponse::Keepalive {}).await.is_err() {
                    return;
                }
            }
            batch = stream.watch.next() => match batch {
                Some(Ok(events)) => {
                    for raw in events {
                        let Some(event) = filesystem_event(&stream.root, &raw) else {
                            continue;
                        };
                        let event = with_entry(&state, &target, stream.include_entry, event, &raw.path).await;
                        if send(&sender, WatchDirResponse::Filesystem(Box::new(event))).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "a watch ended with an error");
                    sender
                        .finish(Some(RpcError::new(Code::Unavailable, "the watch ended: the sandbox or the directory went away")))
                        .await;
                    return;
                }
                None => {
                    sender.finish(None).await;
                    return;
                }
            },
        }
    }
}

pub async fn create_watcher(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = users::from_headers(&headers);
    unary(
        headers,
        body,
        |request: proto::WatchDirRequest| async move {
            let path = users::resolve(user?, &request.path)?;
            let (mut watch, root) = open_watch(&state, &target, &path, request.recursive).await?;
            let events: Arc<Mutex<VecDeque<FilesystemEvent>>> = Arc::default();
            let ended = Arc::new(AtomicBool::new(false));
            let include_entry = request.include_entry;
            let task = {
                let (state, target) = (Arc::clone(&state), target.clone());
                let (events, ended) = (Arc::clone(&events), Arc::clone(&ended));
                tokio::spawn(async move {
                    while let Some(Ok(batch)) = watch.next().await {
                        for raw in batch {
                            if let Some(event) = filesystem_event(&root, &raw) {
                                let event =
                                    with_entry(&state, &target, include_entry, event, &raw.path)
                                        .await;
                                push_event(&events, event);
                            }
                        }
                    }
                    ended.store(true, Ordering::Release);
                })
            };
            let id = format!("w{}", state.next_id());
            state
                .sandbox(&target.sandbox_id)
                .add_watcher(
                    id.clone(),
                    Watcher {
                        events,
                        ended,
                        task,
                    },
                )
                .map_err(|_| {
                    RpcError::new(
                        Code::ResourceExhausted,
                        format!(
                            "at most {} watchers per sandbox",
                            crate::state::MAX_WATCHERS
                        ),
                    )
                })?;
            Ok(CreateWatcherResponse { watcher_id: id })
        },
    )
    .await
}

pub async fn get_watcher_events(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(headers, body, |request: proto::WatcherRequest| async move {
        let sandbox = state.existing(&target.sandbox_id);
        match sandbox.and_then(|sandbox| sandbox.drain_watcher(&request.watcher_id)) {
            Some(Ok(events)) => Ok(WatcherEventsResponse { events }),
            Some(Err(())) => Err(RpcError::new(
                Code::FailedPrecondition,
                "the watcher stopped: the directory or the sandbox went away",
            )),
            None => Err(RpcError::new(Code::NotFound, "no such watcher")),
        }
    })
    .await
}

pub async fn remove_watcher(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary(headers, body, |request: proto::WatcherRequest| async move {
        let removed = state
            .existing(&target.sandbox_id)
            .is_some_and(|sandbox| sandbox.remove_watcher(&request.watcher_id));
        if removed {
            Ok(proto::Empty {})
        } else {
            Err(RpcError::new(Code::NotFound, "no such watcher"))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_events_are_named_relative_to_the_root() {
        let event = WatchEvent {
            kind: WatchKind::Create,
            path: "/home/user/dir/a.txt".into(),
            is_dir: false,
        };
        let mapped = filesystem_event("/home/user", &event).expect("mapped");
        assert_eq!(mapped.name, "dir/a.txt");
        assert_eq!(mapped.kind, EventType::Create);
        let overflow = WatchEvent {
            kind: WatchKind::Overflow,
            path: "/home/user".into(),
            is_dir: true,
        };
        assert!(filesystem_event("/home/user", &overflow).is_none());
    }

    #[test]
    fn entries_map_kinds_and_permissions() {
        let view = FileEntryView {
            name: "bin".into(),
            path: "/usr/bin".into(),
            kind: FileKind::Dir,
            size: 4096,
            mode: 0o755,
            modified_at: time::OffsetDateTime::UNIX_EPOCH,
            symlink_target: None,
        };
        let info = entry_info(view);
        assert_eq!(info.kind, FileType::Directory);
        assert_eq!(info.permissions, "drwxr-xr-x");
        assert_eq!(info.size, "4096");
        assert_eq!(info.modified_time, "1970-01-01T00:00:00Z");
    }
}
