//! The Linux backend (`isolation: "namespaces"`): each sandbox is a jailed
//! process tree (user, mount, PID, network, IPC, UTS and cgroup namespaces,
//! read-only template root, seccomp, no capabilities for user code) in its own
//! cgroup, with the agent as PID 1, plus a warm pool of ready sandboxes.
//!
//! Module map: [`config`] (what the server passes), [`jail`] (the setup steps as
//! data and their executor), [`syscall`] (the seam under the executor),
//! [`spawn`] (clone, id maps, cgroup attach, setup report), [`host`] (host
//! objects of one sandbox and their teardown), [`template`] (`/etc` and
//! runtimes), [`seccomp_policy`] (the reviewed filter), [`slots`] (uid ranges),
//! `runtime` (the [`crate::Runtime`] implementation, with the warm pool and
//! one sandbox's start, watch and teardown as its submodules),
//! `exec_guard` (OOM reporting and the timeout backstop around executions),
//! [`prestart`] (default contexts started in warm sandboxes),
//! [`language_templates`] (the read-only template mounts and their env).

mod code;
pub mod config;
mod exec_guard;
mod files;
pub mod host;
pub mod jail;
pub mod language_templates;
pub mod prestart;
mod processes;
mod runtime;
pub mod seccomp_policy;
pub mod slots;
pub mod spawn;
pub mod syscall;
pub mod template;

pub use config::LinuxRuntimeConfig;
pub use runtime::LinuxRuntime;
