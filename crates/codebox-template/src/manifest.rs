//! The manifest written into every built template: what was built from what.
//! A template whose manifest is missing or unreadable is "not built"; one whose
//! fingerprint differs from the recipe's current inputs is "stale".

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the manifest inside a template directory. It is mounted into
/// sandboxes with the rest and therefore holds no host paths.
pub const MANIFEST_FILE: &str = ".codebox-manifest.json";
/// Bumped when the manifest layout changes incompatibly (old ones read as stale).
const FORMAT: u32 = 1;

/// What a recipe's output depends on; its hash decides staleness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeInputs {
    /// The interpreter the template is made for, e.g. `/usr/bin/python3`.
    pub interpreter_path: String,
    /// Its exact version, e.g. `3.11.2`.
    pub interpreter_version: String,
    /// The pinned input files (requirements, lock file) by name.
    pub files: BTreeMap<String, String>,
    /// Bumped by the recipe when its build steps change meaningfully.
    pub recipe_revision: u32,
}

impl RecipeInputs {
    /// Hex SHA-256 over everything the build depends on, in a stable order.
    pub fn fingerprint(&self, template: &str) -> String {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(&FORMAT.to_le_bytes());
        field(template.as_bytes());
        field(&self.recipe_revision.to_le_bytes());
        field(self.interpreter_path.as_bytes());
        field(self.interpreter_version.as_bytes());
        for (name, content) in &self.files {
            field(name.as_bytes());
            field(content.as_bytes());
        }
        hex(&hasher.finalize())
    }
}

/// The manifest of one built template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version of this file.
    pub format: u32,
    /// Template name.
    pub name: String,
    /// [`RecipeInputs::fingerprint`] of the inputs it was built from.
    pub fingerprint: String,
    /// The interpreter it was built for.
    pub interpreter_path: String,
    /// That interpreter's version.
    pub interpreter_version: String,
    /// Headline versions (`python`, `numpy`, `typescript`...).
    pub versions: BTreeMap<String, String>,
    /// Every installed package and its version.
    pub packages: BTreeMap<String, String>,
    /// Total size of the tree in bytes (regular files, not following symlinks).
    pub size_bytes: u64,
    /// RFC 3339 time the build finished.
    pub built_at: String,
    /// How long the build took, in seconds.
    pub build_seconds: f64,
}

impl Manifest {
    pub(crate) fn format_version() -> u32 {
        FORMAT
    }

    /// Reads `<dir>/.codebox-manifest.json`; `None` when absent, unreadable,
    /// invalid or of another format: all mean "not built".
    pub fn read(dir: &Path) -> Option<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read template manifest");
                return None;
            }
        };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) if manifest.format == FORMAT => Some(manifest),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "invalid template manifest");
                None
            }
        }
    }

    /// Writes the manifest into `dir` (a build directory, not yet visible).
    pub(crate) fn write(&self, dir: &Path) -> Result<(), ManifestWriteError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(ManifestWriteError::Encode)?;
        let path = dir.join(MANIFEST_FILE);
        fs::write(&path, bytes).map_err(|source| ManifestWriteError::Io { path, source })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestWriteError {
    #[error("cannot encode the manifest")]
    Encode(#[source] serde_json::Error),
    #[error("cannot write {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<ManifestWriteError> for crate::error::BuildFailure {
    fn from(error: ManifestWriteError) -> Self {
        match error {
            ManifestWriteError::Encode(source) => crate::error::BuildFailure::Manifest { source },
            ManifestWriteError::Io { path, source } => crate::error::BuildFailure::io(path, source),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> RecipeInputs {
        RecipeInputs {
            interpreter_path: "/usr/bin/python3".into(),
            interpreter_version: "3.11.2".into(),
            files: BTreeMap::from([("requirements.txt".into(), "numpy==2.4.6\n".into())]),
            recipe_revision: 1,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "python3".into(),
            fingerprint: inputs().fingerprint("python3"),
            interpreter_path: "/usr/bin/python3".into(),
            interpreter_version: "3.11.2".into(),
            versions: BTreeMap::from([("numpy".into(), "2.4.6".into())]),
            packages: BTreeMap::new(),
            size_bytes: 42,
            built_at: "2026-01-01T00:00:00Z".into(),
            build_seconds: 1.5,
        }
    }

    #[test]
    fn fingerprint_changes_with_every_input() {
        let base = inputs().fingerprint("python3");
        assert_eq!(base.len(), 64);
        assert_eq!(base, inputs().fingerprint("python3"));
        assert_ne!(base, inputs().fingerprint("node"));
        let mut changed = inputs();
        changed.interpreter_version = "3.11.9".into();
        assert_ne!(base, changed.fingerprint("python3"));
        let mut changed = inputs();
        changed
            .files
            .insert("requirements.txt".into(), "numpy==2.4.7\n".into());
        assert_ne!(base, changed.fingerprint("python3"));
        let mut changed = inputs();
        changed.recipe_revision = 2;
        assert_ne!(base, changed.fingerprint("python3"));
        let mut changed = inputs();
        changed.interpreter_path = "/usr/local/bin/python3".into();
        assert_ne!(base, changed.fingerprint("python3"));
    }

    #[test]
    fn fields_are_length_prefixed_so_boundaries_cannot_shift() {
        let mut a = inputs();
        a.files = BTreeMap::from([("ab".into(), "c".into())]);
        let mut b = inputs();
        b.files = BTreeMap::from([("a".into(), "bc".into())]);
        assert_ne!(a.fingerprint("x"), b.fingerprint("x"));
    }

    #[test]
    fn manifest_round_trips_and_bad_ones_read_as_absent() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(Manifest::read(dir.path()), None);
        manifest().write(dir.path()).expect("written");
        assert_eq!(Manifest::read(dir.path()), Some(manifest()));

        fs::write(dir.path().join(MANIFEST_FILE), b"{not json").expect("written");
        assert_eq!(Manifest::read(dir.path()), None);

        let mut other = manifest();
        other.format = FORMAT + 1;
        other.write(dir.path()).expect("written");
        assert_eq!(Manifest::read(dir.path()), None);
    }
}
