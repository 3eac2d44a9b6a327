//! What the runtime needs to put templates into a sandbox: read-only bind mounts
//! and environment variables. The runtime owns the mounting; this module only
//! describes it.

use std::path::PathBuf;

/// The sandbox-side environment one template contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateEnvironment {
    /// Directories to put in front of the sandbox's `PATH`, in order.
    pub path_prefix: Vec<String>,
    /// Variables to set (never `PATH`).
    pub variables: Vec<(String, String)>,
}

/// One read-only bind mount: host directory -> mount point inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateMount {
    /// The built template on the host (`<data_dir>/templates/<name>`).
    pub host_path: PathBuf,
    /// Where it appears in the sandbox (`/opt/codebox/<name>`). Always mount it
    /// read-only, `nosuid,nodev`.
    pub sandbox_path: PathBuf,
}

/// Everything the runtime adds to a sandbox for the templates that are built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxEnvironment {
    /// Bind mounts to create (read-only).
    pub mounts: Vec<TemplateMount>,
    /// `PATH` entries to put in front of the base `PATH`.
    pub path_prefix: Vec<String>,
    /// Variables to set.
    pub variables: Vec<(String, String)>,
}

impl SandboxEnvironment {
    pub(crate) fn add(&mut self, mount: TemplateMount, environment: TemplateEnvironment) {
        self.mounts.push(mount);
        self.path_prefix.extend(environment.path_prefix);
        self.variables.extend(environment.variables);
    }

    /// The sandbox's `PATH`: the templates' prefixes, then `base`
    /// (e.g. `/usr/local/bin:/usr/bin:/bin`).
    pub fn path(&self, base: &str) -> String {
        let mut parts: Vec<&str> = self.path_prefix.iter().map(String::as_str).collect();
        if !base.is_empty() {
            parts.push(base);
        }
        parts.join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_puts_template_prefixes_first() {
        let mut environment = SandboxEnvironment::default();
        assert_eq!(environment.path("/usr/bin:/bin"), "/usr/bin:/bin");
        environment.add(
            TemplateMount {
                host_path: "/data/templates/python3".into(),
                sandbox_path: "/opt/codebox/python3".into(),
            },
            TemplateEnvironment {
                path_prefix: vec!["/opt/codebox/python3/bin".into()],
                variables: vec![("MPLBACKEND".into(), "Agg".into())],
            },
        );
        assert_eq!(
            environment.path("/usr/bin:/bin"),
            "/opt/codebox/python3/bin:/usr/bin:/bin"
        );
        assert_eq!(environment.path(""), "/opt/codebox/python3/bin");
        assert_eq!(environment.mounts.len(), 1);
    }
}
