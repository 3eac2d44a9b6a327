//! The default template: the host's `/usr`, `/lib*`, `/bin`, `/sbin` read-only
//! plus a generated minimal `/etc`, written once per runtime root; and the
//! runtimes (interpreters) it offers, detected once at start.
//!
//! Never part of a sandbox: the host's `/root`, `/home`, `/var`, `/work`, its
//! real `/etc` (shadow, credentials) or the service's data directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use codebox_types::RuntimeInfo;

use super::jail::{TemplateEntry, USER_ID};

/// Top-level host directories that make up the template, when present.
const TEMPLATE_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// Files copied from the host's `/etc` (when present): nothing secret, only
/// what programs need to run.
const COPIED_ETC_FILES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "localtime",
    "timezone",
    "mime.types",
    "protocols",
    "services",
    "os-release",
    "debian_version",
];
/// Directories copied (recursively, symlinks kept as symlinks).
const COPIED_ETC_DIRS: &[&str] = &["ssl", "ca-certificates", "alternatives", "ld.so.conf.d"];

/// The template entries found on this host.
pub fn host_template(host_root: &Path) -> Vec<TemplateEntry> {
    let mut entries = Vec::new();
    for name in TEMPLATE_DIRS {
        let path = host_root.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = fs::read_link(&path) {
                entries.push(TemplateEntry::Symlink {
                    name: (*name).to_owned(),
                    target,
                });
            }
        } else if meta.is_dir() {
            entries.push(TemplateEntry::Bind {
                name: (*name).to_owned(),
                source: path,
            });
        }
    }
    entries
}

/// Writes the sandbox `/etc` into `etc_dir` (replacing an older one).
pub fn write_etc(etc_dir: &Path, host_etc: &Path) -> io::Result<()> {
    if etc_dir.exists() {
        fs::remove_dir_all(etc_dir)?;
    }
    fs::create_dir_all(etc_dir)?;
    let generated = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 user:x:{USER_ID}:{USER_ID}:user:/home/user:/bin/bash\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\ntty:x:5:\nuser:x:{USER_ID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
        ("hostname", "sandbox\n".into()),
        ("resolv.conf", String::new()),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n".into(),
        ),
        ("shells", "/bin/sh\n/bin/bash\n".into()),
    ];
    for (name, content) in generated {
        fs::write(etc_dir.join(name), content)?;
    }
    for name in COPIED_ETC_FILES {
        copy_entry(&host_etc.join(name), &etc_dir.join(name))?;
    }
    for name in COPIED_ETC_DIRS {
        copy_entry(&host_etc.join(name), &etc_dir.join(name))?;
    }
    Ok(())
}

/// Copies a file, a symlink (as a symlink) or a directory tree; a missing
/// source is skipped. Private keys are never copied (`ssl/private`).
fn copy_entry(source: &Path, target: &Path) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(source) else {
        return Ok(());
    };
    if source.file_name().is_some_and(|n| n == "private") {
        return Ok(());
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(source)?, target)
    } else if meta.is_dir() {
        fs::create_dir_all(target)?;
        for entry in fs::read_dir(source)? {
            let entry = entry?;
            copy_entry(&entry.path(), &target.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        fs::copy(source, target).map(drop)
    } else {
        Ok(())
    }
}

/// A runtime candidate: canonical name, language, binary inside the template.
struct Candidate {
    name: &'static str,
    language: &'static str,
    binary: &'static str,
    extra_aliases: &'static [&'static str],
}

const CANDIDATES: &[Candidate] = &[
    Candidate {
        name: "python3",
        language: "python",
        binary: "usr/bin/python3",
        extra_aliases: &["python"],
    },
    Candidate {
        name: "node",
        language: "javascript",
        binary: "usr/bin/node",
        extra_aliases: &["nodejs", "javascript"],
    },
    Candidate {
        name: "bash",
        language: "bash",
        binary: "usr/bin/bash",
        extra_aliases: &["sh", "shell"],
    },
];

