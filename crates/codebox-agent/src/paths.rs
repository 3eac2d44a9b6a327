//! Where file requests resolve: the file root and the lexical normalisation of the
//! paths the host sends.
//!
//! A request's path is made absolute against the user's home, then `.` and `..` are
//! resolved lexically and never climb above `/`. The file worker then opens it with
//! `openat2(RESOLVE_IN_ROOT)` on the root, so symlinks resolve inside the root too.
//! Inside a sandbox the root is `/`, and the real confinement is the sandbox's own
//! mount namespace and user: this only makes the view consistent. In test mode the
//! root is the agent's working directory (the test's workspace) and home is its `/`,
//! so tests on the host can check that nothing resolves outside it.

use std::path::PathBuf;

use crate::plan::{Mode, SANDBOX_HOME};

/// The directory every file path resolves in, and the home inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRoot {
    /// Host-side path of the root (`/` in a sandbox).
    pub root: PathBuf,
    /// Absolute path inside the root that relative paths start from.
    pub home: String,
}

impl FileRoot {
    pub fn of(mode: &Mode) -> Self {
        match mode {
            Mode::Sandbox => Self {
                root: PathBuf::from("/"),
                home: SANDBOX_HOME.to_owned(),
            },
            Mode::Test { home } => Self {
                root: home.clone(),
                home: "/".to_owned(),
            },
        }
    }

    /// The absolute, normalised form of `path` inside the root.
    pub fn normalize(&self, path: &str) -> String {
        let joined = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{}/{path}", self.home)
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        format!("/{}", parts.join("/"))
    }
}

/// Splits a normalised path into its parent and last name; `None` for `/`.
pub fn split(normalized: &str) -> Option<(&str, &str)> {
    let (parent, name) = normalized.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// `parent` joined with `name` (both normalised).
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> FileRoot {
        FileRoot::of(&Mode::Sandbox)
    }

    #[test]
    fn relative_paths_start_at_home_and_dots_stay_inside() {
        let root = sandbox();
        assert_eq!(root.normalize("data.csv"), "/home/user/data.csv");
        assert_eq!(root.normalize("./a//b/"), "/home/user/a/b");
        assert_eq!(root.normalize("../../etc/shadow"), "/etc/shadow");
        assert_eq!(root.normalize("../../../../../etc/shadow"), "/etc/shadow");
        assert_eq!(root.normalize("/tmp/../.."), "/");
        assert_eq!(root.normalize("."), "/home/user");
    }

    #[test]
    fn test_mode_roots_at_the_workspace() {
        let root = FileRoot::of(&Mode::Test {
            home: PathBuf::from("/tmp/w"),
        });
        assert_eq!(root.root, PathBuf::from("/tmp/w"));
        assert_eq!(root.normalize("../../etc/shadow"), "/etc/shadow");
        assert_eq!(root.normalize("x"), "/x");
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split("/"), None);
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
