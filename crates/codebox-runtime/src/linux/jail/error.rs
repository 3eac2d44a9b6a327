//! [`JailError`]: one variant per jail step, as the jailer/nsjail convention
//! wants, so a failure says exactly which operation broke and on what path.

use super::Step;

macro_rules! jail_errors {
    ($($variant:ident => $message:literal),* $(,)?) => {
        /// A jail step failed in the sandbox child (reported as index and errno).
        #[derive(Debug, thiserror::Error)]
        pub enum JailError {
            $(
                #[error($message)]
                $variant {
                    /// The path the step worked on (empty when it has none).
                    path: String,
                    #[source]
                    source: std::io::Error,
                },
            )*
            #[error("the sandbox child reported an unknown step {index}")]
            UnknownStep { index: u32 },
        }
    };
}

jail_errors! {
    AwaitParent => "waiting for the host to map ids and attach the cgroup failed",
    BecomeNamespaceRoot => "becoming root of the new user namespace failed",
    UnshareCgroup => "entering a new cgroup namespace failed",
    PrivatizeMounts => "making the mount tree private failed",
    MountRoot => "mounting the root tmpfs on {path} failed",
    MakeDir => "creating directory {path} failed",
    MakeFile => "creating mount point {path} failed",
    Symlink => "creating symlink {path} failed",
    BindReadOnly => "bind-mounting {path} read-only failed",
    BindDevice => "binding device {path} failed",
    MountTmpfs => "mounting tmpfs on {path} failed",
    MountProc => "mounting proc on {path} failed",
    MountDevpts => "mounting devpts on {path} failed",
    MaskFile => "masking {path} failed",
    MaskDir => "masking directory {path} failed",
    ReadOnlyInPlace => "making {path} read-only failed",
    SealReadOnly => "sealing {path} read-only failed",
    SetHostname => "setting the hostname failed",
    LoopbackUp => "bringing the loopback interface up failed",
    PivotRoot => "pivot_root into {path} failed",
    NullStdio => "pointing stdio at /dev/null failed",
    ArrangeFds => "arranging the agent's file descriptors failed",
    SetRlimit => "setting an rlimit failed",
    ClearAmbient => "clearing the ambient capabilities failed",
    DropBoundingSet => "dropping the capability bounding set failed",
    NoNewPrivs => "setting no_new_privs failed",
    Seccomp => "installing the seccomp filter failed",
    ExecAgent => "executing the agent failed",
}

impl JailError {
    /// The error of `step` failing with `source`.
    pub fn of(step: &Step, path: String, source: std::io::Error) -> JailError {
        match step {
            Step::AwaitParent => JailError::AwaitParent { path, source },
            Step::BecomeNamespaceRoot => JailError::BecomeNamespaceRoot { path, source },
            Step::UnshareCgroup => JailError::UnshareCgroup { path, source },
            Step::PrivatizeMounts => JailError::PrivatizeMounts { path, source },
            Step::MountRoot { .. } => JailError::MountRoot { path, source },
            Step::MakeDir { .. } => JailError::MakeDir { path, source },
            Step::MakeFile { .. } => JailError::MakeFile { path, source },
            Step::Symlink { .. } => JailError::Symlink { path, source },
            Step::BindReadOnly { .. } => JailError::BindReadOnly { path, source },
            Step::BindDevice { .. } => JailError::BindDevice { path, source },
            Step::MountTmpfs { .. } => JailError::MountTmpfs { path, source },
            Step::MountProc { .. } => JailError::MountProc { path, source },
            Step::MountDevpts { .. } => JailError::MountDevpts { path, source },
            Step::MaskFile { .. } => JailError::MaskFile { path, source },
            Step::MaskDir { .. } => JailError::MaskDir { path, source },
            Step::ReadOnlyInPlace { .. } => JailError::ReadOnlyInPlace { path, source },
            Step::SealReadOnly { .. } => JailError::SealReadOnly { path, source },
            Step::SetHostname => JailError::SetHostname { path, source },
            Step::LoopbackUp => JailError::LoopbackUp { path, source },
            Step::PivotRoot { .. } => JailError::PivotRoot { path, source },
            Step::NullStdio => JailError::NullStdio { path, source },
            Step::ArrangeFds => JailError::ArrangeFds { path, source },
            Step::SetRlimit { .. } => JailError::SetRlimit { path, source },
            Step::ClearAmbient => JailError::ClearAmbient { path, source },
            Step::DropBoundingSet { .. } => JailError::DropBoundingSet { path, source },
            Step::NoNewPrivs => JailError::NoNewPrivs { path, source },
            Step::Seccomp { .. } => JailError::Seccomp { path, source },
            Step::Exec { .. } => JailError::ExecAgent { path, source },
        }
    }
}
