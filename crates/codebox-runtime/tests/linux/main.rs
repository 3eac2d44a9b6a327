//! Privileged integration tests of the Linux runtime: real namespaces, cgroups,
//! seccomp and the real agent. They need root and the static agent binary in
//! `CODEBOX_AGENT_PATH` (`scripts/test` builds it with `scripts/build-agent`).
//!
//! Every hostile test asserts the safe outcome, not just the absence of a crash.

mod support;

mod adversarial;
mod hostile;
mod lifecycle;
mod prestart;
mod resources;
mod templates;
