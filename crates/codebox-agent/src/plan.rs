//! Turns an [`ExecSpec`] into what the forked child needs: argv, environment, working
//! directory, the program paths to try, and whose identity to take.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;

use codebox_protocol::{Command, ExecSpec};

/// The sandbox's unprivileged user (`user` in the generated `/etc/passwd`).
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 1000;
pub const SANDBOX_HOME: &str = "/home/user";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SHELLS: [&str; 2] = ["/bin/bash", "/usr/bin/bash"];

/// How the agent runs user processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Inside a sandbox: user processes run as uid/gid 1000 with no capability.
    Sandbox,
    /// Tests on the host without a jail: user processes run as the agent's own user,
    /// with `home` (the agent's working directory) as their home.
    Test { home: PathBuf },
}

impl Mode {
    fn home(&self) -> String {
        match self {
            Mode::Sandbox => SANDBOX_HOME.to_owned(),
            Mode::Test { home } => home.to_string_lossy().into_owned(),
        }
    }
}

/// Everything the child does between fork and exec, prepared before the fork.
#[derive(Debug)]
pub struct ChildPlan {
    /// Paths tried in order with `execve`, as `execvp` would.
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: CString,
    /// `Some((uid, gid))` to drop to; `None` in test mode.
    pub identity: Option<(u32, u32)>,
    /// Make stdin (a terminal) the controlling terminal of the new session.
    pub controlling_terminal: bool,
}

/// The allowlisted base environment; the request's variables go over it.
fn base_env(home: &str, cwd: &str) -> BTreeMap<String, String> {
    [
        ("PATH", DEFAULT_PATH),
        ("HOME", home),
        ("USER", "user"),
        ("LOGNAME", "user"),
        ("SHELL", "/bin/bash"),
        ("LANG", "C.UTF-8"),
        ("TERM", "xterm-256color"),
        ("TZ", "UTC"),
        ("PWD", cwd),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// Builds the plan of a validated spec (no NUL byte anywhere, so the conversions to
/// `CString` cannot fail).
pub fn build(spec: &ExecSpec, mode: &Mode) -> ChildPlan {
    let home = mode.home();
    let cwd = spec.cwd.clone().unwrap_or_else(|| home.clone());
    let mut env = base_env(&home, &cwd);
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (argv, candidates) = match &spec.command {
        Command::Argv(argv) => {
            let path = env.get("PATH").map_or("", String::as_str);
            (argv.clone(), program_candidates(&argv[0], path))
        }
        Command::Shell(script) => (
            vec!["bash".to_owned(), "-c".to_owned(), script.clone()],
            SHELLS.iter().map(|shell| (*shell).to_owned()).collect(),
        ),
    };
    ChildPlan {
        candidates: candidates.into_iter().map(c_string).collect(),
        argv: argv.into_iter().map(c_string).collect(),
        env: env
            .into_iter()
            .map(|(name, value)| c_string(format!("{name}={value}")))
            .collect(),
        cwd: c_string(cwd),
        identity: match mode {
            Mode::Sandbox => Some((SANDBOX_UID, SANDBOX_GID)),
            Mode::Test { .. } => None,
        },
        controlling_terminal: false,
    }
}

/// The plan of a context's runner: `argv` (its program looked up in `PATH`), the
/// context's env over the base, and `extra`: defaults the context's env may override
/// (`MPLBACKEND`), except the runner's own `CODEBOX_RUNNER_*` settings, which win.
pub fn for_runner(
    argv: Vec<String>,
    env: &BTreeMap<String, String>,
    extra: &[(&str, &str)],
    cwd: Option<&str>,
    mode: &Mode,
) -> ChildPlan {
    let home = mode.home();
    let cwd = cwd.map_or_else(|| home.clone(), str::to_owned);
    let mut full_env = base_env(&home, &cwd);
    full_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (name, value) in extra {
        if name.starts_with("CODEBOX_RUNNER_") {
            full_env.insert((*name).to_owned(), (*value).to_owned());
        } else {
            full_env
                .entry((*name).to_owned())
                .or_insert_with(|| (*value).to_owned());
        }
    }
    let path = full_env.get("PATH").map_or("", String::as_str);
    let candidates = program_candidates(&argv[0], path);
    ChildPlan {
        candidates: candidates.into_iter().map(c_string).collect(),
        argv: argv.into_iter().map(c_string).collect(),
        env: full_env
            .into_iter()
            .map(|(name, value)| c_string(format!("{name}={value}")))
            .collect(),
        cwd: c_string(cwd),
        identity: match mode {
            Mode::Sandbox => Some((SANDBOX_UID, SANDBOX_GID)),
            Mode::Test { .. } => None,
        },
        controlling_terminal: false,
    }
}

/// `execvp`'s search: a name with a `/` is used as is, otherwise each `PATH` entry
/// (an empty entry is the working directory).
fn program_candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                program.to_owned()
            } else {
                format!("{}/{program}", dir.trim_end_matches('/'))
            }
        })
        .collect()
}

fn c_string(value: String) -> CString {
    CString::new(value).expect("validated: no NUL byte in argv, env or cwd")
}

#[cfg(test)]
mod tests {
    use codebox_protocol::StdinMode;

    use super::*;

    fn spec(command: Command) -> ExecSpec {
        ExecSpec {
            id: 1,
            command,
            env: BTreeMap::from([("HOME".to_owned(), "/elsewhere".to_owned())]),
            cwd: None,
            stdin: StdinMode::Null,
            timeout_ms: 1000,
            output_limit: 10,
        }
    }

    #[test]
    fn program_search_follows_path() {
        assert_eq!(program_candidates("./x", "/bin"), vec!["./x"]);
        assert_eq!(
            program_candidates("ls", "/usr/bin/:/bin::"),
            vec!["/usr/bin/ls", "/bin/ls", "ls", "ls"]
        );
    }

    #[test]
    fn sandbox_plan_drops_to_user_and_request_env_wins() {
        let plan = build(&spec(Command::Shell("true".into())), &Mode::Sandbox);
        assert_eq!(plan.identity, Some((1000, 1000)));
        assert_eq!(plan.cwd.to_str(), Ok("/home/user"));
        assert_eq!(plan.argv[0].to_str(), Ok("bash"));
        let env: Vec<_> = plan.env.iter().map(|e| e.to_str().expect("utf8")).collect();
        assert!(env.contains(&"HOME=/elsewhere"));
        assert!(env.contains(&"PWD=/home/user"));
        assert!(env.contains(&"LANG=C.UTF-8"));
    }

    #[test]
    fn test_mode_keeps_identity_and_uses_its_home() {
        let mode = Mode::Test {
            home: PathBuf::from("/tmp/x"),
        };
        let plan = build(&spec(Command::Argv(vec!["ls".into()])), &mode);
        assert_eq!(plan.identity, None);
        assert_eq!(plan.cwd.to_str(), Ok("/tmp/x"));
        assert!(plan.candidates.iter().any(|c| c.to_str() == Ok("/bin/ls")));
    }
}
