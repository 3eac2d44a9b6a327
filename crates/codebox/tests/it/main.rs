//! The one integration-test binary of the `codebox` binary crate: the built
//! binary spawned as an operator would run it (`cli`), and stateful code
//! execution end to end through a real server and real sandboxes (`code`, needs
//! root and `CODEBOX_AGENT_PATH`), files over HTTP the same way (`files`), and
//! the language templates built by the CLI and mounted into sandboxes
//! (`templates`, same needs plus the network once).

mod cli;
mod code;
mod files;
mod templates;
