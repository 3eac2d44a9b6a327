//! The file worker: a process forked by the agent for one file operation, which drops
//! to the sandbox's user (uid/gid 1000, no capability, `no_new_privs`, not dumpable)
//! and then does the operation with plain blocking syscalls, talking frames over a
//! socket to the agent. So the user's own permissions apply, nothing a file does (a
//! FIFO, a slow disk) can block the agent's event loop, and a worker stuck in the
//! kernel is just killed.
//!
//! Every path is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on the
//! file root (see `paths`); the last component of a stat, listing entry, remove or
//! move is never followed. Reads open with `O_NONBLOCK | O_NOCTTY` and check `fstat`:
//! FIFOs, sockets and devices are refused (opening a FIFO that way never waits).
//! Writes go to a temporary file next to the target, renamed over it at the end.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::UNIX_EPOCH;

use codebox_protocol::{
    decode_frame, encode_control, encode_data, read_frame, AgentMessage, ErrorCode, FileEntry,
    FileKind, Frame, HostMessage, ReadSpec, RequestId, Stream, WriteSpec, LIST_BATCH,
    MAX_DATA_CHUNK, MAX_LIST_ENTRIES,
};
use codebox_sys::agent::{self as sys, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use codebox_sys::Errno;

use crate::paths::{join, split, FileRoot};
use crate::plan::{Mode, SANDBOX_GID, SANDBOX_UID};

/// A failed operation: the error code and text sent to the host.
#[derive(Debug)]
pub(crate) struct Failure {
    code: ErrorCode,
    message: String,
}

pub(crate) type Outcome<T> = Result<T, Failure>;

pub(crate) fn failure(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// The error of a failed syscall on `what`, by errno.
pub(crate) fn errno_failure(errno: i32, what: &str) -> Failure {
    let code = match errno {
        libc::ENOENT => ErrorCode::NotFound,
        libc::EACCES | libc::EPERM | libc::EROFS => ErrorCode::PermissionDenied,
        libc::EEXIST => ErrorCode::AlreadyExists,
        libc::ENOTDIR => ErrorCode::NotADirectory,
        libc::EISDIR => ErrorCode::IsADirectory,
        libc::ENOTEMPTY => ErrorCode::DirectoryNotEmpty,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => ErrorCode::NoSpace,
        libc::ENXIO | libc::ENODEV => ErrorCode::NotRegularFile,
        _ => ErrorCode::FileError,
    };
    let cause = io::Error::from_raw_os_error(errno);
    failure(code, format!("{what}: {cause}"))
}

pub(crate) fn io_failure(error: &io::Error, what: &str) -> Failure {
    errno_failure(error.raw_os_error().unwrap_or(libc::EIO), what)
}

pub(crate) fn c_path(path: &str) -> Outcome<CString> {
    CString::new(path).map_err(|_| failure(ErrorCode::InvalidRequest, "a NUL byte in a path"))
}

/// The worker's side of its socket to the agent (blocking).
pub(crate) struct Link {
    socket: File,
    pub(crate) id: RequestId,
}

impl Link {
    pub(crate) fn send(&mut self, message: &AgentMessage) -> io::Result<()> {
        let mut frame = Vec::new();
        encode_control(message, &mut frame).map_err(io::Error::other)?;
        self.socket.write_all(&frame)
    }

    fn send_data(&mut self, data: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(data.len() + 16);
        encode_data(self.id, Stream::File, data, &mut frame);
        self.socket.write_all(&frame)
    }

    pub(crate) fn done(&mut self, bytes: u64, truncated: bool) -> io::Result<()> {
        let id = self.id;
        self.send(&AgentMessage::FileDone {
            id,
            bytes,
            truncated,
        })
    }
}

/// Runs in the freshly forked worker; never returns. `socket` is its end of the link.
pub fn run(
    request: &HostMessage,
    socket: OwnedFd,
    agent_pid: u32,
    root: &FileRoot,
    mode: &Mode,
) -> ! {
    let code = match prepare(&socket, agent_pid, mode) {
        Ok(()) => serve(request, socket, root),
        Err(errno) => {
            crate::log(&format!("file worker set-up failed: {errno}"));
            1
        }
    };
    sys::exit_now(code)
}

/// Closes everything inherited from the agent but the link and stdio, dies with the
/// agent, and becomes the sandbox's user.
fn prepare(socket: &OwnedFd, agent_pid: u32, mode: &Mode) -> Result<(), Errno> {
    sys::set_parent_death_signal(libc::SIGKILL)?;
    if std::os::unix::process::parent_id() != agent_pid {
        // The agent died before the death signal was armed.
        return Err(Errno(libc::ESRCH));
    }
    sys::dup_onto(socket.as_fd(), 3)?;
    sys::close_descriptors_from(4)?;
    crate::prefer_for_oom_kill()?;
    if matches!(mode, Mode::Sandbox) {
        sys::drop_capability_bounds()?;
        sys::become_user(SANDBOX_UID, SANDBOX_GID)?;
        sys::clear_capability_sets()?;
    }
    sys::set_no_new_privs()?;
    sys::set_not_dumpable()?;
    sys::set_umask(0o022);
    Ok(())
}

fn serve(request: &HostMessage, original: OwnedFd, root: &FileRoot) -> i32 {
    // The original number was closed by close_range (or is 3 itself, taken below):
    // forget it without closing.
    std::mem::forget(original);
    let Ok(socket) = sys::take_inherited_fd(3) else {
        return 1;
    };
    let id = request_id(request);
    let mut link = Link {
        socket: File::from(socket),
        id,
    };
    let outcome = File::open(&root.root)
        .map_err(|error| io_failure(&error, "opening the file root"))
        .and_then(|root_dir| {
            let worker = Worker {
                root: root_dir,
                paths: root,
            };
            worker.perform(request, &mut link)
        });
    let sent = match outcome {
        Ok(()) => Ok(()),
        Err(Failure { code, message }) => link.send(&AgentMessage::Error {
            id: Some(id),
            code,
            message,
        }),
    };
    i32::from(sent.is_err())
}

fn request_id(request: &HostMessage) -> RequestId {
    match request {
        HostMessage::StatPath { id, .. }
        | HostMessage::ListDir { id, .. }
        | HostMessage::MakeDir { id, .. }
        | HostMessage::MovePath { id, .. }
        | HostMessage::RemovePath { id, .. }
        | HostMessage::WatchPath { id, .. } => *id,
        HostMessage::ReadFile(spec) => spec.id,
        HostMessage::WriteFile(spec) => spec.id,
        _ => 0,
    }
}

/// A lost link means the agent cancelled the operation: stop quietly.
pub(crate) fn link_lost(_: io::Error) -> Failure {
    failure(ErrorCode::FileError, "the link to the agent is gone")
}

pub(crate) struct Worker<'a> {
    root: File,
    pub(crate) paths: &'a FileRoot,
}

impl Worker<'_> {
    fn perform(&self, request: &HostMessage, link: &mut Link) -> Outcome<()> {
        match request {
            HostMessage::StatPath { path, .. } => {
                let entry = self.stat(&self.paths.normalize(path))?;
                let id = link.id;
                link.send(&AgentMessage::PathStat { id, entry })
                    .map_err(link_lost)
            }
            HostMessage::ListDir { path, depth, .. } => self.list(path, *depth, link),
            HostMessage::MakeDir { path, parents, .. } => {
                self.make_dir(&self.paths.normalize(path), *parents)?;
                link.done(0, false).map_err(link_lost)
            }
            HostMessage::MovePath {
                from,
                to,
                overwrite,
                ..
            } => {
                self.rename(from, to, *overwrite)?;
                link.done(0, false).map_err(link_lost)
            }
            HostMessage::RemovePath {
                path, recursive, ..
            } => {
                self.remove(&self.paths.normalize(path), *recursive)?;
                link.done(0, false).map_err(link_lost)
            }
            HostMessage::ReadFile(spec) => self.read(spec, link),
            HostMessage::WatchPath {
                path, recursive, ..
            } => crate::watch::watch(self, path, *recursive, link),
            HostMessage::WriteFile(spec) => self.write(spec, link),
            _ => Err(failure(ErrorCode::InvalidRequest, "not a file request")),
        }
    }

    /// Makes the file root the working directory again (after a walk changed it).
    pub(crate) fn leave_directories(&self) -> Outcome<()> {
        sys::fchdir(self.root.as_fd()).map_err(|Errno(e)| errno_failure(e, "the file root"))
    }

    /// Opens a normalised path in the root (symlinks followed, inside the root).
    pub(crate) fn open(&self, path: &str, flags: i32, what: &str) -> Outcome<OwnedFd> {
        let c = c_path(path)?;
        let resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        sys::openat2(self.root.as_fd(), &c, flags, 0, resolve)
            .map_err(|Errno(errno)| errno_failure(errno, &format!("{what} {path}")))
    }

    fn open_dir_path(&self, path: &str) -> Outcome<OwnedFd> {
        self.open(
            path,
            libc::O_PATH | libc::O_DIRECTORY,
            "opening the directory",
        )
    }

    /// The parent directory (opened) and last name of a normalised path.
    fn parent_of<'p>(&self, path: &'p str) -> Outcome<(OwnedFd, &'p str)> {
        let (parent, name) =
            split(path).ok_or_else(|| failure(ErrorCode::InvalidRequest, "the root itself"))?;
        Ok((self.open_dir_path(parent)?, name))
    }

    fn stat(&self, path: &str) -> Outcome<FileEntry> {
        match split(path) {
            None => {
                let metadata = self.root.metadata().map_err(|e| io_failure(&e, path))?;
                Ok(entry("/".to_owned(), path.to_owned(), &metadata, None))
            }
            Some(_) => {
                let (parent, name) = self.parent_of(path)?;
                sys::fchdir(parent.as_fd()).map_err(|Errno(e)| errno_failure(e, path))?;
                entry_in_cwd(name, path.to_owned())
            }
        }
    }

    fn list(&self, path: &str, depth: u32, link: &mut Link) -> Outcome<()> {
        let path = self.paths.normalize(path);
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let dir = self.open(&path, flags, "opening the directory")?;
        let mut listing = Listing {
            batch: Vec::with_capacity(LIST_BATCH),
            count: 0,
            truncated: false,
        };
        listing.walk(dir.as_fd(), &path, depth, link)?;
        listing.flush(link)?;
        link.done(0, listing.truncated).map_err(link_lost)
    }

    fn make_dir(&self, path: &str, parents: bool) -> Outcome<()> {
        if parents {
            return self.make_dirs(path);
        }
        let (parent, name) = self.parent_of(path)?;
        let c = c_path(name)?;
        sys::mkdirat(parent.as_fd(), &c, 0o755).map_err(|Errno(e)| errno_failure(e, path))
    }

    /// `mkdir -p`: each missing component is created in its parent, opened inside the
    /// root (so a symlinked component resolves inside the root too).
    fn make_dirs(&self, path: &str) -> Outcome<()> {
        let mut current = String::from("/");
        let mut parent = self.open_dir_path("/")?;
        for name in path.split('/').filter(|part| !part.is_empty()) {
            let c = c_path(name)?;
            current = join(&current, name);
            match sys::mkdirat(parent.as_fd(), &c, 0o755) {
                Ok(()) | Err(Errno(libc::EEXIST)) => {}
                Err(Errno(errno)) => return Err(errno_failure(errno, &current)),
            }
            parent = self.open_dir_path(&current)?;
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str, overwrite: bool) -> Outcome<()> {
        let from = self.paths.normalize(from);
        let to = self.paths.normalize(to);
        let (from_dir, from_name) = self.parent_of(&from)?;
        let (to_dir, to_name) = self.parent_of(&to)?;
        let (from_c, to_c) = (c_path(from_name)?, c_path(to_name)?);
        sys::renameat(from_dir.as_fd(), &from_c, to_dir.as_fd(), &to_c, !overwrite)
            .map_err(|Errno(e)| errno_failure(e, &format!("moving {from} to {to}")))
    }

    fn remove(&self, path: &str, recursive: bool) -> Outcome<()> {
        let (parent, name) = self.parent_of(path)?;
        sys::fchdir(parent.as_fd()).map_err(|Errno(e)| errno_failure(e, path))?;
        let metadata = std::fs::symlink_metadata(name).map_err(|e| io_failure(&e, path))?;
        let c = c_path(name)?;
        if !metadata.is_dir() {
            return sys::unlinkat(parent.as_fd(), &c, false)
                .map_err(|Errno(e)| errno_failure(e, path));
        }
        if recursive {
            // std's remove_dir_all opens each level with O_NOFOLLOW relative to its
            // parent: a symlink swapped in cannot redirect it (CVE-2022-21658).
            return std::fs::remove_dir_all(name).map_err(|e| io_failure(&e, path));
        }
        sys::unlinkat(parent.as_fd(), &c, true).map_err(|Errno(e)| errno_failure(e, path))
    }

    fn read(&self, spec: &ReadSpec, link: &mut Link) -> Outcome<()> {
        let path = self.paths.normalize(&spec.path);
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let file = File::from(self.open(&path, flags, "opening")?);
        let metadata = file.metadata().map_err(|e| io_failure(&e, &path))?;
        check_regular(&metadata, &path)?;
        refuse_kernel_file(&file, &path)?;
        let size = metadata.len();
        let start = spec.offset.min(size);
        let length = spec.length.unwrap_or(u64::MAX).min(size - start);
        let id = link.id;
        link.send(&AgentMessage::FileReadStarted { id, size, length })
            .map_err(link_lost)?;
        let mut buffer = vec![0u8; MAX_DATA_CHUNK];
        let mut sent = 0u64;
        while sent < length {
            let want = usize::try_from(length - sent).map_or(buffer.len(), |n| n.min(buffer.len()));
            let read = match file.read_at(&mut buffer[..want], start + sent) {
                Ok(0) => {
                    return Err(failure(
                        ErrorCode::FileError,
                        format!("{path} shrank while it was read"),
                    ))
                }
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_failure(&error, &path)),
            };
            link.send_data(&buffer[..read]).map_err(link_lost)?;
            sent += read as u64;
        }
        link.done(sent, false).map_err(link_lost)
    }

    fn write(&self, spec: &WriteSpec, link: &mut Link) -> Outcome<()> {
        let path = self.paths.normalize(&spec.path);
        let (parent_path, name) =
            split(&path).ok_or_else(|| failure(ErrorCode::IsADirectory, "the root itself"))?;
        self.make_dirs(parent_path)?;
        let parent = self.open_dir_path(parent_path)?;
        refuse_special_target(parent.as_fd(), name, &path)?;
        let temp_name = format!(".codebox-upload-{}", std::process::id());
        let temp_c = c_path(&temp_name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let file = sys::openat(parent.as_fd(), &temp_c, flags, 0o600)
            .map_err(|Errno(e)| errno_failure(e, &format!("creating a file in {parent_path}")))?;
        let mut upload = Upload {
            file: File::from(file),
            dir: parent.as_fd(),
            temp: temp_c,
            committed: false,
        };
        let written = upload.receive(spec, link, &path)?;
        let mode = spec.mode.unwrap_or(0o644);
        upload
            .file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_failure(&e, &path))?;
        upload.commit(name, spec.overwrite, &path)?;
        link.done(written, false).map_err(link_lost)
    }
}

