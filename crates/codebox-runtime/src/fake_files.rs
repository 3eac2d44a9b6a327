//! The in-memory file tree of [`crate::fake::FakeRuntime`] (feature `fake`): one
//! tree per sandbox with `/`, `/home` and `/home/user`, paths normalised like the
//! agent does (relative ones start at `/home/user`, `..` stops at `/`), and the
//! sandbox's `workspace_bytes` as its disk limit. For other crates' tests only.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::io::AsyncReadExt;

use tokio::sync::mpsc;

use crate::{
    FileDownload, FileEntry, FileErrorKind, FileKind, FileWatch, Listing, RuntimeError, UploadBody,
    WatchEvent, WatchKind, WriteOptions,
};

/// Largest chunk a fake download hands out (the agent's is 64 KiB too).
const CHUNK: usize = 64 << 10;

/// One sandbox's tree: absolute path -> node.
#[derive(Debug, Clone)]
pub(crate) struct FakeTree {
    nodes: BTreeMap<String, Node>,
    disk_limit: u64,
    watchers: Vec<Watcher>,
}

/// One watch: a directory, and where its changes go.
#[derive(Debug, Clone)]
struct Watcher {
    dir: String,
    recursive: bool,
    batches: mpsc::Sender<Result<Vec<WatchEvent>, RuntimeError>>,
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Vec<u8>),
}

fn refused(kind: FileErrorKind, path: &str) -> RuntimeError {
    RuntimeError::File {
        kind,
        detail: format!("{path}: {kind:?}"),
    }
}