/// The interpreters the template offers, with their exact versions (each run
/// once with `--version`).
pub fn detect_runtimes(host_root: &Path) -> Vec<RuntimeInfo> {
    CANDIDATES
        .iter()
        .filter_map(|candidate| detect(host_root, candidate))
        .collect()
}

fn detect(host_root: &Path, candidate: &Candidate) -> Option<RuntimeInfo> {
    let binary: PathBuf = host_root.join(candidate.binary);
    let output = Command::new(&binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let version = parse_version(&text)?;
    let mut aliases: Vec<String> = candidate
        .extra_aliases
        .iter()
        .map(|a| (*a).into())
        .collect();
    aliases.extend(version_aliases(candidate.name, &version));
    Some(RuntimeInfo {
        name: candidate.name.into(),
        language: candidate.language.into(),
        version,
        aliases,
    })
}

/// The first `N.N[.N]` in a `--version` output ("Python 3.11.2", "v20.1.0",
/// "GNU bash, version 5.2.15(1)-release").
pub fn parse_version(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() >= 2 && parts.iter().all(|p| !p.is_empty())
        })
        .map(str::to_owned)
}

/// `python3.11` for python3 3.11.2; `node20` for node 20.1.0; `bash5`.
fn version_aliases(name: &str, version: &str) -> Vec<String> {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    match name {
        "python3" => vec![format!("python{major}.{minor}")],
        other => vec![format!("{other}{major}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("Python 3.11.2\n").as_deref(), Some("3.11.2"));
        assert_eq!(parse_version("v20.20.2\n").as_deref(), Some("20.20.2"));
        assert_eq!(
            parse_version("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)").as_deref(),
            Some("5.2.15")
        );
        assert_eq!(parse_version("no version here"), None);
    }

    #[test]
    fn aliases_follow_the_version() {
        assert_eq!(version_aliases("python3", "3.11.2"), ["python3.11"]);
        assert_eq!(version_aliases("node", "20.20.2"), ["node20"]);
    }

    #[test]
    fn generated_etc_has_the_user_and_no_secrets() {
        let host = tempfile::tempdir().expect("tempdir");
        let host_etc = host.path().join("etc");
        fs::create_dir_all(host_etc.join("ssl/private")).expect("mkdir");
        fs::create_dir_all(host_etc.join("ssl/certs")).expect("mkdir");
        fs::write(host_etc.join("ssl/private/key.pem"), "SECRET").expect("write");
        fs::write(host_etc.join("ssl/certs/ca.pem"), "CA").expect("write");
        fs::write(host_etc.join("shadow"), "root:SECRET").expect("write");
        fs::write(host_etc.join("ld.so.cache"), "cache").expect("write");
        let etc = host.path().join("out");
        write_etc(&etc, &host_etc).expect("write etc");
        let passwd = fs::read_to_string(etc.join("passwd")).expect("passwd");
        assert!(passwd.contains("user:x:1000:1000:user:/home/user:/bin/bash"));
        assert!(etc.join("ssl/certs/ca.pem").exists());
        assert!(etc.join("ld.so.cache").exists());
        assert!(!etc.join("ssl/private").exists());
        assert!(!etc.join("shadow").exists());
        // Rewriting replaces the old tree.
        write_etc(&etc, &host_etc).expect("rewrite");
    }

    #[test]
    fn template_keeps_symlinks_and_skips_the_rest() {
        let host = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(host.path().join("usr/bin")).expect("mkdir");
        fs::create_dir_all(host.path().join("root")).expect("mkdir");
        std::os::unix::fs::symlink("usr/bin", host.path().join("bin")).expect("symlink");
        let entries = host_template(host.path());
        assert_eq!(
            entries,
            [
                TemplateEntry::Bind {
                    name: "usr".into(),
                    source: host.path().join("usr")
                },
                TemplateEntry::Symlink {
                    name: "bin".into(),
                    target: "usr/bin".into()
                },
            ]
        );
    }
}