/// A write in progress: its temporary file is removed unless committed.
struct Upload<'a> {
    file: File,
    dir: BorrowedFd<'a>,
    temp: CString,
    committed: bool,
}

impl Upload<'_> {
    /// Copies `file` data frames into the temporary file until the end marker.
    fn receive(&mut self, spec: &WriteSpec, link: &mut Link, path: &str) -> Outcome<u64> {
        let mut written = 0u64;
        loop {
            let body = read_frame(&mut link.socket)
                .map_err(link_lost)?
                .ok_or_else(|| failure(ErrorCode::FileError, "the upload was cancelled"))?;
            match decode_frame::<HostMessage>(&body) {
                Ok(Frame::Data {
                    stream: Stream::File,
                    data,
                    ..
                }) => {
                    if written + data.len() as u64 > spec.limit {
                        let text = format!("the upload is over its cap of {} bytes", spec.limit);
                        return Err(failure(ErrorCode::TooLarge, text));
                    }
                    self.file
                        .write_all(&data)
                        .map_err(|e| io_failure(&e, path))?;
                    written += data.len() as u64;
                }
                Ok(Frame::Control(HostMessage::CloseStdin { .. })) => return Ok(written),
                _ => return Err(failure(ErrorCode::BadMessage, "unexpected upload frame")),
            }
        }
    }

    fn commit(&mut self, name: &str, overwrite: bool, path: &str) -> Outcome<()> {
        let target = c_path(name)?;
        sys::renameat(self.dir, &self.temp, self.dir, &target, !overwrite)
            .map_err(|Errno(e)| errno_failure(e, path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = sys::unlinkat(self.dir, &self.temp, false);
        }
    }
}