/// The absolute, normalised form of `path`, or a validation error.
pub(crate) fn normalise(path: &str) -> Result<String, RuntimeError> {
    if path.is_empty() || path.len() > 4096 || path.contains('\0') {
        return Err(RuntimeError::InvalidRequest {
            detail: "a path is 1 to 4096 bytes without NUL".into(),
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/home/user/{path}")
    };
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    dir == "/" && path != "/" || path.starts_with(dir) && path[dir.len()..].starts_with('/')
}

impl FakeTree {
    pub(crate) fn new(disk_limit: u64) -> Self {
        let nodes = ["/", "/home", "/home/user"]
            .into_iter()
            .map(|path| (path.to_owned(), Node::Dir))
            .collect();
        Self {
            nodes,
            disk_limit,
            watchers: Vec::new(),
        }
    }

    fn entry(&self, path: &str) -> Result<FileEntry, RuntimeError> {
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| refused(FileErrorKind::NotFound, path))?;
        let (kind, size, mode) = match node {
            Node::Dir => (FileKind::Dir, 0, 0o755),
            Node::File(content) => (FileKind::File, content.len() as u64, 0o644),
        };
        Ok(FileEntry {
            name: path.rsplit('/').next().unwrap_or_default().to_owned(),
            path: path.to_owned(),
            kind,
            size,
            mode,
            modified_at: SystemTime::UNIX_EPOCH,
            symlink_target: None,
        })
    }

    /// Reports one change to the watchers of its directory.
    fn notify(&mut self, kind: WatchKind, path: &str, is_dir: bool) {
        self.watchers.retain(|watcher| !watcher.batches.is_closed());
        let event = WatchEvent {
            kind,
            path: path.to_owned(),
            is_dir,
        };
        for watcher in &self.watchers {
            let direct = parent(path) == watcher.dir;
            if direct || watcher.recursive && is_under(path, &watcher.dir) {
                // A fake: a watcher that does not keep up misses events.
                let _ = watcher.batches.try_send(Ok(vec![event.clone()]));
            }
        }
    }

    pub(crate) fn watch(&mut self, path: &str, recursive: bool) -> Result<FileWatch, RuntimeError> {
        let dir = normalise(path)?;
        match self.nodes.get(&dir) {
            Some(Node::Dir) => {}
            Some(Node::File(_)) => return Err(refused(FileErrorKind::NotADirectory, &dir)),
            None => return Err(refused(FileErrorKind::NotFound, &dir)),
        }
        let (batches, watch) = FileWatch::channel(64);
        self.watchers.push(Watcher {
            dir,
            recursive,
            batches,
        });
        Ok(watch)
    }

    pub(crate) fn stat(&self, path: &str) -> Result<FileEntry, RuntimeError> {
        self.entry(&normalise(path)?)
    }

    pub(crate) fn list(&self, path: &str, depth: u32) -> Result<Listing, RuntimeError> {
        let dir = normalise(path)?;
        match self.nodes.get(&dir) {
            None => return Err(refused(FileErrorKind::NotFound, &dir)),
            Some(Node::File(_)) => return Err(refused(FileErrorKind::NotADirectory, &dir)),
            Some(Node::Dir) => {}
        }
        let base = if dir == "/" {
            0
        } else {
            dir.matches('/').count()
        };
        let entries = self
            .nodes
            .keys()
            .filter(|p| is_under(p, &dir) && p.matches('/').count() - base <= depth as usize)
            .map(|p| self.entry(p))
            .collect::<Result<_, _>>()?;
        Ok(Listing {
            entries,
            truncated: false,
        })
    }

    pub(crate) fn make_dir(&mut self, path: &str, parents: bool) -> Result<(), RuntimeError> {
        let path = normalise(path)?;
        match self.nodes.get(&path) {
            Some(Node::Dir) if parents => return Ok(()),
            Some(_) => return Err(refused(FileErrorKind::AlreadyExists, &path)),
            None => {}
        }
        self.ensure_parent(&path, parents)?;
        self.nodes.insert(path.clone(), Node::Dir);
        self.notify(WatchKind::Create, &path, true);
        Ok(())
    }

    fn ensure_parent(&mut self, path: &str, create: bool) -> Result<(), RuntimeError> {
        let up = parent(path).to_owned();
        match self.nodes.get(&up) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(refused(FileErrorKind::NotADirectory, &up)),
            None if create => {
                self.ensure_parent(&up, true)?;
                self.nodes.insert(up, Node::Dir);
                Ok(())
            }
            None => Err(refused(FileErrorKind::NotFound, &up)),
        }
    }

    pub(crate) fn move_path(
        &mut self,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), RuntimeError> {
        let (from, to) = (normalise(from)?, normalise(to)?);
        self.entry(&from)?;
        if self.nodes.contains_key(&to) && !overwrite {
            return Err(refused(FileErrorKind::AlreadyExists, &to));
        }
        self.ensure_parent(&to, false)?;
        let moved: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| **p == from || is_under(p, &from))
            .cloned()
            .collect();
        let is_dir = matches!(self.nodes.get(&from), Some(Node::Dir));
        for old in moved {
            let node = self.nodes.remove(&old).expect("listed just above");
            self.nodes
                .insert(format!("{to}{}", &old[from.len()..]), node);
        }
        self.notify(WatchKind::Rename, &from, is_dir);
        self.notify(WatchKind::Rename, &to, is_dir);
        Ok(())
    }

    pub(crate) fn remove(&mut self, path: &str, recursive: bool) -> Result<(), RuntimeError> {
        let path = normalise(path)?;
        self.entry(&path)?;
        let children: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| is_under(p, &path))
            .cloned()
            .collect();
        if !children.is_empty() && !recursive {
            return Err(refused(FileErrorKind::DirectoryNotEmpty, &path));
        }
        for child in children {
            self.nodes.remove(&child);
        }
        let is_dir = matches!(self.nodes.remove(&path), Some(Node::Dir));
        self.notify(WatchKind::Remove, &path, is_dir);
        Ok(())
    }

    /// A download of a copy of the range, played by a task.
    pub(crate) fn read(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileDownload, RuntimeError> {
        let path = normalise(path)?;
        let content = match self.nodes.get(&path) {
            Some(Node::File(content)) => content,
            Some(Node::Dir) => return Err(refused(FileErrorKind::IsADirectory, &path)),
            None => return Err(refused(FileErrorKind::NotFound, &path)),
        };
        let size = content.len();
        let start = usize::try_from(offset).unwrap_or(size).min(size);
        let end = length
            .and_then(|length| usize::try_from(length).ok())
            .map_or(size, |length| start.saturating_add(length).min(size));
        let range = content[start..end].to_vec();
        let (tx, download) = FileDownload::channel(size as u64, range.len() as u64, 4);
        tokio::spawn(async move {
            for chunk in range.chunks(CHUNK) {
                if tx.send(Ok(chunk.to_vec())).await.is_err() {
                    return;
                }
            }
        });
        Ok(download)
    }

    /// Checks a write can start (the parent is created, the target is not a
    /// directory, and may be replaced).
    pub(crate) fn prepare_write(
        &mut self,
        path: &str,
        options: &WriteOptions,
    ) -> Result<String, RuntimeError> {
        let path = normalise(path)?;
        match self.nodes.get(&path) {
            Some(Node::Dir) => return Err(refused(FileErrorKind::IsADirectory, &path)),
            Some(Node::File(_)) if !options.overwrite => {
                return Err(refused(FileErrorKind::AlreadyExists, &path))
            }
            _ => {}
        }
        self.ensure_parent(&path, true)?;
        Ok(path)
    }

    /// Bytes stored, excluding `except` (the file about to be replaced).
    fn used(&self, except: &str) -> u64 {
        self.nodes
            .iter()
            .filter(|(path, _)| *path != except)
            .map(|(_, node)| match node {
                Node::File(content) => content.len() as u64,
                Node::Dir => 0,
            })
            .sum()
    }

    /// Stores a finished upload unless it overflows the disk limit.
    pub(crate) fn commit_write(
        &mut self,
        path: String,
        content: Vec<u8>,
    ) -> Result<u64, RuntimeError> {
        let room = self.disk_limit.saturating_sub(self.used(&path));
        if content.len() as u64 > room {
            return Err(refused(FileErrorKind::NoSpace, &path));
        }
        let written = content.len() as u64;
        let kind = if self.nodes.contains_key(&path) {
            WatchKind::Write
        } else {
            WatchKind::Create
        };
        self.nodes.insert(path.clone(), Node::File(content));
        self.notify(kind, &path, false);
        Ok(written)
    }
}

