//! The seam under the cgroup code: every cgroupfs access goes through
//! [`CgroupFs`], so the v1 and v2 logic is testable against an in-memory tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File operations on a cgroup filesystem.
pub trait CgroupFs: Send + Sync + Debug {
    /// Fails with `AlreadyExists` when the directory exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<String>;
    fn exists(&self, path: &Path) -> bool;
    /// Names of the subdirectories of `path`.
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
}

/// The real cgroupfs.
#[derive(Debug, Default)]
pub struct HostCgroupFs;

impl CgroupFs for HostCgroupFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: a missing control file is an error, not a new file.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(value.as_bytes())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }
}

/// An in-memory cgroup tree for unit tests: `create_dir` populates the control
/// files listed in `control_files`, and every write is logged in order.
#[derive(Debug, Default)]
pub struct FakeCgroupFs {
    state: Mutex<FakeState>,
    control_files: Vec<String>,
}

#[derive(Debug, Default)]
struct FakeState {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, String>,
    writes: Vec<(PathBuf, String)>,
}

impl FakeCgroupFs {
    /// A tree whose new directories get `control_files` (with empty content).
    pub fn new(control_files: &[&str]) -> Self {
        Self {
            state: Mutex::default(),
            control_files: control_files.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panicking test thread poisons the lock; the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a directory (and its parents) without logging.
    pub fn add_dir(&self, path: &Path) {
        let mut state = self.lock();
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
    }

    /// Sets a file's content without logging (what the kernel would show).
    pub fn set(&self, path: &Path, content: &str) {
        self.lock()
            .files
            .insert(path.to_path_buf(), content.to_owned());
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<(PathBuf, String)> {
        self.lock().writes.clone()
    }

    pub fn has_dir(&self, path: &Path) -> bool {
        self.lock().dirs.contains(path)
    }
}

impl CgroupFs for FakeCgroupFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if !state.dirs.contains(&parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        if state.dirs.contains(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        state.dirs.insert(path.to_path_buf());
        for name in &self.control_files {
            state.files.entry(path.join(name)).or_default();
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !state.dirs.remove(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        state.files.retain(|file, _| file.parent() != Some(path));
        Ok(())
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut state = self.lock();
        if !state.files.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        state.files.insert(path.to_path_buf(), value.to_owned());
        state.writes.push((path.to_path_buf(), value.to_owned()));
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let state = self.lock();
        state
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.dirs.contains(path) || state.files.contains_key(path)
    }

    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        Ok(state
            .dirs
            .iter()
            .filter(|dir| dir.parent() == Some(path))
            .filter_map(|dir| dir.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }
}
