//! Thin, documented wrappers around the Linux syscalls codebox needs to build a
//! sandbox: `clone` into new namespaces with a pidfd, mounts and `pivot_root`,
//! capabilities, rlimits, `no_new_privs`, seccomp, file descriptors; and the
//! local terminal of the interactive client (raw mode, window size).
//!
//! This is the only crate of the workspace allowed `unsafe`; every block states
//! why it is sound in a `// SAFETY:` comment. It holds no policy (which mounts,
//! which syscalls are denied): the runtime crate decides that and calls these
//! wrappers. Functions used between `clone` and `execve` in the sandbox child
//! never allocate: they take `&CStr` and plain integers, so they are safe to call
//! in a forked copy of a multithreaded process.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod agent;
pub mod errno;
pub mod fd;
pub mod fs;
pub mod mount;
pub mod namespace;
pub mod process;
pub mod seccomp;
pub mod security;
pub mod terminal;

pub use errno::Errno;