/// A write replaces a regular file or a symlink (the link itself, never what it
/// points at), or creates one; a directory, FIFO, socket or device is refused.
fn refuse_special_target(parent: BorrowedFd<'_>, name: &str, path: &str) -> Outcome<()> {
    sys::fchdir(parent).map_err(|Errno(e)| errno_failure(e, path))?;
    match std::fs::symlink_metadata(name) {
        Ok(metadata) if metadata.file_type().is_symlink() => Ok(()),
        Ok(metadata) => check_regular(&metadata, path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_failure(&error, path)),
    }
}

/// Refuses `/proc` and `/sys` files. They look regular, but the worker's own
/// `/proc/self/{environ,mem,...}` are the agent's (the worker is its fork, and a
/// process may always read itself): serving them would hand the user what the kernel
/// denies them at `/proc/1/...`.
fn refuse_kernel_file(file: &File, path: &str) -> Outcome<()> {
    let kind = sys::filesystem_type(file.as_fd()).map_err(|Errno(e)| errno_failure(e, path))?;
    if kind == sys::PROC_SUPER_MAGIC || kind == sys::SYSFS_MAGIC {
        let text = format!("{path} is a kernel interface file, not served");
        return Err(failure(ErrorCode::NotRegularFile, text));
    }
    Ok(())
}

