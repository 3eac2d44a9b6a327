//! A watch, run by a file worker (the sandbox's user): inotify on a directory and,
//! when recursive, on every directory below it (new ones included), translated into
//! `FileEvents` batches of normalised paths.
//!
//! Bounded: at most `MAX_WATCHED_DIRS` kernel watches, and no queue of its own. When
//! the host reads slowly the agent stops reading this worker, the worker blocks on
//! its socket, the kernel's inotify queue fills, and an `overflow` event tells the
//! host that events were lost.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use codebox_protocol::{AgentMessage, WatchEvent, WatchKind, MAX_WATCHED_DIRS, WATCH_BATCH};
use codebox_sys::agent as sys;
use codebox_sys::Errno;

use crate::file_worker::{c_path, errno_failure, io_failure, link_lost, Link, Outcome, Worker};
use crate::paths::join;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;
/// Bytes of one inotify event before its name.
const EVENT_HEADER: usize = 16;

struct Watcher {
    inotify: File,
    /// Watch descriptor -> the directory's normalised path.
    dirs: HashMap<i32, String>,
    root_wd: i32,
    root: String,
    recursive: bool,
}

/// Watches `path` until the directory goes away (`FileDone`) or the agent kills the
/// worker.
pub fn watch(worker: &Worker<'_>, path: &str, recursive: bool, link: &mut Link) -> Outcome<()> {
    let root = worker.paths.normalize(path);
    let dir = worker.open(
        &root,
        libc::O_RDONLY | libc::O_DIRECTORY,
        "opening the directory",
    )?;
    let inotify = sys::inotify_init().map_err(|Errno(e)| errno_failure(e, "inotify"))?;
    let mut watcher = Watcher {
        inotify: File::from(inotify),
        dirs: HashMap::new(),
        root_wd: -1,
        root: root.clone(),
        recursive,
    };
    watcher.root_wd = watcher.add(dir.as_fd(), &root)?;
    if recursive {
        watcher.add_below(dir.as_fd(), &root);
    }
    // Neither an open descriptor nor the working directory may pin a watched
    // directory: its removal (and so the watch's end) would never be reported.
    drop(dir);
    worker.leave_directories()?;
    let id = link.id;
    link.send(&AgentMessage::Watching { id })
        .map_err(link_lost)?;
    watcher.run(worker, link)
}

impl Watcher {
    /// Adds a watch on the open directory `dir`, through its `/proc/self/fd` link (the
    /// directory is already resolved inside the root).
    fn add(&mut self, dir: BorrowedFd<'_>, path: &str) -> Outcome<i32> {
        let link = c_path(&format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        let wd = sys::inotify_add_watch(self.inotify.as_fd(), &link, MASK)
            .map_err(|Errno(e)| errno_failure(e, &format!("watching {path}")))?;
        self.dirs.insert(wd, path.to_owned());
        Ok(wd)
    }

    /// Watches every real directory below `dir` (never through a symlink), up to the
    /// cap; unreadable ones are skipped.
    fn add_below(&mut self, dir: BorrowedFd<'_>, path: &str) {
        if sys::fchdir(dir).is_err() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(".") else {
            return;
        };
        let names: Vec<_> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        for name in names {
            if self.dirs.len() >= MAX_WATCHED_DIRS {
                return;
            }
            let Ok(c) = CString::new(name.as_bytes()) else {
                continue;
            };
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let Ok(child) = sys::openat(dir, &c, flags, 0) else {
                continue;
            };
            let child_path = join(path, &name);
            if self.add(child.as_fd(), &child_path).is_ok() {
                self.add_below(child.as_fd(), &child_path);
            }
        }
    }

    /// A directory created under a recursive watch: watch it and what it holds.
    fn add_new(&mut self, worker: &Worker<'_>, path: &str) {
        if self.dirs.len() >= MAX_WATCHED_DIRS {
            return;
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let Ok(dir) = worker.open(path, flags, "opening") else {
            return;
        };
        if self.add(dir.as_fd(), path).is_ok() {
            self.add_below(dir.as_fd(), path);
        }
        drop(dir);
        // Best effort: at worst the working directory pins one directory.
        let _ = worker.leave_directories();
    }

    fn run(&mut self, worker: &Worker<'_>, link: &mut Link) -> Outcome<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match self.inotify.read(&mut buffer) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_failure(&error, "reading the watch")),
            };
            let (events, ended) = self.translate(worker, &buffer[..read]);
            for batch in events.chunks(WATCH_BATCH) {
                let id = link.id;
                let events = batch.to_vec();
                link.send(&AgentMessage::FileEvents { id, events })
                    .map_err(link_lost)?;
            }
            if ended {
                return link.done(0, false).map_err(link_lost);
            }
        }
    }

    /// The events of one read; `true` once the watched directory is gone.
    fn translate(&mut self, worker: &Worker<'_>, bytes: &[u8]) -> (Vec<WatchEvent>, bool) {
        let mut events: Vec<WatchEvent> = Vec::new();
        let mut ended = false;
        let mut offset = 0;
        while let Some(header) = bytes.get(offset..offset + EVENT_HEADER) {
            let field = |i: usize| {
                u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
            };
            let (wd, mask, len) = (field(0) as i32, field(1), field(3) as usize);
            let name_bytes = bytes
                .get(offset + EVENT_HEADER..offset + EVENT_HEADER + len)
                .unwrap_or_default();
            offset += EVENT_HEADER + len;
            let name = String::from_utf8_lossy(name_bytes)
                .trim_end_matches('\0')
                .to_owned();
            if mask & libc::IN_Q_OVERFLOW != 0 {
                events.push(event(WatchKind::Overflow, self.root.clone(), true));
                continue;
            }
            if mask & libc::IN_IGNORED != 0 {
                self.dirs.remove(&wd);
                ended |= wd == self.root_wd;
                continue;
            }
            let Some(dir) = self.dirs.get(&wd) else {
                continue;
            };
            let path = if name.is_empty() {
                dir.clone()
            } else {
                join(dir, &name)
            };
            let is_dir = mask & libc::IN_ISDIR != 0;
            let Some(kind) = kind_of(mask) else {
                continue;
            };
            if kind == WatchKind::Create && is_dir && self.recursive {
                self.add_new(worker, &path);
            }
            // A write is many MODIFY events and a CLOSE_WRITE: report it once per batch.
            let repeated = events
                .last()
                .is_some_and(|last| last.kind == kind && last.path == path);
            if !(kind == WatchKind::Write && repeated) {
                events.push(event(kind, path, is_dir));
            }
        }
        (events, ended)
    }
}

fn kind_of(mask: u32) -> Option<WatchKind> {
    Some(if mask & libc::IN_CREATE != 0 {
        WatchKind::Create
    } else if mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != 0 {
        WatchKind::Write
    } else if mask & (libc::IN_DELETE | libc::IN_DELETE_SELF) != 0 {
        WatchKind::Remove
    } else if mask & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
        WatchKind::Rename
    } else if mask & libc::IN_ATTRIB != 0 {
        WatchKind::Chmod
    } else {
        return None;
    })
}

fn event(kind: WatchKind, path: String, is_dir: bool) -> WatchEvent {
    WatchEvent { kind, path, is_dir }
}
