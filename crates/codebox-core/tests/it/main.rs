//! Integration tests of the core over a real (in-memory SQLite) store and a
//! scripted runtime.

mod accounts;
mod code;
mod jobs;
mod pty;
mod quota;
mod sandboxes;
mod support;