/// Reads an upload body up to `limit` bytes (one more is `TooLarge`).
pub(crate) async fn read_body(
    body: UploadBody,
    path: &str,
    limit: u64,
) -> Result<Vec<u8>, RuntimeError> {
    let mut content = Vec::new();
    body.take(limit.saturating_add(1))
        .read_to_end(&mut content)
        .await
        .map_err(|source| RuntimeError::Io {
            operation: "reading an upload body",
            source,
        })?;
    if content.len() as u64 > limit {
        return Err(refused(FileErrorKind::TooLarge, path));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_climb_above_the_root() {
        assert_eq!(
            normalise("../../etc/shadow").expect("valid in this test"),
            "/etc/shadow"
        );
        assert_eq!(
            normalise("a/./b").expect("valid in this test"),
            "/home/user/a/b"
        );
        assert!(normalise("a\0b").is_err());
    }

    #[test]
    fn a_tree_moves_and_removes_with_its_children() {
        let mut tree = FakeTree::new(1 << 20);
        tree.make_dir("d/e", true).expect("valid in this test");
        let path = tree
            .prepare_write("d/e/f", &WriteOptions::default())
            .expect("valid in this test");
        tree.commit_write(path, b"hi".to_vec())
            .expect("valid in this test");
        tree.move_path("d", "g", false).expect("valid in this test");
        assert_eq!(tree.stat("g/e/f").expect("valid in this test").size, 2);
        assert!(tree.remove("g", false).is_err());
        tree.remove("g", true).expect("valid in this test");
        assert!(tree.stat("g/e/f").is_err());
    }
}
