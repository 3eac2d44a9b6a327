//! The one integration-test binary of codebox-server: handlers in-process with
//! `tower::ServiceExt::oneshot`, and the real server over sockets.

mod api_errors_doc;
mod authorization;
mod code;
mod envelopes;
mod files;
mod limits;
mod openapi;
mod processes;
mod pty;
mod readiness;
mod sandboxes;
mod socket;
mod support;
