//! The one integration-test binary of the `codebox` binary crate: the built
//! binary spawned as an operator would run it (`cli`), and stateful code
//! execution end to end through a real server and real sandboxes (`code`, needs
//! root and `CODEBOX_AGENT_PATH`), files over HTTP the same way (`files`),
//! the language templates built by the CLI and mounted into sandboxes
//! (`templates`, same needs plus the network once), and the client commands
//! (`run`, `sandbox`, `exec`, `files`, `shell`) against a real server
//! (`client`: snapshots of help and errors, then end to end like `code`).

mod cli;
mod client;
mod code;
mod files;
mod multinode;
mod pty;
mod templates;