fn check_regular(metadata: &std::fs::Metadata, path: &str) -> Outcome<()> {
    if metadata.is_dir() {
        return Err(failure(
            ErrorCode::IsADirectory,
            format!("{path} is a directory"),
        ));
    }
    if !metadata.is_file() {
        let text = format!("{path} is not a regular file (FIFO, socket or device)");
        return Err(failure(ErrorCode::NotRegularFile, text));
    }
    Ok(())
}

/// A listing being sent in batches.
struct Listing {
    batch: Vec<FileEntry>,
    count: usize,
    truncated: bool,
}

impl Listing {
    /// Lists `dir` (at normalised `path`), descending `depth - 1` more levels into
    /// real directories (never through a symlink).
    fn walk(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &str,
        depth: u32,
        link: &mut Link,
    ) -> Outcome<()> {
        sys::fchdir(dir).map_err(|Errno(e)| errno_failure(e, path))?;
        let mut names: Vec<_> = std::fs::read_dir(".")
            .map_err(|e| io_failure(&e, path))?
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            if self.count >= MAX_LIST_ENTRIES {
                self.truncated = true;
                return Ok(());
            }
            let name_text = name.to_string_lossy().into_owned();
            let child_path = join(path, &name_text);
            // Gone since the readdir, or unreadable: skip it.
            let Ok(entry) = entry_in_cwd(&name_text, child_path.clone()) else {
                continue;
            };
            if entry.kind == FileKind::Dir && depth > 1 {
                subdirs.push((name_text, child_path));
            }
            self.batch.push(entry);
            self.count += 1;
            if self.batch.len() >= LIST_BATCH {
                self.flush(link)?;
            }
        }
        for (name, child_path) in subdirs {
            let Ok(c) = c_path(&name) else { continue };
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            // Replaced by a symlink or removed meanwhile: skip it.
            let Ok(child) = sys::openat(dir, &c, flags, 0) else {
                continue;
            };
            self.walk(child.as_fd(), &child_path, depth - 1, link)?;
        }
        Ok(())
    }

    fn flush(&mut self, link: &mut Link) -> Outcome<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.batch);
        let id = link.id;
        link.send(&AgentMessage::DirEntries { id, entries })
            .map_err(link_lost)
    }
}

/// The entry of `name` in the working directory (not followed if a symlink).
fn entry_in_cwd(name: &str, path: String) -> Outcome<FileEntry> {
    let metadata = std::fs::symlink_metadata(name).map_err(|e| io_failure(&e, &path))?;
    let target = if metadata.file_type().is_symlink() {
        std::fs::read_link(name)
            .ok()
            .map(|target| target.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(entry(name.to_owned(), path, &metadata, target))
}

fn entry(
    name: String,
    path: String,
    metadata: &std::fs::Metadata,
    symlink_target: Option<String>,
) -> FileEntry {
    let file_type = metadata.file_type();
    let kind = if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let modified_ms = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    FileEntry {
        name,
        path,
        kind,
        size: metadata.size(),
        mode: metadata.mode() & 0o7777,
        modified_ms,
        symlink_target,
    }
}

/// The request's id.
pub fn id_of(message: &HostMessage) -> RequestId {
    request_id(message)
}
