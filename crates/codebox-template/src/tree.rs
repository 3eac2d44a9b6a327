//! File-tree chores of a build: make the result readable by the sandbox user,
//! measure it, rewrite build-time paths, remove failed builds.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Scripts larger than this are not rewritten (console scripts are tiny).
const MAX_RELOCATED_FILE: u64 = 1 << 20;

/// Makes every file and directory under `root` readable (and directories and
/// executables traversable/executable) by everyone, strips setuid/setgid/sticky
/// and group/other write bits, and returns the total size of regular files.
/// The sandbox user is not the build user, and the build may run with a strict
/// umask. Symlinks are neither followed nor changed.
pub(crate) fn normalize_permissions(root: &Path) -> io::Result<u64> {
    let mut size = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = fs::symlink_metadata(&path)?;
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = normalized_mode(metadata.permissions().mode(), metadata.is_dir());
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        if metadata.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else if metadata.is_file() {
            size += metadata.len();
        }
    }
    Ok(size)
}

fn normalized_mode(mode: u32, is_dir: bool) -> u32 {
    let mut mode = mode & 0o755;
    mode |= 0o444;
    if is_dir || mode & 0o111 != 0 {
        mode |= 0o111;
    }
    mode
}

/// Replaces `from` by `to` in the regular files directly in `dir` (a venv's
/// `bin/`: console-script shebangs, activate scripts) and in `extra` files, so
/// they name the sandbox mount point instead of the temporary build directory.
pub(crate) fn relocate_text(
    dir: &Path,
    extra: &[&Path],
    from: &str,
    to: &str,
) -> io::Result<usize> {
    let mut changed = 0;
    let mut files: Vec<_> = extra.iter().map(|path| path.to_path_buf()).collect();
    for entry in fs::read_dir(dir)? {
        files.push(entry?.path());
    }
    for path in files {
        let metadata = fs::symlink_metadata(&path)?;
        if !metadata.is_file() || metadata.len() > MAX_RELOCATED_FILE {
            continue;
        }
        let bytes = fs::read(&path)?;
        if let Some(rewritten) = replace_bytes(&bytes, from.as_bytes(), to.as_bytes()) {
            fs::write(&path, rewritten)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    let mut found = false;
    while let Some(index) = rest.windows(from.len()).position(|window| window == from) {
        out.extend_from_slice(&rest[..index]);
        out.extend_from_slice(to);
        rest = &rest[index + from.len()..];
        found = true;
    }
    out.extend_from_slice(rest);
    found.then_some(out)
}

/// Removes `path` and everything under it; absent is fine.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn modes_become_world_readable_without_special_bits() {
        assert_eq!(normalized_mode(0o600, false), 0o644);
        assert_eq!(normalized_mode(0o700, true), 0o755);
        assert_eq!(normalized_mode(0o4755, false), 0o755);
        assert_eq!(normalized_mode(0o777, false), 0o755);
        assert_eq!(normalized_mode(0o1777, true), 0o755);
        assert_eq!(normalized_mode(0o500, false), 0o555);
    }

    #[test]
    fn normalize_fixes_the_tree_measures_files_and_leaves_symlinks_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("lib");
        fs::create_dir(&sub).expect("mkdir");
        fs::write(sub.join("a.py"), b"12345").expect("write");
        fs::set_permissions(sub.join("a.py"), fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).expect("chmod");
        let outside = tempfile::NamedTempFile::new().expect("temp file");
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o600)).expect("chmod");
        symlink(outside.path(), dir.path().join("link")).expect("symlink");

        let size = normalize_permissions(dir.path()).expect("normalized");
        assert_eq!(size, 5);
        let mode = |path: &Path| fs::metadata(path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode(&sub), 0o755);
        assert_eq!(mode(&sub.join("a.py")), 0o644);
        assert_eq!(
            mode(outside.path()),
            0o600,
            "a symlink target outside was changed"
        );
    }

    #[test]
    fn relocate_rewrites_build_paths_in_scripts_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("mkdir");
        fs::write(
            bin.join("ipython"),
            b"#!/data/t/python3.build-1/bin/python\nimport x\n",
        )
        .expect("write");
        fs::write(bin.join("other"), b"#!/bin/sh\n").expect("write");
        symlink("/usr/bin/python3", bin.join("python")).expect("symlink");
        let config = dir.path().join("pyvenv.cfg");
        fs::write(
            &config,
            b"command = /usr/bin/python3 -m venv /data/t/python3.build-1\n",
        )
        .expect("write");

        let changed = relocate_text(
            &bin,
            &[&config],
            "/data/t/python3.build-1",
            "/opt/codebox/python3",
        )
        .expect("relocated");
        assert_eq!(changed, 2);
        assert_eq!(
            fs::read_to_string(bin.join("ipython")).expect("read"),
            "#!/opt/codebox/python3/bin/python\nimport x\n"
        );
        assert_eq!(
            fs::read_to_string(bin.join("other")).expect("read"),
            "#!/bin/sh\n"
        );
        assert_eq!(
            fs::read_to_string(&config).expect("read"),
            "command = /usr/bin/python3 -m venv /opt/codebox/python3\n"
        );
        assert_eq!(
            fs::read_link(bin.join("python")).expect("link"),
            Path::new("/usr/bin/python3")
        );
    }

    #[test]
    fn replace_bytes_handles_repeats_and_absence() {
        assert_eq!(
            replace_bytes(b"aXbXc", b"X", b"YY"),
            Some(b"aYYbYYc".to_vec())
        );
        assert_eq!(replace_bytes(b"abc", b"X", b"Y"), None);
        assert_eq!(replace_bytes(b"abc", b"", b"Y"), None);
    }

    #[test]
    fn remove_tree_accepts_absent_paths() {
        let dir = tempfile::tempdir().expect("temp dir");
        remove_tree(&dir.path().join("absent")).expect("absent is fine");
        fs::create_dir_all(dir.path().join("x/y")).expect("mkdir");
        remove_tree(&dir.path().join("x")).expect("removed");
        assert!(!dir.path().join("x").exists());
    }
}
